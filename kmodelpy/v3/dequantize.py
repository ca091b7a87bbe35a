"""DEQUANTIZE (12) and CHANNELWISE_DEQUANTIZE (24): u8 codes -> float32 (kpu.c 1026-1050).

``out = x * scale + bias``, which the device build computes as one ``fmaf((float)x, scale, bias)``
(``fcvt.s.w; fmadd.s``); the channel-wise form has one (scale, bias) per channel of ``channel_size``
values.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..fma import fmaf
from .layer import Layer, ScaleBiasLayer, main_f32, main_u8, register


@numba.njit(cache=True, error_model="numpy")
def dequantize(src, dest, scale, bias):
    for i in range(dest.size):
        dest[i] = fmaf(np.float32(src[i]), scale, bias)


@numba.njit(cache=True, error_model="numpy")
def channelwise_dequantize(src, dest, channel_size, params):
    i = 0
    for c in range(params.shape[0]):
        scale, bias = params[c, 0], params[c, 1]
        for _ in range(channel_size):
            dest[i] = fmaf(np.float32(src[i]), scale, bias)
            i += 1


@register
@dataclass(eq=False)
class Dequantize(ScaleBiasLayer):
    code = 12
    name = "DEQUANTIZE"
    IN_ITEM, OUT_ITEM = 1, 4
    kernel = staticmethod(dequantize)

    def summary(self) -> str:
        return f"{self.count} uint8 -> float32, x = q * {self.scale:.6g} + {self.bias:.6g}"


@register
@dataclass(eq=False)
class ChannelwiseDequantize(Layer):
    code = 24
    name = "CHANNELWISE_DEQUANTIZE"
    WORDS = ("flags", "input", "output", "channels", "channel_size")

    flags: int = 0
    input: int = 0
    output: int = 0
    channels: int = 0
    channel_size: int = 0
    params: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # [channels, (scale, bias)]

    def read_rest(self, r) -> None:
        self.params = r.array("<f4", 2 * self.channels, "quant params").reshape(self.channels, 2)

    def write_rest(self, w) -> None:
        w.array(self.params, "<f4")


    def inputs(self):
        return [main_u8(self.input, self.channels * self.channel_size)]

    def outputs(self):
        return [main_f32(self.output, self.channels * self.channel_size)]

    def summary(self) -> str:
        return f"{self.channels} channels x {self.channel_size} uint8 -> float32 (per-channel scale, bias)"

    def run(self, mem) -> None:
        channelwise_dequantize(mem.u8(self.inputs()[0]), mem.f32(self.outputs()[0]), self.channel_size,
                               np.ascontiguousarray(self.params, np.float32))
