"""newlib's libm as the K210 firmware runs it, callable from numba kernels.

``expf`` is newlib's fdlibm single-precision exponential (``newlib/libm/math/ef_exp.c``,
``__ieee754_expf``), the version the Kendryte toolchain links (kendryte-newlib @ 01de41f5: "obsolete"
math for RISC-V). Its ``wf_exp.c`` wrapper returns ``__ieee754_expf(x)`` unchanged, as newlib is built
for RISC-V without ``_POSIX_MODE`` (``_LIB_VERSION == _IEEE_``, libm/common/s_lib_ver.c): so
x > 88.7228317 (0x42b17217) gives inf, x < -103.972084 (0xc2cff1b5) gives 0, and in between the result
is finite (the POSIX wrapper would return inf from 88.7216797 on).

The last bits depend on how the library was compiled. GCC contracts ``a*b + c`` into a fused
multiply-add by default (``-ffp-contract=fast``) where the target has one, and the K210's does:

* ``fused=True``: the contractions GCC makes in ef_exp.c with FMA available (read in the x86-64
  assembly of ``gcc -O2 -mfma``; the kmodel v3 runtime spec, section 3, finds the same in the
  device binary): ``k = (int)fmaf(invln2, x, ±0.5)``, ``hi = fmaf(-t, ln2HI, x)``, the polynomial
  ``P4 + t*P5 ... P1 + t*(...)`` as four fmaf and ``c = fmaf(-t, poly, x)``. This is the expf of the
  K210 SDK's kmodel v3 runtime (softmax, logistic).
* ``fused=False``: every product and sum rounded separately (the C source read literally, as a
  build without FMA contraction computes it).

Everything else is as the C code: float32 operations in source order, the reduction
``x = hi - lo``, ``1 - ((x*c)/(c-2) - x)`` for k = 0, ``1 - ((lo - (x*c)/(2-c)) - hi)`` scaled by 2^k
otherwise (exact, or one rounding for a subnormal result, as the exponent-add plus ``* 2^-100``).
"""
from __future__ import annotations

import math
import struct

import numba
import numpy as np

from .fma import fmaf


def _bits(u: int) -> np.float32:
    return np.frombuffer(struct.pack("<I", u), dtype=np.float32)[0]


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
_LOG_MAX = _bits(0x42B17217)  # FLT_UWORD_LOG_MAX: x > this -> huge*huge (inf)
_LOG_MIN = _bits(0xC2CFF1B5)  # -FLT_UWORD_LOG_MIN: x < this -> twom100*twom100 (0)
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
    if x > _LOG_MAX:
        return _INF
    if x < _LOG_MIN:
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
    """Element-wise newlib :func:`expf` of a float32 array (shape kept)."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(a)
    if a.size:
        _expf_loop(a.reshape(-1), out.reshape(-1), bool(fused))
    return out
