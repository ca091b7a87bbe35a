"""ReduceWindow2D (opcode 0x08): pooling over an NCHW float32 tensor.

Runtime spec §B.15 with §B.2 (``get_out``, valid tap range): the output is [N, C, OH, OW]; each
output starts at ``init_value`` and folds the *valid* taps in (ky, kx) row-major order (padding
taps are skipped and not counted): add for mean and sum, ``fmin``/``fmax`` with the accumulator
first. Mean divides by ``f32(count)``. The result is clamped with the fused activation. An op > 3
is a kernel error (§B.26).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..format.binio import MemoryRange, Reader, ValueRange, Writer, read_shape4, write_shape4
from ._arith import tap_range
from ._window import WindowOp, out_hw, read_window, write_window
from .base import register

REDUCE_MEAN, REDUCE_MIN, REDUCE_MAX, REDUCE_SUM = range(4)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def window_fold(x, base, row_stride, col_stride, oy_org, ky0, ky1, dil_h, ox_org, kx0, kx1, dil_w,
                op, init, lo, hi):
    """Fold one window of ``x`` (flat) starting at ``base``; returns the activated result."""
    v = init
    k = 0
    for ky in range(ky0, ky1):
        row = base + (oy_org + dil_h * ky) * row_stride
        for kx in range(kx0, kx1):
            t = x[row + (ox_org + dil_w * kx) * col_stride]
            if op == 1:
                v = t if t < v else v
            elif op == 2:
                v = t if v < t else v
            else:
                v = v + t
            k += 1
    if op == 0:
        v = v / np.float32(k)
    if v < lo:
        return lo
    if hi < v:
        return hi
    return v


@numba.njit(cache=True, nogil=True)
def _reduce_window2d_nchw(x, n, c, h, w, oh, ow, fh, fw, sh, sw, dh, dw, ph, pw, op, init, lo, hi, out):
    i = 0
    for b in range(n):
        for ch in range(c):
            base = (b * c + ch) * h * w
            for oy in range(oh):
                oy_org, ky0, ky1 = tap_range(oy, sh, ph, dh, h, fh)
                for ox in range(ow):
                    ox_org, kx0, kx1 = tap_range(ox, sw, pw, dw, w, fw)
                    out[i] = window_fold(x, base, w, 1, oy_org, ky0, ky1, dh, ox_org, kx0, kx1, dw,
                                         op, init, lo, hi)
                    i += 1


def reduce_window2d(x_nchw, reduce_op: int, filter_h: int, filter_w: int, stride_h: int, stride_w: int,
                    dilation_h: int, dilation_w: int, padding_h, padding_w, init_value: float,
                    act_lo: float, act_hi: float) -> np.ndarray:
    """Array-level NCHW pooling; returns [N, C, OH, OW] float32."""
    x = np.ascontiguousarray(np.asarray(x_nchw, dtype=np.float32))
    n, c, h, w = (int(d) for d in x.shape)
    if not 0 <= reduce_op <= 3:
        raise ValueError(f"unknown reduce op {reduce_op}")
    oh, ow = out_hw(h, w, filter_h, filter_w, stride_h, stride_w, dilation_h, dilation_w, padding_h, padding_w,
                    nonneg=True)
    out = np.empty(n * c * oh * ow, dtype=np.float32)
    if out.size:
        _reduce_window2d_nchw(x.reshape(-1), n, c, h, w, oh, ow, filter_h, filter_w, stride_h, stride_w,
                              dilation_h, dilation_w, int(padding_h[0]), int(padding_w[0]), int(reduce_op),
                              np.float32(init_value), np.float32(act_lo), np.float32(act_hi), out)
    return out.reshape(n, c, oh, ow)


@dataclass
class _WindowBody(WindowOp):
    """The 104-byte body shared by ReduceWindow2D and CPUReduceWindow2D (§B.15):

    | Off | Field                                    |
    |-----|------------------------------------------|
    | 0   | MR input (f32), 16 MR output             |
    | 32  | u32 reduce_op                            |
    | 36  | Shape4 in_shape (NCHW, or NHWC for CPU)  |
    | 52  | window block (:mod:`._window`, 40 bytes) |
    | 92  | f32 init_value                           |
    | 96  | act                                      |
    """

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    reduce_op: int = 0
    in_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    padding_h: tuple = (0, 0)
    padding_w: tuple = (0, 0)
    filter_h: int = 1
    filter_w: int = 1
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    init_value: float = 0.0
    act: ValueRange = field(default_factory=ValueRange)

    @classmethod
    def read(cls, r: Reader):
        return cls(input=MemoryRange.read(r, "input"), output=MemoryRange.read(r, "output"),
                   reduce_op=r.u32("reduce_op"), in_shape=read_shape4(r, "in_shape"), **read_window(r),
                   init_value=r.f32("init_value"), act=ValueRange.read(r, "act"))

    def write(self, w: Writer) -> None:
        self.input.write(w)
        self.output.write(w)
        w.u32(self.reduce_op)
        write_shape4(w, self.in_shape)
        write_window(w, self)
        w.f32(self.init_value)
        self.act.write(w)

    def _check_geometry(self, mem) -> None:
        from ..errors import FormatError

        if min(self.stride_h, self.stride_w, self.dilation_h, self.dilation_w) <= 0:
            raise FormatError(f"{mem.file}: {mem.node}: stride/dilation must be positive; the file is damaged")


@register
@dataclass
class ReduceWindow2D(_WindowBody):
    opcode = 0x08
    name = "ReduceWindow2D"

    def output_shape(self, rng: MemoryRange) -> list[int] | None:
        n, c, h, w = self.in_shape
        oh, ow = self._out_hw(h, w)
        return [n, c, oh, ow]

    def run(self, mem) -> None:
        from ..runtime import KernelFailure

        if not 0 <= self.reduce_op <= 3:
            raise KernelFailure(f"error occurs in running kernel: {self.name}")
        self._check_geometry(mem)
        n, c, h, w = (int(d) for d in self.in_shape)
        oh, ow = out_hw(h, w, self.filter_h, self.filter_w, self.stride_h, self.stride_w, self.dilation_h,
                        self.dilation_w, self.padding_h, self.padding_w, nonneg=True)
        x = mem.f32(self.input, n * c * h * w)
        out = mem.f32(self.output, n * c * oh * ow)  # written in order, as ncc's loop
        if out.size:
            _reduce_window2d_nchw(x, n, c, h, w, oh, ow, self.filter_h, self.filter_w, self.stride_h, self.stride_w,
                                  self.dilation_h, self.dilation_w, int(self.padding_h[0]), int(self.padding_w[0]),
                                  int(self.reduce_op), np.float32(self.init_value), np.float32(self.act.lo),
                                  np.float32(self.act.hi), out)
