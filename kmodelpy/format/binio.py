"""Little-endian binary reading and writing, plus the small records shared by all kmodel bodies.

``Reader`` never raises anything but :class:`kmodelpy.errors.FormatError`: reading past the end of
its span names the span (e.g. ``node 3 (Conv2D) body``) and what was being read.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError

FLT_MAX = float(np.finfo(np.float32).max)

# memory_type
MEM_CONST, MEM_MAIN, MEM_KPU = 0, 1, 2
MEMORY_TYPE_NAMES = {MEM_CONST: "const", MEM_MAIN: "main", MEM_KPU: "kpu"}
# datatype
DT_FLOAT32, DT_UINT8 = 0, 1
DATATYPE_NAMES = {DT_FLOAT32: "float32", DT_UINT8: "uint8"}
DATATYPE_NUMPY = {DT_FLOAT32: np.dtype("<f4"), DT_UINT8: np.dtype("u1")}


class Reader:
    """Reads little-endian values from ``buf[start:end]``; ``what`` names the span in errors."""

    __slots__ = ("buf", "pos", "end", "what", "file")

    def __init__(self, buf, start: int = 0, end: int | None = None, what: str = "data", file: str = "model"):
        self.buf = memoryview(buf).cast("B") if not isinstance(buf, memoryview) else buf
        self.pos = start
        self.end = len(self.buf) if end is None else min(end, len(self.buf))
        self.what = what
        self.file = file

    def _need(self, n: int, name: str) -> int:
        if n < 0 or self.pos + n > self.end:
            raise FormatError(
                f"{self.file}: {self.what} is truncated: reading {name} needs {n} bytes at offset "
                f"{self.pos}, but the {self.what} ends at {self.end}; the file is damaged or not a kmodel"
            )
        p = self.pos
        self.pos += n
        return p

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def skip(self, n: int, name: str = "padding") -> None:
        self._need(n, name)

    def u32(self, name: str = "u32") -> int:
        return struct.unpack_from("<I", self.buf, self._need(4, name))[0]

    def i32(self, name: str = "i32") -> int:
        return struct.unpack_from("<i", self.buf, self._need(4, name))[0]

    def f32(self, name: str = "f32") -> float:
        return struct.unpack_from("<f", self.buf, self._need(4, name))[0]

    def u64(self, name: str = "u64") -> int:
        return struct.unpack_from("<Q", self.buf, self._need(8, name))[0]

    def u8(self, name: str = "u8") -> int:
        return self.buf[self._need(1, name)]

    def raw(self, n: int, name: str = "bytes") -> bytes:
        p = self._need(n, name)
        return bytes(self.buf[p : p + n])

    def array(self, dtype, count: int, name: str = "array") -> np.ndarray:
        """``count`` elements of ``dtype`` (little-endian), copied into a fresh array."""
        dt = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
        if count < 0:
            raise FormatError(f"{self.file}: {self.what}: negative element count {count} for {name}")
        p = self._need(count * dt.itemsize, name)
        return np.frombuffer(self.buf, dtype=dt, count=count, offset=p).astype(dt.newbyteorder("="))

    def i32s(self, count: int, name: str = "i32 array") -> list[int]:
        return [int(v) for v in self.array("<i4", count, name)]


class Writer:
    """Appends little-endian values to a bytearray. ``base`` is the absolute file offset of byte 0
    (body alignment rules depend on absolute offsets)."""

    __slots__ = ("buf", "base")

    def __init__(self, base: int = 0):
        self.buf = bytearray()
        self.base = base

    @property
    def offset(self) -> int:
        """Absolute file offset of the next byte."""
        return self.base + len(self.buf)

    def u32(self, v: int) -> None:
        self.buf += struct.pack("<I", v & 0xFFFFFFFF)

    def i32(self, v: int) -> None:
        self.buf += struct.pack("<i", v)

    def f32(self, v: float) -> None:
        self.buf += struct.pack("<f", v)

    def u64(self, v: int) -> None:
        self.buf += struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)

    def u8(self, v: int) -> None:
        self.buf.append(v & 0xFF)

    def raw(self, b) -> None:
        self.buf += bytes(b)

    def array(self, arr, dtype) -> None:
        dt = np.dtype(dtype)
        self.buf += np.ascontiguousarray(arr, dtype=dt.newbyteorder("<") if dt.itemsize > 1 else dt).tobytes()

    def zeros(self, n: int) -> None:
        self.buf += bytes(n)

    def align(self, n: int) -> int:
        """Pad with zeros to a multiple of ``n`` of the absolute offset; returns the pad length."""
        pad = (-self.offset) % n
        self.zeros(pad)
        return pad

    def i32s(self, values) -> None:
        for v in values:
            self.i32(int(v))


@dataclass
class MemoryRange:
    """A tensor's place: memory_type (0 const, 1 main, 2 kpu), datatype (0 f32, 1 u8), start, size."""

    memory_type: int = 0
    datatype: int = 0
    start: int = 0
    size: int = 0

    SIZE = 16

    @classmethod
    def read(cls, r: Reader, name: str = "memory range") -> "MemoryRange":
        return cls(r.u32(name), r.u32(name), r.u32(name), r.u32(name))

    def write(self, w: Writer) -> None:
        for v in (self.memory_type, self.datatype, self.start, self.size):
            w.u32(v)

    @property
    def itemsize(self) -> int:
        return 4 if self.datatype == DT_FLOAT32 else 1

    @property
    def dtype(self) -> np.dtype:
        return DATATYPE_NUMPY.get(self.datatype, np.dtype("u1"))

    def __str__(self) -> str:
        mt = MEMORY_TYPE_NAMES.get(self.memory_type, f"mem{self.memory_type}")
        dt = DATATYPE_NAMES.get(self.datatype, f"dt{self.datatype}")
        return f"{mt}[{self.start}:{self.start + self.size}] {dt}"


def read_shape4(r: Reader, name: str = "shape") -> list[int]:
    return r.i32s(4, name)


def write_shape4(w: Writer, shape) -> None:
    assert len(shape) == 4, shape
    w.i32s(shape)


def read_padding(r: Reader, name: str = "padding") -> tuple[int, int]:
    return (r.i32(name), r.i32(name))


def write_padding(w: Writer, p) -> None:
    w.i32(p[0])
    w.i32(p[1])


@dataclass
class ValueRange:
    """Fused activation ``clamp(v, lo, hi)``; no activation is [-FLT_MAX, FLT_MAX]."""

    lo: float = -FLT_MAX
    hi: float = FLT_MAX

    @classmethod
    def read(cls, r: Reader, name: str = "activation") -> "ValueRange":
        return cls(r.f32(name), r.f32(name))

    def write(self, w: Writer) -> None:
        w.f32(self.lo)
        w.f32(self.hi)

    @property
    def is_none(self) -> bool:
        return np.float32(self.lo) == np.float32(-FLT_MAX) and np.float32(self.hi) == np.float32(FLT_MAX)


@dataclass
class QuantParam:
    """q = x * scale + zero_point (scale is the *inverse* of TFLite's scale)."""

    zero_point: int = 0
    scale: float = 1.0

    @classmethod
    def read(cls, r: Reader, name: str = "quant param") -> "QuantParam":
        return cls(r.i32(name), r.f32(name))

    def write(self, w: Writer) -> None:
        w.i32(self.zero_point)
        w.f32(self.scale)


def shape_size(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
