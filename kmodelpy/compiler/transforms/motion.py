"""Transpose motions of ncc's default list (compiler spec §5.1 rows 14-19):
src/transforms/hlir/neutral/transpose_motion.cpp.  They move the NHWC↔NCHW transposes the importer
puts around every layout-sensitive op past element-wise ops so that pairs meet and fold.
"""
from __future__ import annotations

import bisect

from ..rewrite import Match, Transform, parent, reroute
from . import build
from .neutral import reduce_out_shape


def _prod(ic):
    return ic.producer.node if ic.producer is not None else None


class TransposeBinaryMotion(Transform):
    name = "transpose_binary_motion"
    ops = frozenset({"binary"})

    def match(self, node, ctx):
        t1, t2 = _prod(node.inputs[0]), _prod(node.inputs[1])
        if t1 is not None and t2 is not None and t1.op == "transpose" and t2.op == "transpose" \
                and tuple(t1["perm"]) == tuple(t2["perm"]):
            return Match([t1, t2, node], [t1.input, t2.input], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        t1, _, b_old = m.nodes
        b = build.binary(g, m.inputs[0].producer, m.inputs[1].producer, b_old["binary_op"], b_old["fused_activation"])
        t = build.transpose(g, b.output, t1["perm"])
        reroute(m.outputs[0], t.output)


class TransposeConstantBinaryMotion(Transform):
    name = "transpose_constant_binary_motion"
    ops = frozenset({"binary"})

    def match(self, node, ctx):
        a, b = _prod(node.inputs[0]), _prod(node.inputs[1])
        if a is not None and b is not None:
            if a.op == "transpose" and b.op == "constant" and len(b.output.shape) == 1:
                return Match([a, b, node], [a.input], [node.output])
            if b.op == "transpose" and a.op == "constant" and len(a.output.shape) == 1:
                return Match([b, a, node], [b.input], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        tp, con_old, b_old = m.nodes
        perm = list(tp["perm"])
        expand = len(perm) - perm[-1] - 1
        shape = list(con_old.output.shape)
        if shape[0] != 1:
            shape += [1] * expand
        con = build.constant(g, con_old["data"], shape)
        src = m.inputs[0].producer
        if _prod(b_old.inputs[0]).op == "constant":
            b = build.binary(g, con.output, src, b_old["binary_op"], b_old["fused_activation"])
        else:
            b = build.binary(g, src, con.output, b_old["binary_op"], b_old["fused_activation"])
        t = build.transpose(g, b.output, perm)
        reroute(m.outputs[0], t.output)


class TransposeConcatMotion(Transform):
    name = "transpose_concat_motion"
    ops = frozenset({"concat"})

    def match(self, node, ctx):
        perm, tps = None, []
        for ic in node.inputs:
            p = _prod(ic)
            if p is None or p.op != "transpose":
                return None
            if perm is None:
                perm = tuple(p["perm"])
            if perm != tuple(p["perm"]):
                return None
            tps.append(p)
        return Match([node] + tps, [t.input for t in tps], [node.output], {"perm": perm})

    def rewrite(self, g, m, ctx):
        con_old = m.nodes[0]
        perm = m.extra["perm"]
        axis = perm[con_old["axis"]]
        srcs = [ic.producer for ic in m.inputs]
        out = list(srcs[0].shape)
        out[axis] = sum(s.shape[axis] for s in srcs)
        c = build.like(g, con_old, srcs, [tuple(out)], name="", axis=axis)
        t = build.transpose(g, c.output, perm)
        reroute(m.outputs[0], t.output)


class _AfterTransposeMotion(Transform):
    """Matches a node whose (first) input is produced by a transpose: [transpose, node]."""

    def match(self, node, ctx):
        tp = parent(node, "transpose")
        if tp is not None:
            return Match([tp, node], [tp.input], [node.output])
        return None


class TransposePadMotion(_AfterTransposeMotion):
    name = "transpose_pad_motion"
    ops = frozenset({"pad"})

    def rewrite(self, g, m, ctx):
        tp, p_old = m.nodes
        perm = tp["perm"]
        pads = [(0, 0)] * len(p_old["paddings"])
        for i, pd in enumerate(p_old["paddings"]):
            pads[perm[i]] = tuple(pd)
        p = build.pad(g, m.inputs[0].producer, pads, p_old["pad_value"])
        t = build.transpose(g, p.output, perm)
        reroute(m.outputs[0], t.output)


class TransposeReduceMotion(_AfterTransposeMotion):
    """Reduce before the transpose; the non-keep-dims perm is built with ncc's quirk (§13.9)."""

    name = "transpose_reduce_motion"
    ops = frozenset({"reduce"})

    def rewrite(self, g, m, ctx):
        tp, r_old = m.nodes
        old_perm, old_axes = list(tp["perm"]), list(r_old["axis"])
        axes = [old_perm[a] for a in old_axes]
        if r_old["keep_dims"]:
            perm = old_perm
        else:
            perm = []
            for a in old_perm:
                if a not in old_axes:
                    perm.append(a - bisect.bisect_left(old_axes, a))
        src = m.inputs[0].producer
        r = build.like(g, r_old, [src], [reduce_out_shape(src.shape, axes, r_old["keep_dims"])], name="", axis=axes)
        t = build.transpose(g, r.output, perm)
        reroute(m.outputs[0], t.output)


class TransposeUnaryMotion(_AfterTransposeMotion):
    name = "transpose_unary_motion"
    ops = frozenset({"unary"})

    def rewrite(self, g, m, ctx):
        tp, u_old = m.nodes
        src = m.inputs[0].producer
        u = build.like(g, u_old, [src], [src.shape], name="")
        t = build.transpose(g, u.output, tp["perm"])
        reroute(m.outputs[0], t.output)
