"""Quantize-stage neutral transforms, pass Q4 (compiler spec §5.4, §7.7-7.11;
src/transforms/hlir/neutral/{fold_quantize,dequantize_motion,quantized_conv2d,quantized_matmul,
quantized_binary,fused_unary_to_lookup1d}.cpp).

Every quantized op is emitted as ``quantize(iq) → op → dequantize(yq)`` with params from the
calibrated ranges of its input and output connectors; ``fold_quantize`` (in D) removes the pairs
between consecutive quantized ops.  Dequantize motions move pure data movement onto uint8.
"""
from __future__ import annotations

import numpy as np

from ...ir.origins import keeps_float
from .. import cpu_quant_params as cqp
from ..quant import get_quant_param
from ..rewrite import Match, Transform, first_child, link, reroute
from . import build


def qparam(ctx, out):
    return get_quant_param(ctx.get_range(out), 8, ctx.range_clamp)


class FoldInputQuantize(Transform):
    """Float input → uint8 input + dequantize (only when the input type is uint8). Self-contained."""

    name = "fold_input_quantize"
    ops = frozenset({"input"})
    self_contained = True

    def match(self, node, ctx):
        if node.output.dtype == "float32":
            return Match([node], [], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        old = m.nodes[0]
        new = build.input_node(g, old.output.shape, build.U8, name=old.name, memory=old.output.memory)
        d = build.dequantize(g, new.output, qparam(ctx, old.output), name=old.name + "/dequantize")
        link(old.output, d.output, ctx)
        reroute(old.output, d.output)


class _DequantizeMotion(Transform):
    """``dequantize → X`` becomes ``X(uint8) → dequantize``; the new dequantize output carries no
    attribute and no range (quirk §13.6)."""

    target = ""
    ops = frozenset({"dequantize"})

    def match(self, node, ctx):
        x = first_child(node, self.target)
        if x is not None:
            return Match([node, x], [node.input], [x.output])
        return None

    def make(self, g, x, src):
        raise NotImplementedError

    def rewrite(self, g, m, ctx):
        d_old, x_old = m.nodes
        x = self.make(g, x_old, m.inputs[0].producer, d_old["quant_param"])
        d = build.dequantize(g, x.output, d_old["quant_param"], name=d_old.name)
        reroute(m.outputs[0], d.output)


class DequantizeReshapeMotion(_DequantizeMotion):
    name = "dequantize_reshape_motion"
    target = "reshape"

    def make(self, g, x, src, qp):
        return build.reshape(g, src, x.output.shape, name=x.name)


class DequantizeTransposeMotion(_DequantizeMotion):
    name = "dequantize_transpose_motion"
    target = "transpose"

    def make(self, g, x, src, qp):
        return build.transpose(g, src, x["perm"], name=x.name)


class DequantizePadMotion(_DequantizeMotion):
    """The uint8 pad value is the quantized float pad value, ``clamp(round(v·scale + zp), 0, 255)`` — the
    zero point for the usual 0.0 (ncc computes it too but never serialises it: deviation D3)."""

    name = "dequantize_pad_motion"
    target = "pad"

    def make(self, g, x, src, qp):
        v = np.float32(x["pad_value"])
        q = int(np.clip(np.round(np.float32(np.float32(v * np.float32(qp.scale)) + np.float32(qp.zero_point))), 0, 255))
        return build.pad(g, src, x["paddings"], np.uint8(q), name=x.name)


class DequantizeStridedSliceMotion(_DequantizeMotion):
    name = "dequantize_strided_slice_motion"
    target = "strided_slice"

    def make(self, g, x, src, qp):
        return build.strided_slice(g, src, x["begin"], x["end"], x["strides"], x["begin_mask"], x["end_mask"],
                                   x["ellipsis_mask"], x["new_axis_mask"], x["shrink_axis_mask"], name=x.name)


class DequantizeResizeImageMotion(_DequantizeMotion):
    name = "dequantize_resize_image_motion"
    target = "resize_image"

    def make(self, g, x, src, qp):
        return build.like(g, x, [src], [x.output.shape], [build.U8])


class DequantizeReplicationConcatMotion(Transform):
    """kmodelpy only (the resize lowering, D11): an ``edge_replication`` concat — a tensor between slices of
    itself — whose inputs are all dequantized with one quant param runs on uint8 and is dequantized after.
    It changes no value (ncc would dequantize, concat in float and quantize again with the same range); ncc's
    own concats are untouched."""

    name = "dequantize_replication_concat_motion"
    ops = frozenset({"concat"})

    def match(self, node, ctx):
        if not node.attrs.get("edge_replication"):
            return None
        ds = [ic.producer.node for ic in node.inputs]
        if all(d.op == "dequantize" for d in ds) and len({_qp_key(d["quant_param"]) for d in ds}) == 1:
            return Match([node] + ds, [d.input for d in ds], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        c_old, d0 = m.nodes[0], m.nodes[1]
        c = build.like(g, c_old, [ic.producer for ic in m.inputs], [c_old.output.shape], [build.U8])
        d = build.dequantize(g, c.output, d0["quant_param"], name=d0.name)
        reroute(m.outputs[0], d.output)


def _qp_key(qp):
    return (int(qp.zero_point), float(qp.scale)) if hasattr(qp, "zero_point") else (int(qp[0]), float(qp[1]))


def _quantize_input(g, ctx, out):
    q = build.quantize(g, out, qparam(ctx, out), name=(out.node.name or "") + "/quantize")
    return q


class QuantizedConv2d(Transform):
    """Checkpointed float conv → CPU QuantizedConv2D (§7.7)."""

    name = "quantized_conv2d"
    ops = frozenset({"conv2d"})

    def match(self, c, ctx):
        if c.input.producer.need_quantize and c.output.need_quantize and c.need_quantize:
            return Match([c], [c.input], [c.output])
        return None

    def rewrite(self, g, m, ctx):
        c = m.nodes[0]
        src = m.inputs[0].producer
        iq, yq = qparam(ctx, src), qparam(ctx, c.output)
        p = cqp.quantized_conv2d_params(c["weights"], c["bias"], iq, yq)
        q = _quantize_input(g, ctx, src)
        qc = g.add("quantized_conv2d", [q.output], [c.output.shape], [build.U8], name=c.name,
                   weights=p.weights, bias=p.bias, groups=c["groups"], padding_h=c["padding_h"],
                   padding_w=c["padding_w"], stride_h=c["stride_h"], stride_w=c["stride_w"],
                   dilation_h=c["dilation_h"], dilation_w=c["dilation_w"], input_offset=p.input_offset,
                   filter_offset=p.filter_offset, output_mul=p.output_mul, output_shift=p.output_shift,
                   output_offset=p.output_offset, filter_shape=tuple(c["weights"].shape),
                   bias_scale=float(np.float32(iq.scale) * np.float32(p.wq.scale)),
                   act_range=tuple(c["fused_activation"]))
        d = build.dequantize(g, qc.output, yq, name=c.name + "/dequantize")
        link(c.output, d.output, ctx)
        reroute(m.outputs[0], d.output)


class QuantizedMatmul(Transform):
    """Checkpointed float matmul → CPU QuantizedMatMul (§7.8)."""

    name = "quantized_matmul"
    ops = frozenset({"matmul"})

    def match(self, mm, ctx):
        if mm.inputs[0].producer.need_quantize and mm.inputs[1].producer.need_quantize \
                and mm.output.need_quantize and mm.need_quantize:
            return Match([mm], list(mm.inputs), [mm.output])
        return None

    def rewrite(self, g, m, ctx):
        mm = m.nodes[0]
        a, b = m.inputs[0].producer, m.inputs[1].producer
        i1q, i2q, yq = qparam(ctx, a), qparam(ctx, b), qparam(ctx, mm.output)
        p = cqp.quantized_matmul_params(mm["bias"], i1q, i2q, yq)
        q1 = _quantize_input(g, ctx, a)
        q2 = _quantize_input(g, ctx, b)
        qm = g.add("quantized_matmul", [q1.output, q2.output], [mm.output.shape], [build.U8], name=mm.name,
                   bias=p.bias, input_a_offset=p.input_a_offset, input_b_offset=p.input_b_offset,
                   output_mul=p.output_mul, output_shift=p.output_shift, output_offset=p.output_offset,
                   bias_scale=float(np.float32(i1q.scale) * np.float32(i2q.scale)),
                   act_range=tuple(mm["fused_activation"]))
        d = build.dequantize(g, qm.output, yq, name=mm.name + "/dequantize")
        link(mm.output, d.output, ctx)
        reroute(m.outputs[0], d.output)


class QuantizedBinary(Transform):
    """Binary with both inputs and the output marked → CPU QuantizedBinary (§7.9; node flag not needed)."""

    name = "quantized_binary"
    ops = frozenset({"binary"})

    def match(self, b, ctx):
        if keeps_float(b):  # --float-layers
            return None
        if b.inputs[0].producer.need_quantize and b.inputs[1].producer.need_quantize and b.output.need_quantize:
            return Match([b], list(b.inputs), [b.output])
        return None

    def rewrite(self, g, m, ctx):
        b = m.nodes[0]
        x, y = m.inputs[0].producer, m.inputs[1].producer
        i1q, i2q, yq = qparam(ctx, x), qparam(ctx, y), qparam(ctx, b.output)
        p = cqp.quantized_binary_params(b["binary_op"], i1q, i2q, yq)
        q1 = _quantize_input(g, ctx, x)
        q2 = _quantize_input(g, ctx, y)
        qb = g.add("quantized_binary", [q1.output, q2.output], [b.output.shape], [build.U8], name=b.name,
                   binary_op=b["binary_op"], input_a_offset=p.input_a_offset, input_a_mul=p.input_a_mul,
                   input_a_shift=p.input_a_shift, input_b_offset=p.input_b_offset, input_b_mul=p.input_b_mul,
                   input_b_shift=p.input_b_shift, output_mul=p.output_mul, output_shift=p.output_shift,
                   output_offset=p.output_offset)
        d = build.dequantize(g, qb.output, yq, name=b.name + "/dequantize")
        link(b.output, d.output, ctx)
        reroute(m.outputs[0], d.output)


class FusedUnaryToLookup1d(Transform):
    """Marked fused_unary → quantize → 256-entry table_lookup1d → dequantize (§7.10)."""

    name = "fused_unary_to_lookup1d"
    ops = frozenset({"fused_unary"})

    def match(self, f, ctx):
        if f.input.producer.need_quantize and f.output.need_quantize and not keeps_float(f):
            return Match([f], [f.input], [f.output])
        return None

    def rewrite(self, g, m, ctx):
        f = m.nodes[0]
        src = m.inputs[0].producer
        iq, yq = qparam(ctx, src), qparam(ctx, f.output)
        q = _quantize_input(g, ctx, src)
        table = build.constant(g, np.asarray(cqp.lookup_table(f["program"], iq, yq), np.uint8), (256,),
                               name=f.name + "/table")
        lut = g.add("table_lookup1d", [q.output, table.output], [src.shape], [build.U8], name=f.name)
        d = build.dequantize(g, lut.output, yq, name=f.name + "/dequantize")
        link(f.output, d.output, ctx)
        reroute(m.outputs[0], d.output)
