"""Target-neutral folding transforms of ncc's default list (compiler spec §5.1 rows 1-9, 13, 20-21):
src/transforms/hlir/neutral/{fold_constant,fold_pad,fold_reshape,fold_transpose,fold_quantize,
simplify_reduce}.cpp.  None of them performs the self-contained check.
"""
from __future__ import annotations

import numpy as np

from ...ir.graph import Node
from ..rewrite import Match, Transform, first_child, reroute
from . import build

FLT_EPSILON = float(np.finfo(np.float32).eps)


def _bypass(m: Match) -> None:
    """Consumers of the boundary output read the boundary input's producer."""
    reroute(m.outputs[0], m.inputs[0].producer)


class FoldConstant(Transform):
    """Any node whose inputs are all constants is evaluated at compile time (§5.1 row 1, §8.2)."""

    name = "fold_constant"

    def match(self, node, ctx):
        if not node.inputs or node.op in ("output", "ignore"):
            return None
        if all(ic.producer is not None and ic.producer.node.op == "constant" for ic in node.inputs):
            return Match([node] + [ic.producer.node for ic in node.inputs], list(node.inputs), list(node.outputs))
        return None

    def rewrite(self, g, m, ctx):
        from ...ir.ops import evaluator

        node = m.nodes[0]
        values = evaluator(node.op)(node, [ic.producer.node.attrs["data"] for ic in node.inputs])
        for k, (oc, v) in enumerate(zip(node.outputs, values)):
            name = node.name if len(node.outputs) == 1 else f"{node.name}/{k}"
            v = np.asarray(v, dtype=np.uint8 if oc.dtype == "uint8" else np.float32).reshape(oc.shape)
            c = build.constant(g, v, oc.shape, name=name)
            reroute(oc, c.output)


