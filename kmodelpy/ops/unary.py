"""Unary (opcode 0x0E): an elementwise float32 function over ``floor(input.size / 4)`` values.

Runtime spec §B.20: abs (exact), ceilf, cosf, expf, floorf, logf, neg, rsqrt = ``1.0f / sqrtf``,
sinf, square = ``x * x``. The transcendentals are glibc's (see :mod:`._libm`). An op > 9 is a
kernel error (§B.26).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..format.binio import MemoryRange, Reader, Writer
from . import _libm
from .base import Op, register

UNARY_OPS = ("abs", "ceil", "cos", "exp", "floor", "log", "neg", "rsqrt", "sin", "square")
UNARY_ABS, UNARY_CEIL, UNARY_COS, UNARY_EXP, UNARY_FLOOR, UNARY_LOG, UNARY_NEG, UNARY_RSQRT, UNARY_SIN, \
    UNARY_SQUARE = range(10)


def unary(x, unary_op: int) -> np.ndarray:
    """Array-level unary (any shape, float32 in/out). Raises ValueError for an unknown op."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(all="ignore"):
        if unary_op == UNARY_ABS:
            return np.abs(x)
        if unary_op == UNARY_CEIL:
            return np.ceil(x)
        if unary_op == UNARY_COS:
            return _libm.cosf(x)
        if unary_op == UNARY_EXP:
            return _libm.expf(x)
        if unary_op == UNARY_FLOOR:
            return np.floor(x)
        if unary_op == UNARY_LOG:
            return _libm.logf(x)
        if unary_op == UNARY_NEG:
            return np.negative(x)
        if unary_op == UNARY_RSQRT:
            return np.float32(1.0) / np.sqrt(x)
        if unary_op == UNARY_SIN:
            return _libm.sinf(x)
        if unary_op == UNARY_SQUARE:
            return x * x
    raise ValueError(f"unknown unary op {unary_op}")


@register
@dataclass
class Unary(Op):
    opcode = 0x0E
    name = "Unary"

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    unary_op: int = 0

    @classmethod
    def read(cls, r: Reader) -> "Unary":
        return cls(MemoryRange.read(r, "input"), MemoryRange.read(r, "output"), r.u32("unary_op"))

    def write(self, w: Writer) -> None:
        self.input.write(w)
        self.output.write(w)
        w.u32(self.unary_op)

    def run(self, mem) -> None:
        from ..runtime import KernelFailure

        if not 0 <= self.unary_op < len(UNARY_OPS):
            raise KernelFailure(f"error occurs in running kernel: {self.name}")
        n = self.input.size // 4
        mem.f32(self.output, n)[:] = unary(mem.f32(self.input, n), self.unary_op)
