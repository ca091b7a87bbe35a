"""``--calibrate-method l2``: histograms and the optimal-threshold search (compiler spec §7.3;
nncase src/evaluator/quantizer.cpp ``histogram`` and ``compute_l2``, the active ``#else`` branch).

* The histogram covers ``H = fixup_range(R)`` with 2048 bins of width ``f32((H.max − H.min)/2048)``.
  Counters are **float32**: a bin stops growing at 2²⁴ (``x + 1 == x``), and since every increment below
  that is exact, adding ``c`` hits to a bin holding ``x`` gives exactly ``min(x + c, 2²⁴)``.
* The search visits ``lo = 0 … z`` ascending and ``hi = 2048`` downwards while ``hi ≥ lo + 256`` and
  ``hi ≥ z``, keeping the first pair with strictly smaller loss. The loss accumulator is float, each term
  ``(pv − qv)²·bin`` is double (``std::pow(float, int)``). Zero bins add exactly 0 and are skipped.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .quant import Range, fixup_range

F32 = np.float32
SRC_BINS = 2048
DEST_BINS = 256
COUNTER_LIMIT = F32(2.0**24)


class Histogram:
    """One connector's histogram (ncc ``quantizer::histogram``). Like ncc's constructor it takes the range
    as given: the caller passes ``fixup_range(R)`` (ncc's ``begin_collect_distribution`` does)."""

    def __init__(self, r: Range):
        self.range = Range(r.min, r.max)
        self.interval = F32(F32(self.range.max - self.range.min) / F32(SRC_BINS))
        self.bins = np.zeros(SRC_BINS, dtype=np.float32)

    def bin_indices(self, data) -> np.ndarray:
        """``trunc(clamp(f32((v − min)/interval), 0, 2047))`` per value (NaN values are dropped: ncc's
        behaviour for them is undefined)."""
        v = np.asarray(data, dtype=np.float32).ravel()
        with np.errstate(all="ignore"):
            r = ((v - self.range.min).astype(F32) / self.interval).astype(F32)
        r = r[~np.isnan(r)]
        r = np.where(r < 0, F32(0), np.where(F32(SRC_BINS - 1) < r, F32(SRC_BINS - 1), r))
        return r.astype(np.int64)

    def record(self, data) -> None:
        """Add one tensor's values (float32 counters, saturating at 2²⁴)."""
        counts = np.bincount(self.bin_indices(data), minlength=SRC_BINS).astype(np.float64)
        total = self.bins.astype(np.float64) + counts
        sat = self.bins >= COUNTER_LIMIT
        self.bins = np.where(sat, self.bins, np.minimum(total, float(COUNTER_LIMIT))).astype(np.float32)

    def zero_threshold(self) -> int:
        with np.errstate(all="ignore"):
            z = F32(F32(F32(0) - self.range.min) / self.interval)
        z = F32(0) if z < 0 else (F32(SRC_BINS - 1) if F32(SRC_BINS - 1) < z else z)
        return int(z)

    def optimal_thresholds(self) -> tuple[int, int]:
        """The (lo, hi) bin pair of the l2 search."""
        nz = np.flatnonzero(self.bins).astype(np.int64)
        return _search(self.bins[nz].astype(np.float32), nz, F32(self.range.min), F32(self.range.max),
                       F32(self.interval), self.zero_threshold())

    def optimal_range(self) -> Range:
        lo, hi = self.optimal_thresholds()
        if lo < 0:  # no loss below FLT_MAX (NaN/inf losses): ncc keeps the histogram range
            return self.range
        return Range(F32(F32(F32(lo) * self.interval) + self.range.min),
                     F32(F32(F32(hi) * self.interval) + self.range.min))


def l2_optimal_range(r: Range, tensors) -> Range:
    """Convenience: histogram of ``tensors`` (an iterable of arrays) over ``fixup_range(r)``, then search."""
    h = Histogram(fixup_range(r))
    for t in tensors:
        h.record(t)
    return h.optimal_range()


def format_cpp_float(v) -> str:
    """C++ ``ostream << float`` with default flags: ``%g`` with 6 significant digits."""
    return "%g" % float(v)


def print_line(hist_range: Range, opt: Range) -> str:
    """ncc's per-histogram line ``{min, max} -> {min', max'}`` (without the newline)."""
    f = format_cpp_float
    return f"{{{f(hist_range.min)}, {f(hist_range.max)}}} -> {{{f(opt.min)}, {f(opt.max)}}}"


@numba.njit(cache=True)
def _l2_loss(counts, pv, qmin, qmax, bound):
    """compute_l2 for one (qmin, qmax). The float accumulator never decreases (non-negative terms,
    monotone rounding), so once it reaches ``bound`` (the best loss so far) the pair cannot win and the
    partial sum is returned — the caller only tests ``loss < bound``."""
    q_int = np.float32(np.float32(qmax - qmin) / np.float32(255.0))
    d = np.float32(0.0)
    for j in range(pv.size):
        t = np.float32(np.float32(pv[j] - qmin) / q_int)
        # (int32_t)roundf(t) clamped to [0, 255]: a negative t gives 0 either way, and |t| < 2048 here
        # (qmax − qmin ≥ 256 bins), so floor(t + 0.5) in double is exact and the cast cannot overflow.
        k = math.floor(np.float64(t) + 0.5)
        k = min(max(k, 0.0), 255.0)
        qv = np.float32(qmin + np.float32(q_int * np.float32(k)))
        diff = np.float64(np.float32(pv[j] - qv))
        d = np.float32(np.float64(d) + diff * diff * np.float64(counts[j]))
        if not d < bound:
            return d
    return d


@numba.njit(cache=True)
def _search(counts, idx, hmin, hmax, interval, z, prune=True):
    """The exhaustive (lo, hi) scan of quantizer.cpp, exact. Two shortcuts never change the answer:
    * ``_l2_loss`` stops once its (monotone) partial sum reaches the best loss so far;
    * with ``prune``, a pair is skipped when a lower bound of its loss already exceeds the best loss.
      The bound is the upper-tail clipping error: every bin with ``pv ≥ qmax`` quantizes to code 255,
      so the loss is at least Σ c·(pv − q255)², computed from suffix sums in double and shrunk by a
      safety margin covering the float rounding of the real accumulation (≤ 2048 roundings of 2⁻²⁴)
      and the cancellation in the suffix-sum formula."""
    n = idx.size
    p_int = np.float32(np.float32(hmax - hmin) / np.float32(2048.0))
    pv = np.empty(n, dtype=np.float32)
    for j in range(n):
        pv[j] = np.float32(hmin + np.float32(p_int * np.float32(idx[j])))
    s0 = np.zeros(n + 1)
    s1 = np.zeros(n + 1)
    s1a = np.zeros(n + 1)
    s2 = np.zeros(n + 1)
    for j in range(n - 1, -1, -1):
        c = np.float64(counts[j])
        v = np.float64(pv[j])
        s0[j] = s0[j + 1] + c
        s1[j] = s1[j + 1] + c * v
        s1a[j] = s1a[j + 1] + c * abs(v)
        s2[j] = s2[j + 1] + c * v * v
    best = np.float32(3.4028234663852886e38)
    best_lo = -1
    best_hi = -1
    for lo in range(z + 1):
        qmin = np.float32(np.float32(np.float32(lo) * interval) + hmin)
        hi = 2048
        first_top = n  # first bin with pv >= qmax (moves down as hi decreases)
        while hi >= lo + 256 and hi >= z:
            qmax = np.float32(np.float32(np.float32(hi) * interval) + hmin)
            if prune:
                while first_top > 0 and pv[first_top - 1] >= qmax:
                    first_top -= 1
                if first_top < n:
                    q_int = np.float32(np.float32(qmax - qmin) / np.float32(255.0))
                    a = np.float64(np.float32(qmin + np.float32(q_int * np.float32(255.0))))
                    j = first_top
                    tail = s2[j] - 2.0 * a * s1[j] + a * a * s0[j]
                    err = 1e-14 * (s2[j] + 2.0 * abs(a) * s1a[j] + a * a * s0[j])
                    if (tail - err) * (1.0 - 1.0 / 256.0) > np.float64(best):
                        hi -= 1
                        continue
            loss = _l2_loss(counts, pv, qmin, qmax, best)
            if loss < best:
                best = loss
                best_lo = lo
                best_hi = hi
            hi -= 1
    return best_lo, best_hi
