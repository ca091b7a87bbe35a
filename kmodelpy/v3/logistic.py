"""LOGISTIC (25): ``out = 1.0f / (1.0f + expf(-x))`` over ``channels`` float32 (kpu.c 1259-1267),
with newlib's expf as the device runs it (:mod:`kmodelpy.newlib`)."""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..newlib import expf
from .layer import VectorLayer, register


@numba.njit(cache=True, error_model="numpy")
def logistic(src, dest):
    one = np.float32(1.0)
    for i in range(dest.size):
        dest[i] = one / (one + expf(-src[i], True))


@register
@dataclass(eq=False)
class Logistic(VectorLayer):
    code = 25
    name = "LOGISTIC"
    kernel = staticmethod(logistic)
