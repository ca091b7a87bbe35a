"""The straight compile pipeline of ``ncc compile`` (compiler spec §2): import → optimize (P1, P2) →
quantize (checkpoints, calibration, range broadcast, Q1-Q5) → lower → schedule → emit.

Each stage is one small function; :func:`run_pipeline` strings them together and prints ncc's
console lines (§12) to ``out``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from ..errors import CompileError, InputError
from ..ir.graph import Graph
from . import transforms as T
from .rewrite import Context, run_pass


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
    weights_quantize_threshold: float = 64.0
    output_quantize_threshold: int = 1024
    quantize_binary: bool = True
    max_allocator_solve_secs: int = 60
    dump_ir: bool = False
    target: str = "k210"
    dump_weights_range: bool = False

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

    def validate(self) -> None:
        checks = (("-t/--target", self.target, ("k210", "cpu")),
                  ("--dataset-format", self.dataset_format, ("image", "raw")),
                  ("--inference-type", self.inference_type, ("uint8", "float")),
                  ("--input-type", self.input_type, ("default", "uint8", "float")),
                  ("--calibrate-method", self.calibrate_method, ("no_clip", "l2")))
        for flag, v, allowed in checks:
            if v not in allowed:
                raise InputError(f"{flag} {v!r} is not supported; use one of: {', '.join(allowed)}")
        if self.input_std is not None and float(self.input_std) == 0.0:
            raise InputError("--input-std 0 would divide by zero; pass the standard deviation used in training")
        if self.inference_type == "uint8" and not self.dataset:
            raise InputError("uint8 inference needs a calibration set: pass --dataset DIR (images or raw files "
                             "of the model input), or use --inference-type float")
        if self.inference_type == "uint8":
            from .. import images

            images.list_dataset(self.dataset, self.dataset_format)  # fails early on a missing/empty dataset


def make_context(opts: Options) -> Context:
    return Context(weights_quantize_threshold=float(opts.weights_quantize_threshold),
                   output_quantize_threshold=int(opts.output_quantize_threshold),
                   quantize_binary=bool(opts.quantize_binary), inference_type=opts.inference_type,
                   input_type=opts.effective_input_type, target=opts.target)


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
                              opts.use_dataset_as_input_stat, out)
    if opts.calibrate_method == "l2":
        ranges = C.l2_ranges(g, ranges, opts.dataset, opts.dataset_format, opts.mean, opts.std,
                             opts.use_dataset_as_input_stat, out)
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
        if n.op == "conv2d" and not n.need_quantize:
            line = f"WARN: {n.name} Fallback to float conv2d due to weights divergence."
            ctx.warnings.append(line)
            out.write(line + "\n")


def generate(g: Graph, out, opts: Options | None = None):
    """Lower, schedule and emit (the back end); returns (kmodel bytes, llir, schedule)."""
    from .emit import emit
    from .lower import lower
    from .report import summary_lines, working_memory_line
    from .schedule import schedule

    out.write("5. Lowering...\n")
    llir = lower(g)  # includes L1 fold_memorycopy, so both dumps show the folded LLIR
    dump_graph(llir, "lowering", opts or Options(), llir=True)
    out.write("6. Optimize Pass 3...\n")
    dump_graph(llir, "optimize_3", opts or Options(), llir=True)
    out.write("7. Generate code...\n")
    out.write("  Plan buffers...\n")
    sched = schedule(llir)
    out.write("  Emit code...\n")
    data = emit(llir, sched).to_bytes()
    out.write(working_memory_line(sched) + "\n")
    for line in summary_lines(llir):
        out.write(line + "\n")
    return data, llir, sched


@dataclass
class Result:
    kmodel: bytes
    graph: Graph
    llir: Graph
    schedule: object
    warnings: list[str]


def run_pipeline(path, opts: Options | None = None, out=None, fmt: str | None = None) -> Result:
    """Compile a float TFLite or ONNX model to kmodel v4 bytes (the whole §2 pipeline); ``fmt`` ("tflite" or
    "onnx", ncc's ``-i``) defaults to the file name's."""
    opts = opts or Options()
    out = out if out is not None else sys.stdout
    opts.validate()
    ctx = make_context(opts)
    g = import_graph(path, out, fmt)
    optimize(g, ctx, out, opts)
    if opts.inference_type == "uint8":
        add_checkpoints(g, ctx, opts, out)
        calibrate(g, ctx, opts, out)
        quantize_graph(g, ctx, out, opts)
    data, llir, sched = generate(g, out, opts)
    return Result(data, g, llir, sched, ctx.warnings)
