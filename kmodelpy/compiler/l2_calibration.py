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
def _tails(pv, s0, s1, s1a, s2, j0, j1, a_lo, a_hi):
    """Lower bound of a pair's loss: bins below qmin (index < ``j0``) all quantize to code 0 (``a_lo``), bins
    at or above qmax (index ≥ ``j1``) to code 255 (``a_hi``); the two clipped tails are exact sums, taken
    from the prefix sums ``s*`` in double, less a margin for the float rounding of the real accumulation
    (≤ 2048 roundings of 2⁻²⁴) and the cancellation in the sum formula."""
    n = pv.size
    lo_t = s2[j0] - 2.0 * a_lo * s1[j0] + a_lo * a_lo * s0[j0]
    lo_e = 1e-14 * (s2[j0] + 2.0 * abs(a_lo) * s1a[j0] + a_lo * a_lo * s0[j0])
    hi_t = (s2[n] - s2[j1]) - 2.0 * a_hi * (s1[n] - s1[j1]) + a_hi * a_hi * (s0[n] - s0[j1])
    hi_e = 1e-14 * ((s2[n] - s2[j1]) + 2.0 * abs(a_hi) * (s1a[n] - s1a[j1]) + a_hi * a_hi * (s0[n] - s0[j1]))
    return (lo_t - lo_e + hi_t - hi_e) * (1.0 - 1.0 / 256.0)


@numba.njit(cache=True)
def _approx_loss(rank, s0, s1, s2, hmin, p_int, qmin, qmax):
    """A pair's loss in double from the prefix sums: the bins quantizing to level k are those from the first
    bin at or above the midpoint below level k (``rank`` maps a bin number to the count of non-empty bins
    before it) to the next; each level adds Σc·(pv − qv)² = S2 − 2·qv·S1 + qv²·S0. It differs from the exact
    float loss only by rounding (bins on a midpoint give the same error on either side)."""
    n = s0.size - 1
    q_int = np.float32(np.float32(qmax - qmin) / np.float32(255.0))
    total = 0.0
    j0 = 0
    step = np.float64(q_int) / np.float64(p_int)
    b = (np.float64(qmin) - np.float64(hmin)) / np.float64(p_int) + 0.5 * step  # midpoint above level k, in bins
    for k in range(256):
        if k == 255 or b >= 2048.0:
            j1 = n
        elif b <= 0.0:
            j1 = 0
        else:
            j1 = rank[int(math.ceil(b))]
        b += step
        if j1 > j0:
            q = np.float64(np.float32(qmin + np.float32(q_int * np.float32(k))))
            total += (s2[j1] - s2[j0]) - 2.0 * q * (s1[j1] - s1[j0]) + q * q * (s0[j1] - s0[j0])
        j0 = max(j0, j1)
    return total


