"""HLIR → LLIR lowering and the LLIR pass ``fold_memorycopy`` (compiler spec §8.1).

The LLIR is again a :class:`kmodelpy.ir.graph.Graph`; its node kinds are ncc's LLIR ops, named after
the runtime op ids (``binary``, ``conv2d``, ``memory_copy``, ``nnil_unary_method``, ``kpu_upload``,
``kpu_conv2d``, ...) plus the non-emitted ``input``, ``output``, ``ignore`` and ``constant``.

The HLIR graph is walked in DFS order (§3.2) and every node emits its LLIR counterpart(s); every LLIR
input connector keeps the *consumer's* shape (that is what the emitted bodies describe), every LLIR
output keeps the HLIR output's shape, dtype and memory space. Special cases:

* ``clamp(x, low, high)`` → ``binary(max, x, low)`` → ``binary(min, ·, high)``, both without activation;
* ``fused_unary`` → ``nnil_unary_method`` whose body is the NNIL program of the fused expression;
* ``reshape`` → ``memory_copy``, then :func:`fold_memorycopy` removes every memory_copy and lets its
  consumers read the producer's buffer directly (so reshapes cost nothing);
* ``kpu_download`` and ``fake_kpu_conv2d`` have no emitter in ncc: one that survives is a compiler bug.

Every LLIR node keeps its HLIR node's name (ncc copies only input/output names; the others are kept
for kmodelpy's reports). Unnamed input/output nodes are named ``Input_<i>``/``Output_<i>`` as ncc's
LLIR ``assign_names`` does (an input folded into KPU memory is printed ``Input_0``).
"""
from __future__ import annotations

from ..errors import CompileError
from ..ir.graph import Graph, InputConnector, Node, OutputConnector

# HLIR node kinds that lower 1:1 to the LLIR node of the same name
ONE_TO_ONE = {
    "input", "output", "ignore", "constant", "conv2d", "conv2d_transpose", "matmul", "binary", "unary",
    "concat", "transpose", "pad", "strided_slice", "resize_image", "reduce", "reduce_window2d",
    "quantize", "dequantize", "table_lookup1d", "quantized_conv2d", "quantized_matmul",
    "quantized_binary", "kpu_upload", "kpu_conv2d",
}
NO_EMITTER = {"kpu_download", "fake_kpu_conv2d", "fake_piecewise_linear"}

FLT_MAX = 3.4028234663852886e38
FULL_RANGE = (-FLT_MAX, FLT_MAX)


def lower(hlir: Graph) -> Graph:
    """HLIR graph → LLIR graph (after ``fold_memorycopy`` and garbage collection)."""
    llir = Graph()
    outs: dict[OutputConnector, OutputConnector] = {}  # HLIR output -> LLIR output
    ins: dict[InputConnector, InputConnector] = {}  # HLIR input -> LLIR input

    for h in hlir.dfs():
        if h.op in NO_EMITTER:
            raise CompileError(
                f"{h.name or h.op}: the graph still contains a {h.op} node after quantization; ncc has no "
                f"emitter for it ('Emitter for {h.op} is not found') — this is a kmodelpy compiler bug, please report it"
            )
        if h.op == "clamp":
            _lower_clamp(llir, h, ins, outs)
        elif h.op == "fused_unary":
            _lower_fused_unary(llir, h, ins, outs)
        elif h.op == "reshape":
            _lower_simple(llir, h, "memory_copy", ins, outs)
        elif h.op in ONE_TO_ONE:
            _lower_simple(llir, h, h.op, ins, outs)
        else:
            raise CompileError(f"{h.name or h.op}: no lowering for HLIR node kind {h.op!r} (kmodelpy compiler bug)")

    # replicate the connections (graph.cpp compile): every HLIR edge becomes an LLIR edge
    for h in hlir.dfs():
        for hic in h.inputs:
            lic = ins.get(hic)
            if lic is None or hic.producer is None:
                continue
            connect(lic, outs[hic.producer])
    for hoc, loc in outs.items():  # the source tensors each output holds (kmodelpy.ir.origins)
        loc.origins = hoc.origins
    fold_memorycopy(llir)
    llir.collect()
    _name_io(llir)
    return llir


def new_node(llir: Graph, op: str, name: str, in_shapes, in_dtypes, outputs, attrs) -> Node:
    """Create an LLIR node with unconnected inputs of the given shapes/dtypes and the given outputs
    ((shape, dtype, memory) triples)."""
    n = Node(op, name, dict(attrs))
    for k, (shape, dtype) in enumerate(zip(in_shapes, in_dtypes)):
        n.inputs.append(InputConnector(n, k, shape, dtype))
    for k, (shape, dtype, memory) in enumerate(outputs):
        n.outputs.append(OutputConnector(n, k, shape, dtype, memory))
    llir.nodes.append(n)
    if op == "input":
        llir.inputs.append(n)
    elif op == "output":
        llir.outputs.append(n)
    return n


def _lower_simple(llir: Graph, h: Node, op: str, ins, outs) -> Node:
    n = new_node(
        llir, op, h.name,
        [ic.shape for ic in h.inputs], [ic.dtype for ic in h.inputs],
        [(oc.shape, oc.dtype, oc.memory) for oc in h.outputs],
        h.attrs,
    )
    for hic, lic in zip(h.inputs, n.inputs):
        ins[hic] = lic
    for hoc, loc in zip(h.outputs, n.outputs):
        outs[hoc] = loc
    return n


def _lower_clamp(llir: Graph, h: Node, ins, outs) -> None:
    x, low, high = h.inputs
    out = h.outputs[0]
    mx = new_node(llir, "binary", h.name, [x.shape, low.shape], [x.dtype, low.dtype],
                   [(x.shape, out.dtype, out.memory)], {"binary_op": "max", "fused_activation": FULL_RANGE})
    mn = new_node(llir, "binary", h.name, [x.shape, high.shape], [x.dtype, high.dtype],
                   [(out.shape, out.dtype, out.memory)], {"binary_op": "min", "fused_activation": FULL_RANGE})
    connect(mn.inputs[0], mx.outputs[0])
    ins[x], ins[low], ins[high] = mx.inputs[0], mx.inputs[1], mn.inputs[1]
    outs[out] = mn.outputs[0]


def _lower_fused_unary(llir: Graph, h: Node, ins, outs) -> None:
    from .fused_unary import compile_nnil

    n = _lower_simple(llir, h, "nnil_unary_method", ins, outs)
    n.attrs = {"body": compile_nnil(h.attrs["program"])}


def connect(ic: InputConnector, out: OutputConnector) -> None:
    """Connect without the shape check: after lowering, a consumer of a folded memory_copy keeps its
    own (reshaped) shape while reading the producer's buffer, as in ncc's LLIR."""
    if ic.producer is not None:
        ic.producer.consumers.remove(ic)
    ic.producer = out
    out.consumers.append(ic)


def fold_memorycopy(llir: Graph) -> None:
    """LLIR pass L1 (fold_memorycopy.cpp): every memory_copy disappears; its consumers are re-pointed
    to the memory_copy's producer (appended to its consumer list)."""
    for n in llir.dfs():
        if n.op != "memory_copy":
            continue
        src = n.inputs[0].producer
        for c in list(n.outputs[0].consumers):
            connect(c, src)


def _name_io(llir: Graph) -> None:
    used = {n.name for n in llir.nodes if n.name}
    for kind, base in (("input", "Input"), ("output", "Output")):
        for n in llir.nodes:
            if n.op == kind and not n.name:
                i = 0
                while f"{base}_{i}" in used:
                    i += 1
                n.name = f"{base}_{i}"
                used.add(n.name)
