"""GLOBAL_AVERAGE_POOL2D (5): the mean of each channel's ``kernel_size`` float32 values
(kpu.c 899-914). Per channel ``sum += x`` in order from 0.0f; the device build hoists
``r = 1.0f / (float)kernel_size`` and writes ``sum * r`` (runtime spec §3)."""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .layer import Layer, main_f32, register


@numba.njit(cache=True, error_model="numpy")
def global_average_pool(src, dest, kernel_size, channels):
    r = np.float32(1.0) / np.float32(kernel_size)
    i = 0
    for oc in range(channels):
        s = np.float32(0.0)
        for _ in range(kernel_size):
            s += src[i]
            i += 1
        dest[oc] = s * r


@register
@dataclass(eq=False)
class GlobalAveragePool2D(Layer):
    code = 5
    name = "GLOBAL_AVERAGE_POOL2D"
    WORDS = ("flags", "input", "output", "kernel_size", "channels")

    flags: int = 0
    input: int = 0
    output: int = 0
    kernel_size: int = 1
    channels: int = 1

    def inputs(self):
        return [main_f32(self.input, self.kernel_size * self.channels)]

    def outputs(self):
        return [main_f32(self.output, self.channels)]

    def output_shape(self):
        return [1, int(self.channels), 1, 1]

    def summary(self) -> str:
        return f"{self.channels} channels x {self.kernel_size} values -> {self.channels}"

    def run(self, mem) -> None:
        global_average_pool(mem.f32(self.inputs()[0]), mem.f32(self.outputs()[0]), self.kernel_size, self.channels)
