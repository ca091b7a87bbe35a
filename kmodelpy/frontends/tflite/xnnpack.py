"""TFLite's float arithmetic as LiteRT's interpreter runs it (default op resolver: the XNNPACK delegate), for
the float reference of a TFLite model (:mod:`.model`, ``arithmetic="tflite"``).

ncc's evaluator (:mod:`kmodelpy.ir.evaluate`) and XNNPACK round differently, and deep models amplify last-bit
differences: a 256x256 segmentation head drifted 1e-3 of its output range from LiteRT with ncc's arithmetic.
So the ops where the two differ are computed here as XNNPACK's f32 microkernels compute them (x86-64, the
kernels its configs pick with FMA3 / AVX-512; google/XNNPACK src/):

* convolutions (GEMM/IGEMM/depthwise): each output starts at the bias and adds every tap with one fused
  multiply-add, convolutions in ky → kx → input-channel order, depthwise convolutions in kx → ky order;
* bilinear resizes (``indirection.c`` ``resize_bilinear2d_hwc_f32`` + ``f32-ibilinear``): the sampling
  position ``o·scale`` (+ ``0.5·scale − 0.5`` with half-pixel centers, clamped to [0, in−1]), then
  ``t = tl + (tr−tl)·α_x``, ``b = bl + (br−bl)·α_x``, ``t + (b−t)·α_y`` (no FMA);
* HARD_SWISH (``f32-vhswish`` fma3): ``x · clamp(fma(x, 1/6, ½), 0, 1)``;
* LOGISTIC (``f32-vsigmoid`` avx512f rr2-lut32-p2-perm2-scalef-div): ``e = 2^n·p`` for ``z = −|x|`` from a
  32-entry table and a degree-2 polynomial, ``f = e/(e+1)``, ``1 − f`` for ``x ≥ 0``;
* AVERAGE_POOL_2D without padding (``f32-avgpool`` 9p): the window's taps in column order, nine per pass
  (``((i2+i3)+(i4+i5)) + (((i0+i1)+i8)+(i6+i7))`` added to the running sum), times ``1/(fh·fw)``; ncc sums a
  64x64 window as one float32 chain.

An FMA is computed in float64 (the product of two float32 is exact there) and rounded once to float32.
Everything else keeps the float evaluator's arithmetic, which LiteRT matches to the last bit or nearly
(measured model by model in docs/real_models.md).
"""
from __future__ import annotations

import numba
import numpy as np

F32 = np.float32
F64 = np.float64


def _fma(a, b, c) -> np.ndarray:
    return (np.asarray(a, F64) * np.asarray(b, F64) + np.asarray(c, F64)).astype(F32)


