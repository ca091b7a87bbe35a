"""REQUANTIZE (13): ``out[i] = table[in[i]]``, u8 -> u8 through a 256-byte table (kpu.c 1052-1077)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from .layer import CountLayer, register


@numba.njit(cache=True, error_model="numpy")
def requantize(src, dest, table):
    for i in range(dest.size):
        dest[i] = table[src[i]]


@register
@dataclass(eq=False)
class Requantize(CountLayer):
    code = 13
    name = "REQUANTIZE"

    table: np.ndarray = field(default_factory=lambda: np.arange(256, dtype=np.uint8))

    def read_rest(self, r) -> None:
        self.table = r.array(np.uint8, 256, "table")

    def write_rest(self, w) -> None:
        w.array(self.table, np.uint8)

    def summary(self) -> str:
        return f"{self.count} uint8 through a 256-entry table"

    def run(self, mem) -> None:
        requantize(mem.u8(self.inputs()[0]), mem.u8(self.outputs()[0]), np.ascontiguousarray(self.table, np.uint8))
