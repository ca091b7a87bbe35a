"""Transpose (opcode 0x0C): ``out = in.transpose(perm)`` on a 4-D tensor of 1- or 4-byte elements.

Runtime spec §B.18: the element size comes from ``input.datatype``; any datatype other than
float32/uint8 throws "Not supported data type" (§B.26).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..format.binio import MemoryRange, Reader, Writer, read_shape4, write_shape4
from .base import Op, register
from .pad import element_dtype


def transpose(x, perm) -> np.ndarray:
    """Array-level transpose (numpy ``transpose`` semantics), returned contiguous."""
    return np.ascontiguousarray(np.asarray(x).transpose([int(p) for p in perm]))


@register
@dataclass
class Transpose(Op):
    opcode = 0x0C
    name = "Transpose"

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    in_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    perm: list = field(default_factory=lambda: [0, 1, 2, 3])

    @classmethod
    def read(cls, r: Reader) -> "Transpose":
        return cls(MemoryRange.read(r, "input"), MemoryRange.read(r, "output"), read_shape4(r, "in_shape"),
                   read_shape4(r, "perm"))

    def write(self, w: Writer) -> None:
        self.input.write(w)
        self.output.write(w)
        write_shape4(w, self.in_shape)
        write_shape4(w, self.perm)

    def output_shape(self, rng: MemoryRange) -> list[int] | None:
        if sorted(self.perm) != [0, 1, 2, 3]:
            return None
        return [int(self.in_shape[p]) for p in self.perm]

    def run(self, mem) -> None:
        from ..errors import FormatError

        dt = element_dtype(self.input.datatype)
        if sorted(int(p) for p in self.perm) != [0, 1, 2, 3]:
            raise FormatError(f"{mem.file}: {mem.node}: perm {list(self.perm)} is not a permutation of "
                              "0..3; the file is damaged")
        n = int(np.prod(self.in_shape))
        x = mem.view(self.input, dt, n).reshape(self.in_shape)
        y = transpose(x, self.perm)
        mem.view(self.output, dt, y.size)[:] = y.reshape(-1)
