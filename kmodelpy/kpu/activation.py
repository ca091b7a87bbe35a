"""The KPU activation stage (runtime spec §C.5 b, c) as numba kernels, bit-exact with ``ncc infer``:

    Bv = asr(C·norm_mul, norm_shift) + norm_add
    j  = largest j in 15..0 with Bv > x_start[j]            (strict, signed)
    U  = clamp(KROUND((Bv − x_start[j])·y_mul[j], shift[j]) + add[j], 0, 255)

:func:`activate` is the literal form (any table, reports undefined cases); :func:`activate_sorted`
is the fast form for non-decreasing x_start when the channel's Bv range is known.
"""
from __future__ import annotations

import numba
import numpy as np

ERR_NONE, ERR_NO_SEGMENT, ERR_SHIFT = 0, 1, 2


@numba.njit(cache=True)
def kround(t, s):
    """``carry_shift<int64, banker=true>`` with its sign quirk (C.5): KROUND(−1, 2) = −2."""
    if s == 0:
        return t
    q = t >> s
    f = t & ((np.int64(1) << s) - 1)
    h = np.int64(1) << (s - 1)
    sigma = np.int64(-1) if t < 0 else np.int64(1)
    if f < h:
        return q
    if f > h:
        return q + sigma
    if q & 1:
        return q + sigma
    return q


@numba.njit(cache=True)
def activate(cv, mul, bsh, badd, s_start, s_mul, s_shift, s_mask, s_half, s_add, sorted_starts, u):
    """u[p] = activation of batch norm of C = cv[p], for one output channel (C.5 b, c).
    With non-decreasing x_start the segment is found branch-free by counting (the same result as
    the strict-``>`` scan from 15 down); otherwise by the scan itself. ``s_mask``/``s_half`` are
    2^s−1 and 2^(s−1) (1 for s = 0, which then never rounds)."""
    err = ERR_NONE
    for p in range(u.shape[0]):
        bv = ((cv[p] * mul) >> bsh) + badd
        if sorted_starts:
            j = -1
            for i in range(16):
                j += bv > s_start[i]
        else:
            j = 15
            while j >= 0 and not bv > s_start[j]:
                j -= 1
        if j < 0:
            err = ERR_NO_SEGMENT
            u[p] = 0
            continue
        sh = s_shift[j]
        if sh >= 32:
            err = ERR_SHIFT
            u[p] = 0
            continue
        t = (bv - s_start[j]) * s_mul[j]
        q = t >> sh
        f = t & s_mask[j]
        h = s_half[j]
        up = (f > h) | ((f == h) & ((q & 1) == 1))
        r = q + s_add[j]
        if up:
            r += -1 if t < 0 else 1
        u[p] = 0 if r < 0 else (255 if r > 255 else r)
    return err


@numba.njit(cache=True)
def activate_sorted(cv, mul, bsh, badd, s_start, s_mul, s_shift, s_add, bv_lo, bv_hi, bvs, u):
    """Fast form of :func:`activate` for non-decreasing x_start when every Bv of the channel lies
    in [bv_lo, bv_hi] with bv_lo > x_start[0]: segments entirely below bv_lo always count, those at
    or above bv_hi never do, so only the few in between are compared (ncc tables park unused
    segments at 2^35−2). KROUND is branch-free: up = ((t + h − 1 + (q & 1)) >> s) − q is the
    round-half-even carry, applied towards −∞ for t < 0 (the quirk). Returns False (nothing
    written) when a reachable segment has shift >= 32; the caller then takes the checked path."""
    i_lo = 1
    while i_lo < 16 and s_start[i_lo] < bv_lo:
        i_lo += 1
    i_hi = i_lo
    while i_hi < 16 and s_start[i_hi] < bv_hi:
        i_hi += 1
    j0 = i_lo - 1
    for j in range(j0, i_hi):
        if s_shift[j] >= 32:
            return False
    if i_hi - j0 <= 2:
        # one or two reachable segments (the usual case): one vectorisable pass
        ja, jb = j0, min(j0 + 1, 15)
        xa, ya, sa, aa = s_start[ja], s_mul[ja], s_shift[ja], s_add[ja]
        xb, yb, sb, ab = s_start[jb], s_mul[jb], s_shift[jb], s_add[jb]
        if i_hi - j0 == 1:
            xb = np.int64(np.iinfo(np.int64).max)  # never taken
        ha = ((np.int64(1) << sa) >> 1) - 1 if sa > 0 else np.int64(0)
        hb = ((np.int64(1) << sb) >> 1) - 1 if sb > 0 else np.int64(0)
        za = np.int64(-1) if sa > 0 else np.int64(0)
        zb = np.int64(-1) if sb > 0 else np.int64(0)
        for p in range(u.shape[0]):
            bv = ((cv[p] * mul) >> bsh) + badd
            ta = (bv - xa) * ya
            qa = ta >> sa
            upa = (((ta + ha + (qa & 1)) >> sa) - qa) & za
            ma = ta >> 63
            ra = qa + ((upa ^ ma) - ma) + aa
            tb = (bv - xb) * yb
            qb = tb >> sb
            upb = (((tb + hb + (qb & 1)) >> sb) - qb) & zb
            mb = tb >> 63
            rb = qb + ((upb ^ mb) - mb) + ab
            r = rb if bv > xb else ra
            u[p] = min(max(r, 0), 255)
        return True
    if i_hi - j0 <= 4:
        # few reachable segments: one vectorisable pass per segment with constant parameters, in
        # increasing order, each overwriting the values above its start (largest j with Bv > x_start[j])
        n = u.shape[0]
        for p in range(n):
            bvs[p] = ((cv[p] * mul) >> bsh) + badd
        for j in range(j0, i_hi):
            xs, ym, sh, add = s_start[j], s_mul[j], s_shift[j], s_add[j]
            hm1 = ((np.int64(1) << sh) >> 1) - 1 if sh > 0 else np.int64(0)
            nz = np.int64(-1) if sh > 0 else np.int64(0)
            first = j == j0
            for p in range(n):
                bv = bvs[p]
                t = (bv - xs) * ym
                q = t >> sh
                up = (((t + hm1 + (q & 1)) >> sh) - q) & nz
                m = t >> 63
                r = min(max(q + ((up ^ m) - m) + add, 0), 255)
                if first or bv > xs:
                    u[p] = r
        return True
    for p in range(u.shape[0]):
        bv = ((cv[p] * mul) >> bsh) + badd
        j = j0
        for i in range(i_lo, i_hi):
            j += bv > s_start[i]
        sh = s_shift[j]
        t = (bv - s_start[j]) * s_mul[j]
        q = t >> sh
        up = (((t + ((np.int64(1) << sh) >> 1) - 1 + (q & 1)) >> sh) - q) if sh > 0 else np.int64(0)
        m = t >> 63
        r = q + ((up ^ m) - m) + s_add[j]
        u[p] = min(max(r, 0), 255)
    return True
