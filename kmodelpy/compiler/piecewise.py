"""Greedy piecewise-linear regression used for the KPU activation table (compiler spec §7.6, bottom;
nncase src/transforms/hlir/k210/piecewise_regression.cpp).

Everything is float32 with one rounding per operation. The merge order is decided by exact float32 slope
differences (ties → the first index), which for identity fits is what shapes the whole table.
"""
from __future__ import annotations

from dataclasses import dataclass

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

    start, stop, slope, intercept = list(start), list(stop), list(slope), list(intercept)
    diffs = _diffs(np.array(slope, dtype=F32))  # float64 array (np.delete per merge: no list->array copies)
    with np.errstate(all="ignore"):
        while len(slope) != segments_count:
            i = _first_min(diffs)
            if i < 0:
                raise CompileError(
                    f"{what}: piecewise regression failed (slopes are all NaN/inf); the layer's output range "
                    f"is degenerate — check the calibration data"
                )
            y0 = F32(F32(F32(start[i] - start[i]) * slope[i]) + intercept[i])
            y1 = F32(F32(F32(stop[i + 1] - start[i + 1]) * slope[i + 1]) + intercept[i + 1])
            slope[i] = F32(F32(y1 - y0) / F32(stop[i + 1] - start[i]))
            stop[i] = stop[i + 1]
            del start[i + 1], stop[i + 1], slope[i + 1], intercept[i + 1]
            # diffs[k] = |slope[k] − slope[k+1]|: only the neighbours of i change.
            diffs = np.delete(diffs, i)
            if i > 0:
                diffs[i - 1] = _diff(slope[i - 1], slope[i])
            if i < len(slope) - 1:
                diffs[i] = _diff(slope[i], slope[i + 1])
    return [Segment(F32(a), F32(b), F32(s), F32(c)) for a, b, s, c in zip(start, stop, slope, intercept)]


def _diff(a, b) -> float:
    d = F32(abs(F32(a - b)))
    return float(d) if d < _FLT_MAX else float("inf")  # NaN/inf/FLT_MAX can never be chosen


def _diffs(s: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        d = np.abs((s[:-1] - s[1:]).astype(F32)).astype(F32)
    d = d.astype(np.float64)
    d[~(d < float(_FLT_MAX))] = np.inf
    return d


def _first_min(diffs) -> int:
    if len(diffs) == 0:
        return -1
    a = np.asarray(diffs)
    i = int(np.argmin(a))
    return i if a[i] != np.inf else -1
