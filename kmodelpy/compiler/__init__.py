"""The compiler: float TFLite → kmodel v4, reproducing ``ncc compile`` (nncase v0.2.0-beta4).

``compile_model(tflite_path, dataset=..., output=None, **options)`` is what :func:`kmodelpy.compile`
calls; the stages live in :mod:`kmodelpy.compiler.pipeline`, the rewrite engine in
:mod:`kmodelpy.compiler.rewrite`, the transforms in :mod:`kmodelpy.compiler.transforms`.
"""
from __future__ import annotations

import io
import sys

from ..errors import InputError

OPTION_NAMES = ("dataset_format", "inference_type", "input_type", "input_mean", "input_std", "calibrate_method",
                "weights_quantize_threshold", "output_quantize_threshold", "quantize_binary",
                "max_allocator_solve_secs", "dump_ir", "dump_weights_range", "target", "kpu_ram_overflow", "jobs",
                "calibrate_percentile", "bias_correction", "float_layers", "optimize_accuracy",
                "equalize_activations", "range_clamp", "fold_relu", "float_heads")


def compile_model(tflite_path, dataset=None, output=None, verbose: bool = False, **options):
    """Compile ``tflite_path``. Returns the kmodel bytes, or the output path when ``output`` is given
    (written atomically: nothing is left behind on failure). Options are ncc's with underscores;
    ``no_quantized_binary=True`` is accepted for ``quantize_binary=False``."""
    from .pipeline import Options, run_pipeline

    if options.pop("no_quantized_binary", False):
        options["quantize_binary"] = False
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise InputError(f"unknown compile option(s): {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}")
    opts = Options(dataset=None if dataset is None else str(dataset), **options)
    out = sys.stdout if verbose else io.StringIO()
    result = run_pipeline(tflite_path, opts, out)
    if output is None:
        return result.kmodel
    write_atomic(output, result.kmodel)
    return str(output)


def write_atomic(path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename it into place (:mod:`kmodelpy.files`)."""
    from ..files import write_atomic as write

    write(path, data)
