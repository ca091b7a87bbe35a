"""The K210 C library's arithmetic that decides numbers: newlib's ``expf`` and ``qsort``.

The K210 toolchain (kendryte-gnu-toolchain v8.2.0-20190409) links kendryte/kendryte-newlib @ 01de41f5:

* ``expf``: RISC-V sets no ``__OBSOLETE_MATH_DEFAULT`` (``libc/include/machine/ieeefp.h``), so the old
  fdlibm code is used: ``libm/math/wf_exp.c`` wraps ``__ieee754_expf`` of ``libm/math/ef_exp.c``.
  ``libm/common/fdlibm.h`` defines ``_XOPEN_MODE`` ("REDHAT LOCAL"), so ``_LIB_VERSION`` is ``_XOPEN_``
  (``s_lib_ver.c``) and the wrapper's checks apply: a finite ``x > 88.7216796875`` gives +inf (HUGE_VAL)
  and ``x < -103.972084`` gives 0, before the fdlibm code's own limits.

  Its last bits depend on how the library was compiled. GCC contracts ``a*b + c`` into a fused
  multiply-add by default (``-ffp-contract=fast``) where the target has one, and the K210's does:

  - :func:`expf` with ``fused=True``: the contractions GCC makes in ef_exp.c with FMA available (read
    in the x86-64 assembly of ``gcc -O2 -mfma``; the kmodel v3 runtime spec, section 3, finds the same
    in the device binary): ``k = (int)fmaf(invln2, x, +-0.5)``, ``hi = fmaf(-t, ln2HI, x)``, the
    polynomial ``P4 + t*P5 ... P1 + t*(...)`` as four fmaf and ``c = fmaf(-t, poly, x)``. The expf of
    the K210 SDK's kmodel v3 runtime (softmax, logistic).
  - ``fused=False`` (and :func:`expf_plain`): every product and sum rounded on its own (the C source read
    literally): what the reference build of MaixPy's region layer computes.

  Everything else is as the C code: float32 operations in source order, the reduction ``x = hi - lo``,
  ``1 - ((x*c)/(c-2) - x)`` for k = 0, ``1 - ((lo - (x*c)/(2-c)) - hi)`` scaled by 2^k otherwise
  (exact, or one rounding for a subnormal result, as the exponent add plus ``* 2^-100``). Both variants
  equal the C compiled both ways (GCC 12.2, ``-O2 -mfma`` / ``-O2 -ffp-contract=off``) on all 2^32
  float32 inputs (docs/v3.md). :func:`expf` is a numba function (kernels call it; compiled on first
  use); :func:`expf_array` and :func:`expf_plain` are the array forms.
* ``qsort``: ``libc/search/qsort.c``, Bentley & McIlroy's quicksort (median of three, ninther above 40
  elements, three-way partition, insertion sort below 7 elements or after a pass without swaps). It is
  not stable: the order it leaves equal elements in is part of the result (MaixPy's NMS depends on it).
"""
from __future__ import annotations

import math
import struct

import numba
import numpy as np

from .fma import fmaf


def _bits(u: int) -> np.float32:
    return np.frombuffer(struct.pack("<I", u), dtype=np.float32)[0]


# fdlibm's constants of ef_exp.c / wf_exp.c (module-level float32 scalars: numba freezes them)
_ONE = np.float32(1.0)
_TWO = np.float32(2.0)
_HALF = np.float32(0.5)
_LN2HI = _bits(0x3F317180)
_LN2LO = _bits(0x3717F7D1)
_INVLN2 = _bits(0x3FB8AA3B)
_P1 = _bits(0x3E2AAAAB)
_P2 = _bits(0xBB360B61)
_P3 = _bits(0x388AB355)
_P4 = _bits(0xB5DDEA0E)
_P5 = _bits(0x3331BB4C)
_O_THRESHOLD = _bits(0x42B17180)  # wf_exp.c: finite x > this -> HUGE_VAL (inf); above ef_exp.c's 0x42b17217
_U_THRESHOLD = _bits(0xC2CFF1B5)  # wf_exp.c: x < this -> 0 (= ef_exp.c's own underflow limit)
_HALF_LN2 = _bits(0x3EB17218)  # |x| > 0.5 ln2: reduce
_THREE_HALF_LN2 = _bits(0x3F851592)  # |x| < 1.5 ln2: k = +-1
_TINY = _bits(0x31800000)  # |x| < 2^-28: 1 + x
_INF = np.float32(np.inf)
_ZERO = np.float32(0.0)


@numba.njit(cache=True, error_model="numpy")
def _mla(a, b, c, fused):
    """``a*b + c``: one fmaf, or a float32 product and a float32 sum."""
    if fused:
        return fmaf(a, b, c)
    return np.float32(a * b) + c


@numba.njit(cache=True, error_model="numpy")
def expf(x, fused=True):
    """newlib's ``expf`` of a float32 (see the module docstring for ``fused``)."""
    x = np.float32(x)
    if x != x:
        return x + x
    if x > _O_THRESHOLD:
        return _INF
    if x < _U_THRESHOLD:
        return _ZERO
    ax = abs(x)
    neg = x < _ZERO
    k = 0
    hi = _ZERO
    lo = _ZERO
    if ax > _HALF_LN2:
        if ax < _THREE_HALF_LN2:
            if neg:
                hi = x + _LN2HI
                lo = -_LN2LO
                k = -1
            else:
                hi = x - _LN2HI
                lo = _LN2LO
                k = 1
        else:
            k = int(_mla(_INVLN2, x, -_HALF if neg else _HALF, fused))
            t = np.float32(k)
            hi = _mla(-t, _LN2HI, x, fused)  # t*ln2HI is exact: the same either way
            lo = t * _LN2LO
        x = hi - lo
    elif ax < _TINY:
        return _ONE + x
    t = x * x
    p = _mla(t, _P5, _P4, fused)
    p = _mla(t, p, _P3, fused)
    p = _mla(t, p, _P2, fused)
    p = _mla(t, p, _P1, fused)
    c = _mla(-t, p, x, fused)
    if k == 0:
        return _ONE - ((x * c) / (c - _TWO) - x)
    y = _ONE - ((lo - (x * c) / (_TWO - c)) - hi)
    # y * 2^k: exact for a normal result (the exponent add), one rounding below (the * 2^-100)
    return np.float32(math.ldexp(np.float64(y), k))


@numba.njit(cache=True, error_model="numpy")
def _expf_loop(x, out, fused):
    for i in range(x.size):
        out[i] = expf(x[i], fused)


def expf_array(x, fused: bool = True) -> np.ndarray:
    """Element-wise :func:`expf` of a float32 array (shape kept)."""
    a = np.asarray(x, dtype=np.float32)
    out = np.empty(a.shape, np.float32)
    if a.size:
        _expf_loop(np.ascontiguousarray(a).reshape(-1), out.reshape(-1), bool(fused))
    return out


def expf_plain(x):
    """newlib's ``expf`` in plain float32 (``fused=False``), element-wise.

    ``x``: a float32 scalar or array (other floats are rounded to float32 first). Returns float32 of the
    same shape (a numpy float32 scalar for a scalar)."""
    out = expf_array(x, fused=False)
    return out[()] if out.ndim == 0 else out


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
