"""``kmodelpy inspect model.tflite`` / ``model.onnx``: the K210 KPU fit report, before any compiling.

Every source layer with its verdict under ncc v0.2's K210 rules (compiler spec §6.4: KPU, partial =
KPU conv with CPU pad/crop/slice around it, CPU uint8/float, or folded away), the reason, a fix where
one exists, and the layer's feature maps in KPU RAM (input + output in the KPU row layout, runtime
spec §C.3) against the 2 MiB the KPU has.  The verdicts come from :mod:`kmodelpy.fit_rules`; this
module only formats them.  ``analyse`` and ``LayerVerdict`` are re-exported for library use.
"""
from __future__ import annotations

from .fit_rules import CPU, FOLDED, KPU, KPU_RAM, PARTIAL, LayerVerdict, analyse, analyse_with_kpu_ram

__all__ = ["analyse", "analyse_with_kpu_ram", "report", "LayerVerdict"]

_MARK = {KPU: "KPU", PARTIAL: "partial", CPU: "CPU", FOLDED: "folded"}


def _shape(s) -> str:
    return "x".join(str(d) for d in s) if s else "-"


def _short(name: str, n: int = 48) -> str:
    """Tensor names are often long (TFLite: ';'-joined lists): keep the first one, shortened."""
    first = name.split(";")[0]
    return first if len(first) <= n else "..." + first[-(n - 3):]


