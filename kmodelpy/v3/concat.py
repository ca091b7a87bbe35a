"""CONCAT (16) and QUANTIZED_CONCAT (17): copy each input range, in order, to consecutive bytes of
the output (kpu.c 1118-1130, ``memcpy`` of ``size`` bytes each). Body: u32 flags, out,
input_count, then ``{u32 start, u32 size}`` per input (main-memory byte ranges)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .layer import Layer, main_u8, register


@register
@dataclass(eq=False)
class Concat(Layer):
    code = 16
    name = "CONCAT"
    WORDS = ("flags", "output", "input_count")

    flags: int = 0
    output: int = 0
    input_count: int = 0
    inputs_mem: list[tuple[int, int]] = field(default_factory=list)  # (start, size) in bytes

    def read_rest(self, r) -> None:
        if 8 * self.input_count > r.remaining:
            r.skip(8 * self.input_count, f"{self.input_count} input ranges")
        self.inputs_mem = [(r.u32("input start"), r.u32("input size")) for _ in range(self.input_count)]

    def write_rest(self, w) -> None:
        for start, size in self.inputs_mem:
            w.u32(start)
            w.u32(size)

    def inputs(self):
        return [main_u8(start, size) for start, size in self.inputs_mem]

    def outputs(self):
        return [main_u8(self.output, sum(size for _, size in self.inputs_mem))]

    def summary(self) -> str:
        return f"{len(self.inputs_mem)} inputs, " + " + ".join(str(size) for _, size in self.inputs_mem) + " bytes"

    def run(self, mem) -> None:
        dest = self.output
        for start, size in self.inputs_mem:
            mem.main[dest : dest + size] = mem.main[start : start + size]
            dest += size


@register
@dataclass(eq=False)
class QuantizedConcat(Concat):
    code = 17
    name = "QUANTIZED_CONCAT"
