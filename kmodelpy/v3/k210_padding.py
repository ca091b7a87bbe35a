"""K210_ADD_PADDING (10241) and K210_REMOVE_PADDING (10242): how nncase v0.1 feeds 1x1 data (a
fully connected layer made a 1x1 convolution) to the KPU, which needs maps of at least 4x4
(kpu.c 1313-1353).

ADD_PADDING writes byte ``in[oc]`` to KPU RAM ``line*64 + (oc/4)*4*64 + (oc%4)*16``: pixel (0, 0) of
channel ``oc`` of a 4x4 map in the KPU layout (4 channels per 64-byte line). The other 15 pixels keep
whatever KPU RAM held. REMOVE_PADDING takes pixel (0, 0) back from the dense 4x4 maps a KPU layer
sent to main memory: ``out[oc] = in[oc*16]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .layer import Layer, kpu_range, main_u8, register


@numba.njit(cache=True, error_model="numpy")
def remove_padding(src, dest):
    """``*dest++ = src[oc*16]`` in order (the output may overlap the input)."""
    for oc in range(dest.size):
        dest[oc] = src[16 * oc]


@register
@dataclass(eq=False)
class K210AddPadding(Layer):
    code = 10241
    name = "K210_ADD_PADDING"
    WORDS = ("flags", "input", "kpu_line", "channels")

    flags: int = 0
    input: int = 0
    kpu_line: int = 0
    channels: int = 0

    def inputs(self):
        return [main_u8(self.input, self.channels)]

    def outputs(self):
        return [kpu_range(self.kpu_line, 256 * (-(-int(self.channels) // 4)))]

    def output_shape(self):
        return [1, int(self.channels), 4, 4]

    def summary(self) -> str:
        return f"{self.channels} bytes -> KPU RAM line {self.kpu_line} as {self.channels}x4x4 (pixel 0,0)"

    def run(self, mem) -> None:
        oc = np.arange(int(self.channels))
        mem.kpu[64 * self.kpu_line + (oc // 4) * 256 + (oc % 4) * 16] = mem.u8(self.inputs()[0])


@register
@dataclass(eq=False)
class K210RemovePadding(Layer):
    code = 10242
    name = "K210_REMOVE_PADDING"
    WORDS = ("flags", "input", "output", "channels")

    flags: int = 0
    input: int = 0
    output: int = 0
    channels: int = 0

    def inputs(self):
        return [main_u8(self.input, max(0, 16 * int(self.channels) - 15))]

    def outputs(self):
        return [main_u8(self.output, self.channels)]

    def output_shape(self):
        return [1, int(self.channels)]

    def summary(self) -> str:
        return f"{self.channels}x4x4 -> {self.channels} bytes (pixel 0,0)"

    def run(self, mem) -> None:
        remove_padding(mem.u8(self.inputs()[0]), mem.u8(self.outputs()[0]))
