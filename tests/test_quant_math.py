"""Unit tests of the compiler's quantization math (compiler spec §0.1, §0.2, §5.1, §7.3, §7.6-7.10, §7.12)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmodelpy.compiler import fused_unary as fu
from kmodelpy.compiler.cpu_quant_params import (
    fused_unary_lut,
    lut_samples,
    quantized_binary_params,
    quantized_conv2d_params,
    quantized_matmul_params,
)
from kmodelpy.compiler.kpu_params import activation_samples, kpu_batch_norm, kpu_conv_params, quantize_kpu_weights
from kmodelpy.compiler.l2_calibration import COUNTER_LIMIT, Histogram, format_cpp_float, print_line
from kmodelpy.compiler.piecewise import piecewise_regression
from kmodelpy.compiler.quant import (
    FLT_MAX,
    FLT_MIN,
    INT32_MIN,
    Range,
    f32_to_i32,
    fixed_mul,
    fixup_range,
    get_quant_param,
    get_range,
    quantize_values,
    round_half_away,
)
from kmodelpy.errors import CompileError
from kmodelpy.format.binio import QuantParam

F32 = np.float32
finite_f32 = st.floats(min_value=-16384.0, max_value=16384.0, allow_nan=False, width=32)


# --------------------------------------------------------------------------- §7.12 reference values


@pytest.mark.parametrize("lo, hi, scale, zp", [
    (-1.5, 3.2, F32(54.25532), 81),
    (0.0, 1.0, F32(255.0), 0),
    (0.2, 0.9, F32(283.33334), 0),
    (-0.001, 0.002, F32(25500.0), 26),
])
def test_get_quant_param_reference_values(lo, hi, scale, zp):
    q = get_quant_param(Range(lo, hi))
    assert (q.zero_point, q.scale) == (zp, scale)
    assert isinstance(q.scale, np.float32)


@pytest.mark.parametrize("v, max_bits, max_shift, mul, shift", [
    (0.00118, 22, 255, 1267015.375, 30),
    (2.0**-15, 16, 20, 32.0, 20),
    (25.5, 16, 16, 26112.0, 10),
])
def test_fixed_mul_reference_values(v, max_bits, max_shift, mul, shift):
    m = fixed_mul(F32(v), max_bits, max_shift, True)
    assert (float(m.mul), m.shift) == (mul, shift)


def test_fixup_range_recomputes_max_and_contains_zero():
    assert fixup_range(Range(-1.5, 3.2)) == Range(-1.5, F32(3.1999998))
    assert fixup_range(Range(0.2, 0.9)) == Range(0.0, 0.9)
    assert fixup_range(Range(-5.0, -4.0)) == Range(-5.0, 0.0)
    assert fixup_range(Range(2.0, 2.0)) == Range(0.0, F32(2.1))  # width 0 -> 0.1, then min -> 0
    assert fixup_range(Range(-3000.0, 5000.0)) == Range(-1000.0, 1000.0)


def test_get_range_quirks():
    # QUIRK 1: max starts at FLT_MIN, so an all-negative tensor gets max = 1.1754944e-38
    r = get_range(np.array([-3.0, -1.0], F32))
    assert r.min == F32(-3.0) and r.max == FLT_MIN
    assert get_range(np.array([], F32)) == Range(FLT_MAX, FLT_MIN)
    r = get_range(np.array([np.nan, -np.inf, 2.0, np.inf, -0.5], F32))
    assert (r.min, r.max) == (F32(-0.5), F32(2.0))


def test_scalar_conversions():
    assert [float(round_half_away(F32(v))) for v in (0.5, -0.5, 2.5, -2.5, 0.49999997, 1.4999999)] == \
        [1.0, -1.0, 3.0, -3.0, 0.0, 1.0]
    assert f32_to_i32(3e9) == INT32_MIN and f32_to_i32(-3e9) == INT32_MIN and f32_to_i32(float("nan")) == INT32_MIN
    assert f32_to_i32(-2147483648.0) == INT32_MIN and f32_to_i32(2147483520.0) == 2147483520
    assert f32_to_i32(-7.9) == -7


def test_fixed_mul_shift_wraps_as_int8_and_can_be_negative():
    m = fixed_mul(F32(2.0**-120), 22, 255, True)  # shift 21 + 119 = 140 -> int8 -116
    assert m.shift == 140 - 256 and float(m.mul) == 2.0**20
    m = fixed_mul(F32(2.0**30), 16, 20, True)  # |v| >= 2^bits: negative shift
    assert m.shift == 15 - 31 and float(m.mul) == 2.0**14
    assert fixed_mul(F32(0.0), 32, 32, True).shift == 0
    m = fixed_mul(F32(1.0 - 2.0**-24), 16, 20, True)  # roundf(mul) reaches exactly 2^15
    assert m.rounded_mul == 32768


@settings(max_examples=300, deadline=None)
@given(finite_f32, finite_f32)
def test_get_quant_param_range_contains_zero(a, b):
    r = Range(min(a, b), max(a, b))
    f = fixup_range(r)
    assert f.min <= 0 <= f.max and f.max - f.min >= F32(0.01) * F32(0.99)
    q = get_quant_param(r)
    assert 0 <= q.zero_point <= 255
    assert q.scale > 0 and np.isfinite(q.scale)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=2.0**-20, max_value=2.0**20, allow_nan=False, width=32),
       st.sampled_from([(22, 255), (16, 20), (32, 32), (16, 16), (32, 255)]))
def test_fixed_mul_reconstructs_value(v, cfg):
    bits, max_shift = cfg
    m = fixed_mul(F32(v), bits, max_shift, True)
    assert float(m.mul) == math.ldexp(float(F32(v)), m.shift) or m.shift == max_shift
    if 0 < m.shift < max_shift:
        approx = math.ldexp(m.rounded_mul, -m.shift)
        assert abs(approx - float(F32(v))) <= float(F32(v)) * 2.0 ** -(bits - 1)
        assert abs(m.rounded_mul) <= 2 ** (bits - 1)


def test_quantize_values_rounds_half_away_and_saturates():
    q = QuantParam(zero_point=10, scale=F32(2.0))
    x = np.array([-10, -5.25, -4.75, 0.25, 0.75, 200, np.nan], F32)
    assert quantize_values(x, q).tolist() == [0, 0, 1, 11, 12, 255, 0]


# --------------------------------------------------------------------------- piecewise regression


def test_identity_fit_merges_ties_into_one_long_segment():
    q = QuantParam(93, F32(53.582558))
    xs = activation_samples(q, -FLT_MAX, FLT_MAX)
    segs = piecewise_regression(xs, xs, 15)
    assert len(segs) == 15
    assert segs[0].start == xs[0] and segs[0].stop == xs[1009]
    assert [s.start for s in segs[1:]] == list(xs[1009:1023])
    assert segs[-1].stop == xs[-1]
    assert all(s.slope == F32(1.0) for s in segs)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=-50.0, max_value=50.0, allow_nan=False, width=32), min_size=17, max_size=80),
       st.floats(min_value=-3.0, max_value=3.0, allow_nan=False, width=32))
def test_piecewise_regression_keeps_endpoints(ys, lo):
    xs = (F32(lo) + np.arange(len(ys), dtype=F32) * F32(0.25)).astype(F32)
    ys = np.array(ys, F32)
    segs = piecewise_regression(xs, ys, 15)
    assert len(segs) == 15
    assert segs[0].start == xs[0] and segs[-1].stop == xs[-1]
    assert all(a.stop == b.start for a, b in zip(segs, segs[1:]))
    starts = [s.start for s in segs]
    assert set(starts) <= set(xs.tolist()) and starts == sorted(starts)
    for s in segs:  # intercepts are the sample y at the segment start
        assert s.intercept == ys[np.flatnonzero(xs == s.start)[0]]


def test_piecewise_regression_first_minimum_wins():
    # slopes 1, 2, 4, 8, ... : the smallest difference is between the first two
    xs = np.arange(18, dtype=F32)
    ys = np.concatenate([[0], np.cumsum(2.0 ** np.arange(17))]).astype(F32)
    segs = piecewise_regression(xs, ys, 15)
    assert segs[0].start == 0 and segs[0].stop == 3  # two merges at index 0
    assert segs[1].start == 3 and segs[1].stop == 4


def test_piecewise_regression_needs_points():
    with pytest.raises(CompileError):
        piecewise_regression(np.arange(15, dtype=F32), np.arange(15, dtype=F32), 15)


# --------------------------------------------------------------------------- fused_unary


def test_concat_and_nnil_compilation():
    neg = (fu.FuOp.ldx(), fu.FuOp.unary("neg", 0))
    exp = (fu.FuOp.ldx(), fu.FuOp.unary("exp", 0))
    add1 = (fu.FuOp.ldx(), fu.FuOp.constant(1.0), fu.FuOp.binary("add", 1, 0))
    p = fu.concat(fu.concat(neg, exp), add1)
    assert p == (fu.FuOp.ldx(), fu.FuOp.unary("neg", 0), fu.FuOp.unary("exp", 1), fu.FuOp.constant(1.0),
                 fu.FuOp.binary("add", 3, 2))
    assert fu.compile_nnil(p) == bytes([0x06]) + np.float32(1).tobytes() + bytes([0x03, 0x26, 0x23, 0x40, 0xA0])
    # a later ldx of f2 becomes identity(result of f1)
    two = (fu.FuOp.ldx(), fu.FuOp.ldx(), fu.FuOp.binary("mul", 0, 1))
    assert fu.concat(neg, two) == (fu.FuOp.ldx(), fu.FuOp.unary("neg", 0), fu.FuOp.identity(1),
                                   fu.FuOp.binary("mul", 1, 2))
    with pytest.raises(CompileError):
        fu.concat(neg, fu.concat(neg, two))  # identity inside f2: ncc throws


def test_nnil_reuses_values_with_dup_and_evaluates_in_float32():
    sq2 = (fu.FuOp.ldx(), fu.FuOp.unary("square", 0), fu.FuOp.binary("add", 1, 1))
    assert fu.compile_nnil(sq2) == bytes([0x03, 0x29, 0x01, 0x40, 0xA0])
    x = np.array([1.5, -3.0, 0.1], F32)
    assert np.array_equal(fu.evaluate(sq2, x), ((x * x).astype(F32) * F32(2)).astype(F32))
    leaky = (fu.FuOp.ldx(), fu.FuOp.constant(0.1), fu.FuOp.binary("mul", 0, 1), fu.FuOp.ldx(),
             fu.FuOp.binary("max", 3, 2))
    assert fu.compile_nnil(leaky) == bytes([0x03, 0x03, 0x06]) + F32(0.1).tobytes() + bytes([0x42, 0x45, 0xA0])
    assert fu.evaluate(leaky, np.array([-2.0, 3.0], F32)).tolist() == [float(F32(-2.0) * F32(0.1)), 3.0]
    with pytest.raises(CompileError):
        fu.compile_nnil((fu.FuOp.ldx(), fu.FuOp.constant(0), fu.FuOp.constant(1), fu.FuOp.clamp(0, 1, 2)))


def test_sigmoid_program_uses_glibc_expf():
    from kmodelpy.ops._libm import ctypes_call

    sig = (fu.FuOp.ldx(), fu.FuOp.unary("neg", 0), fu.FuOp.unary("exp", 1), fu.FuOp.constant(1.0),
           fu.FuOp.binary("add", 3, 2), fu.FuOp.constant(1.0), fu.FuOp.binary("div", 5, 4))
    x = np.linspace(-8, 8, 301, dtype=F32)
    ref = (F32(1) / (F32(1) + ctypes_call("expf", -x)).astype(F32)).astype(F32)
    assert np.array_equal(fu.evaluate(sig, x), ref)


# --------------------------------------------------------------------------- l2


def test_histogram_counters_saturate_like_float32():
    h = Histogram(fixup_range(Range(0.0, 1.0)))
    h.bins[0] = F32(2**24 - 3)
    h.record(np.zeros(7, F32))
    seq = F32(2**24 - 3)
    for _ in range(7):
        seq = F32(seq + F32(1))
    assert h.bins[0] == seq == COUNTER_LIMIT
    h.record(np.array([1.0, 5.0, -3.0], F32))  # clamped into the end bins
    assert h.bins[2047] == 2 and h.bins[0] == COUNTER_LIMIT + 0


def _reference_search(h: Histogram):
    """Straight transcription of §7.3 (float accumulator, double square), nonzero bins only."""
    H, itv = h.range, h.interval
    z = h.zero_threshold()
    p_int = F32(F32(H.max - H.min) / F32(2048))
    nz = np.flatnonzero(h.bins)
    best, pair = FLT_MAX, None
    for lo in range(z + 1):
        hi = 2048
        while hi >= lo + 256 and hi >= z:
            qmin = F32(F32(F32(lo) * itv) + H.min)
            qmax = F32(F32(F32(hi) * itv) + H.min)
            q_int = F32(F32(qmax - qmin) / F32(255))
            d = F32(0)
            for i in nz:
                pv = F32(H.min + F32(p_int * F32(i)))
                k = min(max(int(round_half_away(F32(F32(pv - qmin) / q_int))), 0), 255)
                qv = F32(qmin + F32(q_int * F32(k)))
                diff = float(F32(pv - qv))
                d = F32(float(d) + diff * diff * float(h.bins[i]))
            if d < best:
                best, pair = d, (lo, hi)
            hi -= 1
    return pair


@settings(max_examples=6, deadline=None)
@given(st.lists(st.floats(min_value=-0.0078125, max_value=1.0, allow_nan=False, width=32), min_size=1, max_size=6),
       st.lists(st.integers(min_value=1, max_value=50), min_size=6, max_size=6))
def test_l2_search_matches_reference_and_stays_in_range(values, counts):
    data = np.repeat(np.array(values, F32), counts[: len(values)])
    h = Histogram(fixup_range(get_range(data)))
    h.record(data)
    lo, hi = h.optimal_thresholds()
    assert (lo, hi) == _reference_search(h)
    opt = h.optimal_range()
    assert h.range.min <= opt.min <= 0 <= opt.max <= h.range.max or opt.max == h.range.max
    assert hi - lo >= 256


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_l2_pruning_never_changes_the_optimum(seed):
    from kmodelpy.compiler.l2_calibration import _search

    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.gamma(2.0, size=4000) - 0.2, rng.laplace(size=300) * 3]).astype(F32)
    h = Histogram(fixup_range(get_range(x)))
    h.record(x)
    nz = np.flatnonzero(h.bins).astype(np.int64)
    args = (h.bins[nz].astype(F32), nz, h.range.min, h.range.max, h.interval, h.zero_threshold())
    assert h.zero_threshold() > 0
    assert _search(*args, True) == _search(*args, False)


def test_l2_print_line_uses_cpp_default_float_format():
    assert print_line(Range(0.0, 6.0), Range(0.0, F32(5.98828125))) == "{0, 6} -> {0, 5.98828}"
    assert format_cpp_float(F32(1e-5)) == "1e-05" and format_cpp_float(F32(-123456789.0)) == "-1.23457e+08"
    assert format_cpp_float(F32(0.999512)) == "0.999512"


# --------------------------------------------------------------------------- KPU parameters


def test_kpu_weights_equalisation_stretches_each_channel_into_the_total_range():
    w = np.array([[[[1.0]]], [[[-0.5]]], [[[0.25]]], [[[-2.0]]]], F32)
    w = np.concatenate([w, -w / F32(4)], axis=1)  # [4, 2, 1, 1]
    kw = quantize_kpu_weights(w)
    t = fixup_range(get_range(w))
    scaled = (w * kw.w_scale[:, None, None, None]).astype(F32)
    assert get_range(scaled).min >= t.min and get_range(scaled).max <= t.max
    assert kw.codes.dtype == np.uint8 and kw.codes.shape == w.shape
    assert np.array_equal(kw.codes, quantize_values(scaled, kw.wq))


def _ncc_equalisation_scales(w):
    """ncc's per-channel scales as written (0/0 = NaN kept), for comparison with kmodelpy's."""
    t = fixup_range(get_range(w))
    out = []
    with np.errstate(all="ignore"):
        for oc in range(w.shape[0]):
            r = fixup_range(get_range(w[oc]))
            s1, s2 = F32(F32(t.max) / F32(r.max)), F32(F32(t.min) / F32(r.min))
            if s1 < 0 or s2 < 0:
                out.append(s2 if s1 < s2 else s1)  # std::max
            else:
                out.append(s2 if s2 < s1 else s1)  # std::min
    return np.array(out, F32)


def test_kpu_weights_all_non_positive_tensor_is_finite_deviation_d7():
    """D7: a weight tensor <= 0 gives ncc T.max/R.max = 0/0 = NaN scales; kmodelpy uses T.min/R.min instead,
    so the equalised weights span the tensor's range and dequantize back to the float weights."""
    rng = np.random.default_rng(7)
    w = -np.abs(rng.normal(size=(5, 3, 3, 2))).astype(F32)
    w[3] = 0.0                # an all-zero channel: scale 1
    w[4] *= F32(0.001)        # a channel with only tiny negatives: stretched into the range
    assert np.isnan(_ncc_equalisation_scales(w)).any()
    kw = quantize_kpu_weights(w)
    assert np.isfinite(kw.w_scale).all() and (kw.w_scale > 0).all()
    assert kw.w_scale[3] == 1.0
    t = fixup_range(get_range(w))
    for oc in (0, 1, 2, 4):
        assert kw.w_scale[oc] == F32(F32(t.min) / F32(fixup_range(get_range(w[oc])).min))
    deq = (kw.codes.astype(np.float64) - kw.wq.zero_point) / float(kw.wq.scale) / kw.w_scale[:, None, None, None]
    per_ch_step = 1.0 / float(kw.wq.scale) / kw.w_scale
    assert (np.abs(deq - w).max(axis=(1, 2, 3)) <= per_ch_step * 0.5 + 1e-7).all()


