"""Quantize-stage K210 transforms, passes Q1-Q3 and Q5 (compiler spec §6.3, §7.6;
src/transforms/hlir/k210/{kpu_conv2d,fuse_kpu_conv2d_pool,fold_kpu_upload,fuse_kpu_download}.cpp).

Q1 turns each calibrated ``fake_kpu_conv2d`` (plus a directly following marked ``fused_unary``, whose
function joins the KPU activation table) into ``quantize → kpu_upload → kpu_conv2d → kpu_download →
dequantize``; Q2 fuses a following max/mean pool; Q3 removes download→upload round trips between
KPU layers; Q5 gives every kpu_conv2d that feeds the CPU a main-memory output and lets a uint8 input
live in KPU memory directly.
"""
from __future__ import annotations

from ...errors import CompileError
from ...ir.origins import carry, keeps_float
from ...kpu.layer_args import ActivationTable, BatchNorm
from ..kpu_params import kpu_conv_params
from ..quant import get_quant_param
from ..rewrite import Match, Transform, first_child, link, parent, reroute
from . import build
from .build import POOL_BYPASS, POOL_MAX_2_S1, POOL_MAX_2_S2, POOL_MAX_4_S4, POOL_MEAN_2_S1, POOL_MEAN_2_S2, \
    POOL_MEAN_4_S4
from .kpu_lowering import supported_in_shape, supported_out_shape

KPU_FIELDS = ("is_depthwise", "filter_type", "pool_type", "weights", "pad_value", "arg_x", "shift_x", "arg_w",
              "shift_w", "arg_add", "batch_norm", "activation")


# what --bias-correction needs to know of a KPU conv (never emitted): the float clamp of its output, the
# batch-norm units per real output unit (s_act_in), and whether the activation is that clamp alone
TUNING_FIELDS = ("act_range", "act_in_scale", "act_linear")


def kpu_attrs(node, **changes) -> dict:
    d = {k: node.attrs[k] for k in KPU_FIELDS}
    d.update({k: node.attrs[k] for k in TUNING_FIELDS if k in node.attrs})
    d.update(changes)
    return d


class KpuConv2d(Transform):
    """Q1: fake_kpu_conv2d with marked input and output → real KPU conv with uint8 parameters."""

    name = "kpu_conv2d"
    ops = frozenset({"fake_kpu_conv2d"})

    def match(self, c, ctx):
        if not (c.input.producer.need_quantize and c.output.need_quantize):
            return None
        fu = first_child(c, "fused_unary")
        if fu is not None and fu.input.producer.need_quantize and fu.output.need_quantize and not keeps_float(fu):
            return Match([c, fu], [c.input], [fu.output])
        return Match([c], [c.input], [c.output])

    def rewrite(self, g, m, ctx):
        c = m.nodes[0]
        fu = m.nodes[1] if len(m.nodes) > 1 else None
        src = m.inputs[0].producer
        iq = get_quant_param(ctx.get_range(src), 8, ctx.range_clamp)
        yq = get_quant_param(ctx.get_range(c.output), 8, ctx.range_clamp)
        zq = get_quant_param(ctx.get_range(m.outputs[0]), 8, ctx.range_clamp)
        p = kpu_conv_params(c["weights"], c["bias"], c["fused_activation"], iq, yq, zq,
                            fu["program"] if fu is not None else None, name=c.name or "KPU conv")
        bn = BatchNorm(norm_mul=p.norm_mul, norm_add=p.norm_add, norm_shift=p.norm_shift)
        act = ActivationTable(shift_number=p.act_shift, y_mul=p.act_mul, x_start=p.act_start_x, add=p.act_add)
        q = build.quantize(g, src, iq, name=(src.node.name or "") + "/quantize")
        up = build.kpu_upload(g, q.output, name=c.name + "/kpu_download")  # sic: ncc names the upload so
        conv = build.kpu_conv2d(g, up.output, False, dict(
            is_depthwise=c["is_depthwise"], filter_type=c["filter_type"], pool_type=c["pool_type"],
            weights=p.weights, pad_value=iq.zero_point, arg_x=p.arg_x, shift_x=p.shift_x, arg_w=p.arg_w,
            shift_w=p.shift_w, arg_add=p.arg_add, batch_norm=bn, activation=act,
            act_range=tuple(c["fused_activation"]), act_in_scale=float(p.s_act_in), act_linear=fu is None), name=c.name)
        down = build.kpu_download(g, conv.output)
        d = build.dequantize(g, down.output, zq, name=c.name + "/dequantize")
        link(m.outputs[0], d.output, ctx)
        reroute(m.outputs[0], d.output)


