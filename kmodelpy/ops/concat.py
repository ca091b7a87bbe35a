"""Concat (opcode 0x01): a byte copy of n inputs along one axis.

Runtime spec §B.5. ``inner_size`` is in **bytes** (element size × ∏ dims after the axis) and
``outer_size`` = ∏ dims before the axis. For each outer index and each input j in order, the kernel
copies ``inner_size·dims[j]`` bytes from ``input_j.start + o·inner_size·dims[j]`` to a cursor that
starts at ``output.start``. Inputs may live in const or main memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import KernelError
from ..format.binio import MemoryRange
from .base import Op, register


def concat(arrays, axis: int) -> np.ndarray:
    """Array-level Concat: pure data movement, ``np.concatenate`` along ``axis`` (all inputs must
    share dtype and the other dimensions)."""
    return np.concatenate([np.asarray(a) for a in arrays], axis=axis)


def concat_bytes(blocks, dims, inner_size: int, outer_size: int) -> np.ndarray:
    """The runtime's byte copy on flat uint8 buffers: returns the concatenated bytes."""
    row = sum(inner_size * int(d) for d in dims)
    out = np.empty((outer_size, row), dtype=np.uint8)
    col = 0
    for blk, d in zip(blocks, dims):
        size = inner_size * int(d)
        out[:, col : col + size] = np.asarray(blk, dtype=np.uint8)[: outer_size * size].reshape(outer_size, size)
        col += size
    return out.reshape(-1)


@register
@dataclass(eq=False)
class Concat(Op):
    """Body layout §B.5 (28 + 20·n bytes)."""

    opcode = 0x01
    name = "Concat"
    SIZE = 28

    output: MemoryRange = field(default_factory=MemoryRange)
    inner_size: int = 0
    outer_size: int = 0
    # n × MemoryRange: the body's ``inputs`` (renamed: ``inputs()`` is the Op method)
    input_ranges: list = field(default_factory=list)
    dims: list = field(default_factory=list)  # n × i32

    @classmethod
    def read(cls, r):
        output = MemoryRange.read(r, "output")
        inner, outer, n = r.u32("inner_size"), r.u32("outer_size"), r.u32("inputs_count")
        if 20 * n > r.remaining:
            r.skip(20 * n, f"{n} inputs and dims")  # raises FormatError naming the body
        ins = [MemoryRange.read(r, f"input {j}") for j in range(n)]
        return cls(output, inner, outer, ins, r.i32s(n, "dims"))

    def write(self, w):
        self.output.write(w)
        w.u32(self.inner_size)
        w.u32(self.outer_size)
        w.u32(len(self.input_ranges))
        for mr in self.input_ranges:
            mr.write(w)
        w.i32s(self.dims)

    def inputs(self):
        return list(self.input_ranges)

    def joined_shape(self, shapes) -> list[int] | None:
        """The output shape, given the inputs' shapes (None where unknown; the body stores no shape): the
        axis is where each input's dims before it multiply to ``outer_size``, those after it to
        ``inner_size`` bytes, and its extent is its ``dims`` entry; the last such axis when several fit
        (only possible with extents of 1)."""
        known = [([int(d) for d in s], int(d)) for s, d in zip(shapes, self.dims) if s is not None]
        if not known:
            return None
        rank = len(known[0][0])
        fits = [axis for axis in range(rank) if all(
            len(s) == rank and s[axis] == d and int(np.prod(s[:axis], dtype=np.int64)) == self.outer_size
            and int(np.prod(s[axis + 1:], dtype=np.int64)) * self.output.itemsize == self.inner_size
            for s, d in known)]
        if not fits:
            return None
        shape = known[0][0]
        return shape[:fits[-1]] + [sum(int(d) for d in self.dims)] + shape[fits[-1] + 1:]

    def run(self, mem):
        if any(d < 0 for d in self.dims):
            raise KernelError(f"Concat has a negative input extent in dims {self.dims}; the file is damaged")
        outer, inner = self.outer_size, self.inner_size
        blocks = []
        for mr, d in zip(self.input_ranges, self.dims):
            n = outer * inner * d
            blocks.append(np.array(mem.span(mr, n)))
        data = concat_bytes(blocks, self.dims, inner, outer)
        mem.span(self.output, data.size)[:] = data
