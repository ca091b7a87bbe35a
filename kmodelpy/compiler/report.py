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

from ..ir.graph import MEM_KPU, MEM_MAIN, Graph, Node
from ..ir.origins import keeps_float
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
HIDDEN = {"input", "output", "ignore", "constant"}


def shape_str(shape) -> str:
    """ncc's ``to_string(shape)``: dims joined by ``x``."""
    return "x".join(str(int(d)) for d in shape)


def working_memory_line(sched: Schedule) -> str:
    return f"Working memory usage: {sched.main_usage} B"


def memory_warnings(sched: Schedule, file_size: int) -> list[str]:
    """kmodelpy's lines after ``Working memory usage`` when the kmodel does not fit a K210 (never for a model
    that fits: ncc's console stays as it was): the main-memory placement kmodelpy chose instead of ncc's,
    main memory above the K210's 6 MiB (with the tensors live at the peak), model file + main memory above
    6 MiB (both must be in RAM) or above the ~3.5 MB MaixPy leaves for them."""
    from ..inspect_kmodel import MAIXPY_USABLE
    from .schedule import K210_MAIN_RAM

    main, lines = sched.main_usage, []
    if sched.main_placement:
        lines.append(f"kmodelpy: ncc's first-fit buffer placement needs {sched.first_fit_main} B of main memory, "
                     f"more than the K210's 6 MiB ({K210_MAIN_RAM} B); placed {sched.main_placement} instead: "
                     f"{main} B (docs/deviations.md D70)")
    if main > K210_MAIN_RAM:
        alloc = sched.allocators[MEM_MAIN]
        age, peak = alloc.peak_live()
        live = sorted(alloc.live_at(age), key=lambda b: -b.size)
        lines.append(f"WARN: kmodelpy: this kmodel needs {main} B of main memory, more than the K210's 6 MiB "
                     f"({K210_MAIN_RAM} B): it cannot run on a K210. At the peak ({peak} B live) the largest "
                     "tensors are " + "; ".join(f"{b.label} {b.size} B" for b in live[:4])
                     + ": reduce the input resolution or the channels of those layers")
    elif main + file_size > K210_MAIN_RAM:
        lines.append(f"WARN: kmodelpy: the kmodel ({file_size} B) and its main memory ({main} B) together need "
                     f"{file_size + main} B, more than the K210's 6 MiB ({K210_MAIN_RAM} B; both must be in RAM): "
                     "it cannot run on a K210")
    elif main + file_size > MAIXPY_USABLE:
        lines.append(f"kmodelpy: the kmodel ({file_size} B) and its main memory ({main} B) together need "
                     f"{file_size + main} B, more than the ~3.5 MB MaixPy leaves for both: it runs from the "
                     "K210 SDK, under MaixPy only with a minimum firmware build, if at all")
    return lines


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
    """KPU for KPU convolutions, CPU->KPU for uploads into KPU RAM, CPU otherwise."""
    return {"kpu_conv2d": "KPU", "kpu_upload": "CPU->KPU"}.get(node.op, "CPU")


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


# ------------------------------------------------------------------ why a layer stayed on the CPU
KPU_LIMITS = "C <= 1024, 4 <= H <= 256, 4 <= W <= 512"


def _conv_reasons(n: Node, weights_quantize_threshold: float, output_quantize_threshold: int) -> list[str]:
    """The KPU rules of compiler spec §6.1/§6.2 that a CPU convolution breaks."""
    from .transforms.kpu_lowering import kpu_pre_sur, supported_filter, supported_in_shape, weights_width

    at = n.attrs
    w = at["weights"]
    oc, icg, kh, kw = (int(v) for v in w.shape)
    shape = tuple(n.inputs[0].shape)
    ic = shape[1]
    reasons = []
    if not supported_filter(kh, kw):
        reasons.append(f"filter {kh}x{kw} (the KPU runs only 1x1 and 3x3 square filters)")
    g = int(at.get("groups", 1))
    if g not in (1, ic):
        reasons.append(f"grouped convolution, groups {g} of {ic} channels (KPU: normal or depthwise only)")
    if (int(at.get("dilation_h", 1)), int(at.get("dilation_w", 1))) != (1, 1):
        reasons.append("dilation with stride or batch > 1 (the KPU has no dilation)")
    if supported_filter(kh, kw):
        (bh, ah), _ = kpu_pre_sur(tuple(at["padding_h"]), kh)
        (bw, aw), _ = kpu_pre_sur(tuple(at["padding_w"]), kw)
        padded = (shape[0], ic, shape[2] + bh + ah, shape[3] + bw + aw)
        if not supported_in_shape(shape) or not supported_in_shape(padded):
            reasons.append(f"input {shape_str(shape)} outside the KPU limits ({KPU_LIMITS})")
    if oc > 1024:
        reasons.append(f"{oc} output channels (KPU: at most 1024)")
    if n.op == "conv2d" and not reasons:
        width = weights_width(w)
        if width > weights_quantize_threshold:
            reasons.append(f"weights range {width:g} wider than --weights-quantize-threshold "
                           f"{weights_quantize_threshold:g}")
    if n.op == "quantized_conv2d" and not reasons:
        reasons.append(f"weights range wider than --weights-quantize-threshold {weights_quantize_threshold:g}")
    if n.op == "conv2d":
        size = 1
        for d in n.outputs[0].shape:
            size *= int(d)
        if size < output_quantize_threshold:
            reasons.append(f"kept in float: output has {size} elements < --output-quantize-threshold "
                           f"{output_quantize_threshold}")
        elif not reasons or reasons[-1].startswith("weights"):
            reasons.append("kept in float (not quantized)")
    return reasons


