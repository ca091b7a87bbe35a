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
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def _borrow(typingctx, arr):
    """A view of ``arr`` without a reference count (meminfo NULL), so that the views and calls
    made from it in per-channel loops skip numba's atomic incref/decref pairs (a few per call,
    per view). Only for arrays the Python caller owns for the whole call: the kernels' arguments."""
    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, value=args[0])
        dst = context.make_array(sig.return_type)(context, builder)
        cgutils.copy_struct(dst, src, {"meminfo": cgutils.get_null_value(src.meminfo.type)})
        return dst._getvalue()

    return arr(arr), codegen

# ============================================================== activation (C.5 b, c)
ERR_NONE, ERR_NO_SEGMENT, ERR_SHIFT = 0, 1, 2
# Rows of a segment table ``seg`` [6, 16] (i64): the 16 activation segments as the kernels read
# them, plus each shift's rounding mask 2^s−1 and half 2^(s−1) (1 for s = 0 or s >= 32).
SEG_START, SEG_MUL, SEG_SHIFT, SEG_ADD, SEG_MASK, SEG_HALF = range(6)


def segment_table(shift_number, y_mul, x_start, add) -> np.ndarray:
    """The [6, 16] i64 segment table of an activation (rows SEG_*)."""
    seg = np.zeros((6, 16), np.int64)
    for row, v in ((SEG_START, x_start), (SEG_MUL, y_mul), (SEG_SHIFT, shift_number), (SEG_ADD, add)):
        seg[row] = np.asarray(v, dtype=np.int64)
    sh = seg[SEG_SHIFT]
    used = (sh > 0) & (sh < 32)
    seg[SEG_MASK] = np.where(used, (np.int64(1) << np.where(used, sh, 0)) - 1, 0)
    seg[SEG_HALF] = np.where(used, np.int64(1) << np.where(used, sh - 1, 0), 1)
    return seg


@numba.njit(cache=True, nogil=True)
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


@numba.njit(cache=True, nogil=True)
def activate(cv, coff, mul, bsh, badd, seg, sorted_starts, u):
    """u[p] = activation of batch norm of C = cv[p] + coff, for one output channel (C.5 b, c);
    ``seg`` a :func:`segment_table`. With non-decreasing x_start the segment is found branch-free
    by counting (the same result as the strict-``>`` scan from 15 down); otherwise by the scan
    itself."""
    err = ERR_NONE
    s_start = seg[SEG_START]
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
        sh = seg[SEG_SHIFT, j]
        if sh >= 32:
            err = ERR_SHIFT
            u[p] = 0
            continue
        t = (bv - s_start[j]) * seg[SEG_MUL, j]
        q = t >> sh
        f = t & seg[SEG_MASK, j]
        h = seg[SEG_HALF, j]
        up = (f > h) | ((f == h) & ((q & 1) == 1))
        r = q + seg[SEG_ADD, j]
        if up:
            r += -1 if t < 0 else 1
        u[p] = 0 if r < 0 else (255 if r > 255 else r)
    return err


@numba.njit(cache=True, inline="always")
def _seg_consts(seg, j):
    """(x_start, y_mul, shift, add, h−1, nonzero-shift mask) of segment j, for :func:`_seg_value`."""
    sh = seg[SEG_SHIFT, j]
    h1 = ((np.int64(1) << sh) >> 1) - 1 if sh > 0 else np.int64(0)
    z = np.int64(-1) if sh > 0 else np.int64(0)
    return seg[SEG_START, j], seg[SEG_MUL, j], sh, seg[SEG_ADD, j], h1, z


@numba.njit(cache=True, inline="always")
def _seg_value(bv, xs, ym, sh, add, h1, z):
    """KROUND((bv − xs)·ym, sh) + add, branch-free (see :func:`activate_sorted`), before the clamp."""
    t = (bv - xs) * ym
    q = t >> sh
    up = (((t + h1 + (q & 1)) >> sh) - q) & z
    m = t >> 63
    return q + ((up ^ m) - m) + add


@numba.njit(cache=True, inline="always")
def _reachable(seg, bv_lo, bv_hi):
    """(i_lo, i_hi) for sorted x_start and Bv in [bv_lo, bv_hi], bv_lo > x_start[0]: segments
    1..i_lo−1 lie below bv_lo (the values start in segment i_lo − 1), segments from i_hi on at or
    above bv_hi (never used)."""
    i_lo = 1
    while i_lo < 16 and seg[SEG_START, i_lo] < bv_lo:
        i_lo += 1
    i_hi = i_lo
    while i_hi < 16 and seg[SEG_START, i_hi] < bv_hi:
        i_hi += 1
    return i_lo, i_hi


@numba.njit(cache=True, nogil=True)
def activate_sorted(cv, coff, mul, bsh, badd, seg, bv_lo, bv_hi, bvs, u):
    """Fast form of :func:`activate` (C = cv[p] + coff) for non-decreasing x_start when every Bv of the channel lies
    in [bv_lo, bv_hi] with bv_lo > x_start[0]: segments entirely below bv_lo always count, those at
    or above bv_hi never do, so only the few in between are compared (ncc tables park unused
    segments at 2^35−2). KROUND is branch-free: up = ((t + h − 1 + (q & 1)) >> s) − q is the
    round-half-even carry, applied towards −∞ for t < 0 (the quirk). Returns False (nothing
    written) when a reachable segment has shift >= 32; the caller then takes the checked path."""
    i_lo, i_hi = _reachable(seg, bv_lo, bv_hi)
    j0 = i_lo - 1
    for j in range(j0, i_hi):
        if seg[SEG_SHIFT, j] >= 32:
            return False
    if i_hi - j0 <= 3:
        # up to three reachable segments (the usual case): one vectorisable pass, each value
        # computed for every candidate segment and the last one it lies above selected (with
        # one or two segments, only those are computed)
        ja, jb, jc = j0, min(j0 + 1, 15), min(j0 + 2, 15)
        xa, ya, sa, aa, ha, za = _seg_consts(seg, ja)
        xb, yb, sb, ab, hb, zb = _seg_consts(seg, jb)
        xc, yc, sc, ac, hc, zc = _seg_consts(seg, jc)
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
            xs, ym, sh, add, h1, z = _seg_consts(seg, j)
            first = j == j0
            for p in range(n):
                bv = bvs[p]
                r = min(max(_seg_value(bv, xs, ym, sh, add, h1, z), 0), 255)
                if first or bv > xs:
                    u[p] = r
        return True
    for p in range(u.shape[0]):
        bv = (((cv[p] + coff) * mul) >> bsh) + badd
        j = j0
        for i in range(i_lo, i_hi):
            j += bv > seg[SEG_START, i]
        xs, ym, sh, add, h1, z = _seg_consts(seg, j)
        u[p] = min(max(_seg_value(bv, xs, ym, sh, add, h1, z), 0), 255)
    return True

I32 = np.int32
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
# A channel's 32-bit activation *program*: one row of an i64 table [OC, PROG_ROWS] holding all
# that :func:`run_program` needs (C offset, batch norm split for i32, up to three formulas of seven
# values each, eight steps). :func:`i32_program` writes it; a layer's programs are written once
# from every channel's exact C bounds (:func:`layer_programs`) or, failing that, per run.
PR_OK, PR_COFF, PR_MH, PR_ML, PR_BSH, PR_BADD, PR_NLIN, PR_NST = range(8)
PR_FORMULA = 8  # formulas a, b, c: rows PR_FORMULA + 7·i .. + 7·i + 6 = (hi, xs, ym, sh, h1, z, add)
PR_STEP = PR_FORMULA + 21  # 8 step starts, then their 8 values
PROG_ROWS = PR_STEP + 16


@numba.njit(cache=True, nogil=True)
def program_table(oc):
    """An empty (nothing ok) program table for ``oc`` channels."""
    return np.zeros((oc, PROG_ROWS), np.int64)


