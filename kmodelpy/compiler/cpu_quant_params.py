"""Parameters of ncc's CPU quantized ops and of the fused-unary lookup table, bit-exact
(compiler spec §7.7 quantized_conv2d, §7.8 quantized_matmul, §7.9 quantized_binary, §7.10 LUT;
nncase src/transforms/hlir/neutral/quantized_*.cpp, fused_unary_to_lookup1d.cpp).

None of these store the op's fused activation: the clamp survives only through uint8 saturation of
the calibrated output range (QUIRK 4).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CompileError
from ..format.binio import QuantParam
from . import fused_unary as fu
from .quant import (
    F32,
    FixedMul,
    f32_to_i32_array,
    fixed_mul,
    fixup_range,
    get_quant_param,
    get_range,
    quantize_values,
    round_half_away,
)


@dataclass
class QuantizedConv2DParams:
    """QuantizedConv2D body values (besides geometry, which is copied from the float conv)."""

    weights: np.ndarray  # u8, same layout as the float weights (OIHW)
    bias: np.ndarray  # int32 values (int64 array)
    wq: QuantParam
    input_offset: int
    filter_offset: int
    output_mul: int
    output_shift: int
    output_offset: int


@dataclass
class QuantizedMatMulParams:
    bias: np.ndarray
    input_a_offset: int
    input_b_offset: int
    output_mul: int
    output_shift: int
    output_offset: int


@dataclass
class QuantizedBinaryParams:
    input_a_offset: int
    input_a_mul: int
    input_a_shift: int
    input_b_offset: int
    input_b_mul: int
    input_b_shift: int
    output_mul: int
    output_shift: int
    output_offset: int


def _bias_q(bias, sa) -> np.ndarray:
    """``(int32)roundf(f32(b·sa))`` per element (x86: out of int32 → −2³¹)."""
    b = np.asarray(bias, dtype=np.float32).ravel()
    with np.errstate(all="ignore"):
        return f32_to_i32_array(round_half_away((b * F32(sa)).astype(np.float32)))


def quantized_conv2d_params(weights, bias, iq: QuantParam, yq: QuantParam) -> QuantizedConv2DParams:
    """§7.7: per-tensor weights ``get_quant_param(fixup(get_range(W)))`` (fixup applied twice, as ncc does),
    ``sa = f32(iq·wq)``, ``so = f32(yq/sa)``, ``fixed_mul(so, 32, 255)``, bias ``round(f32(b·sa))``."""
    w = np.asarray(weights, dtype=np.float32)
    wq = get_quant_param(fixup_range(get_range(w)), 8)
    codes = quantize_values(w, wq)
    sa = F32(F32(iq.scale) * F32(wq.scale))
    so = F32(F32(yq.scale) / sa)
    m = fixed_mul(so, 32, 255, True)
    return QuantizedConv2DParams(
        weights=codes, bias=_bias_q(bias, sa), wq=wq, input_offset=-iq.zero_point, filter_offset=-wq.zero_point,
        output_mul=m.rounded_mul, output_shift=m.shift, output_offset=yq.zero_point,
    )


def quantized_matmul_params(bias, i1q: QuantParam, i2q: QuantParam, yq: QuantParam) -> QuantizedMatMulParams:
    """§7.8: ``sa = f32(i1q·i2q)``, ``fixed_mul(f32(yq/sa), 32, 32)``, bias ``round(f32(b·sa))``.
    (input_b is usually a constant: quantize it with :func:`kmodelpy.compiler.quant.quantize_values`.)"""
    sa = F32(F32(i1q.scale) * F32(i2q.scale))
    so = F32(F32(yq.scale) / sa)
    m = fixed_mul(so, 32, 32, True)
    return QuantizedMatMulParams(
        bias=_bias_q(bias, sa), input_a_offset=-i1q.zero_point, input_b_offset=-i2q.zero_point,
        output_mul=m.rounded_mul, output_shift=m.shift, output_offset=yq.zero_point,
    )


def quantized_binary_params(op: str, i1q: QuantParam, i2q: QuantParam, yq: QuantParam) -> QuantizedBinaryParams:
    """§7.9: add/sub/min/max rescale each side by the *other* input's qscale (16-bit), mul uses (1, 0),
    div rescales only a; output ``fixed_mul(f32(yq/sa), 32, 32)``."""
    one = FixedMul(F32(1.0), 0)
    if op in ("add", "sub", "min", "max"):
        sa = F32(F32(i1q.scale) * F32(i2q.scale))
        fa = fixed_mul(i2q.scale, 16, 16, True)
        fb = fixed_mul(i1q.scale, 16, 16, True)
    elif op == "mul":
        sa = F32(F32(i1q.scale) * F32(i2q.scale))
        fa = fb = one
    elif op == "div":
        sa = F32(i1q.scale)
        fa = fixed_mul(i2q.scale, 16, 16, True)
        fb = one
    else:
        raise CompileError(f"quantized binary: unsupported binary op '{op}'")
    fy = fixed_mul(F32(F32(yq.scale) / sa), 32, 32, True)
    return QuantizedBinaryParams(
        input_a_offset=-i1q.zero_point, input_a_mul=fa.rounded_mul, input_a_shift=fa.shift,
        input_b_offset=-i2q.zero_point, input_b_mul=fb.rounded_mul, input_b_shift=fb.shift,
        output_mul=fy.rounded_mul, output_shift=fy.shift, output_offset=yq.zero_point,
    )


def lut_samples(iq: QuantParam, count: int = 256) -> np.ndarray:
    """``x_i = f32(xf_min + f32(i·step))`` with xf_min/xf_max the real values of codes 0 and 255."""
    xf_min = F32(F32(0 - iq.zero_point) / F32(iq.scale))
    xf_max = F32(F32(255 - iq.zero_point) / F32(iq.scale))
    step = F32(F32(xf_max - xf_min) / F32(count - 1))
    i = np.arange(count, dtype=np.float32)
    return (xf_min + (i * step).astype(np.float32)).astype(np.float32)


def fused_unary_lut(program, iq: QuantParam, yq: QuantParam) -> np.ndarray:
    """§7.10: the 256-entry u8 table ``clamp(round(f32(f32(program(x_i)·yq.qscale) + yq.zp)), 0, 255)``."""
    ys = fu.evaluate(program, lut_samples(iq))
    return quantize_values(ys, yq)


lookup_table = fused_unary_lut  # name used by the quantize transforms
