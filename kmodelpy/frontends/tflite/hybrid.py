"""Dynamic-range TFLite models evaluated the way TensorFlow Lite's Python interpreter runs them.

A *dynamic-range* quantized .tflite keeps float32 activations but stores the larger conv/depthwise
weights as int8 with one scale per output channel. ``tf.lite.Interpreter`` (default op resolver,
x86-64 with FMA) does not run such a model in float:

* **ops with int8 weights** are not taken by the XNNPACK delegate and run TFLite's builtin *hybrid*
  kernels (``conv.cc`` / ``depthwise_conv.cc`` ``EvalHybridPerChannel``), which quantize the float
  input at run time:

  - per batch item, over the whole NHWC item: ``rmin = min(0, min x)``, ``rmax = max(0, max x)``;
    ``scale = (rmax − rmin)/255`` in double; zero point from the min or the max (whichever has the
    smaller ``|qmin| + |rmin/scale|`` resp. ``|qmax| + |rmax/scale|``), nudged into [−128, 127] and
    rounded half away from zero; ``sf = f32(scale)``, ``inv = f32(1.0/sf)`` (double division);
    ``q = clamp(round_half_away(f32(x·inv)) + zp, −128, 127)``. An all-zero item gives q = 0,
    sf = 1, zp = 0 (``tensor_utils::AsymmetricQuantizeFloats``);
  - exact int32 accumulation ``acc = Σ w_q · (q − zp)`` (padding taps add nothing);
  - CONV_2D (optimized ``HybridConvPerChannel``): ``y = f32(acc) · (scale_c · sf) + bias``;
    DEPTHWISE_CONV_2D (optimized hybrid depthwise): ``y = (f32(acc) · scale_c) · sf + bias``;
    then the fused activation clamp — every operation one f32 rounding.

* **float ops** (float-weight convolutions among them) run on XNNPACK (:mod:`.xnnpack`). The hybrid kernels'
  run-time quantization turns any last-bit difference in their input into whole quantization steps,
  so the float convolutions in front of them must be reproduced to the bit as well.

This was established layer by layer against LiteRT's interpreter (every layer of
reference/ncc_outputs/cases/line_follower_kpu_dynrange bit-identical; the outputs of all six test
pictures within 3e-8 of TensorFlow Lite's, the remainder from the final average pool). Other ops
keep the float evaluator's arithmetic. FULLY_CONNECTED with int8 weights is not reproduced (it stays
dequantized float).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32 = np.float32
F64 = np.float64


@dataclass
class ConvOrigin:
    """What the importer knows about a ``conv2d`` node made from a TFLite convolution."""

    kind: str  # "conv" (CONV_2D) or "depthwise" (DEPTHWISE_CONV_2D)
    weights_q: np.ndarray | None = None  # int8 weights, node layout (O, I/groups, kh, kw); None: float weights
    scales: np.ndarray | None = None  # float32 scale of each output channel

    @property
    def hybrid(self) -> bool:
        return self.weights_q is not None


def is_dynamic_range(origins: dict | None) -> bool:
    """True when some convolution of the model has int8 weights (and float activations)."""
    return bool(origins) and any(o.hybrid for o in origins.values())


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """std::round of f32 values (in float64: |v| + 0.5 is exact there)."""
    v = np.asarray(v, F64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def asymmetric_quantize(x: np.ndarray):
    """TFLite's run-time input quantization, per batch item (module doc). Returns (q as int32 in x's
    shape, scale f32 per item, zero point int per item)."""
    x = np.asarray(x, F32)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    q = np.zeros(flat.shape, np.int32)
    sfs = np.ones(n, F32)
    zps = np.zeros(n, np.int64)
    for b in range(n):
        v = flat[b]
        rmin = float(min(F32(0), v.min())) if v.size else 0.0
        rmax = float(max(F32(0), v.max())) if v.size else 0.0
        if rmin == rmax:
            continue
        scale = (rmax - rmin) / 255.0
        from_min, from_max = -128.0 - rmin / scale, 127.0 - rmax / scale
        zp_d = from_min if 128.0 + abs(rmin / scale) < 127.0 + abs(rmax / scale) else from_max
        zp = -128 if zp_d <= -128.0 else 127 if zp_d >= 127.0 else int(np.sign(zp_d) * np.floor(abs(zp_d) + 0.5))
        sf = F32(scale)
        inv = F32(1.0 / float(sf))
        q[b] = np.clip(_round_half_away(v * inv) + zp, -128, 127).astype(np.int32)
        sfs[b], zps[b] = sf, zp
    return q.reshape(x.shape), sfs, zps


def _padded(x: np.ndarray, pad_h, pad_w) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (int(pad_h[0]), int(pad_h[1])), (int(pad_w[0]), int(pad_w[1]))))


def _out_hw(shape, fh, fw, pad_h, pad_w, sh, sw, dh, dw):
    h = shape[2] + pad_h[0] + pad_h[1]
    w = shape[3] + pad_w[0] + pad_w[1]
    return (h - ((fh - 1) * dh + 1)) // sh + 1, (w - ((fw - 1) * dw + 1)) // sw + 1


def _tap(xp, ky, kx, oh, ow, sh, sw, dh, dw):
    y0, x0 = ky * dh, kx * dw
    return xp[:, :, y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw]


def conv2d_hybrid(x, origin: ConvOrigin, bias, groups, pad_h, pad_w, sh, sw, dh, dw, lo, hi) -> np.ndarray:
    """TFLite's hybrid per-channel CONV_2D / DEPTHWISE_CONV_2D (module doc), NCHW."""
    x = np.asarray(x, F32)
    wq = np.asarray(origin.weights_q, F64)
    n_oc, g_ic, fh, fw = wq.shape
    g_oc = n_oc // groups
    q, sfs, zps = asymmetric_quantize(x)
    xs = q.astype(F64) - zps.astype(F64).reshape(-1, 1, 1, 1)  # padding is 0 = (zp − zp)
    xp = _padded(xs, pad_h, pad_w)
    oh, ow = _out_hw(x.shape, fh, fw, pad_h, pad_w, sh, sw, dh, dw)
    n = x.shape[0]
    acc = np.zeros((n, groups, g_oc, oh, ow), F64)  # exact: integer sums far below 2**53
    wg = wq.reshape(groups, g_oc, g_ic, fh, fw)
    for ky in range(fh):
        for kx in range(fw):
            a = _tap(xp, ky, kx, oh, ow, sh, sw, dh, dw).reshape(n, groups, g_ic, oh, ow)
            acc += np.einsum("ngchw,goc->ngohw", a, wg[:, :, :, ky, kx], optimize=True)
    acc = acc.reshape(n, n_oc, oh, ow).astype(F32)
    sc = np.asarray(origin.scales, F32).reshape(1, n_oc, 1, 1)
    sf = sfs.reshape(-1, 1, 1, 1)
    y = acc * (sc * sf) if origin.kind == "conv" else (acc * sc) * sf
    y = y + np.asarray(bias, F32).reshape(1, n_oc, 1, 1)
    return np.maximum(np.minimum(y, F32(hi)), F32(lo)).astype(F32)


def evaluate_conv2d(node, args, origin: ConvOrigin) -> np.ndarray:
    """A ``conv2d`` node as TFLite runs it: hybrid kernel for int8 weights, XNNPACK otherwise."""
    a = node.attrs
    lo, hi = a.get("fused_activation", (-float(np.finfo(F32).max), float(np.finfo(F32).max)))
    geo = (a["groups"], a["padding_h"], a["padding_w"], a["stride_h"], a["stride_w"], a["dilation_h"], a["dilation_w"],
           lo, hi)
    if origin.hybrid:
        return conv2d_hybrid(args[0], origin, a["bias"], *geo)
    from .xnnpack import conv2d_xnnpack

    return conv2d_xnnpack(args[0], a["weights"], a["bias"], origin.kind, *geo)
