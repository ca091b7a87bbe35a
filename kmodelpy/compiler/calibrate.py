"""Calibration: dataset → activation ranges (compiler spec §7.1-7.4; ncc compile.cpp:182-354,
evaluator.cpp:84-121, quantizer.cpp).

* The dataset is read with :mod:`kmodelpy.images` (the ncc loading rules of §7.1), batch by batch
  (batch = N of a 4-D input, else 1; the file list is truncated to a multiple of it).
* Each batch runs through the HLIR float evaluator in DFS order; after every node, if its first output
  carries ``need_quantize`` its value is recorded — except a graph input's when the input range is
  fixed by ``--input-mean/--input-std``.
* ``no_clip``: per tensor ``get_range`` of every batch, merged by union.  ``l2``: a second run fills
  2048-bin histograms over the fixed-up ranges and the l2 search picks the range
  (:mod:`kmodelpy.compiler.l2_calibration`).
* Then a fixed input range (mean/std given) and the broadcast through data-movement ops (§7.4).
"""
from __future__ import annotations

import sys
import time

import numba
import numpy as np

from ..errors import InputError
from ..ir.graph import Graph
from .kpu_float import release_prepared
from .quant import Range, fixup_range

BROADCAST_OPS = frozenset({"input", "concat", "reshape", "transpose", "pad", "strided_slice", "resize_image",
                           "reduce_window2d"})


FLT_MAX = np.float32(np.finfo(np.float32).max)
FLT_MIN = np.float32(np.finfo(np.float32).tiny)


@numba.njit(cache=True, nogil=True)
def _fold_range(v, mn, mx):
    """ncc get_range's fold (quantizer.h:61-78): skip NaN/±inf; ``min = v < min ? v : min``,
    ``max = max < v ? v : max`` (std::min/max keep the first of equal values)."""
    for x in v:
        if np.isfinite(x):
            if x < mn:
                mn = x
            if mx < x:
                mx = x
    return mn, mx


@numba.njit(cache=True, nogil=True)
def _f32_of_key(k):
    b = np.empty(1, np.int32)
    b[0] = k ^ np.int32(0x7FFFFFFF) if k < 0 else k
    return b.view(np.float32)[0]


@numba.njit(cache=True, nogil=True)
def _fold_range_int(v, mn, mx):
    """``_fold_range`` on a contiguous 1-D float32 array in one vectorisable pass: the float bits are
    mapped to order-preserving int32 keys (integer min/max reductions vectorise, float ones cannot
    without fast-math), NaN/±inf are only counted. With any of them present it falls back to the
    element-by-element fold; a zero minimum or maximum is the first zero of ``v`` (the fold keeps the
    first of equal values, hence its sign)."""
    if v.size == 0:
        return mn, mx
    bits = v.view(np.int32)
    exp_mask = np.int32(0x7F800000)
    low31 = np.int32(0x7FFFFFFF)
    kmin = low31
    kmax = np.int32(-0x7FFFFFFF - 1)
    top_exp = np.int32(0)
    for i in range(bits.size):  # int32 throughout (no int64 promotion), so LLVM vectorises it
        b = bits[i]
        top_exp = max(top_exp, b & exp_mask)
        k = b ^ ((b >> np.int32(31)) & low31)
        kmin = min(kmin, k)
        kmax = max(kmax, k)
    if top_exp == exp_mask:  # a NaN or an infinity
        return _fold_range(v, mn, mx)
    lo = _f32_of_key(kmin)
    hi = _f32_of_key(kmax)
    if lo == 0 or hi == 0:  # an extreme zero is the first zero of v (the fold keeps the first of equals)
        for i in range(bits.size):
            if (bits[i] & 0x7FFFFFFF) == 0:
                if lo == 0:
                    lo = v[i]
                if hi == 0:
                    hi = v[i]
                break
    if lo < mn:
        mn = lo
    if mx < hi:
        mx = hi
    return mn, mx


def fold_range(v: np.ndarray, mn, mx):
    """``_fold_range(v, mn, mx)`` (same result, bit for bit) for a flat float32 array."""
    v = np.ascontiguousarray(v, np.float32)
    lo, hi = _fold_range_int(v, np.float32(mn), np.float32(mx))
    return np.float32(lo), np.float32(hi)


def tensor_range(v) -> Range:
    """``get_range`` of one tensor (same result as kmodelpy.compiler.quant.get_range, one pass)."""
    mn, mx = fold_range(np.ravel(np.asarray(v, np.float32), order="K"), FLT_MAX, FLT_MIN)
    return Range(mn, mx)