# ------------------------------------------------------------------------------------------ convolutions
@numba.njit(cache=True, nogil=True)
def _fma_conv_kernel(xp, w, bias, taps, groups, sh, sw, dh, dw, lo, hi, out):
    """Per output channel, an accumulator plane started at the bias; each tap in order adds its product to
    every output position with one FMA (f64 product and sum, one rounding to f32)."""
    n_batch, n_oc, out_h, out_w = out.shape
    g_oc = n_oc // groups
    acc = np.empty((out_h, out_w), np.float32)
    for n in range(n_batch):
        for o in range(n_oc):
            base = (o // g_oc) * w.shape[1]
            acc[:] = bias[o]
            for t in range(taps.shape[0]):
                ky, kx, c = taps[t, 0], taps[t, 1], taps[t, 2]
                wv = np.float64(w[o, c, ky, kx])
                plane = xp[n, base + c]
                for oy in range(out_h):
                    row = plane[oy * sh + ky * dh]
                    for ox in range(out_w):
                        acc[oy, ox] = np.float32(np.float64(acc[oy, ox]) + np.float64(row[ox * sw + kx * dw]) * wv)
            for oy in range(out_h):
                for ox in range(out_w):
                    out[n, o, oy, ox] = max(min(acc[oy, ox], hi), lo)


def conv2d_xnnpack(x, weights, bias, kind: str, groups, pad_h, pad_w, sh, sw, dh, dw, lo, hi) -> np.ndarray:
    """XNNPACK's f32 convolution (module doc), NCHW. Padding taps add x = 0 like XNNPACK's zero buffer."""
    x = np.asarray(x, F32)
    w = np.ascontiguousarray(weights, F32)
    n_oc, g_ic, fh, fw = w.shape
    xp = np.ascontiguousarray(np.pad(x, ((0, 0), (0, 0), tuple(int(p) for p in pad_h), tuple(int(p) for p in pad_w))))
    oh = (xp.shape[2] - ((fh - 1) * dh + 1)) // sh + 1
    ow = (xp.shape[3] - ((fw - 1) * dw + 1)) // sw + 1
    if kind == "depthwise":
        taps = [(ky, kx, c) for kx in range(fw) for ky in range(fh) for c in range(g_ic)]
    else:
        taps = [(ky, kx, c) for ky in range(fh) for kx in range(fw) for c in range(g_ic)]
    out = np.empty((x.shape[0], n_oc, oh, ow), F32)
    _fma_conv_kernel(xp, w, np.ascontiguousarray(bias, F32), np.array(taps, np.int64).reshape(-1, 3), int(groups),
                     int(sh), int(sw), int(dh), int(dw), F32(lo), F32(hi), out)
    return out


# ------------------------------------------------------------------------------------------ resizes
def _bilinear_axis(n_in: int, n_out: int, align_corners: bool, half_pixel: bool):
    adj = 1 if align_corners and n_out != 1 else 0
    scale = F32(n_in - adj) / F32(n_out - adj)
    v = np.arange(n_out).astype(F32) * scale
    if half_pixel and not align_corners:
        v = np.maximum(v + (F32(0.5) * scale - F32(0.5)), F32(0))
    v = np.minimum(v, F32(n_in - 1)).astype(F32)
    top = v.astype(np.int64)
    return top, np.minimum(top + 1, n_in - 1), (v - top.astype(F32)).astype(F32)


def resize_bilinear_xnnpack(x, out_h: int, out_w: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """XNNPACK's f32 bilinear resize of an NCHW array (module doc)."""
    x = np.asarray(x, F32)
    y0, y1, ay = _bilinear_axis(x.shape[2], out_h, align_corners, half_pixel)
    x0, x1, ax = _bilinear_axis(x.shape[3], out_w, align_corners, half_pixel)
    ah, av = ax[None, :], ay[:, None]
    top, bottom = x[:, :, y0, :], x[:, :, y1, :]
    tl, tr, bl, br = top[..., x0], top[..., x1], bottom[..., x0], bottom[..., x1]
    t = tl + (tr - tl) * ah
    b = bl + (br - bl) * ah
    return np.ascontiguousarray(t + (b - t) * av, F32)


# ------------------------------------------------------------------------------------------ activations
def hard_swish_xnnpack(x) -> np.ndarray:
    x = np.asarray(x, F32)
    return (np.clip(_fma(x, F32(1.0 / 6.0), F32(0.5)), F32(0), F32(1)) * x).astype(F32)


_EXP2_TABLE = np.array([float.fromhex(h) for h in (
    "0x1.000000p+0 0x1.059B0Ep+0 0x1.0B5586p+0 0x1.11301Ep+0 0x1.172B84p+0 0x1.1D4874p+0 0x1.2387A6p+0 "
    "0x1.29E9E0p+0 0x1.306FE0p+0 0x1.371A74p+0 0x1.3DEA64p+0 0x1.44E086p+0 0x1.4BFDAEp+0 0x1.5342B6p+0 "
    "0x1.5AB07Ep+0 0x1.6247ECp+0 0x1.6A09E6p+0 0x1.71F75Ep+0 0x1.7A1148p+0 0x1.82589Ap+0 0x1.8ACE54p+0 "
    "0x1.93737Cp+0 0x1.9C4918p+0 0x1.A5503Cp+0 0x1.AE89FAp+0 0x1.B7F770p+0 0x1.C199BEp+0 0x1.CB720Ep+0 "
    "0x1.D5818Ep+0 0x1.DFC974p+0 0x1.EA4AFAp+0 0x1.F50766p+0").split()], F32)  # 2^(k/32)


def sigmoid_xnnpack(x) -> np.ndarray:
    """``f32-vsigmoid`` avx512f-rr2-lut32-p2-perm2-scalef-div, element by element (module doc)."""
    x = np.asarray(x, F32)
    z = -np.abs(x)
    magic = F32(float.fromhex("0x1.8p18"))  # rounds z·log2(e) to a multiple of 1/32
    n = _fma(z, F32(float.fromhex("0x1.715476p0")), magic)
    table = _EXP2_TABLE[(n.view(np.uint32) & np.uint32(31)).astype(np.int64)]
    n = (n - magic).astype(F32)
    t = _fma(n, F32(float.fromhex("-0x1.62E430p-1")), z)
    t = _fma(n, F32(float.fromhex("0x1.05C61p-29")), t)
    p = _fma(t, F32(0.5), F32(float.fromhex("0x1.0000F6p0")))
    t = (t * table).astype(F32)
    p = _fma(t, p, table)
    e = (p.astype(F64) * np.exp2(np.floor(n.astype(F64)))).astype(F32)  # scalef: p·2^floor(n)
    f = (e / (e + F32(1))).astype(F32)
    return np.where(np.signbit(x), f, (F32(1) - f).astype(F32)).astype(F32)


COMPOSITES = {"HARD_SWISH": hard_swish_xnnpack, "LOGISTIC": sigmoid_xnnpack}


# ------------------------------------------------------------------------------------------ pools
def _sum9(i):
    """XNNPACK's sum of nine taps: ((i2+i3)+(i4+i5)) + (((i0+i1)+i8)+(i6+i7))."""
    return ((i[2] + i[3]) + (i[4] + i[5])) + (((i[0] + i[1]) + i[8]) + (i[6] + i[7]))


def average_pool_xnnpack(x, fh: int, fw: int, sh: int, sw: int) -> np.ndarray:
    """``f32-avgpool`` 9p (an unpadded window, NCHW): the taps in column order (kx outer, ky inner), nine per
    pass added to the running sum (zeros fill the last pass), then ``· (1/(fh·fw))``."""
    x = np.asarray(x, F32)
    oh, ow = (x.shape[2] - fh) // sh + 1, (x.shape[3] - fw) // sw + 1
    taps = [x[:, :, ky:ky + (oh - 1) * sh + 1:sh, kx:kx + (ow - 1) * sw + 1:sw] for kx in range(fw) for ky in range(fh)]
    zero = np.zeros_like(taps[0])
    acc = zero
    for k in range(0, len(taps), 9):
        group = taps[k:k + 9]
        acc = acc + _sum9(group + [zero] * (9 - len(group)))
    return np.ascontiguousarray(acc * (F32(1) / F32(fh * fw)), F32)


def _average_pool(node, args):
    a = node.attrs
    y = average_pool_xnnpack(args[0], a["filter_h"], a["filter_w"], a["stride_h"], a["stride_w"])
    lo, hi = a["fused_activation"]
    return [np.minimum(np.maximum(y, F32(lo)), F32(hi)).astype(F32)]


def _is_unpadded_mean_pool(n) -> bool:
    a = n.attrs
    return a["reduce_op"] == "mean" and not any(a["padding_h"]) and not any(a["padding_w"]) \
        and (a["dilation_h"], a["dilation_w"]) == (1, 1)


# ------------------------------------------------------------------------------------------ graph
def _resize(node, args):
    h, w = node["new_size"]
    c = node["sampling"].coordinate
    return [resize_bilinear_xnnpack(args[0], int(h), int(w), c == "align_corners", c == "half_pixel")]


def tflite_evaluators(graph, hybrid: bool) -> dict:
    """node -> ``fn(node, args)`` for the nodes of an imported TFLite graph that take TFLite's arithmetic:
    CONV_2D / DEPTHWISE_CONV_2D (hybrid kernels for int8 weights when ``hybrid``), bilinear resizes, unpadded
    average pools, and the importer's composites (``graph.composites``: HARD_SWISH, LOGISTIC built of several nodes —
    the first node computes the whole function, the others pass their chain input on)."""
    from .hybrid import ConvOrigin, evaluate_conv2d

    res = {}
    for n, origin in getattr(graph, "conv_origins", {}).items():
        res[n] = lambda node, args, o=(origin if hybrid else ConvOrigin(origin.kind)): [evaluate_conv2d(node, args, o)]
    for n in graph.nodes:
        if n.op == "reduce_window2d" and _is_unpadded_mean_pool(n):
            res[n] = _average_pool
        elif n.op == "resize" and n["sampling"].mode == "bilinear":
            res[n] = _resize
    for kind, chain in getattr(graph, "composites", []):
        fn = COMPOSITES.get(kind)
        if fn is None:
            continue
        (first, k0), rest = chain[0], chain[1:]
        res[first] = lambda node, args, f=fn, k=k0: [f(args[k])]
        for node, k in rest:
            res[node] = lambda node, args, k=k: [args[k]]
    return res
