"""numba kernels of the KPU layer (runtime spec §C.5, §C.6), bit-exact with ``ncc infer``.

The convolution sum ``Sxw = Σ x·w`` is computed exactly from centered values ``x' = x−128``,
``w' = w−128`` (products of at most 2^14, sums of up to 1024 of them exact in float32, so the
loops run as float32 FMAs and the layers with many input channels as one BLAS GEMM):

    Sxw = D + 128·Σx' + 128·Σw' + 16384·T,   D = Σ x'·w',  T = g_ic·K² taps

and then, all in i64 as the spec says::

    C  = Sxw + asr(ax·Sx, sx) + asr(aw·Sw, sw) + aadd·g_ic          (Sx = Σx, Sw = Σw, padding taps = Zp)
    Bv = asr(C·norm_mul, norm_shift) + norm_add
    j  = largest j in 15..0 with Bv > x_start[j]
    U  = clamp(KROUND((Bv − x_start[j])·y_mul[j], shift[j]) + add[j], 0, 255)

followed by the pool (C.6). Everything ``kpu_layer`` calls lives in this one file on purpose: numba's
on-disk cache of a function is invalidated only when its own file changes, so a callee in another
module could leave a stale compiled caller behind. Nothing here is compiled at import time.
"""
from __future__ import annotations

import numba
import numpy as np

# ============================================================== activation (C.5 b, c)
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
def activate(cv, coff, mul, bsh, badd, s_start, s_mul, s_shift, s_mask, s_half, s_add, sorted_starts, u):
    """u[p] = activation of batch norm of C = cv[p] + coff, for one output channel (C.5 b, c).
    With non-decreasing x_start the segment is found branch-free by counting (the same result as
    the strict-``>`` scan from 15 down); otherwise by the scan itself. ``s_mask``/``s_half`` are
    2^s−1 and 2^(s−1) (1 for s = 0, which then never rounds)."""
    err = ERR_NONE
    for p in range(u.shape[0]):
        bv = (((cv[p] + coff) * mul) >> bsh) + badd
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


@numba.njit(cache=True, inline="always")
def _seg_consts(s_start, s_mul, s_shift, s_add, j):
    """(x_start, y_mul, shift, add, h−1, nonzero-shift mask) of segment j, for :func:`_seg_value`."""
    sh = s_shift[j]
    h1 = ((np.int64(1) << sh) >> 1) - 1 if sh > 0 else np.int64(0)
    z = np.int64(-1) if sh > 0 else np.int64(0)
    return s_start[j], s_mul[j], sh, s_add[j], h1, z


@numba.njit(cache=True, inline="always")
def _seg_value(bv, xs, ym, sh, add, h1, z):
    """KROUND((bv − xs)·ym, sh) + add, branch-free (see :func:`activate_sorted`), before the clamp."""
    t = (bv - xs) * ym
    q = t >> sh
    up = (((t + h1 + (q & 1)) >> sh) - q) & z
    m = t >> 63
    return q + ((up ^ m) - m) + add


@numba.njit(cache=True, inline="always")
def _reachable(s_start, bv_lo, bv_hi):
    """(i_lo, i_hi) for sorted x_start and Bv in [bv_lo, bv_hi], bv_lo > x_start[0]: segments
    1..i_lo−1 lie below bv_lo (the values start in segment i_lo − 1), segments from i_hi on at or
    above bv_hi (never used)."""
    i_lo = 1
    while i_lo < 16 and s_start[i_lo] < bv_lo:
        i_lo += 1
    i_hi = i_lo
    while i_hi < 16 and s_start[i_hi] < bv_hi:
        i_hi += 1
    return i_lo, i_hi


@numba.njit(cache=True, inline="always")
def activate_sorted(cv, coff, mul, bsh, badd, s_start, s_mul, s_shift, s_add, bv_lo, bv_hi, bvs, u):
    """Fast form of :func:`activate` (C = cv[p] + coff) for non-decreasing x_start when every Bv of the channel lies
    in [bv_lo, bv_hi] with bv_lo > x_start[0]: segments entirely below bv_lo always count, those at
    or above bv_hi never do, so only the few in between are compared (ncc tables park unused
    segments at 2^35−2). KROUND is branch-free: up = ((t + h − 1 + (q & 1)) >> s) − q is the
    round-half-even carry, applied towards −∞ for t < 0 (the quirk). Returns False (nothing
    written) when a reachable segment has shift >= 32; the caller then takes the checked path."""
    i_lo, i_hi = _reachable(s_start, bv_lo, bv_hi)
    j0 = i_lo - 1
    for j in range(j0, i_hi):
        if s_shift[j] >= 32:
            return False
    if i_hi - j0 <= 3:
        # up to three reachable segments (the usual case): one vectorisable pass, each value
        # computed for every candidate segment and the last one it lies above selected (with
        # one or two segments, only those are computed)
        ja, jb, jc = j0, min(j0 + 1, 15), min(j0 + 2, 15)
        xa, ya, sa, aa, ha, za = _seg_consts(s_start, s_mul, s_shift, s_add, ja)
        xb, yb, sb, ab, hb, zb = _seg_consts(s_start, s_mul, s_shift, s_add, jb)
        xc, yc, sc, ac, hc, zc = _seg_consts(s_start, s_mul, s_shift, s_add, jc)
        if i_hi - j0 == 1:  # one segment: no selection
            for p in range(u.shape[0]):
                bv = (((cv[p] + coff) * mul) >> bsh) + badd
                u[p] = min(max(_seg_value(bv, xa, ya, sa, aa, ha, za), 0), 255)
            return True
        if i_hi - j0 == 2:
            for p in range(u.shape[0]):
                bv = (((cv[p] + coff) * mul) >> bsh) + badd
                r = _seg_value(bv, xa, ya, sa, aa, ha, za)
                rb = _seg_value(bv, xb, yb, sb, ab, hb, zb)
                r = rb if bv > xb else r
                u[p] = min(max(r, 0), 255)
            return True
        for p in range(u.shape[0]):
            bv = (((cv[p] + coff) * mul) >> bsh) + badd
            r = _seg_value(bv, xa, ya, sa, aa, ha, za)
            rb = _seg_value(bv, xb, yb, sb, ab, hb, zb)
            rc = _seg_value(bv, xc, yc, sc, ac, hc, zc)
            r = rb if bv > xb else r
            r = rc if bv > xc else r
            u[p] = min(max(r, 0), 255)
        return True
    if i_hi - j0 <= 4:
        # few reachable segments: one vectorisable pass per segment with constant parameters, in
        # increasing order, each overwriting the values above its start (largest j with Bv > x_start[j])
        n = u.shape[0]
        for p in range(n):
            bvs[p] = (((cv[p] + coff) * mul) >> bsh) + badd
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
        bv = (((cv[p] + coff) * mul) >> bsh) + badd
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

