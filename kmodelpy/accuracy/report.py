"""What ``kmodelpy compare`` prints and writes: per-layer rows in graph order, the first layer where the
error jumps (with the likely cause and what to try), then the model outputs; the same as JSON, and the
per-layer SNR as a plot."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .measure import CODES, LayerSums, PictureStats

SNR_CAP = 60.0  # dB: above this an error is not worth talking about (uint8 full-scale noise is ~50 dB)
JUMP_DB = 6.0  # a layer losing this much SNR at once is "where the error jumps"
LARGER_BY_DB = 3.0  # a later layer losing this much more than the first jump is named too
CLIP_SHARE = 0.001  # clipping above 0.1 % of the values is a likely cause
BULK = 0.9999  # share of the values that counts as "the bulk" when judging a range


def short_name(key: str, n: int = 44) -> str:
    """Source tensor names are often ';'-joined lists (TFLite): the first one, shortened from the left."""
    first = key.split(";")[0]
    return first if len(first) <= n else "..." + first[-(n - 3):]


@dataclass
class LayerRow:
    index: int
    name: str
    key: str
    op: str
    where: str  # KPU | CPU uint8 | CPU float | input | constant | "" (not in the kmodel)
    kernel: str = ""  # the kmodel op that computes it (LLIR kind: kpu_conv2d, quantized_conv2d, ...)
    cosine: float | None = None
    snr_db: float | None = None
    max_err_steps: float | None = None  # uint8 tensors only
    max_abs_err: float | None = None
    clipped: float | None = None  # share of float values outside the uint8 range (uint8 tensors only)
    codes_used: int | None = None  # codes holding BULK of the float values (uint8 tensors only)
    range: tuple | None = None  # the uint8 grid's real range (lo, hi)
    grid_snr_db: float | None = None  # what rounding the float values to the tensor's uint8 grid alone gives
    drop_db: float | None = None  # SNR lost in this layer (from the worst of its inputs and its grid)
    merged_into: str | None = None  # not in the kmodel: its computation is part of this layer's

    @property
    def mapped(self) -> bool:
        return self.where != ""


@dataclass
class OutputRow:
    index: int
    name: str
    size: int
    cosine: float
    mae: float
    max_abs_err: float
    top1: float | None = None  # share of pictures whose argmax agrees (vector outputs)
    argmax_agrees: list | None = None  # per picture (vector outputs)


@dataclass
class Jump:
    layer: str
    index: int
    drop_db: float
    jumped: bool  # False: no layer lost JUMP_DB at once, this is the largest single loss
    cause: str
    advice: str


@dataclass
class Report:
    model: str
    kmodel: str | None
    options: dict
    pictures: int
    dataset: str
    mode: str  # "layers" | "outputs"
    reason: str = ""  # why outputs only
    layers: list = field(default_factory=list)
    jump: Jump | None = None
    largest: Jump | None = None  # the largest single loss, when it is not the first jump's layer
    outputs: list = field(default_factory=list)
    picture_names: list = field(default_factory=list)  # in measurement order (argmax_agrees follows it)

    # ------------------------------------------------------------ text
    def text(self) -> str:
        lines = [f"kmodelpy compare: {self.model} (float) vs {self.kmodel or 'the kmodel compiled from it'} "
                 f"(emulated), {self.pictures} picture(s) of {self.dataset}"]
        if self.options:
            lines.append("  compile options: " + " ".join(f"{k}={v}" for k, v in self.options.items()))
        if self.mode == "outputs":
            lines.append(f"  outputs only: {self.reason}")
        else:
            lines += ["", *self._layer_table(), ""]
            if self.jump is not None:
                lines += self._jump_lines()
        lines += ["", "Outputs (kmodel vs float):"]
        for o in self.outputs:
            top = f", argmax agrees on {o.top1:.0%} of the pictures" if o.top1 is not None else ""
            lines.append(f"  output {o.index} '{short_name(o.name)}' ({o.size} values): cosine {o.cosine:.5f}, "
                         f"MAE {o.mae:.5g}, max |error| {o.max_abs_err:.5g}{top}")
        return "\n".join(lines)

    def _layer_table(self) -> list[str]:
        w = max([len(r.name) for r in self.layers] + [5])
        head = (f"  {'#':>3}  {'layer':<{w}}  {'op':<18} {'runs on':<10} {'cosine':>8} {'SNR dB':>7} "
                f"{'max err':>8} {'clipped':>8}")
        out = [head, f"  {'':>3}  {'':<{w}}  {'':<18} {'':<10} {'':>8} {'':>7} {'(steps)':>8} {'':>8}"]
        for r in self.layers:
            if not r.mapped:
                into = f"'{short_name(r.merged_into)}'" if r.merged_into else "another layer"
                out.append(f"  {r.index:>3}  {r.name:<{w}}  {r.op:<18} {'-':<10} (not in the kmodel: merged into "
                           f"{into})")
                continue
            cos = f"{r.cosine:.5f}" if r.cosine is not None else "-"
            snr = "exact" if r.snr_db is not None and math.isinf(r.snr_db) else (
                f"{r.snr_db:.1f}" if r.snr_db is not None else "-")
            steps = f"{r.max_err_steps:.1f}" if r.max_err_steps is not None else (
                "float" if r.where == "CPU float" else "-")
            clip = f"{r.clipped:.2%}" if r.clipped is not None else "-"
            out.append(f"  {r.index:>3}  {r.name:<{w}}  {r.op:<18} {r.where:<10} {cos:>8} {snr:>7} {steps:>8} "
                       f"{clip:>8}")
        return out

    def _jump_lines(self) -> list[str]:
        j = self.jump
        if j.jumped:
            head = f"The error jumps first at #{j.index} '{j.layer}': it loses {j.drop_db:.1f} dB of SNR."
        else:
            head = (f"No layer loses {JUMP_DB:.0f} dB or more at once; the largest single loss is #{j.index} "
                    f"'{j.layer}' ({j.drop_db:.1f} dB).")
        lines = [head, f"  likely cause: {j.cause}", f"  try: {j.advice}"]
        g = self.largest
        if g is not None:
            lines += [f"The largest single loss is later, at #{g.index} '{g.layer}': {g.drop_db:.1f} dB.",
                      f"  likely cause: {g.cause}", f"  try: {g.advice}"]
        return lines

    # ------------------------------------------------------------ JSON and plot
    def to_dict(self) -> dict:
        d = asdict(self)
        return _finite(d)

    def write_json(self, path) -> None:
        from ..compiler import write_atomic

        write_atomic(path, (json.dumps(self.to_dict(), indent=1) + "\n").encode())

    def plot(self, path) -> None:
        from ..errors import InputError

        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise InputError("--plot needs matplotlib: pip install 'kmodelpy[plot]' (or pip install matplotlib)") \
                from None
        rows = [r for r in self.layers if r.mapped and r.snr_db is not None]
        x = [r.index for r in rows]
        y = [min(r.snr_db, SNR_CAP) for r in rows]
        colors = {"KPU": "tab:blue", "CPU uint8": "tab:orange", "CPU float": "tab:green"}
        fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(self.layers) + 2), 4.2))
        ax.plot(x, y, color="0.6", linewidth=1)
        for where, c in colors.items():
            pts = [(r.index, min(r.snr_db, SNR_CAP)) for r in rows if r.where == where]
            if pts:
                ax.scatter(*zip(*pts), color=c, label=where, s=18, zorder=3)
        if self.jump is not None:
            ax.axvline(self.jump.index, color="tab:red", linestyle=":", linewidth=1)
            ax.annotate(f"#{self.jump.index} {short_name(self.jump.layer, 30)}", (self.jump.index, min(y or [0])),
                        color="tab:red", fontsize=8, rotation=90, va="bottom", ha="right")
        ax.set_xlabel("layer # (graph order)")
        ax.set_ylabel(f"SNR vs float (dB, capped at {SNR_CAP:.0f})")
        ax.set_title(f"{self.model}: per-layer SNR, {self.pictures} picture(s)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        import io

        from ..compiler import write_atomic

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        write_atomic(path, buf.getvalue())


def _finite(v):
    """JSON has no inf/NaN: exact layers get "inf"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else None)
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


