"""Graph, nodes and connectors, with ncc's traversal and garbage-collection rules (compiler spec §3).

* A graph owns its nodes in creation order, plus ordered lists of input and output nodes.
* A node has ordered input connectors (each fed by at most one producer output) and ordered output
  connectors (each with an ordered list of consumers; a re-wired consumer goes to the end).
* :meth:`Graph.dfs` is ncc's post-order from the output nodes (inputs visited in index order; after
  a node, its consumers that are ``ignore`` nodes). It is the order of rewriting, calibration,
  evaluation and of the final execution.
* :meth:`Graph.collect` deletes every node the DFS does not reach (output nodes are kept); the source
  tensors tagged on a deleted data-movement node move to its input (:mod:`kmodelpy.ir.origins`).

Operator-specific attributes live in ``node.attrs`` (see :mod:`kmodelpy.ir.ops`); constant data,
conv weights and the like are numpy arrays there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MEM_CONST, MEM_MAIN, MEM_KPU = "const", "main", "kpu"


class InputConnector:
    __slots__ = ("node", "index", "shape", "dtype", "producer")

    def __init__(self, node: "Node", index: int, shape, dtype: str):
        self.node = node
        self.index = index
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.producer: OutputConnector | None = None

    def connect(self, out: "OutputConnector") -> None:
        """Feed this input from ``out`` (shape and dtype must match, as in ncc)."""
        if out.dtype != self.dtype:
            raise ValueError(f"Type must be same: {out.dtype} vs {self.dtype} ({out.node.name} -> {self.node.name})")
        if tuple(out.shape) != self.shape:
            raise ValueError(
                f"Shapes must be same, but got {list(out.shape)} and {list(self.shape)} "
                f"({out.node.name} -> {self.node.name})"
            )
        self.disconnect()
        self.producer = out
        out.consumers.append(self)

    def disconnect(self) -> None:
        if self.producer is not None:
            self.producer.consumers.remove(self)
            self.producer = None

    def __repr__(self) -> str:
        return f"<in {self.node.name}#{self.index} {list(self.shape)} {self.dtype}>"


class OutputConnector:
    __slots__ = ("node", "index", "shape", "dtype", "memory", "consumers", "need_quantize", "origins")

    def __init__(self, node: "Node", index: int, shape, dtype: str, memory: str = MEM_MAIN):
        self.node = node
        self.index = index
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.memory = memory
        self.consumers: list[InputConnector] = []
        self.need_quantize = False
        self.origins: tuple = ()  # the source tensors this output holds (kmodelpy.ir.origins)

    def reroute(self, new: "OutputConnector") -> None:
        """Move every current consumer of this output to ``new`` (appended to its consumer list); ``new``
        holds the same value, so it takes over the source tensors tagged here."""
        from .origins import carry

        for c in list(self.consumers):
            c.connect(new)
        carry(self, new)

    def __repr__(self) -> str:
        return f"<out {self.node.name}#{self.index} {list(self.shape)} {self.dtype}>"


@dataclass(eq=False)
class Node:
    op: str
    name: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    inputs: list[InputConnector] = field(default_factory=list)
    outputs: list[OutputConnector] = field(default_factory=list)
    need_quantize: bool = False

    def __getitem__(self, key):
        return self.attrs[key]

    @property
    def output(self) -> OutputConnector:
        return self.outputs[0]

    @property
    def input(self) -> InputConnector:
        return self.inputs[0]

    def producer(self, k: int = 0) -> "Node | None":
        p = self.inputs[k].producer
        return p.node if p is not None else None

    def __repr__(self) -> str:
        return f"<{self.op} {self.name!r}>"


class Graph:
    def __init__(self):
        self.nodes: list[Node] = []
        self.inputs: list[Node] = []
        self.outputs: list[Node] = []

    # ------------------------------------------------------------------ building
    def add(self, op: str, inputs=(), out_shapes=(), out_dtypes=None, name: str = "", memory: str = MEM_MAIN,
            in_shapes=None, in_dtypes=None, **attrs) -> Node:
        """Create a node. ``inputs`` are producer OutputConnectors (connected in order);
        input shapes/dtypes default to the producers'. Input/output nodes join the graph's lists."""
        n = Node(op, name, dict(attrs))
        inputs = list(inputs)
        for k, src in enumerate(inputs):
            shape = in_shapes[k] if in_shapes is not None else src.shape
            dtype = in_dtypes[k] if in_dtypes is not None else src.dtype
            ic = InputConnector(n, k, shape, dtype)
            n.inputs.append(ic)
            ic.connect(src)
        out_dtypes = list(out_dtypes) if out_dtypes is not None else ["float32"] * len(out_shapes)
        for k, (shape, dtype) in enumerate(zip(out_shapes, out_dtypes)):
            n.outputs.append(OutputConnector(n, k, shape, dtype, memory))
        self.nodes.append(n)
        if op == "input":
            self.inputs.append(n)
        elif op == "output":
            self.outputs.append(n)
        return n

    # ------------------------------------------------------------------ traversal
    def dfs(self) -> list[Node]:
        """ncc's post-order (visitor.cpp): roots are the output nodes in list order."""
        order: list[Node] = []
        seen: set[int] = set()

        def visit(n: Node) -> None:
            stack = [(n, 0)]
            while stack:
                node, state = stack.pop()
                if state == 0:
                    if id(node) in seen:
                        continue
                    seen.add(id(node))
                    stack.append((node, 1))
                    for ic in reversed(node.inputs):
                        if ic.producer is not None and id(ic.producer.node) not in seen:
                            stack.append((ic.producer.node, 0))
                else:
                    order.append(node)
                    for oc in reversed(node.outputs):
                        for c in reversed(oc.consumers):
                            if c.node.op == "ignore" and id(c.node) not in seen:
                                stack.append((c.node, 0))

        for out in self.outputs:
            visit(out)
        return order

    def copy(self) -> "Graph":
        """An independent copy: new nodes and connectors wired alike (consumer order included), with
        shallow copies of the attribute dicts; ``source`` (the importer's node -> TFLite op map) follows."""
        new = Graph()
        twin: dict[int, Node] = {}
        for n in self.nodes:
            m = Node(n.op, n.name, dict(n.attrs), need_quantize=n.need_quantize)
            m.inputs = [InputConnector(m, ic.index, ic.shape, ic.dtype) for ic in n.inputs]
            for oc in n.outputs:
                c = OutputConnector(m, oc.index, oc.shape, oc.dtype, oc.memory)
                c.need_quantize = oc.need_quantize
                c.origins = oc.origins
                m.outputs.append(c)
            twin[id(n)] = m
            new.nodes.append(m)
        for n in self.nodes:
            for oc, c in zip(n.outputs, twin[id(n)].outputs):
                for ic in oc.consumers:
                    t = twin[id(ic.node)].inputs[ic.index]
                    t.producer = c
                    c.consumers.append(t)
        new.inputs = [twin[id(n)] for n in self.inputs]
        new.outputs = [twin[id(n)] for n in self.outputs]
        if hasattr(self, "source"):
            new.source = {twin[id(n)]: v for n, v in self.source.items() if id(n) in twin}
        if hasattr(self, "source_layers"):
            new.source_layers = self.source_layers
        return new

    def collect(self) -> list[Node]:
        """Delete every node not reached from the outputs (ncc's garbage collection). Returns the DFS
        order of the remaining graph (removing unreached nodes does not change it)."""
        order = self.dfs()
        live = {id(n) for n in order}
        for n in self.outputs:
            live.add(id(n))
        dead = [n for n in self.nodes if id(n) not in live]
        if dead:
            from .origins import push_dead

            push_dead(dead)
        for n in dead:
            for ic in n.inputs:
                ic.disconnect()
            for oc in n.outputs:
                for c in list(oc.consumers):
                    c.disconnect()
        self.nodes = [n for n in self.nodes if id(n) in live]
        self.inputs = [n for n in self.inputs if id(n) in live]
        return order

    def assign_names(self) -> None:
        """Name unnamed or duplicate-named nodes ``<OpName>_<i>`` (smallest free i), in list order."""
        from .ops import display_name

        used: set[str] = set()
        for n in self.nodes:
            if n.name and n.name not in used:
                used.add(n.name)
                continue
            base = display_name(n.op)
            i = 0
            while f"{base}_{i}" in used:
                i += 1
            n.name = f"{base}_{i}"
            used.add(n.name)
