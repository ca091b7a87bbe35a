"""SOFTMAX (15) over ``channels`` float32 (kpu.c 1096-1116), as the device build runs it:
``max`` starts at FLT_MIN (the smallest positive normal, not -FLT_MAX: all-negative inputs are
shifted by FLT_MIN, not by their maximum) and takes ``fmaxf``; ``e = expf(x - max)`` (newlib's
expf with its fused multiply-adds, :mod:`kmodelpy.newlib`), ``sum += e``, ``out = e``; then
``r = 1.0f / sum`` once and ``out *= r``."""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..newlib import expf
from .layer import VectorLayer, register

FLT_MIN = np.float32(np.finfo(np.float32).tiny)


@numba.njit(cache=True, error_model="numpy")
def softmax(src, dest):
    m = FLT_MIN
    for i in range(src.size):
        x = src[i]
        if x > m:  # fmaxf: a NaN input leaves the maximum as it is
            m = x
    s = np.float32(0.0)
    for i in range(src.size):
        e = expf(src[i] - m, True)
        s += e
        dest[i] = e
    r = np.float32(1.0) / s
    for i in range(dest.size):
        dest[i] = dest[i] * r


@register
@dataclass(eq=False)
class Softmax(VectorLayer):
    code = 15
    name = "SOFTMAX"
    kernel = staticmethod(softmax)
