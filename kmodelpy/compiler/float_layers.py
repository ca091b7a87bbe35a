"""``--float-layers NAME,...``: keep the named source layers in float on the CPU (compiled as ncc compiles
a conv whose weights diverge: a float ``Conv2D``/``MatMul``/``Binary``/``NNILUnaryMethod`` with a
dequantize before it and a quantize after it where its neighbours are quantized).

After pass P1 the layer's tagged output (:mod:`kmodelpy.ir.origins`) leads, through data-movement nodes,
to the node that computes it; that node gets a ``keep_float`` mark, which follows it through every later
rewrite. The transforms that would move it to the KPU or quantize it (P2's KPU lowering, the quantization
checkpoints, Q1's activation absorption, Q4's quantized binary and lookup table) leave marked nodes alone.
"""
from __future__ import annotations

from ..errors import InputError
from ..ir.graph import Graph
from ..ir.origins import MERGED, VALUE, VIEWS, mark_float


def parse_names(names) -> list[str]:
    """A comma-separated string or a sequence of names → the list of non-empty names."""
    if names is None:
        return []
    if isinstance(names, str):
        names = names.split(",")
    return [n.strip() for n in names if n and n.strip()]


def resolve(layers, names: list[str], model: str = "the model") -> list[str]:
    """Source-layer keys for user names: the full tensor name, or its first ';'-separated part."""
    keys = []
    for name in names:
        exact = [layer.key for layer in layers if layer.key == name]
        short = [layer.key for layer in layers if layer.key.split(";")[0] == name]
        found = exact or short
        if not found:
            some = ", ".join(f"'{layer.key.split(';')[0]}'" for layer in layers[1:4])
            raise InputError(f"--float-layers: {model} has no layer '{name}'; `kmodelpy compare` lists the layer "
                             f"names (e.g. {some})")
        if len(found) > 1:
            raise InputError(f"--float-layers: '{name}' names {len(found)} layers of {model}; give the full tensor "
                             "name")
        keys.append(found[0])
    return keys


def mark_float_layers(g: Graph, names, model: str = "the model") -> list[str]:
    """Mark the nodes computing the named layers (call after pass P1). Returns the resolved keys."""
    layers = getattr(g, "source_layers", None) or []
    keys = resolve(layers, parse_names(names), model)
    by_key = {layer.key: layer for layer in layers}
    for key in keys:
        short = key.split(";")[0]
        if not by_key[key].computes:
            raise InputError(f"--float-layers: layer '{short}' ({by_key[key].op}) only moves data; name a layer "
                             "that computes something")
        oc = _holder(g, key, VALUE) or _holder(g, key, MERGED)
        node = oc.node if oc is not None else None
        while node is not None and node.op in VIEWS and node.inputs and node.inputs[0].producer is not None:
            node = node.inputs[0].producer.node
        if node is None or node.op in ("input", "constant"):
            raise InputError(f"--float-layers: layer '{short}' ({by_key[key].op}) is folded away by the optimizer "
                             "(e.g. computed from constants only): there is nothing to keep in float")
        mark_float(node, key)
    return keys


def _holder(g: Graph, key: str, kind: str):
    """The output connector tagged with layer ``key`` (of ``kind``), if any."""
    return next((oc for n in g.nodes for oc in n.outputs if any(o.key == key and o.kind == kind for o in oc.origins)),
                None)
