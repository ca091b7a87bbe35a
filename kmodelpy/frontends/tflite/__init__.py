"""The TFLite front end: the flatbuffer reader (:mod:`.reader`), the importer into the HLIR graph exactly as
ncc v0.2 builds it (:mod:`.importer`, with its constant folding in :mod:`.fold`), TFLite's dynamic-range
arithmetic for the float reference (:mod:`.hybrid`) and the float model behind ``kmodelpy.load("x.tflite")``
(:mod:`.model`). Submodules load on use: importing this package is cheap."""

SUFFIXES = (".tflite", ".h5", ".hdf5", ".keras", ".pb")


def import_tflite(src, ncc_exact: bool = False):
    from .importer import import_tflite as _imp

    return _imp(src, ncc_exact)


def load_tflite(path, hybrid=None, arithmetic="tflite"):
    from .model import load_tflite as _load

    return _load(path, hybrid=hybrid, arithmetic=arithmetic)
