"""KPU convolution parameters from float weights and calibrated ranges, bit-exact with ncc
(compiler spec §7.6; nncase src/transforms/hlir/k210/kpu_conv2d.cpp ``quantize_weights``,
``quantize_bn``, ``quantize_act``).

Inputs: float weights ``[OC, IC, k, k]`` (depthwise ``[C, 1, k, k]``), float bias, the fake conv's fused
clamp ``act`` (lo, hi), quant params ``iq`` (input), ``yq`` (conv output), ``zq`` (boundary output: the
absorbed fused_unary's output, else ``yq``) and the absorbed fused_unary program, if any.

Float types follow ncc exactly: weights/equalisation/activation samples are float32; ``post_mul``,
``s_act_in``, the per-channel BN multiplier and ``bias·s_act_in`` are double (``std::pow(float, int)``
returns double), see the spec's table in §7.13 for which of these decide kmodel bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CompileError
from ..format.binio import QuantParam
from . import fused_unary as fu
from .piecewise import Segment, piecewise_regression
from .quant import (
    F32,
    f32_to_i32,
    f64_to_i64,
    fixed_mul,
    fixup_range,
    get_quant_param,
    get_range,
    quantize_values,
    round_half_away,
)

ACT_SAMPLES = 1024
ACT_SEGMENTS = 15
X_START_MIN = -(1 << 35)  # act[0].start_x = 0x800000000 in the 36-bit field


@dataclass
class KPUWeights:
    """Equalised, quantized weights: u8 codes in the float weights' layout, per-tensor ``wq``, and the
    per-output-channel equalisation factors ``w_scale`` (float32)."""

    codes: np.ndarray
    wq: QuantParam
    w_scale: np.ndarray


@dataclass
class KPUConvParams:
    """Everything ncc computes for one ``kpu_conv2d`` (values as written, before bitfield masking)."""

    weights: np.ndarray  # u8 [OC, IC, k, k] or [C, 1, k, k]
    wq: QuantParam
    w_scale: np.ndarray  # float32 [OC]
    iq: QuantParam
    yq: QuantParam
    zq: QuantParam
    pad_value: int
    arg_x: int
    shift_x: int
    arg_w: int
    shift_w: int
    arg_add: int
    norm_mul: np.ndarray  # int64 [OC] (S24 field)
    norm_shift: np.ndarray  # int64 [OC] (U4 field)
    norm_add: np.ndarray  # int64 [OC] (S32 field)
    s_act_in: float  # double
    act_start_x: np.ndarray  # int64 [16] (S36 field)
    act_mul: np.ndarray  # int64 [16] (S16 field)
    act_shift: np.ndarray  # int64 [16] (U8 field)
    act_add: np.ndarray  # int64 [16] (u8)
    segments: list[Segment] = field(default_factory=list)

    def batch_norm(self):
        """The :class:`kmodelpy.kpu.layer_args.BatchNorm` words of this layer."""
        from ..kpu.layer_args import BatchNorm

        return BatchNorm(norm_mul=self.norm_mul, norm_add=self.norm_add, norm_shift=self.norm_shift)

    def activation_table(self):
        """The :class:`kmodelpy.kpu.layer_args.ActivationTable` of this layer."""
        from ..kpu.layer_args import ActivationTable

        return ActivationTable(shift_number=self.act_shift, y_mul=self.act_mul, x_start=self.act_start_x,
                               add=self.act_add)


# --------------------------------------------------------------------------- weights


def _std_min(a, b):
    return b if b < a else a


def _std_max(a, b):
    return b if a < b else a


def quantize_kpu_weights(weights) -> KPUWeights:
    """Per-output-channel equalisation into the whole tensor's range, then one per-tensor quantizer.

    ``T = fixup(get_range(W))``; per oc ``R = fixup(get_range(W[oc]))``, ``s1 = T.max/R.max``,
    ``s2 = T.min/R.min`` (IEEE: /0 → ±inf, 0/0 → NaN), ``s = (s1<0 || s2<0) ? max : min`` (std::),
    weights ``*= s`` in float32; ``wq = get_quant_param(get_range(scaled))``.

    Deviation D7 (docs/deviations.md): when a whole tensor is ≤ 0, ``T.max = R.max = 0`` and ncc's
    ``s1 = 0/0 = NaN`` wins ``std::min(NaN, s2)``, poisoning the weights. kmodelpy then uses the other ratio
    s2 (1.0 if that is NaN, infinite or 0, i.e. an all-zero channel). ncc's ``std::min(s1, NaN)`` and
    ``std::max(s1, NaN)`` already return s1, so the result is unchanged whenever ncc's scales are finite.
    """
    w = np.array(weights, dtype=np.float32, copy=True)
    total = fixup_range(get_range(w))
    scales = np.empty(w.shape[0], dtype=np.float32)
    with np.errstate(all="ignore"):
        for oc in range(w.shape[0]):
            r = fixup_range(get_range(w[oc]))
            s1 = F32(np.float32(total.max) / np.float32(r.max))
            s2 = F32(np.float32(total.min) / np.float32(r.min))
            if np.isnan(s1) or total.max == 0:
                # D7: the tensor has no positive side, T.max/R.max says nothing (ncc: 0/0 = NaN, or 0 for a
                # channel with only tiny negatives — such a tensor always has a NaN channel in ncc too)
                s = s2 if (np.isfinite(s2) and s2 > 0) else F32(1.0)
            else:
                # ncc; with s2 = NaN (all-non-negative tensor) std::min/max return s1
                s = _std_max(s1, s2) if (s1 < 0 or s2 < 0) else _std_min(s1, s2)
            w[oc] = (w[oc] * F32(s)).astype(np.float32)
            scales[oc] = s
    wq = get_quant_param(get_range(w), 8)
    return KPUWeights(codes=quantize_values(w, wq), wq=wq, w_scale=scales)


# --------------------------------------------------------------------------- batch norm


MAX_ACT_SHIFT = 20  # largest activation shift_number ncc's fitter produces (fixed_mul max_shift)


def kpu_batch_norm(bias, w_scale, iq: QuantParam, wq: QuantParam, yq: QuantParam):
    """ncc ``quantize_bn``: returns (norm_mul, norm_shift, norm_add, s_act_in).

    ``sa = f32(iq.qscale·wq.qscale)``, ``so = f32(yq.qscale/sa)``, ``(m0, s0) = fixed_mul(so, 22, 255)``,
    ``bn_shift = min(s0, 15)``, ``up = s0 − bn_shift``, ``post_mul = f64(f32(round(m0)/m0))·2^up``,
    ``s_act_in = f64(yq.qscale)·post_mul``; per channel ``fixed_mul(float(so·post_mul/w_scale), 22, 15)``
    and ``add = (int32)round(f64(bias)·s_act_in)`` (out of int32 → −2³¹, QUIRK 21).
    """
    sa = F32(F32(iq.scale) * F32(wq.scale))
    so = F32(F32(yq.scale) / sa)
    bn = fixed_mul(so, 22, 255, True)
    bn_shift = min(bn.shift, 15)
    # Deviation D9: ncc takes up = s0 - bn_shift unbounded, but the activation multiplier's shift caps at 20
    # (fixed_mul(.., 16, 20)), so for up > 20 (so < 2^-15: a tiny input range, e.g. after a ReLU that is
    # almost always 0) the identity slope 2^-up rounds to a wrong multiplier (0.5 -> 1: outputs doubled;
    # 0.25 -> 0: constant output). Capping up at 20 keeps the slope exact and costs the BN multiplier one
    # bit per capped step; every layer with up <= 20 (all reference cases) is unchanged.
    up = min(bn.shift - bn_shift, MAX_ACT_SHIFT)
    if up < 0:
        raise CompileError("KPU conv: batch-norm up-scale is negative (output scale out of range)")
    with np.errstate(all="ignore"):
        ratio = F32(F32(bn.rounded_mul) / F32(bn.mul))
    post_mul = float(ratio) * (2.0**up)
    s_act_in = float(F32(yq.scale)) * post_mul

    bias = np.asarray(bias, dtype=np.float32).ravel()
    n = bias.size
    mul = np.empty(n, np.int64)
    shift = np.empty(n, np.int64)
    add = np.empty(n, np.int64)
    for oc in range(n):
        with np.errstate(all="ignore"):
            ch_so = F32(np.float64(so) * post_mul / np.float64(w_scale[oc]))
        m = fixed_mul(ch_so, 22, 15, True)
        mul[oc] = m.rounded_mul
        shift[oc] = m.shift
        add[oc] = f32_to_i32(round_half_away(np.float64(bias[oc]) * s_act_in))
    return mul, shift, add, s_act_in


# --------------------------------------------------------------------------- activation table


def _std_clamp(v, lo, hi):
    return lo if v < lo else (hi if hi < v else v)


def activation_samples(yq: QuantParam, act_lo, act_hi, count: int = ACT_SAMPLES) -> np.ndarray:
    """``x_i = f32(xf_min + f32(i·step))`` over yq's code 0..255 real range clamped into the fused clamp."""
    xf_min = _std_clamp(F32(F32(0 - yq.zero_point) / F32(yq.scale)), F32(act_lo), F32(act_hi))
    xf_max = _std_clamp(F32(F32(255 - yq.zero_point) / F32(yq.scale)), F32(act_lo), F32(act_hi))
    step = F32(F32(xf_max - xf_min) / F32(count - 1))
    i = np.arange(count, dtype=np.float32)
    return (F32(xf_min) + (i * step).astype(np.float32)).astype(np.float32)


