"""The float reference model behind ``kmodelpy.load("model.<source>")``: an imported HLIR graph evaluated in
float32 by :mod:`kmodelpy.ir.evaluate`, with the interface of a loaded kmodel (:class:`kmodelpy.runtime.Model`):
NCHW 4-D input and outputs, float32, outputs in the graph's output order. Each front end subclasses it
(:class:`kmodelpy.frontends.tflite.model.TFLiteModel`, :class:`kmodelpy.frontends.onnx.model.OnnxModel`)."""
from __future__ import annotations

import numpy as np

from ..errors import InputError


class FloatModel:
    """A source model evaluated in float32 (see module doc). Subclasses may give some nodes their front end's own
    arithmetic (TFLite's interpreter) through :meth:`evaluators`."""

    def __init__(self, path, graph):
        self.path = str(path)
        self.graph = graph
        self._overrides: dict | None = None
        self._last: list[np.ndarray] | None = None

    def evaluators(self) -> dict:
        """node -> ``fn(node, args)`` evaluated instead of the node's op evaluator (none by default)."""
        return {}

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

    def run(self, x=None, *more, on_output=None) -> list[np.ndarray]:
        """Evaluate one input (CHW or NCHW for a 4-D input; float32). Extra inputs of a multi-input
        model follow in order (a model without inputs takes none). Returns float32 outputs (4-D as NCHW).
        ``on_output(connector, value)`` sees every node's outputs (:func:`kmodelpy.ir.evaluate.evaluate`)."""
        from ..ir.evaluate import evaluate

        feeds = []
        given = () if x is None and not more else (x,) + more
        for node, v in zip(self.graph.inputs, given):
            shape = list(node.output.shape)
            v = np.asarray(v)
            if v.dtype.kind not in "fiu":
                raise InputError(f"{self.path}: input '{node.name}' must be numeric, got {v.dtype}")
            if v.size != int(np.prod(shape)):
                raise InputError(f"{self.path}: input '{node.name}' has shape {list(v.shape)} but the model wants "
                                 f"{'x'.join(map(str, shape))} (NCHW, float32)")
            feeds.append(np.ascontiguousarray(v, dtype=np.float32).reshape(shape))
        if len(given) != len(self.graph.inputs):
            raise InputError(f"{self.path}: the model has {len(self.graph.inputs)} inputs, {len(given)} given")
        if self._overrides is None:
            self._overrides = self.evaluators()
        outs = evaluate(self.graph, feeds, on_output=on_output, overrides=self._overrides)
        self._last = [np.ascontiguousarray(o, dtype=np.float32) for o in outs]
        return [o.copy() for o in self._last]

    def output_bytes(self) -> bytes:
        """The last run's outputs, float32, concatenated in output order (``ncc infer``'s .bin layout)."""
        if self._last is None:
            raise InputError(f"{self.path}: run() the model before reading its outputs")
        return b"".join(o.tobytes() for o in self._last)
