"""Binary (opcode 0x00): f32 elementwise add/sub/mul/div/min/max with broadcasting and a fused clamp.

Runtime spec §B.3. Two index paths: when ``in_a_shape == in_b_shape`` the kernel runs over
``∏in_a_shape`` elements at the same flat index and ignores ``out_shape``; otherwise it walks
``out_shape`` in row-major order and reads each input at the *reduced index* (§B.2:
``i_k = o_k if o_k < shape_k else 0``). Every op is one f32 IEEE operation; min/max and the clamp
use the ``std::`` comparisons of §0. An op code > 5 is a kernel error (§B.26).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import KernelError
from ..format.binio import MemoryRange, ValueRange, read_shape4, shape_size, write_shape4
from ._arith import np_clamp, np_max, np_min
from .base import Op, register

BINARY_OPS = ("add", "sub", "mul", "div", "min", "max")


def reduced_offsets(in_shape, out_shape) -> np.ndarray:
    """Flat offsets into an ``in_shape`` tensor for every ``out_shape`` index, row-major (§B.2 reduced
    index, then ``offset(in_shape, ·)``). Shapes are 4-D."""
    s = [int(d) for d in in_shape]
    axes = []
    for k in range(4):
        r = np.arange(max(int(out_shape[k]), 0), dtype=np.int64)
        axes.append(np.where(r < s[k], r, 0))
    i0, i1, i2, i3 = np.ix_(*axes)
    return (((i0 * s[1] + i1) * s[2] + i2) * s[3] + i3).reshape(-1)


def apply_f32(op: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One f32 binary op (0 add .. 5 max) elementwise, IEEE single rounding, std::min/max."""
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    with np.errstate(all="ignore"):
        if op == 0:
            return a + b
        if op == 1:
            return a - b
        if op == 2:
            return a * b
        if op == 3:
            return a / b
        if op == 4:
            return np_min(a, b)
        if op == 5:
            return np_max(a, b)
    raise ValueError(f"binary op {op} is not 0..5")


def _shape4(shape) -> list[int]:
    shape = [int(d) for d in shape]
    if len(shape) > 4:
        raise ValueError(f"binary: shape {shape} has more than 4 dimensions")
    return [1] * (4 - len(shape)) + shape


