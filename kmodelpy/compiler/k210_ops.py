"""The HLIR ops the compiler adds to ncc's vocabulary (src/ir/hlir/ops/k210/*, quantized_*.cpp,
table_lookup.cpp), registered into :mod:`kmodelpy.ir.ops` with shape inference and evaluators.

Attributes (the back end reads them when it emits the runtime ops):

=====================  ===========================================================================
fake_kpu_conv2d        ``is_depthwise``, ``filter_type`` (0 = 1×1, 1 = 3×3), ``pool_type`` (KPU ids,
                       compiler spec §6.1), ``weights`` f32 OIHW, ``bias`` f32, ``fused_activation``
kpu_upload             — (uint8 NCHW → KPU memory)
kpu_download           — (never emitted; removed by Q3/Q5)
kpu_conv2d             ``is_depthwise``, ``filter_type``, ``pool_type``, ``weights`` u8 OIHW, ``pad_value``,
                       ``arg_x``, ``shift_x``, ``arg_w``, ``shift_w``, ``arg_add``, ``batch_norm``,
                       ``activation`` (from kmodelpy.compiler.kpu_params), ``has_main_mem_output``;
                       output 0 lives in KPU memory, output 1 (if any) is the main-memory copy
quantized_conv2d       conv2d geometry + u8 ``weights``, i32 ``bias``, ``input_offset``, ``filter_offset``,
                       ``output_mul``, ``output_shift``, ``output_offset``
quantized_matmul       i32 ``bias``, ``input_a_offset``, ``input_b_offset``, ``output_mul``, ``output_shift``,
                       ``output_offset``
quantized_binary       ``binary_op``, ``input_a_offset/mul/shift``, ``input_b_offset/mul/shift``,
                       ``output_offset/mul/shift``
table_lookup1d         inputs: x (u8), table (u8[256] constant)
=====================  ===========================================================================

``fake_kpu_conv2d``'s float evaluation is ncc's (compiler spec §8.2; k210_kernels.h fake_kpu_conv2d +
kpu_pool2d): a stride-1 conv with the KPU's implicit zero padding in the float conv's accumulation
order (bias first, taps ic → ky → kx), the fused clamp, then the pool emulated in float32.
"""
from __future__ import annotations

import numba
import numpy as np

from ..ir import ops as hops
from ..ops._arith import clamp
from .transforms.build import POOL_STRIDE, pool_out

BINARY_IDS = {"add": 0, "sub": 1, "mul": 2, "div": 3, "min": 4, "max": 5}
SELECT_OFFSET = {5: (0, 0), 6: (0, 1), 7: (0, 0)}  # left_top_2_s2, right_top_2_s2, left_top_4_s4
POOL_FILTER = {0: 1, 1: 2, 2: 2, 3: 4, 4: 4, 5: 2, 6: 2, 7: 4, 8: 2, 9: 2}
F32_LOWEST = np.float32(-np.finfo(np.float32).max)


def kpu_pool_f32(x: np.ndarray, pool_type: int) -> np.ndarray:
    """kpu_pool2d on float32 NCHW data, in ncc's order (sequential float32 sums for mean pools)."""
    if pool_type == 0:
        return x
    n, c, h, w = x.shape
    f, s = POOL_FILTER[pool_type], POOL_STRIDE[pool_type]
    oh, ow = pool_out(h, pool_type), pool_out(w, pool_type)
    oy = np.arange(oh) * s
    ox = np.arange(ow) * s
    if pool_type in SELECT_OFFSET:  # offset < stride and out = floor(in/stride): always inside the image
        dy, dx = SELECT_OFFSET[pool_type]
        return x[:, :, dy::s, dx::s][:, :, :oh, :ow]
    if pool_type in (1, 3, 9):  # max pools: out-of-image taps are the lowest float
        xp = np.full((n, c, h + f, w + f), F32_LOWEST, np.float32)
        xp[:, :, :h, :w] = x
        out = np.full((n, c, oh, ow), F32_LOWEST, np.float32)
        for ky in range(f):
            for kx in range(f):
                out = np.maximum(out, xp[:, :, oy + ky][:, :, :, ox + kx])
        return out
    out = np.zeros((n, c, oh, ow), np.float32)  # mean pools: taps clamped into the image
    for ky in range(f):
        yy = np.clip(oy + ky, 0, h - 1)
        for kx in range(f):
            xx = np.clip(ox + kx, 0, w - 1)
            out = (out + x[:, :, yy][:, :, :, xx]).astype(np.float32)
    return (out / np.float32(f * f)).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _kpu_conv_hwc(x, wt, bias, k, depthwise, lo, hi, out):
    """Stride-1 KPU conv on NHWC float32 ``x`` [N, H, W, IC] into ``out`` [N·H·W, OC]; ``wt`` is
    [IC·k·k, OC] (regular) or [k·k, C] (depthwise). Vectorised over output channels; every output still
    gets bias first, then its in-image taps in ic → ky → kx order, one f32 multiply and one f32 add
    each (ncc's order, compiler spec §8.2)."""
    n_b, h, w, ic_n = x.shape
    oc_n = out.shape[1]
    p = 0 if k == 1 else 1
    acc = np.empty(oc_n, np.float32)
    for n in range(n_b):
        for oy in range(h):
            ky0 = max(0, p - oy)
            ky1 = min(k, h - oy + p)
            for ox in range(w):
                kx0 = max(0, p - ox)
                kx1 = min(k, w - ox + p)
                for o in range(oc_n):
                    acc[o] = bias[o]
                if depthwise:
                    for ky in range(ky0, ky1):
                        for kx in range(kx0, kx1):
                            xr = x[n, oy + ky - p, ox + kx - p]
                            wr = wt[ky * k + kx]
                            for o in range(oc_n):
                                acc[o] += xr[o] * wr[o]
                else:
                    for ic in range(ic_n):
                        for ky in range(ky0, ky1):
                            for kx in range(kx0, kx1):
                                xv = x[n, oy + ky - p, ox + kx - p, ic]
                                wr = wt[(ic * k + ky) * k + kx]
                                for o in range(oc_n):
                                    acc[o] += xv * wr[o]
                row = (n * h + oy) * w + ox
                for o in range(oc_n):
                    out[row, o] = clamp(acc[o], lo, hi)


