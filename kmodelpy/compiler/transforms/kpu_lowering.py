"""Pass P2: map convolutions (and suitable fully-connected layers) onto the KPU as ``fake_kpu_conv2d``
(compiler spec §5.2, §6.1-6.2; src/transforms/hlir/{neutral/eliminate_dilated_conv2d,
k210/fake_kpu_conv2d, k210/matmul_to_fake_kpu_conv2d, k210/strided_slice_motion}.cpp).

The fake KPU conv computes a stride-1 "same" conv (KPU implicit padding 0 for 1×1, 1 for 3×3); the
remaining padding becomes a CPU pad before it and a crop after it, the stride a strided slice.  The
slices turn into KPU select-pools when ``fuse_fake_kpu_conv2d_strided_slice`` can.
"""
from __future__ import annotations

import numpy as np

from ...ir.origins import keeps_float
from ..quant import fixup_range, get_range
from ..rewrite import Match, Transform, first_child, parent, reroute
from . import build
from .build import POOL_BYPASS, POOL_LEFT_TOP_2_S2, POOL_RIGHT_TOP_2_S2

FILTER_1X1, FILTER_3X3 = 0, 1


def supported_in_shape(s) -> bool:
    return s[1] <= 1024 and 4 <= s[2] <= 256 and 4 <= s[3] <= 512


def supported_out_shape(s) -> bool:
    return s[1] <= 1024


def supported_filter(kh: int, kw: int) -> bool:
    return kh == kw and kh in (1, 3)


def weights_width(w) -> float:
    r = fixup_range(get_range(np.asarray(w, np.float32).reshape(-1)))
    return float(np.float32(r.max - r.min))


def kpu_pre_sur(padding, k: int):
    """Split ``conv padding − KPU implicit padding`` into a pre-pad (positive parts) and a crop (negative)."""
    kp = 0 if k == 1 else 1
    b, a = padding[0] - kp, padding[1] - kp
    return (max(b, 0), max(a, 0)), (min(b, 0), min(a, 0))


