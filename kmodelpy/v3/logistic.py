"""LOGISTIC (25): ``out = 1.0f / (1.0f + expf(-x))`` over ``channels`` float32 (kpu.c 1259-1267),
with newlib's expf as the device runs it (:mod:`kmodelpy.newlib`)."""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..newlib import expf
from .layer import Layer, main_f32, register


@numba.njit(cache=True, error_model="numpy")
def logistic(src, dest):
    one = np.float32(1.0)
    for i in range(dest.size):
        dest[i] = one / (one + expf(-src[i], True))


@register
@dataclass(eq=False)
class Logistic(Layer):
    code = 25
    name = "LOGISTIC"
    WORDS = ("flags", "input", "output", "channels")

    flags: int = 0
    input: int = 0
    output: int = 0
    channels: int = 0

    def inputs(self):
        return [main_f32(self.input, self.channels)]

    def outputs(self):
        return [main_f32(self.output, self.channels)]

    def output_shape(self):
        return [1, int(self.channels)]

    def summary(self) -> str:
        return f"{self.channels} float32"

    def run(self, mem) -> None:
        logistic(mem.f32(self.inputs()[0]), mem.f32(self.outputs()[0]))
