"""QUANTIZE (11): float32 -> u8 codes (kpu.c 1004-1024).

``r = 1.0f / scale`` once; per element ``v = (int)roundf((x - bias) * r)`` clamped to 0..255. The
device build subtracts, multiplies, calls newlib's ``roundf`` and converts with ``fcvt.w.s`` (rtz,
saturating; NaN -> INT32_MAX, i.e. 255 after the clamp).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..fma import f32_to_i32, roundf
from .layer import ScaleBiasLayer, register


@numba.njit(cache=True, error_model="numpy")
def quantize(src, dest, scale, bias):
    r = np.float32(1.0) / scale
    for i in range(dest.size):
        v = f32_to_i32(roundf((src[i] - bias) * r))
        dest[i] = min(255, max(0, v))


@register
@dataclass(eq=False)
class Quantize(ScaleBiasLayer):
    code = 11
    name = "QUANTIZE"
    IN_ITEM, OUT_ITEM = 4, 1
    kernel = staticmethod(quantize)

    def summary(self) -> str:
        return f"{self.count} float32 -> uint8, q = round((x - {self.bias:.6g}) / {self.scale:.6g})"
