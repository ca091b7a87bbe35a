"""CPUConv2D (opcode 0x1001): f32 convolution in NHWC with O,H,W,I weights (no groups).

Runtime spec §B.23 (never emitted by the K210 compiler). Loops: batch, oy, ox, oc; each output
starts at ``bias[oc]`` and adds ``x[iy][ix][ic]·w[oc][ky][kx][ic]`` for valid ky, then kx, then
ic (f32 multiply, f32 add), then ``clamp(v, act)``. The output is NHWC.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..errors import KernelError
from ..format.binio import FLT_MAX, MemoryRange, ValueRange, read_padding, read_shape4, shape_size, \
    write_padding, write_shape4
from ._arith import clamp, get_out, tdiv
from .base import Op, register
from .conv2d import check_window


@numba.njit(cache=True)
def tap_range(o, stride, pad_before, dil, size, f):
    """Valid tap range ``[k0, k1)`` of output ``o`` (§B.2) and the window origin."""
    org = o * stride - pad_before
    k0 = max(0, tdiv(-org + dil - 1, dil))
    k1 = min(f, tdiv(size - org + dil - 1, dil))
    return org, k0, k1


@numba.njit(cache=True)
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


def nhwc_out_hw(in_shape, filter_h, filter_w, stride_h, stride_w, dilation_h, dilation_w, padding_h, padding_w):
    """(OH, OW) of an NHWC window op (§B.2 get_out), never negative."""
    oh = get_out(int(in_shape[1]), filter_h, stride_h, dilation_h, *padding_h)
    ow = get_out(int(in_shape[2]), filter_w, stride_w, dilation_w, *padding_w)
    return max(oh, 0), max(ow, 0)


def cpu_conv2d(x_nhwc, weights, bias, padding_h, padding_w, stride_h, stride_w, dilation_h, dilation_w,
               act_lo=-FLT_MAX, act_hi=FLT_MAX) -> np.ndarray:
    """Array-level CPUConv2D: ``x_nhwc`` f32 [N, H, W, C], ``weights`` f32 [OC, fh, fw, C], ``bias``
    f32 [OC]. Returns f32 [N, OH, OW, OC]."""
    x = np.ascontiguousarray(x_nhwc, dtype=np.float32)
    w = np.ascontiguousarray(weights, dtype=np.float32)
    b = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
    oc, fh, fw, c = w.shape
    check_window("CPUConv2D", fh, fw, stride_h, stride_w, dilation_h, dilation_w)
    if c != x.shape[3] or b.shape[0] != oc:
        raise ValueError(f"cpu_conv2d: weights {w.shape} / bias {b.shape} do not fit input {x.shape}")
    oh, ow = nhwc_out_hw(x.shape, fh, fw, stride_h, stride_w, dilation_h, dilation_w, padding_h, padding_w)
    out = np.empty((x.shape[0], oh, ow, oc), dtype=np.float32)
    _cpu_conv2d_kernel(x, w, b, int(padding_h[0]), int(padding_w[0]), int(stride_h), int(stride_w),
                       int(dilation_h), int(dilation_w), np.float32(act_lo), np.float32(act_hi), out)
    return out


def check_nhwc(name: str, in_shape) -> None:
    if min(in_shape) < 0:
        raise KernelError(f"{name} has a negative dimension in in_shape {list(in_shape)} (the file is damaged)")


@register
@dataclass(eq=False)
class CPUConv2D(Op):
    """Body layout §B.23 (100 bytes + f32 weights[OC·fh·fw·C] + f32 bias[OC])."""

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

    _WINDOW = ("filter_h", "filter_w", "stride_h", "stride_w", "dilation_h", "dilation_w")

    @classmethod
    def read(cls, r):
        op = cls(MemoryRange.read(r, "input"), MemoryRange.read(r, "output"), read_shape4(r, "in_shape"),
                 r.i32("out_channels"), read_padding(r, "padding_h"), read_padding(r, "padding_w"),
                 *(r.i32(n) for n in cls._WINDOW), ValueRange.read(r, "act"))
        op.weights = r.array("<f4", op.out_channels * op.in_shape[3] * op.filter_h * op.filter_w, "weights")
        op.bias = r.array("<f4", op.out_channels, "bias")
        return op

    def write(self, w):
        self.input.write(w)
        self.output.write(w)
        write_shape4(w, self.in_shape)
        w.i32(self.out_channels)
        write_padding(w, self.padding_h)
        write_padding(w, self.padding_w)
        for n in self._WINDOW:
            w.i32(getattr(self, n))
        self.act.write(w)
        w.array(np.ravel(self.weights), "<f4")
        w.array(np.ravel(self.bias), "<f4")

    def output_shape(self, rng):
        oh, ow = nhwc_out_hw(self.in_shape, self.filter_h, self.filter_w, self.stride_h, self.stride_w,
                             self.dilation_h, self.dilation_w, self.padding_h, self.padding_w)
        return [self.in_shape[0], oh, ow, self.out_channels]

    def run(self, mem):
        check_nhwc(self.name, self.in_shape)
        x = np.array(mem.f32(self.input, shape_size(self.in_shape))).reshape(self.in_shape)
        w = np.asarray(self.weights, np.float32).reshape(self.out_channels, self.filter_h, self.filter_w,
                                                         self.in_shape[3])
        y = cpu_conv2d(x, w, self.bias, self.padding_h, self.padding_w, self.stride_h, self.stride_w,
                       self.dilation_h, self.dilation_w, self.act.lo, self.act.hi)
        mem.f32(self.output, y.size)[:] = y.reshape(-1)
