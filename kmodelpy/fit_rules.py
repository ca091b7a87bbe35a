"""Per-layer KPU fit verdicts for a float TFLite or ONNX model, before any calibration (compiler spec §4, §5.3,
§6.1-6.4, §7.6).

The structural part of ``ncc compile`` does not depend on calibration data, so the verdicts come from
the compiler itself rather than from a second copy of its rules: the model is imported by its front end,
passes P1 and P2 run (the K210 lowering: ``fake_kpu_conv2d``, select
pools, strided-slice motion, pad/crop folding) and the quantization checkpoints C1-C3 are placed.  On
that graph the quantize-stage decisions that are pure structure are applied as rules: Q1 (a
``fused_unary`` right after a KPU conv is absorbed into its activation table), Q2 (a max/mean pool
right after a non-depthwise KPU conv becomes a KPU pool) and the CPU precision of the rest
(uint8 when checkpointed, else float).  Each verdict is then mapped back to the source operator it
came from (``graph.source`` + node names, which the transforms keep).  The rules see the source model as
front-end-neutral layers (:class:`kmodelpy.frontends.source.SourceOp`: a ``kind`` such as conv, depthwise,
dense, pool, elementwise, clamp, pad ...) and word their fixes in the framework's terms (``hints``: Keras
for .tflite, PyTorch for .onnx).

Explanations ("why not KPU") re-check the §6.2 conditions with the compiler's own predicates
(:mod:`kmodelpy.compiler.transforms.kpu_lowering`).

KPU RAM: when the sum of every KPU layer's input and output (an upper bound of ncc's first fit) passes
2 MiB, :func:`kmodelpy.compiler.kpu_ram.preview.preview_kpu_ram` continues a copy of this graph through
the rest of the pipeline up to ``fit_kpu_ram`` (with the ranges of one random input instead of a
calibration set), so the report gives the KPU RAM the compiled model needs and what
``--kpu-ram-overflow fit`` changes (row bands, tensors kept in main memory, another placement, layers
moved to the CPU) exactly as the compile will.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .compiler.transforms.build import POOL_LEFT_TOP_2_S2, POOL_LEFT_TOP_4_S4, POOL_RIGHT_TOP_2_S2
from .compiler.transforms.kpu_lowering import (kpu_pre_sur, supported_filter, supported_in_shape,
                                               supported_out_shape, weights_width)
from .compiler.transforms.quantize_k210 import pool_implicit_padding, reduce_pool_type
from .kpu.layout import kpu_bytes

KPU_RAM = 2 * 1024 * 1024
DOC_MAX_H, DOC_MAX_W = 240, 320  # the K210/MaixPy docs' input limit (ncc itself allows 256 x 512)
SELECT_POOLS = {POOL_LEFT_TOP_2_S2: "left-top 2x2", POOL_RIGHT_TOP_2_S2: "right-top 2x2",
                POOL_LEFT_TOP_4_S4: "left-top 4x4"}
POOL_NAMES = {1: "max 2x2 s2", 2: "mean 2x2 s2", 3: "max 4x4 s4", 4: "mean 4x4 s4", 8: "mean 2x2 s1",
              9: "max 2x2 s1"}

KPU, PARTIAL, CPU, FOLDED = "KPU", "partial", "CPU", "folded"
CONV_KINDS = ("conv", "depthwise")
DATA_KINDS = ("pad", "reshape", "transpose", "data", "resize")
MOVED_TO_CPU = ("its feature maps do not fit the 2 MiB KPU RAM even as row bands of one output row: kmodelpy "
                "runs it on the CPU (ncc fails with 'KPU allocator cannot allocate more memory')")


@dataclass
class LayerVerdict:
    """One source operator (TFLite or ONNX) and what the K210 compiler does with it.

    ``verdict``: "KPU" (runs entirely on the KPU, or is fused into a KPU layer), "partial" (KPU layer
    with CPU pad/crop/slice around it), "CPU", or "folded" (no runtime work is left).
    ``precision``: "uint8" / "float" for CPU work ("" when none). ``kpu_bytes``: input + output
    feature maps in KPU RAM layout (KPU layers only)."""

    index: int
    op: str
    output: str
    shape: tuple
    verdict: str
    precision: str = ""
    reasons: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kpu_in_shape: tuple | None = None  # NCHW of the KPU layer input (after any CPU pre-pad)
    kpu_out_shape: tuple | None = None  # NCHW of the KPU layer output (after its KPU pool)
    kpu_bytes: int | None = None
    fused_into: int | None = None  # index of the KPU layer this op is fused into
    params: int = 0  # weights the compiled layer stores (convs, dense layers, transpose convs, resize filters)
    kpu_ram: list[str] = field(default_factory=list)  # what --kpu-ram-overflow fit does to this layer

    @property
    def fits_kpu_ram(self) -> bool:
        return self.kpu_bytes is None or self.kpu_bytes <= KPU_RAM

    @property
    def on_kpu(self) -> bool:
        return self.verdict in (KPU, PARTIAL)


# ------------------------------------------------------------------------------------------ graph
def _compile_structure(model, wqt: float, oqt: int, on_cpu=frozenset()):
    """P1 + P2 + checkpoints C1-C3 (no calibration) on the imported graph (the convs in ``on_cpu`` kept off
    the KPU, as the compiler's KPU RAM fit does); returns (graph, name -> op index)."""
    from .compiler import transforms as T
    from .compiler.k210_ops import register_all
    from .compiler.pipeline import Options, make_context
    from .compiler.rewrite import run_pass

    register_all()
    g = model.graph
    g.assign_names()
    owner = {n.name: src[0] for n, src in g.source.items()}
    ctx = make_context(Options(weights_quantize_threshold=wqt, output_quantize_threshold=oqt), on_cpu)
    for p in (T.pass_p1, T.pass_p2, T.pass_c1, T.pass_c2, T.pass_c3):
        run_pass(g, p(ctx), ctx)
    for n in g.inputs:  # the input range comes from the calibration set (ncc's default)
        n.output.need_quantize = True
    return g, owner


def _consumers(node):
    return [ic.node for o in node.outputs for ic in o.consumers]


def _first_child(node, op):
    for c in _consumers(node):
        if c.op == op:
            return c
    return None


def _absorbed_unary(f):
    """The fused_unary Q1 absorbs into the KPU conv ``f`` (its first fused_unary consumer, marked)."""
    fu = _first_child(f, "fused_unary")
    if fu is not None and fu.input.producer.need_quantize and fu.output.need_quantize:
        return fu
    return None


def _fused_pool(f):
    """(reduce_window2d, KPU pool type, "") when Q2 fuses the pool after KPU conv ``f`` into it, else
    (the pool node or None, None, why not)."""
    if f["is_depthwise"]:
        return None, None, "the conv before it is depthwise (the KPU pools only after a non-depthwise conv)"
    if f["pool_type"] != 0:
        return None, None, "the conv before it already uses its KPU pool for a stride-2 subsampling"
    src = _absorbed_unary(f) or f
    cons = _consumers(f)
    if src is not f and len(cons) != 1:
        return None, None, "the conv output has other consumers"
    r_cons = _consumers(src)
    if len(r_cons) != 1 or r_cons[0].op != "reduce_window2d":
        return None, None, "the pool is not the only consumer of the conv output"
    r = r_cons[0]
    if not (supported_in_shape(r.input.shape) and supported_out_shape(r.output.shape)):
        return r, None, "its input is outside the KPU limits"
    if r["filter_h"] != r["filter_w"] or r["stride_h"] != r["stride_w"]:
        return r, None, "non-square filter or unequal strides"
    pt = reduce_pool_type(r["reduce_op"], r["filter_h"], r["stride_h"])
    if pt is None or r["dilation_h"] != 1 or r["dilation_w"] != 1:
        why = (f"the KPU pools only 2x2 (stride 2, or stride 1 with 'same' padding) and 4x4 stride 4, "
               f"not {r['filter_h']}x{r['filter_w']} stride {r['stride_h']}")
        if r["filter_h"] == 4 and r["stride_h"] != 4:
            why += " (ncc v0.2 maps it to the 4x4 stride-4 pool anyway and fails; kmodelpy keeps it on the CPU)"
        return r, None, why
    if tuple(r["padding_h"]) != pool_implicit_padding(pt) or tuple(r["padding_w"]) != pool_implicit_padding(pt):
        return r, None, "its padding does not match the KPU pool's (2x2/s2 and 4x4/s4 need 'valid', 2x2/s1 'same')"
    return r, pt, ""


# ------------------------------------------------------------------------------------------ reasons
def _why_not_kpu_conv(op, node, wqt, hints):
    """Reasons (and fixes) a conv2d stayed on the CPU, in the order fake_kpu_conv2d checks them."""
    reasons, fixes = [], []
    groups = op.groups
    kh, kw = op.kernel
    dil, stride = op.dilation, op.stride
    if op.weights is not None:
        width = weights_width(node["weights"] if node is not None else op.weights)
        if width > wqt:
            reasons.append(f"weights range {width:.1f} > --weights-quantize-threshold {wqt:g}")
            fixes.append("keep weights small (L2 regularisation; a BatchNorm with a tiny variance folded into "
                         f"the conv inflates them), or raise --weights-quantize-threshold to {math.ceil(width)} "
                         "(coarser uint8 weights)")
    cin = op.cin
    if groups not in (1, cin):
        reasons.append(f"grouped conv ({groups} groups)")
        fixes.append("use a depthwise conv + 1x1 conv, or a plain conv")
    if dil != (1, 1):
        if stride != (1, 1):
            reasons.append(f"dilation {dil[0]}x{dil[1]} together with stride {stride[0]}")
            fixes.append("use dilation with stride 1 (ncc maps it to the KPU by space-to-batch) or no dilation")
        else:
            reasons.append(f"dilation {dil[0]}x{dil[1]}: space-to-batch conv not eligible")
    if not supported_filter(kh, kw):
        reasons.append(f"{kh}x{kw} kernel (the KPU has 1x1 and 3x3 only)")
        fixes.append("use 3x3 kernels (two stacked 3x3 convs see as far as one 5x5)")
    if node is not None:
        ishape, oshape = node.input.shape, node.output.shape
        if not supported_in_shape(ishape):
            reasons.append(_shape_reason(ishape))
            fixes.append(_shape_fix(ishape))
        elif not supported_out_shape(oshape):
            reasons.append(f"{oshape[1]} output channels > 1024")
            fixes.append("use at most 1024 channels")
        elif supported_filter(kh, kw):
            pre_h, _ = kpu_pre_sur(node["padding_h"], kh)
            pre_w, _ = kpu_pre_sur(node["padding_w"], kh)
            s = (ishape[0], ishape[1], ishape[2] + sum(pre_h), ishape[3] + sum(pre_w))
            if not supported_in_shape(s):
                reasons.append(f"with its extra padding the input becomes {s[2]}x{s[3]}, outside the KPU limits")
                fixes.append(hints["same_short"])
    if not reasons:
        reasons.append("not mapped to the KPU by ncc's rules")
    return reasons, fixes


def _shape_reason(s) -> str:
    _, c, h, w = s
    parts = []
    if c > 1024:
        parts.append(f"{c} input channels > 1024")
    if h > 256 or w > 512:
        parts.append(f"input {h}x{w} (HxW) larger than the KPU's 256x512")
    if h < 4 or w < 4:
        parts.append(f"input {h}x{w} (HxW) smaller than the KPU's 4x4")
    return "; ".join(parts)


def _shape_fix(s) -> str:
    _, c, h, w = s
    if c > 1024:
        return "use at most 1024 channels"
    if h > 256 or w > 512:
        return "use a smaller input (<= 320x240 as the K210 docs advise) or subsample earlier"
    return "keep feature maps at least 4x4 (stop downsampling earlier, or flatten + Dense)"


#: resize forms that only move data (resize_lowering.plan), with the report's note
RESIZE_DATA = {"resize_image": "", "copy": "the resize reads one input per output: edge replication, ncc's nearest "
               "upscale and a strided slice (uint8, exact)"}
MOTION_OPS = ("reshape", "transpose", "pad", "strided_slice", "resize_image")


def _is_motion(n) -> bool:
    """Data movement Q4 moves behind a dequantize (the resize lowering's edge-replication concats too)."""
    return n.op in MOTION_OPS or (n.op == "concat" and bool(n.attrs.get("edge_replication")))


def _precisions(g) -> dict:
    """node -> "uint8" when C3 checkpointed the node and its inputs keep their quantization ranges, else "float".

    An input loses its range when it comes through data-movement ops that Q4 moves behind a dequantize: the new
    dequantize has no range (compiler spec §5.4 [QUIRK]), so the consumer cannot be quantized. There is a
    dequantize to move only when the source of the chain is itself quantized: KPU convs and the uint8 model
    input always, CPU convs, dense layers, elementwise programs and binaries when they are uint8 themselves
    (producers first: the graph's DFS order)."""
    prec: dict = {}

    def quantized(n) -> bool:
        return n.op in ("fake_kpu_conv2d", "input") or \
            (n.op in ("conv2d", "matmul", "fused_unary", "binary") and prec.get(n) == "uint8")

    def loses_range(ic) -> bool:
        n = ic.producer.node
        if not _is_motion(n):
            return False
        while _is_motion(n) and n.inputs:
            src = n.input.producer
            n = src.node
        return src.need_quantize and quantized(n)

    for n in g.dfs():
        lost = any(loses_range(ic) for ic in n.inputs if ic.producer.node.op != "constant")
        prec[n] = "uint8" if n.need_quantize and not lost else "float"
    return prec


def _float_reason(node, precision, oqt, wqt) -> str | None:
    if node.need_quantize and precision == "float":
        return ("its input comes through a uint8 pad/crop/slice/reshape after which ncc loses the quantization "
                "range: computed in float (ncc prints a misleading 'weights divergence' warning)")
    n = int(np.prod(node.output.shape))
    if n < oqt:
        return f"output has {n} elements < --output-quantize-threshold {oqt}: computed in float"
    if node.op == "conv2d" and weights_width(node["weights"]) > wqt:
        return "weights range too wide: ncc falls back to a float conv2d ('weights divergence')"
    return None


def _why_not_kpu_matmul(op, node, wqt, oqt, hints):
    reasons, fixes = [], []
    w = op.weights
    if w is None:
        return ["the weights are not a constant"], [f"use a {hints['dense']} layer with constant weights"]
    n, k = (w.shape[0], w.shape[1]) if w.ndim == 2 else (w.shape[0], int(np.prod(w.shape[1:])))
    width = weights_width(w)
    if width > wqt:
        reasons.append(f"weights range {width:.1f} > --weights-quantize-threshold {wqt:g}")
        fixes.append(f"keep weights small (L2 regularisation), or raise --weights-quantize-threshold to "
                     f"{math.ceil(width)} (coarser uint8 weights)")
    if k > 1024 or n > 1024:
        reasons.append(f"{k} inputs x {n} outputs: the KPU form needs both <= 1024")
        fixes.append(f"reduce the features before the {hints['dense']} layer (global pooling or a 1x1 conv with "
                     "fewer channels) so it has <= 1024 inputs and <= 1024 outputs")
    if k * n < oqt:
        reasons.append(f"only {k}x{n} = {k * n} weights < --output-quantize-threshold {oqt}: not worth a KPU layer")
    if not reasons:
        reasons.append("not mapped to the KPU by ncc's rules")
    return reasons, fixes


def _is_crop_after(pad) -> bool:
    """A pad after a KPU conv is that conv's CPU work when it crops (a negative amount) or feeds the next
    KPU conv directly (a crop merged with the next layer's pad); a plain pad that feeds other CPU work
    (e.g. a dilated conv's space-to-batch) belongs to the layer after it."""
    neg = any(b < 0 or a < 0 for b, a in pad["paddings"])
    return neg or any(c.op == "fake_kpu_conv2d" for c in _consumers(pad))


def _fmt_pads(p) -> str:
    (hb, ha), (wb, wa) = p[2], p[3]
    return f"H ({hb},{ha}) W ({wb},{wa})"


class _Analysis:
    def __init__(self, model, wqt, oqt, structure, kpu_fit=None):
        self.m, self.wqt, self.oqt = model, float(wqt), int(oqt)
        self.hints = model.hints
        self.ops = model.ops
        self.kpu_fit = kpu_fit
        self.on_cpu = _moved(kpu_fit)
        self.g, owner = structure
        self.owner = owner
        self.nodes: dict[int, list] = {}
        for n in self.g.nodes:
            if n.name in owner:
                self.nodes.setdefault(owner[n.name], []).append(n)
        self.unaries = self._unaries_by_producer(owner)
        self.prec = _precisions(self.g)
        self.producer = model.producers()
        self.consumers = model.consumers()
        self.out: dict[int, LayerVerdict] = {}
        self.pool_fused: dict[int, tuple[int, int]] = {}  # id(reduce_window2d) -> (conv layer, KPU pool type)
        self.absorbed: dict[int, object] = {}  # conv layer -> the fused_unary its KPU activation absorbs

    def _unaries_by_producer(self, owner) -> dict[int, list]:
        """TFLite op index -> the ``fused_unary`` nodes computed from its output: P1 builds them unnamed, so each
        is traced back through unnamed nodes (crops, layout transposes) to the first node a TFLite op owns."""
        res: dict[int, list] = {}
        for n in self.g.nodes:
            if n.op != "fused_unary":
                continue
            p = n.input.producer.node
            while p.name not in owner and len(p.inputs) == 1:
                p = p.input.producer.node
            if p.name in owner:
                res.setdefault(owner[p.name], []).append(n)
        return res

    def node(self, i, *ops):
        for n in self.nodes.get(i, []):
            if n.op in ops:
                return n
        return None

    def _resize_work(self, node, op) -> bool:
        """A node the resize lowering made for a RESIZE after ``op`` (its edge replication), not ``op``'s crop."""
        other = self.owner.get(node.name)
        return other is not None and other != op.index and self.ops[other].kind == "resize"

    def weights_of(self, op) -> int:
        """Weights the compiled layer(s) of ``op`` store: read from the compiler's own nodes, so float16/int8 weights
        behind a DEQUANTIZE, sparse weights and the resize lowering's filters count too."""
        n = 0
        for node in self.nodes.get(op.index, []):
            if node.op in ("conv2d", "fake_kpu_conv2d", "conv2d_transpose"):
                n += int(np.asarray(node["weights"]).size)
            elif node.op == "matmul" and node.inputs[1].producer.node.op == "constant":
                n += int(np.prod(node.inputs[1].shape))
        return n

    def input_op(self, op, k=0):
        t = op.inputs[k] if len(op.inputs) > k else None
        j = self.producer.get(t) if t is not None else None
        return self.ops[j] if j is not None else None

    def run(self) -> list[LayerVerdict]:
        for op in self.ops:
            v = LayerVerdict(op.index, op.op, op.output, tuple(op.shape), CPU, params=op.params, notes=list(op.notes))
            self.out[op.index] = v
            v.params = self.weights_of(op)
            handler = getattr(self, "do_" + op.kind, None) or self.do_other
            handler(op, v)
        for op in self.ops:  # pads merged into a conv take the conv's verdict
            v = self.out[op.index]
            if v.fused_into is not None and op.kind == "pad":
                v.verdict = self.out[v.fused_into].verdict
        for r in self.kpu_fit.remedies if self.kpu_fit is not None else ():
            ops = [self.owner.get(n, self.owner.get(n.split("/")[0])) for n in r.layers or (r.layer,)]
            for i in ops:
                if i is None:
                    continue
                others = [f"#{j}" for j in ops if j is not None and j != i]
                self.out[i].kpu_ram.append(
                    f"runs as {r.bands} row bands" + (f" in one run with {', '.join(others)}" if others else "") +
                    f": {r.cost}" if r.kind == "split" else r.text.removeprefix("KPU RAM: "))
        return [self.out[op.index] for op in self.ops]

    # ------------------------------------------------------------------ convolutions / dense
    def do_conv(self, op, v):
        f = self.node(op.index, "fake_kpu_conv2d")
        if f is not None:
            return self.kpu_layer(op, v, f)
        c = self.node(op.index, "conv2d")
        if c is None:
            v.verdict = FOLDED
            v.reasons.append("computed at compile time (constant input)")
            return
        v.verdict, v.precision = CPU, self.prec[c]
        if c.name in self.on_cpu:
            v.reasons.append(MOVED_TO_CPU)
            return
        if tuple(op.dilation) != (1, 1) and tuple(op.stride) == (1, 1) and c.input.producer.node.op == "reshape":
            v.reasons.append("dilated conv rewritten by space-to-batch, but the inner conv is not KPU-eligible")
        r, fx = _why_not_kpu_conv(op, c, self.wqt, self.hints)
        v.reasons += r
        v.fixes += fx
        fr = _float_reason(c, self.prec[c], self.oqt, self.wqt)
        if fr:
            v.notes.append(fr)

    do_depthwise = do_conv

    def merged_pad(self, op):
        """Index of the explicit PAD merged into this conv's padding, or None."""
        p = self.input_op(op)
        if p is not None and p.kind == "pad" and self.out[p.index].fused_into == op.index:
            return p.index
        return None

    def unmerged_pad(self, op):
        """A fix when the conv's explicit PAD was not merged into its padding (the PAD's input does not come
        from a conv/pool or the model input, e.g. from a separate RELU6 clamp), else None."""
        p = self.input_op(op)
        if p is None or p.kind != "pad" or self.out[p.index].fused_into is not None:
            return None
        pp = self.input_op(p)
        what = f"{pp.op} #{pp.index}" if pp is not None else "the model input"
        fix = (f"the {p.op} #{p.index} before it is not merged into its padding because it follows {what}; "
               "ncc merges a PAD only when it directly follows a conv, pool or the model input")
        if pp is not None and pp.kind == "clamp":
            fix += self.hints["fuse_relu6"].format(op=pp.op)
        return fix

    def do_dense(self, op, v):
        f = self.node(op.index, "fake_kpu_conv2d")
        if f is not None:
            return self.kpu_layer(op, v, f)
        m = self.node(op.index, "matmul")
        if m is None:
            v.verdict = FOLDED
            return
        v.verdict, v.precision = CPU, self.prec[m]
        if m.name in self.on_cpu:
            v.reasons.append(MOVED_TO_CPU)
            return
        r, fx = _why_not_kpu_matmul(op, m, self.wqt, self.oqt, self.hints)
        v.reasons += r
        v.fixes += fx
        fr = _float_reason(m, self.prec[m], self.oqt, self.wqt)
        if fr:
            v.notes.append(fr)

    def kpu_layer(self, op, v, f):
        stride = tuple(op.stride)
        fc = op.kind == "dense"
        cpu = []
        p = f.input.producer.node
        dil = tuple(op.dilation)
        while dil != (1, 1) and p.op in ("reshape", "transpose"):  # space-to-batch: look through it
            p = p.input.producer.node
        if p.op == "pad":
            if p.input.producer.node.op == "fake_kpu_conv2d":
                v.notes.append("its input pad is shared with the previous KPU layer's crop")
            else:
                cpu.append(f"Pad {_fmt_pads(p['paddings'])} before it")
        fu = _absorbed_unary(f)
        after = _consumers(f) + (_consumers(fu) if fu is not None else [])
        after = [c for c in after if not self._resize_work(c, op)]
        slices = [c for c in after if c.op == "strided_slice"]
        for c in after:
            if c.op == "pad" and _is_crop_after(c):
                cpu.append(f"Pad/crop {_fmt_pads(c['paddings'])} after it")
            elif c.op == "strided_slice":
                cpu.append(f"StridedSlice (strides {c['strides'][2]}x{c['strides'][3]}) after it: the KPU "
                           "computes the full-resolution output")
        if fu is not None and len(_consumers(f)) > 1:
            v.notes.append("its output also feeds other layers besides the absorbed activation: ncc runs this "
                           "KPU conv twice")
        if any(c.op == "transpose" for c in after):
            v.notes.append("its output is transposed to NHWC on the CPU for the next layer")
        if dil != (1, 1):
            v.notes.append(f"dilation {dil[0]}x{dil[1]}: ncc runs it as a KPU conv on {dil[0] * dil[1]} sub-images "
                           "(space-to-batch: CPU transposes before it, batch-to-space after it)")
        pt = f["pool_type"]
        if pt in SELECT_POOLS and stride != (1, 1):
            v.notes.append(f"stride 2 done by the KPU ({SELECT_POOLS[pt]} select pool)")
        elif pt in SELECT_POOLS:
            v.notes.append(f"also does the previous layer's stride-2 subsampling ({SELECT_POOLS[pt]} select pool)")
        elif stride != (1, 1) and not slices:
            v.notes.append("its stride-2 subsampling is moved into the next 1x1 conv's KPU pool")
        v.verdict = PARTIAL if cpu else KPU
        v.precision = "uint8"
        if fc:
            v.reasons.append(f"{self.hints['dense']} as a 1x1 KPU conv on a 4x4 zero-padded input (ncc's "
                             "matmul_to_fake_kpu_conv2d)")
        v.reasons += cpu
        blocked = self.unmerged_pad(op)
        if dil != (1, 1):
            v.fixes.append("use an undilated conv (stacked 3x3 convs, or a stride) to avoid the CPU reshuffles")
        elif cpu and not fc and blocked:
            v.fixes.append(blocked)
        elif cpu and not fc:
            if slices and op.kind == "depthwise" and stride == (2, 2):
                v.fixes.append(self.hints["dw_stride2"])
            elif slices and max(stride) > 2 or stride[0] != stride[1]:
                v.fixes.append("use stride 1 or 2 (the KPU subsamples only by 2, with a select pool)")
            elif slices:
                v.fixes.append("keep stride-2 outputs at least 4x4 (the KPU select pool needs a >= 4x4 output)")
            elif stride == (2, 2):
                v.fixes.append(self.hints["stride2"])
            elif self.merged_pad(op) is not None:
                v.fixes.append(self.hints["symmetric_pad"].format(k=self.merged_pad(op)))
            else:
                v.fixes.append(self.hints["same"])
        r, pool, _ = _fused_pool(f)
        out_shape = f.output.shape
        if pool is not None:
            out_shape = r.output.shape
            v.notes.append(f"the following pool runs on the KPU ({POOL_NAMES.get(pool, pool)})")
            self.pool_fused[id(r)] = (op.index, pool)
        if fu is not None:
            self.absorbed[op.index] = fu
        v.kpu_in_shape, v.kpu_out_shape = tuple(f.input.shape), tuple(out_shape)
        v.kpu_bytes = kpu_bytes(f.input.shape) + kpu_bytes(out_shape)
        h, w = f.input.shape[2], f.input.shape[3]
        if h > DOC_MAX_H or w > DOC_MAX_W:
            v.notes.append(f"input {w}x{h} (WxH) is above the 320x240 the K210 docs quote; ncc accepts up to "
                           "512x256 per layer but check KPU RAM and speed")
        if v.kpu_bytes > KPU_RAM:
            v.reasons.append(f"needs {v.kpu_bytes} bytes of KPU RAM for its input + output feature maps > 2 MiB "
                             "(ncc: 'KPU allocator cannot allocate more memory')")
            v.fixes.append("use a smaller input (e.g. 320x240) or fewer channels at full resolution")

    # ------------------------------------------------------------------ pools and reductions
    def do_pool(self, op, v):
        r = self.node(op.index, "reduce_window2d")
        if r is None:
            v.verdict = FOLDED
            return
        fused = self.pool_fused.get(id(r))
        if fused is not None:
            k, pt = fused
            v.verdict, v.fused_into = KPU, k
            v.reasons.append(f"fused into layer #{k} as its KPU pool ({POOL_NAMES.get(pt, pt)})")
            return
        v.verdict, v.precision = CPU, "float"
        src = r.input.producer.node
        if src.op == "fused_unary" and src.input.producer.node.op == "fake_kpu_conv2d":
            src = src.input.producer.node
        if src.op == "fake_kpu_conv2d":
            _, _, why = _fused_pool(src)
            v.reasons.append(f"not fused into the KPU conv before it: {why}")
        else:
            v.reasons.append("not right after a KPU conv (the KPU pools only a conv's own output)")
        v.reasons.append("pools have no uint8 CPU kernel in ncc v0.2: dequantize -> float pool -> quantize")
        v.fixes.append("use MaxPool/AveragePool 2x2 stride 2 (no padding) or 4x4 stride 4 right after a "
                       f"non-depthwise {self.hints['conv']}")

    def do_reduce(self, op, v):
        v.verdict, v.precision = CPU, "float"
        v.reasons.append("reductions (global pooling) run on the CPU in float")
        x = op.in_shape
        if len(x) == 4 and x[2] * x[3] > 64:
            v.fixes.append("downsample to a small map (e.g. <= 8x8) before global pooling to keep the CPU part cheap")

    # ------------------------------------------------------------------ activations / elementwise
    def unary_like(self, op) -> bool:
        """Ends up as a ``fused_unary`` (one tensor in, elementwise): unary ops, activations and binary ops
        with a one-element constant (fuse_one_binary); a binary of two tensors or with a vector stays a binary."""
        if not op.binary:
            return True
        return any(np.size(c) == 1 for c in op.const.values())

    def absorbed_by(self, op):
        """Index of the KPU layer whose activation table absorbs ``op`` (elementwise), else None."""
        if not self.unary_like(op):
            return None
        j = self.producer.get(op.data_input())
        if j is None:
            return None
        p = self.ops[j]
        if p.index in self.absorbed:
            return p.index
        pv = self.out.get(p.index)
        if pv is not None and pv.fused_into is not None and p.kind == "elementwise" and \
                len(self.consumers.get(p.outputs[0], [])) == 1:
            return pv.fused_into
        return None

    def binary_precision(self, op) -> str:
        """C3 checkpoints a binary whose output has >= output_quantize_threshold elements -> quantized_binary."""
        n = int(np.prod(op.shape or (1,)))
        return "uint8" if n >= self.oqt else "float"

    def do_elementwise(self, op, v):
        k = self.absorbed_by(op)
        if k is not None:
            v.verdict, v.fused_into = KPU, k
            v.reasons.append(f"absorbed into layer #{k}'s KPU activation table (16 linear segments)")
            if op.curve:
                v.notes.append("approximated piecewise-linearly by the KPU: check the accuracy")
            return
        if not self.unary_like(op):
            v.verdict, v.precision = CPU, self.binary_precision(op)
            if v.precision == "uint8":
                v.reasons.append("elementwise op of two tensors: CPU quantized binary (uint8)")
            else:
                v.reasons.append(f"elementwise op of two tensors with < {self.oqt} output elements "
                                 "(--output-quantize-threshold): CPU float")
            if op.op.lower() in ("add", "sum"):
                v.notes.append("residual Add: the KPU has no elementwise add; it costs a KPU->CPU->KPU round trip")
            return
        j = self.producer.get(op.data_input())
        pv = self.out.get(j) if j is not None else None
        p = self.ops[j] if j is not None else None
        if pv is not None and pv.verdict == CPU and p.kind == "elementwise" and self.unary_like(p) and \
                len(self.consumers.get(p.outputs[0], [])) == 1:  # one CPU program with the function before it
            v.verdict, v.precision = CPU, pv.precision
            v.reasons.append(f"computed in the same CPU program as #{j} (ncc fuses chains of elementwise functions)")
            v.fixes += pv.fixes
            return
        fus = self.unaries.get(j, []) if j is not None else []
        if fus:  # the compiler's own rule: Q4 makes a lookup table only of a fused_unary that keeps its ranges
            float_unary = any(self.prec[f] == "float" for f in fus)
        else:
            float_unary = pv is not None and (pv.verdict == PARTIAL or (p.kind in DATA_KINDS and pv.precision == "uint8"))
        if float_unary:
            v.verdict, v.precision = CPU, "float"
            v.reasons.append("elementwise function on the CPU in float (NNIL program): its input comes through "
                             "a uint8 pad/crop/slice/layout op, after which ncc loses the quantization range")
        else:
            v.verdict, v.precision = CPU, "uint8"
            v.reasons.append("elementwise function on the CPU as a 256-entry uint8 lookup table")
        if pv is not None and pv.verdict == PARTIAL and self.ops[j].kind in CONV_KINDS:
            v.fixes.append(f"make layer #{pv.index} fully KPU (see its fix): the activation is then absorbed "
                           "into its KPU activation table")
        else:
            v.fixes.append(f"place it directly after a {self.hints['conv']} that runs fully on the KPU (no "
                           "pad/crop/slice between) to have it absorbed into the KPU activation")

    def do_clamp(self, op, v):
        j = self.producer.get(op.data_input())
        if not self.nodes.get(op.index) and j is not None and self.ops[j].kind in CONV_KINDS + ("dense",):
            pv = self.out[j]  # fuse_clamp_conv2d merged it into the conv's own activation
            v.verdict, v.precision, v.fused_into = (KPU, "", j) if pv.on_kpu else (CPU, pv.precision, j)
            v.reasons.append(f"fused into layer #{j}'s activation")
            return
        v.verdict, v.precision = CPU, "float"
        v.reasons.append(f"a separate {op.op} is a clamp, which ncc does not fuse into a conv here "
                         "(CPU float, with dequantize/quantize around it)")
        v.fixes.append(self.hints["clamp_fix"])

    def do_prelu(self, op, v):
        v.verdict, v.precision = CPU, self.binary_precision(op)
        v.reasons.append("PReLU has a slope per channel; the KPU activation is one table per layer. ncc v0.2 "
                         f"refuses it ('{self.hints['ncc_refuses']}: {op.op}'); kmodelpy computes "
                         "max(x,0) + alpha*min(x,0) on the CPU")
        v.fixes.append("use LeakyReLU (one slope, absorbed into the KPU activation) or ReLU instead of PReLU")
        j = self.producer.get(op.data_input())
        if j is not None and j in self.absorbed:
            v.notes.append(f"kmodelpy absorbs max(x,0) and min(x,0) into two copies of layer #{j} on the KPU "
                           "(the conv runs twice) and does alpha*min + max with uint8 CPU binaries")

    # ------------------------------------------------------------------ everything else
    def do_concat(self, op, v):
        v.verdict, v.precision = CPU, "float"
        v.reasons.append("concat runs on the CPU in float (dequantize -> concat -> quantize)")
        v.notes.append("each input branch can still run on the KPU")

    def do_softmax(self, op, v):
        v.verdict, v.precision = CPU, "float"
        v.reasons.append("softmax runs on the CPU (float reductions + a uint8 exp lookup table)")

    def do_transpose_conv(self, op, v):
        v.verdict, v.precision = CPU, "float"
        v.reasons.append("transpose conv has no KPU mapping: CPU float conv2d_transpose")
        v.notes.append("ncc v0.2 drops its bias (wrong results); kmodelpy adds the bias")
        v.fixes.append(self.hints["upsample"])

    def do_pad(self, op, v):
        cons = self.consumers.get(op.outputs[0], [])
        if not self.nodes.get(op.index) and len(cons) == 1 and self.ops[cons[0]].kind in CONV_KINDS:
            v.verdict, v.fused_into = KPU, cons[0]
            v.reasons.append(f"merged into the padding of layer #{cons[0]}")
            return
        self.do_data(op, v)

    def do_resize(self, op, v):
        """The form the compiler's lowering gives the resize (:func:`kmodelpy.compiler.transforms.resize_lowering.plan`,
        asked with the imported node's sampling)."""
        from .compiler.transforms.resize_lowering import plan

        if not op.resize:
            return self.do_data(op, v)
        p = plan(*op.resize)
        if p.form in RESIZE_DATA:
            self.do_data(op, v)
            if RESIZE_DATA[p.form]:
                v.notes.append(RESIZE_DATA[p.form])
            return
        if p.form == "mean_pool":
            self.do_pool(op, v)
            v.notes.append("a half-pixel bilinear downscale by 2 is a 2x2 mean pool")
            return
        nodes = self.nodes.get(op.index, [])
        kpu = [n for n in nodes if n.op == "fake_kpu_conv2d"]
        cpu = [n for n in nodes if n.op == "conv2d"]
        if p.form == "bilinear_filter":
            v.reasons.append("half-pixel bilinear 2x: edge replication and a nearest 2x upsample on the CPU (uint8), "
                             "then a [1,2,1]/4 depthwise 3x3 filter, then a crop (exact in float; ncc computes "
                             "another resize)")
        else:
            v.reasons.append("the resize's sampling as two 1x1 convs with interpolation weights, one per axis, with "
                             "CPU transposes around them (exact in float)")
        if kpu:
            v.verdict, v.precision = PARTIAL, "uint8"
            v.reasons.append(f"the filter conv{'s run' if len(kpu) > 1 else ' runs'} on the KPU")
            big = max(kpu, key=lambda f: kpu_bytes(f.input.shape) + kpu_bytes(f.output.shape))
            v.kpu_in_shape, v.kpu_out_shape = tuple(big.input.shape), tuple(big.output.shape)
            v.kpu_bytes = kpu_bytes(big.input.shape) + kpu_bytes(big.output.shape)
        if cpu:
            if not kpu:
                v.verdict = CPU
                v.precision = "float" if any(self.prec[c] == "float" for c in cpu) else "uint8"
            shape = next((c.input.shape for c in cpu if not supported_in_shape(c.input.shape)), None)
            v.reasons.append(f"{len(cpu)} filter conv(s) on the CPU"
                             + (f": {_shape_reason(shape)}" if shape is not None else ""))
            if p.form == "bilinear_filter" and shape is not None:
                v.fixes.append("upsample feature maps of at most 126x254 (the KPU takes the 2H+4 x 2W+4 upsampled "
                               "map)")

    def do_data(self, op, v):
        if op.kind == "reshape":
            v.verdict = FOLDED
            v.reasons.append("a reshape moves no data (the buffer is reused as is)")
            return
        survivors = [n for n in self.nodes.get(op.index, []) if n.op not in ("constant",)]
        if not survivors and op.kind == "transpose":
            v.verdict = FOLDED
            v.reasons.append("merged into a neighbouring layout transpose, or folded away")
            return
        v.verdict = CPU
        n = survivors[0] if survivors else None
        v.precision = "uint8" if n is not None and n.inputs and n.input.producer.need_quantize else ""
        v.reasons.append("data movement on the CPU" + (" (uint8)" if v.precision == "uint8" else ""))

    do_reshape = do_transpose = do_data

    def do_other(self, op, v):
        if not self.nodes.get(op.index):
            v.verdict = FOLDED
            v.reasons.append("no work left (folded away" + (", e.g. into the conv before it)" if op.op ==
                                                             "BatchNormalization" else ")"))
            return
        v.verdict, v.precision = CPU, "float"
        v.reasons.append(f"{op.op} has no KPU mapping: CPU")


def source_model(path):
    """The front-end-neutral view of a model file (a path, or a parsed TFLite/ONNX file)."""
    from .frontends import source_model as load

    return load(path)


def analyse(path, weights_quantize_threshold: float = 64, output_quantize_threshold: int = 1024) -> list[LayerVerdict]:
    """Verdicts for every operator of a float TFLite or ONNX model (a path, a parsed ``TFLiteFile`` or
    ``OnnxFile``, or a :class:`~kmodelpy.frontends.source.SourceModel`), in file order."""
    return analyse_with_kpu_ram(path, weights_quantize_threshold, output_quantize_threshold)[0]


def analyse_with_kpu_ram(path, weights_quantize_threshold: float = 64, output_quantize_threshold: int = 1024):
    """(verdicts, the compile's :class:`kmodelpy.compiler.kpu_ram.KpuFit` or None, upper bound of the KPU
    RAM). The fit is previewed only when the bound passes 2 MiB (None also when the preview fails)."""
    from .compiler.kpu_ram.preview import preview_kpu_ram, upper_bound
    from .errors import KmodelpyError
    from .frontends.source import SourceModel

    model = path if isinstance(path, SourceModel) else source_model(path)
    wqt, oqt = float(weights_quantize_threshold), int(output_quantize_threshold)
    structure = _compile_structure(model, wqt, oqt)
    bound = upper_bound(structure[0])
    fit = None
    if bound > KPU_RAM:
        try:
            fit = preview_kpu_ram(model.path, wqt, oqt, checkpointed=structure[0].copy())
        except KmodelpyError:  # e.g. an op the compiler refuses: the verdicts still say why
            fit = None
        if _moved(fit):  # a fresh import: the first one went through the passes
            model = source_model(model.path)
            structure = _compile_structure(model, wqt, oqt, frozenset(_moved(fit)))
    return _Analysis(model, wqt, oqt, structure, fit).run(), fit, bound


def _moved(kpu_fit) -> set:
    """Names of the convs the KPU RAM fit moves to the CPU."""
    return {r.layer for r in kpu_fit.remedies if r.kind == "cpu"} if kpu_fit is not None else set()
