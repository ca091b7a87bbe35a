"""``--float-layers NAME,...``: keep the named source layers in float on the CPU (compiled as ncc compiles
a conv whose weights diverge: a float ``Conv2D``/``MatMul``/``Binary``/``NNILUnaryMethod`` with a
dequantize before it and a quantize after it where its neighbours are quantized).

After pass P1 the layer's tagged output (:mod:`kmodelpy.ir.origins`) leads, through data-movement nodes,
to the node that computes it; that node gets a ``keep_float`` mark, which follows it through every later
rewrite. The transforms that would move it to the KPU or quantize it (P2's KPU lowering, the quantization
checkpoints, Q1's activation absorption, Q4's quantized binary and lookup table) leave marked nodes alone.

``--float-layers auto[:MMAC]`` chooses the layers itself: the layers next to the input, in graph order, that
read only the input or layers already chosen (a float chain from the exact input codes: a float layer fed
by a dequantized uint8 tensor would keep its input's rounding), while their multiply-accumulates stay within
the budget (:data:`AUTO_MMAC` million by default), the CPU time the kmodel spends on them.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..ir.graph import Graph
from ..ir.origins import MERGED, VALUE, VIEWS, mark_float

AUTO_MMAC = 4.0  # --float-layers auto: the default budget, million multiply-accumulates on the CPU


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


def auto_budget(names) -> float | None:
    """``auto`` / ``auto:MMAC`` → the budget in multiply-accumulates; None for a list of names."""
    if not isinstance(names, str) or names.split(":")[0].strip() != "auto":
        return None
    spec = names.partition(":")[2].strip()
    try:
        mmac = float(spec) if spec else AUTO_MMAC
    except ValueError:
        mmac = -1.0
    if not mmac >= 0:
        raise InputError(f"--float-layers {names}: give the budget in million multiply-accumulates, e.g. auto:4")
    return mmac * 1e6


def mark_float_layers(g: Graph, names, model: str = "the model", out=None) -> list[str]:
    """Mark the nodes computing the named layers (call after pass P1). Returns the resolved keys."""
    layers = getattr(g, "source_layers", None) or []
    budget = auto_budget(names)
    if budget is not None:
        chosen, macs = choose_from_input(g, budget)
        keys = list(chosen)
        if out is not None:
            shown = ", ".join(k.split(";")[0] for k in keys) or "none"
            out.write(f"  Float layers (--float-layers auto, {budget / 1e6:g} MMAC budget): {len(keys)} layers, "
                      f"{macs / 1e6:.2f} MMAC on the CPU: {shown}\n")
        for key, node in chosen.items():
            mark_float(node, key)
        return keys
    keys = resolve(layers, parse_names(names), model)
    by_key = {layer.key: layer for layer in layers}
    for key in keys:
        short = key.split(";")[0]
        if not by_key[key].computes:
            raise InputError(f"--float-layers: layer '{short}' ({by_key[key].op}) only moves data; name a layer "
                             "that computes something")
        node = _computing_node(g, key)
        if node is None or node.op in ("input", "constant"):
            raise InputError(f"--float-layers: layer '{short}' ({by_key[key].op}) is folded away by the optimizer "
                             "(e.g. computed from constants only): there is nothing to keep in float")
        mark_float(node, key)
    return keys


def choose_from_input(g: Graph, budget: float) -> tuple[dict, int]:
    """({key: computing node}, their multiply-accumulates): the computing layers, in graph order, whose inputs
    are the graph input or layers chosen before them (through data-movement layers), until the next would pass
    ``budget``."""
    exact: set[str] = set()
    chosen, total = {}, 0
    for layer in getattr(g, "source_layers", None) or []:
        if layer.op == "INPUT" or (not layer.computes and all(k in exact for k in layer.inputs)):
            exact.add(layer.key)
            continue
        if not layer.computes or not layer.inputs or not all(k in exact for k in layer.inputs):
            continue
        node = _computing_node(g, layer.key)
        if node is None or node.op in ("input", "constant"):
            continue
        macs = node_macs(node)
        if total + macs > budget:
            break
        chosen[layer.key] = node
        exact.add(layer.key)
        total += macs
    return chosen, total


def node_macs(node) -> int:
    """Multiply-accumulates of a float node on the CPU (one per output value for element-wise ops)."""
    n = int(np.prod(node.outputs[0].shape))
    if node.op == "conv2d":
        return n * int(np.prod(node["weights"].shape[1:]))
    if node.op == "matmul":
        return n * int(node.inputs[0].shape[-1])
    return n


def _computing_node(g: Graph, key: str):
    """The node that computes layer ``key`` (past the data-movement nodes after it), or None."""
    oc = _holder(g, key, VALUE) or _holder(g, key, MERGED)
    node = oc.node if oc is not None else None
    while node is not None and node.op in VIEWS and node.inputs and node.inputs[0].producer is not None:
        node = node.inputs[0].producer.node
    return node


def _holder(g: Graph, key: str, kind: str):
    """The output connector tagged with layer ``key`` (of ``kind``), if any."""
    return next((oc for n in g.nodes for oc in n.outputs if any(o.key == key and o.kind == kind for o in oc.origins)),
                None)


#: ``--float-heads``: a head stays float when it costs at most this many multiply-adds (a 1x1 conv of 64
#: channels to 16 over 32x32 is 524288): the CPU runs it in a few milliseconds
HEAD_MACS = 1 << 20
#: nodes a head's value may pass through on its way to a model output unchanged in value
_TO_OUTPUT = VIEWS | {"concat"}


def mark_float_heads(g: Graph, limit: int = HEAD_MACS) -> list[str]:
    """Mark the model's heads (call after pass P1): every conv2d or matmul whose output reaches a model output
    through data movement and concatenations only, and that costs at most ``limit`` multiply-adds. A head's
    output range is often dominated by values nobody reads (logits of −9000 next to the few positive scores
    that decide the detection): in uint8 the informative end gets a few codes. Returns the marked keys."""
    keys = []
    seen = set()
    todo = [n.inputs[0].producer.node for n in g.nodes if n.op == "output" and n.inputs and n.inputs[0].producer]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.op in _TO_OUTPUT:
            todo += [ic.producer.node for ic in node.inputs if ic.producer is not None]
        elif node.op in ("conv2d", "matmul") and node_macs(node) <= limit:
            key = next((o.key for o in node.outputs[0].origins if o.kind == VALUE), node.name or node.op)
            mark_float(node, key)
            keys.append(key)
    return keys