def kpu_activation(s_act_in: float, yq: QuantParam, zq: QuantParam, act_lo, act_hi, program=None, what="KPU conv"):
    """ncc ``quantize_act``: the 16-segment table (start_x, mul, shift, add) and the fitted segments."""
    S = F32(s_act_in)
    zq_scale = F32(S / F32(zq.scale))
    xs = activation_samples(yq, act_lo, act_hi)
    ys = fu.evaluate(program, xs) if program else xs.copy()
    segs = piecewise_regression(xs, ys, ACT_SEGMENTS, what=what)

    start_x = np.zeros(16, np.int64)
    mul = np.zeros(16, np.int64)
    shift = np.zeros(16, np.int64)
    add = np.zeros(16, np.int64)
    start_x[0] = X_START_MIN
    with np.errstate(all="ignore"):
        for j, g in enumerate(segs, start=1):
            start_x[j] = f64_to_i64(round_half_away(F32(g.start * S)))
            m = fixed_mul(F32(g.slope / zq_scale), 16, 20, True)
            mul[j] = m.rounded_mul
            shift[j] = m.shift
            a = f32_to_i32(round_half_away(F32(F32(g.intercept * F32(zq.scale)) + F32(zq.zero_point))))
            add[j] = min(max(a, 0), 255)
        if program and xs[0] == F32(act_lo):
            # Deviation D71: ncc's act[0] always outputs code 0. Below the fitted range the conv's fused clamp
            # holds the value at its lower bound, so the absorbed function's value there is the answer (a
            # RELU before a LOGISTIC: sigmoid(0) = 0.5, not code 0); without a program that is code 0 anyway.
            a = f32_to_i32(round_half_away(F32(F32(ys[0] * F32(zq.scale)) + F32(zq.zero_point))))
            add[0] = min(max(a, 0), 255)
    return start_x, mul, shift, add, segs