@numba.njit(cache=True, inline="always")
def _seg32_params(seg, j):
    """Segment j for the 32-bit activation: (ok, hi, xs, ym, sh, h1, z, add). Only values with
    Bv > x_start[j] use segment j, so d = Bv − x_start >= 1; it is clamped at ``hi − xs``, the
    d from which the result saturates (|t| >= 2^sh·(256 + |add|) gives 0 or 255), so t = d·ym
    and the rounding carry stay inside i32. ok is False when x_start or the bound leave i32 or
    the shift is too large for that; y_mul = 0 (t = 0, the value is ``add``) is always ok."""
    xs, ym, sh, add = seg[SEG_START, j], seg[SEG_MUL, j], seg[SEG_SHIFT, j], seg[SEG_ADD, j]
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
def _seg32(bv, f):
    """KROUND((Bv − xs)·ym, sh) + add in i32 for a formula f = (hi, xs, ym, sh, h1, z, add) of
    :func:`_seg32_params` (the branch-free carry of :func:`_seg_value`; the shift counts are
    masked so LLVM keeps them 32-bit)."""
    hi, xs, ym, sh, h1, z, add = f
    d = I32(min(max(bv, xs), hi) - xs)
    t = I32(d * ym)
    q = I32(t >> (sh & 31))
    up = I32((I32(I32(t + h1 + (q & 1)) >> (sh & 31)) - q) & z)
    m = I32(t >> 31)
    return I32(q + I32((up ^ m) - m) + add)


@numba.njit(cache=True, inline="always")
def _bv32(cv, bn):
    """Bv = floor((cv + coff)·mul / 2^s) + badd in i32 for bn = (coff, mh, ml, s, 16 − s, badd),
    mul = mh·2^s + ml (0 <= ml < 2^s, s <= 15): with C = Ch·2^16 + Cl the product is C·mh +
    Ch·ml·2^(16−s) + (Cl·ml >> s), Cl·ml < 2^31 exact and the rest exact modulo 2^32, so the value
    is right whenever it fits i32. ``cv`` may be an exact integer held in f32 (a conv sum D)."""
    coff, mh, ml, s, s16, badd = bn
    c = I32(I32(cv) + coff)
    return I32(I32(c * mh) + I32(I32(I32(c >> 16) * ml) << (s16 & 31)) + I32(I32(I32(c & 0xFFFF) * ml) >> (s & 31))
               + badd)


@numba.njit(cache=True, nogil=True)
def i32_program(coff, c_lo, c_hi, mul, bsh, badd, seg, bv_lo, bv_hi, tv, prog, o):
    """Write channel ``o``'s program into ``prog`` for C = cv + ``coff`` in [c_lo, c_hi] (Bv in
    [bv_lo, bv_hi], above x_start[0], x_start non-decreasing) when every intermediate provably
    fits 32 bits: C and Bv inside i32, BN shift <= 15, and the reachable segments the pieces
    :func:`_i32_pieces` makes of them (or at most three, all taken as sloped), each formula used
    passing :func:`_seg32_params`. Returns whether it did (PR_OK); ``tv`` a 16-entry work array."""
    prog[o, PR_OK] = 0
    if not (I32_MIN <= c_lo and c_hi <= I32_MAX and I32_MIN < bv_lo and bv_hi < I32_MAX and 0 <= bsh <= 15
            and abs(mul) < (1 << 30) and I32_MIN <= coff <= I32_MAX and abs(badd) < (1 << 30)):
        return False
    i_lo, i_hi = _reachable(seg, bv_lo, bv_hi)
    j0 = i_lo - 1
    ok, ja, jb, jc, nlin, nst = _i32_pieces(seg, bv_lo, bv_hi, j0, i_hi, tv)
    if not ok:
        if i_hi - j0 > 3:
            return False
        ja, jb, jc, nlin, nst = j0, min(j0 + 1, 15), min(j0 + 2, 15), i_hi - j0 - 1, 0
    for i in range(3):
        ok, hi, xs, ym, sh, h1, z, add = _seg32_params(seg, ja if i == 0 else (jb if i == 1 else jc))
        if i <= nlin and not ok:
            return False
        b = PR_FORMULA + 7 * i
        prog[o, b], prog[o, b + 1], prog[o, b + 2], prog[o, b + 3] = hi, xs, ym, sh
        prog[o, b + 4], prog[o, b + 5], prog[o, b + 6] = h1, z, add
        if i > nlin:  # an unused sloped slot: Bv > 2^31 − 1 never selects it
            prog[o, b + 1] = I32_MAX
    mh = mul >> bsh
    prog[o, PR_COFF], prog[o, PR_MH], prog[o, PR_ML], prog[o, PR_BSH] = coff, mh, mul - (mh << bsh), bsh
    prog[o, PR_BADD], prog[o, PR_NLIN], prog[o, PR_NST] = badd, nlin, nst
    for i in range(16):
        prog[o, PR_STEP + i] = tv[i]
    prog[o, PR_OK] = 1
    return True


@numba.njit(cache=True, nogil=True)
def activate_i32(cv, coff, c_lo, c_hi, mul, bsh, badd, seg, bv_lo, bv_hi, tv, u):
    """:func:`activate_sorted` for i32 ``cv`` entirely in 32-bit lanes (eight values per AVX2
    instruction instead of emulated 64-bit multiplies and shifts), when :func:`i32_program` can
    write a program for it. Returns False (nothing written) otherwise; the caller then takes the
    64-bit path. The one-channel form (the layer kernels write into their layer's table)."""
    prog = np.empty((1, PROG_ROWS), np.int64)
    if not i32_program(coff, c_lo, c_hi, mul, bsh, badd, seg, bv_lo, bv_hi, tv, prog, 0):
        return False
    run_program(cv, prog, 0, bv_hi, u)
    return True


@numba.njit(cache=True, inline="always")
def _formula(prog, o, i):
    b = PR_FORMULA + 7 * i
    return (I32(prog[o, b]), I32(prog[o, b + 1]), I32(prog[o, b + 2]), I32(prog[o, b + 3]), I32(prog[o, b + 4]),
            I32(prog[o, b + 5]), I32(prog[o, b + 6]))


@numba.njit(cache=True, inline="always")
def _row8(prog, r, o):
    return (I32(prog[o, r]), I32(prog[o, r + 1]), I32(prog[o, r + 2]), I32(prog[o, r + 3]), I32(prog[o, r + 4]),
            I32(prog[o, r + 5]), I32(prog[o, r + 6]), I32(prog[o, r + 7]))


@numba.njit(cache=True, inline="always")
def run_program(cv, prog, o, bv_hi, u):
    """u[p] = the activation of C = cv[p] + coff by channel ``o``'s program (which must be ok),
    every Bv at most ``bv_hi``: the formulas and steps that start at or above it are left out."""
    s = prog[o, PR_BSH]
    bn = (I32(prog[o, PR_COFF]), I32(prog[o, PR_MH]), I32(prog[o, PR_ML]), I32(s), I32(16 - s), I32(prog[o, PR_BADD]))
    fa, fb, fc = _formula(prog, o, 0), _formula(prog, o, 1), _formula(prog, o, 2)
    nlin, nst = prog[o, PR_NLIN], prog[o, PR_NST]
    while nst > 0 and prog[o, PR_STEP + nst - 1] >= bv_hi:
        nst -= 1
    if nst == 0:
        while nlin > 0 and prog[o, PR_FORMULA + 7 * nlin + 1] >= bv_hi:
            nlin -= 1
    if nst == 0:
        _act32_loop(cv, bn, nlin, fa, fb, fc, u)
    else:
        _act32_steps_loop(cv, bn, nlin, nst, fa, fb, fc, _row8(prog, PR_STEP, o), _row8(prog, PR_STEP + 8, o), u)


@numba.njit(cache=True, inline="always")
def _sloped3(bv, fa, fb, fc):
    """The value of ``bv`` by the last of three formulas (a, then b from its xs, then c from its
    xs) whose start it lies above, before the clamp (:func:`_seg32` each)."""
    r = _seg32(bv, fa)
    rb = _seg32(bv, fb)
    rc = _seg32(bv, fc)
    r = rb if bv > fb[1] else r
    return rc if bv > fc[1] else r