I32 = np.int32
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


@numba.njit(cache=True, inline="always")
def _seg32_params(s_start, s_mul, s_shift, s_add, j):
    """Segment j for :func:`activate_i32`: (ok, hi, xs, ym, sh, h1, z, add). Only values with
    Bv > x_start[j] use segment j, so d = Bv − x_start >= 1; it is clamped at ``hi − xs``, the
    d from which the result saturates (|t| >= 2^sh·(256 + |add|) gives 0 or 255), so t = d·ym
    and the rounding carry stay inside i32. ok is False when x_start or the bound leave i32 or
    the shift is too large for that; y_mul = 0 (t = 0, the value is ``add``) is always ok."""
    xs, ym, sh, add = s_start[j], s_mul[j], s_shift[j], s_add[j]
    if ym == 0:  # d is clamped to 0 (an x_start outside i32 can only be segment j0's, never compared)
        xz = xs if I32_MIN <= xs <= I32_MAX else np.int64(0)
        return abs(add) < (1 << 20), xz, xz, np.int64(0), np.int64(0), np.int64(0), np.int64(0), add
    if sh < 0 or sh > 30 or abs(add) >= (1 << 20):
        return False, xs, xs, ym, sh, np.int64(0), np.int64(0), add
    span = (np.int64(1) << sh) * (256 + abs(add))
    hi = xs + (span + abs(ym) - 1) // abs(ym)
    ok = span + abs(ym) + (np.int64(1) << sh) < I32_MAX and xs >= I32_MIN and hi <= I32_MAX
    h1 = ((np.int64(1) << sh) >> 1) - 1 if sh > 0 else np.int64(0)
    z = np.int64(-1) if sh > 0 else np.int64(0)
    return ok, hi, xs, ym, sh, h1, z, add


@numba.njit(cache=True, inline="always")
def _seg32(bv, hi, xs, ym, sh, h1, z, add):
    """KROUND((Bv − xs)·ym, sh) + add in i32 (the branch-free carry of :func:`_seg_value`; the
    shift counts are masked so LLVM keeps them 32-bit)."""
    d = I32(min(max(bv, xs), hi) - xs)
    t = I32(d * ym)
    q = I32(t >> (sh & 31))
    up = I32((I32(I32(t + h1 + (q & 1)) >> (sh & 31)) - q) & z)
    m = I32(t >> 31)
    return I32(q + I32((up ^ m) - m) + add)


@numba.njit(cache=True, inline="always")
def _bv32(cv, coff, mh, ml, s, s16):
    """floor((cv + coff)·mul / 2^s) in i32 with mul = mh·2^s + ml (0 <= ml < 2^s, s <= 15): with
    C = Ch·2^16 + Cl it is C·mh + Ch·ml·2^(16−s) + (Cl·ml >> s), Cl·ml < 2^31 exact and the rest
    exact modulo 2^32, so the value is right whenever it fits i32."""
    c = I32(cv + coff)
    return I32(I32(c * mh) + I32(I32(I32(c >> 16) * ml) << (s16 & 31)) + I32(I32(I32(c & 0xFFFF) * ml) >> (s & 31)))


@numba.njit(cache=True)
def activate_i32(cv, coff, c_lo, c_hi, mul, bsh, badd, s_start, s_mul, s_shift, s_add, bv_lo, bv_hi, u):
    """:func:`activate_sorted` for i32 ``cv`` entirely in 32-bit lanes (eight values per AVX2
    instruction instead of emulated 64-bit multiplies and shifts), when every intermediate
    provably fits: C in [c_lo, c_hi] and Bv in [bv_lo, bv_hi] inside i32, BN shift <= 15, and the
    reachable segments: at most three, or the shape :func:`_i32_steps` accepts, each used one
    passing :func:`_seg32_params`. Returns False (nothing written) otherwise; the caller then
    takes the 64-bit path."""
    if not (I32_MIN <= c_lo and c_hi <= I32_MAX and I32_MIN < bv_lo and bv_hi < I32_MAX and 0 <= bsh <= 15
            and abs(mul) < (1 << 30) and I32_MIN <= coff <= I32_MAX and abs(badd) < (1 << 30)):
        return False
    i_lo, i_hi = _reachable(s_start, bv_lo, bv_hi)
    j0 = i_lo - 1
    tt = np.full(8, I32_MAX, np.int64)  # unused steps: Bv > 2^31 − 1 never holds
    vv = np.zeros(8, np.int64)
    if i_hi - j0 <= 3:  # j0 and the next ones, all sloped
        jb, jc, nlin, nst = min(j0 + 1, 15), min(j0 + 2, 15), i_hi - j0 - 1, 0
    else:  # e.g. ncc's ReLU6 tables: 14 short segments near the cap, each one value
        ok, jb, jc, nlin, nst = _i32_steps(s_start, s_mul, s_shift, s_add, bv_lo, bv_hi, j0, i_hi, tt, vv)
        if not ok:
            return False
    oka, ha, xa, ya, sa, h1a, za, aa = _seg32_params(s_start, s_mul, s_shift, s_add, j0)
    okb, hb, xb, yb, sb, h1b, zb, ab = _seg32_params(s_start, s_mul, s_shift, s_add, jb)
    okc, hc, xc, yc, sc, h1c, zc, ac = _seg32_params(s_start, s_mul, s_shift, s_add, jc)
    if not (oka and (nlin < 1 or okb) and (nlin < 2 or okc)):
        return False
    mh = mul >> bsh
    ml = mul - (mh << bsh)
    if nst == 0:
        _act32_loop(cv, I32(coff), I32(mh), I32(ml), I32(bsh), I32(16 - bsh), I32(badd), nlin + 1,
                    I32(ha), I32(xa), I32(ya), I32(sa), I32(h1a), I32(za), I32(aa),
                    I32(hb), I32(xb), I32(yb), I32(sb), I32(h1b), I32(zb), I32(ab),
                    I32(hc), I32(xc), I32(yc), I32(sc), I32(h1c), I32(zc), I32(ac), u)
        return True
    if nlin < 2:  # an unused sloped slot: Bv > 2^31 − 1 never selects it
        xc = I32_MAX
    if nlin < 1:
        xb = I32_MAX
    _act32_steps_loop(cv, I32(coff), I32(mh), I32(ml), I32(bsh), I32(16 - bsh), I32(badd),
                      I32(ha), I32(xa), I32(ya), I32(sa), I32(h1a), I32(za), I32(aa),
                      I32(hb), I32(xb), I32(yb), I32(sb), I32(h1b), I32(zb), I32(ab),
                      I32(hc), I32(xc), I32(yc), I32(sc), I32(h1c), I32(zc), I32(ac),
                      I32(tt[0]), I32(tt[1]), I32(tt[2]), I32(tt[3]), I32(tt[4]), I32(tt[5]), I32(tt[6]), I32(tt[7]),
                      I32(vv[0]), I32(vv[1]), I32(vv[2]), I32(vv[3]), I32(vv[4]), I32(vv[5]), I32(vv[6]), I32(vv[7]), u)
    return True


