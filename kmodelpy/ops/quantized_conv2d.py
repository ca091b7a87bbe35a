"""QuantizedConv2D (opcode 0x0F): u8 NCHW convolution with an i32 accumulator and MCS requantization.

Runtime spec §B.7. Same loops as Conv2D (§B.6). The i32 accumulator starts at ``bias[o]`` and adds
``(x + input_offset)·(w + filter_offset)`` for each valid tap (wrapping on overflow; skipped taps
are equivalent to padding with ``−input_offset``). Output:
``clamp(MCS(acc, output_mul, output_shift) + output_offset, 0, 255)``. The body stores the i32
bias **before** the u8 weights.

Integer addition is exact, so the tap-major loop order of :mod:`conv2d` is used freely; the
accumulator is kept modulo 2^32 and read back as i32.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..format.binio import MemoryRange, read_shape4, shape_size, write_shape4
from ._arith import clamp_u8, mul_and_carry_shift, tap_out_range, wrap_i32
from ._window import WindowOp, check_groups, check_in_shape, checked_out_hw, grouped_weights_count, kernel_window, \
    read_window, write_window
from .base import register


@numba.njit(cache=True, nogil=True)
def _qconv2d_kernel(x, w, bias, groups, pad_h, pad_w, sh, sw, dh, dw,
                    in_off, f_off, o_mul, o_shift, o_off, exact, out):
    n_batch, n_c, in_h, in_w = x.shape
    n_oc, g_ic, fh, fw = w.shape
    out_h, out_w = out.shape[2], out.shape[3]
    g_oc = n_oc // groups
    xq = np.empty((n_c, in_h, in_w), dtype=np.int64)
    acc = np.empty((out_h, out_w), dtype=np.int64)
    for n in range(n_batch):
        for c in range(n_c):
            for iy in range(in_h):
                for ix in range(in_w):
                    xq[c, iy, ix] = wrap_i32(np.int64(x[n, c, iy, ix]) + in_off)
        for g in range(groups):
            for oc in range(g_oc):
                o = g * g_oc + oc
                b = np.int64(bias[o])
                for oy in range(out_h):
                    for ox in range(out_w):
                        acc[oy, ox] = b
                for ic in range(g_ic):
                    xc = xq[g * g_ic + ic]
                    for ky in range(fh):
                        by = ky * dh - pad_h
                        oy0, oy1 = tap_out_range(by, in_h, sh, out_h)
                        for kx in range(fw):
                            bx = kx * dw - pad_w
                            ox0, ox1 = tap_out_range(bx, in_w, sw, out_w)
                            wv = wrap_i32(np.int64(w[o, ic, ky, kx]) + f_off)
                            for oy in range(oy0, oy1):
                                if sw == 1:  # contiguous slices vectorise
                                    row = xc[oy * sh + by, ox0 + bx : ox1 + bx]
                                else:
                                    row = xc[oy * sh + by, ox0 * sw + bx : (ox1 - 1) * sw + bx + 1 : sw]
                                arow = acc[oy, ox0:ox1]
                                if exact:  # no i64 overflow possible: wrap once at the end
                                    for i in range(arow.shape[0]):
                                        arow[i] += row[i] * wv
                                else:
                                    for i in range(arow.shape[0]):
                                        arow[i] = (arow[i] + row[i] * wv) & 0xFFFFFFFF
                for oy in range(out_h):
                    for ox in range(out_w):
                        v = mul_and_carry_shift(wrap_i32(acc[oy, ox]), o_mul, o_shift)
                        out[n, o, oy, ox] = clamp_u8(wrap_i32(v + o_off))


def accumulator_fits_i64(input_offset: int, filter_offset: int, taps: int) -> bool:
    """True when ``bias + Σ (x+input_offset)·(w+filter_offset)`` over ``taps`` terms can never leave
    the i64 range, so plain i64 sums wrapped to i32 once equal the step-by-step i32 wrap."""
    xm = max(abs(input_offset), abs(255 + input_offset))  # |unwrapped| bounds |wrapped|
    wm = max(abs(filter_offset), abs(255 + filter_offset))
    return taps * xm * wm + (1 << 31) < (1 << 63)


def quantized_conv2d(x_nchw, weights, bias, groups, padding_h, padding_w, stride_h, stride_w,
                     dilation_h, dilation_w, input_offset, filter_offset, output_mul, output_shift,
                     output_offset) -> np.ndarray:
    """Array-level QuantizedConv2D: ``x_nchw`` u8 [N, C, H, W], ``weights`` u8 [OC, C/groups, fh, fw],
    ``bias`` i32 [OC]. Returns u8 [N, OC, OH, OW]."""
    x = np.ascontiguousarray(x_nchw, dtype=np.uint8)
    w = np.ascontiguousarray(weights, dtype=np.uint8)
    b = np.ascontiguousarray(bias, dtype=np.int32).reshape(-1)
    n, c, h, wd = x.shape
    oc, g_ic, fh, fw = w.shape
    oh, ow = checked_out_hw("QuantizedConv2D", h, wd, fh, fw, stride_h, stride_w, dilation_h, dilation_w,
                            padding_h, padding_w, groups=(c, oc, groups))
    if g_ic != c // groups or b.shape[0] != oc:
        raise ValueError(f"quantized_conv2d: weights {w.shape} / bias {b.shape} do not fit input {x.shape}")
    out = np.empty((n, oc, oh, ow), dtype=np.uint8)
    exact = accumulator_fits_i64(input_offset, filter_offset, g_ic * fh * fw)
    win = kernel_window(padding_h, padding_w, stride_h, stride_w, dilation_h, dilation_w)
    _qconv2d_kernel(x, w, b, int(groups), *win, int(input_offset), int(filter_offset), int(output_mul),
                    int(output_shift), int(output_offset), exact, out)
    return out


@register
@dataclass(eq=False)
class QuantizedConv2D(WindowOp):
    """Body layout §B.7 (116 bytes + i32 bias[OC] + u8 weights[OC·C/groups·fh·fw] OIHW):

    | Off | Field                                                                     |
    |-----|---------------------------------------------------------------------------|
    | 0   | MR input (u8 NCHW), 16 MR output                                          |
    | 32  | Shape4 in_shape                                                           |
    | 48  | i32 groups, 52 i32 out_channels                                           |
    | 56  | window block (:mod:`._window`, 40 bytes)                                  |
    | 96  | i32 input_offset, filter_offset, output_mul, output_shift, output_offset |
    | 116 | i32 bias[OC], then u8 weights[…]                                          |
    """

    opcode = 0x0F
    name = "QuantizedConv2D"
    SIZE = 116

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
    input_offset: int = 0
    filter_offset: int = 0
    output_mul: int = 1
    output_shift: int = 0
    output_offset: int = 0
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int32))
    weights: np.ndarray = field(default_factory=lambda: np.zeros(1, np.uint8))

    _QUANT = ("input_offset", "filter_offset", "output_mul", "output_shift", "output_offset")

    @property
    def weights_count(self) -> int:
        return grouped_weights_count(self.out_channels, self.in_shape[1], self.groups, self.filter_h, self.filter_w)

    @classmethod
    def read(cls, r):
        op = cls(input=MemoryRange.read(r, "input"), output=MemoryRange.read(r, "output"),
                 in_shape=read_shape4(r, "in_shape"), groups=r.i32("groups"), out_channels=r.i32("out_channels"),
                 **read_window(r), **{n: r.i32(n) for n in cls._QUANT})
        op.bias = r.array("<i4", op.out_channels, "bias")
        op.weights = r.array("u1", op.weights_count, "weights")
        return op

    def write(self, w):
        self.input.write(w)
        self.output.write(w)
        write_shape4(w, self.in_shape)
        w.i32(self.groups)
        w.i32(self.out_channels)
        write_window(w, self)
        for n in self._QUANT:
            w.i32(getattr(self, n))
        w.array(np.ravel(self.bias), "<i4")
        w.array(np.ravel(self.weights), "u1")

    def output_shape(self, rng):
        return [self.in_shape[0], self.out_channels, *self._out_hw(self.in_shape[2], self.in_shape[3])]

    def run(self, mem):
        n, c, h, wd = self.in_shape
        check_in_shape(self.name, self.in_shape)
        check_groups(self.name, c, self.out_channels, self.groups)
        x = np.array(mem.u8(self.input, shape_size(self.in_shape))).reshape(n, c, h, wd)
        w = np.asarray(self.weights, np.uint8).reshape(self.out_channels, c // self.groups,
                                                       self.filter_h, self.filter_w)
        y = quantized_conv2d(x, w, self.bias, self.groups, *self._conv_window(), self.input_offset,
                             self.filter_offset, self.output_mul, self.output_shift, self.output_offset)
        mem.u8(self.output, y.size)[:] = y.reshape(-1)
