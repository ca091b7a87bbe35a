"""Greedy piecewise-linear regression used for the KPU activation table (compiler spec §7.6, bottom;
nncase src/transforms/hlir/k210/piecewise_regression.cpp).

Everything is float32 with one rounding per operation. The merge order is decided by exact float32 slope
differences (ties → the first index), which for identity fits is what shapes the whole table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..errors import CompileError

F32 = np.float32
_FLT_MAX = np.finfo(np.float32).max


@dataclass(frozen=True)
class Segment:
    """One fitted segment: ``y(x) = (x − start)·slope + intercept`` on [start, stop] (all float32)."""

    start: np.float32
    stop: np.float32
    slope: np.float32
    intercept: np.float32


def piecewise_regression(xs, ys, segments_count: int = 15, what: str = "activation") -> list[Segment]:
    """Fit ``segments_count`` segments to the points (xs[i], ys[i]) exactly as ncc does.

    1. Sort by x (ncc's std::sort; the sample x are strictly increasing so order is unambiguous).
    2. One segment per consecutive pair: slope ``f32(f32(y1−y0)/f32(x1−x0))``, intercept ``y0``.
    3. While too many segments: merge the first i minimising ``|slope_i − slope_{i+1}|`` (strict ``<``
       against an initial FLT_MAX, so NaN/inf/FLT_MAX differences never win); the merged slope is
       ``(y1 − y0)/(stop_{i+1} − start_i)`` with ``y0 = (start_i − start_i)·slope_i + intercept_i`` and
       ``y1 = (stop_{i+1} − start_{i+1})·slope_{i+1} + intercept_{i+1}``.
    """
    x = np.asarray(xs, dtype=np.float32).ravel()
    y = np.asarray(ys, dtype=np.float32).ravel()
    if x.size != y.size:
        raise CompileError(f"{what}: piecewise regression needs as many x as y samples")
    if x.size <= segments_count:
        raise CompileError(f"{what}: piecewise regression has insufficient points ({x.size})")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]

    start = x[:-1].copy()
    stop = x[1:].copy()
    with np.errstate(all="ignore"):
        slope = ((y[1:] - y[:-1]).astype(F32) / (x[1:] - x[:-1]).astype(F32)).astype(F32)
    intercept = y[:-1].copy()

    m = _merge(start, stop, slope, intercept, _diffs(slope), segments_count)
    if m < 0:
        raise CompileError(
            f"{what}: piecewise regression failed (slopes are all NaN/inf); the layer's output range "
            f"is degenerate — check the calibration data"
        )
    return [Segment(F32(a), F32(b), F32(s), F32(c))
            for a, b, s, c in zip(start[:m], stop[:m], slope[:m], intercept[:m])]


@numba.njit(cache=True, error_model="numpy")
def _merge(start, stop, slope, intercept, diffs, segments_count):
    """The merge loop in place on float32 arrays (each operation rounded to float32, as in the docstring
    of :func:`piecewise_regression`); ``diffs[k] = |slope[k] − slope[k+1]|`` (float64, inf where never
    eligible). Returns the number of segments left, or −1 if no pair can be merged."""
    m = slope.size
    inf = np.inf
    flt_max = np.float32(_FLT_MAX)
    while m != segments_count:
        i = -1
        best = inf
        for k in range(m - 1):  # the first minimum (np.argmin order); inf never wins
            if diffs[k] < best:
                best = diffs[k]
                i = k
        if i < 0:
            return -1
        y0 = np.float32(np.float32(np.float32(start[i] - start[i]) * slope[i]) + intercept[i])
        y1 = np.float32(np.float32(np.float32(stop[i + 1] - start[i + 1]) * slope[i + 1]) + intercept[i + 1])
        slope[i] = np.float32(np.float32(y1 - y0) / np.float32(stop[i + 1] - start[i]))
        stop[i] = stop[i + 1]
        for k in range(i + 1, m - 1):
            start[k] = start[k + 1]
            stop[k] = stop[k + 1]
            slope[k] = slope[k + 1]
            intercept[k] = intercept[k + 1]
        for k in range(i, m - 2):
            diffs[k] = diffs[k + 1]
        m -= 1
        # only the neighbours of i change
        if i > 0:
            d = np.float32(abs(np.float32(slope[i - 1] - slope[i])))
            diffs[i - 1] = np.float64(d) if d < flt_max else inf
        if i < m - 1:
            d = np.float32(abs(np.float32(slope[i] - slope[i + 1])))
            diffs[i] = np.float64(d) if d < flt_max else inf
    return m


def _diffs(s: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        d = np.abs((s[:-1] - s[1:]).astype(F32)).astype(F32)
    d = d.astype(np.float64)
    d[~(d < float(_FLT_MAX))] = np.inf
    return d

