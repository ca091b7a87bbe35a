"""kmodel v3 (nncase v0.1, the K210 SDK's own runtime): read, write, run and describe it.

* :mod:`.kmodel` — the container (header, outputs, layer headers, bodies), byte-exact round trips;
* :mod:`.layer` — the layer contract and type registry; one module per layer type (or pair):
  :mod:`.add`, :mod:`.global_average_pool2d`, :mod:`.pool2d`, :mod:`.quantize`, :mod:`.dequantize`,
  :mod:`.requantize`, :mod:`.l2_normalization`, :mod:`.softmax`, :mod:`.logistic`, :mod:`.concat`,
  :mod:`.fully_connected`, :mod:`.flatten`, :mod:`.resize`, :mod:`.k210_conv`, :mod:`.k210_padding`,
  :mod:`.k210_upload`;
* :mod:`.model` — the runner behind ``kmodelpy.load`` (same interface as kmodel v4's);
* :mod:`.inspect` — ``kmodelpy inspect`` for v3.

The arithmetic is the SDK's ``kpu.c`` as the K210 build executes it (kmodel v3 runtime spec).
"""
from .kmodel import KModelV3, is_kmodel_v3  # noqa: F401
