"""Which source tensor a connector holds ("origins"), kept true by construction while the compiler rewrites.

A front end tags the connector that produces each source tensor (a TFLite operator's output tensor, an
ONNX node's output...) with ``Origin(key)`` (:func:`tag`) and lists the tensors in ``graph.source_layers``
(:class:`SourceLayer`, in source order). From then on every rewrite keeps the tags true:

* a transform that moves the consumers of ``old`` to ``new`` (``rewrite.reroute``) declares that ``new``
  holds the same value, so ``old``'s tags move to ``new`` (:func:`carry`);
* when garbage collection deletes a node that only moves or re-encodes data (:data:`VIEWS`: transpose,
  reshape, pad, strided slice, quantize, dequantize, KPU upload/download, the LLIR memory_copy), the tags
  of its output move to its input with that node put in front of their ``steps``: applying the steps to the
  input's value gives the tagged tensor back (:func:`push_dead`);
* a tag on the output of a deleted node that computes something is dropped: that tensor was fused away
  (e.g. a conv's output before the activation merged into it).

Lowering copies the tags to the LLIR connectors, so after scheduling every tag names a buffer of the kmodel
and the steps that turn its bytes (uint8 codes or float32) into the source tensor, in the source layout
(:mod:`kmodelpy.compiler.tensor_map`). Tags never reach the kmodel file.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: node kinds whose output is a function of their first input alone that only moves or re-encodes data
VIEWS = frozenset({"transpose", "reshape", "memory_copy", "pad", "strided_slice", "quantize", "dequantize",
                   "kpu_upload", "kpu_download"})
#: views that leave the values (and the layout) unchanged: only the memory or the shape label changes
SAME_VALUES = frozenset({"kpu_upload", "kpu_download"})


@dataclass(frozen=True)
class SourceLayer:
    """One tensor of the source model, in source (graph) order: its key (tensor name), the operator that
    produces it ("INPUT" for a graph input), the keys of the layers it reads, and whether the operator
    computes something (False: it only moves data, like a pad or a reshape)."""

    key: str
    op: str
    inputs: tuple[str, ...] = ()
    computes: bool = True


class Step:
    """One deleted view node, re-applied to a value: ``apply(x)`` computes what the node computed."""

    __slots__ = ("node",)

    def __init__(self, node):
        from .graph import Node, OutputConnector

        d = Node(node.op, node.name, node.attrs)  # attrs are never edited by transforms: shared, not copied
        out = node.outputs[0]
        d.outputs.append(OutputConnector(d, 0, out.shape, out.dtype, out.memory))
        self.node = d

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def out_shape(self) -> tuple:
        return self.node.outputs[0].shape

    @property
    def changes_values(self) -> bool:
        return self.node.op in ("quantize", "dequantize")

    @property
    def quant_param(self):
        """(zero_point, scale) of a quantize/dequantize step."""
        qp = self.node.attrs["quant_param"]
        return (int(qp.zero_point), float(qp.scale)) if hasattr(qp, "zero_point") else (int(qp[0]), float(qp[1]))

    def apply(self, x: np.ndarray, layout_only: bool = False, fill=None) -> np.ndarray:
        """The node's output for input ``x``. ``layout_only``: skip value changes (quantize/dequantize), so an
        array of element indices follows the data movement; pads then write ``fill``."""
        from .ops import evaluator

        op = self.node.op
        if op in SAME_VALUES or op in ("reshape", "memory_copy") or (layout_only and self.changes_values):
            return np.asarray(x).reshape(self.out_shape)
        if op == "pad" and layout_only:
            x = np.asarray(x)
            width = [(int(b), int(a)) for b, a in self.node.attrs["paddings"]]
            sl = tuple(slice(max(-b, 0), d - max(-a, 0)) for (b, a), d in zip(width, x.shape))
            grown = [(max(b, 0), max(a, 0)) for b, a in width]
            return np.pad(x[sl], grown, constant_values=fill)
        return np.asarray(evaluator(op)(self.node, [x])[0]).reshape(self.out_shape)

    def __repr__(self) -> str:
        return f"<step {self.node.op} -> {list(self.out_shape)}>"


VALUE, MERGED, FLOAT = "value", "merged", "float"


@dataclass(frozen=True)
class Origin:
    """``kind`` VALUE: ``apply(steps, value of the connector) == source tensor key`` (steps are applied first to
    last). The other kinds mark the node producing the connector, and travel with it through every rewrite:
    MERGED, the node also computes layer ``key``, whose own tensor was fused away (a conv under the
    activation merged into it); FLOAT, ``--float-layers`` keeps the node in float."""

    key: str
    steps: tuple = field(default=())
    kind: str = VALUE


def apply_steps(steps, x, layout_only: bool = False, fill=None) -> np.ndarray:
    for s in steps:
        x = s.apply(x, layout_only, fill)
    return x


def tag(oc, key: str) -> None:
    """Front ends: ``oc`` produces source tensor ``key`` (in the source layout)."""
    oc.origins = oc.origins + (Origin(key),)


def carry(old, new) -> None:
    """``new`` replaces ``old`` (same value, same shape and dtype): the tags move to ``new``."""
    if old.origins and old is not new:
        new.origins = new.origins + old.origins
        old.origins = ()


def push_dead(dead) -> None:
    """Garbage collection is about to delete ``dead``: move the tags of every deleted view's output to its
    input (upstream through chains of deleted views); the tags of other deleted nodes are dropped."""
    moved = True
    while moved:
        moved = False
        for n in dead:
            for oc in n.outputs:
                if not oc.origins:
                    continue
                src = n.inputs[0].producer if n.inputs else None
                if n.op in VIEWS and src is not None and len(n.outputs) == 1:
                    step = Step(n)
                    src.origins = src.origins + tuple(Origin(o.key, (step,) + o.steps if o.kind == VALUE else (),
                                                             o.kind) for o in oc.origins)
                    moved = True
                oc.origins = ()


def note_merged(nodes, boundary) -> None:
    """Before a rewrite of the matched ``nodes`` whose result replaces ``boundary`` (an OutputConnector): the
    layers computed by matched compute nodes, other than the boundary itself, are computed by the result
    from now on (their own tensors die with the rewrite unless the nodes are shared): note them there."""
    notes = []
    for n in nodes:
        if n.op in VIEWS:
            continue
        for oc in n.outputs:
            if oc is not boundary:
                notes += [o if o.kind != VALUE else Origin(o.key, (), MERGED) for o in oc.origins]
    if notes:
        have = set(boundary.origins)
        boundary.origins = boundary.origins + tuple(o for o in dict.fromkeys(notes) if o not in have)


def keeps_float(node) -> bool:
    """True when ``--float-layers`` named a layer this node computes."""
    return any(o.kind == FLOAT for oc in node.outputs for o in oc.origins)


def mark_float(node, key: str) -> None:
    node.outputs[0].origins = node.outputs[0].origins + (Origin(key, (), FLOAT),)


def evaluate_sources(float_model, x, keys) -> tuple[list, dict]:
    """Run a front end's float model (``kmodelpy.load(source)``) on input ``x``: (its outputs, {key: value of
    source tensor key, in the source layout} for the requested ``keys``)."""
    keys = set(keys)
    values: dict = {}

    def capture(oc, v):
        for o in oc.origins:
            if o.kind == VALUE and o.key in keys:
                values[o.key] = np.asarray(apply_steps(o.steps, v), np.float32)

    outs = float_model.run(x, on_output=capture if keys else None)
    return outs, values
