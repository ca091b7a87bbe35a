"""MatMul (opcode 0x04): f32 ``A[a_rows×a_cols] · B[a_cols×b_cols] + bias`` with a fused clamp.

Runtime spec §B.11 (compiler spec §8.2 uses the same order). For each row r and column c:
``v = bias[c]``, then for i = 0..a_cols−1 ``v = v + A[r][i]·B[i][c]`` (f32 multiply, f32 add),
and ``out[r][c] = clamp(v, act)``. The kernel runs i-major over a row of outputs, which keeps each
output's additions in ascending i.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..errors import KernelError
from ..format.binio import FLT_MAX, MemoryRange, ValueRange
from ._arith import clamp
from .base import Op, register


@numba.njit(cache=True, nogil=True)
def _matmul_kernel(a, b, bias, lo, hi, out):
    rows, cols = a.shape
    b_cols = b.shape[1]
    for r in range(rows):
        orow = out[r]
        for c in range(b_cols):
            orow[c] = bias[c]
        for i in range(cols):
            av = a[r, i]
            brow = b[i]
            for c in range(b_cols):
                orow[c] += av * brow[c]
        for c in range(b_cols):
            orow[c] = clamp(orow[c], lo, hi)


def matmul_arrays(name: str, a, b, bias, dtype, bias_dtype) -> tuple[np.ndarray, ...]:
    """The array-level matmul preamble: contiguous ``a`` [rows, cols] and ``b`` [cols, b_cols] of
    ``dtype``, flat ``bias`` [b_cols] of ``bias_dtype``, and an empty ``dtype`` output [rows, b_cols];
    shapes that do not fit are a ValueError."""
    a = np.ascontiguousarray(a, dtype=dtype)
    b = np.ascontiguousarray(b, dtype=dtype)
    bias = np.ascontiguousarray(bias, dtype=bias_dtype).reshape(-1)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or bias.shape[0] != b.shape[1]:
        raise ValueError(f"{name}: shapes {a.shape} x {b.shape} + bias {bias.shape} do not fit")
    return a, b, bias, np.empty((a.shape[0], b.shape[1]), dtype=dtype)


def matmul(a, b, bias, act_lo=-FLT_MAX, act_hi=FLT_MAX) -> np.ndarray:
    """Array-level MatMul: ``a`` f32 [rows, cols], ``b`` f32 [cols, b_cols], ``bias`` f32 [b_cols].
    Returns f32 [rows, b_cols]."""
    a, b, bias, out = matmul_arrays("matmul", a, b, bias, np.float32, np.float32)
    _matmul_kernel(a, b, bias, np.float32(act_lo), np.float32(act_hi), out)
    return out


def check_dims(name: str, a_rows: int, a_cols: int, b_cols: int) -> None:
    if min(a_rows, a_cols, b_cols) < 0:
        raise KernelError(f"{name} has negative dimensions {a_rows}x{a_cols}x{b_cols} (the file is damaged)")


@dataclass(eq=False)
class MatMulBody(Op):
    """The 60-byte head shared by MatMul (§B.11) and QuantizedMatMul (§B.12):

    | Off | Field                                   |
    |-----|-----------------------------------------|
    | 0   | MR input_a, 16 MR input_b, 32 MR output |
    | 48  | i32 a_rows, 52 i32 a_cols, 56 i32 b_cols |
    | 60  | the op's own tail, then bias[b_cols]    |
    """

    input_a: MemoryRange = field(default_factory=MemoryRange)
    input_b: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    a_rows: int = 1
    a_cols: int = 1
    b_cols: int = 1

    @staticmethod
    def _read_head(r) -> tuple:
        return (MemoryRange.read(r, "input_a"), MemoryRange.read(r, "input_b"), MemoryRange.read(r, "output"),
                r.i32("a_rows"), r.i32("a_cols"), r.i32("b_cols"))

    def _write_head(self, w) -> None:
        self.input_a.write(w)
        self.input_b.write(w)
        self.output.write(w)
        w.i32(self.a_rows)
        w.i32(self.a_cols)
        w.i32(self.b_cols)

    def inputs(self):
        return [self.input_a, self.input_b]

    def output_shape(self, rng):
        return [self.a_rows, self.b_cols]

    def _operands(self, view) -> tuple[np.ndarray, np.ndarray]:
        """Check the dimensions, then read A [a_rows, a_cols] and B [a_cols, b_cols] through ``view``
        (``mem.f32`` or ``mem.u8``)."""
        check_dims(self.name, self.a_rows, self.a_cols, self.b_cols)
        a = np.array(view(self.input_a, self.a_rows * self.a_cols)).reshape(self.a_rows, self.a_cols)
        b = np.array(view(self.input_b, self.a_cols * self.b_cols)).reshape(self.a_cols, self.b_cols)
        return a, b


@register
@dataclass(eq=False)
class MatMul(MatMulBody):
    """Body layout §B.11 (68 bytes + f32 bias[b_cols]): :class:`MatMulBody`'s head, then act at 60."""

    opcode = 0x04
    name = "MatMul"
    SIZE = 68

    act: ValueRange = field(default_factory=ValueRange)
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))

    @classmethod
    def read(cls, r):
        op = cls(*cls._read_head(r), ValueRange.read(r, "act"))
        op.bias = r.array("<f4", op.b_cols, "bias")
        return op

    def write(self, w):
        self._write_head(w)
        self.act.write(w)
        w.array(np.ravel(self.bias), "<f4")

    def run(self, mem):
        a, b = self._operands(mem.f32)
        y = matmul(a, b, self.bias, self.act.lo, self.act.hi)
        mem.f32(self.output, y.size)[:] = y.reshape(-1)
