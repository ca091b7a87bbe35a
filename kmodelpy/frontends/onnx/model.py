"""``kmodelpy.load("model.onnx")``: the float reference of an ONNX model (a
:class:`kmodelpy.frontends.float_model.FloatModel`): imported to HLIR as the compiler sees it
(:mod:`kmodelpy.frontends.onnx.importer`) and evaluated in float32 by :mod:`kmodelpy.ir.evaluate`. Inputs and
outputs are NCHW, as in ONNX; ``kmodelpy run``/``infer`` on an .onnx write the same .bin layout as for a kmodel."""
from __future__ import annotations

from ..float_model import FloatModel


class OnnxModel(FloatModel):
    """An ONNX model evaluated in float32."""

    def __init__(self, path):
        from .importer import import_onnx
        from .reader import read_onnx

        self.onnx = read_onnx(path)
        super().__init__(path, import_onnx(self.onnx))


def load_onnx(path) -> OnnxModel:
    """Load an ONNX model for float reference evaluation (see :class:`OnnxModel`)."""
    return OnnxModel(path)
