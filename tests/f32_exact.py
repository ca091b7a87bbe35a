"""Exact float32 arithmetic for tests: the value of a float32 operation computed with rationals
(``fractions.Fraction``) and rounded once to float32 (nearest, ties to even, subnormals, overflow to
infinity). The independent oracle for :mod:`kmodelpy.fma` and the v3 layer transcriptions."""
from __future__ import annotations

from fractions import Fraction

import numpy as np

F32_MAX_EXP = 128  # values >= 2^128 (after rounding) overflow
F32_MIN_EXP = -126  # smallest normal exponent
MANT = 23


def round_f32(q: Fraction) -> np.float32:
    """``q`` rounded to the nearest float32 (ties to even); +0.0 for 0."""
    if q == 0:
        return np.float32(0.0)
    sign = -1 if q < 0 else 1
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()  # 2^e <= a < 2^(e+2)
    if Fraction(2) ** e > a:
        e -= 1
    elif Fraction(2) ** (e + 1) <= a:
        e += 1
    quantum = Fraction(2) ** (max(e, F32_MIN_EXP) - MANT)
    n = a / quantum
    m = n.numerator // n.denominator
    rest = n - m
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and m % 2 == 1):
        m += 1
    v = m * quantum
    if v >= Fraction(2) ** F32_MAX_EXP:
        return np.float32(sign * np.inf)
    return np.float32(sign * float(v))  # exact: v is a float32 value


def fmaf_exact(a, b, c) -> np.float32:
    """IEEE fma on float32 values: ``a*b + c`` rounded once."""
    a, b, c = np.float32(a), np.float32(b), np.float32(c)
    if not (np.isfinite(a) and np.isfinite(b) and np.isfinite(c)):
        with np.errstate(all="ignore"):
            return np.float32(np.float64(a) * np.float64(b) + np.float64(c))  # inf/nan rules only
    p = Fraction(float(a)) * Fraction(float(b))
    s = p + Fraction(float(c))
    if s == 0:
        prod_neg = (np.signbit(a) != np.signbit(b))
        return np.float32(-0.0) if (p == 0 and prod_neg and np.signbit(c)) else np.float32(0.0)
    return round_f32(s)