@numba.njit(cache=True, inline="always")
def _steps4(bv, r, t, v):
    r = v[0] if bv > t[0] else r
    r = v[1] if bv > t[1] else r
    r = v[2] if bv > t[2] else r
    return v[3] if bv > t[3] else r


@numba.njit(cache=True, nogil=True)
def _act32_steps_loop(cv, bn, nlin, nst, fa, fb, fc, t, v, u):
    """Pixel loops of :func:`run_program` with steps (one, or three sloped formulas; four or
    eight steps; unused steps start at 2^31 − 1)."""
    n = u.shape[0]
    t2, v2 = (t[4], t[5], t[6], t[7]), (v[4], v[5], v[6], v[7])
    if nlin == 0 and nst <= 4:
        for p in range(n):
            bv = _bv32(cv[p], bn)
            u[p] = min(max(_steps4(bv, _seg32(bv, fa), t, v), 0), 255)
    elif nlin == 0:
        for p in range(n):
            bv = _bv32(cv[p], bn)
            u[p] = min(max(_steps4(bv, _steps4(bv, _seg32(bv, fa), t, v), t2, v2), 0), 255)
    else:
        for p in range(n):
            bv = _bv32(cv[p], bn)
            u[p] = min(max(_steps4(bv, _steps4(bv, _sloped3(bv, fa, fb, fc), t, v), t2, v2), 0), 255)


@numba.njit(cache=True, nogil=True)
def _act32_loop(cv, bn, nlin, fa, fb, fc, u):
    """Pixel loops of :func:`run_program` without steps (one, two or three formulas)."""
    n = u.shape[0]
    if nlin == 0:
        for p in range(n):
            u[p] = min(max(_seg32(_bv32(cv[p], bn), fa), 0), 255)
    elif nlin == 1:
        for p in range(n):
            bv = _bv32(cv[p], bn)
            r = _seg32(bv, fa)
            rb = _seg32(bv, fb)
            u[p] = min(max(rb if bv > fb[1] else r, 0), 255)
    else:
        for p in range(n):
            bv = _bv32(cv[p], bn)
            u[p] = min(max(_sloped3(bv, fa, fb, fc), 0), 255)


@numba.njit(cache=True, nogil=True)
def _seg_exact(seg, j, bv):
    """U of ``bv`` in segment j (C.5 c, i64), for classifying segments."""
    r = kround((bv - seg[SEG_START, j]) * seg[SEG_MUL, j], seg[SEG_SHIFT, j]) + seg[SEG_ADD, j]
    return min(max(r, 0), 255)


@numba.njit(cache=True, nogil=True)
def _i32_pieces(seg, bv_lo, bv_hi, j0, i_hi, tv):
    """The reachable segments j0..i_hi−1 of a channel (Bv in [bv_lo, bv_hi]) as the pieces
    :func:`activate_i32` computes: a first formula, up to two more sloped segments, then up to
    eight *steps* (one value from a start on). A segment that is one value v over its reachable
    range (y_mul >= 0 makes it monotone there, so equal ends mean constant) is left out when the
    piece before already gives v there: a constant v, or a formula with y_mul >= 0 equal to v at
    both ends. A constant first piece is replaced by the next, sloped, segment when that one's
    formula gives v below its start (there ``_seg32`` clamps the offset to 0: clamp(add) = v).
    So ncc's ReLU6 table (0, a ramp, 14 near-cap segments each equal to the ramp's own rounding)
    is one ramp. Fills step starts tv[:8] and values tv[8:] (unused: start 2^31 − 1, never
    selected); returns (ok, first j, sloped j b, sloped j c, sloped count, step count); not ok
    for another shape, or a reachable shift outside 0..31 (undefined in ncc: the 64-bit path
    reports it)."""
    for i in range(8):
        tv[i] = I32_MAX
        tv[8 + i] = 0
    for j in range(j0, i_hi):
        if not 0 <= seg[SEG_SHIFT, j] < 32:
            return False, j0, j0, j0, 0, 0
    ja = jb = jc = j0
    nlin = 0
    nst = 0
    hi0 = min(seg[SEG_START, j0 + 1], bv_hi) if j0 + 1 < 16 else bv_hi
    v_first = _seg_exact(seg, j0, bv_lo)
    first_const = seg[SEG_MUL, j0] >= 0 and v_first == _seg_exact(seg, j0, hi0)
    for j in range(j0 + 1, i_hi):
        lo_b = max(seg[SEG_START, j] + 1, bv_lo)
        hi_b = min(seg[SEG_START, j + 1], bv_hi) if j + 1 < 16 else bv_hi
        if lo_b > hi_b:
            continue  # never the largest j with Bv > x_start[j] for a Bv of this channel
        v = _seg_exact(seg, j, lo_b)
        if seg[SEG_MUL, j] >= 0 and v == _seg_exact(seg, j, hi_b):  # one value over its range
            if nst > 0:
                same = tv[8 + nst - 1] == v
            elif nlin == 0 and first_const:
                same = v == v_first
            else:
                last = ja if nlin == 0 else (jb if nlin == 1 else jc)
                same = (seg[SEG_MUL, last] >= 0 and _seg_exact(seg, last, lo_b) == v
                        and _seg_exact(seg, last, hi_b) == v)
            if same:
                continue
            if nst == 8:
                return False, j0, j0, j0, nlin, nst
            tv[nst] = seg[SEG_START, j]
            tv[8 + nst] = v
            nst += 1
        elif nst > 0 or nlin == 2:
            return False, j0, j0, j0, nlin, nst
        elif nlin == 0 and first_const and min(max(seg[SEG_ADD, j], 0), 255) == v_first:
            ja = j  # the constant first piece is this formula below its start
            first_const = False
        else:
            if nlin == 0:
                jb = j
            else:
                jc = j
            nlin += 1
    return True, ja, jb, jc, nlin, nst



# ============================================================== pooling (C.6)
# pool_type -> stride (C.6)
POOL_STRIDE = (1, 2, 2, 4, 4, 2, 2, 4, 1, 1)


@numba.njit(cache=True, nogil=True)
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


@numba.njit(cache=True, nogil=True)
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
# For the same reason a multiply and an add may be fused (one rounding instead of two changes
# nothing when neither rounds): the convolution loops are compiled with FMA contraction only
# (no reassociation, no other fast-math assumption), half the instructions of mul + add.
EXACT_FMA = {"contract"}
# Flat indexes into planes are computed in uint64 (``U64``; numba would turn any mix with a
# signed int into float64, so every operand is converted). numba checks each *signed* index for
# wrap-around (a negative index counts from the end), which keeps LLVM from vectorising a loop
# whose index it cannot prove non-negative; unsigned indexes carry no such check. Row views
# avoid it too, but each view costs two atomic reference-count updates.
U64 = np.uint64
BN_MUL, BN_SHIFT, BN_ADD, BN_SW = range(4)


def channel_table(norm_mul, norm_shift, norm_add, sw) -> np.ndarray:
    """The [4, OC] i64 per-output-channel table of a layer (rows BN_*): batch norm, Σw'."""
    return np.ascontiguousarray(np.stack([np.asarray(v, dtype=np.int64) for v in (norm_mul, norm_shift, norm_add, sw)]))


