"""``kmodelpy.load("model.tflite")``: the float reference of a TFLite model, with the interface of a
loaded kmodel (:class:`kmodelpy.runtime.Model`): NCHW 4-D input and outputs, float32, outputs in
ncc's kmodel output order (the subgraph's declared outputs).

The model is imported to HLIR exactly as ncc does (:mod:`kmodelpy.frontends.tflite.importer`) and evaluated by
the float evaluator (:mod:`kmodelpy.ir.evaluate`) with TFLite's own arithmetic where it matters
(``arithmetic="tflite"``, the default, :mod:`kmodelpy.frontends.tflite.xnnpack`): convolutions
in XNNPACK's fused-multiply-add order, global mean pools and MEAN/SUM with exact sums, and a dynamic-range model
(int8 conv/depthwise weights, float activations) with the hybrid kernels that quantize activations at run time;
``load_tflite(path, hybrid=False)`` evaluates its dequantized weights in float instead. Deep models amplify
last-bit differences (a real-world segmentation model drifted 1e-3 of its output range from LiteRT with ncc's
arithmetic, 4e-5 with TFLite's). ``arithmetic="ncc"`` evaluates every node with ncc's evaluator, bit for bit what
``ncc infer`` gives for a ``--inference-type float`` kmodel. ``kmodelpy run``/``infer`` on a .tflite write the
same .bin layout as for a kmodel: outputs concatenated, float32, NCHW.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InputError


class TFLiteModel:
    """A TFLite model evaluated in float32 (see module doc)."""

    def __init__(self, path, hybrid: bool | None = None, arithmetic: str = "tflite"):
        from .reader import read_tflite
        from .hybrid import is_dynamic_range
        from .importer import import_tflite

        self.path = str(path)
        self.tflite = read_tflite(path)
        self.graph = import_tflite(self.tflite)
        origins = getattr(self.graph, "conv_origins", None)
        #: True when convolutions run TFLite's dynamic-range arithmetic (default: when the model has int8 weights)
        self.hybrid = is_dynamic_range(origins) if hybrid is None else bool(hybrid) and is_dynamic_range(origins)
        if arithmetic not in ("tflite", "ncc"):
            raise InputError(f"arithmetic={arithmetic!r}: use 'tflite' or 'ncc'")
        #: "tflite" (TFLite's interpreter's arithmetic where it differs) or "ncc" (ncc's float evaluator)
        self.arithmetic = arithmetic
        self._overrides = None
        self._last: list[np.ndarray] | None = None

    @property
    def input_shape(self) -> list[int]:
        return list(self.graph.inputs[0].output.shape)

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def input_names(self) -> list[str]:
        return [n.name for n in self.graph.inputs]

    @property
    def output_names(self) -> list[str]:
        return [n.name for n in self.graph.outputs]

    def output_shapes(self) -> list[list[int]]:
        return [list(n.input.shape) for n in self.graph.outputs]

    def run(self, x, *more) -> list[np.ndarray]:
        """Evaluate one input (CHW or NCHW for a 4-D input; float32). Extra inputs of a multi-input
        model follow in order. Returns float32 outputs (4-D as NCHW)."""
        from ...ir.evaluate import evaluate

        feeds = []
        for node, v in zip(self.graph.inputs, (x,) + more):
            shape = list(node.output.shape)
            v = np.asarray(v)
            if v.dtype.kind not in "fiu":
                raise InputError(f"{self.path}: input '{node.name}' must be numeric, got {v.dtype}")
            if v.size != int(np.prod(shape)):
                raise InputError(f"{self.path}: input '{node.name}' has shape {list(v.shape)} but the model wants "
                                 f"{'x'.join(map(str, shape))} (NCHW, float32)")
            feeds.append(np.ascontiguousarray(v, dtype=np.float32).reshape(shape))
        if len(feeds) != len(self.graph.inputs):
            raise InputError(f"{self.path}: the model has {len(self.graph.inputs)} inputs, {len(feeds)} given")
        if self._overrides is None:
            from .xnnpack import tflite_evaluators

            self._overrides = tflite_evaluators(self.graph, self.hybrid) if self.arithmetic == "tflite" else {}
        outs = evaluate(self.graph, feeds, overrides=self._overrides)
        self._last = [np.ascontiguousarray(o, dtype=np.float32) for o in outs]
        return [o.copy() for o in self._last]

    def output_bytes(self) -> bytes:
        """The last run's outputs, float32, concatenated in output order (``ncc infer``'s .bin layout)."""
        if self._last is None:
            raise InputError(f"{self.path}: run() the model before reading its outputs")
        return b"".join(o.tobytes() for o in self._last)


def load_tflite(path, hybrid: bool | None = None, arithmetic: str = "tflite") -> TFLiteModel:
    """Load a float TFLite model for float reference evaluation (see :class:`TFLiteModel`).
    ``hybrid``: evaluate a dynamic-range model like TFLite (default ``None``: when it has int8
    conv weights); ``False``: float with the dequantized weights. ``arithmetic``: "tflite" (default) or
    "ncc" (ncc's evaluator for every node)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    return TFLiteModel(p, hybrid=hybrid, arithmetic=arithmetic)