@pytest.mark.parametrize("seed", range(20))
def test_kpu_weights_d7_changes_nothing_where_ncc_is_finite(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 6)), 2, 3, 3)
    w = rng.normal(size=shape).astype(F32)
    kind = seed % 4
    if kind == 1:
        w = np.abs(w)                      # all >= 0: s2 = 0/0, std::min(s1, NaN) = s1
    elif kind == 2:
        w[0] = 0.0                         # an all-zero channel in a mixed tensor
    elif kind == 3:
        w[-1] *= F32(1e-4)                 # a channel much narrower than the tensor
    ncc = _ncc_equalisation_scales(w)
    assert np.isfinite(ncc).all()
    assert np.array_equal(quantize_kpu_weights(w).w_scale, ncc)


def test_bn_add_out_of_int32_is_int_min_for_both_signs():
    iq, wq, yq = QuantParam(0, F32(255.0)), QuantParam(128, F32(300.0)), QuantParam(128, F32(50.0))
    mul, shift, add, s_act_in = kpu_batch_norm(np.array([3000.0, -3000.0, 0.5], F32), np.ones(3, F32), iq, wq, yq)
    assert abs(3000.0 * s_act_in) >= 2**31
    assert add[0] == add[1] == INT32_MIN
    assert add[2] == int(round_half_away(0.5 * s_act_in))
    assert (shift <= 15).all() and (np.abs(mul) < 2**21 + 1).all()


