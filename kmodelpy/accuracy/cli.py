"""``kmodelpy compare model.tflite --dataset DIR [compile options]``: the per-layer accuracy report
(:mod:`kmodelpy.accuracy`)."""
from __future__ import annotations

import argparse
import sys


def configure_parser(p: argparse.ArgumentParser) -> None:
    from ..compiler.cli import add_options

    p.add_argument("model", help="the float source model (.tflite or .onnx)")
    p.add_argument("--dataset", required=True, metavar="DIR",
                   help="pictures to compare on (a folder, walked recursively, or one file); also the calibration "
                        "set unless --calibration-dataset is given")
    p.add_argument("--calibration-dataset", metavar="DIR", help="calibration set of the compile (default: --dataset)")
    p.add_argument("--kmodel", metavar="K", help="compare this kmodel instead of compiling one (layer by layer when "
                   "kmodelpy wrote it from this model with the same options, else the outputs only)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N pictures (sorted by path)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the per-layer SNR (needs matplotlib: kmodelpy[plot])")
    add_options(p)
    from ..parallel import add_jobs_option

    add_jobs_option(p, "run the calibration and the compared pictures")


def main(args) -> int:
    from ..compiler.cli import options_from
    from . import compare

    if args.plot:  # fail before the long run when matplotlib is missing
        _need_matplotlib()
    options = options_from(args)
    fmt = options.pop("dataset_format")
    report = compare(args.model, args.dataset, kmodel=args.kmodel, calibration_dataset=args.calibration_dataset,
                     dataset_format=fmt, limit=args.limit, **options)
    print(report.text())
    if args.json:
        report.write_json(args.json)
    if args.plot:
        report.plot(args.plot)
    sys.stdout.flush()
    return 0


def _need_matplotlib() -> None:
    from ..errors import InputError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install 'kmodelpy[plot]' (or pip install matplotlib)") from None
