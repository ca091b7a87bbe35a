"""TableLookup1D (opcode 0x12): ``out[i] = table[in[i]]`` over ``input.size`` uint8 elements.

Runtime spec §B.21 and §B.26: an input datatype other than uint8 is a kernel error.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..format.binio import DT_UINT8, MemoryRange, Reader, Writer
from .base import Op, register


def table_lookup1d(x, table) -> np.ndarray:
    """Array-level lookup: uint8 ``x`` (any shape) through a 256-entry uint8 ``table``."""
    t = np.asarray(table, dtype=np.uint8)
    if t.size < 256:
        t = np.concatenate([t, np.zeros(256 - t.size, np.uint8)])
    return t[np.asarray(x, dtype=np.uint8)]


@register
@dataclass
class TableLookup1D(Op):
    opcode = 0x12
    name = "TableLookup1D"

    input: MemoryRange = field(default_factory=MemoryRange)
    table: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)

    @classmethod
    def read(cls, r: Reader) -> "TableLookup1D":
        return cls(MemoryRange.read(r, "input"), MemoryRange.read(r, "table"), MemoryRange.read(r, "output"))

    def write(self, w: Writer) -> None:
        self.input.write(w)
        self.table.write(w)
        self.output.write(w)

    def inputs(self) -> list[MemoryRange]:
        return [self.input, self.table]

    def run(self, mem) -> None:
        from ..runtime import KernelFailure

        if self.input.datatype != DT_UINT8:
            raise KernelFailure(f"error occurs in running kernel: {self.name}")
        n = self.input.size
        x = mem.u8(self.input, n)
        if n == 0:
            return
        table = mem.u8(self.table, int(x.max()) + 1)
        mem.u8(self.output, n)[:] = table[x]
