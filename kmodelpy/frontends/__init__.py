"""Model front ends: each reads one source format into the same HLIR graph (:mod:`kmodelpy.ir`), which the
float evaluator runs and the compiler lowers to a kmodel. One sub-package per format holds all of it (reader,
importer, constant folding, the float model behind ``kmodelpy.load``):

* :mod:`kmodelpy.frontends.tflite` — float TFLite (what ncc's ``-i tflite`` reads);
* :mod:`kmodelpy.frontends.onnx` — ONNX (what ncc's ``-i onnx`` reads).

The functions here dispatch on the file: :func:`source_format`, :func:`import_graph`, :func:`load_float`.
"""
from __future__ import annotations

from pathlib import Path

from . import onnx, tflite

FORMATS = ("tflite", "onnx")


def source_format(path) -> str | None:
    """"onnx" for an .onnx; "tflite" for a .tflite and for what people pass instead of one (a Keras .h5, a
    SavedModel folder or .pb: the TFLite reader says how to convert those); None for anything else (a kmodel)."""
    p = Path(path)
    if p.suffix.lower() in onnx.SUFFIXES:
        return "onnx"
    if p.suffix.lower() in tflite.SUFFIXES or p.is_dir():
        return "tflite"
    return None


def import_graph(path, fmt: str | None = None):
    """The HLIR graph of a source model, as ncc's importer for its format builds it (``fmt``: "tflite" or
    "onnx"; by default from the file name)."""
    if (fmt or source_format(path)) == "onnx":
        return onnx.import_onnx(path)
    return tflite.import_tflite(path)


def source_model(path):
    """The front-end-neutral layer view of a source model (:class:`kmodelpy.frontends.source.SourceModel`, for
    the fit report): a path, or a parsed ``TFLiteFile`` / ``OnnxFile``."""
    from .onnx.reader import OnnxFile

    if isinstance(path, OnnxFile) or (not hasattr(path, "operators") and source_format(path) == "onnx"):
        from .onnx.source import source_model as onnx_source

        return onnx_source(path)
    from .tflite.source import source_model as tflite_source

    return tflite_source(path)


def load_float(path, **options):
    """The float reference model of a source file (``kmodelpy.load`` on a .tflite or an .onnx)."""
    if source_format(path) == "onnx":
        return onnx.load_onnx(path, **options)
    return tflite.load_tflite(path, **options)