@numba.njit(cache=True)
def _search(counts, idx, hmin, hmax, interval, z, prune=True):
    """The exhaustive (lo, hi) scan of quantizer.cpp, exact: the answer is the first pair in scan order
    (lo ascending, hi descending) whose (float) loss is the minimum. With ``prune`` (same answer, much
    faster on signed ranges, where the scan has ~10⁶ pairs):
    1. a coarse pass (every 16th lo and hi, exact losses) gives a near-optimal loss L*;
    2. every pair whose clipped tails alone (:func:`_tails`, a lower bound) exceed L* is skipped; the others
       get a double-precision loss from prefix sums (:func:`_approx_loss`, O(256) instead of O(bins));
    3. only pairs whose approximate loss is within 1/256 of the smallest one (far more than the float
       rounding of the exact loss, ≤ 2048·2⁻²⁴) can hold the exact minimum: they alone get the exact
       loss, in scan order, keeping the first strictly smaller one as quantizer.cpp does."""
    n = idx.size
    p_int = np.float32(np.float32(hmax - hmin) / np.float32(2048.0))
    pv = np.empty(n, dtype=np.float32)
    for j in range(n):
        pv[j] = np.float32(hmin + np.float32(p_int * np.float32(idx[j])))
    s0 = np.zeros(n + 1)  # prefix sums: s[j] = sum over bins < j
    s1 = np.zeros(n + 1)
    s1a = np.zeros(n + 1)
    s2 = np.zeros(n + 1)
    for j in range(n):
        c = np.float64(counts[j])
        v = np.float64(pv[j])
        s0[j + 1] = s0[j] + c
        s1[j + 1] = s1[j] + c * v
        s1a[j + 1] = s1a[j] + c * abs(v)
        s2[j + 1] = s2[j] + c * v * v
    rank = np.zeros(2050, dtype=np.int64)
    j = 0
    for b in range(2050):
        while j < n and idx[j] < b:
            j += 1
        rank[b] = j
    flt_max = np.float32(3.4028234663852886e38)
    seed = flt_max
    if prune:
        seed = _scan(counts, pv, hmin, interval, z, 16)[0]
    approx_ok = prune and seed < flt_max
    cand_lo = np.empty(0, dtype=np.int64)
    cand_hi = np.empty(0, dtype=np.int64)
    if approx_ok:
        m = 0
        for lo in range(z + 1):
            m += max(0, 2048 - max(lo + 256, z) + 1)
        cand_lo = np.empty(m, dtype=np.int64)
        cand_hi = np.empty(m, dtype=np.int64)
        cand_l = np.empty(m)
        m = 0
        best_approx = np.inf
        first_mid = 0  # first bin with pv >= qmin (moves up as lo increases)
        for lo in range(z + 1):
            qmin = np.float32(np.float32(np.float32(lo) * interval) + hmin)
            while first_mid < n and pv[first_mid] < qmin:
                first_mid += 1
            hi = 2048
            first_top = n  # first bin with pv >= qmax (moves down as hi decreases)
            while hi >= lo + 256 and hi >= z:
                qmax = np.float32(np.float32(np.float32(hi) * interval) + hmin)
                while first_top > 0 and pv[first_top - 1] >= qmax:
                    first_top -= 1
                q_int = np.float32(np.float32(qmax - qmin) / np.float32(255.0))
                a_hi = np.float64(np.float32(qmin + np.float32(q_int * np.float32(255.0))))
                if _tails(pv, s0, s1, s1a, s2, first_mid, max(first_top, first_mid), np.float64(qmin),
                          a_hi) <= np.float64(seed):
                    a = _approx_loss(rank, s0, s1, s2, hmin, p_int, qmin, qmax)
                    cand_lo[m], cand_hi[m], cand_l[m] = lo, hi, a
                    m += 1
                    best_approx = min(best_approx, a)
                hi -= 1
        keep = cand_l[:m] <= best_approx * (1.0 + 1.0 / 256.0) + 1e-30
        cand_lo = cand_lo[:m][keep]
        cand_hi = cand_hi[:m][keep]
    best = flt_max
    best_lo = -1
    best_hi = -1
    if approx_ok:
        for c in range(cand_lo.size):
            lo, hi = cand_lo[c], cand_hi[c]
            qmin = np.float32(np.float32(np.float32(lo) * interval) + hmin)
            qmax = np.float32(np.float32(np.float32(hi) * interval) + hmin)
            loss = _l2_loss(counts, pv, qmin, qmax, best)
            if loss < best:
                best, best_lo, best_hi = loss, lo, hi
        return best_lo, best_hi
    _, best_lo, best_hi = _scan(counts, pv, hmin, interval, z, 1)
    return best_lo, best_hi


@numba.njit(cache=True)
def _scan(counts, pv, hmin, interval, z, step):
    """quantizer.cpp's scan over every ``step``-th pair (lo ascending from 0, hi descending from 2048): the
    smallest loss and the first pair reaching it."""
    best = np.float32(3.4028234663852886e38)
    best_lo = -1
    best_hi = -1
    for lo in range(0, z + 1, step):
        qmin = np.float32(np.float32(np.float32(lo) * interval) + hmin)
        hi = 2048
        while hi >= lo + 256 and hi >= z:
            qmax = np.float32(np.float32(np.float32(hi) * interval) + hmin)
            loss = _l2_loss(counts, pv, qmin, qmax, best)
            if loss < best:
                best, best_lo, best_hi = loss, lo, hi
            hi -= step
    return best, best_lo, best_hi
