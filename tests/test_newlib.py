"""kmodelpy.newlib.expf: newlib's fdlibm expf bit for bit, fused (the K210 build, GCC's FMA
contractions) and plain (no contraction), against the compiled C (tests/data/v3/newlib_expf.npz, made
by make_newlib_expf.py from kendryte-newlib's ef_exp.c), and within fdlibm's error bound of exp."""
from __future__ import annotations

import math
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmodelpy.newlib import expf, expf_array

DATA = Path(__file__).parent / "data" / "v3" / "newlib_expf.npz"


@pytest.fixture(scope="module")
def compiled_c():
    z = np.load(DATA)
    return z["x"].view(np.float32), z["fused"], z["plain"]


@pytest.mark.parametrize("fused", [True, False])
def test_bit_exact_against_the_compiled_c(compiled_c, fused):
    x, c_fused, c_plain = compiled_c
    want = c_fused if fused else c_plain
    got = expf_array(x, fused).view(np.uint32)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, [(hex(int(x.view(np.uint32)[i])), hex(int(got[i])), hex(int(want[i]))) for i in bad[:5]]


def test_the_two_builds_differ_where_contraction_matters(compiled_c):
    """The reference data tells fused from plain: a swapped flag would fail the test above."""
    x, c_fused, c_plain = compiled_c
    assert (c_fused != c_plain).sum() > 1000


def _ulps(a: np.float32, exact: float) -> float:
    spacing = float(np.spacing(np.float32(abs(exact)))) if exact != 0 else float(np.spacing(np.float32(0)))
    return abs(float(a) - exact) / spacing


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-103.5, max_value=88.5, width=32), st.booleans())
def test_within_one_ulp_of_exp(x, fused):
    y = expf(np.float32(x), fused)
    exact = math.exp(float(np.float32(x)))
    if exact >= 2.0**-126:  # normal results (subnormal ones lose relative precision)
        assert _ulps(y, exact) < 1.0, (x, y, exact)


def test_special_values_and_thresholds():
    f = np.float32
    for fused in (True, False):
        assert expf(f(0.0), fused) == 1 and expf(f(-0.0), fused) == 1
        assert expf(f(np.inf), fused) == np.inf and expf(f(-np.inf), fused) == 0
        assert np.isnan(expf(f(np.nan), fused))
        assert expf(f(88.72284), fused) == np.inf  # above FLT_UWORD_LOG_MAX
        assert np.isfinite(expf(f(88.7222), fused))  # newlib's IEEE-mode wrapper keeps this finite
        assert expf(f(-104.0), fused) == 0
        assert 0 < expf(f(-100.0), fused) < 2.0**-126  # subnormal, rounded once
        assert expf(f(1e-9), fused) == f(1.0) + f(1e-9)


def test_callable_from_numba_kernels():
    @numba.njit
    def kernel(x):
        return expf(x, True) + expf(x, False)

    assert kernel(np.float32(1.0)) == np.float32(2) * expf(np.float32(1.0))
