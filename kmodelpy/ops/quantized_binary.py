"""QuantizedBinary (opcode 0x11): u8 elementwise op with integer requantization.

Runtime spec §B.4. Same two index paths as Binary (§B.3). Per element:
``A = MCS(a + input_a_offset, input_a_mul, input_a_shift)``, likewise ``B``; ``R = op(A, B)`` in i32
(add, sub, mul wrap; div is ``tdiv(A + tdiv(B, 2), B)``; min/max); then
``y = clamp(MCS(R, output_mul, output_shift) + output_offset, 0, 255)``. The output triple is
stored offset, mul, shift (file order). ``B == 0`` (or ``INT32_MIN / −1``) in a div crashes ncc
(SIGFPE); here it raises :class:`KernelError`. An op code > 5 is a kernel error (§B.26).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..errors import KernelError
from ._arith import clamp_u8, mul_and_carry_shift, tdiv, wrap_i32
from .base import register
from .binary import BinaryBody, broadcast_operands

QB_OK, QB_DIV_ZERO, QB_DIV_OVERFLOW = 0, 1, 2


@numba.njit(cache=True, nogil=True)
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
    """Array-level QuantizedBinary on uint8 arrays (rank <= 4); shapes as in
    :func:`binary.broadcast_operands`. Raises :class:`KernelError` where ncc crashes (integer
    division by zero)."""
    av, bv, shape = broadcast_operands(np.asarray(a, dtype=np.uint8), np.asarray(b, dtype=np.uint8), out_shape)
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
class QuantizedBinary(BinaryBody):
    """Body layout §B.4 (136 bytes): :class:`~.binary.BinaryBody`'s head, then at 100 the i32s
    input_a_offset, input_a_mul, input_a_shift, input_b_offset, input_b_mul, input_b_shift,
    output_offset, output_mul, output_shift (file order)."""

    opcode = 0x11
    name = "QuantizedBinary"
    SIZE = 136

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
        return cls(*cls._read_head(r), *(r.i32(n) for n in cls._INTS))

    def write(self, w):
        self._write_head(w)
        for n in self._INTS:
            w.i32(getattr(self, n))

    def run(self, mem):
        av, bv, n = self._operands(mem.u8)
        out = np.empty(n, dtype=np.uint8)
        _run_kernel(av, bv, self.binary_op, [getattr(self, k) for k in self._INTS], out)
        mem.u8(self.output, n)[:] = out
