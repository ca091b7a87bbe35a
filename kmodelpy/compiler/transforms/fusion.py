"""Fusion transforms of ncc's default list (compiler spec §5.1 rows 10-12 and 22-26):
src/transforms/hlir/neutral/{fuse_pad,fuse_clamp,fuse_unary}.cpp.

Rows 22-26 (unary/binary → ``fused_unary``) only run for uint8 inference.  Two deliberate deviations
(docs/deviations.md): ncc's fuse_clamp combines the upper bounds with ``max`` and so drops the cap of a
separate RELU6 (quirk §13.2, D2); kmodelpy keeps ``min`` of the upper bounds. ncc's fusions of a binary into
a ``fused_unary`` drop the binary's fused activation (quirk §13.4, D12); kmodelpy appends it as max/min.
"""
from __future__ import annotations

import numpy as np

from ..fused_unary import FuOp, concat
from ..rewrite import Match, Transform, first_child, parent, reroute
from . import build


def _prod(ic):
    return ic.producer.node if ic.producer is not None else None


def _size(oc) -> int:
    return int(np.prod(oc.shape))


def _scalar(node) -> float:
    return np.float32(np.asarray(node["data"]).reshape(-1)[0])


class FusePadConv2d(Transform):
    """A non-negative H/W pad before a conv becomes conv padding; the pad value is ignored (as ncc)."""

    name = "fuse_pad_conv2d"
    ops = frozenset({"pad"})

    def match(self, node, ctx):
        p = node["paddings"]
        if len(p) == 4 and min(p[2][0], p[2][1], p[3][0], p[3][1]) >= 0 and (sum(p[2]) > 0 or sum(p[3]) > 0):
            conv = first_child(node, "conv2d")
            if conv is not None:
                return Match([node, conv], [node.input], [conv.output])
        return None

    def rewrite(self, g, m, ctx):
        p_old, c_old = m.nodes
        pads = [list(x) for x in p_old["paddings"]]
        conv_pads = [list(c_old["padding_h"]), list(c_old["padding_w"])]
        for i in (2, 3):
            for j in (0, 1):
                if pads[i][j] > 0:
                    conv_pads[i - 2][j] += pads[i][j]
                    pads[i][j] = 0
        p = build.pad(g, m.inputs[0].producer, pads, p_old["pad_value"], name=p_old.name)
        c = build.conv2d(g, p.output, c_old["weights"], c_old["bias"], c_old["groups"], tuple(conv_pads[0]),
                         tuple(conv_pads[1]), c_old["stride_h"], c_old["stride_w"], c_old["dilation_h"],
                         c_old["dilation_w"], c_old["fused_activation"], name=c_old.name)
        reroute(m.outputs[0], c.output)


def combine_clamp(act, low, high):
    """ncc combines ``{max(lo, low), max(hi, high)}`` (quirk §13.2); kmodelpy uses min for the upper bound
    so a separate RELU6 keeps its cap (deviation D2)."""
    lo, hi = np.float32(act[0]), np.float32(act[1])
    return (max(lo, low), min(hi, high))


class _FuseClamp(Transform):
    producer_op = ""
    ops = frozenset({"clamp"})

    def match(self, node, ctx):
        low, high = parent(node, "constant", 1), parent(node, "constant", 2)
        prod = parent(node, self.producer_op, 0)
        if low is not None and high is not None and prod is not None \
                and _size(low.output) == 1 and _size(high.output) == 1:
            return Match([node, low, high, prod], list(prod.inputs), [node.output])
        return None


class FuseClampConv2d(_FuseClamp):
    name = "fuse_clamp_conv2d"
    producer_op = "conv2d"

    def rewrite(self, g, m, ctx):
        _, low, high, c_old = m.nodes
        act = combine_clamp(c_old["fused_activation"], _scalar(low), _scalar(high))
        c = build.like(g, c_old, [m.inputs[0].producer], [c_old.output.shape], fused_activation=act)
        reroute(m.outputs[0], c.output)


class FuseClampBinary(_FuseClamp):
    name = "fuse_clamp_binary"
    producer_op = "binary"

    def rewrite(self, g, m, ctx):
        _, low, high, b_old = m.nodes
        act = combine_clamp(b_old["fused_activation"], _scalar(low), _scalar(high))
        b = build.binary(g, m.inputs[0].producer, m.inputs[1].producer, b_old["binary_op"], act, name=b_old.name)
        reroute(m.outputs[0], b.output)


def with_activation(prog, act) -> tuple:
    """``prog`` followed by the binary's fused activation as ``max(·, lo)`` / ``min(·, hi)`` (deviation D12: ncc's
    fuse_one_binary, fuse_one_fused_unary_with_binary and fuse_two_fused_unary_with_binary drop it, quirk §13.4,
    so e.g. MUL by a scalar followed by RELU6 loses its clamp). Full-range bounds add nothing."""
    prog = list(prog)
    lo, hi = (np.float32(v) for v in act)
    for bound, op in ((lo, "max"), (hi, "min")):
        if abs(bound) < np.finfo(np.float32).max:
            last = len(prog) - 1
            prog.append(FuOp.constant(bound))
            prog.append(FuOp.binary(op, last, len(prog) - 1))
    return tuple(prog)