@numba.njit(cache=True, nogil=True)
def _pad_center(x, n, ram, ram_src, zp, pad, xp):
    """xp[c] (f32) = x'[c] = x[n, c] − 128 with a ``pad``-wide border of Zp − 128; with
    ``ram_src >= 0`` (one batch) the input is read from KPU RAM ``ram`` at that byte instead
    (C.3 layout, as kpu.layout.kpu_download; bounds checked by the caller)."""
    ic, ph, pw = xp.shape
    ih, iw = ph - 2 * pad, pw - 2 * pad
    g, l, p = _row_layout(iw)
    line = l * 64
    pv = np.float32(zp - 128)
    xf = xp.reshape(xp.size)
    xs = x.reshape(x.size)
    upw, uiw, upad = U64(pw), U64(iw), U64(pad)
    bottom = U64(ph - pad) * upw
    for c in range(ic):
        cb = U64(c * ph) * upw
        for i in range(upad * upw):  # the top and bottom border rows
            xf[cb + i] = pv
            xf[cb + bottom + i] = pv
        if ram_src >= 0:
            src = ram
            sb = U64(ram_src + (c // g) * (line * ih) + (c % g) * p)
            pitch = U64(line)
        else:
            src = xs
            sb = U64((n * ic + c) * ih) * uiw
            pitch = uiw
        for y in range(U64(ih)):
            d = cb + (y + upad) * upw
            for i in range(upad):
                xf[d + i] = pv
                xf[d + upad + uiw + i] = pv
            d += upad
            s = sb + y * pitch
            for i in range(uiw):
                xf[d + i] = np.float32(np.int32(src[s + i]) - 128)


@numba.njit(cache=True, nogil=True)
def _box_sum(f, base, pw, k, ih, iw, out):
    """out[y·iw + x] (i32) = Σ_{ky,kx<k} f[base + (y+ky)·pw + x+kx] over a flat padded plane."""
    upw, uiw = U64(pw), U64(iw)
    one, two = U64(1), U64(2)
    for y in range(U64(ih)):
        o = y * uiw
        a = U64(base) + y * upw
        if k == 3:
            b = a + upw
            d = b + upw
            for x in range(uiw):
                out[o + x] = np.int32(f[a + x] + f[a + x + one] + f[a + x + two] + f[b + x] + f[b + x + one]
                                      + f[b + x + two] + f[d + x] + f[d + x + one] + f[d + x + two])
        else:
            for x in range(uiw):
                s = np.float32(0)
                for ky in range(U64(k)):
                    for kx in range(U64(k)):
                        s += f[a + ky * upw + x + kx]
                out[o + x] = np.int32(s)


@numba.njit(cache=True, inline="always")
def _ax_sx(sxc, ax, sx, taps, axsx):
    """axsx[p] = asr(ax·Sx, sx) with Sx = Σx' + 128·T, when sx != 0 (else C takes ax·Sx directly)."""
    if sx != 0:
        for p in range(sxc.shape[0]):
            axsx[p] = (ax * (np.int64(sxc[p]) + 128 * taps)) >> sx


@numba.njit(cache=True, nogil=True)
def _sum_x(xp, k, ax, sx, taps, cs, sxc, axsx):
    """Σx' over the taps of every output position, all input channels (``cs`` a flat PH·PW f32
    work plane), and asr(ax·Sx, sx) with Sx = Σx' + 128·T when sx != 0."""
    ic, ph, pw = xp.shape
    pad = (k - 1) // 2
    xf = xp.reshape(xp.size)
    m = U64(ph * pw)
    for i in range(m):
        cs[i] = 0
    for c in range(ic):
        cb = U64(c) * m
        for i in range(m):
            cs[i] += xf[cb + i]
    _box_sum(cs, 0, pw, k, ph - 2 * pad, pw - 2 * pad, sxc)
    _ax_sx(sxc, ax, sx, taps, axsx)


@numba.njit(cache=True, nogil=True, fastmath=EXACT_FMA)
def _conv_rows(xf, ph, pw, c0, c1, wf, o, k, ih, iw, acc):
    """acc[y·iw+x] = Σ_{c0<=c<c1} Σ_{ky,kx} wf[o, (c−c0)·k²+ky·k+kx] · x'[c, y+ky, x+kx] (f32,
    ``xf`` the flat padded planes [IC, PH, PW]), one output row at a time so it stays in L1."""
    kk = k * k
    upw, uiw = U64(pw), U64(iw)
    for y in range(U64(ih)):
        ob = y * uiw
        for x in range(uiw):
            acc[ob + x] = 0
        for c in range(c0, c1):
            woff = (c - c0) * kk
            for ky in range(k):
                rb = (U64(c * ph + ky) + y) * upw
                for kx in range(k):
                    wv = wf[o, woff + ky * k + kx]
                    s = rb + U64(kx)
                    for x in range(uiw):
                        acc[ob + x] += wv * xf[s + x]


@numba.njit(cache=True, nogil=True, fastmath=EXACT_FMA)
def _conv3_rows(xf, ph, pw, c0, c1, wf, o, ih, iw, acc):
    """3×3 form of :func:`_conv_rows`: the nine taps of a channel are summed in registers, so each
    output row is loaded and stored once per input channel."""
    upw, uiw = U64(pw), U64(iw)
    one, two = U64(1), U64(2)
    for y in range(U64(ih)):
        ob = y * uiw
        for x in range(uiw):
            acc[ob + x] = 0
        for c in range(c0, c1):
            t = (c - c0) * 9
            w0, w1, w2, w3, w4 = wf[o, t], wf[o, t + 1], wf[o, t + 2], wf[o, t + 3], wf[o, t + 4]
            w5, w6, w7, w8 = wf[o, t + 5], wf[o, t + 6], wf[o, t + 7], wf[o, t + 8]
            a = (U64(c * ph) + y) * upw
            b = a + upw
            d = b + upw
            for x in range(uiw):
                acc[ob + x] += (w0 * xf[a + x] + w1 * xf[a + x + one] + w2 * xf[a + x + two] + w3 * xf[b + x]
                                + w4 * xf[b + x + one] + w5 * xf[b + x + two] + w6 * xf[d + x] + w7 * xf[d + x + one]
                                + w8 * xf[d + x + two])


CONV3_GROUP = 4  # output channels a narrow 3×3 layer computes per pass over its input rows


@numba.njit(cache=True, nogil=True, fastmath=EXACT_FMA)
def _conv3_rows4(xf, ph, pw, ic, wf, o, ih, iw, acc):
    """:func:`_conv3_rows` for the four output channels o..o+3 at once, into acc[j·IH·IW + p]:
    each input tap is loaded once for all four (the kernel is bound by multiply-adds, not loads)."""
    upw, uiw = U64(pw), U64(iw)
    one, two = U64(1), U64(2)
    m = U64(ih * iw)
    m2, m3 = m + m, m + m + m
    for y in range(U64(ih)):
        ob = y * uiw
        for x in range(uiw):
            acc[ob + x] = 0
            acc[m + ob + x] = 0
            acc[m2 + ob + x] = 0
            acc[m3 + ob + x] = 0
        for c in range(ic):
            t = c * 9
            a0, a1, a2, a3, a4 = wf[o, t], wf[o, t + 1], wf[o, t + 2], wf[o, t + 3], wf[o, t + 4]
            a5, a6, a7, a8 = wf[o, t + 5], wf[o, t + 6], wf[o, t + 7], wf[o, t + 8]
            b0, b1, b2, b3, b4 = wf[o + 1, t], wf[o + 1, t + 1], wf[o + 1, t + 2], wf[o + 1, t + 3], wf[o + 1, t + 4]
            b5, b6, b7, b8 = wf[o + 1, t + 5], wf[o + 1, t + 6], wf[o + 1, t + 7], wf[o + 1, t + 8]
            c0, c1, c2, c3, c4 = wf[o + 2, t], wf[o + 2, t + 1], wf[o + 2, t + 2], wf[o + 2, t + 3], wf[o + 2, t + 4]
            c5, c6, c7, c8 = wf[o + 2, t + 5], wf[o + 2, t + 6], wf[o + 2, t + 7], wf[o + 2, t + 8]
            d0, d1, d2, d3, d4 = wf[o + 3, t], wf[o + 3, t + 1], wf[o + 3, t + 2], wf[o + 3, t + 3], wf[o + 3, t + 4]
            d5, d6, d7, d8 = wf[o + 3, t + 5], wf[o + 3, t + 6], wf[o + 3, t + 7], wf[o + 3, t + 8]
            r0 = (U64(c * ph) + y) * upw
            r1 = r0 + upw
            r2 = r1 + upw
            for x in range(uiw):
                p0, p1, p2 = xf[r0 + x], xf[r0 + x + one], xf[r0 + x + two]
                p3, p4, p5 = xf[r1 + x], xf[r1 + x + one], xf[r1 + x + two]
                p6, p7, p8 = xf[r2 + x], xf[r2 + x + one], xf[r2 + x + two]
                acc[ob + x] += (a0 * p0 + a1 * p1 + a2 * p2 + a3 * p3 + a4 * p4 + a5 * p5 + a6 * p6 + a7 * p7
                                + a8 * p8)
                acc[m + ob + x] += (b0 * p0 + b1 * p1 + b2 * p2 + b3 * p3 + b4 * p4 + b5 * p5 + b6 * p6 + b7 * p7
                                    + b8 * p8)
                acc[m2 + ob + x] += (c0 * p0 + c1 * p1 + c2 * p2 + c3 * p3 + c4 * p4 + c5 * p5 + c6 * p6 + c7 * p7
                                     + c8 * p8)
                acc[m3 + ob + x] += (d0 * p0 + d1 * p1 + d2 * p2 + d3 * p3 + d4 * p4 + d5 * p5 + d6 * p6 + d7 * p7
                                     + d8 * p8)


@numba.njit(cache=True, nogil=True, fastmath=EXACT_FMA)
def _dw3_rows(xf, ph, pw, o, wf, ih, iw, with_sum, acc, sxc):
    """Depthwise 3×3 channel ``o``, row by row: D (``acc``) and, ``with_sum``, Σx' (``sxc``) of
    every output pixel in one pass over its nine taps (the wide-image form of :func:`_dw3_flat`)."""
    w0, w1, w2, w3, w4 = wf[o, 0], wf[o, 1], wf[o, 2], wf[o, 3], wf[o, 4]
    w5, w6, w7, w8 = wf[o, 5], wf[o, 6], wf[o, 7], wf[o, 8]
    upw, uiw = U64(pw), U64(iw)
    one, two = U64(1), U64(2)
    for y in range(U64(ih)):
        ob = y * uiw
        a = (U64(o * ph) + y) * upw
        b = a + upw
        d = b + upw
        if not with_sum:
            for x in range(uiw):
                acc[ob + x] = (w0 * xf[a + x] + w1 * xf[a + x + one] + w2 * xf[a + x + two] + w3 * xf[b + x]
                               + w4 * xf[b + x + one] + w5 * xf[b + x + two] + w6 * xf[d + x] + w7 * xf[d + x + one]
                               + w8 * xf[d + x + two])
            continue
        for x in range(uiw):
            p0, p1, p2 = xf[a + x], xf[a + x + one], xf[a + x + two]
            p3, p4, p5 = xf[b + x], xf[b + x + one], xf[b + x + two]
            p6, p7, p8 = xf[d + x], xf[d + x + one], xf[d + x + two]
            acc[ob + x] = w0 * p0 + w1 * p1 + w2 * p2 + w3 * p3 + w4 * p4 + w5 * p5 + w6 * p6 + w7 * p7 + w8 * p8
            sxc[ob + x] = np.int32(p0 + p1 + p2 + p3 + p4 + p5 + p6 + p7 + p8)


DW_FLAT_MAX_W = 24  # measured: depthwise 3×3 layers up to this width are faster in the flat form


@numba.njit(cache=True, inline="always")
def _dw3_flat(xf, ph, pw, o, wf, ih, iw, with_sum, fl, acc, sxc):
    """Depthwise 3×3 channel ``o``: D (``acc``) and, ``with_sum``, Σx' (``sxc``) of every output pixel, computed
    on its padded plane read as one flat row of pitch pw (position y·pw + x; the two x >= iw
    columns are junk, dropped when copying to ``acc``/``sxc``), so the loop is long and
    vectorises even for narrow images where a row of 5..20 pixels does not. ``fl``: 2·ih·pw f32."""
    n = U64((ih - 1) * pw + iw)
    w0, w1, w2, w3, w4 = wf[o, 0], wf[o, 1], wf[o, 2], wf[o, 3], wf[o, 4]
    w5, w6, w7, w8 = wf[o, 5], wf[o, 6], wf[o, 7], wf[o, 8]
    m = U64(fl.shape[0] // 2)
    upw, uiw = U64(pw), U64(iw)
    one, two = U64(1), U64(2)
    a = U64(o * ph) * upw
    b = a + upw
    d = b + upw
    for p in range(n):
        fl[p] = (w0 * xf[a + p] + w1 * xf[a + p + one] + w2 * xf[a + p + two] + w3 * xf[b + p] + w4 * xf[b + p + one]
                 + w5 * xf[b + p + two] + w6 * xf[d + p] + w7 * xf[d + p + one] + w8 * xf[d + p + two])
    if not with_sum:
        for y in range(U64(ih)):
            for x in range(uiw):
                acc[y * uiw + x] = fl[y * upw + x]
        return
    for p in range(n):
        fl[m + p] = (xf[a + p] + xf[a + p + one] + xf[a + p + two] + xf[b + p] + xf[b + p + one] + xf[b + p + two]
                     + xf[d + p] + xf[d + p + one] + xf[d + p + two])
    for y in range(U64(ih)):
        for x in range(uiw):
            acc[y * uiw + x] = fl[y * upw + x]
            sxc[y * uiw + x] = np.int32(fl[m + y * upw + x])


@numba.njit(cache=True, inline="always")
def _cv32(acc, sxc, m, i):
    """D + m·Σx' at position i in i32 (``sxc`` not read when m = 0)."""
    return np.int32(acc[i]) if m == 0 else np.int32(np.int32(acc[i]) + m * sxc[i])


@numba.njit(cache=True, inline="always")
def _c_values32(acc, sxc, sx_mul, cv):
    """cv[p] = D + sx_mul·Σx' in i32 (D = acc[p], an exact integer in f32 or i32; ``sxc`` not read
    when sx_mul = 0), the caller having checked it cannot overflow; returns (min, max). C is cv[p]
    + a per-channel constant, added at the activation: i32 halves the memory traffic and doubles
    the vector width of this pass and of the pool before activation."""
    lo = np.int32(I32_MAX)
    hi = np.int32(I32_MIN)
    m = np.int32(sx_mul)
    for p in range(cv.shape[0]):
        v = _cv32(acc, sxc, m, p)
        cv[p] = v
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


@numba.njit(cache=True, inline="always")
def _bv_span(c_lo, c_hi, mul, bsh, badd):
    """(least, greatest) batch-norm value Bv for C in [c_lo, c_hi] (Bv is monotone in C)."""
    b1 = ((c_lo * mul) >> bsh) + badd
    b2 = ((c_hi * mul) >> bsh) + badd
    return min(b1, b2), max(b1, b2)


@numba.njit(cache=True, nogil=True)
def _c_pool2(acc, sxc, sx_mul, ih, iw, use_min, pooled):
    """:func:`_c_values32` and the max_2_s2 pool of :func:`pool_c` in one pass: pooled[y·ow + x]
    = max (``use_min``: min) of cv = D + sx_mul·Σx' over the 2×2 window at (2y, 2x), without
    storing cv; returns (min, max) of cv over every position (an odd last row or column too)."""
    oh, ow = ih // 2, iw // 2
    m = np.int32(sx_mul)
    lo = np.int32(I32_MAX)
    hi = np.int32(I32_MIN)
    uiw, uow = U64(iw), U64(ow)
    one, two = U64(1), U64(2)
    for y in range(U64(oh)):
        r0 = y * two * uiw
        r1 = r0 + uiw
        o = y * uow
        for x in range(uow):
            i = x * two
            v0 = _cv32(acc, sxc, m, r0 + i)
            v1 = _cv32(acc, sxc, m, r0 + i + one)
            v2 = _cv32(acc, sxc, m, r1 + i)
            v3 = _cv32(acc, sxc, m, r1 + i + one)
            a = max(max(v0, v1), max(v2, v3))
            b = min(min(v0, v1), min(v2, v3))
            pooled[o + x] = b if use_min else a
            lo = min(lo, b)
            hi = max(hi, a)
    for y in range(ih):  # positions no window covers: an odd last column, an odd last row
        for x in range(2 * ow if y < 2 * oh else 0, iw):
            v = _cv32(acc, sxc, m, y * iw + x)
            lo = min(lo, v)
            hi = max(hi, v)
    return lo, hi


@numba.njit(cache=True, nogil=True)
def _c_values(acc, sxc, axsx, sx_mul, const, use_axsx, cv):
    """cv[p] = D + sx_mul·Σx' (+ asr(ax·Sx, sx)) + const, the i64 conv result C; returns (min, max)."""
    lo = np.int64(I64_MAX)
    hi = np.int64(I64_MIN)
    for p in range(cv.shape[0]):
        v = np.int64(acc[p]) + sx_mul * np.int64(sxc[p]) + const
        if use_axsx:
            v += axsx[p]
        cv[p] = v
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


def work_arrays(nacc, npix, opix, nflat):
    """A layer's per-channel work arrays, allocated once by its plan and passed to
    :func:`kpu_layer` / :func:`gemm_finish`: acc (f32 D, ``nacc``), cv (i64 C), cv32 (i32 C less its
    channel constant), bvs (i64 Bv), pooled (i64), pooled32 (i32), u (u8 U), fl (f32, 2·nflat: D
    and Σx' of a depthwise 3×3 channel over padded-width rows), tv (i64, the activation's steps)."""
    return (np.empty(nacc, np.float32), np.empty(npix, np.int64), np.empty(npix, np.int32),
            np.empty(npix, np.int64), np.empty(opix, np.int64), np.empty(opix, np.int32), np.empty(npix, np.uint8),
            np.empty(2 * nflat, np.float32), np.empty(16, np.int64))


@numba.njit(cache=True, inline="always")
def _channel_out(acc, sxc, axsx, o, n, ih, iw, regs, bnt, seg, prog, sorted_starts, min_start, pool_type, pool_first,
                 out, of, cv, cv32, bvs, pooled, pooled32, u, tv):
    """Output channel ``o`` of batch ``n`` from its D = Σx'·w' (``acc``, f32 or i32) and the Σx'
    of its positions (``sxc``; unused with xm = 0, Σx' folded into the weights): C (C.5 a), batch
    norm, activation and pool into out[n, o] (``of``: ``out`` flat). ``regs`` = (T, g_ic, ax, xm,
    sx, aw, sw, aadd) with xm the multiplier of Σx' in C (128 + ax, or 0 when folded); ``bnt``
    the :func:`channel_table`, ``seg`` the :func:`segment_table` (``sorted_starts``: x_start
    non-decreasing; ``min_start`` its least entry), ``prog`` the :func:`layer_programs`.
    Returns the error (ERR_NONE if none)."""
    taps, gic, ax, xm, sx, aw, sw, aadd = regs
    npix = ih * iw
    if npix == 0:
        return ERR_NONE
    if prog[o, PR_OK]:
        return _finish_program(acc, sxc, xm, o, n, ih, iw, bnt, prog, pool_type, pool_first, out, of, cv32,
                               pooled32, u)
    const = _c_const(taps, gic, aw, sw, aadd, bnt[BN_SW, o])
    if _cv_fits_i32(sx, ax, taps):
        coff = const + ax * 128 * taps  # asr(ax·Sx, 0) = ax·Σx' + ax·128·T
        if pool_first and pool_type == 1:  # max_2_s2: C and its pool in one pass over the largest arrays
            mul = bnt[BN_MUL, o]
            c_lo32, c_hi32 = _c_pool2(acc, sxc, xm, ih, iw, mul < 0, pooled32)
            c_lo, c_hi = np.int64(c_lo32) + coff, np.int64(c_hi32) + coff
            if _bv_span(c_lo, c_hi, mul, bnt[BN_SHIFT, o], bnt[BN_ADD, o])[0] > min_start:
                return _finish(cv32, coff, c_lo, c_hi, o, n, ih, iw, bnt, seg, prog, sorted_starts, min_start,
                               pool_type, True, True, out, of, bvs, pooled32, u, tv)
        c_lo32, c_hi32 = _c_values32(acc, sxc, xm, cv32)
        return _finish(cv32, coff, np.int64(c_lo32) + coff, np.int64(c_hi32) + coff, o, n, ih, iw, bnt, seg,
                       prog, sorted_starts, min_start, pool_type, pool_first, False, out, of, bvs, pooled32, u, tv)
    if sx == 0:
        c_lo, c_hi = _c_values(acc, sxc, axsx, xm, const + ax * 128 * taps, False, cv)
    else:
        c_lo, c_hi = _c_values(acc, sxc, axsx, 128, const, True, cv)
    return _finish(cv, np.int64(0), c_lo, c_hi, o, n, ih, iw, bnt, seg, prog, sorted_starts, min_start, pool_type,
                   pool_first, False, out, of, bvs, pooled, u, tv)


@numba.njit(cache=True, inline="always")
def _c_const(taps, gic, aw, sw, aadd, swo):
    """The part of C that does not depend on the input: with Sxw = D + 128·Σx' + 128·Σw' + 16384·T,
    C = D + 128·Σx' + asr(ax·Sx, sx) + this (Σw' = ``swo``)."""
    return 128 * swo + 16384 * taps + ((aw * (swo + 128 * taps)) >> sw) + aadd * gic


@numba.njit(cache=True, inline="always")
def _cv_fits_i32(sx, ax, taps):
    """Whether C less its per-channel constant, D + (128 + ax)·Σx', fits i32 for every input:
    sx = 0 and T·128² + |128 + ax|·T·128 < 2^31 (|x'|, |w'| <= 128)."""
    return sx == 0 and taps * 16384 + abs(128 + ax) * taps * 128 < (1 << 31) - 1


@numba.njit(cache=True, nogil=True)
def layer_programs(wf, gic, ax, sx, aw, sw, aadd, bnt, seg, sorted_starts, min_start):
    """The program table of a layer, written once: channel o gets an ok program when
    :func:`i32_program` accepts it over the exact bounds of C for *every* input, C = Σ x·(w + ax)
    + asr(aw·Sw, sw) + aadd·g_ic (sx = 0; each x in 0..255, padding Zp included), and every Bv
    there has a segment; a run then needs no per-channel classification."""
    oc, taps = wf.shape
    prog = program_table(oc)
    if not sorted_starts or not _cv_fits_i32(sx, ax, np.int64(taps)):
        return prog
    tv = np.empty(16, np.int64)
    for o in range(oc):
        neg = np.int64(0)
        pos = np.int64(0)
        for t in range(taps):
            v = np.int64(wf[o, t]) + 128 + ax
            if v < 0:
                neg += v
            else:
                pos += v
        const = _c_const(np.int64(taps), np.int64(gic), aw, sw, aadd, bnt[BN_SW, o])
        base = const - 128 * bnt[BN_SW, o] - 16384 * taps  # asr(aw·Sw, sw) + aadd·g_ic
        c_lo, c_hi = base + 255 * neg, base + 255 * pos
        mul, bsh, badd = bnt[BN_MUL, o], bnt[BN_SHIFT, o], bnt[BN_ADD, o]
        bv_lo, bv_hi = _bv_span(c_lo, c_hi, mul, bsh, badd)
        if bv_lo > min_start:
            i32_program(const + ax * 128 * taps, c_lo, c_hi, mul, bsh, badd, seg, bv_lo, bv_hi, tv, prog, o)
    return prog


@numba.njit(cache=True, inline="always")
def _finish_program(acc, sxc, sx_mul, o, n, ih, iw, bnt, prog, pool_type, pool_first, out, of, cv32, pooled32, u):
    """Output channel ``o`` by its layer program (C = D + sx_mul·Σx' + coff, every value with a
    segment): C, its pool when ``pool_first``, the activation and the pool into out[n, o]."""
    mul = bnt[BN_MUL, o]
    use_min = mul < 0
    opix = out.shape[2] * out.shape[3]
    start = (n * out.shape[1] + o) * opix
    flat_out = of[start : start + opix]
    if sx_mul == 0 and pool_type == 0:  # C = D + coff: one pass from D, every step kept (no C range)
        run_program(acc, prog, o, np.int64(I32_MAX), flat_out)
        return ERR_NONE
    if pool_first and pool_type == 1:
        lo, hi = _c_pool2(acc, sxc, sx_mul, ih, iw, use_min, pooled32)
        src, dst = pooled32, flat_out
    else:
        lo, hi = _c_values32(acc, sxc, sx_mul, cv32)
        if pool_first:
            pool_c(cv32, ih, iw, pool_type, use_min, pooled32)
            src, dst = pooled32, flat_out
        else:
            src, dst = cv32, (flat_out if pool_type == 0 else u)
    c0 = prog[o, PR_COFF]
    bv_hi = _bv_span(np.int64(lo) + c0, np.int64(hi) + c0, mul, bnt[BN_SHIFT, o], bnt[BN_ADD, o])[1]
    run_program(src, prog, o, bv_hi, dst)
    if not pool_first and pool_type != 0:
        pool_plane(u, ih, iw, pool_type, out[n, o])
    return ERR_NONE


@numba.njit(cache=True, inline="always")
def _finish(cv, coff, c_lo, c_hi, o, n, ih, iw, bnt, seg, prog, sorted_starts, min_start, pool_type, pool_first,
            prepooled, out, of, bvs, pooled, u, tv):
    """Batch norm, activation and pool of output channel ``o`` from C = cv[p] + coff (cv i64, or
    i32 with the channel's constant in ``coff``), C in [c_lo, c_hi], into out[n, o]; returns the
    error. ``pooled`` has cv's dtype; with ``prepooled`` it holds the pool of C already (the
    caller made sure every value has a segment). The 32-bit program for this run's C range is
    written into channel o's row of the layer's ``prog`` (not ok: no program for every input)
    and marked not ok again after the run."""
    opix = out.shape[2] * out.shape[3]
    err = ERR_NONE
    mul, bsh, badd = bnt[BN_MUL, o], bnt[BN_SHIFT, o], bnt[BN_ADD, o]
    bv_lo, bv_hi = _bv_span(c_lo, c_hi, mul, bsh, badd)
    safe = bv_lo > min_start  # every value has a segment
    pooled_first = pool_first and safe
    start = (n * out.shape[1] + o) * opix
    flat_out = of[start : start + opix]
    if pooled_first:  # max/min/select of cv + coff = that of cv, + coff
        if not prepooled:
            pool_c(cv, ih, iw, pool_type, mul < 0, pooled)
        src, dst = pooled, flat_out
    elif pool_type == 0:
        src, dst = cv, flat_out
    else:
        src, dst = cv, u
    done = False
    if sorted_starts and safe and i32_program(coff, c_lo, c_hi, mul, bsh, badd, seg, bv_lo, bv_hi, tv, prog, o):
        run_program(src, prog, o, bv_hi, dst)
        prog[o, PR_OK] = 0
        done = True
    if sorted_starts and safe and not done:
        done = activate_sorted(src, coff, mul, bsh, badd, seg, bv_lo, bv_hi, bvs, dst)
    if not done:
        err = activate(src, coff, mul, bsh, badd, seg, sorted_starts, dst)
    if not pooled_first and pool_type != 0:
        pool_plane(u, ih, iw, pool_type, out[n, o])
    return err


@numba.njit(cache=True, nogil=True, fastmath=EXACT_FMA)
def _channels(xp, wf, dw, k, ax, xm, sx, aw, sw, aadd, bnt, seg, prog, sorted_starts, min_start, pool_type, pool_first,
              out, n, sxc, axsx, acc, cv, cv32, bvs, pooled, pooled32, u, fl, tv):
    """Every output channel of batch ``n`` of a direct (non-GEMM) layer: the
    convolution from the padded planes ``xp`` (depthwise, or 3×3 over few input channels), then
    :func:`_channel_out`. ``sxc``/``axsx`` hold Σx' already unless depthwise (then per channel).
    Returns the last error (ERR_NONE if none)."""
    err = ERR_NONE
    ic, ph, pw = xp.shape
    pad = (k - 1) // 2
    ih, iw = ph - 2 * pad, pw - 2 * pad
    gic = 1 if dw else ic
    taps = np.int64(gic * k * k)
    xf = xp.reshape(xp.size)
    of = out.reshape(out.size)
    with_sum = xm != 0 or sx != 0  # else Σx' is folded into the weights (xm = 0)
    regs = (taps, np.int64(gic), np.int64(ax), np.int64(xm), np.int64(sx), np.int64(aw), np.int64(sw), np.int64(aadd))
    npix = ih * iw
    # a narrow 3×3 layer given room for four planes in ``acc``: four output channels per pass
    grouped = not dw and k == 3 and acc.shape[0] >= CONV3_GROUP * npix
    for o in range(wf.shape[0]):
        j = o % CONV3_GROUP if grouped and o - o % CONV3_GROUP + CONV3_GROUP <= wf.shape[0] else -1
        if j == 0:
            _conv3_rows4(xf, ph, pw, ic, wf, o, ih, iw, acc)
        elif j > 0:
            pass  # computed with channel o − j
        elif dw:
            if k == 3 and iw <= DW_FLAT_MAX_W:
                _dw3_flat(xf, ph, pw, o, wf, ih, iw, with_sum, fl, acc, sxc)
            elif k == 3:
                _dw3_rows(xf, ph, pw, o, wf, ih, iw, with_sum, acc, sxc)
            else:
                _conv_rows(xf, ph, pw, o, o + 1, wf, o, k, ih, iw, acc)
                if with_sum:
                    _box_sum(xf, o * ph * pw, pw, k, ih, iw, sxc)
            _ax_sx(sxc, ax, sx, taps, axsx)
        elif k == 3:
            _conv3_rows(xf, ph, pw, 0, ic, wf, o, ih, iw, acc)
        else:
            _conv_rows(xf, ph, pw, 0, ic, wf, o, k, ih, iw, acc)
        j = max(j, 0)
        e = _channel_out(acc[j * npix : (j + 1) * npix], sxc, axsx, o, n, ih, iw, regs, bnt, seg, prog, sorted_starts,
                         min_start, pool_type, pool_first, out, of, cv, cv32, bvs, pooled, pooled32, u, tv)
        if e != ERR_NONE:
            err = e
    return err


@numba.njit(cache=True, nogil=True)
def kpu_layer(x, ram, ram_src, wf, dw, k, zp, ax, xm, sx, aw, sw, aadd, bnt, seg, prog, sorted_starts, min_start,
              pool_type, pool_first, out, xp, sxc, axsx, cs, acc, cv, cv32, bvs, pooled, pooled32, u, fl, tv):
    """One direct KPU layer (depthwise, or 3×3 over few input channels) over all batches. ``x``
    u8 [N, IC, IH, IW]; ``wf`` centered f32 weights [OC, taps]; ``bnt``/``seg`` the layer's
    :func:`channel_table` and :func:`segment_table`; ``out`` u8 [N, OC, OH, OW].
    ``pool_first``: the pool may run on C before the activation (select pools, or max pools with
    a monotone activation). With ``ram_src >= 0`` (one batch only) the input is read from KPU
    RAM ``ram`` at byte ``ram_src`` instead, ``x`` giving only the shape. Returns ERR_NONE, or
    ERR_NO_SEGMENT / ERR_SHIFT where ncc's behaviour is undefined (the last channel's). The work
    arrays: ``xp`` f32 [IC, IH + 2·pad, IW + 2·pad], ``sxc`` i32 and ``axsx`` i64 (when sx != 0)
    of IH·IW, ``cs`` f32 of the padded plane's size, then :func:`work_arrays`."""
    n_b, ic, ih, iw = x.shape
    pad = (k - 1) // 2
    taps = np.int64((1 if dw else ic) * k * k)
    x, ram, wf, bnt, seg, prog, out = _borrow(x), _borrow(ram), _borrow(wf), _borrow(bnt), _borrow(seg), \
        _borrow(prog), _borrow(out)
    xp, sxc, axsx, cs, acc, cv, cv32 = _borrow(xp), _borrow(sxc), _borrow(axsx), _borrow(cs), _borrow(acc), \
        _borrow(cv), _borrow(cv32)
    bvs, pooled, pooled32, u, fl, tv = _borrow(bvs), _borrow(pooled), _borrow(pooled32), _borrow(u), _borrow(fl), \
        _borrow(tv)
    err = ERR_NONE
    for n in range(n_b):
        _pad_center(x, n, ram, ram_src, zp, pad, xp)
        if not dw and (xm != 0 or sx != 0):
            _sum_x(xp, k, ax, sx, taps, cs, sxc, axsx)
        e = _channels(xp, wf, dw, k, ax, xm, sx, aw, sw, aadd, bnt, seg, prog, sorted_starts, min_start, pool_type,
                      pool_first, out, n, sxc, axsx, acc, cv, cv32, bvs, pooled, pooled32, u, fl, tv)
        if e != ERR_NONE:
            err = e
    return err


@numba.njit(cache=True, nogil=True)
def gemm_input(x, n, ram, ram_src, k, zp, ax, xm, sx, xp, cs, sxc, axsx):
    """First half of a GEMM layer (non-depthwise): the centered, padded input plane ``xp`` of
    batch ``n`` (from x, or KPU RAM as in :func:`kpu_layer`) and its Σx' per output position.
    D = W'·X (X = ``xp`` as [IC, IH·IW] for k = 1, else the im2col rows of :func:`im2col_rows`)
    is then computed by BLAS in float32, exact as said above."""
    ic = xp.shape[0]
    _pad_center(x, n, ram, ram_src, zp, (k - 1) // 2, xp)
    if xm != 0 or sx != 0:  # else Σx' is folded into the weights
        _sum_x(xp, k, ax, sx, np.int64(ic * k * k), cs, sxc, axsx)


@numba.njit(cache=True, nogil=True)
def im2col_rows(xp, k, y0, y1, cols):
    """cols[(c·k+ky)·k+kx, (y−y0)·iw+x] = xp[c, y+ky, x+kx] for output rows y0 <= y < y1."""
    ic, ph, pw = xp.shape
    iw = pw - (k - 1)
    xf = xp.reshape(xp.size)
    cf = cols.reshape(cols.size)
    ncol, uiw = U64(cols.shape[1]), U64(iw)
    for c in range(ic):
        for ky in range(k):
            for kx in range(k):
                r = U64((c * k + ky) * k + kx) * ncol
                for y in range(y0, y1):
                    d = r + U64(y - y0) * uiw
                    s = U64((c * ph + y + ky) * pw + kx)
                    for x in range(uiw):
                        cf[d + x] = xf[s + x]


@numba.njit(cache=True, nogil=True)
def select_input(x, n, ram, ram_src, k, zp, ax, xm, sx, s, dx, oh, ow, xp, cols, acc, sxc, axsx):
    """Input of a GEMM over only the conv positions a select pool keeps (left_top / right_top:
    position (y·s, x·s + dx) for output (y, x)): the padded plane ``xp`` of batch ``n`` (as
    :func:`gemm_input`), then ``cols`` [IC·K², OH·OW] its im2col columns at those positions, their
    Σx' (``sxc``, summed in the f32 work array ``acc``) and asr(ax·Sx, sx) when sx != 0."""
    ic, ph, pw = xp.shape
    _pad_center(x, n, ram, ram_src, zp, (k - 1) // 2, xp)
    xf = xp.reshape(xp.size)
    cf = cols.reshape(cols.size)
    npos = U64(oh * ow)
    uow, us = U64(ow), U64(s)
    with_sum = xm != 0 or sx != 0  # else Σx' is folded into the weights
    if with_sum:
        for i in range(npos):
            acc[i] = 0
    for c in range(ic):
        for ky in range(k):
            for kx in range(k):
                r = U64((c * k + ky) * k + kx) * npos
                for y in range(U64(oh)):
                    d = r + y * uow
                    b = U64((c * ph + ky) * pw + dx + kx) + y * us * U64(pw)
                    for i in range(uow):
                        cf[d + i] = xf[b + i * us]
                if with_sum:
                    for i in range(npos):
                        acc[i] += cf[r + i]
    if with_sum:
        for i in range(npos):
            sxc[i] = np.int32(acc[i])
        _ax_sx(sxc, ax, sx, np.int64(ic * k * k), axsx)


@numba.njit(cache=True, nogil=True)
def gemm_finish(d, sxc, axsx, n, ic, ih, iw, k, ax, xm, sx, aw, sw, aadd, bnt, seg, prog, sorted_starts, min_start,
                pool_type, pool_first, out, acc, cv, cv32, bvs, pooled, pooled32, u, fl, tv):
    """Second half of a GEMM layer: every output channel of batch ``n`` from D = ``d`` [OC, IH·IW]
    (f32, or i32 when summed in chunks), see :func:`_channel_out`; returns the last error. The
    work arrays are :func:`work_arrays`'."""
    d, sxc, axsx, bnt, seg, prog, out = _borrow(d), _borrow(sxc), _borrow(axsx), _borrow(bnt), _borrow(seg), \
        _borrow(prog), _borrow(out)
    cv, cv32, bvs, pooled, pooled32, u, tv = _borrow(cv), _borrow(cv32), _borrow(bvs), _borrow(pooled), \
        _borrow(pooled32), _borrow(u), _borrow(tv)
    regs = (np.int64(ic * k * k), np.int64(ic), np.int64(ax), np.int64(xm), np.int64(sx), np.int64(aw), np.int64(sw),
            np.int64(aadd))
    of = out.reshape(out.size)
    err = ERR_NONE
    for o in range(d.shape[0]):
        e = _channel_out(d[o], sxc, axsx, o, n, ih, iw, regs, bnt, seg, prog, sorted_starts, min_start, pool_type,
                         pool_first, out, of, cv, cv32, bvs, pooled, pooled32, u, tv)
        if e != ERR_NONE:
            err = e
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


@numba.njit(cache=True, nogil=True)
def _ram_copy(ram, start, x, to_ram):
    """Copy between x u8 [N, C, H, W] and its tensor at byte ``start`` of KPU RAM, element
    positions only (C.3; as kpu.layout, bounds checked by the caller): into RAM with ``to_ram``."""
    n_b, c_n, h, w = x.shape
    g, l, p = _row_layout(w)
    line = l * 64
    s = line * h * ((c_n + g - 1) // g)
    xf = x.reshape(x.size)
    uw, uline = U64(w), U64(line)
    for n in range(n_b):
        for c in range(c_n):
            base = U64(start + n * s + (c // g) * (line * h) + (c % g) * p)
            d = U64((n * c_n + c) * h) * uw
            for y in range(U64(h)):
                r = base + y * uline
                o = d + y * uw
                if to_ram:
                    for i in range(uw):
                        ram[r + i] = xf[o + i]
                else:
                    for i in range(uw):
                        xf[o + i] = ram[r + i]


@numba.njit(cache=True, nogil=True)
def ram_download(ram, start, x):
    """x[n, c, y, :] = the tensor's elements in KPU RAM at byte ``start`` (the same bytes as
    kpu.layout.kpu_download)."""
    _ram_copy(ram, start, x, False)


@numba.njit(cache=True, nogil=True)
def ram_upload(ram, start, x):
    """Store x u8 [N, C, H, W] into KPU RAM at byte ``start`` (as kpu.layout.kpu_upload)."""
    _ram_copy(ram, start, x, True)
