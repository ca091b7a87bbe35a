"""RESIZE_NEAREST_NEIGHBOR (22, float32) and QUANTIZED_RESIZE_NEAREST_NEIGHBOR (23, u8), CHW
(kpu.c 1205-1257). ``hs = (float)in_h / out_h`` and ``ws = (float)in_w / out_w`` in float32;
source row ``(u32)min(floorf(oy * hs), in_h - 1)``, column likewise. ``align_corners`` is read but
ignored by the SDK."""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .layer import MapLayer, outside_main_memory, register

ERR_OUTSIDE = 1


@numba.njit(cache=True, error_model="numpy")
def _source_index(o, scale, n_in):
    """``(uint32_t)min(floorf(o * scale), n_in - 1)``: the u32 ``n_in - 1`` is compared as a float,
    and the conversion is RISC-V's ``fcvt.wu.s`` (truncate; negative -> 0, NaN or too big -> 2^32-1)."""
    v = np.floor(np.float32(np.float32(o) * scale))
    lim = np.float32((n_in - 1) & 0xFFFFFFFF)
    v = v if v < lim else lim
    if v != v or v >= 4294967296.0:
        return 0xFFFFFFFF
    if v <= 0:
        return 0
    return int(v)


@numba.njit(cache=True, error_model="numpy")
def resize_nearest(src, dest, in_w, in_h, in_c, out_w, out_h):
    hs = np.float32(in_h) / np.float32(out_h)
    ws = np.float32(in_w) / np.float32(out_w)
    o = 0
    for c in range(in_c):
        base = (in_w * in_h * c) & 0xFFFFFFFF
        for oy in range(out_h):
            row = base + ((_source_index(oy, hs, in_h) * in_w) & 0xFFFFFFFF)
            for ox in range(out_w):
                i = row + _source_index(ox, ws, in_w)
                if i >= src.size or o >= dest.size:
                    return ERR_OUTSIDE
                dest[o] = src[i]
                o += 1
    return 0


@register
@dataclass(eq=False)
class ResizeNearestNeighbor(MapLayer):
    code = 22
    name = "RESIZE_NEAREST_NEIGHBOR"
    WORDS = ("flags", "input", "output", "in_width", "in_height", "in_channels", "out_width", "out_height",
             "align_corners")
    ITEM = 4

    align_corners: int = 0

    @property
    def out_channels(self) -> int:
        return self.in_channels

    def run(self, mem) -> None:
        err = resize_nearest(*self.kernel_views(mem), self.in_width, self.in_height, self.in_channels,
                             self.out_width, self.out_height)
        if err:
            raise outside_main_memory(mem, "a source pixel lies")


@register
@dataclass(eq=False)
class QuantizedResizeNearestNeighbor(ResizeNearestNeighbor):
    code = 23
    name = "QUANTIZED_RESIZE_NEAREST_NEIGHBOR"
    ITEM = 1
