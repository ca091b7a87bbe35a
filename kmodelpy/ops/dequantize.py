"""Dequantize (opcode 0x03): uint8 -> float32, ``y = f32(i32(q) - zp) * f32(1 / scale)``.

Runtime spec §B.9: the element count is ``input.size`` bytes; the kernel multiplies by the f32
reciprocal of ``scale`` (computed once in f32); it never divides by ``scale``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .base import register
from .quantize import QuantParamBody


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _dequantize(q, zero_point, scale, out):
    """out[i] = f32(i32(q[i] − zero_point)) · (1 / scale), the reciprocal in f32 (±inf for a zero
    scale); element by element in order, as ncc's loop (ranges may overlap in a damaged file)."""
    inv = np.float32(1.0) / scale
    zp = np.int32(zero_point)
    for i in range(out.shape[0]):
        out[i] = np.float32(np.int32(np.int32(q[i]) - zp)) * inv


def dequantize(q, zero_point: int, scale: float) -> np.ndarray:
    """Array-level dequantize (any shape): uint8 in, float32 out, exactly as ``ncc infer``."""
    q = np.ascontiguousarray(q, dtype=np.uint8)
    out = np.empty(q.shape, np.float32)
    _dequantize(q.reshape(-1), np.int32(zero_point), np.float32(scale), out.reshape(-1))
    return out


@register
@dataclass
class Dequantize(QuantParamBody):
    """Body layout §B.9: :class:`~.quantize.QuantParamBody` (MR input, MR output, quant_param)."""

    opcode = 0x03
    name = "Dequantize"

    def run(self, mem) -> None:
        n = self.input.size
        _dequantize(mem.u8(self.input, n), np.int32(self.zero_point), np.float32(self.scale), mem.f32(self.output, n))
