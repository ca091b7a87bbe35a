"""Model front ends: each reads one source format into the same HLIR graph (:mod:`kmodelpy.ir`), which the
float evaluator runs and the compiler lowers to a kmodel. One sub-package per format holds all of it (reader,
importer, constant folding, the float model behind ``kmodelpy.load``):

* :mod:`kmodelpy.frontends.tflite` — float TFLite (what ncc's ``-i tflite`` reads).

The functions here dispatch on the file: :func:`source_format`, :func:`import_graph`, :func:`load_float`.
"""
from __future__ import annotations

from pathlib import Path

from . import tflite


def source_format(path) -> str | None:
    """"tflite" for a .tflite and for what people pass instead of one (a Keras .h5, a SavedModel folder or .pb:
    the TFLite reader says how to convert those); None for anything else (a kmodel)."""
    p = Path(path)
    if p.suffix.lower() in tflite.SUFFIXES or p.is_dir():
        return "tflite"
    return None


def import_graph(path):
    """The HLIR graph of a source model, as ncc's importer for its format builds it."""
    return tflite.import_tflite(path)


def load_float(path, **options):
    """The float reference model of a source file (``kmodelpy.load`` on a .tflite)."""
    return tflite.load_tflite(path, **options)
