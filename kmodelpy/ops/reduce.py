"""Reduce (opcode 0x07): mean/min/max/sum of a 4-D float32 tensor into a keep-dims shape.

Runtime spec §B.14: every output starts at ``init_value``; the input is visited in row-major
order and folded into ``acc[reduced index]`` (add for mean and sum, ``fmin(acc, x) =
x < acc ? x : acc``, ``fmax(acc, x) = acc < x ? x : acc``), strictly sequentially in f32. Mean
then multiplies by ``f32(out_count) / f32(in_count)`` (element counts of the two ranges). An op
> 3 is a kernel error (§B.26).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..format.binio import MemoryRange, Reader, Writer, read_shape4, write_shape4
from .base import Op, register

REDUCE_MEAN, REDUCE_MIN, REDUCE_MAX, REDUCE_SUM = range(4)
REDUCE_OPS = ("mean", "min", "max", "sum")


@numba.njit(cache=True, nogil=True)
def _reduce_kernel(x, in_shape, out_shape, op, init, out):
    """Sequential fold of the row-major input into ``out`` (flat, pre-sized)."""
    for k in range(out.size):
        out[k] = init
    s0, s1, s2, s3 = in_shape[0], in_shape[1], in_shape[2], in_shape[3]
    o1, o2, o3 = out_shape[1], out_shape[2], out_shape[3]
    i = 0
    for a in range(s0):
        ra = a if a < out_shape[0] else 0
        for b in range(s1):
            rb = b if b < o1 else 0
            for c in range(s2):
                rc = c if c < o2 else 0
                base = ((ra * o1 + rb) * o2 + rc) * o3
                for d in range(s3):
                    rd = d if d < o3 else 0
                    v = x[i]
                    i += 1
                    j = base + rd
                    acc = out[j]
                    if op == 1:
                        out[j] = v if v < acc else acc
                    elif op == 2:
                        out[j] = v if acc < v else acc
                    else:
                        out[j] = acc + v


def reduce(x, reduce_op: int, in_shape, out_shape, init_value: float,
           in_count: int | None = None, out_count: int | None = None) -> np.ndarray:
    """Array-level reduce: ``x`` holds ``prod(in_shape)`` float32 values (row-major); returns an
    ``out_shape`` float32 array. ``in_count``/``out_count`` (the ranges' element counts, used by
    mean) default to the shape sizes."""
    in_shape = np.asarray([int(d) for d in in_shape], dtype=np.int64)
    out_shape_a = np.asarray([int(d) for d in out_shape], dtype=np.int64)
    if not 0 <= reduce_op <= 3:
        raise ValueError(f"unknown reduce op {reduce_op}")
    flat = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1))
    n_out = int(np.prod(out_shape_a))
    out = np.empty(max(n_out, 0), dtype=np.float32)
    if n_out > 0:
        _reduce_kernel(flat, in_shape, out_shape_a, int(reduce_op), np.float32(init_value), out)
    if reduce_op == REDUCE_MEAN:
        ic = int(np.prod(in_shape)) if in_count is None else in_count
        oc = n_out if out_count is None else out_count
        with np.errstate(all="ignore"):
            out *= np.float32(oc) / np.float32(ic)
    return out.reshape([int(d) for d in out_shape])


@register
@dataclass
class Reduce(Op):
    opcode = 0x07
    name = "Reduce"

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    reduce_op: int = 0
    in_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    out_shape: list = field(default_factory=lambda: [1, 1, 1, 1])
    init_value: float = 0.0

    @classmethod
    def read(cls, r: Reader) -> "Reduce":
        return cls(MemoryRange.read(r, "input"), MemoryRange.read(r, "output"), r.u32("reduce_op"),
                   read_shape4(r, "in_shape"), read_shape4(r, "out_shape"), r.f32("init_value"))

    def write(self, w: Writer) -> None:
        self.input.write(w)
        self.output.write(w)
        w.u32(self.reduce_op)
        write_shape4(w, self.in_shape)
        write_shape4(w, self.out_shape)
        w.f32(self.init_value)

    def output_shape(self, rng: MemoryRange) -> list[int] | None:
        return [int(d) for d in self.out_shape]

    def run(self, mem) -> None:
        from ..runtime import KernelFailure

        if not 0 <= self.reduce_op <= 3:
            raise KernelFailure(f"error occurs in running kernel: {self.name}")
        n_in = int(np.prod(self.in_shape))
        x = mem.f32(self.input, n_in)
        # mean folds like sum, then ncc scales the output *range* (floor(output.size / 4) values)
        fold_op = REDUCE_SUM if self.reduce_op == REDUCE_MEAN else self.reduce_op
        y = reduce(x, fold_op, self.in_shape, self.out_shape, self.init_value)
        mem.f32(self.output, y.size)[:] = y.reshape(-1)
        if self.reduce_op == REDUCE_MEAN:
            out = mem.f32(self.output)
            with np.errstate(all="ignore"):
                out *= np.float32(self.output.size // 4) / np.float32(self.input.size // 4)
