"""QuantizedMatMul (opcode 0x10): u8 matrix product with an i32 accumulator and MCS requantization.

Runtime spec §B.12. The i32 accumulator starts at ``bias[c]`` and adds
``(a + input_a_offset)·(b + input_b_offset)`` for i = 0..a_cols−1 (wrapping on overflow); the
output is ``clamp(MCS(acc, output_mul, output_shift) + output_offset, 0, 255)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ._arith import clamp_u8, mul_and_carry_shift, wrap_i32
from .base import register
from .matmul import MatMulBody, matmul_arrays


@numba.njit(cache=True, nogil=True)
def _qmatmul_kernel(a, b, bias, a_off, b_off, o_mul, o_shift, o_off, out):
    rows, cols = a.shape
    b_cols = b.shape[1]
    bq = np.empty((cols, b_cols), dtype=np.int64)
    for i in range(cols):
        for c in range(b_cols):
            bq[i, c] = wrap_i32(np.int64(b[i, c]) + b_off)
    acc = np.empty(b_cols, dtype=np.int64)
    for r in range(rows):
        for c in range(b_cols):
            acc[c] = np.int64(bias[c]) & 0xFFFFFFFF
        for i in range(cols):
            av = wrap_i32(np.int64(a[r, i]) + a_off)
            for c in range(b_cols):
                acc[c] = (acc[c] + av * bq[i, c]) & 0xFFFFFFFF
        for c in range(b_cols):
            v = mul_and_carry_shift(wrap_i32(acc[c]), o_mul, o_shift)
            out[r, c] = clamp_u8(wrap_i32(v + o_off))


def quantized_matmul(a, b, bias, input_a_offset, input_b_offset, output_mul, output_shift,
                     output_offset) -> np.ndarray:
    """Array-level QuantizedMatMul: ``a`` u8 [rows, cols], ``b`` u8 [cols, b_cols], ``bias`` i32
    [b_cols]. Returns u8 [rows, b_cols]."""
    a, b, bias, out = matmul_arrays("quantized_matmul", a, b, bias, np.uint8, np.int32)
    _qmatmul_kernel(a, b, bias, int(input_a_offset), int(input_b_offset), int(output_mul), int(output_shift),
                    int(output_offset), out)
    return out


@register
@dataclass(eq=False)
class QuantizedMatMul(MatMulBody):
    """Body layout §B.12 (80 bytes + i32 bias[b_cols]): :class:`~.matmul.MatMulBody`'s head, then at 60
    the i32s input_a_offset, input_b_offset, output_mul, output_shift, output_offset."""

    opcode = 0x10
    name = "QuantizedMatMul"
    SIZE = 80

    input_a_offset: int = 0
    input_b_offset: int = 0
    output_mul: int = 1
    output_shift: int = 0
    output_offset: int = 0
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int32))

    _QUANT = ("input_a_offset", "input_b_offset", "output_mul", "output_shift", "output_offset")

    @classmethod
    def read(cls, r):
        op = cls(*cls._read_head(r), *(r.i32(n) for n in cls._QUANT))
        op.bias = r.array("<i4", op.b_cols, "bias")
        return op

    def write(self, w):
        self._write_head(w)
        for n in self._QUANT:
            w.i32(getattr(self, n))
        w.array(np.ravel(self.bias), "<i4")

    def run(self, mem):
        a, b = self._operands(mem.u8)
        y = quantized_matmul(a, b, self.bias, self.input_a_offset, self.input_b_offset, self.output_mul,
                             self.output_shift, self.output_offset)
        mem.u8(self.output, y.size)[:] = y.reshape(-1)