def _elems(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _kib(b: int) -> str:
    return f"{b / 1024:.0f} KiB"


def _layer_lines(v: LayerVerdict) -> list[str]:
    what = _MARK[v.verdict] + (f" ({v.precision})" if v.verdict == CPU and v.precision else "")
    ram = ""
    if v.kpu_bytes is not None:
        ram = f"  KPU RAM {_kib(v.kpu_bytes)}" + ("  DOES NOT FIT" if v.kpu_bytes > KPU_RAM else "")
        ram += "  -> row bands" if any("row bands" in k for k in v.kpu_ram) else ""
    lines = [f"  #{v.index:<3} {v.op:<18} {_shape(v.shape):<14} {what:<14} {_short(v.output)}{ram}"]
    for r in v.reasons:
        lines.append(f"        - {r}")
    for n in v.notes:
        lines.append(f"        note: {n}")
    for k in v.kpu_ram:
        lines.append(f"        KPU RAM fit: {k}")
    for f in v.fixes:
        lines.append(f"        fix: {f}")
    return lines


def _kpu_ram_lines(vs: list[LayerVerdict], fit, bound: int) -> list[str]:
    """The KPU RAM line(s) of the summary: what the compiled model needs, and what kmodelpy changes."""
    kpu = [v for v in vs if v.kpu_bytes is not None]
    over = [v for v in kpu if v.kpu_bytes > KPU_RAM]
    lines = []
    if over:
        lines.append(f"  KPU RAM: {len(over)} layer(s) need more than 2 MiB for their own input + output "
                     f"(#{', #'.join(str(v.index) for v in over)}): ncc fails with 'KPU allocator cannot "
                     "allocate more memory'. Use a smaller input (320x240 or less) or fewer channels.")
    if fit is None and bound <= KPU_RAM:
        lines.append(f"  KPU RAM: at most {bound} bytes ({100 * bound / KPU_RAM:.0f}% of 2 MiB: every KPU feature "
                     "map at once), so ncc's placement fits")
        return lines
    if fit is None:
        if not over:
            lines.append("  KPU RAM: every KPU layer fits alone (ncc also keeps other live KPU tensors there: "
                         "this is a lower bound)")
        return lines
    if not fit.changed:
        lines.append(f"  KPU RAM: the compiled model needs {fit.kpu_bytes} bytes "
                     f"({100 * fit.kpu_bytes / KPU_RAM:.0f}% of 2 MiB, ncc's first-fit placement)")
        return lines
    lines.append(f"  KPU RAM: ncc's first-fit placement needs {fit.first_fit_bytes} bytes > 2 MiB: ncc fails; "
                 "kmodelpy (--kpu-ram-overflow fit, the default) compiles it with these changes:")
    lines += ["    " + line.removeprefix("KPU RAM: ") for line in fit.lines()[1:]]
    return lines


def _summary(vs: list[LayerVerdict], wqt, oqt, fit=None, bound: int = 0) -> list[str]:
    count = {k: sum(v.verdict == k for v in vs) for k in (KPU, PARTIAL, CPU, FOLDED)}
    cpu_float = [v for v in vs if v.verdict == CPU and v.precision == "float"]
    kpu = [v for v in vs if v.kpu_bytes is not None]
    lines = ["", "Summary",
             f"  {len(vs)} layers: {count[KPU]} KPU, {count[PARTIAL]} partial (KPU + CPU pad/crop/slice), "
             f"{count[CPU]} CPU ({len(cpu_float)} of them float), {count[FOLDED]} folded away",
             f"  thresholds: --weights-quantize-threshold {wqt:g}, --output-quantize-threshold {oqt}"]
    if kpu:
        big = max(kpu, key=lambda v: v.kpu_bytes)
        lines.append(f"  largest KPU layer: #{big.index} {big.op} {_shape(big.kpu_in_shape)} -> "
                     f"{_shape(big.kpu_out_shape)} (NCHW), {big.kpu_bytes} bytes = "
                     f"{100 * big.kpu_bytes / KPU_RAM:.0f}% of the 2 MiB KPU RAM")
        lines += _kpu_ram_lines(vs, fit, bound)
        wide = [v for v in kpu if v.kpu_in_shape[2] > 240 or v.kpu_in_shape[3] > 320]
        if wide:
            lines.append("  KPU input above 320x240 (the K210 docs' limit; ncc allows 512x256 per layer) in "
                         f"#{', #'.join(str(v.index) for v in wide)}")
    else:
        lines.append("  no layer runs on the KPU: the whole model would run on the K210's CPU")
    heavy = sorted((v for v in vs if v.verdict == CPU and _elems(v.shape) >= 16384), key=lambda v: -_elems(v.shape))
    if heavy:
        lines.append("  heaviest CPU layers (the K210's 400 MHz CPU; float ones are slowest): " + ", ".join(
            f"#{v.index} {v.op} ({_elems(v.shape)} outputs, {v.precision or 'copy'})" for v in heavy[:5]))
    wbytes = sum(v.params * (4 if v.precision == "float" else 1) for v in vs)
    lines.append(f"  estimated weights in the kmodel: {_kib(wbytes)} (uint8 for KPU/quantized layers, float32 "
                 "for float layers; plus small per-layer tables)")
    lines += ["MaixPy notes",
              "  - ncc v0.2 / kmodelpy write kmodel v4: it needs MaixPy firmware v0.6 or later "
              "(v0.5.x loads only kmodel v3).",
              "  - kpu.load() reads the whole kmodel into RAM (plus the model's main-memory buffers at run time); "
              "if loading fails for lack of memory, use a MaixPy 'minimum' firmware build (more free RAM) or "
              "make the model smaller.",
              "  - feed the input at the model's size (e.g. sensor window or img.resize()), as uint8 RGB; "
              "the KPU needs H >= 4 and W >= 4 at every KPU layer."]
    return lines


def report(path, weights_quantize_threshold: float = 64, output_quantize_threshold: int = 1024) -> str:
    """The text of ``kmodelpy inspect model.tflite`` (or ``model.onnx``)."""
    from .fit_rules import source_model

    model = source_model(path)
    layout = model.layout
    vs, fit, bound = analyse_with_kpu_ram(model, weights_quantize_threshold, output_quantize_threshold)
    head = [f"{path}: K210 KPU fit (ncc v0.2 rules, uint8, before compiling)",
            "  verdicts: KPU = on the KPU (or fused into a KPU layer); partial = KPU conv with CPU "
            "pad/crop/slice around it; CPU (uint8|float); folded = no work left",
            "  KPU limits per layer: C <= 1024, 4 <= H <= 256, 4 <= W <= 512, 1x1/3x3 kernels; "
            "KPU RAM 2 MiB (64-byte rows); the K210 docs quote 320x240 as the largest input",
            "",
            f"  {'#':<4} {'op':<18} {'output ' + layout:<14} {'verdict':<14} tensor"]
    body = []
    for v in vs:
        body += _layer_lines(v)
    return "\n".join(head + body + _summary(vs, weights_quantize_threshold, output_quantize_threshold, fit, bound))
