"""QUANTIZED_MAX_POOL2D (8) and AVERAGE_POOL2D (9): windowed pools over CHW maps (kpu.c 916-1002).

For each output channel, row and column the window starts at ``(ox*stride_w - pad_w, oy*stride_h - pad_h)``
and covers only the taps inside the input (kernel_x from ``max(0, -x0)`` to ``min(kernel_w, in_w - x0)``,
with the C code's int32/u32 mix). Max pool: u8, the value starts at 0. Average pool: float32 sum of the
taps inside, divided by their count (a float32 counter); its ``act`` field is ignored by the SDK.
Output channel ``oc`` reads input channel ``oc``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .layer import MapLayer, outside_main_memory, register

ERR_OUTSIDE = 1  # a window tap outside the input range (a damaged body)


@numba.njit(cache=True, error_model="numpy")
def _s32(v):
    v = v & 0xFFFFFFFF
    return v - 0x100000000 if v >= 0x80000000 else v


@numba.njit(cache=True, error_model="numpy")
def _window(ox, oy, in_w, in_h, kw, kh, sw, sh, pw, ph):
    """(x0, y0, kx_start, kx_end, ky_start, ky_end) of one output, with kpu.c's int32/u32 arithmetic."""
    x0 = _s32(((ox * sw) & 0xFFFFFFFF) - pw)
    y0 = _s32(((oy * sh) & 0xFFFFFFFF) - ph)
    kxs = max(0, _s32(-x0))
    kxe = _s32(min(kw, (in_w - x0) & 0xFFFFFFFF))
    kys = max(0, _s32(-y0))
    kye = _s32(min(kh, (in_h - y0) & 0xFFFFFFFF))
    return x0, y0, kxs, kxe, kys, kye


@numba.njit(cache=True, error_model="numpy")
def _tap(base, x0, y0, kx, ky, in_w):
    """Element index of a tap: ``channel_src[in_y * in_w + in_x]`` in u32 arithmetic."""
    return base + ((((_s32(y0 + ky) * in_w) & 0xFFFFFFFF) + _s32(x0 + kx)) & 0xFFFFFFFF)


@numba.njit(cache=True, error_model="numpy")
def max_pool(src, dest, in_w, in_h, out_w, out_h, out_c, kw, kh, sw, sh, pw, ph):
    """QUANTIZED_MAX_POOL2D on u8; returns 0 or ERR_OUTSIDE."""
    o = 0
    for oc in range(out_c):
        base = (in_w * in_h * oc) & 0xFFFFFFFF
        for oy in range(out_h):
            for ox in range(out_w):
                x0, y0, kxs, kxe, kys, kye = _window(ox, oy, in_w, in_h, kw, kh, sw, sh, pw, ph)
                value = 0
                for ky in range(kys, kye):
                    for kx in range(kxs, kxe):
                        i = _tap(base, x0, y0, kx, ky, in_w)
                        if i >= src.size:
                            return ERR_OUTSIDE
                        value = max(value, src[i])
                dest[o] = value
                o += 1
    return 0


@numba.njit(cache=True, error_model="numpy")
def average_pool(src, dest, in_w, in_h, out_w, out_h, out_c, kw, kh, sw, sh, pw, ph):
    """AVERAGE_POOL2D on float32; returns 0 or ERR_OUTSIDE."""
    o = 0
    for oc in range(out_c):
        base = (in_w * in_h * oc) & 0xFFFFFFFF
        for oy in range(out_h):
            for ox in range(out_w):
                x0, y0, kxs, kxe, kys, kye = _window(ox, oy, in_w, in_h, kw, kh, sw, sh, pw, ph)
                value = np.float32(0.0)
                count = np.float32(0.0)
                for ky in range(kys, kye):
                    for kx in range(kxs, kxe):
                        i = _tap(base, x0, y0, kx, ky, in_w)
                        if i >= src.size:
                            return ERR_OUTSIDE
                        value += src[i]
                        count += np.float32(1.0)
                dest[o] = value / count
                o += 1
    return 0


@register
@dataclass(eq=False)
class QuantizedMaxPool2D(MapLayer):
    code = 8
    name = "QUANTIZED_MAX_POOL2D"
    WORDS = ("flags", "input", "output", "in_width", "in_height", "in_channels", "out_width", "out_height",
             "out_channels", "kernel_width", "kernel_height", "stride_width", "stride_height", "padding_width",
             "padding_height")
    ITEM = 1

    out_channels: int = 1
    kernel_width: int = 1
    kernel_height: int = 1
    stride_width: int = 1
    stride_height: int = 1
    padding_width: int = 0
    padding_height: int = 0

    def summary(self) -> str:
        return (f"{super().summary()} k{self.kernel_width}x{self.kernel_height} s{self.stride_width}x"
                f"{self.stride_height} p{self.padding_width}x{self.padding_height}")

    def run(self, mem) -> None:
        kernel = max_pool if self.ITEM == 1 else average_pool
        err = kernel(*self.kernel_views(mem), self.in_width, self.in_height, self.out_width, self.out_height,
                     self.out_channels, self.kernel_width, self.kernel_height, self.stride_width, self.stride_height,
                     self.padding_width, self.padding_height)
        if err:
            raise outside_main_memory(mem, "a pooling window reads")


@register
@dataclass(eq=False)
class AveragePool2D(QuantizedMaxPool2D):
    code = 9
    name = "AVERAGE_POOL2D"
    WORDS = QuantizedMaxPool2D.WORDS + ("act",)
    ITEM = 4

    act: int = 0  # ignored by the SDK

    def summary(self) -> str:
        return super().summary() + (f" (act {self.act} ignored)" if self.act else "")
