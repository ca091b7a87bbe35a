"""The K210 C library's arithmetic that decides numbers: newlib's ``expf`` and ``qsort``.

The K210 toolchain (kendryte-gnu-toolchain v8.2.0-20190409) links kendryte/kendryte-newlib @ 01de41f5:

* ``expf``: RISC-V sets no ``__OBSOLETE_MATH_DEFAULT`` (``libc/include/machine/ieeefp.h``), so the old
  fdlibm code is used: ``libm/math/wf_exp.c`` wraps ``__ieee754_expf`` of ``libm/math/ef_exp.c``.
  ``libm/common/fdlibm.h`` defines ``_XOPEN_MODE`` ("REDHAT LOCAL"), so ``_LIB_VERSION`` is ``_XOPEN_``
  (``s_lib_ver.c``) and the wrapper's checks apply: a finite ``x > 88.7216796875`` gives +inf (HUGE_VAL)
  and ``x < -103.972084`` gives 0, before the fdlibm code's own limits.
  :func:`expf_plain` is that function in plain IEEE float32 (every operation rounded on its own, no fused
  multiply-add): what the reference build of MaixPy's region layer computes.
* ``qsort``: ``libc/search/qsort.c``, Bentley & McIlroy's quicksort (median of three, ninther above 40
  elements, three-way partition, insertion sort below 7 elements or after a pass without swaps). It is
  not stable: the order it leaves equal elements in is part of the result (MaixPy's NMS depends on it).

Both take numpy arrays; nothing here is compiled, so importing it is cheap.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

_F = np.float32  # fdlibm's constants of ef_exp.c / wf_exp.c (named apart: the module is shared)
_FD = SimpleNamespace(
    one=_F(1.0), two=_F(2.0), huge=_F(1.0e30),
    twom100=_F(7.8886090522e-31),  # 2**-100, 0x0d800000
    ln2hi=(_F(6.9313812256e-01), _F(-6.9313812256e-01)),  # 0x3f317180, 0xbf317180
    ln2lo=(_F(9.0580006145e-06), _F(-9.0580006145e-06)),  # 0x3717f7d1, 0xb717f7d1
    half=(_F(0.5), _F(-0.5)),
    invln2=_F(1.4426950216e+00),  # 0x3fb8aa3b
    p1=_F(1.6666667163e-01), p2=_F(-2.7777778450e-03), p3=_F(6.6137559770e-05),  # 0x3e2aaaab 0xbb360b61 0x388ab355
    p4=_F(-1.6533901999e-06), p5=_F(4.1381369442e-08),  # 0xb5ddea0e 0x3331bb4c
    log_max=0x42B17217,  # FLT_UWORD_LOG_MAX (fdlibm.h, IEEE exponents)
    log_min=0x42CFF1B5,  # FLT_UWORD_LOG_MIN (denormals supported)
    o_threshold=_F(8.8721679688e01),  # wf_exp.c, 0x42b17180
    u_threshold=_F(-1.0397208405e02),  # wf_exp.c, 0xc2cff1b5
)


def expf_plain(x):
    """newlib's ``expf`` (wf_exp.c around fdlibm's ``__ieee754_expf``) in plain float32, element-wise.

    ``x``: a float32 scalar or array (other floats are rounded to float32 first). Returns float32 of the
    same shape (a numpy float32 scalar for a scalar)."""
    a = np.asarray(x, dtype=np.float32)
    scalar = a.ndim == 0
    v = np.array(a, dtype=np.float32, ndmin=1, copy=True)
    with np.errstate(all="ignore"):
        out = _expf_array(v)
        finite = np.isfinite(v)
        out[finite & (v > _FD.o_threshold)] = np.inf  # the wrapper (_XOPEN_): overflow -> HUGE_VAL
        out[finite & (v < _FD.u_threshold)] = _F(0.0)  # underflow -> 0
    return out[0] if scalar else out.reshape(a.shape)


def _expf_array(x: np.ndarray) -> np.ndarray:
    sx = x.view(np.int32).astype(np.int64)
    xsb = (sx >> 31) & 1
    hx = sx & 0x7FFFFFFF
    neg = xsb == 1
    out = np.empty_like(x)
    done = np.zeros(x.shape, dtype=bool)

    nan = hx > 0x7F800000
    out[nan] = x[nan] + x[nan]
    inf = hx == 0x7F800000
    out[inf & ~neg] = x[inf & ~neg]
    out[inf & neg] = _F(0.0)
    done |= nan | inf
    over = ~done & (sx > _FD.log_max)
    out[over] = _FD.huge * _FD.huge
    under = ~done & neg & (hx > _FD.log_min)
    out[under] = _FD.twom100 * _FD.twom100
    done |= over | under
    tiny = ~done & (hx < 0x31800000)  # |x| < 2**-28: huge + x > one, so one + x
    out[tiny] = _FD.one + x[tiny]
    done |= tiny

    # argument reduction (only where |x| > 0.5 ln2): x = hi - lo, exp(x) = 2**k exp(hi - lo)
    hi = np.zeros_like(x)
    lo = np.zeros_like(x)
    k = np.zeros(x.shape, dtype=np.int64)
    mid = ~done & (hx > 0x3EB17218) & (hx < 0x3F851592)  # 0.5 ln2 < |x| < 1.5 ln2
    ln2hi = np.where(neg, _FD.ln2hi[1], _FD.ln2hi[0]).astype(np.float32)
    ln2lo = np.where(neg, _FD.ln2lo[1], _FD.ln2lo[0]).astype(np.float32)
    hi[mid] = x[mid] - ln2hi[mid]
    lo[mid] = ln2lo[mid]
    k[mid] = 1 - 2 * xsb[mid]
    far = ~done & (hx >= 0x3F851592)
    if far.any():
        half = np.where(neg, _FD.half[1], _FD.half[0]).astype(np.float32)
        kf = _FD.invln2 * x[far] + half[far]  # float, then converted to int32 (truncation)
        kk = np.trunc(kf).astype(np.int64)
        t = kk.astype(np.float32)
        hi[far] = x[far] - t * _FD.ln2hi[0]
        lo[far] = t * _FD.ln2lo[0]
        k[far] = kk
    red = mid | far
    xr = x.copy()
    xr[red] = hi[red] - lo[red]

    # x is now in the primary range
    todo = ~done
    xv = xr[todo]
    t = xv * xv
    c = xv - t * (_FD.p1 + t * (_FD.p2 + t * (_FD.p3 + t * (_FD.p4 + t * _FD.p5))))
    kv = k[todo]
    plain = kv == 0
    y = np.empty_like(xv)
    xc = xv * c
    y[plain] = _FD.one - ((xc[plain] / (c[plain] - _FD.two)) - xv[plain])
    sc = ~plain
    y[sc] = _FD.one - ((lo[todo][sc] - (xc[sc] / (_FD.two - c[sc]))) - hi[todo][sc])
    # add k to the exponent of y (k >= -125), or k + 100 and multiply by 2**-100
    low = sc & (kv < -125)
    shift = np.where(low, kv + 100, kv) * (1 << 23)
    hy = (y.view(np.uint32).astype(np.int64) + np.where(sc, shift, 0)) & 0xFFFFFFFF
    y = hy.astype(np.uint32).view(np.float32)
    y[low] = y[low] * _FD.twom100
    out[todo] = y
    return out


# ----------------------------------------------------------------------------------------- qsort
def qsort(a: list, cmp) -> None:
    """newlib's ``qsort`` (libc/search/qsort.c) on the Python list ``a``, in place. ``cmp(x, y)`` returns
    a negative, zero or positive int like the C comparator. The element moves are newlib's, so elements
    that compare equal end up exactly where newlib leaves them."""
    _qsort(a, 0, len(a), cmp)


def _ins_sort(a, base, n, cmp):
    for m in range(base + 1, base + n):
        p = m
        while p > base and cmp(a[p - 1], a[p]) > 0:
            a[p - 1], a[p] = a[p], a[p - 1]
            p -= 1


def _med3(a, i, j, k, cmp):
    if cmp(a[i], a[j]) < 0:
        return j if cmp(a[j], a[k]) < 0 else (k if cmp(a[i], a[k]) < 0 else i)
    return j if cmp(a[j], a[k]) > 0 else (i if cmp(a[i], a[k]) < 0 else k)


def _vecswap(a, i, j, n):
    for q in range(n):
        a[i + q], a[j + q] = a[j + q], a[i + q]


def _qsort(a, base, n, cmp):
    """One call of qsort on a[base:base+n]. newlib keeps the larger part in a loop and sorts the smaller
    part first (through a small explicit stack, or a recursive call); the two parts are disjoint, so
    the order they are sorted in does not change the result."""
    while True:
        if n < 7:
            _ins_sort(a, base, n, cmp)
            return
        pm = base + n // 2
        if n > 7:
            pl = base
            pn = base + n - 1
            if n > 40:
                d = n // 8
                pl = _med3(a, pl, pl + d, pl + 2 * d, cmp)
                pm = _med3(a, pm - d, pm, pm + d, cmp)
                pn = _med3(a, pn - 2 * d, pn - d, pn, cmp)
            pm = _med3(a, pl, pm, pn, cmp)
        a[base], a[pm] = a[pm], a[base]
        pivot_at = base
        pa = pb = base + 1
        pc = pd = base + n - 1
        swapped = False
        while True:
            while pb <= pc:
                r = cmp(a[pb], a[pivot_at])
                if r > 0:
                    break
                if r == 0:
                    swapped = True
                    a[pa], a[pb] = a[pb], a[pa]
                    pa += 1
                pb += 1
            while pb <= pc:
                r = cmp(a[pc], a[pivot_at])
                if r < 0:
                    break
                if r == 0:
                    swapped = True
                    a[pc], a[pd] = a[pd], a[pc]
                    pd -= 1
                pc -= 1
            if pb > pc:
                break
            a[pb], a[pc] = a[pc], a[pb]
            swapped = True
            pb += 1
            pc -= 1
        if not swapped:  # no element moved: newlib switches to insertion sort
            _ins_sort(a, base, n, cmp)
            return
        pn = base + n
        r = min(pa - base, pb - pa)
        _vecswap(a, base, pb - r, r)
        r = min(pd - pc, pn - pd - 1)
        _vecswap(a, pb, pn - r, r)
        left = pb - pa  # size of the part < pivot, at base
        right = pd - pc  # size of the part > pivot, at pn - right
        if right > left:
            big, nbig, small, nsmall = pn - right, right, base, left
        else:
            big, nbig, small, nsmall = base, left, pn - right, right
        if nsmall > 1:
            _qsort(a, small, nsmall, cmp)
        if nbig <= 1:
            return
        base, n = big, nbig
