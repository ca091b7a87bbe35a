"""StridedSlice (opcode 0x0D): four nested C loops over begin/end/strides.

Runtime spec §B.19: in each dimension ``d`` starts at ``begin[k]``, continues while
``stride > 0 ? d < end : d > end`` and advances by ``stride`` (so ``end = -1`` with a negative
stride runs down to index 0 inclusive; not Python slicing). The five masks are stored but ignored
at run time. The element size (1 or 4 bytes) comes from ``input.datatype``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError
from ..format.binio import MemoryRange, Reader, Writer, read_shape4, write_shape4
from .base import Op, register
from .pad import element_dtype


def slice_indices(begin: int, end: int, stride: int) -> np.ndarray:
    """The indices one dimension's loop visits (``stride`` must not be 0)."""
    if stride > 0:
        return np.arange(begin, end, stride, dtype=np.int64) if begin < end else np.zeros(0, np.int64)
    return np.arange(begin, end, stride, dtype=np.int64) if begin > end else np.zeros(0, np.int64)


def strided_slice_shape(begin, end, strides) -> list[int]:
    return [int(slice_indices(int(b), int(e), int(s)).size) if int(s) != 0 else 0
            for b, e, s in zip(begin, end, strides)]


def strided_slice(x, begin, end, strides) -> np.ndarray:
    """Array-level strided slice of an N-D array with ncc's loop semantics. Raises ValueError for a
    zero stride (ncc would loop forever) or an index outside the input."""
    x = np.asarray(x)
    idx = []
    for k, (b, e, s) in enumerate(zip(begin, end, strides)):
        if int(s) == 0:
            raise ValueError(f"stride of dimension {k} is 0")
        ii = slice_indices(int(b), int(e), int(s))
        if ii.size and (ii.min() < 0 or ii.max() >= x.shape[k]):
            raise ValueError(f"dimension {k} reads index {int(ii.min()) if ii.min() < 0 else int(ii.max())} "
                             f"outside 0..{x.shape[k] - 1}")
        idx.append(ii)
    return np.ascontiguousarray(x[np.ix_(*idx)])


@register
@dataclass
class StridedSlice(Op):
    opcode = 0x0D
    name = "StridedSlice"

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    in_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    begin: list = field(default_factory=lambda: [0, 0, 0, 0])
    end: list = field(default_factory=lambda: [1, 1, 1, 1])
    strides: list = field(default_factory=lambda: [1, 1, 1, 1])
    begin_mask: int = 0
    end_mask: int = 0
    ellipsis_mask: int = 0
    new_axis_mask: int = 0
    shrink_axis_mask: int = 0

    @classmethod
    def read(cls, r: Reader) -> "StridedSlice":
        mrs = [MemoryRange.read(r, "input"), MemoryRange.read(r, "output")]
        shapes = [read_shape4(r, n) for n in ("in_shape", "begin", "end", "strides")]
        masks = [r.i32(n) for n in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
                                    "shrink_axis_mask")]
        return cls(*mrs, *shapes, *masks)

    def write(self, w: Writer) -> None:
        self.input.write(w)
        self.output.write(w)
        for s in (self.in_shape, self.begin, self.end, self.strides):
            write_shape4(w, s)
        for m in (self.begin_mask, self.end_mask, self.ellipsis_mask, self.new_axis_mask, self.shrink_axis_mask):
            w.i32(m)

    def output_shape(self, rng: MemoryRange) -> list[int] | None:
        return strided_slice_shape(self.begin, self.end, self.strides)

    def run(self, mem) -> None:
        dt = element_dtype(self.input.datatype)
        n = int(np.prod(self.in_shape))
        x = mem.view(self.input, dt, n).reshape(self.in_shape)
        try:
            y = strided_slice(x, self.begin, self.end, self.strides)
        except ValueError as e:
            raise FormatError(f"{mem.file}: {mem.node}: {e}; the file is damaged") from None
        mem.view(self.output, dt, y.size)[:] = y.reshape(-1)
