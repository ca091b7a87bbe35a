"""``kmodelpy.load("model.tflite")``: the float reference of a TFLite model (a
:class:`kmodelpy.frontends.float_model.FloatModel`): NCHW 4-D input and outputs, float32, outputs in
ncc's kmodel output order (the subgraph's declared outputs).

The model is imported to HLIR exactly as ncc does (:mod:`kmodelpy.frontends.tflite.importer`) and evaluated by
the float evaluator (:mod:`kmodelpy.ir.evaluate`, ncc's f32 arithmetic). A dynamic-range model (int8
conv/depthwise weights, float activations) is evaluated by default the way TFLite's interpreter
runs it (hybrid kernels that quantize activations at run time, :mod:`kmodelpy.frontends.tflite.hybrid`);
``load_tflite(path, hybrid=False)`` evaluates its dequantized weights in plain float instead. ``kmodelpy run``/``infer``
on a .tflite write the same .bin layout as for a kmodel: outputs concatenated, float32, NCHW.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from ..float_model import FloatModel


class TFLiteModel(FloatModel):
    """A TFLite model evaluated in float32 (see module doc)."""

    def __init__(self, path, hybrid: bool | None = None):
        from .reader import read_tflite
        from .hybrid import is_dynamic_range
        from .importer import import_tflite

        self.tflite = read_tflite(path)
        graph = import_tflite(self.tflite)
        origins = getattr(graph, "conv_origins", None)
        #: True when convolutions run TFLite's dynamic-range arithmetic (default: when the model has int8 weights)
        self.hybrid = is_dynamic_range(origins) if hybrid is None else bool(hybrid) and is_dynamic_range(origins)
        super().__init__(path, graph, graph.conv_origins if self.hybrid else None)


def load_tflite(path, hybrid: bool | None = None) -> TFLiteModel:
    """Load a float TFLite model for float reference evaluation (see :class:`TFLiteModel`).
    ``hybrid``: evaluate a dynamic-range model like TFLite (default ``None``: when it has int8
    conv weights); ``False``: plain float with the dequantized weights."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    return TFLiteModel(p, hybrid=hybrid)
