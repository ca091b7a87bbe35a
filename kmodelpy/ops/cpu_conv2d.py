"""CPUConv2D (opcode 0x1001): f32 convolution in NHWC with O,H,W,I weights (no groups).

Runtime spec §B.23 (never emitted by the K210 compiler). Loops: batch, oy, ox, oc; each output
starts at ``bias[oc]`` and adds ``x[iy][ix][ic]·w[oc][ky][kx][ic]`` for valid ky, then kx, then
ic (f32 multiply, f32 add), then ``clamp(v, act)``. The output is NHWC.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..format.binio import FLT_MAX, MemoryRange, ValueRange, read_shape4, shape_size, write_shape4
from ._arith import clamp, tap_range
from ._window import WindowOp, check_in_shape, checked_out_hw, kernel_window, read_window, write_window
from .base import register


@numba.njit(cache=True, nogil=True)
def _cpu_conv2d_kernel(x, w, bias, pad_h, pad_w, sh, sw, dh, dw, lo, hi, out):
    n_batch, in_h, in_w, n_c = x.shape
    n_oc, fh, fw, _ = w.shape
    out_h, out_w = out.shape[1], out.shape[2]
    for n in range(n_batch):
        for oy in range(out_h):
            org_y, ky0, ky1 = tap_range(oy, sh, pad_h, dh, in_h, fh)
            for ox in range(out_w):
                org_x, kx0, kx1 = tap_range(ox, sw, pad_w, dw, in_w, fw)
                for oc in range(n_oc):
                    v = bias[oc]
                    for ky in range(ky0, ky1):
                        for kx in range(kx0, kx1):
                            pix = x[n, org_y + dh * ky, org_x + dw * kx]
                            wp = w[oc, ky, kx]
                            for ic in range(n_c):
                                v += pix[ic] * wp[ic]
                    out[n, oy, ox, oc] = clamp(v, lo, hi)


def cpu_conv2d(x_nhwc, weights, bias, padding_h, padding_w, stride_h, stride_w, dilation_h, dilation_w,
               act_lo=-FLT_MAX, act_hi=FLT_MAX) -> np.ndarray:
    """Array-level CPUConv2D: ``x_nhwc`` f32 [N, H, W, C], ``weights`` f32 [OC, fh, fw, C], ``bias``
    f32 [OC]. Returns f32 [N, OH, OW, OC]."""
    x = np.ascontiguousarray(x_nhwc, dtype=np.float32)
    w = np.ascontiguousarray(weights, dtype=np.float32)
    b = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
    oc, fh, fw, c = w.shape
    oh, ow = checked_out_hw("CPUConv2D", x.shape[1], x.shape[2], fh, fw, stride_h, stride_w, dilation_h, dilation_w,
                            padding_h, padding_w)
    if c != x.shape[3] or b.shape[0] != oc:
        raise ValueError(f"cpu_conv2d: weights {w.shape} / bias {b.shape} do not fit input {x.shape}")
    out = np.empty((x.shape[0], oh, ow, oc), dtype=np.float32)
    _cpu_conv2d_kernel(x, w, b, *kernel_window(padding_h, padding_w, stride_h, stride_w, dilation_h, dilation_w),
                       np.float32(act_lo), np.float32(act_hi), out)
    return out


@register
@dataclass(eq=False)
class CPUConv2D(WindowOp):
    """Body layout §B.23 (100 bytes + f32 weights[OC·fh·fw·C] + f32 bias[OC]):

    | Off | Field                                    |
    |-----|------------------------------------------|
    | 0   | MR input (f32 NHWC), 16 MR output        |
    | 32  | Shape4 in_shape [N, H, W, C]             |
    | 48  | i32 out_channels                         |
    | 52  | window block (:mod:`._window`, 40 bytes) |
    | 92  | act                                      |
    | 100 | f32 weights[…] OHWI, then f32 bias[OC]   |
    """

    opcode = 0x1001
    name = "CPUConv2D"
    SIZE = 100

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    in_shape: list = field(default_factory=lambda: [1, 1, 1, 1])  # N, H, W, C
    out_channels: int = 1
    padding_h: tuple = (0, 0)
    padding_w: tuple = (0, 0)
    filter_h: int = 1
    filter_w: int = 1
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    act: ValueRange = field(default_factory=ValueRange)
    weights: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))

    @classmethod
    def read(cls, r):
        op = cls(input=MemoryRange.read(r, "input"), output=MemoryRange.read(r, "output"),
                 in_shape=read_shape4(r, "in_shape"), out_channels=r.i32("out_channels"), **read_window(r),
                 act=ValueRange.read(r, "act"))
        op.weights = r.array("<f4", op.out_channels * op.in_shape[3] * op.filter_h * op.filter_w, "weights")
        op.bias = r.array("<f4", op.out_channels, "bias")
        return op

    def write(self, w):
        self.input.write(w)
        self.output.write(w)
        write_shape4(w, self.in_shape)
        w.i32(self.out_channels)
        write_window(w, self)
        self.act.write(w)
        w.array(np.ravel(self.weights), "<f4")
        w.array(np.ravel(self.bias), "<f4")

    def output_shape(self, rng):
        return [self.in_shape[0], *self._out_hw(self.in_shape[1], self.in_shape[2], nonneg=True), self.out_channels]

    def run(self, mem):
        check_in_shape(self.name, self.in_shape)
        x = np.array(mem.f32(self.input, shape_size(self.in_shape))).reshape(self.in_shape)
        w = np.asarray(self.weights, np.float32).reshape(self.out_channels, self.filter_h, self.filter_w,
                                                         self.in_shape[3])
        y = cpu_conv2d(x, w, self.bias, *self._conv_window(), self.act.lo, self.act.hi)
        mem.f32(self.output, y.size)[:] = y.reshape(-1)