@numba.njit(cache=True)
def _seg_exact(s_start, s_mul, s_shift, s_add, j, bv):
    """U of ``bv`` in segment j (C.5 c, i64), for classifying segments."""
    r = kround((bv - s_start[j]) * s_mul[j], s_shift[j]) + s_add[j]
    return min(max(r, 0), 255)


@numba.njit(cache=True)
def _i32_steps(s_start, s_mul, s_shift, s_add, bv_lo, bv_hi, j0, i_hi, tt, vv):
    """Shape of more than three reachable segments j0..i_hi−1 for :func:`activate_i32`: segment
    j0, up to two more sloped ones, then up to eight *steps*: segments after the last sloped one
    whose value is one constant over their reachable Bv range (y_mul >= 0, so the value is
    monotone there and equal ends mean constant); equal neighbours merge. Fills the step starts
    ``tt`` and values ``vv``; returns (ok, sloped j b, sloped j c, sloped count, step count)."""
    lin = np.full(2, j0, np.int64)
    nlin = 0
    nst = 0
    for j in range(j0 + 1, i_hi):
        lo_b = max(s_start[j] + 1, bv_lo)
        hi_b = min(s_start[j + 1], bv_hi) if j + 1 < 16 else bv_hi
        if lo_b > hi_b:
            continue  # never the largest j with Bv > x_start[j] for a Bv of this channel
        v = _seg_exact(s_start, s_mul, s_shift, s_add, j, lo_b)
        if s_mul[j] >= 0 and v == _seg_exact(s_start, s_mul, s_shift, s_add, j, hi_b):
            if nst > 0 and vv[nst - 1] == v:
                continue
            if nst == 8:
                return False, j0, j0, nlin, nst
            tt[nst] = s_start[j]
            vv[nst] = v
            nst += 1
        else:
            if nst > 0 or nlin == 2:
                return False, j0, j0, nlin, nst
            lin[nlin] = j
            nlin += 1
    return True, lin[0], lin[1], nlin, nst


@numba.njit(cache=True)
def _act32_steps_loop(cv, c0, mh, ml, s, s16, bd, ha, xa, ya, sa, h1a, za, aa, hb, xb, yb, sb, h1b, zb, ab,
                      hc, xc, yc, sc, h1c, zc, ac, t0, t1, t2, t3, t4, t5, t6, t7, v0, v1, v2, v3, v4, v5, v6, v7, u):
    """Pixel loop of :func:`activate_i32` with steps (three sloped candidates, eight steps)."""
    for p in range(u.shape[0]):
        bv = I32(_bv32(cv[p], c0, mh, ml, s, s16) + bd)
        r = _seg32(bv, ha, xa, ya, sa, h1a, za, aa)
        rb = _seg32(bv, hb, xb, yb, sb, h1b, zb, ab)
        rc = _seg32(bv, hc, xc, yc, sc, h1c, zc, ac)
        r = rb if bv > xb else r
        r = rc if bv > xc else r
        r = v0 if bv > t0 else r
        r = v1 if bv > t1 else r
        r = v2 if bv > t2 else r
        r = v3 if bv > t3 else r
        r = v4 if bv > t4 else r
        r = v5 if bv > t5 else r
        r = v6 if bv > t6 else r
        r = v7 if bv > t7 else r
        u[p] = min(max(r, 0), 255)


@numba.njit(cache=True)
def _act32_loop(cv, c0, mh, ml, s, s16, bd, nseg, ha, xa, ya, sa, h1a, za, aa, hb, xb, yb, sb, h1b, zb, ab,
                hc, xc, yc, sc, h1c, zc, ac, u):
    """The pixel loops of :func:`activate_i32` (a function of its own so every parameter is typed
    i32: rebinding a name to a narrower type would widen it back to i64)."""
    n = u.shape[0]
    if nseg == 1:
        for p in range(n):
            bv = I32(_bv32(cv[p], c0, mh, ml, s, s16) + bd)
            u[p] = min(max(_seg32(bv, ha, xa, ya, sa, h1a, za, aa), 0), 255)
    elif nseg == 2:
        for p in range(n):
            bv = I32(_bv32(cv[p], c0, mh, ml, s, s16) + bd)
            r = _seg32(bv, ha, xa, ya, sa, h1a, za, aa)
            rb = _seg32(bv, hb, xb, yb, sb, h1b, zb, ab)
            r = rb if bv > xb else r
            u[p] = min(max(r, 0), 255)
    else:
        for p in range(n):
            bv = I32(_bv32(cv[p], c0, mh, ml, s, s16) + bd)
            r = _seg32(bv, ha, xa, ya, sa, h1a, za, aa)
            rb = _seg32(bv, hb, xb, yb, sb, h1b, zb, ab)
            rc = _seg32(bv, hc, xc, yc, sc, h1c, zc, ac)
            r = rb if bv > xb else r
            r = rc if bv > xc else r
            u[p] = min(max(r, 0), 255)

