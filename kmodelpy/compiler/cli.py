"""``kmodelpy compile``: ncc's ``compile`` command line (compiler spec §1).

``kmodelpy compile model.tflite|model.onnx [out.kmodel] [-i tflite|onnx] [-o kmodel] [-t k210] --dataset DIR ...`` — every
``ncc compile`` argument list works after replacing ``ncc`` by ``kmodelpy``. The output defaults to the
input's name with ``.kmodel``; it is written only when compilation succeeds.

The console shows what ncc prints (stage lines, l2 lines, WARN lines, ``Working memory usage``, the SUMMARY
block — identical to ncc's compile.log), then, after a line ``REPORT_HEADER``, kmodelpy's per-layer table
and one ``CPU fallback:`` line per layer kept off the KPU. ``-q`` prints nothing but errors.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from ..errors import InputError


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="float32 .tflite or .onnx model")
    p.add_argument("output", nargs="?", help="output .kmodel (default: the input's name with .kmodel)")
    p.add_argument("-i", "--input-format", default=None,
                   help="tflite or onnx (default: from the file name, .onnx = onnx, else tflite)")
    p.add_argument("-o", "--output-format", default="kmodel", help="output format (only kmodel)")
    p.add_argument("-t", "--target", default="k210", help="k210 (default) or cpu (ncc's CPU-only target: no KPU layers; the header still says K210)")
    p.add_argument("--dataset", help="calibration set: folder (recursive) or one file; required for uint8")
    add_options(p)
    p.add_argument("--max-allocator-solve-secs", type=int, default=60, metavar="N",
                   help="accepted for ncc compatibility; kmodelpy places buffers first-fit (KPU RAM largest first "
                        "where first fit overflows it)")
    p.add_argument("--kpu-ram-overflow", default="fit", metavar="fit|error",
                   help="fit (default): a model whose KPU feature maps overflow the 2 MB KPU RAM still compiles "
                        "(other buffer placement, idle tensors kept in main memory, layers run as row bands, "
                        "the CPU as the last resort; the compile output names each change and its cost); "
                        "error: fail as ncc does")
    p.add_argument("--dump-ir", action="store_true", help="write Graphviz files ir_<stage>.dot into the current folder")
    p.add_argument("--dump-weights-range", action="store_true", help="print every conv's weight range after pass 1")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing but errors (by default: ncc's output, then a per-layer table (op, CPU/KPU, "
                        "output shape, KPU bytes) and the reason every conv/FC/pool stayed on the CPU)")
    p.add_argument("--report", action="store_true",
                   help="accepted for compatibility: the per-layer report is printed by default (see -q)")
    from ..parallel import add_jobs_option

    add_jobs_option(p, "run the calibration pictures")


def add_options(p: argparse.ArgumentParser) -> None:
    """The options that decide the kmodel's numbers (``compile`` and ``compare`` share them)."""
    p.add_argument("--dataset-format", default="image", help="image (default) or raw")
    p.add_argument("--inference-type", default="uint8", help="uint8 (default) or float")
    p.add_argument("--input-type", default="default", help="default (= inference type), uint8 or float")
    p.add_argument("--input-mean", type=float, default=None, metavar="M",
                   help="dataset normalisation (x-M)/S; giving it fixes the input range to [(0-M)/S, (1-M)/S]")
    p.add_argument("--input-std", type=float, default=None, metavar="S", help="see --input-mean (default 1)")
    p.add_argument("--calibrate-method", default="no_clip",
                   help="no_clip (default) or l2 (ncc's); kmodelpy's: percentile, mse (docs/accuracy.md)")
    p.add_argument("--calibrate-percentile", type=float, default=99.99, metavar="P",
                   help="--calibrate-method percentile: clip both tails at P %% (default 99.99)")
    p.add_argument("--weights-quantize-threshold", type=float, default=64.0, metavar="T",
                   help="convs/matmuls whose weight range is wider stay float (default 64)")
    p.add_argument("--output-quantize-threshold", type=int, default=1024, metavar="N",
                   help="CPU conv/matmul/binary with fewer output elements stay float (default 1024)")
    p.add_argument("--no-quantized-binary", action="store_true", help="keep binary ops in float")
    p.add_argument("--bias-correction", action="store_true",
                   help="kmodelpy: fold each output channel's mean error (measured on the calibration set) into "
                        "its KPU batch-norm add / CPU bias")
    p.add_argument("--float-layers", metavar="NAME,...", default=None,
                   help="kmodelpy: keep these layers (source tensor names, as `kmodelpy compare` prints them) in "
                        "float on the CPU; 'auto[:MMAC]': the layers next to the input, within a budget of million "
                        "multiply-accumulates (default 4)")
    p.add_argument("--no-range-clamp", dest="range_clamp", action="store_false",
                   help="kmodelpy: keep activation ranges wider than ncc's clip to [-1000, 1000]")
    p.add_argument("--float-heads", action="store_true",
                   help="kmodelpy: keep the small convs/matmuls that feed a model output (through reshapes and "
                        "concatenations) in float on the CPU")
    p.add_argument("--fold-relu", action="store_true",
                   help="kmodelpy: a ReLU right after an add/sub/mul... becomes that op's clamp (one rounding "
                        "and one CPU op fewer)")
    p.add_argument("--equalize-activations", action="store_true",
                   help="kmodelpy: scale the channels of a conv feeding another conv (no activation between) so "
                        "each uses its tensor's uint8 range, the next conv's weights scaled back (float-exact)")
    p.add_argument("--optimize-accuracy", action="store_true",
                   help="kmodelpy: the most accurate settings measured in general in docs/accuracy.md "
                        "(--calibrate-method percentile --float-layers auto --equalize-activations --fold-relu "
                        "--float-heads --no-range-clamp)")


