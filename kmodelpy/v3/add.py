"""ADD (1) and QUANTIZED_ADD (2): element-wise sums (kpu.c 745-897).

ADD: ``out[i] = a[i] + b[i]`` in float32. QUANTIZED_ADD on u8 codes, int64 arithmetic, ``count``
rounded up to a multiple of 8 (the SDK's 8-way unrolled loop also reads and writes the up to 7
elements after ``count``; here as far as main memory goes):

* equal shifts: ``v = ((a + off_a)*mul_a + (b + off_b)*mul_b) >> sh_a``
* else: ``v = ((a + off_a)*mul_a >> sh_a) + ((b + off_b)*mul_b >> sh_b)``
* ``v = carry_shift(v*mul_o, sh_o) + off_o``, clamped to 0..255.

``carry_shift(v, s)`` (kpu_carry_shift, kpu.c 613-630), for ``s > 0`` (``s`` a u32):
``v >>= s - 1; v = (v & 1) ? (v >> 1) + (v < 0 ? -1 : 1) : v >> 1``. int64 products wrap and shift
counts use their low 6 bits, as the K210's ``mul``/``sra`` do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numba
import numpy as np

from .layer import Layer, main_items, register


@numba.njit(cache=True, error_model="numpy")
def _add_f32(a, b, out):
    for i in range(out.size):
        out[i] = a[i] + b[i]


@numba.njit(cache=True, error_model="numpy")
def carry_shift(v, shift):
    """kpu_carry_shift on an int64 ``v`` with a u32 ``shift``."""
    if shift > 0:
        v = v >> ((shift - 1) & 63)
        if v & 1:
            if v < 0:
                v = (v >> 1) - 1
            else:
                v = (v >> 1) + 1
        else:
            v = v >> 1
    return v


@numba.njit(cache=True, error_model="numpy")
def _quantized_add(a, b, out, n, off_a, mul_a, sh_a, off_b, mul_b, sh_b, off_o, mul_o, sh_o):
    """The SDK's loop: 8 elements of a and b read, then 8 results written (matters only when the
    output overlaps an input)."""
    same = sh_a == sh_b
    va = np.empty(8, np.int64)
    vb = np.empty(8, np.int64)
    for i0 in range(0, n, 8):
        m = min(8, n - i0)
        for j in range(m):
            va[j] = a[i0 + j]
            vb[j] = b[i0 + j]
        for j in range(m):
            x = (va[j] + off_a) * mul_a
            y = (vb[j] + off_b) * mul_b
            if same:
                v = (x + y) >> (sh_a & 63)
            else:
                v = (x >> (sh_a & 63)) + (y >> (sh_b & 63))
            v = carry_shift(v * mul_o, sh_o & 0xFFFFFFFF) + off_o
            out[i0 + j] = min(255, max(0, v))


@dataclass(eq=False)
class ElementwiseSum(Layer):
    """The part ADD and QUANTIZED_ADD share: body ``flags, input_a, input_b, output, count``, ``count``
    elements of ``ITEM`` bytes (1: u8, 4: float32) each."""

    WORDS = ("flags", "input_a", "input_b", "output", "count")
    ITEM: ClassVar[int] = 4

    flags: int = 0
    input_a: int = 0
    input_b: int = 0
    output: int = 0
    count: int = 0

    def inputs(self):
        return [main_items(self.input_a, self.count, self.ITEM), main_items(self.input_b, self.count, self.ITEM)]

    def outputs(self):
        return [main_items(self.output, self.count, self.ITEM)]

    def output_shape(self):
        return [int(self.count)]

    def summary(self) -> str:
        return f"{self.count} {'uint8' if self.ITEM == 1 else 'float32'}"


@register
@dataclass(eq=False)
class Add(ElementwiseSum):
    code = 1
    name = "ADD"

    def run(self, mem) -> None:
        ra, rb = self.inputs()
        _add_f32(mem.f32(ra), mem.f32(rb), mem.f32(self.outputs()[0]))


@register
@dataclass(eq=False)
class QuantizedAdd(ElementwiseSum):
    code = 2
    name = "QUANTIZED_ADD"
    WORDS = ElementwiseSum.WORDS + ("in_a_offset", "in_a_mul", "in_a_shift", "in_b_offset", "in_b_mul",
                                    "in_b_shift", "out_offset", "out_mul", "out_shift")
    SIGNED = frozenset(WORDS[5:])
    ITEM = 1

    in_a_offset: int = 0
    in_a_mul: int = 1
    in_a_shift: int = 0
    in_b_offset: int = 0
    in_b_mul: int = 1
    in_b_shift: int = 0
    out_offset: int = 0
    out_mul: int = 1
    out_shift: int = 0

    def run(self, mem) -> None:
        size = len(mem.main)
        n = (int(self.count) + 7) & 0xFFFFFFF8  # ALIGN_UP(count, 8) in u32: the unrolled loop's elements
        # (as far as main memory goes)
        n = max(0, min(n, size - self.input_a, size - self.input_b, size - self.output))
        main = mem.main
        _quantized_add(main[self.input_a : self.input_a + n], main[self.input_b : self.input_b + n],
                       main[self.output : self.output + n], n,
                       self.in_a_offset, self.in_a_mul, self.in_a_shift, self.in_b_offset, self.in_b_mul,
                       self.in_b_shift, self.out_offset, self.out_mul, self.out_shift)
