"""MemoryCopy (opcode 0x09): the compiler's reshape.

Runtime spec §B.10: copies ``4 * floor(input.size / 4)`` bytes (the range is viewed as f32
whatever its datatype), so the last 1-3 bytes of a size that is not a multiple of 4 are NOT
copied and the destination keeps its old contents. ``output.size`` is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..format.binio import MemoryRange, Reader, Writer
from .base import Op, register


def copied_bytes(input_size: int) -> int:
    """How many bytes ``memory_copy`` moves for an input range of ``input_size`` bytes."""
    return 4 * (input_size // 4)


@register
@dataclass
class MemoryCopy(Op):
    opcode = 0x09
    name = "MemoryCopy"

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)

    @classmethod
    def read(cls, r: Reader) -> "MemoryCopy":
        return cls(MemoryRange.read(r, "input"), MemoryRange.read(r, "output"))

    def write(self, w: Writer) -> None:
        self.input.write(w)
        self.output.write(w)

    def run(self, mem) -> None:
        n = copied_bytes(self.input.size)
        src = mem.span(self.input, n).copy()
        mem.span(self.output, n)[:] = src
