"""Quantize (opcode 0x06): float32 -> uint8, ``q = clamp(trunc(roundf(x*scale + zp)), 0, 255)``.

Runtime spec §B.9 and §0: an f32 multiply, then an f32 add, then ``roundf`` (half away from
zero), then the x86 f32->i32 conversion (NaN, ±Inf and |t| >= 2^31 give INT32_MIN), then
``std::clamp`` to [0, 255]. So NaN, ±Inf and huge values of either sign all give 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..format.binio import MemoryRange, Reader, Writer
from .base import Op, register

_I32_LIMIT = np.float32(2.0**31)


def roundf(v: np.ndarray) -> np.ndarray:
    """C ``roundf`` on float32 (halves away from zero), exact: ``v - trunc(v)`` is exact in f32."""
    v = np.asarray(v, dtype=np.float32)
    t = np.trunc(v)
    with np.errstate(invalid="ignore"):
        frac = v - t
        up = np.abs(frac) >= np.float32(0.5)
    return np.where(up, t + np.copysign(np.float32(1.0), v), t).astype(np.float32)


def f32_to_i32(v: np.ndarray) -> np.ndarray:
    """x86 ``cvttss2si``: truncate toward zero; NaN, ±Inf and out-of-range give INT32_MIN."""
    v = np.asarray(v, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(v) & (v < _I32_LIMIT) & (v >= -_I32_LIMIT)
        t = np.where(ok, np.trunc(v), np.float32(0)).astype(np.int64)
    return np.where(ok, t, np.iinfo(np.int32).min).astype(np.int32)


def quantize(x, zero_point: int, scale: float) -> np.ndarray:
    """Array-level quantize (any shape): float32 in, uint8 out, exactly as ``ncc infer``."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        t = x * np.float32(scale) + np.float32(zero_point)
    q = f32_to_i32(roundf(t))
    return np.clip(q, 0, 255).astype(np.uint8)


@dataclass
class QuantParamBody(Op):
    """The 40-byte body shared by Quantize and Dequantize (§B.9):

    | Off | Field          |
    |-----|----------------|
    | 0   | MR input       |
    | 16  | MR output      |
    | 32  | i32 zero_point |
    | 36  | f32 scale      |
    """

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    zero_point: int = 0
    scale: float = 1.0

    @classmethod
    def read(cls, r: Reader) -> "QuantParamBody":
        return cls(MemoryRange.read(r, "input"), MemoryRange.read(r, "output"), r.i32("zero_point"),
                   r.f32("scale"))

    def write(self, w: Writer) -> None:
        self.input.write(w)
        self.output.write(w)
        w.i32(self.zero_point)
        w.f32(self.scale)


@register
@dataclass
class Quantize(QuantParamBody):
    opcode = 0x06
    name = "Quantize"

    def run(self, mem) -> None:
        n = self.input.size // 4
        q = quantize(mem.f32(self.input, n), self.zero_point, self.scale)
        mem.u8(self.output, n)[:] = q
