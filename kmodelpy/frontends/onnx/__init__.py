"""The ONNX front end: the reader (:mod:`.reader`, the ``onnx`` package + ``onnx.checker``), the importer into
the HLIR graph as ncc v0.2's ``-i onnx`` builds it where ncc is right (:mod:`.importer`, with the constant and
shape sub-graph folding in :mod:`.fold`) and the float model behind
``kmodelpy.load("x.onnx")`` (:mod:`.model`). Submodules (and the ``onnx`` package) load on use."""

SUFFIXES = (".onnx",)


def import_onnx(src):
    from .importer import import_onnx as _imp

    return _imp(src)


def load_onnx(path):
    from .model import load_onnx as _load

    return _load(path)
