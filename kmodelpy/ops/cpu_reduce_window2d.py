"""CPUReduceWindow2D (opcode 0x1003): pooling over an NHWC float32 tensor.

Runtime spec §B.23: the same 104-byte body as ReduceWindow2D (§B.15) with ``in_shape = [N, H, W,
C]``; loops oy, ox, then channel; output NHWC [N, OH, OW, C]. Only mean, min and max exist: sum
(or an op > 3) is a kernel error (§B.26).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..format.binio import MemoryRange
from .base import register
from ._arith import tap_range
from ._window import out_hw
from .reduce_window2d import REDUCE_SUM, _WindowBody, window_fold


@numba.njit(cache=True, nogil=True)
def _reduce_window2d_nhwc(x, n, h, w, c, oh, ow, fh, fw, sh, sw, dh, dw, ph, pw, op, init, lo, hi, out):
    i = 0
    for b in range(n):
        base = b * h * w * c
        for oy in range(oh):
            oy_org, ky0, ky1 = tap_range(oy, sh, ph, dh, h, fh)
            for ox in range(ow):
                ox_org, kx0, kx1 = tap_range(ox, sw, pw, dw, w, fw)
                for ch in range(c):
                    out[i] = window_fold(x, base + ch, w * c, c, oy_org, ky0, ky1, dh, ox_org, kx0, kx1, dw,
                                         op, init, lo, hi)
                    i += 1


def cpu_reduce_window2d(x_nhwc, reduce_op: int, filter_h: int, filter_w: int, stride_h: int, stride_w: int,
                        dilation_h: int, dilation_w: int, padding_h, padding_w, init_value: float,
                        act_lo: float, act_hi: float) -> np.ndarray:
    """Array-level NHWC pooling (mean/min/max); returns [N, OH, OW, C] float32."""
    x = np.ascontiguousarray(np.asarray(x_nhwc, dtype=np.float32))
    n, h, w, c = (int(d) for d in x.shape)
    if not 0 <= reduce_op <= 2:
        raise ValueError(f"reduce op {reduce_op} is not mean/min/max")
    oh, ow = out_hw(h, w, filter_h, filter_w, stride_h, stride_w, dilation_h, dilation_w, padding_h, padding_w,
                    nonneg=True)
    out = np.empty(n * oh * ow * c, dtype=np.float32)
    if out.size:
        _reduce_window2d_nhwc(x.reshape(-1), n, h, w, c, oh, ow, filter_h, filter_w, stride_h, stride_w,
                              dilation_h, dilation_w, int(padding_h[0]), int(padding_w[0]), int(reduce_op),
                              np.float32(init_value), np.float32(act_lo), np.float32(act_hi), out)
    return out.reshape(n, oh, ow, c)


@register
@dataclass
class CPUReduceWindow2D(_WindowBody):
    opcode = 0x1003
    name = "CPUReduceWindow2D"

    def output_shape(self, rng: MemoryRange) -> list[int] | None:
        n, h, w, c = self.in_shape
        oh, ow = self._out_hw(h, w)
        return [n, oh, ow, c]

    def run(self, mem) -> None:
        from ..runtime import KernelFailure

        if not 0 <= self.reduce_op <= 2 or self.reduce_op == REDUCE_SUM:
            raise KernelFailure(f"error occurs in running kernel: {self.name}")
        self._check_geometry(mem)
        x = mem.f32(self.input, int(np.prod(self.in_shape))).reshape(self.in_shape)
        y = cpu_reduce_window2d(x, self.reduce_op, self.filter_h, self.filter_w, self.stride_h, self.stride_w,
                                self.dilation_h, self.dilation_w, self.padding_h, self.padding_w,
                                self.init_value, self.act.lo, self.act.hi)
        mem.f32(self.output, y.size)[:] = y.reshape(-1)