class FuseOneUnary(Transform):
    name = "fuse_one_unary"
    ops = frozenset({"unary"})

    def match(self, node, ctx):
        return Match([node], [node.input], [node.output])

    def rewrite(self, g, m, ctx):
        u = m.nodes[0]
        prog = (FuOp.ldx(), FuOp.unary(u["unary_op"], 0))
        f = build.fused_unary(g, m.inputs[0].producer, prog)
        reroute(m.outputs[0], f.output)


class FuseOneBinary(Transform):
    """Binary with a 1-element constant operand → fused_unary; the binary's activation is kept (D12; ncc drops
    it, §13.4)."""

    name = "fuse_one_binary"
    ops = frozenset({"binary"})

    def match(self, node, ctx):
        a, b = _prod(node.inputs[0]), _prod(node.inputs[1])
        if b is not None and b.op == "constant" and _size(b.output) == 1:
            return Match([node, b], [node.inputs[0]], [node.output], {"const_b": True})
        if a is not None and a.op == "constant" and _size(a.output) == 1:
            return Match([node, a], [node.inputs[1]], [node.output], {"const_b": False})
        return None

    def rewrite(self, g, m, ctx):
        b_old, c = m.nodes
        op = b_old["binary_op"]
        if _prod(b_old.inputs[1]).op == "constant":
            prog = (FuOp.ldx(), FuOp.constant(_scalar(c)), FuOp.binary(op, 0, 1))
        else:
            prog = (FuOp.ldx(), FuOp.constant(_scalar(c)), FuOp.binary(op, 1, 0))
        src = m.inputs[0].producer
        f = build.fused_unary(g, src, with_activation(prog, b_old["fused_activation"]))
        reroute(m.outputs[0], f.output)


class FuseTwoFusedUnary(Transform):
    name = "fuse_two_fused_unary"
    ops = frozenset({"fused_unary"})

    def match(self, node, ctx):
        f2 = first_child(node, "fused_unary")
        if f2 is not None:
            return Match([node, f2], [node.input], [f2.output])
        return None

    def rewrite(self, g, m, ctx):
        f1, f2 = m.nodes
        f = build.fused_unary(g, m.inputs[0].producer, concat(f1["program"], f2["program"]))
        reroute(m.outputs[0], f.output)


class FuseOneFusedUnaryWithBinary(Transform):
    name = "fuse_one_fused_unary_with_binary"
    ops = frozenset({"binary"})

    def match(self, node, ctx):
        f = parent(node, "fused_unary", 0)
        if f is not None:
            if f.input.producer is node.inputs[1].producer:
                return Match([f, node], [f.input, node.inputs[1]], [node.output])
            return None
        f = parent(node, "fused_unary", 1)
        if f is not None and f.input.producer is node.inputs[0].producer:
            return Match([f, node], [node.inputs[0], f.input], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        f_old, b_old = m.nodes
        prog = list(f_old["program"])
        arg_f = len(prog) - 1
        prog.append(FuOp.ldx())
        arg_x = len(prog) - 1
        if _prod(b_old.inputs[1]).op == "fused_unary":
            prog.append(FuOp.binary(b_old["binary_op"], arg_x, arg_f))
        else:
            prog.append(FuOp.binary(b_old["binary_op"], arg_f, arg_x))
        f = build.fused_unary(g, m.inputs[0].producer, with_activation(prog, b_old["fused_activation"]))
        reroute(m.outputs[0], f.output)


def merge_programs(p1, p2):
    """fuse_unary.cpp ``merge_subgraph``: p2 appended with every argument shifted by len(p1)."""
    inc = len(p1)
    out = list(p1)
    for op in p2:
        out.append(op if op.kind in ("ldx", "constant") else op.shifted(inc))
    return out


class FuseTwoFusedUnaryWithBinary(Transform):
    name = "fuse_two_fused_unary_with_binary"
    ops = frozenset({"binary"})

    def match(self, node, ctx):
        f1, f2 = parent(node, "fused_unary", 0), parent(node, "fused_unary", 1)
        if f1 is not None and f2 is not None and f1.input.producer is f2.input.producer:
            return Match([f1, f2, node], [f1.input], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        f1, f2, b_old = m.nodes
        prog = merge_programs(f1["program"], f2["program"])
        a_id, b_id = len(f1["program"]) - 1, len(prog) - 1
        prog.append(FuOp.binary(b_old["binary_op"], a_id, b_id))
        f = build.fused_unary(g, m.inputs[0].producer, with_activation(prog, b_old["fused_activation"]))
        reroute(m.outputs[0], f.output)
