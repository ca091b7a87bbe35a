"""The straight compile pipeline of ``ncc compile`` (compiler spec §2): import → optimize (P1, P2) →
quantize (checkpoints, calibration, range broadcast, Q1-Q5) → lower → fit KPU RAM → schedule → emit.

Each stage is one small function; :func:`run_pipeline` strings them together and prints ncc's
console lines (§12) to ``out``. ``fit_kpu_ram`` is kmodelpy's (ncc fails where it would act): it
changes nothing for a model whose KPU tensors fit, and when a KPU layer cannot run on the KPU even
as row bands the pipeline runs once more with that layer on the CPU.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from ..errors import CompileError, InputError
from ..ir.graph import Graph
from ..ir.origins import keeps_float
from . import transforms as T
from .allocator import KPU_RAM_BYTES
from .rewrite import Context, run_pass


CALIBRATE_METHODS = ("no_clip", "l2", "percentile", "mse")  # ncc's two, then kmodelpy's (range_search)


@dataclass
class Options:
    """``ncc compile`` options (§1) with ncc's defaults."""

    dataset: str | None = None
    dataset_format: str = "image"
    inference_type: str = "uint8"
    input_type: str = "default"
    input_mean: float | None = None
    input_std: float | None = None
    calibrate_method: str = "no_clip"
    calibrate_percentile: float = 99.99  # kmodelpy's --calibrate-method percentile
    bias_correction: bool = False  # kmodelpy: fold each channel's mean error into its add (bias_correction.py)
    float_layers: tuple | str | None = None  # kmodelpy: source layers kept in float (float_layers.py)
    range_clamp: bool = True  # False: kmodelpy's --no-range-clamp (ncc clips activation ranges to ±1000)
    float_heads: bool = False  # kmodelpy: small convs/matmuls feeding an output stay float (float_layers.py)
    fold_relu: bool = False  # kmodelpy: a ReLU after a binary op becomes its fused activation (relu_fold.py)
    equalize_activations: bool = False  # kmodelpy: rescale linear conv → conv pairs' channels (equalize.py)
    optimize_accuracy: bool = False  # kmodelpy: the best combination of docs/accuracy.md (see resolve())
    source: str | None = None  # the model file (set by run_pipeline, for messages)
    weights_quantize_threshold: float = 64.0
    output_quantize_threshold: int = 1024
    quantize_binary: bool = True
    max_allocator_solve_secs: int = 60
    dump_ir: bool = False
    target: str = "k210"
    dump_weights_range: bool = False
    kpu_ram_overflow: str = "fit"  # "error": fail as ncc does when the KPU tensors do not fit
    kpu_ram_budget: int = KPU_RAM_BYTES  # internal (tests): the KPU RAM size the compiler fits tensors into
    jobs: int | None = None  # calibration threads (None: the free cores)

    @property
    def use_dataset_as_input_stat(self) -> bool:
        return self.input_mean is None and self.input_std is None

    @property
    def mean(self) -> float:
        return 0.0 if self.input_mean is None else float(self.input_mean)

    @property
    def std(self) -> float:
        return 1.0 if self.input_std is None else float(self.input_std)

    @property
    def effective_input_type(self) -> str:
        return self.inference_type if self.input_type == "default" else self.input_type

    def resolve(self) -> None:
        """``optimize_accuracy``: what docs/accuracy.md measured best in general — the percentile calibration
        (unless another method than the default was asked for), ``--float-layers auto`` (the layers next to the
        input in float, within a CPU budget; unless layers are named), and the graph options
        ``--equalize-activations --fold-relu --float-heads --no-range-clamp``. Bias correction is not part of
        it: it helps on held-out calibration pictures but made the line followers' test pictures worse."""
        if self.optimize_accuracy:
            if self.calibrate_method == "no_clip":
                self.calibrate_method = "percentile"
            if not self.float_layers:
                self.float_layers = "auto"
            self.equalize_activations = self.fold_relu = self.float_heads = True
            self.range_clamp = False

    def validate(self) -> None:
        checks = (("-t/--target", self.target, ("k210", "cpu")),
                  ("--dataset-format", self.dataset_format, ("image", "raw")),
                  ("--inference-type", self.inference_type, ("uint8", "float")),
                  ("--input-type", self.input_type, ("default", "uint8", "float")),
                  ("--calibrate-method", self.calibrate_method, CALIBRATE_METHODS),
                  ("--kpu-ram-overflow", self.kpu_ram_overflow, ("fit", "error")))
        for flag, v, allowed in checks:
            if v not in allowed:
                raise InputError(f"{flag} {v!r} is not supported; use one of: {', '.join(allowed)}")
        if not 64 <= int(self.kpu_ram_budget) <= KPU_RAM_BYTES:
            raise InputError(f"kpu_ram_budget {self.kpu_ram_budget} is not between 64 and {KPU_RAM_BYTES} bytes")
        if self.jobs is not None and not (isinstance(self.jobs, int) and self.jobs >= 1):
            raise InputError(f"--jobs {self.jobs!r}: give a number of calibration threads, 1 or more")
        if not 50.0 < float(self.calibrate_percentile) <= 100.0:
            raise InputError(f"--calibrate-percentile {self.calibrate_percentile}: give a percentage above 50 and "
                             "at most 100 (e.g. 99.99)")
        if self.input_std is not None and float(self.input_std) == 0.0:
            raise InputError("--input-std 0 would divide by zero; pass the standard deviation used in training")
        if self.inference_type == "uint8" and not self.dataset:
            raise InputError("uint8 inference needs a calibration set: pass --dataset DIR (images or raw files "
                             "of the model input), or use --inference-type float")
        if self.inference_type == "uint8":
            from .. import images

            images.list_dataset(self.dataset, self.dataset_format)  # fails early on a missing/empty dataset