# ---------------------------------------------------------------------------------------- building
def layer_rows(source_layers, taps: dict, merged: dict, stats: PictureStats) -> list[LayerRow]:
    rows = []
    for i, layer in enumerate(source_layers):
        t = taps.get(layer.key)
        s = stats.layers.get(layer.key)
        row = LayerRow(i, short_name(layer.key), layer.key, layer.op, t.where if (t and s) else "",
                       t.compute_op if t else "")
        if not row.mapped and layer.key in merged:
            row.merged_into = merged[layer.key]
        if t is not None and s is not None:
            _fill(row, s, t.quant_param)
        rows.append(row)
    _drops(rows, source_layers)
    return rows


def _fill(row: LayerRow, s: LayerSums, qp) -> None:
    row.cosine = 1.0 if s.ee == 0 else (s.fk / math.sqrt(s.ff * s.kk) if s.ff > 0 and s.kk > 0 else 0.0)
    row.snr_db = math.inf if s.ee == 0 else (10 * math.log10(s.ff / s.ee) if s.ff > 0 else -math.inf)
    row.max_abs_err = s.max_abs
    if qp is not None and s.codes is not None:
        zp, scale = qp
        row.max_err_steps = s.max_abs * scale
        row.clipped = float(s.codes[CODES:].sum()) / max(s.n, 1)
        row.range = ((0 - zp) / scale, (CODES - 1 - zp) / scale)
        row.grid_snr_db = math.inf if s.rr == 0 else (10 * math.log10(s.ff / s.rr) if s.ff > 0 else -math.inf)
        inside = s.codes[:CODES]
        order = np.sort(inside)[::-1]
        need = BULK * inside.sum()
        row.codes_used = int(np.searchsorted(np.cumsum(order), need) + 1) if inside.sum() else 0