def reduce_pool_type(op: str, filt: int, stride: int) -> int | None:
    """kpu_utils.h get_filter_type(reduce_op, filter, stride); None if unsupported.

    Deviation D8 (docs/deviations.md): ncc returns the 4x4 stride-4 pool for a 4x4 filter whatever its
    stride and then fails with a shape mismatch (quirk §13.8); here a 4x4 pool with stride != 4 is not a
    KPU pool, so it stays a CPU reduce_window2d."""
    table = {"max": (POOL_MAX_2_S2, POOL_MAX_2_S1, POOL_MAX_4_S4), "mean": (POOL_MEAN_2_S2, POOL_MEAN_2_S1, POOL_MEAN_4_S4)}
    if op not in table:
        return None
    s2, s1, f4 = table[op]
    if filt == 2:
        return s2 if stride == 2 else s1 if stride == 1 else None
    if filt == 4:
        return f4 if stride == 4 else None
    return None


def pool_implicit_padding(pool_type: int) -> tuple[int, int]:
    return (0, 1) if pool_type in (POOL_MEAN_2_S1, POOL_MAX_2_S1) else (0, 0)


class FuseKpuConv2dPool(Transform):
    """Q2: kpu_conv2d → download → dequantize → max/mean pool → pool fused into the KPU. Self-contained."""

    name = "fuse_kpu_conv2d_pool"
    ops = frozenset({"kpu_conv2d"})
    self_contained = True

    def match(self, c, ctx):
        if c["is_depthwise"] or c["pool_type"] != POOL_BYPASS:
            return None
        kd = first_child(c, "kpu_download")
        d = first_child(kd, "dequantize") if kd is not None else None
        r = first_child(d, "reduce_window2d") if d is not None else None
        if r is None:
            return None
        if not (supported_in_shape(r.input.shape) and supported_out_shape(r.output.shape)):
            return None
        if r["filter_h"] != r["filter_w"] or r["stride_h"] != r["stride_w"]:
            return None
        pt = reduce_pool_type(r["reduce_op"], r["filter_h"], r["stride_h"])
        if pt is None or r["dilation_h"] != 1 or r["dilation_w"] != 1:
            return None
        ip = pool_implicit_padding(pt)
        if tuple(r["padding_h"]) != ip or tuple(r["padding_w"]) != ip:
            return None
        return Match([c, kd, d, r], [c.input], [r.output], {"pool_type": pt})

    def rewrite(self, g, m, ctx):
        c_old, _, d_old, r = m.nodes
        conv = build.kpu_conv2d(g, m.inputs[0].producer, c_old["has_main_mem_output"],
                                kpu_attrs(c_old, pool_type=m.extra["pool_type"]), name=c_old.name)
        if conv.output.shape != r.output.shape:  # cannot happen since D8 (reduce_pool_type), kept as a guard
            raise CompileError(
                f"{r.name or 'pool'}: the {r['filter_h']}x{r['filter_w']} stride-{r['stride_h']} pool fused into "
                f"the KPU conv {c_old.name} changes the output shape ({list(conv.output.shape)} vs "
                f"{list(r.output.shape)})")
        kd = build.kpu_download(g, conv.output, name=c_old.name + "/kpu_download")
        d = build.dequantize(g, kd.output, d_old["quant_param"], name=c_old.name + "/dequantize")
        reroute(m.outputs[0], d.output)


class FoldKpuUpload(Transform):
    """Q3: upload→download or download→upload pairs cancel."""

    name = "fold_kpu_upload"
    ops = frozenset({"kpu_upload", "kpu_download"})

    def match(self, node, ctx):
        other = first_child(node, "kpu_download" if node.op == "kpu_upload" else "kpu_upload")
        if other is not None:
            return Match([node, other], [node.input], [other.output])
        return None

    def rewrite(self, g, m, ctx):
        reroute(m.outputs[0], m.inputs[0].producer)


class FuseKpuDownload(Transform):
    """Q5: kpu_conv2d → kpu_download becomes a kpu_conv2d with a second, main-memory output."""

    name = "fuse_kpu_download"
    ops = frozenset({"kpu_download"})

    def match(self, node, ctx):
        c = parent(node, "kpu_conv2d")
        if c is not None:
            return Match([c, node], [c.input], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        c_old = m.nodes[0]
        conv = build.kpu_conv2d(g, m.inputs[0].producer, True, kpu_attrs(c_old), name=c_old.name)
        others = False
        for ic in list(c_old.outputs[0].consumers):
            if ic.node.op != "kpu_download":
                ic.connect(conv.outputs[0])
                others = True
        if not others:
            build.ignore_node(g, conv.outputs[0])
        carry(c_old.outputs[0], conv.outputs[0])
        reroute(m.outputs[0], conv.outputs[1])


class FoldInputKpuUpload(Transform):
    """Q5: an input consumed only by a kpu_upload becomes an (unnamed) uint8 input in KPU memory."""

    name = "fold_input_kpu_upload"
    ops = frozenset({"input"})
    self_contained = True

    def match(self, node, ctx):
        up = first_child(node, "kpu_upload")
        if up is not None:
            return Match([node, up], [], [up.output])
        return None

    def rewrite(self, g, m, ctx):
        old = m.nodes[0]
        new = build.input_node(g, old.output.shape, build.U8, name="", memory=build.MEM_KPU)
        carry(old.output, new.output)  # the same codes, now in KPU RAM
        reroute(m.outputs[0], new.output)
