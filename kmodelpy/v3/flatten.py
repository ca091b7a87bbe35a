"""TENSORFLOW_FLATTEN (20): float32 CHW -> HWC, ``dest[(y*w + x)*c + ch] = src[(ch*h + y)*w + x]``
(kpu.c 1192-1203), so that a following FULLY_CONNECTED sees TensorFlow's order."""
from __future__ import annotations

from dataclasses import dataclass

import numba

from .layer import Layer, main_f32, register, shape3


@numba.njit(cache=True, error_model="numpy")
def flatten(src, dest, w, h, c):
    o = 0
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                dest[o] = src[(ch * h + y) * w + x]
                o += 1


@register
@dataclass(eq=False)
class TensorflowFlatten(Layer):
    code = 20
    name = "TENSORFLOW_FLATTEN"
    WORDS = ("flags", "input", "output", "width", "height", "channels")

    flags: int = 0
    input: int = 0
    output: int = 0
    width: int = 1
    height: int = 1
    channels: int = 1

    def _count(self) -> int:
        return self.width * self.height * self.channels

    def inputs(self):
        return [main_f32(self.input, self._count())]

    def outputs(self):
        return [main_f32(self.output, self._count())]

    def output_shape(self):
        return [1, self._count()]

    def summary(self) -> str:
        return f"{shape3(self.width, self.height, self.channels)} CHW -> {self._count()} HWC"

    def run(self, mem) -> None:
        flatten(mem.f32(self.inputs()[0]), mem.f32(self.outputs()[0]), self.width, self.height, self.channels)