def make_context(opts: Options, on_cpu=frozenset()) -> Context:
    return Context(weights_quantize_threshold=float(opts.weights_quantize_threshold),
                   output_quantize_threshold=int(opts.output_quantize_threshold),
                   quantize_binary=bool(opts.quantize_binary), inference_type=opts.inference_type,
                   input_type=opts.effective_input_type, target=opts.target, on_cpu=frozenset(on_cpu),
                   range_clamp=bool(opts.range_clamp))


# ------------------------------------------------------------------------------------------- stages
def dump_graph(g: Graph, prefix: str, opts: Options, llir: bool = False) -> None:
    """``--dump-ir``: Graphviz file ``ir_<prefix>.dot`` in the current folder, exactly as ncc writes it
    (compile.cpp:46-79; names every unnamed node first, which also changes WARN names)."""
    if not opts.dump_ir:
        return
    from ..ir.ops import display_name
    from .report import DISPLAY

    g.assign_names()
    lines = ['digraph "graph" {', 'node [shape="record"]']
    for n in g.nodes:
        label = DISPLAY.get(n.op, display_name(n.op)) if llir else display_name(n.op)
        lines.append(f'"{n.name}" [label="{{{label}}}"]')
    for n in g.nodes:
        for o in n.outputs:
            shape = "x".join(str(d) for d in o.shape)
            for c in o.consumers:
                lines.append(f'"{n.name}"->"{c.node.name}" [label="{shape}"]')
    with open(f"ir_{prefix}.dot", "w") as f:
        f.write("\n".join(lines) + "\n}\n")


def import_graph(path, out, fmt: str | None = None) -> Graph:
    from ..frontends import import_graph as import_source
    from .k210_ops import register_all

    register_all()
    out.write("1. Import graph...\n")
    g = import_source(path, fmt)
    g.assign_names()
    return g


def optimize(g: Graph, ctx: Context, out, opts: Options | None = None) -> None:
    opts = opts or Options()
    dump_graph(g, "import", opts)
    out.write("2. Optimize Pass 1...\n")
    run_pass(g, T.pass_p1(ctx), ctx)
    dump_graph(g, "optimize_1", opts)
    if opts.float_layers:
        from .float_layers import mark_float_layers

        mark_float_layers(g, opts.float_layers, str(opts.source or "the model"), out)
    if opts.float_heads and ctx.inference_type == "uint8":
        from .float_layers import mark_float_heads

        mark_float_heads(g)
    if opts.dump_weights_range:  # compile.cpp:252-264: plain get_range, C++ float formatting
        from .quant import get_range

        out.write("Dump weights range ...\n")
        for n in g.nodes:
            if n.op == "conv2d":
                r = get_range(n["weights"])
                out.write(f"{n.name}{{{'%g' % float(r.min)}, {'%g' % float(r.max)}}}\n")
    if ctx.inference_type == "uint8":
        out.write("3. Optimize Pass 2...\n")
        run_pass(g, T.pass_p2(ctx), ctx)
        dump_graph(g, "optimize_2", opts)