def test_kpu_conv_params_fields_and_act0():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 3, 3, 3)).astype(F32)
    b = rng.normal(size=4).astype(F32)
    iq, yq = QuantParam(3, F32(200.0)), QuantParam(100, F32(40.0))
    p = kpu_conv_params(w, b, (F32(0.0), FLT_MAX), iq, yq)
    assert p.zq == yq and p.pad_value == 3 and p.arg_w == -3 and p.arg_x == -p.wq.zero_point
    assert p.arg_add == 9 * p.wq.zero_point * 3 and p.shift_x == p.shift_w == 0
    # D45: segment 0 holds every pre-activation <= 0, which the RELU maps to 0.0 = code yq.zp (ncc: code 0)
    assert (p.act_start_x[0], p.act_mul[0], p.act_shift[0], p.act_add[0]) == (-(2**35), 0, 0, 100)
    assert p.act_start_x[1] == 0  # RELU clamps xf_min to 0
    # without a clamp the fitted range starts at yq's code 0 and segment 0 is ncc's (0 → code 0)
    q = kpu_conv_params(w, b, (-FLT_MAX, FLT_MAX), iq, yq)
    assert (q.act_start_x[0], q.act_mul[0], q.act_shift[0], q.act_add[0]) == (-(2**35), 0, 0, 0)
    assert np.all(np.diff(p.act_start_x) > 0)
    assert p.batch_norm().pack().shape == (4,) and len(p.activation_table().to_bytes()) == 144
    with pytest.raises(CompileError):
        kpu_conv_params(rng.normal(size=(2, 1, 5, 5)).astype(F32), np.zeros(2, F32), (-FLT_MAX, FLT_MAX), iq, yq)


