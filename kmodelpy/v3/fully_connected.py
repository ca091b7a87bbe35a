"""FULLY_CONNECTED (18): ``dest[oc] = sum_ic src[ic]*w[oc][ic] + bias[oc]``, then the activation
(0 linear, 1 relu ``v > 0 ? v : 0``, 2 relu6 ``min(max(v, 0), 6)``; kpu.c 1132-1190, 730-743).
Body: u32 flags, in, out, in_channels, out_channels, act, float32 weights[out][in], bias[out].

The device build's float order (runtime spec §3), per output channel from ``sum = 0``:

* ``in_channels % 8 == 0`` (the SDK's 8-way unrolled loop, partly re-associated by GCC): per group of
  eight ``t = fmaf(x0, w0, x1*w1); sum = t + sum; sum = fmaf(x2, w2, sum)`` ... ``fmaf(x7, w7, sum)``;
* otherwise: ``sum = fmaf(x, w, sum)`` for each input in order;

then ``dest = sum + bias``.

As the first layer of a model it takes the model's input: ``in_channels`` float32 copied to ``in``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..fma import fmaf
from .layer import Layer, main_f32, register

ACTIVATIONS = {0: "linear", 1: "relu", 2: "relu6"}


@numba.njit(cache=True, error_model="numpy")
def fully_connected(src, dest, weights, bias, act):
    n_out, n_in = weights.shape
    x = src  # read in the loop, as C does (dest may overlap src)
    zero = np.float32(0.0)
    six = np.float32(6.0)
    for oc in range(n_out):
        w = weights[oc]
        s = zero
        if n_in % 8 == 0:
            for g in range(0, n_in, 8):
                t = fmaf(x[g], w[g], x[g + 1] * w[g + 1])
                s = t + s
                for j in range(g + 2, g + 8):
                    s = fmaf(x[j], w[j], s)
        else:
            for i in range(n_in):
                s = fmaf(x[i], w[i], s)
        dest[oc] = s + bias[oc]
    for oc in range(n_out):
        v = dest[oc]
        if act == 1 or act == 2:
            v = v if v > zero else zero
        if act == 2:
            v = v if v < six else six
        dest[oc] = v


@register
@dataclass(eq=False)
class FullyConnected(Layer):
    code = 18
    name = "FULLY_CONNECTED"
    WORDS = ("flags", "input", "output", "in_channels", "out_channels", "act")

    flags: int = 0
    input: int = 0
    output: int = 0
    in_channels: int = 0
    out_channels: int = 0
    act: int = 0
    weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # [out, in]
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def read_rest(self, r) -> None:
        n_in, n_out = self.in_channels, self.out_channels
        self.weights = r.array("<f4", n_in * n_out, "weights").reshape(n_out, n_in)
        self.bias = r.array("<f4", n_out, "bias")

    def write_rest(self, w) -> None:
        w.array(self.weights, "<f4")
        w.array(self.bias, "<f4")

    def inputs(self):
        return [main_f32(self.input, self.in_channels)]

    def outputs(self):
        return [main_f32(self.output, self.out_channels)]

    def output_shape(self):
        return [1, int(self.out_channels)]

    def summary(self) -> str:
        return f"{self.in_channels} -> {self.out_channels} float32, {ACTIVATIONS.get(self.act, f'act {self.act} (none)')}"

    def run(self, mem) -> None:
        fully_connected(mem.f32(self.inputs()[0]), mem.f32(self.outputs()[0]),
                        np.ascontiguousarray(self.weights, np.float32), np.ascontiguousarray(self.bias, np.float32),
                        int(self.act))
