"""Softmax (opcode 0x0B): row-wise softmax over ``outer_size`` rows of ``inner_size`` floats.

Runtime spec §B.17: ``m`` = first maximal element (``<`` comparisons, as ``std::max_element``);
``e_i = expf((x_i - m) * beta)`` with glibc's ``expf``; ``sum`` is a sequential f32 fold from 0;
each output is ``e_i / sum``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..format.binio import MemoryRange, Reader, Writer
from ._libm import EXPF
from .base import Op, register


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _softmax_kernel(x, outer, inner, beta, out):
    for r in range(outer):
        base = r * inner
        m = x[base]
        for i in range(1, inner):
            if m < x[base + i]:
                m = x[base + i]
        s = np.float32(0.0)
        for i in range(inner):
            e = EXPF((x[base + i] - m) * beta)
            s = s + e
            out[base + i] = e
        for i in range(inner):
            out[base + i] = out[base + i] / s


def softmax(x, inner_size: int, outer_size: int, beta: float) -> np.ndarray:
    """Array-level softmax: ``x`` holds ``outer_size * inner_size`` float32 values (row-major, the
    rows contiguous); returns the same shape."""
    a = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(a).reshape(-1)
    out = np.empty_like(flat)
    if outer_size > 0 and inner_size > 0:
        if flat.size < outer_size * inner_size:
            raise ValueError(f"softmax of {outer_size}x{inner_size} needs that many values, got {flat.size}")
        _softmax_kernel(flat, int(outer_size), int(inner_size), np.float32(beta), out)
    return out.reshape(a.shape)


@register
@dataclass
class Softmax(Op):
    opcode = 0x0B
    name = "Softmax"

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    inner_size: int = 1
    outer_size: int = 1
    beta: float = 1.0

    @classmethod
    def read(cls, r: Reader) -> "Softmax":
        return cls(MemoryRange.read(r, "input"), MemoryRange.read(r, "output"), r.i32("inner_size"),
                   r.i32("outer_size"), r.f32("beta"))

    def write(self, w: Writer) -> None:
        self.input.write(w)
        self.output.write(w)
        w.i32(self.inner_size)
        w.i32(self.outer_size)
        w.f32(self.beta)

    def output_shape(self, rng: MemoryRange) -> list[int] | None:
        return [int(self.outer_size), int(self.inner_size)]

    def run(self, mem) -> None:
        n = max(0, self.inner_size) * max(0, self.outer_size)
        if n == 0:
            return
        y = softmax(mem.f32(self.input, n), self.inner_size, self.outer_size, self.beta)
        mem.f32(self.output, n)[:] = y