def broadcast_operands(a: np.ndarray, b: np.ndarray, out_shape=None) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The two index paths of §B.3 on arrays of rank <= 4 (extended with leading 1s): equal
    shapes pair the flat elements, and the result has ``a``'s shape; otherwise both are read at the
    reduced indices of ``out_shape`` (default: the numpy broadcast shape), and the result has the
    rank-4-extended ``out_shape``. Returns ``(a_flat, b_flat, result_shape)``."""
    sa, sb = _shape4(a.shape), _shape4(b.shape)
    if sa == sb:
        return a.reshape(-1), b.reshape(-1), a.shape
    if out_shape is None:
        out_shape = np.broadcast_shapes(tuple(sa), tuple(sb))
    so = _shape4(out_shape)
    return a.reshape(-1)[reduced_offsets(sa, so)], b.reshape(-1)[reduced_offsets(sb, so)], tuple(so)


def binary(a, b, op: int, act_lo=-np.finfo(np.float32).max, act_hi=np.finfo(np.float32).max,
           out_shape=None) -> np.ndarray:
    """Array-level Binary: ``clamp(op(a, b), act_lo, act_hi)`` in f32 on float32 arrays of rank
    <= 4, with the shapes of :func:`broadcast_operands`, exactly as the runtime does."""
    av, bv, shape = broadcast_operands(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32), out_shape)
    return np_clamp(apply_f32(op, av, bv), act_lo, act_hi).reshape(shape)


def check_broadcast_shapes(name: str, in_a_shape, in_b_shape, out_shape) -> None:
    """Refuse shapes that would make the reference read outside its inputs (negative or zero input
    dims on the broadcast path)."""
    equal = list(in_a_shape) == list(in_b_shape)
    shapes = (("in_a_shape", in_a_shape), ("in_b_shape", in_b_shape)) + (() if equal else (("out_shape", out_shape),))
    for label, s in shapes:
        if any(int(d) < 0 for d in s):
            raise KernelError(f"{name} has a negative dimension in {label} {list(s)}; the file is damaged")
    if not equal and shape_size(out_shape) > 0:
        for label, s in (("in_a_shape", in_a_shape), ("in_b_shape", in_b_shape)):
            if any(int(d) == 0 for d in s):
                raise KernelError(
                    f"{name} broadcasts from an empty input ({label} {list(s)}); the file is damaged"
                )


@dataclass(eq=False)
class BinaryBody(Op):
    """The 100-byte head shared by Binary (§B.3) and QuantizedBinary (§B.4), and their two index paths:

    | Off | Field                                          |
    |-----|------------------------------------------------|
    | 0   | MR input_a, 16 MR input_b, 32 MR output        |
    | 48  | u32 binary_op                                  |
    | 52  | Shape4 in_a_shape, 68 in_b_shape, 84 out_shape |
    | 100 | the op's own tail (act, or the requant ints)   |
    """

    input_a: MemoryRange = field(default_factory=MemoryRange)
    input_b: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    binary_op: int = 0
    in_a_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    in_b_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    out_shape: list = field(default_factory=lambda: [1, 1, 1, 1])

    @staticmethod
    def _read_head(r) -> tuple:
        return (MemoryRange.read(r, "input_a"), MemoryRange.read(r, "input_b"), MemoryRange.read(r, "output"),
                r.u32("binary_op"), read_shape4(r, "in_a_shape"), read_shape4(r, "in_b_shape"),
                read_shape4(r, "out_shape"))

    def _write_head(self, w) -> None:
        self.input_a.write(w)
        self.input_b.write(w)
        self.output.write(w)
        w.u32(self.binary_op)
        write_shape4(w, self.in_a_shape)
        write_shape4(w, self.in_b_shape)
        write_shape4(w, self.out_shape)

    def inputs(self):
        return [self.input_a, self.input_b]

    def output_shape(self, rng):
        return list(self.in_a_shape) if list(self.in_a_shape) == list(self.in_b_shape) else list(self.out_shape)

    def _operands(self, view) -> tuple[np.ndarray, np.ndarray, int]:
        """Check the op code (> 5 is a kernel error, §B.26) and the shapes, then read both operands
        in output order through ``view`` (``mem.f32`` or ``mem.u8``): the same flat index when
        ``in_a_shape == in_b_shape``, else the reduced indices of ``out_shape`` (§B.3). Returns
        ``(a, b, n)`` with ``n`` the output element count."""
        from ..runtime import KernelFailure

        if not 0 <= self.binary_op <= 5:
            raise KernelFailure(f"error occurs in running kernel: {self.name}")
        check_broadcast_shapes(self.name, self.in_a_shape, self.in_b_shape, self.out_shape)
        if list(self.in_a_shape) == list(self.in_b_shape):
            n = shape_size(self.in_a_shape)
            return np.array(view(self.input_a, n)), np.array(view(self.input_b, n)), n
        a = np.array(view(self.input_a, shape_size(self.in_a_shape)))[reduced_offsets(self.in_a_shape, self.out_shape)]
        b = np.array(view(self.input_b, shape_size(self.in_b_shape)))[reduced_offsets(self.in_b_shape, self.out_shape)]
        return a, b, shape_size(self.out_shape)


@register
@dataclass(eq=False)
class Binary(BinaryBody):
    """Body layout §B.3 (108 bytes): :class:`BinaryBody`'s head, then act at 100."""

    opcode = 0x00
    name = "Binary"
    SIZE = 108

    act: ValueRange = field(default_factory=ValueRange)

    @classmethod
    def read(cls, r):
        return cls(*cls._read_head(r), ValueRange.read(r, "act"))

    def write(self, w):
        self._write_head(w)
        self.act.write(w)

    def run(self, mem):
        a, b, n = self._operands(mem.f32)
        y = np_clamp(apply_f32(self.binary_op, a, b), self.act.lo, self.act.hi)
        mem.f32(self.output, n)[:] = y
