"""Pad (opcode 0x05): constant padding of a 4-D tensor; negative paddings crop.

Runtime spec §B.13: the element size comes from ``input.datatype`` (uint8: 1 byte, pad value
``storage[0]``; float32: 4 bytes copied as raw 32-bit words, pad value = the 4 storage bytes as a
little-endian u32; anything else throws "Not supported data type"). The scalar's ``type`` field
is ignored. ``out_k = in_k + before_k + after_k``; an output element is the pad value when
``o_k < before_k`` or ``o_k >= out_k - after_k`` for some k, else ``in[o - before]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import KernelError
from ..format.binio import DT_FLOAT32, DT_UINT8, MemoryRange, Reader, Writer, read_shape4, write_shape4
from .base import Op, register


def element_dtype(datatype: int) -> np.dtype:
    """The raw element type ncc's 1/4-byte data-movement kernels use for a datatype (§B.26)."""
    if datatype == DT_FLOAT32:
        return np.dtype("<u4")
    if datatype == DT_UINT8:
        return np.dtype("u1")
    raise KernelError("Not supported data type")


def pad_out_shape(in_shape, paddings) -> list[int]:
    return [int(d) + int(b) + int(a) for d, (b, a) in zip(in_shape, paddings)]


def pad(x, paddings, pad_value) -> np.ndarray:
    """Array-level pad of an N-D array (any dtype); ``paddings`` is [(before, after)] per axis,
    negative values crop; ``pad_value`` is a scalar of ``x``'s dtype."""
    x = np.asarray(x)
    out_shape = pad_out_shape(x.shape, paddings)
    out = np.full([max(0, d) for d in out_shape], pad_value, dtype=x.dtype)
    dst, src = [], []
    for d, o, (b, a) in zip(x.shape, out_shape, paddings):
        lo, hi = max(int(b), 0), min(o - int(a), o)
        if hi <= lo:
            return out
        dst.append(slice(lo, hi))
        src.append(slice(lo - int(b), hi - int(b)))
    out[tuple(dst)] = x[tuple(src)]
    return out


@register
@dataclass
class Pad(Op):
    opcode = 0x05
    name = "Pad"

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    in_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    paddings: list = field(default_factory=lambda: [(0, 0)] * 4)  # (before, after) per dim
    pad_value_type: int = 0  # scalar type (0 f32, 1 u8), ignored at run time
    pad_value: bytes = bytes(4)  # the scalar's 4 storage bytes

    @classmethod
    def read(cls, r: Reader) -> "Pad":
        inp, out = MemoryRange.read(r, "input"), MemoryRange.read(r, "output")
        shape = read_shape4(r, "in_shape")
        paddings = [(r.i32("padding"), r.i32("padding")) for _ in range(4)]
        return cls(inp, out, shape, paddings, r.u32("pad_value type"), r.raw(4, "pad_value"))

    def write(self, w: Writer) -> None:
        self.input.write(w)
        self.output.write(w)
        write_shape4(w, self.in_shape)
        for b, a in self.paddings:
            w.i32(b)
            w.i32(a)
        w.u32(self.pad_value_type)
        w.raw(bytes(self.pad_value)[:4].ljust(4, b"\0"))

    def output_shape(self, rng: MemoryRange) -> list[int] | None:
        return pad_out_shape(self.in_shape, self.paddings)

    def run(self, mem) -> None:
        dt = element_dtype(self.input.datatype)
        n = int(np.prod(self.in_shape))
        x = mem.view(self.input, dt, n).reshape(self.in_shape)
        pv = np.frombuffer(bytes(self.pad_value)[: dt.itemsize], dtype=dt)[0]
        y = pad(x, self.paddings, pv)
        mem.view(self.output, dt, y.size)[:] = y.reshape(-1)
