"""Conv2DTranspose (opcode 0x13): f32 transposed convolution (scatter-add), NCHW.

Runtime spec §B.8. The output (``∏ out_shape`` f32) is zero-filled; then, over batch n, group g,
ic in the group, iy, ix (the input read sequentially), for each oc in the group and each valid
(ky, kx) — the valid tap range of §B.2 taken against ``out_shape[2]``/``out_shape[3]`` with origin
``iy·sh − pad_h.before`` — ``out[n][g·g_oc+oc][oy0+dh·ky][ox0+dw·kx] += x·w[g·g_oc+oc][ic][ky][kx]``.
**The bias is read but never added.** The clamp is applied only when the act range differs from
[−FLT_MAX, FLT_MAX]. (ncc's display-name table calls this op "QuantizedBinary", a cosmetic slip;
kmodelpy names it Conv2DTranspose.)

The scatter order decides the f32 rounding of every output, so the loops run exactly in the
spec's order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..errors import KernelError
from ..format.binio import FLT_MAX, MemoryRange, ValueRange, read_shape4, shape_size, write_shape4
from ._arith import clamp, tdiv
from ._window import WindowOp, check_groups, check_in_shape, check_window, grouped_weights_count, kernel_window, \
    read_window, write_window
from .base import register


@numba.njit(cache=True, nogil=True)
def _conv2d_transpose_kernel(x, w, groups, pad_h, pad_w, sh, sw, dh, dw, lo, hi, do_clamp, out):
    n_batch, n_c, in_h, in_w = x.shape
    out_h, out_w = out.shape[2], out.shape[3]
    n_oc, g_ic, fh, fw = w.shape
    g_oc = n_oc // groups
    out[:] = np.float32(0.0)
    for n in range(n_batch):
        for g in range(groups):
            for ic in range(g_ic):
                for iy in range(in_h):
                    oy0 = iy * sh - pad_h
                    ky0 = max(0, tdiv(-oy0 + dh - 1, dh))
                    ky1 = min(fh, tdiv(out_h - oy0 + dh - 1, dh))
                    for ix in range(in_w):
                        ox0 = ix * sw - pad_w
                        kx0 = max(0, tdiv(-ox0 + dw - 1, dw))
                        kx1 = min(fw, tdiv(out_w - ox0 + dw - 1, dw))
                        v = x[n, g * g_ic + ic, iy, ix]
                        for oc in range(g_oc):
                            o = g * g_oc + oc
                            for ky in range(ky0, ky1):
                                for kx in range(kx0, kx1):
                                    out[n, o, oy0 + dh * ky, ox0 + dw * kx] += v * w[o, ic, ky, kx]
    if do_clamp:
        flat = out.reshape(-1)
        for i in range(flat.shape[0]):
            flat[i] = clamp(flat[i], lo, hi)


def conv2d_transpose(x_nchw, weights, bias, out_shape, groups, padding_h, padding_w, stride_h, stride_w,
                     dilation_h, dilation_w, act_lo=-FLT_MAX, act_hi=FLT_MAX) -> np.ndarray:
    """Array-level Conv2DTranspose: ``x_nchw`` f32 [N, C, H, W], ``weights`` f32
    [OC, C/groups, fh, fw], ``out_shape`` [N', OC, OH, OW] (N' >= N). ``bias`` is accepted and, as in
    ncc, ignored. Returns f32 ``out_shape``."""
    del bias  # never added by the reference (§B.8)
    x = np.ascontiguousarray(x_nchw, dtype=np.float32)
    w = np.ascontiguousarray(weights, dtype=np.float32)
    out_shape = [int(d) for d in out_shape]
    n, c, _, _ = x.shape
    oc, g_ic, fh, fw = w.shape
    check_window("Conv2DTranspose", fh, fw, stride_h, stride_w, dilation_h, dilation_w)
    check_groups("Conv2DTranspose", c, out_shape[1], groups)
    if min(out_shape) < 0 or out_shape[0] < n or oc != out_shape[1] or g_ic != c // groups:
        raise KernelError(
            f"Conv2DTranspose: out_shape {out_shape} / weights {list(w.shape)} do not fit input {list(x.shape)}"
        )
    lo, hi = np.float32(act_lo), np.float32(act_hi)
    do_clamp = not (lo == np.float32(-FLT_MAX) and hi == np.float32(FLT_MAX))
    out = np.empty(out_shape, dtype=np.float32)
    win = kernel_window(padding_h, padding_w, stride_h, stride_w, dilation_h, dilation_w)
    _conv2d_transpose_kernel(x, w, int(groups), *win, lo, hi, do_clamp, out)
    return out


@register
@dataclass(eq=False)
class Conv2DTranspose(WindowOp):
    """Body layout §B.8 (116 bytes + f32 weights[OC·C/groups·fh·fw] + f32 bias[OC]), OC = out_shape[1]:

    | Off | Field                                    |
    |-----|------------------------------------------|
    | 0   | MR input (f32 NCHW), 16 MR output        |
    | 32  | Shape4 in_shape, 48 Shape4 out_shape     |
    | 64  | i32 groups                               |
    | 68  | window block (:mod:`._window`, 40 bytes) |
    | 108 | act                                      |
    | 116 | f32 weights[…], then f32 bias[OC]        |
    """

    opcode = 0x13
    name = "Conv2DTranspose"
    SIZE = 116

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    in_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    out_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    groups: int = 1
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

    @property
    def weights_count(self) -> int:
        return grouped_weights_count(self.out_shape[1], self.in_shape[1], self.groups, self.filter_h, self.filter_w)

    @classmethod
    def read(cls, r):
        op = cls(input=MemoryRange.read(r, "input"), output=MemoryRange.read(r, "output"),
                 in_shape=read_shape4(r, "in_shape"), out_shape=read_shape4(r, "out_shape"), groups=r.i32("groups"),
                 **read_window(r), act=ValueRange.read(r, "act"))
        op.weights = r.array("<f4", op.weights_count, "weights")
        op.bias = r.array("<f4", op.out_shape[1], "bias")
        return op

    def write(self, w):
        self.input.write(w)
        self.output.write(w)
        write_shape4(w, self.in_shape)
        write_shape4(w, self.out_shape)
        w.i32(self.groups)
        write_window(w, self)
        self.act.write(w)
        w.array(np.ravel(self.weights), "<f4")
        w.array(np.ravel(self.bias), "<f4")

    def output_shape(self, rng):
        return list(self.out_shape)

    def run(self, mem):
        n, c, h, wd = self.in_shape
        check_in_shape(self.name, self.in_shape)
        check_groups(self.name, c, self.out_shape[1], self.groups)
        x = np.array(mem.f32(self.input, shape_size(self.in_shape))).reshape(n, c, h, wd)
        w = np.asarray(self.weights, np.float32).reshape(self.out_shape[1], c // self.groups,
                                                         self.filter_h, self.filter_w)
        y = conv2d_transpose(x, w, self.bias, self.out_shape, self.groups, *self._conv_window(),
                             self.act.lo, self.act.hi)
        mem.f32(self.output, y.size)[:] = y.reshape(-1)