def _drops(rows: list[LayerRow], source_layers) -> None:
    """SNR lost by each mapped layer beyond what it is given: the worst SNR among the mapped layers it reads
    (through unmapped ones) or, if lower, what its own uint8 grid allows (rounding, no clipping), capped at
    SNR_CAP, minus its own SNR."""
    by_key = {r.key: r for r in rows}
    reads = {layer.key: layer.inputs for layer in source_layers}

    def input_snr(key, seen=()):
        vals = []
        for k in reads.get(key, ()):
            r = by_key.get(k)
            if r is None or k in seen:
                continue
            if r.mapped and r.snr_db is not None:
                vals.append(min(r.snr_db, SNR_CAP))
            else:
                vals.append(input_snr(k, seen + (k,)))
        return min(vals) if vals else SNR_CAP

    for r in rows:
        if r.mapped and r.snr_db is not None and r.where != "input":
            given = input_snr(r.key)
            if r.grid_snr_db is not None:
                given = min(given, r.grid_snr_db)
            r.drop_db = max(0.0, given - min(r.snr_db, SNR_CAP))


def _flag_name(r: LayerRow) -> str:
    """The layer's name as ``--float-layers`` takes it (the whole first ';'-separated part, never shortened)."""
    return r.key.split(";")[0]


def find_jump(rows: list[LayerRow], output_snr: float | None) -> Jump | None:
    """The first layer losing JUMP_DB or more at once (else the largest single loss), diagnosed."""
    cands = [r for r in rows if r.drop_db is not None]
    if not cands:
        return None
    first = next((r for r in cands if r.drop_db >= JUMP_DB), None)
    return _diagnosed(first or max(cands, key=lambda r: r.drop_db), first is not None, output_snr)


