"""KPUUpload (0x2001): copy an NCHW u8 tensor from main memory into KPU RAM in the KPU row layout
(runtime spec §B.24, layout §C.3)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError
from ..format.binio import MemoryRange, Reader, Writer, read_shape4, shape_size, write_shape4
from ..kpu.layout import kpu_download
from ..kpu.layout import kpu_upload as _upload_layout
from .base import Op, register


def kpu_upload(x_nchw_u8: np.ndarray) -> np.ndarray:
    """Array-level form: the tensor as the KPU will hold it. The layout is only an address
    mapping, so the values are unchanged (NCHW u8 in, NCHW u8 out)."""
    return np.ascontiguousarray(x_nchw_u8, dtype=np.uint8)


@register
@dataclass
class KPUUpload(Op):
    """Body (48 bytes): MR input (main, u8, NCHW), MR output (kpu), Shape4 in_shape."""

    opcode = 0x2001
    name = "KPUUpload"

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    in_shape: list = field(default_factory=lambda: [1, 1, 1, 1])

    @classmethod
    def read(cls, r: Reader) -> "KPUUpload":
        return cls(MemoryRange.read(r, "input"), MemoryRange.read(r, "output"), read_shape4(r, "in_shape"))

    def write(self, w: Writer) -> None:
        self.input.write(w)
        self.output.write(w)
        write_shape4(w, self.in_shape)

    def run(self, mem) -> None:
        shape = [int(v) for v in self.in_shape]
        x = mem.span(self.input, shape_size(shape)).reshape(shape)
        try:
            _upload_layout(mem.kpu, self.output.start, kpu_upload(x))
        except FormatError as e:
            raise FormatError(f"{mem.file}: {mem.node}: {e}") from None

    def output_shape(self, rng: MemoryRange) -> list[int] | None:
        return [int(v) for v in self.in_shape]

    def download(self, mem) -> np.ndarray:
        """The uploaded tensor read back from KPU RAM (for inspection and tests)."""
        return kpu_download(mem.kpu, self.output.start, self.in_shape)
