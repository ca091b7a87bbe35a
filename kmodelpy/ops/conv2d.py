"""Conv2D (opcode 0x02): f32 grouped, strided, dilated 2-D convolution, NCHW, with a fused clamp.

Runtime spec §B.6 (and the compiler's float evaluator, compiler spec §8.2). Each output starts at
``bias[o]``; then for ic, ky, kx (valid taps only, §B.2) ``v = v + x·w`` — an f32 multiply, then an
f32 add, in exactly that order; finally ``clamp(v, act)``. Padding taps are skipped, never added.

The kernel runs tap-major (for each output channel: ic → ky → kx, then over all output pixels the
tap reaches). Every output still receives its additions in the spec's ic → ky → kx order, so the
result is bit-identical to the per-output loop, and the inner loop is over contiguous pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..format.binio import FLT_MAX, MemoryRange, ValueRange, read_shape4, shape_size, write_shape4
from ._arith import clamp, tap_out_range
from ._window import WindowOp, check_groups, check_in_shape, checked_out_hw, grouped_weights_count, kernel_window, \
    read_window, write_window
from .base import register


@numba.njit(cache=True, nogil=True)
def _conv2d_kernel(x, w, bias, groups, pad_h, pad_w, sh, sw, dh, dw, lo, hi, out):
    n_batch, _, in_h, in_w = x.shape
    n_oc, g_ic, fh, fw = w.shape
    out_h, out_w = out.shape[2], out.shape[3]
    g_oc = n_oc // groups
    for n in range(n_batch):
        for g in range(groups):
            for oc in range(g_oc):
                o = g * g_oc + oc
                plane = out[n, o]
                plane[:, :] = bias[o]
                for ic in range(g_ic):
                    xc = x[n, g * g_ic + ic]
                    for ky in range(fh):
                        by = ky * dh - pad_h
                        oy0, oy1 = tap_out_range(by, in_h, sh, out_h)
                        for kx in range(fw):
                            bx = kx * dw - pad_w
                            ox0, ox1 = tap_out_range(bx, in_w, sw, out_w)
                            wv = w[o, ic, ky, kx]
                            if sw == 1:  # contiguous 1-D slices let LLVM vectorise (no FMA, no reassociation)
                                for oy in range(oy0, oy1):
                                    row = xc[oy * sh + by, ox0 + bx : ox1 + bx]
                                    prow = plane[oy, ox0:ox1]
                                    for i in range(prow.shape[0]):
                                        prow[i] += row[i] * wv
                            else:
                                for oy in range(oy0, oy1):
                                    row = xc[oy * sh + by]
                                    prow = plane[oy]
                                    for ox in range(ox0, ox1):
                                        prow[ox] += row[ox * sw + bx] * wv
                for oy in range(out_h):
                    for ox in range(out_w):
                        plane[oy, ox] = clamp(plane[oy, ox], lo, hi)


def conv2d(x_nchw, weights, bias, groups, padding_h, padding_w, stride_h, stride_w, dilation_h, dilation_w,
           act_lo=-FLT_MAX, act_hi=FLT_MAX) -> np.ndarray:
    """Array-level Conv2D. ``x_nchw`` f32 [N, C, H, W]; ``weights`` f32 [OC, C/groups, fh, fw] (OIHW);
    ``bias`` f32 [OC]; paddings are (before, after) pairs (negative crops). Returns f32
    [N, OC, OH, OW] with ``OH = get_out(H, fh, stride_h, dilation_h, padding_h)`` (§B.2)."""
    x = np.ascontiguousarray(x_nchw, dtype=np.float32)
    w = np.ascontiguousarray(weights, dtype=np.float32)
    b = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
    n, c, h, wd = x.shape
    oc, g_ic, fh, fw = w.shape
    oh, ow = checked_out_hw("Conv2D", h, wd, fh, fw, stride_h, stride_w, dilation_h, dilation_w, padding_h, padding_w,
                            groups=(c, oc, groups))
    if g_ic != c // groups or b.shape[0] != oc:
        raise ValueError(f"conv2d: weights {w.shape} / bias {b.shape} do not fit input {x.shape}, groups {groups}")
    out = np.empty((n, oc, oh, ow), dtype=np.float32)
    win = kernel_window(padding_h, padding_w, stride_h, stride_w, dilation_h, dilation_w)
    _conv2d_kernel(x, w, b, int(groups), *win, np.float32(act_lo), np.float32(act_hi), out)
    return out


@register
@dataclass(eq=False)
class Conv2D(WindowOp):
    """Body layout §B.6 (104 bytes + f32 weights[OC·C/groups·fh·fw] OIHW + f32 bias[OC]):

    | Off | Field                                    |
    |-----|------------------------------------------|
    | 0   | MR input (f32 NCHW), 16 MR output        |
    | 32  | Shape4 in_shape                          |
    | 48  | i32 groups, 52 i32 out_channels          |
    | 56  | window block (:mod:`._window`, 40 bytes) |
    | 96  | act                                      |
    | 104 | f32 weights[…], then f32 bias[OC]        |
    """

    opcode = 0x02
    name = "Conv2D"
    SIZE = 104

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    in_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    groups: int = 1
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

    @property
    def weights_count(self) -> int:
        return grouped_weights_count(self.out_channels, self.in_shape[1], self.groups, self.filter_h, self.filter_w)

    @classmethod
    def read(cls, r):
        op = cls(input=MemoryRange.read(r, "input"), output=MemoryRange.read(r, "output"),
                 in_shape=read_shape4(r, "in_shape"), groups=r.i32("groups"), out_channels=r.i32("out_channels"),
                 **read_window(r), act=ValueRange.read(r, "act"))
        op.weights = r.array("<f4", op.weights_count, "weights")
        op.bias = r.array("<f4", op.out_channels, "bias")
        return op

    def write(self, w):
        self.input.write(w)
        self.output.write(w)
        write_shape4(w, self.in_shape)
        w.i32(self.groups)
        w.i32(self.out_channels)
        write_window(w, self)
        self.act.write(w)
        w.array(np.ravel(self.weights), "<f4")
        w.array(np.ravel(self.bias), "<f4")

    def output_shape(self, rng):
        return [self.in_shape[0], self.out_channels, *self._out_hw(self.in_shape[2], self.in_shape[3])]

    def run(self, mem):
        n, c, h, wd = self.in_shape
        check_in_shape(self.name, self.in_shape)
        self._check_window()
        check_groups(self.name, c, self.out_channels, self.groups)
        x = np.array(mem.f32(self.input, shape_size(self.in_shape))).reshape(n, c, h, wd)
        w = np.asarray(self.weights, np.float32).reshape(self.out_channels, c // self.groups,
                                                           self.filter_h, self.filter_w)
        y = conv2d(x, w, self.bias, self.groups, *self._conv_window(), self.act.lo, self.act.hi)
        mem.f32(self.output, y.size)[:] = y.reshape(-1)
