"""Range and quantization helpers of ncc's quantizer, bit-exact (compiler spec §0.1, §0.2, §7.5, §7.11).

Every value here is an IEEE binary32 computed with one rounding per operation, as ncc's release build
does; where ncc mixes in doubles (``std::pow(float, int)`` returns double) the spec says so and the code
below says so too.

* ``get_range``  — §0.2: min starts at +FLT_MAX, max at **FLT_MIN** (smallest positive normal) [QUIRK 1];
  NaN/±inf are skipped.
* ``fixup_range`` — §0.2: clip to ±1000, minimum width 0.01 (0.1 if empty), ``max = min + w`` always
  recomputed, then widen to contain 0.
* ``get_quant_param`` — §0.2: ``qscale = f32(255 / w)``, ``zp = round(−min·qscale)``.
* ``fixed_mul`` — §0.1: frexp-based multiplier/shift with int8 shift wrap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..format.binio import QuantParam

F32 = np.float32
FLT_MAX = F32(np.finfo(np.float32).max)
FLT_MIN = F32(np.finfo(np.float32).tiny)  # 1.17549435e-38, the smallest positive normal
INT32_MIN = -(2**31)


@dataclass(frozen=True)
class Range:
    """A float32 ``{min, max}`` pair (nncase ``value_range<float>``)."""

    min: np.float32
    max: np.float32

    def __post_init__(self):
        object.__setattr__(self, "min", F32(self.min))
        object.__setattr__(self, "max", F32(self.max))

    def union(self, other: "Range") -> "Range":
        """ncc's ``union_range``: ``{min(a.min, b.min), max(a.max, b.max)}`` with std::min/max rules."""
        lo = other.min if other.min < self.min else self.min
        hi = other.max if self.max < other.max else self.max
        return Range(lo, hi)


@dataclass(frozen=True)
class FixedMul:
    """``get_fixed_mul`` result: float32 multiplier and int8 shift; ``rounded_mul`` is what gets written."""

    mul: np.float32
    shift: int

    @property
    def rounded_mul(self) -> int:
        return f32_to_i32(round_half_away(self.mul))


# --------------------------------------------------------------------------- scalar float helpers