# --------------------------------------------------------------------------- CPU quantized ops


def test_cpu_quantized_params():
    iq, wq_in, yq = QuantParam(10, F32(100.0)), QuantParam(128, F32(127.5)), QuantParam(50, F32(20.0))
    b = quantized_binary_params("add", iq, wq_in, yq)
    assert (b.input_a_mul, b.input_a_shift) == (fixed_mul(F32(127.5), 16, 16).rounded_mul, fixed_mul(F32(127.5), 16, 16).shift)
    assert (b.input_b_mul, b.input_b_shift) == (25600, 8)  # 100 = 0.78125·2^7 -> shift min(16, 15-7)
    assert (b.input_a_offset, b.input_b_offset, b.output_offset) == (-10, -128, 50)
    m = quantized_binary_params("mul", iq, wq_in, yq)
    assert (m.input_a_mul, m.input_a_shift, m.input_b_mul, m.input_b_shift) == (1, 0, 1, 0)
    d = quantized_binary_params("div", iq, wq_in, yq)
    assert (d.input_b_mul, d.input_b_shift) == (1, 0)
    assert d.output_mul == fixed_mul(F32(F32(20.0) / F32(100.0)), 32, 32).rounded_mul
    with pytest.raises(CompileError):
        quantized_binary_params("pow", iq, wq_in, yq)

    mm = quantized_matmul_params(np.array([1.0, -2.5e9], F32), iq, wq_in, yq)
    sa = F32(F32(100.0) * F32(127.5))
    assert mm.bias[0] == int(round_half_away(F32(sa))) and mm.bias[1] == INT32_MIN
    assert mm.output_shift == min(32, 31 - math.frexp(float(F32(F32(20.0) / sa)))[1])

    w = np.linspace(-1, 2, 2 * 3 * 3 * 3, dtype=F32).reshape(2, 3, 3, 3)
    qc = quantized_conv2d_params(w, np.array([0.5, -0.5], F32), iq, yq)
    assert qc.wq == get_quant_param(Range(-1.0, 2.0)) and qc.filter_offset == -qc.wq.zero_point
    assert qc.weights.min() == 0 and qc.weights.max() == 255


def test_lut_samples_span_the_input_code_range():
    iq = QuantParam(255, F32(6.052966))
    xs = lut_samples(iq)
    assert xs[0] == F32(F32(-255) / iq.scale) and abs(float(xs[-1])) < 1e-5
    lut = fused_unary_lut((fu.FuOp.ldx(), fu.FuOp.unary("exp", 0)), iq, QuantParam(0, F32(255.0)))
    assert lut.dtype == np.uint8 and lut[-1] == 255 and lut[0] == 0 and np.all(np.diff(lut.astype(int)) >= 0)