REPORT_HEADER = "kmodelpy layer report (not part of ncc's output):"


def ncc_args_options(argv, cwd) -> tuple:
    """(calibration set, its format, the other compile options) of an ``ncc compile`` argument list (without
    ``ncc compile``), paths relative to ``cwd`` — to redo a reference case's compile."""
    from pathlib import Path

    ap = argparse.ArgumentParser()
    configure_parser(ap)
    a = ap.parse_args(list(argv))
    opts = options_from(a)
    fmt = opts.pop("dataset_format")
    return ((Path(cwd) / a.dataset).resolve() if a.dataset else None), fmt, opts


def options_from(args) -> dict:
    """The compile options (keyword arguments of :class:`~kmodelpy.compiler.pipeline.Options`) in ``args``."""
    from . import OPTION_NAMES

    opts = {k: getattr(args, k) for k in OPTION_NAMES if hasattr(args, k) and k != "quantize_binary"}
    opts["quantize_binary"] = not args.no_quantized_binary
    return opts


def main(args) -> int:
    from ..frontends import FORMATS, source_format

    if args.input_format is not None and args.input_format not in FORMATS:
        raise InputError(f"-i {args.input_format}: kmodelpy imports {' and '.join(FORMATS)} models")
    if args.output_format != "kmodel":
        raise InputError(f"-o {args.output_format}: the only output format is kmodel")
    if args.target not in ("k210", "cpu"):
        raise InputError(f"-t {args.target}: use k210 (or cpu)")
    src = Path(args.input)
    if not src.exists():
        raise InputError(f"{src}: no such model file")
    fmt = args.input_format or source_format(src) or "tflite"
    if fmt == "tflite":
        from ..frontends.tflite.reader import check_not_other_format

        check_not_other_format(src)  # a SavedModel folder or .pb: say how to convert it
    out = Path(args.output) if args.output else src.with_suffix(".kmodel")
    from . import write_atomic
    from .pipeline import Options, run_pipeline

    opts = Options(dataset=args.dataset, **options_from(args))
    result = run_pipeline(src, opts, io.StringIO() if args.quiet else sys.stdout, fmt)
    write_atomic(out, result.kmodel)
    if not args.quiet:
        from .report import full_report

        print()
        print(REPORT_HEADER)
        print(full_report(result.llir, result.schedule, opts.weights_quantize_threshold,
                          opts.output_quantize_threshold, result.kpu_fit))
    sys.stdout.flush()
    return 0
