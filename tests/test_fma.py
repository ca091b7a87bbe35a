"""kmodelpy.fma: fmaf is the exactly rounded a*b + c (checked against rational arithmetic, including
ties, cancellation, subnormals and overflow, where the naive double sum rounds twice), roundf is C's,
f32_to_i32 is RISC-V's fcvt.w.s."""
from __future__ import annotations

import math

import numpy as np
from f32_exact import fmaf_exact, round_f32
from hypothesis import given, settings
from hypothesis import strategies as st

from kmodelpy.fma import f32_to_i32, fmaf, fmaf_array, roundf

f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


def _same(a, b) -> bool:
    a, b = np.float32(a), np.float32(b)
    return (np.isnan(a) and np.isnan(b)) or a.tobytes() == b.tobytes()


def _naive(a, b, c) -> np.float32:
    with np.errstate(all="ignore"):
        return np.float32(np.float64(np.float32(a)) * np.float64(np.float32(b)) + np.float64(np.float32(c)))


@st.composite
def short_mantissas(draw):
    """float32 values with few significant bits at chosen exponents: products and sums land exactly
    on or next to float32 rounding boundaries (ties, exact cancellation)."""
    def one():
        m = draw(st.integers(-(1 << 13), 1 << 13))
        e = draw(st.integers(-160, 100))
        return np.float32(math.ldexp(m, e)) if abs(math.ldexp(m, e)) < 3e38 else np.float32(m)
    return one(), one(), one()


@st.composite
def cancelling(draw):
    """c close to -a*b: catastrophic cancellation, the low bits of the product decide."""
    a, b = draw(finite32), draw(finite32)
    p = np.float32(np.float64(a) * np.float64(b)) if abs(np.float64(a) * np.float64(b)) < 3e38 else np.float32(1)
    k = draw(st.integers(-4, 4))
    c = np.nextafter(-p, np.float32(np.inf) if k > 0 else np.float32(-np.inf), dtype=np.float32)
    for _ in range(abs(k) - 1):
        c = np.nextafter(c, np.float32(np.inf) if k > 0 else np.float32(-np.inf), dtype=np.float32)
    return a, b, (-p if k == 0 else c)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.tuples(f32, f32, f32), short_mantissas(), cancelling()))
def test_fmaf_is_exact(abc):
    a, b, c = abc
    assert _same(fmaf(a, b, c), fmaf_exact(a, b, c)), (a, b, c)


def test_fmaf_hard_cases_where_the_double_sum_rounds_twice():
    """Cases where float32(float64(a)*b + c) is wrong: the test above can tell the difference."""
    cases = [
        # a*b = 1 + 2^-11 + 2^-24 exactly (a tie for float32) nudged by c = 2^-60: the double sum
        # rounds the nudge away, then float32 rounds the tie to even; the exact result rounds up
        (np.float32(1 + 2**-12), np.float32(1 + 2**-12), np.float32(2**-60)),
        # the same from below with a negative nudge
        (np.float32(1 + 2**-12), np.float32(1 + 2**-12), np.float32(-(2**-60))),
        # subnormal result
        (np.float32(2**-70), np.float32(2**-70), np.float32(2**-149)),
    ]
    differs = 0
    for a, b, c in cases:
        assert _same(fmaf(a, b, c), fmaf_exact(a, b, c))
        differs += not _same(_naive(a, b, c), fmaf_exact(a, b, c))
    assert differs >= 1
    assert fmaf(np.float32(1 + 2**-12), np.float32(1 + 2**-12), np.float32(2**-60)) == np.float32(1 + 2**-11 + 2**-23)


def test_fmaf_array_broadcasts():
    a = np.float32([1.5, -2.0, 3.25])
    out = fmaf_array(a, np.float32(2.0), np.float32([0.5]))
    assert out.dtype == np.float32 and out.tolist() == [3.5, -3.5, 7.0]
    assert fmaf_array(np.zeros((0, 3)), 1, 1).shape == (0, 3)


@settings(max_examples=300, deadline=None)
@given(f32)
def test_roundf_is_c_roundf(x):
    x = np.float32(x)
    got = roundf(x)
    if not np.isfinite(x):
        assert _same(got, x)
        return
    q = abs(float(x))
    want = math.floor(q + 0.5) if q < 2**52 else q  # exact in float64 for any float32
    assert _same(got, np.float32(math.copysign(want, float(x))))


def test_roundf_halves_go_away_from_zero():
    for x, want in [(0.5, 1.0), (-0.5, -1.0), (2.5, 3.0), (-2.5, -3.0), (0.49999997, 0.0), (8388607.5, 8388608.0)]:
        assert roundf(np.float32(x)) == np.float32(want)
    assert np.signbit(roundf(np.float32(-0.25)))


@settings(max_examples=200, deadline=None)
@given(f32)
def test_f32_to_i32_is_riscv_fcvt_w_s(x):
    x = np.float32(x)
    got = f32_to_i32(x)
    if np.isnan(x):
        assert got == 2**31 - 1
    elif x >= 2**31:
        assert got == 2**31 - 1
    elif x <= -(2**31):
        assert got == -(2**31)
    else:
        assert got == math.trunc(float(x))


@settings(max_examples=200, deadline=None)
@given(st.fractions(), st.integers(-160, 130))
def test_round_f32_oracle_agrees_with_numpy_on_doubles(q, e):
    """The oracle itself: for a value that is a double, rounding it to float32 once is numpy's cast."""
    v = float(q) * 2.0**e
    if math.isfinite(v) and v != 0:
        from fractions import Fraction

        with np.errstate(over="ignore"):
            assert _same(round_f32(Fraction(v)), np.float32(v))