def _pool_reasons(n: Node) -> list[str]:
    """Why a pool was not fused into a KPU convolution's pool unit (compiler spec Q2)."""
    from .transforms.quantize_k210 import reduce_pool_type

    at = n.attrs
    fh, fw, sh, sw = (int(at[k]) for k in ("filter_h", "filter_w", "stride_h", "stride_w"))
    rule = ("only 2x2 stride 2, 2x2 stride 1 (SAME) and 4x4 stride 4 pools directly after a non-depthwise KPU "
            "convolution are fused into it")
    if fh != fw or sh != sw or reduce_pool_type(at["reduce_op"], fh, sh) is None:
        why = f"{fh}x{fw} stride {sh}" + (f"x{sw}" if sw != sh else "") + f": {rule}"
        if fh == fw == 4 and sh == sw:
            why += (" (ncc v0.2 maps a 4x4 pool of any stride to the KPU's 4x4 stride-4 pool and fails on the "
                    "shape; kmodelpy runs it on the CPU)")
        return [why]
    return [rule]


def _matmul_reasons(n: Node, output_quantize_threshold: int) -> list[str]:
    b = n.inputs[1]
    if b.producer is None or b.producer.node.op != "constant":
        return ["the weights are not a constant tensor"]
    k, m = (int(v) for v in b.shape)
    reasons = []
    if k > 1024 or m > 1024:
        reasons.append(f"{k}x{m} weights (the KPU mapping needs K, N <= 1024)")
    if k * m < output_quantize_threshold:
        reasons.append(f"K*N = {k * m} < --output-quantize-threshold {output_quantize_threshold}")
    if not reasons:
        reasons.append("weights range wider than --weights-quantize-threshold")
    return reasons


def cpu_fallbacks(llir: Graph, weights_quantize_threshold: float = 64.0,
                  output_quantize_threshold: int = 1024, kpu_fit=None) -> list[tuple[str, str]]:
    """(layer, reason) for every compute layer that ncc's rules kept off the KPU, in execution order:
    convolutions and fully-connected layers (with the rule they break), transpose convolutions and
    pools that could not be fused into a KPU convolution; and the layers ``kpu_fit`` moved to the CPU."""
    moved = {r.layer for r in kpu_fit.remedies if r.kind == "cpu"} if kpu_fit is not None else set()
    out = []
    for n in llir.dfs():
        label = f"{DISPLAY.get(n.op, n.op)} '{n.name}'" if n.name else DISPLAY.get(n.op, n.op)
        label += f" ({shape_str(n.outputs[0].shape)})" if n.outputs else ""
        if n.name in moved and n.op in ("conv2d", "quantized_conv2d", "matmul", "quantized_matmul"):
            reasons = ["its KPU feature maps do not fit the KPU RAM even as row bands of one output row "
                       "(--kpu-ram-overflow fit moved it to the CPU)"]
        elif keeps_float(n) and n.op in ("conv2d", "matmul"):
            reasons = ["kept in float by --float-layers"]
        elif n.op in ("conv2d", "quantized_conv2d"):
            reasons = _conv_reasons(n, weights_quantize_threshold, output_quantize_threshold)
        elif n.op in ("matmul", "quantized_matmul"):
            reasons = _matmul_reasons(n, output_quantize_threshold)
        elif n.op == "conv2d_transpose":
            reasons = ["transpose convolutions never run on the KPU"]
        elif n.op == "reduce_window2d":
            reasons = _pool_reasons(n)
        else:
            continue
        out.append((label, "; ".join(reasons)))
    return out


def full_report(llir: Graph, sched: Schedule, weights_quantize_threshold: float = 64.0,
                output_quantize_threshold: int = 1024, kpu_fit=None) -> str:
    """The per-layer table, one line per CPU fallback, then what ``fit_kpu_ram`` changed (if anything)."""
    lines = [layer_table(sched)]
    lines += fallback_lines(cpu_fallbacks(llir, weights_quantize_threshold, output_quantize_threshold, kpu_fit))
    lines += kpu_fit.lines() if kpu_fit is not None else []
    return "\n".join(lines)
