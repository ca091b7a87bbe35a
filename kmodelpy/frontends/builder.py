"""What every importer does to build its HLIR graph (:class:`GraphBuilder`): create a node whose inputs are
producer connectors (connected at once, as ncc connects a node's internal edges) or source tensors (connected
after the whole model is converted, in the order the connectors were created), constants, and one-line errors
naming the source operator. An importer supplies the tensor shapes, the source position and the error prefix."""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError
from ..ir import origins
from ..ir.graph import Graph, InputConnector, OutputConnector
from ..ir.ops import infer_shapes, opdef


def first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class GraphBuilder:
    """Base of the importers. ``self.pending`` holds ``(InputConnector, tensor key)`` pairs to connect at the end;
    ``graph.source`` maps each node to its source operator (:meth:`source_entry`)."""

    def __init__(self):
        self.g = Graph()
        self.g.source = {}
        self.pending: list[tuple[InputConnector, object]] = []

    # ------------------------------------------------------------ supplied by the importer
    def tensor_shape(self, key) -> tuple:
        raise NotImplementedError

    def location(self) -> str:
        """The error prefix: the model file, and the current operator while one is converted."""
        raise NotImplementedError

    def source_entry(self):
        """(operator index, operator name, output tensor name) of the operator being converted, or None."""
        raise NotImplementedError

    # ------------------------------------------------------------ building
    def node(self, op: str, inputs, out_shapes=None, **attrs):
        """Create a node; ``inputs`` items are OutputConnectors or source tensor keys (connected at the end)."""
        shapes = [i.shape if isinstance(i, OutputConnector) else self.tensor_shape(i) for i in inputs]
        if out_shapes is None:
            try:
                out_shapes = infer_shapes(op, attrs, shapes)
            except (ValueError, IndexError, KeyError, ZeroDivisionError) as e:
                raise UnsupportedError(f"{self.location()}: {first_line(e)}") from None
        n = self.g.add(op, [], out_shapes, None, memory=opdef(op).memory, **attrs)
        for k, (src, shape) in enumerate(zip(inputs, shapes)):
            ic = InputConnector(n, k, shape, "float32")
            n.inputs.append(ic)
            if isinstance(src, OutputConnector):
                self.connect(ic, src)
            else:
                self.pending.append((ic, src))
        entry = self.source_entry()
        if entry is not None:
            self.g.source[n] = entry
        return n

    def connect(self, ic: InputConnector, out: OutputConnector) -> None:
        try:
            ic.connect(out)
        except ValueError as e:
            raise UnsupportedError(f"{self.location()}: {first_line(e)}") from None

    def const(self, value) -> OutputConnector:
        data = np.asarray(value, np.float32)
        if data.ndim == 0:
            data = data.reshape(1)
        return self.node("constant", [], data=np.ascontiguousarray(data)).output

    # ------------------------------------------------------------ source tensors (kmodelpy compare)
    def tag_sources(self, inputs, operators) -> None:
        """Tag the connector of every graph input and operator output with its tensor name, and list them in
        ``graph.source_layers`` in source order (:mod:`kmodelpy.ir.origins`; what ``kmodelpy compare`` and
        ``--float-layers`` name). ``inputs``: (name, connector) pairs; ``operators``: (operator index, operator
        name, input tensor names, (output name, connector) pairs) in source order."""
        layers, known = [], set()
        for name, oc in inputs:
            origins.tag(oc, name)
            layers.append(origins.SourceLayer(name, "INPUT", computes=False))
            known.add(name)
        for index, op, reads, outs in operators:
            reads = tuple(r for r in reads if r in known)
            for name, oc in outs:
                origins.tag(oc, name)
                layers.append(origins.SourceLayer(name, op, reads, self._computes(oc, index)))
                known.add(name)
        self.g.source_layers = layers

    def _computes(self, oc: OutputConnector, index) -> bool:
        """Does operator ``index`` compute ``oc`` (rather than only move data it read)?"""
        n = oc.node
        while self.g.source.get(n, (None,))[0] == index:
            if n.op not in origins.VIEWS:
                return n.op not in ("input", "constant")
            if not n.inputs or n.inputs[0].producer is None:
                return False
            n = n.inputs[0].producer.node
        return False