class ProgressBar:
    """ncc's ProgressBar.hpp: width 50, ``  [===>   ] pct% secs s`` redrawn with a carriage return
    (progress in float32, elapsed whole milliseconds printed like C++ ``<< double``)."""

    def __init__(self, total: int, out=None, width: int = 50):
        self.total, self.ticks, self.width = total, 0, width
        self.out = out if out is not None else sys.stdout
        self.start = time.monotonic()

    def display(self) -> None:
        progress = np.float32(self.ticks) / np.float32(self.total) if self.total else np.float32(np.inf)
        pos = int(np.float32(self.width) * progress) if np.isfinite(progress) else self.width
        bar = "".join("=" if i < pos else ">" if i == pos else " " for i in range(self.width))
        ms = int((time.monotonic() - self.start) * 1000)
        pct = int(float(progress) * 100.0) if np.isfinite(progress) else 0
        self.out.write(f"  [{bar}] {pct}% {'%g' % (ms / 1000.0)}s\r")
        self.out.flush()

    def tick(self) -> None:
        self.ticks += 1
        self.display()

    def done(self) -> None:
        self.display()
        self.out.write("\n")
        self.out.flush()


class DatasetPlan:
    """The calibration files of the graph's first input and how to load a batch of them (§7.1):
    batch = N of a 4-D input, else 1; the file list is truncated to a multiple of it."""

    def __init__(self, graph: Graph, dataset, fmt: str, mean: float, std: float):
        from .. import images

        if not graph.inputs:
            raise InputError("the model has no input to calibrate")
        self.shape = tuple(graph.inputs[0].output.shape)
        self.batch = self.shape[0] if len(self.shape) == 4 else 1
        self.sample = self.shape[1:] if len(self.shape) == 4 else self.shape
        files = images.list_dataset(dataset, fmt)
        self.files = files[: len(files) // self.batch * self.batch]
        if not self.files:
            raise InputError(f"{dataset}: the dataset has fewer files than the model's batch size {self.batch}")
        self.fmt, self.mean, self.std = fmt, mean, std

    def __len__(self) -> int:
        return len(self.files) // self.batch

    def _load(self, path) -> np.ndarray:
        from .. import images

        if self.fmt == "raw":
            return images.normalize_f32(images.load_raw(path, np.float32, self.sample), self.mean, self.std)
        c, h, w = images.model_chw(self.shape)
        return images.load_image_f32(path, c, h, w, self.mean, self.std).reshape(self.sample)

    def load(self, i: int) -> np.ndarray:
        """Batch ``i`` as one float32 tensor of the input's shape."""
        paths = self.files[i * self.batch:(i + 1) * self.batch]
        return np.stack([self._load(p) for p in paths]).reshape(self.shape).astype(np.float32)


def run_graph(graph: Graph, x: np.ndarray, record, order=None, watch=None) -> None:
    """Evaluate the HLIR graph on one batch in DFS order; call ``record(out_connector, value)`` for
    every node whose first output is marked need_quantize (or, given ``watch``, is one of those connectors)."""
    from ..ir.ops import evaluator

    values: dict = {}
    first_input = graph.inputs[0]
    for node in order if order is not None else graph.dfs():
        if node.op == "input":
            outs = [x if node is first_input else np.zeros(node.output.shape, np.float32)]
        elif node.op == "constant":
            outs = [node["data"]]
        elif node.op in ("output", "ignore"):
            continue
        else:
            args = [values[ic.producer] for ic in node.inputs]
            outs = evaluator(node.op)(node, args)
        for oc, v in zip(node.outputs, outs):
            values[oc] = v
        if node.outputs:
            oc = node.outputs[0]
            if (oc in watch) if watch is not None else oc.need_quantize:
                record(oc, values[oc])


def collect_ranges(graph: Graph, dataset, fmt: str, mean: float, std: float, use_input_stat: bool,
                   out=None, jobs: int | None = None) -> dict:
    """Calibration run #1 (no_clip): union of per-batch ``get_range`` per marked output connector."""
    folds: dict = {}  # connector -> (min, max) folded over every batch (= the union of per-batch ranges)

    def record(oc, v):
        if oc.node.op == "input" and not use_input_stat:
            return
        mn, mx = folds.get(oc, (FLT_MAX, FLT_MIN))
        folds[oc] = fold_range(np.ravel(v, order="K"), mn, mx)

    _run(graph, dataset, fmt, mean, std, record, out, jobs)
    return {oc: Range(mn, mx) for oc, (mn, mx) in folds.items()}


def sample_ranges(graph: Graph, x: np.ndarray) -> dict:
    """The no_clip ranges of one input batch ``x`` (the KPU RAM preview of the fit report: the graph's
    structure after quantization does not depend on the ranges' values)."""
    ranges: dict = {}
    run_graph(graph, np.asarray(x, np.float32), lambda oc, v: ranges.__setitem__(oc, tensor_range(v)))
    release_prepared()
    return ranges


def l2_ranges(graph: Graph, ranges: dict, dataset, fmt: str, mean: float, std: float, use_input_stat: bool,
              out=None, jobs: int | None = None) -> dict:
    """Calibration run #2 and the l2 threshold search (§7.3); prints ncc's lines."""
    from .l2_calibration import Histogram, print_line

    out = out if out is not None else sys.stdout
    hists = {oc: Histogram(fixup_range(r)) for oc, r in ranges.items()}

    def record(oc, v):
        if oc.node.op == "input" and not use_input_stat:
            return
        if oc in hists:
            hists[oc].record(v)

    out.write("  4.3. Get activation distributions...\n")
    out.write("  Plan buffers...\n")
    _run(graph, dataset, fmt, mean, std, record, out, jobs)
    out.write("  4.4. Find optimal thresholds...\n")
    bar = ProgressBar(len(hists), out)
    bar.display()
    result = dict(ranges)
    for oc, h in hists.items():
        opt = h.optimal_range()
        result[oc] = opt
        out.write(print_line(h.range, opt) + "\n")
        bar.tick()
    out.write("\n")  # ncc ends this bar with a bare std::endl (no done())
    return result


def searched_ranges(graph: Graph, ranges: dict, dataset, fmt: str, mean: float, std: float, method: str,
                    percentile: float, out=None, jobs=None, clamp: bool = True) -> dict:
    """Calibration run #2 for kmodelpy's own methods (percentile, mse: :mod:`kmodelpy.compiler.range_search`).
    Graph inputs keep their no_clip range: a uint8 input's codes are the pixels, a clipped range would
    misread them."""
    from .range_search import histogram_ranges

    out = out if out is not None else sys.stdout
    searched = {oc: r for oc, r in ranges.items() if oc.node.op != "input"}
    out.write("  4.3. Get activation distributions...\n")
    result = dict(ranges)
    result.update(histogram_ranges(searched, lambda record: _run(graph, dataset, fmt, mean, std, record, out, jobs),
                                   method, percentile, clamp))
    detail = f" (both tails at {percentile:g} %)" if method == "percentile" else ""
    out.write(f"  4.4. Find {method} ranges{detail}...\n")
    return result


def _run(graph, dataset, fmt, mean, std, record, out, jobs=None, watch=None) -> None:
    """Evaluate every batch (on ``jobs`` threads; default: the free cores) and ``record`` the
    marked values batch after batch in dataset order, as one thread would."""
    from .._numba_start import install
    from ..parallel import free_cores, map_ordered, one_blas_thread

    install()  # faster loads of the cached kernels
    out = out if out is not None else sys.stdout
    out.write("  Run calibration...\n")
    plan = DatasetPlan(graph, dataset, fmt, mean, std)
    order = graph.dfs()

    def evaluate(_, i):
        marked = []
        run_graph(graph, plan.load(i), lambda oc, v: marked.append((oc, v)), order, watch)
        return marked

    bar = ProgressBar(len(plan.files), out)
    bar.display()
    try:
        with one_blas_thread:
            for marked in map_ordered(evaluate, range(len(plan)), jobs or free_cores()):
                for oc, v in marked:
                    record(oc, v)
                bar.tick()  # ncc ticks once per batch
    finally:
        release_prepared()
    bar.done()


def fixed_input_range(mean: float, std: float) -> Range:
    """``{f32((0 − mean)/std), f32((1 − mean)/std)}`` (compile.cpp:342-349)."""
    m, s = np.float32(mean), np.float32(std)
    return Range(np.float32(np.float32(0.0 - m) / s), np.float32(np.float32(1.0 - m) / s))


def broadcast_ranges(graph: Graph, ranges: dict) -> None:
    """quantizer.cpp:173-200: ranges flow unchanged through data-movement ops (last visit wins, §13.5)."""

    def push(node, r):
        if node.op not in BROADCAST_OPS:
            return
        for o in node.outputs:
            if o in ranges:
                ranges[o] = r
            for c in list(o.consumers):
                push(c.node, r)

    for node in graph.dfs():
        if len(node.inputs) == 1:
            src = node.inputs[0].producer
            if src in ranges:
                push(node, ranges[src])
