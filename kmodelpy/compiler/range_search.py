"""Calibration methods beyond ncc's (opt-in ``--calibrate-method``): a range per tensor from a histogram of
its values over the calibration set, chosen to lose less than the min/max range (``no_clip``) when a few
outliers stretch it.

* ``percentile``: clip both tails at ``P`` % (``--calibrate-percentile``, default 99.99): the range is
  [the (100 − P)-th percentile, the P-th percentile] of the values (interpolated inside a bin), widened
  to contain 0 as every range is.
* ``mse``: the range [lo, hi] that minimises the expected squared error of uint8 quantization over the
  histogram: values inside cost the rounding noise step²/12 (step = (hi − lo)/255), values outside their
  squared distance to the clip edge. lo and hi run over the bin edges (lo ≤ 0 ≤ hi); the histogram
  MSE search of e.g. Nvidia's pytorch-quantization (``calib.HistogramCalibrator``, method "mse").

TensorRT's entropy (KL) calibration was tried too and left out: on these models it clips far too much
(docs/accuracy.md).

The histograms have :data:`BINS` bins over ``fixup_range`` of the no_clip range (calibration run #1) and
count in int64 (ncc's l2 histograms are float32 and saturate; these are not ncc's).
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .quant import Range, fixup_range

BINS = 2048
METHODS = ("percentile", "mse")


class Histogram:
    """Value counts of one tensor over the calibration set, ``BINS`` equal bins over ``r``."""

    def __init__(self, r: Range):
        self.lo, self.hi = float(r.min), float(r.max)
        self.width = (self.hi - self.lo) / BINS
        self.counts = np.zeros(BINS, np.int64)

    def record(self, values) -> None:
        v = np.asarray(values, np.float32).ravel()
        v = v[np.isfinite(v)]
        idx = np.clip(((v - self.lo) / self.width).astype(np.int64), 0, BINS - 1)
        self.counts += np.bincount(idx, minlength=BINS)

    def edges(self) -> np.ndarray:
        return self.lo + self.width * np.arange(BINS + 1)

    def zero_bin(self) -> int:
        """Index of the bin edge nearest to 0 (ranges always contain 0)."""
        return int(np.clip(round(-self.lo / self.width), 0, BINS))


def percentile_range(h: Histogram, p: float) -> Range:
    """Both tails clipped at ``p`` percent (see the module doc)."""
    total = int(h.counts.sum())
    if total == 0:
        return Range(h.lo, h.hi)
    cum = np.concatenate(([0], np.cumsum(h.counts)))
    tail = total * (100.0 - p) / 100.0
    e = h.edges()

    def at(c):  # the value below which c of the counts lie, linear inside a bin
        i = int(np.searchsorted(cum, c, side="left"))
        i = min(max(i, 1), BINS)
        below, inside = cum[i - 1], h.counts[i - 1]
        f = 0.0 if inside == 0 else (c - below) / inside
        return e[i - 1] + f * h.width

    lo = min(at(tail), 0.0)
    hi = max(at(total - tail), 0.0)
    return Range(lo, hi)


def mse_range(h: Histogram) -> Range:
    """The (lo, hi) bin-edge pair with the smallest expected squared uint8 quantization error."""
    c = h.counts.astype(np.float64)
    if c.sum() == 0:
        return Range(h.lo, h.hi)
    e = h.edges()
    v = (e[:-1] + e[1:]) / 2  # bin centres
    # suffix sums (values at or above a bin) and prefix sums (values below), for the clipping errors
    s0 = np.concatenate((np.cumsum(c[::-1])[::-1], [0.0]))
    s1 = np.concatenate((np.cumsum((c * v)[::-1])[::-1], [0.0]))
    s2 = np.concatenate((np.cumsum((c * v * v)[::-1])[::-1], [0.0]))
    p0, p1, p2 = (np.concatenate(([0.0], np.cumsum(a))) for a in (c, c * v, c * v * v))
    z = h.zero_bin()
    his = np.arange(max(z, 1), BINS + 1)  # the hi edge index (hi >= 0)
    hi_v = e[his]
    over = s2[his] - 2 * hi_v * s1[his] + hi_v * hi_v * s0[his]  # values above hi clip to hi
    best = (np.inf, 0, BINS)
    for lo_i in range(0, min(z, BINS - 1) + 1):
        lo_v = e[lo_i]
        under = lo_v * lo_v * p0[lo_i] - 2 * lo_v * p1[lo_i] + p2[lo_i]  # values below lo clip to lo
        inside = p0[his] - p0[lo_i]
        step = (hi_v - lo_v) / 255.0
        cost = over + under + inside * step * step / 12.0
        k = int(np.argmin(cost))
        if cost[k] < best[0]:
            best = (float(cost[k]), lo_i, int(his[k]))
    _, lo_i, hi_i = best
    return Range(min(e[lo_i], 0.0), max(e[hi_i], 0.0))


def optimal_range(h: Histogram, method: str, percentile: float = 99.99) -> Range:
    if method == "percentile":
        return percentile_range(h, percentile)
    if method == "mse":
        return mse_range(h)
    raise InputError(f"--calibrate-method {method!r} is not one of {', '.join(METHODS)}")


def histogram_ranges(ranges: dict, record_run, method: str, percentile: float = 99.99, clamp: bool = True) -> dict:
    """Calibration run #2 for ``method``: ``record_run(record)`` must call ``record(connector, value)`` for
    every calibrated tensor of every batch (as :func:`kmodelpy.compiler.calibrate._run` does)."""
    hists = {oc: Histogram(fixup_range(r, clamp)) for oc, r in ranges.items()}

    def record(oc, v):
        h = hists.get(oc)
        if h is not None:
            h.record(v)

    record_run(record)
    return {oc: optimal_range(h, method, percentile) for oc, h in hists.items()}