def find_largest(rows: list[LayerRow], jump: Jump | None, output_snr: float | None) -> Jump | None:
    """The largest single loss when it is another layer than ``jump`` and loses more than it (e.g. a late dense
    layer whose uint8 weights cost one output most of its accuracy, after an earlier, smaller jump)."""
    if jump is None:  # no layer has a loss at all
        return None
    r = max((r for r in rows if r.drop_db is not None), key=lambda r: r.drop_db)
    if r.index == jump.index or r.drop_db < max(JUMP_DB, jump.drop_db + LARGER_BY_DB):
        return None
    return _diagnosed(r, True, output_snr)


def _diagnosed(r: LayerRow, jumped: bool, output_snr: float | None) -> Jump:
    cause, advice = diagnose(r)
    total = SNR_CAP - output_snr if output_snr is not None else None
    if total and r.drop_db >= 0.5 * total and r.where in ("KPU", "CPU uint8"):
        advice += (f"; this one layer loses most of the accuracy: --float-layers '{_flag_name(r)}' keeps it in "
                   "float")
    return Jump(_flag_name(r), r.index, r.drop_db, jumped, cause, advice)


def diagnose(r: LayerRow) -> tuple[str, str]:
    """(likely cause, what to try) for a layer that loses accuracy."""
    if r.where == "CPU float":
        return ("it runs in float on the CPU: the loss comes from the uint8 tensors it reads (dequantized), "
                "not from the layer", "look at the layers before it")
    if r.clipped is not None and r.clipped >= CLIP_SHARE:
        lo, hi = r.range
        return (f"clipping: {r.clipped:.2%} of its float values fall outside the calibrated range "
                f"[{lo:.4g}, {hi:.4g}]",
                "a wider range: --calibrate-method no_clip (or a higher --calibrate-percentile), or a calibration "
                "set that covers these inputs")
    if r.range is not None and (r.range[1] - r.range[0]) < 0.05:
        lo, hi = r.range
        return (f"a tiny range [{lo:.3g}, {hi:.3g}]: the uint8 grid is as coarse as the values themselves",
                f"--float-layers '{_flag_name(r)}' (keep it in float), or --bias-correction")
    if r.codes_used is not None and r.codes_used <= 64:
        return (f"an outlier-dominated range: {BULK:.2%} of the values use only {r.codes_used} of the 256 codes",
                "another calibration method: --calibrate-method percentile (or mse)")
    if r.kernel in ("quantized_conv2d", "quantized_matmul"):
        return ("a uint8 convolution on the CPU: its weights share one uint8 scale (the KPU equalises them per "
                "output channel), often because the kernel is not 1x1/3x3",
                f"--float-layers '{_flag_name(r)}', or a 1x1/3x3 kernel so it runs on the KPU")
    if r.where == "CPU uint8":
        return ("a CPU uint8 operator (an activation table, an element-wise op) requantizes its inputs and output",
                f"--float-layers '{_flag_name(r)}', or --bias-correction on the layers before it")
    return ("the layer's own rounding (uint8 weights, the KPU activation table) adds up",
            "--bias-correction, or --float-layers '" + _flag_name(r) + "' if it matters most")


def output_rows(names: list[str], shapes: list[tuple], stats: PictureStats) -> list[OutputRow]:
    rows = []
    for i, pairs in enumerate(stats.outputs):
        f = np.concatenate([p[0] for p in pairs]).astype(np.float64)
        k = np.concatenate([p[1] for p in pairs]).astype(np.float64)
        e = k - f
        ff, kk = float(f @ f), float(k @ k)
        cos = 1.0 if not e.any() else (float(f @ k) / math.sqrt(ff * kk) if ff > 0 and kk > 0 else 0.0)
        size = pairs[0][0].size
        top1 = agree = None
        if i < len(shapes) and sum(int(d) > 1 for d in shapes[i]) == 1:  # a vector (a classifier's scores)
            agree = [bool(np.argmax(a) == np.argmax(b)) for a, b in pairs]
            top1 = float(np.mean(agree))
        rows.append(OutputRow(i, names[i] if i < len(names) else f"output {i}", size, cos, float(np.abs(e).mean()),
                              float(np.abs(e).max()) if e.size else 0.0, top1, agree))
    return rows
