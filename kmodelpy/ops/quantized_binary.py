"""QuantizedBinary (opcode 0x11): u8 elementwise op with integer requantization.

Runtime spec §B.4. Same two index paths as Binary (§B.3). Per element:
``A = MCS(a + input_a_offset, input_a_mul, input_a_shift)``, likewise ``B``; ``R = op(A, B)`` in i32
(add, sub, mul wrap; div is ``tdiv(A + tdiv(B, 2), B)``; min/max); then
``y = clamp(MCS(R, output_mul, output_shift) + output_offset, 0, 255)``. The output triple is
stored offset, mul, shift (file order). ``B == 0`` (or ``INT32_MIN / −1``) in a div crashes ncc
(SIGFPE); here it raises :class:`KernelError`. An op code > 5 is a kernel error (§B.26).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..errors import KernelError
from ..format.binio import MemoryRange, read_shape4, shape_size, write_shape4
from ._arith import clamp_u8, mul_and_carry_shift, tdiv, wrap_i32
from .base import Op, register
from .binary import check_broadcast_shapes, reduced_offsets

QB_OK, QB_DIV_ZERO, QB_DIV_OVERFLOW = 0, 1, 2


@numba.njit(cache=True)
def _qbinary_kernel(a, b, op, a_off, a_mul, a_shift, b_off, b_mul, b_shift, o_off, o_mul, o_shift, out):
    """Elementwise over gathered u8 operands; returns (status, index of the failing element)."""
    for i in range(a.shape[0]):
        av = mul_and_carry_shift(wrap_i32(np.int64(a[i]) + a_off), a_mul, a_shift)
        bv = mul_and_carry_shift(wrap_i32(np.int64(b[i]) + b_off), b_mul, b_shift)
        if op == 0:
            r = wrap_i32(av + bv)
        elif op == 1:
            r = wrap_i32(av - bv)
        elif op == 2:
            r = wrap_i32(av * bv)
        elif op == 3:
            if bv == 0:
                return QB_DIV_ZERO, i
            num = wrap_i32(av + tdiv(bv, 2))
            if num == -2147483648 and bv == -1:
                return QB_DIV_OVERFLOW, i
            r = tdiv(num, bv)
        elif op == 4:
            r = bv if bv < av else av
        else:
            r = bv if av < bv else av
        out[i] = clamp_u8(wrap_i32(mul_and_carry_shift(r, o_mul, o_shift) + o_off))
    return QB_OK, -1


def quantized_binary(a, b, op: int, input_a_offset: int, input_a_mul: int, input_a_shift: int,
                     input_b_offset: int, input_b_mul: int, input_b_shift: int, output_offset: int,
                     output_mul: int, output_shift: int, out_shape=None) -> np.ndarray:
    """Array-level QuantizedBinary on uint8 arrays (rank <= 4); shapes as in :func:`binary.binary`.
    Raises :class:`KernelError` where ncc crashes (integer division by zero)."""
    a = np.asarray(a, dtype=np.uint8)
    b = np.asarray(b, dtype=np.uint8)
    sa = [1] * (4 - a.ndim) + list(a.shape)
    sb = [1] * (4 - b.ndim) + list(b.shape)
    if sa == sb:
        av, bv, shape = a.reshape(-1), b.reshape(-1), a.shape
    else:
        if out_shape is None:
            out_shape = np.broadcast_shapes(tuple(sa), tuple(sb))
        shape = [1] * (4 - len(out_shape)) + [int(d) for d in out_shape]
        av = a.reshape(-1)[reduced_offsets(sa, shape)]
        bv = b.reshape(-1)[reduced_offsets(sb, shape)]
    out = np.empty(av.shape[0], dtype=np.uint8)
    _run_kernel(av, bv, op, (input_a_offset, input_a_mul, input_a_shift, input_b_offset, input_b_mul,
                             input_b_shift, output_offset, output_mul, output_shift), out)
    return out.reshape(shape)


def _run_kernel(av, bv, op, params, out) -> None:
    a_off, a_mul, a_sh, b_off, b_mul, b_sh, o_off, o_mul, o_sh = (int(p) for p in params)
    status, i = _qbinary_kernel(av, bv, int(op), a_off, a_mul, a_sh, b_off, b_mul, b_sh, o_off, o_mul, o_sh, out)
    if status == QB_DIV_ZERO:
        raise KernelError(
            f"QuantizedBinary div: input b requantizes to 0 at output element {i}; ncc infer crashes "
            "(SIGFPE) here — fix input_b_mul/input_b_shift or the data"
        )
    if status == QB_DIV_OVERFLOW:
        raise KernelError(
            f"QuantizedBinary div: INT32_MIN / -1 at output element {i}; ncc infer crashes (SIGFPE) here"
        )


@register
@dataclass(eq=False)
class QuantizedBinary(Op):
    """Body layout §B.4 (136 bytes)."""

    opcode = 0x11
    name = "QuantizedBinary"
    SIZE = 136

    input_a: MemoryRange = field(default_factory=MemoryRange)
    input_b: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    binary_op: int = 0
    in_a_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    in_b_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    out_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    input_a_offset: int = 0
    input_a_mul: int = 1
    input_a_shift: int = 0
    input_b_offset: int = 0
    input_b_mul: int = 1
    input_b_shift: int = 0
    output_offset: int = 0
    output_mul: int = 1
    output_shift: int = 0

    _INTS = ("input_a_offset", "input_a_mul", "input_a_shift", "input_b_offset", "input_b_mul",
             "input_b_shift", "output_offset", "output_mul", "output_shift")

    @classmethod
    def read(cls, r):
        head = (MemoryRange.read(r, "input_a"), MemoryRange.read(r, "input_b"), MemoryRange.read(r, "output"),
                r.u32("binary_op"), read_shape4(r, "in_a_shape"), read_shape4(r, "in_b_shape"),
                read_shape4(r, "out_shape"))
        return cls(*head, *(r.i32(n) for n in cls._INTS))

    def write(self, w):
        self.input_a.write(w)
        self.input_b.write(w)
        self.output.write(w)
        w.u32(self.binary_op)
        write_shape4(w, self.in_a_shape)
        write_shape4(w, self.in_b_shape)
        write_shape4(w, self.out_shape)
        for n in self._INTS:
            w.i32(getattr(self, n))

    def inputs(self):
        return [self.input_a, self.input_b]

    def output_shape(self, rng):
        return list(self.in_a_shape) if list(self.in_a_shape) == list(self.in_b_shape) else list(self.out_shape)

    def run(self, mem):
        from ..runtime import KernelFailure

        if not 0 <= self.binary_op <= 5:
            raise KernelFailure(f"error occurs in running kernel: {self.name}")
        check_broadcast_shapes(self.name, self.in_a_shape, self.in_b_shape, self.out_shape)
        if list(self.in_a_shape) == list(self.in_b_shape):
            n = shape_size(self.in_a_shape)
            av = np.array(mem.u8(self.input_a, n))
            bv = np.array(mem.u8(self.input_b, n))
        else:
            n = shape_size(self.out_shape)
            av = np.array(mem.u8(self.input_a, shape_size(self.in_a_shape)))[
                reduced_offsets(self.in_a_shape, self.out_shape)]
            bv = np.array(mem.u8(self.input_b, shape_size(self.in_b_shape)))[
                reduced_offsets(self.in_b_shape, self.out_shape)]
        out = np.empty(n, dtype=np.uint8)
        _run_kernel(av, bv, self.binary_op, [getattr(self, k) for k in self._INTS], out)
        mem.u8(self.output, n)[:] = out