def round_half_away(x):
    """C ``round``/``roundf``: half away from zero; keeps the dtype (float32 stays float32, exact)."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    r = _round_away(x)
    return r if r.shape else r[()]


def _round_away(x: np.ndarray) -> np.ndarray:
    # floor(|x|) + (frac >= 0.5), computed without the x+0.5 double-rounding trap.
    a = np.abs(x)
    fl = np.floor(a)
    with np.errstate(invalid="ignore"):  # ±inf (e.g. a 1/x table at x = 0) stays inf, as in C
        up = (a - fl) >= x.dtype.type(0.5)
    return np.copysign(fl + up.astype(x.dtype), x)


def f32_to_i32(x) -> int:
    """x86 ``cvttss2si``/``cvttsd2si``: truncate toward zero; NaN or out of int32 range → −2³¹ (QUIRK 21)."""
    v = float(x)
    if math.isnan(v) or v >= 2147483648.0 or v <= -2147483649.0:
        return INT32_MIN
    return int(math.trunc(v))


def f32_to_i32_array(x: np.ndarray) -> np.ndarray:
    """Vectorised :func:`f32_to_i32` (int64 result array holding int32 values)."""
    x = np.asarray(x, dtype=np.float64)
    bad = np.isnan(x) | (x >= 2147483648.0) | (x <= -2147483649.0)
    out = np.trunc(np.where(bad, 0.0, x)).astype(np.int64)
    out[bad] = INT32_MIN
    return out


def f64_to_i64(x) -> int:
    """x86 double→int64 conversion: truncation; NaN/out of range → −2⁶³."""
    v = float(x)
    if math.isnan(v) or v >= 9.223372036854775808e18 or v < -9.223372036854775808e18:
        return -(2**63)
    return int(math.trunc(v))


# --------------------------------------------------------------------------- §0.2 range helpers


def get_range(values) -> Range:
    """ncc ``quantizer::get_range`` over float32 ``values`` (QUIRK 1: empty → {FLT_MAX, FLT_MIN})."""
    v = np.asarray(values, dtype=np.float32).ravel()
    fin = v[np.isfinite(v)]
    mn, mx = FLT_MAX, FLT_MIN
    if fin.size:
        lo = F32(fin.min())
        hi = F32(fin.max())
        if lo < mn:
            mn = lo
        if lo == 0 and mn == 0:
            # std::min keeps the first zero it met: its sign decides (only matters for printing).
            first_zero = fin[np.flatnonzero(fin == 0)[0]]
            mn = F32(first_zero)
        if mx < hi:
            mx = hi
    return Range(mn, mx)


def fixup_range(r: Range, clamp: bool = True) -> Range:
    """ncc ``quantizer::fixup_range`` in float32 (§0.2). ``clamp=False`` (kmodelpy's ``--no-range-clamp``)
    skips the clip to ±1000 and keeps the minimum-width and contain-zero rules."""
    mn, mx = F32(r.min), F32(r.max)
    if clamp and mn < -1000.0:
        mn = F32(-1000.0)
    if clamp and mx > 1000.0:
        mx = F32(1000.0)
    w = F32(mx - mn)
    if w == 0:
        w = F32(0.1)
    elif w < F32(0.01):
        w = F32(0.01)
    mx = F32(mn + w)
    if mx < 0:
        mx = F32(0.0)
    if mn > 0:
        mn = F32(0.0)
    return Range(mn, mx)


def get_quant_param(r: Range, bits: int = 8, clamp: bool = True) -> QuantParam:
    """ncc ``quantizer::get_quant_param``: ``qscale = f32((2^bits−1)/w)``, ``zp = (int)roundf(−min·qscale)``
    (``clamp``: see :func:`fixup_range`)."""
    r = fixup_range(r, clamp)
    w = F32(r.max - r.min)
    qscale = F32(F32((1 << bits) - 1) / w)
    zp = f32_to_i32(round_half_away(F32(F32(-r.min) * qscale)))
    return QuantParam(zero_point=zp, scale=qscale)


def quant_param_of(values) -> QuantParam:
    """Shorthand: ``get_quant_param(get_range(values))``."""
    return get_quant_param(get_range(values))


# --------------------------------------------------------------------------- §0.1 fixed_mul


def fixed_mul(value, max_bits: int, max_shift: int, signed: bool = True) -> FixedMul:
    """``get_fixed_mul(v, max_bits, max_shift, signed)`` (§0.1).

    ``shift = min(max_shift, bits − e)`` with ``(m, e) = frexp(v)``; ``mul = m·2^(shift+e)`` rounded once to
    float32 (ncc scales by ``std::pow(2.f, n)``, a double); the shift is stored as int8 (wraps).
    """
    v = F32(value)
    bits = max_bits - 1 if signed else max_bits
    if v == 0:
        return FixedMul(F32(0.0), 0)
    m, e = math.frexp(float(v))
    if abs(float(v)) > 1:
        shift = min(max_shift, bits - e)
    else:
        shift = min(max_shift + e, bits) - e
    mul = F32(math.ldexp(m, shift + e)) if math.isfinite(m) else F32(m)  # NaN/inf pass through
    return FixedMul(mul, _wrap_i8(shift))


def _wrap_i8(v: int) -> int:
    return ((v + 128) & 0xFF) - 128


# --------------------------------------------------------------------------- tensors


def quantize_values(x, q: QuantParam) -> np.ndarray:
    """``clamp((int)roundf(f32(f32(x·qscale) + zp)), 0, 255)`` as uint8 (weights, LUT, quantize kernel §7.11)."""
    x = np.asarray(x, dtype=np.float32)
    t = (x * F32(q.scale)).astype(np.float32) + F32(q.zero_point)
    t = _round_away(t.astype(np.float32))
    return np.clip(f32_to_i32_array(t), 0, 255).astype(np.uint8)


def dequantize_values(q_codes, q: QuantParam) -> np.ndarray:
    """``f32((q − zp) · f32(1/qscale))`` (§7.11)."""
    inv = F32(F32(1.0) / F32(q.scale))
    d = (np.asarray(q_codes, dtype=np.int64) - q.zero_point).astype(np.float32)
    return (d * inv).astype(np.float32)


def dequantized_code_range(q: QuantParam) -> tuple[np.float32, np.float32]:
    """Real values of codes 0 and 255: ``f32((0 − zp)/qscale)``, ``f32((255 − zp)/qscale)``."""
    s = F32(q.scale)
    return F32(F32(-q.zero_point) / s), F32(F32(255 - q.zero_point) / s)
