"""ResizeImage (opcode 0x0A): bilinear or nearest-neighbour resize of an NCHW f32 or u8 tensor.

Runtime spec §B.16: ``sh = f32(H) / f32(out_h)`` (align_corners with out_h > 1, bilinear only:
``f32(H-1) / f32(out_h-1)``), likewise ``sw``. Nearest: ``iy = min(int(floorf(f32(oy) * sh)),
H-1)``. Bilinear: ``y0 = int(floorf(fy))``, ``y1 = min(y0+1, H-1)``, weights are products of two
f32 values, ``s = ((v0*a0 + v1*a1) + v2*a2) + v3*a3`` in f32, u8 output truncates. Mode 0 is
bilinear and every other mode value nearest. A datatype other than f32/u8 is a kernel error.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..format.binio import DT_FLOAT32, DT_UINT8, MemoryRange, Reader, Writer, read_shape4, write_shape4
from .base import Op, register

RESIZE_BILINEAR, RESIZE_NEAREST = 0, 1


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _resize_nearest(x, n, c, h, w, out_h, out_w, out):
    sh = np.float32(h) / np.float32(out_h)
    sw = np.float32(w) / np.float32(out_w)
    ix = np.empty(out_w, dtype=np.int64)
    for ox in range(out_w):
        ix[ox] = min(int(np.floor(np.float32(ox) * sw)), w - 1)
    i = 0
    for p in range(n * c):
        for oy in range(out_h):
            row = p * h * w + min(int(np.floor(np.float32(oy) * sh)), h - 1) * w
            for ox in range(out_w):
                out[i] = x[row + ix[ox]]
                i += 1


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _resize_bilinear(x, n, c, h, w, out_h, out_w, align_corners, to_u8, out):
    sh = np.float32(h) / np.float32(out_h)
    sw = np.float32(w) / np.float32(out_w)
    if align_corners and out_h > 1:
        sh = np.float32(h - 1) / np.float32(out_h - 1)
    if align_corners and out_w > 1:
        sw = np.float32(w - 1) / np.float32(out_w - 1)
    one = np.float32(1.0)
    i = 0
    for p in range(n * c):
        base = p * h * w
        for oy in range(out_h):
            fy = np.float32(oy) * sh
            y0 = int(np.floor(fy))
            y1 = min(y0 + 1, h - 1)
            dy = fy - np.float32(y0)
            for ox in range(out_w):
                fx = np.float32(ox) * sw
                x0 = int(np.floor(fx))
                x1 = min(x0 + 1, w - 1)
                dx = fx - np.float32(x0)
                v0 = np.float32(x[base + y0 * w + x0])
                v1 = np.float32(x[base + y1 * w + x0])
                v2 = np.float32(x[base + y0 * w + x1])
                v3 = np.float32(x[base + y1 * w + x1])
                a0 = (one - dy) * (one - dx)
                a1 = dy * (one - dx)
                a2 = (one - dy) * dx
                a3 = dy * dx
                s = v0 * a0
                s = s + v1 * a1
                s = s + v2 * a2
                s = s + v3 * a3
                if to_u8:
                    out[i] = np.int32(s) & 0xFF
                else:
                    out[i] = s
                i += 1


def resize_image(x_nchw, out_h: int, out_w: int, mode: int, align_corners: bool) -> np.ndarray:
    """Array-level resize of an NCHW float32 or uint8 array; returns [N, C, out_h, out_w] of the
    same dtype. ``mode`` 0 is bilinear, anything else nearest neighbour."""
    x = np.asarray(x_nchw)
    if x.dtype not in (np.float32, np.uint8):
        x = x.astype(np.float32)
    x = np.ascontiguousarray(x)
    n, c, h, w = (int(d) for d in x.shape)
    out = np.empty(n * c * max(out_h, 0) * max(out_w, 0), dtype=x.dtype)
    if out.size:
        if h <= 0 or w <= 0:
            raise ValueError("resize of an empty image")
        if mode == RESIZE_BILINEAR:
            _resize_bilinear(x.reshape(-1), n, c, h, w, int(out_h), int(out_w), bool(align_corners),
                             x.dtype == np.uint8, out)
        else:
            _resize_nearest(x.reshape(-1), n, c, h, w, int(out_h), int(out_w), out)
    return out.reshape(n, c, max(out_h, 0), max(out_w, 0))


@register
@dataclass
class ResizeImage(Op):
    opcode = 0x0A
    name = "ResizeImage"

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    in_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    out_h: int = 1
    out_w: int = 1
    mode: int = RESIZE_BILINEAR
    align_corners: bool | int = False  # the raw byte is kept when it is neither 0 nor 1 (any non-zero is true)
    struct_padding: bytes = bytes(3)  # the 3 bytes after the bool (zero when ncc writes them)

    @classmethod
    def read(cls, r: Reader) -> "ResizeImage":
        mrs = MemoryRange.read(r, "input"), MemoryRange.read(r, "output")
        shape = read_shape4(r, "in_shape")
        oh, ow, mode = r.i32("out_h"), r.i32("out_w"), r.u32("mode")
        ac = r.u8("align_corners")
        return cls(*mrs, shape, oh, ow, mode, bool(ac) if ac in (0, 1) else ac, r.raw(3, "align_corners padding"))

    def write(self, w: Writer) -> None:
        self.input.write(w)
        self.output.write(w)
        write_shape4(w, self.in_shape)
        w.i32(self.out_h)
        w.i32(self.out_w)
        w.u32(self.mode)
        w.u8(int(self.align_corners))
        w.raw(bytes(self.struct_padding)[:3].ljust(3, b"\0"))

    def output_shape(self, rng: MemoryRange) -> list[int] | None:
        return [int(self.in_shape[0]), int(self.in_shape[1]), int(self.out_h), int(self.out_w)]

    def run(self, mem) -> None:
        from ..errors import FormatError
        from ..runtime import KernelFailure

        if self.input.datatype not in (DT_FLOAT32, DT_UINT8):
            raise KernelFailure(f"error occurs in running kernel: {self.name}")
        dt = np.float32 if self.input.datatype == DT_FLOAT32 else np.uint8
        x = mem.view(self.input, dt, int(np.prod(self.in_shape))).reshape(self.in_shape)
        try:
            y = resize_image(x, self.out_h, self.out_w, self.mode, self.align_corners)
        except ValueError as e:
            raise FormatError(f"{mem.file}: {mem.node}: {e}; the file is damaged") from None
        mem.view(self.output, dt, y.size)[:] = y.reshape(-1)