# ============================================================== pooling (C.6)
# pool_type -> stride (C.6)
POOL_STRIDE = (1, 2, 2, 4, 4, 2, 2, 4, 1, 1)


@numba.njit(cache=True)
def pool_plane(u, ih, iw, pool_type, dst):
    """Pool one channel ``u`` (flat ih*iw u8) into ``dst`` [OH, OW] (C.6)."""
    oh, ow = dst.shape
    if pool_type == 0:
        for y in range(oh):
            for x in range(ow):
                dst[y, x] = u[y * iw + x]
    elif pool_type == 1 or pool_type == 3:  # max_2_s2, max_4_s4
        s = 2 if pool_type == 1 else 4
        for y in range(oh):
            for x in range(ow):
                m = 0
                for ky in range(s):
                    row = (y * s + ky) * iw + x * s
                    for kx in range(s):
                        v = u[row + kx]
                        if v > m:
                            m = v
                dst[y, x] = m
    elif pool_type == 2 or pool_type == 4:  # mean_2_s2, mean_4_s4
        s = 2 if pool_type == 2 else 4
        for y in range(oh):
            for x in range(ow):
                acc = np.uint32(0)
                for ky in range(s):
                    row = (y * s + ky) * iw + x * s
                    for kx in range(s):
                        acc += np.uint32(u[row + kx])
                dst[y, x] = acc // np.uint32(s * s)
    elif pool_type == 5 or pool_type == 6 or pool_type == 7:  # left_top_2, right_top_2, left_top_4
        s = 4 if pool_type == 7 else 2
        dx = 1 if pool_type == 6 else 0
        for y in range(oh):
            for x in range(ow):
                dst[y, x] = u[(y * s) * iw + x * s + dx]
    elif pool_type == 8:  # mean_2_s1, edge replicated
        for y in range(oh):
            y1 = min(y + 1, ih - 1)
            for x in range(ow):
                x1 = min(x + 1, iw - 1)
                acc = (np.uint32(u[y * iw + x]) + np.uint32(u[y * iw + x1]) + np.uint32(u[y1 * iw + x])
                       + np.uint32(u[y1 * iw + x1]))
                dst[y, x] = acc // np.uint32(4)
    else:  # 9: max_2_s1, taps past the edge read as 0
        for y in range(oh):
            for x in range(ow):
                m = u[y * iw + x]
                if x + 1 < iw and u[y * iw + x + 1] > m:
                    m = u[y * iw + x + 1]
                if y + 1 < ih:
                    if u[(y + 1) * iw + x] > m:
                        m = u[(y + 1) * iw + x]
                    if x + 1 < iw and u[(y + 1) * iw + x + 1] > m:
                        m = u[(y + 1) * iw + x + 1]
                dst[y, x] = m


@numba.njit(cache=True)
def pool_c(cv, ih, iw, pool_type, use_min, dst):
    """Pool the pre-activation values C instead of U (flat ``dst`` of OH·OW): select pools take
    the same tap; max pools take the max (``use_min``: the min, when BN's multiplier is negative).
    Exact when the activation is monotone (C.6 max of a monotone function = function of the max)."""
    s = 4 if (pool_type == 3 or pool_type == 7) else (1 if pool_type == 9 else 2)
    oh, ow = ih // s, iw // s
    if pool_type >= 5 and pool_type <= 7:
        dx = 1 if pool_type == 6 else 0
        for y in range(oh):
            for x in range(ow):
                dst[y * ow + x] = cv[(y * s) * iw + x * s + dx]
        return
    if pool_type == 1 and not use_min:  # max_2_s2, the common case, unrolled
        for y in range(oh):
            r0 = (2 * y) * iw
            r1 = r0 + iw
            for x in range(ow):
                a = max(cv[r0 + 2 * x], cv[r0 + 2 * x + 1])
                b = max(cv[r1 + 2 * x], cv[r1 + 2 * x + 1])
                dst[y * ow + x] = max(a, b)
        return
    win = 2 if pool_type == 9 else s
    for y in range(oh):
        for x in range(ow):
            m = cv[(y * s) * iw + x * s]
            for ky in range(win):
                yy = y * s + ky
                if yy >= ih:
                    break
                for kx in range(win):
                    xx = x * s + kx
                    if xx >= iw:
                        break
                    v = cv[yy * iw + xx]
                    if use_min:
                        m = min(m, v)
                    else:
                        m = max(m, v)
            dst[y * ow + x] = m

# ============================================================== convolution and the layer (C.5 a)
# The sums of products run in float32. With x' = x − 128 and w' = w − 128 in [−128, 127] each
# product is an integer of magnitude <= 2^14, and with at most MAX_F32_TAPS taps every partial
# sum, in any order (fused or not, BLAS included), is an integer of magnitude <= 2^24: float32
# holds each exactly, so D = Σ x'·w' is the exact integer, at FMA and BLAS speed.
MAX_F32_TAPS = 1024