@numba.njit(cache=True, nogil=True)
def _kpu_conv_rows(x, w, bias, k, depthwise, lo, hi, out):
    """Same conv on NCHW data, vectorised along output rows (faster for wide images or few output
    channels); per output the order is again bias, then ic → ky → kx over the in-image taps."""
    n_b, _, h, wd = x.shape
    ic_n = w.shape[1]
    oc_n = out.shape[1]
    p = 0 if k == 1 else 1
    acc = np.empty(wd, np.float32)
    for n in range(n_b):
        for o in range(oc_n):
            for oy in range(h):
                ky0 = max(0, p - oy)
                ky1 = min(k, h - oy + p)
                for ox in range(wd):
                    acc[ox] = bias[o]
                for ic in range(ic_n):
                    for ky in range(ky0, ky1):
                        xrow = x[n, o if depthwise else ic, oy + ky - p]
                        for kx in range(k):
                            wv = w[o, ic, ky, kx]
                            ox0 = max(0, p - kx)
                            ox1 = min(wd, wd + p - kx)
                            xs = xrow[ox0 + kx - p:ox1 + kx - p]
                            accs = acc[ox0:ox1]
                            for i in range(xs.shape[0]):
                                accs[i] += xs[i] * wv
                for ox in range(wd):
                    out[n, o, oy, ox] = clamp(acc[ox], lo, hi)


_PREPARED: dict = {}  # id(weights) -> (weights, [(IC or 1)·k·k, OC] copy); the array is kept alive here


def _channels_last(weights) -> np.ndarray:
    hit = _PREPARED.get(id(weights))
    if hit is None or hit[0] is not weights:
        w = np.asarray(weights, np.float32)
        hit = (weights, np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0))).reshape(-1, w.shape[0]))
        if len(_PREPARED) > 4096:
            _PREPARED.clear()
        _PREPARED[id(weights)] = hit
    return hit[1]


def kpu_conv_f32(x, weights, bias, depthwise: bool, act) -> np.ndarray:
    """The fake KPU conv before pooling: NCHW float32 in and out (same numbers as kmodelpy.ops.conv2d
    with padding 0/1, stride 1 and groups 1 or C — tests/test_compile_passes.py checks it). The result
    is an NCHW *view* of an NHWC buffer, so chained KPU convs never copy between layouts."""
    w = np.asarray(weights, np.float32)
    oc, _, k, _ = w.shape
    lo, hi = np.float32(act[0]), np.float32(act[1])
    b = np.ascontiguousarray(bias, np.float32).reshape(-1)
    if x.shape[3] >= 32 or (not depthwise and oc < 16):
        xc = np.ascontiguousarray(x, np.float32)
        out = np.empty((xc.shape[0], oc) + xc.shape[2:], np.float32)
        _kpu_conv_rows(xc, np.ascontiguousarray(w), b, k, bool(depthwise), lo, hi, out)
        return out
    x = np.ascontiguousarray(np.transpose(np.asarray(x, np.float32), (0, 2, 3, 1)))
    wt = _channels_last(weights)
    n, h, wd, _ = x.shape
    out = np.empty((n * h * wd, oc), np.float32)
    _kpu_conv_hwc(x, wt, b, k, bool(depthwise), lo, hi, out)
    return np.transpose(out.reshape(n, h, wd, oc), (0, 3, 1, 2))


