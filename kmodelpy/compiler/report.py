"""What the compiler prints (compiler spec §12) and kmodelpy's extra per-layer report.

ncc prints the stage lines (done by the pipeline), then ``Working memory usage: <N> B`` (N = the main
allocator's maximum usage = the header's ``main_mem``) and the summary::

    <empty line>
    SUMMARY
    INPUTS
    0<TAB><input name><TAB>AxBxCxD        (LLIR input nodes in creation order, their own shapes)
    OUTPUTS
    0<TAB><output name><TAB>AxB           (LLIR output nodes, the shape of their input)

kmodelpy adds :func:`layer_table`: one row per emitted node (op, where it runs, output shape and
dtype, memory placement, KPU bytes) plus the memory totals, and :func:`fallback_lines`: every layer
that was kept on the CPU with the reason (as collected by the passes).
"""
from __future__ import annotations

from ..ir.graph import MEM_KPU, Graph, Node
from .schedule import Schedule

DISPLAY = {
    "binary": "Binary", "concat": "Concat", "conv2d": "Conv2D", "dequantize": "Dequantize", "matmul": "MatMul",
    "pad": "Pad", "quantize": "Quantize", "reduce": "Reduce", "reduce_window2d": "ReduceWindow2D",
    "memory_copy": "MemoryCopy", "resize_image": "ResizeImage", "transpose": "Transpose",
    "strided_slice": "StridedSlice", "unary": "Unary", "quantized_conv2d": "QuantizedConv2D",
    "quantized_matmul": "QuantizedMatMul", "quantized_binary": "QuantizedBinary", "table_lookup1d": "TableLookup1D",
    "conv2d_transpose": "Conv2DTranspose", "nnil_unary_method": "NNILUnaryMethod", "kpu_upload": "KPUUpload",
    "kpu_conv2d": "KPUConv2D",
}
KPU_OPS = {"kpu_upload", "kpu_conv2d"}
HIDDEN = {"input", "output", "ignore", "constant"}


def shape_str(shape) -> str:
    """ncc's ``to_string(shape)``: dims joined by ``x``."""
    return "x".join(str(int(d)) for d in shape)


def working_memory_line(sched: Schedule) -> str:
    return f"Working memory usage: {sched.main_usage} B"


def summary_lines(llir: Graph) -> list[str]:
    """The SUMMARY block exactly as ncc prints it (starting with the empty line)."""
    lines = ["", "SUMMARY", "INPUTS"]
    for i, n in enumerate(llir.inputs):
        lines.append(f"{i}\t{n.name}\t{shape_str(n.outputs[0].shape)}")
    lines.append("OUTPUTS")
    for i, n in enumerate(llir.outputs):
        lines.append(f"{i}\t{n.name}\t{shape_str(n.inputs[0].shape)}")
    return lines


def where(node: Node) -> str:
    return "KPU" if node.op in KPU_OPS else "CPU"


def layer_rows(sched: Schedule) -> list[dict]:
    """One dict per emitted node, in execution order."""
    rows = []
    for node in sched.sequence:
        if node.op in HIDDEN:
            continue
        outs = [o for o in node.outputs if o in sched.buffers]
        kpu_bytes = sum(sched.buffers[o].valid_size for o in outs if o.memory == MEM_KPU)
        places = []
        for o in outs:
            b = sched.buffers[o]
            places.append(f"{o.memory}[{b.start}:{b.start + b.valid_size}]")
        out = node.outputs[0] if node.outputs else None
        rows.append(dict(
            index=len(rows), op=DISPLAY.get(node.op, node.op), name=node.name, where=where(node),
            shape=shape_str(out.shape) if out is not None else "", dtype=out.dtype if out is not None else "",
            memory=" ".join(places), kpu_bytes=kpu_bytes,
        ))
    return rows


def layer_table(sched: Schedule) -> str:
    """A readable per-layer table plus memory totals."""
    rows = layer_rows(sched)
    head = ("#", "op", "runs on", "output", "dtype", "KPU bytes", "memory", "layer")
    cells = [head] + [
        (str(r["index"]), r["op"], r["where"], r["shape"], r["dtype"], str(r["kpu_bytes"] or ""), r["memory"], r["name"])
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(head))).rstrip() for c in cells]
    n_kpu = sum(1 for r in rows if r["op"] == "KPUConv2D")
    lines.append(
        f"{len(rows)} nodes, {n_kpu} KPU convolutions; main memory {sched.main_usage} B, "
        f"KPU memory {sched.kpu_usage} B of 2097152 B, constants {sched.const_usage} B"
    )
    return "\n".join(lines)


def fallback_lines(fallbacks) -> list[str]:
    """``fallbacks``: iterable of (layer name, reason) pairs, or of ready strings."""
    lines = []
    for f in fallbacks or ():
        if isinstance(f, str):
            lines.append(f"CPU fallback: {f}")
        else:
            name, reason = f
            lines.append(f"CPU fallback: {name}: {reason}")
    return lines
