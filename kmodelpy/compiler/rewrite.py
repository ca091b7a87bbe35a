"""ncc's HLIR rewrite engine (compiler spec §3.3; src/transforms/hlir/pass.cpp, transform.cpp).

A *transform* has ``match(node, ctx) -> Match | None`` and ``rewrite(graph, match, ctx)``.
A *pass* is an ordered list of transforms, run as ncc does::

    repeat:
        for t in transforms:
            DFS over the graph (Graph.dfs, post-order from the outputs); at the FIRST node
            where t matches, rewrite and stop the DFS
            if something was rewritten: garbage-collect, restart from the first transform
    until a full sweep applies nothing

A :class:`Match` lists the matched nodes, the boundary inputs (InputConnectors whose producers the
rewrite keeps using) and the boundary outputs (whose consumers the rewrite re-points).  The
*self-contained check* (reject a match that leaves a matched node used from outside) is only done
by the four transforms that set ``self_contained = True`` (strided_slice_motion,
fuse_kpu_conv2d_pool, fold_input_kpu_upload, fold_input_quantize); all others duplicate shared
nodes, exactly like ncc (quirk §13.7).

The :class:`Context` carries the compile options and the quantizer state (ranges per output
connector, see :mod:`kmodelpy.compiler.calibrate`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import CompileError
from ..ir.graph import Graph, InputConnector, Node, OutputConnector
from ..ir.origins import carry, note_merged


@dataclass
class Match:
    nodes: list[Node]
    inputs: list[InputConnector] = field(default_factory=list)
    outputs: list[OutputConnector] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """Compile options seen by the transforms plus the quantizer's ranges (keyed by OutputConnector)."""

    weights_quantize_threshold: float = 64.0
    output_quantize_threshold: int = 1024
    quantize_binary: bool = True
    inference_type: str = "uint8"
    input_type: str = "uint8"
    target: str = "k210"  # "cpu": ncc's CPU target (no KPU passes, §2.1 last line)
    on_cpu: frozenset = frozenset()  # convs kept off the KPU because they do not fit KPU RAM (kpu_ram.fit)
    range_clamp: bool = True  # False: kmodelpy's --no-range-clamp (activation ranges beyond ±1000 kept)
    ranges: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def fusion(self) -> bool:
        return self.inference_type == "uint8"

    def get_range(self, out: OutputConnector):
        try:
            return self.ranges[out]
        except KeyError:
            raise KeyError(f"no calibration range for the output of {out.node.name or out.node.op}") from None


class Transform:
    """Base class. Subclasses set ``ops`` (node kinds that can start a match, for speed) and
    implement :meth:`match` and :meth:`rewrite`."""

    name = "transform"
    ops: frozenset[str] | None = None
    self_contained = False

    def match(self, node: Node, ctx: Context) -> Match | None:
        raise NotImplementedError

    def rewrite(self, graph: Graph, m: Match, ctx: Context) -> None:
        raise NotImplementedError

    def try_match(self, node: Node, ctx: Context) -> Match | None:
        if self.ops is not None and node.op not in self.ops:
            return None
        m = self.match(node, ctx)
        if m is None:
            return None
        if self.self_contained and not is_self_contained(m):
            return None
        return m

    def __repr__(self) -> str:
        return self.name


def is_self_contained(m: Match) -> bool:
    """transform.cpp:24-60: every edge leaving the matched set goes through a boundary connector."""
    matched = {id(n) for n in m.nodes}
    b_in = {id(c) for c in m.inputs}
    b_out = {id(c) for c in m.outputs}
    for n in m.nodes:
        for ic in n.inputs:
            if ic.producer is not None and id(ic) not in b_in and id(ic.producer.node) not in matched:
                return False
        for oc in n.outputs:
            for c in oc.consumers:
                if id(oc) not in b_out and id(c.node) not in matched:
                    return False
    return True


def run_pass(graph: Graph, transforms: list[Transform], ctx: Context, limit: int = 100000) -> int:
    """Run one pass to its fixed point; returns the number of rewrites applied."""
    applied = 0
    order = graph.dfs()
    while True:
        hit = False
        for t in transforms:
            for n in order:
                m = t.try_match(n, ctx)
                if m is not None:
                    if m.outputs:
                        note_merged(m.nodes, m.outputs[0])  # layers fused into the result (ir.origins)
                    try:
                        t.rewrite(graph, m, ctx)
                    except (ValueError, KeyError) as e:  # ncc: "Shapes must be same", map::at, ...
                        msg = e.args[0] if e.args else type(e).__name__
                        raise CompileError(f"transform {t.name} failed at {n.name or n.op}: {msg}") from None
                    hit = True
                    break
            if hit:
                order = graph.collect()  # = graph.dfs() after the collection
                applied += 1
                if applied > limit:
                    raise RuntimeError(f"pass did not converge (last transform {t.name})")
                break
        if not hit:
            return applied


def reroute(old: OutputConnector, new: OutputConnector) -> None:
    """Move every current consumer of ``old`` to ``new`` (ncc: ``for in in dup(conns): in->connect``).
    ``new`` holds the same value: the source tensors tagged on ``old`` move to it (kmodelpy.ir.origins)."""
    for c in list(old.consumers):
        c.connect(new)
    carry(old, new)


def link(old: OutputConnector, new: OutputConnector, ctx: Context) -> None:
    """transform.cpp:101 ``link``: copy the connector attributes and, if marked, the range."""
    new.need_quantize = old.need_quantize
    if old.need_quantize and old in ctx.ranges:
        ctx.ranges[new] = ctx.ranges[old]


def first_child(node: Node, op: str) -> Node | None:
    """``try_get_direct_child<T>``: the first consumer (in connection order) of any output of type ``op``."""
    for oc in node.outputs:
        for c in oc.consumers:
            if c.node.op == op:
                return c.node
    return None


def parent(node: Node, op: str, k: int | None = None) -> Node | None:
    """``try_get_direct_parent<T>(node[, k])``: producer of input k (or of the first input whose
    producer has type ``op``)."""
    if k is not None:
        if k >= len(node.inputs) or node.inputs[k].producer is None:
            return None
        p = node.inputs[k].producer.node
        return p if p.op == op else None
    for ic in node.inputs:
        if ic.producer is not None and ic.producer.node.op == op:
            return ic.producer.node
    return None