# --------------------------------------------------------------------------- everything


def kpu_conv_params(weights, bias, act, iq: QuantParam, yq: QuantParam, zq: QuantParam | None = None,
                    program=None, name: str = "conv") -> KPUConvParams:
    """All KPU fields of one conv (§7.6). ``act`` is (lo, hi) or a ValueRange; ``program`` a fused_unary
    program absorbed as activation (then ``zq`` is its output's params; without it ``zq = yq``)."""
    weights = np.asarray(weights, dtype=np.float32)
    if weights.ndim != 4 or weights.shape[2] != weights.shape[3] or weights.shape[2] not in (1, 3):
        raise CompileError(f"{name}: KPU convolutions need 1x1 or 3x3 kernels, got weights {weights.shape}")
    bias = np.asarray(bias, dtype=np.float32).ravel()
    if bias.size != weights.shape[0]:
        raise CompileError(f"{name}: bias has {bias.size} entries for {weights.shape[0]} output channels")
    lo, hi = (act.lo, act.hi) if hasattr(act, "lo") else act
    zq = yq if zq is None else zq
    k = weights.shape[2]

    kw = quantize_kpu_weights(weights)
    norm_mul, norm_shift, norm_add, s_act_in = kpu_batch_norm(bias, kw.w_scale, iq, kw.wq, yq)
    start_x, mul, shift, add, segs = kpu_activation(s_act_in, yq, zq, lo, hi, program, what=name)
    return KPUConvParams(
        weights=kw.codes, wq=kw.wq, w_scale=kw.w_scale, iq=iq, yq=yq, zq=zq,
        pad_value=int(iq.zero_point), arg_x=-kw.wq.zero_point, shift_x=0, arg_w=-iq.zero_point, shift_w=0,
        arg_add=k * k * kw.wq.zero_point * iq.zero_point,
        norm_mul=norm_mul, norm_shift=norm_shift, norm_add=norm_add, s_act_in=s_act_in,
        act_start_x=start_x, act_mul=mul, act_shift=shift, act_add=add, segments=segs,
    )