class EliminateDilatedConv2d(Transform):
    """Dilated stride-1 conv (batch 1) → space-to-batch, plain conv, batch-to-space (§5.2)."""

    name = "eliminate_dilated_conv2d"
    ops = frozenset({"conv2d"})

    def match(self, node, ctx):
        if keeps_float(node):
            return None
        if (node["dilation_h"] != 1 or node["dilation_w"] != 1) and node["stride_h"] == 1 \
                and node["stride_w"] == 1 and node.input.shape[0] == 1:
            return Match([node], [node.input], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        c = m.nodes[0]
        dh, dw = c["dilation_h"], c["dilation_w"]
        _, ch, h, w = c.input.shape
        ph, pw = list(c["padding_h"]), list(c["padding_w"])
        extra_h = (dh - (h + sum(ph)) % dh) % dh
        extra_w = (dw - (w + sum(pw)) % dw) % dw
        p1 = build.pad(g, m.inputs[0].producer, [(0, 0), (0, 0), (ph[0], ph[1] + extra_h), (pw[0], pw[1] + extra_w)], 0.0)
        _, _, hp, wp = p1.output.shape
        r1 = build.reshape(g, p1.output, [ch * (hp // dh), dh, wp // dw, dw])
        t1 = build.transpose(g, r1.output, [1, 3, 0, 2])
        r2 = build.reshape(g, t1.output, [dh * dw, ch, hp // dh, wp // dw])
        conv = build.conv2d(g, r2.output, c["weights"], c["bias"], c["groups"], (0, 0), (0, 0), c["stride_h"],
                            c["stride_w"], 1, 1, c["fused_activation"], name=c.name)
        _, oc, ho, wo = conv.output.shape
        r3 = build.reshape(g, conv.output, [dh, dw, oc * ho, wo])
        t2 = build.transpose(g, r3.output, [2, 0, 3, 1])
        r4 = build.reshape(g, t2.output, [1, oc, ho * dh, wo * dw])
        p2 = build.pad(g, r4.output, [(0, 0), (0, 0), (0, -extra_h), (0, -extra_w)], 0.0)
        reroute(m.outputs[0], p2.output)


class FakeKpuConv2d(Transform):
    """conv2d → pad → fake_kpu_conv2d (stride 1, bypass pool) → crop → strided slice (§6.2).

    ncc leaves the fake conv unnamed; kmodelpy gives it the conv's name (only reports and errors see it)."""

    name = "fake_kpu_conv2d"
    ops = frozenset({"conv2d"})

    def match(self, c, ctx):
        if weights_width(c["weights"]) > ctx.weights_quantize_threshold or c.name in ctx.on_cpu or keeps_float(c):
            return None
        in_ch = c["weights"].shape[1] * c["groups"]
        kh, kw = c["weights"].shape[2:]
        if (c["groups"] == 1 or c["groups"] == in_ch) and c["dilation_h"] == 1 and c["dilation_w"] == 1 \
                and supported_filter(kh, kw) and supported_in_shape(c.input.shape) \
                and supported_out_shape(c.output.shape):
            pre_h, _ = kpu_pre_sur(c["padding_h"], kh)
            pre_w, _ = kpu_pre_sur(c["padding_w"], kh)
            s = list(c.input.shape)
            s[2] += sum(pre_h)
            s[3] += sum(pre_w)
            if supported_in_shape(s):
                return Match([c], [c.input], [c.output])
        return None

    def rewrite(self, g, m, ctx):
        c = m.nodes[0]
        w = c["weights"]
        oc, kh = w.shape[0], w.shape[2]
        in_ch = w.shape[1] * c["groups"]
        is_dw = in_ch == oc and oc == c["groups"]
        pre_h, sur_h = kpu_pre_sur(c["padding_h"], kh)
        pre_w, sur_w = kpu_pre_sur(c["padding_w"], kh)
        pre = build.pad(g, m.inputs[0].producer, [(0, 0), (0, 0), pre_h, pre_w], 0.0)
        conv = build.fake_kpu_conv2d(g, pre.output, is_dw, FILTER_1X1 if kh == 1 else FILTER_3X3, POOL_BYPASS,
                                     w, c["bias"], c["fused_activation"], name=c.name)
        sur = build.pad(g, conv.output, [(0, 0), (0, 0), sur_h, sur_w], 0.0)
        s = build.strided_slice(g, sur.output, [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, c["stride_h"], c["stride_w"]], 15, 15)
        reroute(m.outputs[0], s.output)


class MatmulToFakeKpuConv2d(Transform):
    """FC with a constant [K,N] weight (K,N ≤ 1024, K·N ≥ output threshold) → 4×4-padded 1×1 KPU conv."""

    name = "matmul_to_fake_kpu_conv2d"
    ops = frozenset({"matmul"})

    def match(self, mm, ctx):
        w = parent(mm, "constant", 1)
        if w is None or mm.name in ctx.on_cpu or keeps_float(mm):
            return None
        if weights_width(w["data"]) > ctx.weights_quantize_threshold:
            return None
        k, n = w.output.shape
        if k * n >= ctx.output_quantize_threshold and k <= 1024 and n <= 1024:
            return Match([mm, w], [mm.inputs[0]], [mm.output])
        return None

    def rewrite(self, g, m, ctx):
        mm, w = m.nodes
        src = m.inputs[0].producer
        k, n = w.output.shape
        b = src.shape[0]
        weights = np.ascontiguousarray(np.asarray(w["data"], np.float32).reshape(k, n).T.reshape(n, k, 1, 1))
        r1 = build.reshape(g, src, [b, k, 1, 1])
        p1 = build.pad(g, r1.output, [(0, 0), (0, 0), (0, 3), (0, 3)], 0.0)
        conv = build.fake_kpu_conv2d(g, p1.output, False, FILTER_1X1, POOL_BYPASS, weights, mm["bias"],
                                     mm["fused_activation"], name=mm.name)
        p2 = build.pad(g, conv.output, [(0, 0), (0, 0), (0, -3), (0, -3)], 0.0)
        r2 = build.reshape(g, p2.output, [b, n])
        reroute(m.outputs[0], r2.output)


class StridedSliceMotion(Transform):
    """A stride-2 subsampling slice feeding a non-depthwise 1×1 bypass fake conv moves behind it, so the
    next rule can turn it into a select pool.  Self-contained."""

    name = "strided_slice_motion"
    ops = frozenset({"strided_slice"})
    self_contained = True

    def match(self, s, ctx):
        if list(s["strides"]) == [1, 1, 2, 2] and list(s["begin"]) == [0, 0, 0, 0] \
                and list(s["end"]) == list(s.input.shape) and s["begin_mask"] == 0 and s["end_mask"] == 0 \
                and s["new_axis_mask"] == 0 and s["shrink_axis_mask"] == 0:
            conv = first_child(s, "fake_kpu_conv2d")
            if conv is not None and not conv["is_depthwise"] and conv["filter_type"] == FILTER_1X1 \
                    and conv["pool_type"] == POOL_BYPASS:
                return Match([s, conv], [s.input], [conv.output])
        return None

    def rewrite(self, g, m, ctx):
        s_old, c_old = m.nodes
        src = m.inputs[0].producer
        conv = build.fake_kpu_conv2d(g, src, c_old["is_depthwise"], c_old["filter_type"], c_old["pool_type"],
                                     c_old["weights"], c_old["bias"], c_old["fused_activation"], name=c_old.name)
        s = build.strided_slice(g, conv.output, [0, 0, 0, 0], [0, 0, 0, 0], s_old["strides"], 15, 15)
        reroute(m.outputs[0], s.output)


def _select_pool_pads(conv, s):
    pad_h = [s["begin"][2] % 2, 0]
    pad_w = [0, 0]
    if (s.input.shape[2] + pad_h[0]) % 2 == 1:
        pad_h[1] += 1
    if conv.input.shape[3] % 2 == 1:
        pad_w[1] += 1
    return pad_h, pad_w


class FuseFakeKpuConv2dStridedSlice(Transform):
    """A [1,1,2,2] slice after a non-depthwise fake conv → left/right-top 2×2 select pool (+ pad/crop).
    Deviation D10: only a conv without a pool yet (ncc also fuses into a conv that already has a
    select pool, overwriting it, so one of two stacked stride-2 subsamplings is lost)."""

    name = "fuse_fake_kpu_conv2d_strided_slice"
    ops = frozenset({"fake_kpu_conv2d"})

    def match(self, conv, ctx):
        if conv["is_depthwise"] or conv["pool_type"] != POOL_BYPASS:
            return None
        s = first_child(conv, "strided_slice")
        if s is None or list(s["strides"]) != [1, 1, 2, 2] or not supported_in_shape(s.output.shape):
            return None
        pad_h, pad_w = _select_pool_pads(conv, s)
        shp = list(conv.input.shape)
        shp[2] += sum(pad_h)
        shp[3] += sum(pad_w)
        if supported_in_shape(shp):
            return Match([conv, s], [conv.input], [s.output])
        return None

    def rewrite(self, g, m, ctx):
        c_old, s = m.nodes
        pad_h, pad_w = _select_pool_pads(c_old, s)
        pool = POOL_LEFT_TOP_2_S2 if s["begin"][3] % 2 == 0 else POOL_RIGHT_TOP_2_S2
        p = build.pad(g, m.inputs[0].producer, [(0, 0), (0, 0), tuple(pad_h), tuple(pad_w)], 0.0)
        conv = build.fake_kpu_conv2d(g, p.output, c_old["is_depthwise"], c_old["filter_type"], pool,
                                     c_old["weights"], c_old["bias"], c_old["fused_activation"], name=c_old.name)
        crop_h0 = -(s["begin"][2] // 2 + pad_h[0])
        crop_w0 = -(s["begin"][3] // 2)
        crop_h1 = s.output.shape[2] - conv.output.shape[2] - crop_h0
        crop_w1 = s.output.shape[3] - conv.output.shape[3] - crop_w0
        crop = build.pad(g, conv.output, [(0, 0), (0, 0), (crop_h0, crop_h1), (crop_w0, crop_w1)], 0.0)
        reroute(m.outputs[0], crop.output)
