"""Dequantize (opcode 0x03): uint8 -> float32, ``y = f32(i32(q) - zp) * f32(1 / scale)``.

Runtime spec §B.9: the element count is ``input.size`` bytes; the kernel multiplies by the f32
reciprocal of ``scale`` (computed once in f32); it never divides by ``scale``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import register
from .quantize import QuantParamBody


def dequantize(q, zero_point: int, scale: float) -> np.ndarray:
    """Array-level dequantize (any shape): uint8 in, float32 out, exactly as ``ncc infer``."""
    q = np.asarray(q)
    with np.errstate(divide="ignore", over="ignore"):
        inv = np.float32(1.0) / np.float32(scale)
    d = (q.astype(np.int64) - int(zero_point)).astype(np.int32)  # i32 arithmetic, wraps like C
    with np.errstate(over="ignore", invalid="ignore"):
        return d.astype(np.float32) * inv


@register
@dataclass
class Dequantize(QuantParamBody):
    """Body layout §B.9: :class:`~.quantize.QuantParamBody` (MR input, MR output, quant_param)."""

    opcode = 0x03
    name = "Dequantize"

    def run(self, mem) -> None:
        n = self.input.size
        mem.f32(self.output, n)[:] = dequantize(mem.u8(self.input, n), self.zero_point, self.scale)
