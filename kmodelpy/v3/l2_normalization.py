"""L2_NORMALIZATION (14): ``out = x / sqrt(max(sum x^2, 1e-10))`` over ``channels`` float32
(kpu.c 1079-1094). Device: ``sum = fmaf(x, x, sum)`` in order, ``sum < 1e-10f -> 1e-10f``,
``r = 1.0f / sqrtf(sum)`` (fsqrt, fdiv), ``out = x * r``."""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..fma import fmaf
from .layer import VectorLayer, register

EPSILON = np.float32(1e-10)


@numba.njit(cache=True, error_model="numpy")
def l2_normalize(src, dest):
    s = np.float32(0.0)
    for i in range(src.size):
        s = fmaf(src[i], src[i], s)
    if s < EPSILON:
        s = EPSILON
    r = np.float32(1.0) / np.sqrt(s)
    for i in range(src.size):
        dest[i] = src[i] * r


@register
@dataclass(eq=False)
class L2Normalization(VectorLayer):
    code = 14
    name = "L2_NORMALIZATION"
    kernel = staticmethod(l2_normalize)
