"""kmodelpy.newlib.expf: newlib's fdlibm expf (with wf_exp.c's _XOPEN_ limits) bit for bit, fused (the
K210 build, GCC's FMA contractions) and plain (no contraction), against the compiled C
(tests/data/v3/newlib_expf.npz, from kendryte-newlib's ef_exp.c: tests/data/v3/README.md), and within
fdlibm's error bound of exp; expf_plain (MaixPy's region layer) is the plain variant."""
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
        assert expf(f(88.7222), fused) == np.inf  # wf_exp.c (_XOPEN_ mode): above 88.7216796875
        assert np.isfinite(expf(f(88.7216796875), fused)) and expf(f(88.7216796875), fused) > 3.39e38
        assert expf(f(-104.0), fused) == 0
        assert 0 < expf(f(-100.0), fused) < 2.0**-126  # subnormal, rounded once
        assert expf(f(1e-9), fused) == f(1.0) + f(1e-9)


def test_expf_plain_is_the_plain_variant_with_numpy_shapes(compiled_c):
    from kmodelpy.newlib import expf_plain

    x, _, c_plain = compiled_c
    assert (expf_plain(x).view(np.uint32) == c_plain).all()
    s = expf_plain(1.5)
    assert isinstance(s, np.float32) and s == expf(np.float32(1.5), False)
    assert expf_plain(np.zeros((2, 0))).shape == (2, 0)


def test_callable_from_numba_kernels():
    @numba.njit
    def kernel(x):
        return expf(x, True) + expf(x, False)

    assert kernel(np.float32(1.0)) == np.float32(2) * expf(np.float32(1.0))
