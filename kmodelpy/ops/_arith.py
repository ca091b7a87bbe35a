"""Shared arithmetic of the runtime kernels (runtime spec §0 and §B.2).

Integer helpers (all numba-compiled on first use, usable from other ``@njit`` kernels):

* :func:`wrap_i32` — two's-complement wrap of an integer to i32 (C ``int32_t`` overflow on x86).
* :func:`carry_shift` — the runtime's plain ``carry_shift`` (RHU): ``asr(v + 2^(s-1), s)``,
  round half toward +inf, ``s`` a u8. Shift counts are masked to 6 bits as x86 ``sal``/``sar`` do,
  which only matters for ``s >= 64`` (undefined in C, unreachable for ncc-made models).
* :func:`mul_and_carry_shift` — MCS: ``RHU(i64(v)·i64(m), s & 0xFF)`` truncated to i32.
* :func:`tdiv` — C integer division (truncating toward zero).
* :func:`get_out` — windowed output size ``tdiv(in + before + after − ((f−1)·dil + 1) + stride, stride)``.
* :func:`tap_range` — the valid tap range ``[k0, k1)`` of one output (§B.2), per output;
  :func:`tap_out_range` — the same relation seen from one tap, for tap-major loops.

f32 helpers with the ``std::`` NaN semantics of §0: :func:`f32_min` (``b < a ? b : a``),
:func:`f32_max` (``a < b ? b : a``), :func:`clamp` (``v < lo ? lo : hi < v ? hi : v``; NaN passes),
plus the numpy (vectorised, same semantics) :func:`np_min`, :func:`np_max`, :func:`np_clamp`.

Caution: numba's on-disk cache of a kernel in *another* module is keyed on that module's file only,
so after editing a helper here delete the ``*.nbi``/``*.nbc`` files in ``kmodelpy/ops/__pycache__``.

Pure-python :func:`rhu_py` / :func:`mcs_py` state the same integer rules with unbounded ints,
for tests and for compile-time code that must not start numba.
"""
from __future__ import annotations

import numba
import numpy as np

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF


# ---------------------------------------------------------------- integer helpers (numba)
@numba.njit(cache=True, nogil=True)
def wrap_i32(v):
    """Wrap an integer (int64 in numba) to the i32 range, two's complement."""
    v = v & 0xFFFFFFFF
    if v >= 0x80000000:
        v -= 0x100000000
    return v


@numba.njit(cache=True, nogil=True)
def carry_shift(v, s):
    """RHU(v, s) on i64 ``v`` with u8 ``s`` (§B.2): ``v`` if s == 0, else ``asr(v + 2^(s−1), s)``.
    The add wraps modulo 2^64 and shift counts are taken modulo 64 (x86 behaviour)."""
    s = s & 0xFF
    if s == 0:
        return np.int64(v)
    add = np.int64(1) << np.int64((s - 1) & 63)
    return (np.int64(v) + add) >> np.int64(s & 63)


@numba.njit(cache=True, nogil=True)
def mul_and_carry_shift(v, m, s):
    """MCS(v, m, s) = i32(RHU(i64(v)·i64(m), s & 0xFF)) (§B.2); returns an int64 in the i32 range."""
    return wrap_i32(carry_shift(np.int64(v) * np.int64(m), s))


@numba.njit(cache=True, nogil=True)
def tdiv(a, b):
    """C integer division (truncates toward zero); ``b`` must not be 0."""
    q = a // b
    if q < 0 and q * b != a:
        q += 1
    return q


@numba.njit(cache=True, nogil=True)
def clamp_u8(v):
    """``(uint8)std::clamp(v, 0, 255)``."""
    if v < 0:
        return 0
    if v > 255:
        return 255
    return v


@numba.njit(cache=True, nogil=True)
def tap_range(o, stride, pad_before, dil, size, f):
    """Valid tap range ``[k0, k1)`` of output ``o`` (§B.2) and the window origin ``org``: taps
    ``k`` in the range read input ``org + dil·k``; padding taps are skipped."""
    org = o * stride - pad_before
    k0 = max(0, tdiv(-org + dil - 1, dil))
    k1 = min(f, tdiv(size - org + dil - 1, dil))
    return org, k0, k1


@numba.njit(cache=True, nogil=True)
def tap_out_range(base, size, stride, out_size):
    """The outputs ``o`` in ``[o0, o1)`` for which one filter tap reads inside the image:
    ``0 <= o·stride + base < size`` (``stride > 0``), clipped to ``[0, out_size)``. Equivalent to the
    per-output valid tap range of §B.2 seen from the tap's side, so loops can run tap-major while
    each output still accumulates its taps in the spec's order."""
    o0 = -((base) // stride)  # ceil(-base / stride)
    o1 = -((base - size) // stride)  # ceil((size - base) / stride)
    if o0 < 0:
        o0 = 0
    if o1 > out_size:
        o1 = out_size
    if o1 < o0:
        o1 = o0
    return o0, o1


# ---------------------------------------------------------------- f32 helpers (numba)
@numba.njit(cache=True, nogil=True)
def f32_min(a, b):
    """``std::min(a, b)`` = ``b < a ? b : a``."""
    return b if b < a else a


@numba.njit(cache=True, nogil=True)
def f32_max(a, b):
    """``std::max(a, b)`` = ``a < b ? b : a``."""
    return b if a < b else a


@numba.njit(cache=True, nogil=True)
def clamp(v, lo, hi):
    """``std::clamp(v, lo, hi)``: a NaN ``v`` is returned unchanged."""
    if v < lo:
        return lo
    if hi < v:
        return hi
    return v


# ---------------------------------------------------------------- vectorised f32 helpers (numpy)
def np_min(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise ``std::min`` (not IEEE minNum: NaN handling follows the comparison)."""
    return np.where(b < a, b, a)


def np_max(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise ``std::max``."""
    return np.where(a < b, b, a)


def np_clamp(v: np.ndarray, lo, hi) -> np.ndarray:
    """Elementwise ``std::clamp`` with f32 bounds (NaN passes through)."""
    lo = np.float32(lo)
    hi = np.float32(hi)
    return np.where(v < lo, lo, np.where(hi < v, hi, v)).astype(np.float32, copy=False)


# ---------------------------------------------------------------- pure-python statements
def tdiv_py(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def get_out(size: int, f: int, stride: int, dil: int, before: int, after: int) -> int:
    """Windowed output size (§B.2), with C truncating division."""
    return tdiv_py(size + before + after - ((f - 1) * dil + 1) + stride, stride)


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def rhu_py(v: int, s: int) -> int:
    """RHU with unbounded ints plus the same i64 wrap and 6-bit shift masking as :func:`carry_shift`."""
    s &= 0xFF
    if s == 0:
        return v
    return _signed(v + (1 << ((s - 1) & 63)), 64) >> (s & 63)


def mcs_py(v: int, m: int, s: int) -> int:
    """MCS with Python ints (reference for :func:`mul_and_carry_shift`)."""
    return _signed(rhu_py(_signed(v, 32) * _signed(m, 32), s), 32)


def wrap_i32_py(v: int) -> int:
    return _signed(v, 32)