def accuracy_passes(g: Graph, ctx: Context, opts: Options, out) -> None:
    """kmodelpy's opt-in float-exact rewrites before quantization (docs/accuracy.md): ``--fold-relu``
    (transforms/relu_fold.py), ``--equalize-activations`` (equalize.py)."""
    if opts.fold_relu:
        from .transforms.relu_fold import FoldReluIntoBinary

        run_pass(g, [FoldReluIntoBinary()], ctx)
    if opts.equalize_activations:
        from .equalize import equalize_activations

        equalize_activations(g, opts, out)


def add_checkpoints(g: Graph, ctx: Context, opts: Options, out) -> None:
    out.write("4. Quantize...\n")
    out.write("  4.1. Add quantization checkpoints...\n")
    for p in (T.pass_c1, T.pass_c2, T.pass_c3):
        run_pass(g, p(ctx), ctx)
    dump_graph(g, "before_quant", opts)
    if opts.use_dataset_as_input_stat:
        for n in g.inputs:
            n.output.need_quantize = True


def calibrate(g: Graph, ctx: Context, opts: Options, out) -> None:
    from . import calibrate as C

    if len(g.inputs) != 1:
        raise CompileError(f"calibration feeds one model input, this model has {len(g.inputs)}; "
                           "export a single-input model")
    out.write("  4.2. Get activation ranges...\n")
    out.write("  Plan buffers...\n")
    ranges = C.collect_ranges(g, opts.dataset, opts.dataset_format, opts.mean, opts.std,
                              opts.use_dataset_as_input_stat, out, opts.jobs)
    if opts.calibrate_method == "l2":
        ranges = C.l2_ranges(g, ranges, opts.dataset, opts.dataset_format, opts.mean, opts.std,
                             opts.use_dataset_as_input_stat, out, opts.jobs)
    elif opts.calibrate_method != "no_clip":
        ranges = C.searched_ranges(g, ranges, opts.dataset, opts.dataset_format, opts.mean, opts.std,
                                   opts.calibrate_method, float(opts.calibrate_percentile), out, opts.jobs,
                                   opts.range_clamp)
    if not opts.use_dataset_as_input_stat:
        oc = g.inputs[0].output
        r = C.fixed_input_range(opts.mean, opts.std)
        ranges[oc] = r if oc not in ranges else ranges[oc].union(r)
    C.broadcast_ranges(g, ranges)
    ctx.ranges = ranges


def quantize_graph(g: Graph, ctx: Context, out, opts: Options | None = None) -> None:
    out.write("  4.5. Quantize graph...\n")
    for p in (T.pass_q1, T.pass_q2, T.pass_q3, T.pass_q4, T.pass_q5):
        run_pass(g, p(ctx), ctx)
    dump_graph(g, "after_quant", opts or Options())
    for n in g.nodes:
        if n.op == "conv2d" and not n.need_quantize and not keeps_float(n):  # (--float-layers: asked for)
            line = f"WARN: {n.name} Fallback to float conv2d due to weights divergence."
            ctx.warnings.append(line)
            out.write(line + "\n")


def lower_graph(g: Graph, out, opts: Options | None = None) -> Graph:
    """``5. Lowering...``: HLIR → LLIR (includes L1 fold_memorycopy, so both dumps show the folded LLIR)."""
    from .lower import lower

    out.write("5. Lowering...\n")
    llir = lower(g)
    dump_graph(llir, "lowering", opts or Options(), llir=True)
    return llir