@numba.njit(cache=True)
def _pad_center(x, n, ram, ram_src, zp, pad, xp):
    """xp[c] (f32) = x'[c] = x[n, c] − 128 with a ``pad``-wide border of Zp − 128; with
    ``ram_src >= 0`` (one batch) the input is read from KPU RAM ``ram`` at that byte instead
    (C.3 layout, as kpu.layout.kpu_download; bounds checked by the caller)."""
    ic, ph, pw = xp.shape
    ih, iw = ph - 2 * pad, pw - 2 * pad
    g, l, p = _row_layout(iw)
    line = l * 64
    pv = np.float32(zp - 128)
    for c in range(ic):
        base = ram_src + (c // g) * (line * ih) + (c % g) * p
        for yy in range(ph):
            dst = xp[c, yy]
            y = yy - pad
            if y < 0 or y >= ih:
                dst[:] = pv
                continue
            for xx in range(pad):
                dst[xx] = pv
                dst[pw - 1 - xx] = pv
            if ram_src >= 0:
                src = ram[base + y * line : base + y * line + iw]
            else:
                src = x[n, c, y]
            for xq in range(iw):
                dst[xq + pad] = np.float32(np.int32(src[xq]) - 128)


@numba.njit(cache=True)
def _box_sum(plane, k, ih, iw, out):
    """out[y*iw+x] (i32) = Σ_{ky,kx<k} plane[y+ky, x+kx], row by row so the x loop vectorises."""
    for y in range(ih):
        row = out[y * iw : (y + 1) * iw]
        if k == 3:
            a = plane[y]
            b = plane[y + 1]
            d = plane[y + 2]
            for x in range(iw):
                row[x] = np.int32(a[x] + a[x + 1] + a[x + 2] + b[x] + b[x + 1] + b[x + 2] + d[x] + d[x + 1]
                                  + d[x + 2])
        else:
            for x in range(iw):
                s = np.float32(0)
                for ky in range(k):
                    for kx in range(k):
                        s += plane[y + ky, x + kx]
                row[x] = np.int32(s)


@numba.njit(cache=True, inline="always")
def _ax_sx(sxc, ax, sx, taps, axsx):
    """axsx[p] = asr(ax·Sx, sx) with Sx = Σx' + 128·T, when sx != 0 (else C takes ax·Sx directly)."""
    if sx != 0:
        for p in range(sxc.shape[0]):
            axsx[p] = (ax * (np.int64(sxc[p]) + 128 * taps)) >> sx


@numba.njit(cache=True)
def _sum_x(xp, k, ax, sx, taps, cs, sxc, axsx):
    """Σx' over the taps of every output position, all input channels (``cs`` a [PH, PW] f32
    work plane), and asr(ax·Sx, sx) with Sx = Σx' + 128·T when sx != 0."""
    ic, ph, pw = xp.shape
    pad = (k - 1) // 2
    ih, iw = ph - 2 * pad, pw - 2 * pad
    cs[:, :] = 0
    for c in range(ic):
        for yy in range(ph):
            dst = cs[yy]
            src = xp[c, yy]
            for xx in range(pw):
                dst[xx] += src[xx]
    _box_sum(cs, k, ih, iw, sxc)
    _ax_sx(sxc, ax, sx, taps, axsx)


@numba.njit(cache=True)
def _conv_rows(xp, c0, c1, wrow, k, ih, iw, acc):
    """acc[y*iw+x] = Σ_{c0<=c<c1} Σ_{ky,kx} w'[(c−c0)·k²+ky·k+kx] · xp[c, y+ky, x+kx] (f32).
    One output row at a time, so the accumulator row stays in L1."""
    kk = k * k
    for y in range(ih):
        row = acc[y * iw : (y + 1) * iw]
        row[:] = 0
        for c in range(c0, c1):
            woff = (c - c0) * kk
            for ky in range(k):
                src = xp[c, y + ky]
                for kx in range(k):
                    wv = wrow[woff + ky * k + kx]
                    for x in range(iw):
                        row[x] += wv * src[x + kx]


@numba.njit(cache=True)
def _conv3_rows(xp, c0, c1, wrow, ih, iw, acc):
    """3×3 form of :func:`_conv_rows`: the nine taps of a channel are summed in registers, so each
    output row is loaded and stored once per input channel."""
    for y in range(ih):
        row = acc[y * iw : (y + 1) * iw]
        row[:] = 0
        for c in range(c0, c1):
            o = (c - c0) * 9
            w0, w1, w2, w3, w4 = wrow[o], wrow[o + 1], wrow[o + 2], wrow[o + 3], wrow[o + 4]
            w5, w6, w7, w8 = wrow[o + 5], wrow[o + 6], wrow[o + 7], wrow[o + 8]
            a = xp[c, y]
            b = xp[c, y + 1]
            d = xp[c, y + 2]
            for x in range(iw):
                row[x] += (w0 * a[x] + w1 * a[x + 1] + w2 * a[x + 2] + w3 * b[x] + w4 * b[x + 1] + w5 * b[x + 2]
                           + w6 * d[x] + w7 * d[x + 1] + w8 * d[x + 2])


DW_FLAT_MAX_W = 24  # measured: depthwise 3×3 layers up to this width are faster in the flat form


@numba.njit(cache=True, inline="always")
def _dw3_flat(plane, wrow, ih, iw, fl, acc, sxc):
    """Depthwise 3×3 channel: D (``acc``) and Σx' (``sxc``) of every output pixel, computed on the
    padded plane read as one flat row of pitch pw (position y·pw + x; the two x >= iw columns are
    junk, dropped when copying to ``acc``/``sxc``), so the loops are long and vectorise even for
    narrow images where a row-by-row loop of 5..20 pixels does not. The three tap rows are views
    so every index is a loop counter plus a constant. ``fl``: 2·ih·pw f32 work."""
    ph, pw = plane.shape
    f = plane.reshape(ph * pw)
    n = (ih - 1) * pw + iw
    w0, w1, w2, w3, w4 = wrow[0], wrow[1], wrow[2], wrow[3], wrow[4]
    w5, w6, w7, w8 = wrow[5], wrow[6], wrow[7], wrow[8]
    m = fl.shape[0] // 2
    fa = fl[:m]
    fs = fl[m:]
    r0 = f[0:]
    r1 = f[pw:]
    r2 = f[2 * pw:]
    for p in range(n):
        fa[p] = (w0 * r0[p] + w1 * r0[p + 1] + w2 * r0[p + 2] + w3 * r1[p] + w4 * r1[p + 1] + w5 * r1[p + 2]
                 + w6 * r2[p] + w7 * r2[p + 1] + w8 * r2[p + 2])
        fs[p] = (r0[p] + r0[p + 1] + r0[p + 2] + r1[p] + r1[p + 1] + r1[p + 2] + r2[p] + r2[p + 1] + r2[p + 2])
    for y in range(ih):
        for x in range(iw):
            acc[y * iw + x] = fa[y * pw + x]
            sxc[y * iw + x] = np.int32(fs[y * pw + x])


@numba.njit(cache=True, inline="always")
def _c_values32(acc, sxc, sx_mul, cv):
    """cv[p] = D + sx_mul·Σx' in i32 (D = acc[p], an exact integer in f32 or i32), the caller
    having checked it cannot overflow; returns (min, max). C is cv[p] + a per-channel constant,
    added at the activation: i32 halves the memory traffic and doubles the vector width of this
    pass and of the pool before activation."""
    lo = np.int32(np.iinfo(np.int32).max)
    hi = np.int32(np.iinfo(np.int32).min)
    m = np.int32(sx_mul)
    for p in range(cv.shape[0]):
        v = np.int32(np.int32(acc[p]) + m * sxc[p])
        cv[p] = v
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


@numba.njit(cache=True)
def _c_values(acc, sxc, axsx, sx_mul, const, use_axsx, cv):
    """cv[p] = D + sx_mul·Σx' (+ asr(ax·Sx, sx)) + const, the i64 conv result C; returns (min, max)."""
    lo = np.int64(np.iinfo(np.int64).max)
    hi = np.int64(np.iinfo(np.int64).min)
    for p in range(cv.shape[0]):
        v = np.int64(acc[p]) + sx_mul * np.int64(sxc[p]) + const
        if use_axsx:
            v += axsx[p]
        cv[p] = v
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


@numba.njit(cache=True)
def _act_setup(s_start, s_shift):
    """(sorted_starts, min_start, s_mask, s_half) of an activation table, for :func:`_finish`."""
    sorted_starts = True
    min_start = s_start[0]
    for j in range(1, 16):
        if s_start[j] < s_start[j - 1]:
            sorted_starts = False
        min_start = min(min_start, s_start[j])
    s_mask = np.zeros(16, np.int64)
    s_half = np.ones(16, np.int64)
    for j in range(16):
        if 0 < s_shift[j] < 32:
            s_mask[j] = (np.int64(1) << s_shift[j]) - 1
            s_half[j] = np.int64(1) << (s_shift[j] - 1)
    return sorted_starts, min_start, s_mask, s_half


@numba.njit(cache=True)
def _scratch(npix, opix, nflat):
    """Per-channel work arrays: acc (f32 D), cv (i64 C), bvs (i64 Bv), pooled (i64), u (u8 U),
    flat (f32, 2·nflat: D and Σx' of a depthwise 3×3 channel over padded-width rows)."""
    return (np.empty(npix, np.float32), np.empty(npix, np.int64), np.empty(npix, np.int64),
            np.empty(opix, np.int64), np.empty(npix, np.uint8), np.empty(2 * nflat, np.float32))


@numba.njit(cache=True)
def _channel_out(acc, sxc, axsx, o, n, ih, iw, taps, gic, ax, sx, aw, sw, aadd, swc, tb, pool_type, pool_first,
                 out, cv, bvs, pooled, u, act):
    """Output channel ``o`` of batch ``n`` from its D = Σx'·w' (``acc``, f32 or i32) and the
    Σx' of its positions: C (C.5 a), batch norm, activation and pool into out[n, o]. ``tb`` the
    (bn_mul, bn_shift, bn_add, s_shift, s_mul, s_start, s_add) tables, ``act`` from
    :func:`_act_setup`. Returns the error (ERR_NONE if none)."""
    bn_mul, bn_shift, bn_add, s_shift, s_mul, s_start, s_add = tb
    sorted_starts, min_start, s_mask, s_half = act
    npix = ih * iw
    if npix == 0:
        return ERR_NONE
    # C = Sxw + asr(ax·Sx, sx) + asr(aw·Sw, sw) + aadd·g_ic, with Sxw = D + 128·Σx' + 128·Σw' + 16384·T
    const = 128 * swc[o] + 16384 * taps + ((aw * (swc[o] + 128 * taps)) >> sw) + aadd * gic
    # D + (128 + ax)·Σx' fits i32 when T·128² + |128 + ax|·T·128 < 2^31 (|x'|, |w'| <= 128)
    if sx == 0 and taps * 16384 + abs(128 + ax) * taps * 128 < (1 << 31) - 1:
        cv32 = cv.view(np.int32)[:npix]
        pooled32 = pooled.view(np.int32)[: pooled.shape[0]]
        c_lo32, c_hi32 = _c_values32(acc, sxc, 128 + ax, cv32)
        coff = const + ax * 128 * taps  # asr(ax·Sx, 0) = ax·Σx' + ax·128·T
        return _finish(cv32, coff, np.int64(c_lo32) + coff, np.int64(c_hi32) + coff, o, n, ih, iw, bn_mul,
                       bn_shift, bn_add, s_shift, s_mul, s_start, s_add, pool_type, pool_first, out, bvs,
                       pooled32, u, sorted_starts, min_start, s_mask, s_half)
    if sx == 0:
        c_lo, c_hi = _c_values(acc, sxc, axsx, 128 + ax, const + ax * 128 * taps, False, cv)
    else:
        c_lo, c_hi = _c_values(acc, sxc, axsx, 128, const, True, cv)
    return _finish(cv, np.int64(0), c_lo, c_hi, o, n, ih, iw, bn_mul, bn_shift, bn_add, s_shift, s_mul,
                   s_start, s_add, pool_type, pool_first, out, bvs, pooled, u, sorted_starts, min_start,
                   s_mask, s_half)


@numba.njit(cache=True)
def _channels(xp, wf, swc, dw, k, ax, sx, aw, sw, aadd, tb, pool_type, pool_first, out, n, o_a, o_b,
              sxc, axsx, acc, cv, bvs, pooled, u, fl, act):
    """Output channels ``o_a <= o < o_b`` of batch ``n`` of a direct (non-GEMM) layer: the
    convolution from the padded plane ``xp`` (depthwise, or 3×3 over few input channels), then
    :func:`_channel_out`. ``sxc``/``axsx`` hold Σx' already unless depthwise (then per channel).
    Returns the last error (ERR_NONE if none)."""
    err = ERR_NONE
    ic, ph, pw = xp.shape
    pad = (k - 1) // 2
    ih, iw = ph - 2 * pad, pw - 2 * pad
    gic = 1 if dw else ic
    taps = np.int64(gic * k * k)
    for o in range(o_a, o_b):
        wrow = wf[o]
        if dw:
            if k == 3 and iw <= DW_FLAT_MAX_W:
                _dw3_flat(xp[o], wrow, ih, iw, fl, acc, sxc)
            else:
                if k == 3:
                    _conv3_rows(xp, o, o + 1, wrow, ih, iw, acc)
                else:
                    _conv_rows(xp, o, o + 1, wrow, k, ih, iw, acc)
                _box_sum(xp[o], k, ih, iw, sxc)
            _ax_sx(sxc, ax, sx, taps, axsx)
        elif k == 3:
            _conv3_rows(xp, 0, ic, wrow, ih, iw, acc)
        else:
            _conv_rows(xp, 0, ic, wrow, k, ih, iw, acc)
        e = _channel_out(acc, sxc, axsx, o, n, ih, iw, taps, gic, ax, sx, aw, sw, aadd, swc, tb, pool_type,
                         pool_first, out, cv, bvs, pooled, u, act)
        if e != ERR_NONE:
            err = e
    return err


@numba.njit(cache=True, parallel=True)
def _channels_parallel(nth, xp, wf, swc, dw, k, ax, sx, aw, sw, aadd, tb, pool_type, pool_first, out, n,
                       sxc, axsx, act, errs):
    """:func:`_channels` over ``nth`` contiguous blocks of output channels, one per thread, each
    with its own work arrays (a depthwise layer's Σx' is per channel, so per thread too). The
    channels are independent, so the result does not depend on ``nth``."""
    oc = wf.shape[0]
    npix = sxc.shape[0]
    ih = xp.shape[1] - (k - 1)
    iw = xp.shape[2] - (k - 1)
    for t in numba.prange(nth):
        o_a = (oc * t) // nth
        o_b = (oc * (t + 1)) // nth
        acc, cv, bvs, pooled, u, fl = _scratch(npix, out.shape[2] * out.shape[3],
                                             ih * xp.shape[2] if dw and k == 3 and iw <= DW_FLAT_MAX_W else 0)
        if dw:
            sxc_t = np.empty(npix, np.int32)
            axsx_t = np.empty(axsx.shape[0], np.int64)
        else:
            sxc_t = sxc
            axsx_t = axsx
        errs[t] = _channels(xp, wf, swc, dw, k, ax, sx, aw, sw, aadd, tb, pool_type, pool_first, out, n, o_a, o_b,
                            sxc_t, axsx_t, acc, cv, bvs, pooled, u, fl, act)


@numba.njit(cache=True)
def kpu_layer(x, ram, ram_src, wf, swc, dw, k, zp, ax, sx, aw, sw, aadd, tb, pool_type, pool_first, out,
              n_chunks):
    """One direct KPU layer (depthwise, or 3×3 over few input channels) over all batches. ``x``
    u8 [N, IC, IH, IW]; ``wf`` centered f32 weights [OC, taps]; ``swc`` Σw' per channel; ``out``
    u8 [N, OC, OH, OW]. ``pool_first``: the pool may run on C before the activation (select
    pools, or max pools with a monotone activation). With ``ram_src >= 0`` (one batch only) the
    input is read from KPU RAM ``ram`` at byte ``ram_src`` instead, ``x`` giving only the shape.
    Returns ERR_NONE, or ERR_NO_SEGMENT / ERR_SHIFT where ncc's behaviour is undefined."""
    n_b, ic, ih, iw = x.shape
    oc = wf.shape[0]
    pad = (k - 1) // 2
    ph, pw = ih + 2 * pad, iw + 2 * pad
    npix = ih * iw
    taps = np.int64((1 if dw else ic) * k * k)
    xp = np.empty((ic, ph, pw), np.float32)
    sxc = np.empty(npix, np.int32)  # Σx' over the taps of each position
    axsx = np.empty(npix if sx != 0 else 0, np.int64)  # asr(ax·Sx, sx), needed when sx != 0
    cs = np.empty((ph, pw), np.float32)
    act = _act_setup(tb[5], tb[3])
    err = ERR_NONE
    nth = max(1, min(n_chunks, oc))
    errs = np.zeros(nth, np.int64)
    flat = nth == 1 and dw and k == 3 and iw <= DW_FLAT_MAX_W
    acc, cv, bvs, pooled, u, fl = _scratch(npix if nth == 1 else 0, out.shape[2] * out.shape[3] if nth == 1 else 0,
                                         ih * pw if flat else 0)
    for n in range(n_b):
        _pad_center(x, n, ram, ram_src, zp, pad, xp)
        if not dw:
            _sum_x(xp, k, ax, sx, taps, cs, sxc, axsx)
        if nth == 1:
            errs[0] = _channels(xp, wf, swc, dw, k, ax, sx, aw, sw, aadd, tb, pool_type, pool_first, out, n, 0, oc,
                                sxc, axsx, acc, cv, bvs, pooled, u, fl, act)
        else:
            _channels_parallel(nth, xp, wf, swc, dw, k, ax, sx, aw, sw, aadd, tb, pool_type, pool_first, out, n,
                               sxc, axsx, act, errs)
        for t in range(nth):  # the last channel's error, as a channel-by-channel loop would keep
            if errs[t] != ERR_NONE:
                err = errs[t]
    return err


@numba.njit(cache=True)
def gemm_input(x, n, ram, ram_src, k, zp, ax, sx, xp, cs, sxc, axsx):
    """First half of a GEMM layer (non-depthwise): the centered, padded input plane ``xp`` of
    batch ``n`` (from x, or KPU RAM as in :func:`kpu_layer`) and its Σx' per output position.
    D = W'·X (X = ``xp`` as [IC, IH·IW] for k = 1, else the im2col rows of :func:`im2col_rows`)
    is then computed by BLAS in float32, exact as said above."""
    ic = xp.shape[0]
    _pad_center(x, n, ram, ram_src, zp, (k - 1) // 2, xp)
    _sum_x(xp, k, ax, sx, np.int64(ic * k * k), cs, sxc, axsx)


@numba.njit(cache=True)
def im2col_rows(xp, k, y0, y1, cols):
    """cols[(c·k+ky)·k+kx, (y−y0)·iw+x] = xp[c, y+ky, x+kx] for output rows y0 <= y < y1."""
    ic = xp.shape[0]
    iw = xp.shape[2] - (k - 1)
    for c in range(ic):
        for ky in range(k):
            for kx in range(k):
                r = cols[(c * k + ky) * k + kx]
                for y in range(y0, y1):
                    src = xp[c, y + ky]
                    dst = r[(y - y0) * iw : (y - y0 + 1) * iw]
                    for x in range(iw):
                        dst[x] = src[x + kx]


@numba.njit(cache=True)
def gemm_finish(d, sxc, axsx, n, ic, ih, iw, k, ax, sx, aw, sw, aadd, swc, tb, pool_type, pool_first, out):
    """Second half of a GEMM layer: every output channel of batch ``n`` from D = ``d`` [OC, IH·IW]
    (f32, or i32 when summed in chunks), see :func:`_channel_out`; returns the last error."""
    acc, cv, bvs, pooled, u, fl = _scratch(ih * iw, out.shape[2] * out.shape[3], 0)
    act = _act_setup(tb[5], tb[3])
    taps = np.int64(ic * k * k)
    err = ERR_NONE
    for o in range(d.shape[0]):
        e = _channel_out(d[o], sxc, axsx, o, n, ih, iw, taps, np.int64(ic), ax, sx, aw, sw, aadd, swc, tb,
                         pool_type, pool_first, out, cv, bvs, pooled, u, act)
        if e != ERR_NONE:
            err = e
    return err


@numba.njit(cache=True, inline="always")
def _finish(cv, coff, c_lo, c_hi, o, n, ih, iw, bn_mul, bn_shift, bn_add, s_shift, s_mul, s_start, s_add,
            pool_type, pool_first, out, bvs, pooled, u, sorted_starts, min_start, s_mask, s_half):
    """Batch norm, activation and pool of output channel ``o`` from C = cv[p] + coff (cv i64, or
    i32 with the channel's constant in ``coff``), C in [c_lo, c_hi], into out[n, o]; returns the
    error. ``pooled`` has cv's dtype."""
    oh, ow = out.shape[2], out.shape[3]
    err = ERR_NONE
    mul, bsh, badd = bn_mul[o], bn_shift[o], bn_add[o]
    b1 = ((c_lo * mul) >> bsh) + badd
    b2 = ((c_hi * mul) >> bsh) + badd
    bv_lo, bv_hi = min(b1, b2), max(b1, b2)  # Bv is monotone in C
    safe = bv_lo > min_start  # every value has a segment
    pooled_first = pool_first and safe
    flat_out = out[n, o].reshape(oh * ow)
    if pooled_first:  # max/min/select of cv + coff = that of cv, + coff
        pool_c(cv, ih, iw, pool_type, mul < 0, pooled)
        src, dst = pooled, flat_out
    elif pool_type == 0:
        src, dst = cv, flat_out
    else:
        src, dst = cv, u
    done = False
    if sorted_starts and safe:
        done = activate_i32(src, coff, c_lo, c_hi, mul, bsh, badd, s_start, s_mul, s_shift, s_add, bv_lo, bv_hi,
                            dst)
    if sorted_starts and safe and not done:
        done = activate_sorted(src, coff, mul, bsh, badd, s_start, s_mul, s_shift, s_add, bv_lo, bv_hi, bvs,
                               dst)
    if not done:
        err = activate(src, coff, mul, bsh, badd, s_start, s_mul, s_shift, s_mask, s_half, s_add,
                       sorted_starts, dst)
    if not pooled_first and pool_type != 0:
        pool_plane(u, ih, iw, pool_type, out[n, o])
    return err


# ============================================================== KPU RAM in and out (C.3)

@numba.njit(cache=True, inline="always")
def _row_layout(w):
    """(groups G, row_len L in 64-byte lines, row_pitch P) for width ``w`` (as kpu.layout.row_layout)."""
    if w <= 16:
        return 4, 1, 16
    if w <= 32:
        return 2, 1, 32
    return 1, (w + 63) // 64, 64


@numba.njit(cache=True)
def ram_download(ram, start, x):
    """x[n, c, y, :] = the tensor's elements in KPU RAM at byte ``start`` (C.3; the same bytes as
    kpu.layout.kpu_download, bounds checked by the caller)."""
    n_b, c_n, h, w = x.shape
    g, l, p = _row_layout(w)
    line = l * 64
    s = line * h * ((c_n + g - 1) // g)
    for n in range(n_b):
        for c in range(c_n):
            base = start + n * s + (c // g) * (line * h) + (c % g) * p
            for y in range(h):
                r = base + y * line
                for i in range(w):
                    x[n, c, y, i] = ram[r + i]


@numba.njit(cache=True)
def ram_upload(ram, start, x):
    """Store x u8 [N, C, H, W] into KPU RAM at byte ``start``, element positions only (C.3; as
    kpu.layout.kpu_upload, bounds checked by the caller)."""
    n_b, c_n, h, w = x.shape
    g, l, p = _row_layout(w)
    line = l * 64
    s = line * h * ((c_n + g - 1) // g)
    for n in range(n_b):
        for c in range(c_n):
            base = start + n * s + (c // g) * (line * h) + (c % g) * p
            for y in range(h):
                r = base + y * line
                for i in range(w):
                    ram[r + i] = x[n, c, y, i]
