"""kmodelpy: compile TFLite models for the Kendryte K210 KPU and emulate kmodel v4 bit for bit.

    import kmodelpy
    model = kmodelpy.load("model.kmodel")      # or a .tflite (float reference evaluation)
    outputs = model.run(chw_array)              # list of numpy arrays

Importing kmodelpy is cheap: numba and the op kernels load on first use.
"""
from .errors import KmodelpyError  # noqa: F401

__version__ = "0.1.0"


def is_tflite_path(path) -> bool:
    """True for a .tflite and for what people pass instead of one (a Keras .h5, a SavedModel folder or
    .pb): the TFLite reader handles those and says how to convert them."""
    from pathlib import Path

    p = Path(path)
    return p.suffix.lower() in (".tflite", ".h5", ".hdf5", ".keras", ".pb") or p.is_dir()


def load(path):
    """Load a ``.kmodel`` (bit-exact emulator) or a ``.tflite`` (float evaluator)."""
    if is_tflite_path(path):
        from .tflite_model import load_tflite

        return load_tflite(path)
    from .runtime import load_kmodel

    return load_kmodel(path)


def compile(tflite_path, dataset=None, output=None, **options):  # noqa: A001 - mirrors `ncc compile`
    """Compile a float TFLite model to kmodel v4. Returns the kmodel bytes, or the output path when
    ``output`` is given. Options are ncc's, with underscores (``input_mean=0.5``...)."""
    from .compiler import compile_model

    return compile_model(tflite_path, dataset=dataset, output=output, **options)