def fit_kpu_ram(llir: Graph, out, opts: Options):
    """``6. Optimize Pass 3...``: ncc's L1 ran in :func:`lower_graph`; then kmodelpy's ``fit_kpu_ram``
    (nothing to do for ``--kpu-ram-overflow error`` or a model whose KPU tensors fit)."""
    from .kpu_ram import KpuFit, fit_kpu_ram as fit_pass

    out.write("6. Optimize Pass 3...\n")
    fit = KpuFit() if opts.kpu_ram_overflow == "error" else fit_pass(llir, int(opts.kpu_ram_budget))
    for line in fit.lines():
        out.write("  " + line + "\n")
    dump_graph(llir, "optimize_3", opts, llir=True)
    return fit


def generate(llir: Graph, out, kpu_placement: str, kpu_limit: int = KPU_RAM_BYTES, tune=None):
    """``7. Generate code...``: schedule and emit; returns (kmodel bytes, schedule). ``tune(kmodel, llir,
    schedule)`` may adjust the emitted kmodel's parameters before it is written (--bias-correction)."""
    from .emit import emit
    from .report import memory_warnings, summary_lines, working_memory_line
    from .schedule import schedule

    out.write("7. Generate code...\n")
    out.write("  Plan buffers...\n")
    sched = schedule(llir, kpu_placement, kpu_limit)
    out.write("  Emit code...\n")
    km = emit(llir, sched)
    if tune is not None:
        tune(km, llir, sched)
    data = km.to_bytes()
    out.write(working_memory_line(sched) + "\n")
    for line in memory_warnings(sched, len(data)):
        out.write(line + "\n")
    for line in summary_lines(llir):
        out.write(line + "\n")
    return data, sched


@dataclass
class Result:
    kmodel: bytes
    graph: Graph
    llir: Graph
    schedule: object
    warnings: list[str]
    kpu_fit: object = None  # kmodelpy.compiler.kpu_ram.KpuFit


def lower_and_fit(path, opts: Options, out, calibrate_stage=calibrate, checkpointed=None, fmt: str | None = None):
    """Stages 1-6; when ``fit_kpu_ram`` finds KPU layers that cannot stay on the KPU, all of them once
    more with those layers on the CPU. Returns (HLIR graph, LLIR graph, KpuFit, Context).
    ``checkpointed``: the graph after stage 4.1 when the caller has it already (the fit report)."""
    on_cpu: frozenset[str] = frozenset()
    moved = []  # the "cpu" remedies of the earlier runs
    while True:
        ctx = make_context(opts, on_cpu)
        if checkpointed is not None and not on_cpu:
            g = checkpointed
        else:
            g = import_graph(path, out, fmt)
            optimize(g, ctx, out, opts)
            if opts.inference_type == "uint8":
                accuracy_passes(g, ctx, opts, out)
                add_checkpoints(g, ctx, opts, out)
        if opts.inference_type == "uint8":
            calibrate_stage(g, ctx, opts, out)
            quantize_graph(g, ctx, out, opts)
        llir = lower_graph(g, out, opts)
        fit = fit_kpu_ram(llir, out, opts)
        if not fit.to_cpu:
            fit.remedies[:0] = moved
            return g, llir, fit, ctx
        on_cpu |= set(fit.to_cpu)
        moved += [r for r in fit.remedies if r.kind == "cpu"]
        out.write(f"  compiling again with {', '.join(sorted(on_cpu))} on the CPU\n")


def run_pipeline(path, opts: Options | None = None, out=None, fmt: str | None = None) -> Result:
    """Compile a float TFLite or ONNX model to kmodel v4 bytes (the whole §2 pipeline); ``fmt`` ("tflite" or
    "onnx", ncc's ``-i``) defaults to the file name's."""
    opts = opts or Options()
    out = out if out is not None else sys.stdout
    opts.resolve()
    opts.validate()
    opts.source = str(path)
    g, llir, fit, ctx = lower_and_fit(path, opts, out, fmt=fmt)
    tune = None
    if opts.bias_correction and opts.inference_type == "uint8":
        from .bias_correction import correct_biases

        def tune(km, llir, sched):
            correct_biases(km, llir, sched, path, opts, out)
    data, sched = generate(llir, out, fit.placement, int(opts.kpu_ram_budget), tune)
    return Result(data, g, llir, sched, ctx.warnings, fit)
