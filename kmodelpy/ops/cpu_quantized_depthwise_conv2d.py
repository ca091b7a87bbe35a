"""CPUQuantizedDepthwiseConv2D (opcode 0x1005): u8 NHWC depthwise convolution, weights [C, fh, fw].

Runtime spec §B.23. Loops: batch, oy, ox, c; taps ky, kx. The i32 accumulator starts at
``bias[c]`` and adds ``(x − input_offset)·(w − filter_offset)`` (offsets **subtracted**, wrapping);
output ``clamp(MCS(acc, output_mul, output_shift) + output_offset, 0, 255)``. The body stores the u8
weights before the i32 bias.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..format.binio import MemoryRange, read_shape4, shape_size, write_shape4
from ._arith import clamp_u8, mul_and_carry_shift, tap_range, wrap_i32
from ._window import WindowOp, check_in_shape, checked_out_hw, kernel_window, read_window, write_window
from .base import register


@numba.njit(cache=True, nogil=True)
def _cpu_qdwconv2d_kernel(x, w, bias, pad_h, pad_w, sh, sw, dh, dw, in_off, f_off, o_mul, o_shift, o_off, out):
    n_batch, in_h, in_w, n_c = x.shape
    fh, fw = w.shape[1], w.shape[2]
    out_h, out_w = out.shape[1], out.shape[2]
    for n in range(n_batch):
        for oy in range(out_h):
            org_y, ky0, ky1 = tap_range(oy, sh, pad_h, dh, in_h, fh)
            for ox in range(out_w):
                org_x, kx0, kx1 = tap_range(ox, sw, pad_w, dw, in_w, fw)
                for c in range(n_c):
                    acc = np.int64(bias[c]) & 0xFFFFFFFF
                    for ky in range(ky0, ky1):
                        for kx in range(kx0, kx1):
                            xv = wrap_i32(np.int64(x[n, org_y + dh * ky, org_x + dw * kx, c]) - in_off)
                            wv = wrap_i32(np.int64(w[c, ky, kx]) - f_off)
                            acc = (acc + xv * wv) & 0xFFFFFFFF
                    v = mul_and_carry_shift(wrap_i32(acc), o_mul, o_shift)
                    out[n, oy, ox, c] = clamp_u8(wrap_i32(v + o_off))


def cpu_quantized_depthwise_conv2d(x_nhwc, weights, bias, padding_h, padding_w, stride_h, stride_w, dilation_h,
                                   dilation_w, input_offset, filter_offset, output_mul, output_shift,
                                   output_offset) -> np.ndarray:
    """Array-level CPUQuantizedDepthwiseConv2D: ``x_nhwc`` u8 [N, H, W, C], ``weights`` u8 [C, fh, fw],
    ``bias`` i32 [C]. Returns u8 [N, OH, OW, C]."""
    x = np.ascontiguousarray(x_nhwc, dtype=np.uint8)
    w = np.ascontiguousarray(weights, dtype=np.uint8)
    b = np.ascontiguousarray(bias, dtype=np.int32).reshape(-1)
    c, fh, fw = w.shape
    oh, ow = checked_out_hw("CPUQuantizedDepthwiseConv2D", x.shape[1], x.shape[2], fh, fw, stride_h, stride_w,
                            dilation_h, dilation_w, padding_h, padding_w)
    if c != x.shape[3] or b.shape[0] != c:
        raise ValueError(f"cpu_quantized_depthwise_conv2d: weights {w.shape} / bias {b.shape} do not fit {x.shape}")
    out = np.empty((x.shape[0], oh, ow, c), dtype=np.uint8)
    _cpu_qdwconv2d_kernel(x, w, b, *kernel_window(padding_h, padding_w, stride_h, stride_w, dilation_h, dilation_w),
                          int(input_offset), int(filter_offset), int(output_mul), int(output_shift),
                          int(output_offset), out)
    return out


@register
@dataclass(eq=False)
class CPUQuantizedDepthwiseConv2D(WindowOp):
    """Body layout §B.23 (108 bytes + u8 weights[C·fh·fw] + i32 bias[C]):

    | Off | Field                                                                     |
    |-----|---------------------------------------------------------------------------|
    | 0   | MR input (u8 NHWC), 16 MR output                                          |
    | 32  | Shape4 in_shape [N, H, W, C]                                              |
    | 48  | window block (:mod:`._window`, 40 bytes)                                  |
    | 88  | i32 input_offset, filter_offset, output_mul, output_shift, output_offset |
    | 108 | u8 weights[…], then i32 bias[C]                                           |
    """

    opcode = 0x1005
    name = "CPUQuantizedDepthwiseConv2D"
    SIZE = 108

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    in_shape: list = field(default_factory=lambda: [1, 1, 1, 1])  # N, H, W, C
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
    weights: np.ndarray = field(default_factory=lambda: np.zeros(1, np.uint8))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int32))

    _QUANT = ("input_offset", "filter_offset", "output_mul", "output_shift", "output_offset")

    @classmethod
    def read(cls, r):
        op = cls(input=MemoryRange.read(r, "input"), output=MemoryRange.read(r, "output"),
                 in_shape=read_shape4(r, "in_shape"), **read_window(r), **{n: r.i32(n) for n in cls._QUANT})
        op.weights = r.array("u1", op.in_shape[3] * op.filter_h * op.filter_w, "weights")
        op.bias = r.array("<i4", op.in_shape[3], "bias")
        return op

    def write(self, w):
        self.input.write(w)
        self.output.write(w)
        write_shape4(w, self.in_shape)
        write_window(w, self)
        for n in self._QUANT:
            w.i32(getattr(self, n))
        w.array(np.ravel(self.weights), "u1")
        w.array(np.ravel(self.bias), "<i4")

    def output_shape(self, rng):
        return [self.in_shape[0], *self._out_hw(self.in_shape[1], self.in_shape[2], nonneg=True), self.in_shape[3]]

    def run(self, mem):
        check_in_shape(self.name, self.in_shape)
        x = np.array(mem.u8(self.input, shape_size(self.in_shape))).reshape(self.in_shape)
        w = np.asarray(self.weights, np.uint8).reshape(self.in_shape[3], self.filter_h, self.filter_w)
        y = cpu_quantized_depthwise_conv2d(x, w, self.bias, *self._conv_window(), self.input_offset,
                                           self.filter_offset, self.output_mul, self.output_shift, self.output_offset)
        mem.u8(self.output, y.size)[:] = y.reshape(-1)