class FoldNopPad(Transform):
    name = "fold_nop_pad"
    ops = frozenset({"pad"})

    def match(self, node, ctx):
        if all(tuple(p) == (0, 0) for p in node["paddings"]):
            return Match([node], [node.input], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        _bypass(m)


class FoldNopReshape(Transform):
    name = "fold_nop_reshape"
    ops = frozenset({"reshape"})

    def match(self, node, ctx):
        if node.input.shape == node.output.shape:
            return Match([node], [node.input], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        _bypass(m)


class FoldNopTranspose(Transform):
    name = "fold_nop_transpose"
    ops = frozenset({"transpose"})

    def match(self, node, ctx):
        if all(p == i for i, p in enumerate(node["perm"])):
            return Match([node], [node.input], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        _bypass(m)


def pad_value_key(v):
    """ncc compares scalar pad values by type and raw bytes."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return ("u8", int(v))
    return ("f32", np.float32(v).tobytes())


class FoldPadPad(Transform):
    name = "fold_pad_pad"
    ops = frozenset({"pad"})

    def match(self, node, ctx):
        p2 = first_child(node, "pad")
        if p2 is not None and pad_value_key(node["pad_value"]) == pad_value_key(p2["pad_value"]) \
                and not _crop_then_pad(node["paddings"], p2["paddings"]):
            return Match([node, p2], [node.input], [p2.output])
        return None

    def rewrite(self, g, m, ctx):
        p1, p2 = m.nodes
        pads = [(a[0] + b[0], a[1] + b[1]) for a, b in zip(p1["paddings"], p2["paddings"])]
        p = build.pad(g, m.inputs[0].producer, pads, p1["pad_value"], name=p1.name)
        reroute(m.outputs[0], p.output)


def _crop_then_pad(first, second) -> bool:
    """Deviation D46: ncc sums the paddings of any two pads in a row. Where the first pad crops a side (negative)
    by more than the second pads it (positive), the sum is a smaller crop: the pad values the second pad adds
    are replaced by cropped data (a unit-stride slice turned into a cropping pad, then a zero PAD). Such pairs
    stay two pads. A crop and a pad of the same width (sum 0) are still summed as ncc does: ncc's own
    stride-2 SAME conv lowering writes that pair (reference case output_2x2) where the row is never read."""
    return any(a < 0 < b and a + b < 0 for pa, pb in zip(first, second) for a, b in zip(pa, pb))


class FoldPadStridedSlice(Transform):
    name = "fold_pad_strided_slice"
    ops = frozenset({"pad"})

    def match(self, node, ctx):
        if not any(b < 0 or a < 0 for b, a in node["paddings"]):
            return None
        s = first_child(node, "strided_slice")
        if s is None:
            return None
        if all(v >= 0 for v in s["begin"]) and all(v >= 0 for v in s["end"]) \
                and s["new_axis_mask"] == 0 and s["shrink_axis_mask"] == 0:
            return Match([node, s], [node.input], [s.output])
        return None

    def rewrite(self, g, m, ctx):
        p_old, s_old = m.nodes
        pads, begin, end = [], list(s_old["begin"]), list(s_old["end"])
        for i, (b, a) in enumerate(p_old["paddings"]):
            if b < 0:
                begin[i] += -b
                end[i] += -b
                b = 0
            pads.append((b, 0 if a < 0 else a))
        p = build.pad(g, m.inputs[0].producer, pads, p_old["pad_value"], name=p_old.name)
        s = build.strided_slice(g, p.output, begin, end, s_old["strides"], s_old["begin_mask"], s_old["end_mask"],
                                s_old["ellipsis_mask"], s_old["new_axis_mask"], s_old["shrink_axis_mask"], name=s_old.name)
        reroute(m.outputs[0], s.output)


def almost_equal(q1, q2) -> bool:
    return q1.zero_point == q2.zero_point and abs(float(q1.scale) - float(q2.scale)) <= FLT_EPSILON


class FoldQuantize(Transform):
    """quantize→dequantize or dequantize→quantize with almost equal params (§5.1 row 7)."""

    name = "fold_quantize"
    ops = frozenset({"quantize", "dequantize"})

    def match(self, node, ctx):
        other = "dequantize" if node.op == "quantize" else "quantize"
        for c in node.output.consumers:
            if c.node.op == other and almost_equal(node["quant_param"], c.node["quant_param"]):
                return Match([node, c.node], [node.input], [c.node.output])
        return None

    def rewrite(self, g, m, ctx):
        _bypass(m)


class FoldReshape(Transform):
    name = "fold_reshape"
    ops = frozenset({"reshape"})

    def match(self, node, ctx):
        r2 = first_child(node, "reshape")
        if r2 is not None:
            return Match([node, r2], [node.input], [r2.output])
        return None

    def rewrite(self, g, m, ctx):
        r2 = m.nodes[1]
        r = build.reshape(g, m.inputs[0].producer, r2.output.shape, name=r2.name)
        reroute(m.outputs[0], r.output)


class FoldTranspose(Transform):
    name = "fold_transpose"
    ops = frozenset({"transpose"})

    def match(self, node, ctx):
        t2 = first_child(node, "transpose")
        if t2 is not None and len(t2["perm"]) == len(node["perm"]):
            return Match([node, t2], [node.input], [t2.output])
        return None

    def rewrite(self, g, m, ctx):
        t1, t2 = m.nodes
        p1, p2 = t1["perm"], t2["perm"]
        t = build.transpose(g, m.inputs[0].producer, [p1[p2[i]] for i in range(len(p1))], name=t2.name)
        reroute(m.outputs[0], t.output)


class TransposeToReshape(Transform):
    """A transpose that keeps the order of the non-unit dims is a reshape (§5.1 row 20)."""

    name = "transpose_to_reshape"
    ops = frozenset({"transpose"})

    def match(self, node, ctx):
        last = 0
        for i_dim in node["perm"]:
            if node.input.shape[i_dim] != 1:
                if i_dim < last:
                    return None
                last = i_dim
        return Match([node], [node.input], [node.output])

    def rewrite(self, g, m, ctx):
        t = m.nodes[0]
        r = build.reshape(g, m.inputs[0].producer, t.output.shape, name=t.name)
        reroute(m.outputs[0], r.output)


class StridedSliceToPad(Transform):
    """Unit-stride slice → cropping pad (uint8 value 0) + reshape (§5.1 row 13)."""

    name = "strided_slice_to_pad"
    ops = frozenset({"strided_slice"})

    def match(self, node, ctx):
        if list(node["strides"]) == [1, 1, 1, 1]:
            return Match([node], [node.input], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        s = m.nodes[0]
        src = m.inputs[0].producer
        pads = [(-b, e - d) for b, e, d in zip(s["begin"], s["end"], src.shape)]
        p = build.pad(g, src, pads, 0, name=s.name)
        r = build.reshape(g, p.output, s.output.shape)
        reroute(m.outputs[0], r.output)


class SimplifyReduce(Transform):
    """Single-axis non-keep-dims reduce whose next dim is 1 → reshape + keep-dims reduce (§5.1 row 21)."""

    name = "simplify_reduce"
    ops = frozenset({"reduce"})

    def match(self, node, ctx):
        axes = list(node["axis"])
        if len(axes) == 1 and not node["keep_dims"]:
            a = axes[0]
            shp = node.input.shape
            if len(shp) > a + 1 and shp[a + 1] == 1:
                return Match([node], [node.input], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        r_old: Node = m.nodes[0]
        a = r_old["axis"][0]
        shp = list(r_old.input.shape)
        new_shape = shp[: a + 1] + shp[a + 2:]
        rp = build.reshape(g, m.inputs[0].producer, new_shape)
        out = list(new_shape)
        out[a] = 1
        r = build.like(g, r_old, [rp.output], [tuple(out)], keep_dims=True)
        reroute(m.outputs[0], r.output)


def reduce_out_shape(shape, axes, keep_dims) -> tuple:
    out = []
    for i, d in enumerate(shape):
        if i in axes:
            if keep_dims:
                out.append(1)
        else:
            out.append(d)
    return tuple(out) or (1,)