def fake_kpu_conv2d_eval(node, args):
    y = kpu_conv_f32(args[0], node["weights"], node["bias"], node["is_depthwise"], node["fused_activation"])
    return [kpu_pool_f32(y, node["pool_type"])]


def _fake_kpu_shape(attrs, ins):
    n, _, h, w = ins[0]
    pt = attrs["pool_type"]
    return [(n, int(attrs["weights"].shape[0]), pool_out(h, pt), pool_out(w, pt))]


def _kpu_conv2d_shape(attrs, ins):
    out = _fake_kpu_shape(attrs, ins)[0]
    return [out, out] if attrs.get("has_main_mem_output") else [out]


def kpu_conv2d_eval(node, args):
    from ..ops.kpu_conv2d import kpu_conv2d

    y = kpu_conv2d(args[0], node["weights"], node["batch_norm"], node["activation"], 1 if node["filter_type"] == 0 else 3,
                   node["is_depthwise"], node["pool_type"], node["pad_value"], node["arg_x"], node["shift_x"],
                   node["arg_w"], node["shift_w"], node["arg_add"])
    return [y] * len(node.outputs)


def quantized_conv2d_eval(node, args):
    from ..ops.quantized_conv2d import quantized_conv2d

    return [quantized_conv2d(args[0], node["weights"], node["bias"], node["groups"], node["padding_h"], node["padding_w"],
                             node["stride_h"], node["stride_w"], node["dilation_h"], node["dilation_w"],
                             node["input_offset"], node["filter_offset"], node["output_mul"], node["output_shift"],
                             node["output_offset"])]


def quantized_matmul_eval(node, args):
    from ..ops.quantized_matmul import quantized_matmul

    return [quantized_matmul(args[0], args[1], node["bias"], node["input_a_offset"], node["input_b_offset"],
                             node["output_mul"], node["output_shift"], node["output_offset"])]


def quantized_binary_eval(node, args):
    from ..ops.quantized_binary import quantized_binary

    return [quantized_binary(args[0], args[1], BINARY_IDS[node["binary_op"]], node["input_a_offset"], node["input_a_mul"],
                             node["input_a_shift"], node["input_b_offset"], node["input_b_mul"], node["input_b_shift"],
                             node["output_offset"], node["output_mul"], node["output_shift"],
                             out_shape=node.output.shape)]


def table_lookup1d_eval(node, args):
    from ..ops.table_lookup1d import table_lookup1d

    return [table_lookup1d(args[0], args[1])]


def fused_unary_eval(node, args):
    """fused_unary programs made by the compiler are tuples of FuOp; run them as ncc does (NNIL)."""
    from .fused_unary import evaluate

    x = np.asarray(args[0], np.float32)
    return [evaluate(node["program"], x.reshape(-1)).reshape(x.shape)]


def _conv_shape(attrs, ins):
    n, _, h, w = ins[0]
    oc, _, fh, fw = attrs["weights"].shape
    return [(n, oc, hops.get_out(h, fh, attrs["stride_h"], attrs["dilation_h"], attrs["padding_h"]),
             hops.get_out(w, fw, attrs["stride_w"], attrs["dilation_w"], attrs["padding_w"]))]


def register_all() -> None:
    """Register (idempotently) the compiler's ops and evaluators."""
    try:  # the neutral evaluators register first, so ours are not overwritten afterwards
        from ..ir import evaluate as _ev  # noqa: F401
    except ImportError:
        pass

    same = lambda a, i: [i[0]]  # noqa: E731
    hops.register_op("fake_kpu_conv2d", "FakeKPUConv2D", _fake_kpu_shape, fake_kpu_conv2d_eval)
    hops.register_op("kpu_upload", "KPUUpload", same, lambda n, a: [np.asarray(a[0], np.uint8)], memory="kpu")
    hops.register_op("kpu_download", "KPUDownload", same, lambda n, a: [np.asarray(a[0], np.uint8)])
    hops.register_op("kpu_conv2d", "KPUConv2D", _kpu_conv2d_shape, kpu_conv2d_eval, memory="kpu")
    hops.register_op("quantized_conv2d", "QuantizedConv2D", _conv_shape, quantized_conv2d_eval)
    hops.register_op("quantized_matmul", "QuantizedMatMul", lambda a, i: [(i[0][0], i[1][1])], quantized_matmul_eval)
    hops.register_op("quantized_binary", "QuantizedBinary", lambda a, i: [hops.broadcast_shape(i[0], i[1])],
                     quantized_binary_eval)
    hops.register_op("table_lookup1d", "TableLookup1D", same, table_lookup1d_eval)
    hops.register_evaluator("fused_unary", fused_unary_eval)
