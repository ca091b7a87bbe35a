"""``kmodelpy.load("model.tflite")``: the float reference of a TFLite model (a
:class:`kmodelpy.frontends.float_model.FloatModel`): NCHW 4-D input and outputs, float32, outputs in
ncc's kmodel output order (the subgraph's declared outputs).

The model is imported to HLIR exactly as ncc does (:mod:`kmodelpy.frontends.tflite.importer`) and evaluated by
the float evaluator (:mod:`kmodelpy.ir.evaluate`) with TFLite's own arithmetic where it matters
(``arithmetic="tflite"``, the default, :mod:`kmodelpy.frontends.tflite.xnnpack`): convolutions
in XNNPACK's fused-multiply-add order, bilinear resizes, average pools, HARD_SWISH and LOGISTIC as XNNPACK computes
them, and a dynamic-range model (int8 conv/depthwise weights, float activations) with the hybrid kernels that
quantize activations at run time; ``load_tflite(path, hybrid=False)`` evaluates its dequantized weights in float
instead. Deep models amplify last-bit differences (a real-world segmentation model drifted 1e-3 of its output
range from LiteRT with ncc's arithmetic; it matches to the bit with TFLite's). ``arithmetic="ncc"`` evaluates every node with ncc's evaluator, bit for bit what
``ncc infer`` gives for a ``--inference-type float`` kmodel. ``kmodelpy run``/``infer`` on a .tflite write the
same .bin layout as for a kmodel: outputs concatenated, float32, NCHW.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from ..float_model import FloatModel


class TFLiteModel(FloatModel):
    """A TFLite model evaluated in float32 (see module doc)."""

    def __init__(self, path, hybrid: bool | None = None, arithmetic: str = "tflite"):
        from .reader import read_tflite
        from .hybrid import is_dynamic_range
        from .importer import import_tflite

        self.tflite = read_tflite(path)
        graph = import_tflite(self.tflite)
        origins = getattr(graph, "conv_origins", None)
        #: True when convolutions run TFLite's dynamic-range arithmetic (default: when the model has int8 weights)
        self.hybrid = is_dynamic_range(origins) if hybrid is None else bool(hybrid) and is_dynamic_range(origins)
        if arithmetic not in ("tflite", "ncc"):
            raise InputError(f"arithmetic={arithmetic!r}: use 'tflite' or 'ncc'")
        #: "tflite" (TFLite's interpreter's arithmetic where it differs) or "ncc" (ncc's float evaluator)
        self.arithmetic = arithmetic
        super().__init__(path, graph)

    def evaluators(self) -> dict:
        from .xnnpack import tflite_evaluators

        return tflite_evaluators(self.graph, self.hybrid) if self.arithmetic == "tflite" else {}


def load_tflite(path, hybrid: bool | None = None, arithmetic: str = "tflite") -> TFLiteModel:
    """Load a float TFLite model for float reference evaluation (see :class:`TFLiteModel`).
    ``hybrid``: evaluate a dynamic-range model like TFLite (default ``None``: when it has int8
    conv weights); ``False``: float with the dequantized weights. ``arithmetic``: "tflite" (default) or
    "ncc" (ncc's evaluator for every node)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    return TFLiteModel(p, hybrid=hybrid, arithmetic=arithmetic)
