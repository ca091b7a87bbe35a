"""K210_UPLOAD (10243): a planar u8 CHW map from main memory into KPU RAM in the KPU row layout
(``kpu_upload_core``, kpu.c 632-714, 1355-1362; the layout is :mod:`kmodelpy.kpu.layout`'s, whose
bytes outside the map keep their content)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import FormatError
from ..kpu.layout import kpu_bytes, kpu_upload
from .layer import Layer, kpu_range, main_u8, register, shape3


@register
@dataclass(eq=False)
class K210Upload(Layer):
    code = 10243
    name = "K210_UPLOAD"
    WORDS = ("flags", "input", "kpu_line", "width", "height", "channels")

    flags: int = 0
    input: int = 0
    kpu_line: int = 0
    width: int = 1
    height: int = 1
    channels: int = 1

    def _shape(self) -> list[int]:
        return [1, int(self.channels), int(self.height), int(self.width)]

    def inputs(self):
        return [main_u8(self.input, self.width * self.height * self.channels)]

    def outputs(self):
        return [kpu_range(self.kpu_line, kpu_bytes(self._shape()))]

    def output_shape(self):
        return self._shape()

    def summary(self) -> str:
        return f"{shape3(self.width, self.height, self.channels)} -> KPU RAM line {self.kpu_line}"

    def run(self, mem) -> None:
        x = mem.u8(self.inputs()[0]).reshape(self._shape())
        try:
            kpu_upload(mem.kpu, 64 * self.kpu_line, x)
        except FormatError as e:
            raise FormatError(f"{mem.file}: {mem.node}: {e}") from None
