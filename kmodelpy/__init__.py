"""kmodelpy: compile TFLite and ONNX models for the Kendryte K210 KPU and emulate kmodel v4 (and v3) bit for bit.

    import kmodelpy
    model = kmodelpy.load("model.kmodel")      # or a .tflite / .onnx (float reference evaluation)
    outputs = model.run(chw_array)              # list of numpy arrays

Importing kmodelpy is cheap: numba and the op kernels load on first use.
"""
from .errors import KmodelpyError  # noqa: F401

__version__ = "0.1.0"


def is_source_path(path) -> bool:
    """True for a source model (a .tflite or .onnx, or what people pass instead of one) rather than a kmodel."""
    from .frontends import source_format

    return source_format(path) is not None


def load(path, member=None):
    """Load a ``.kmodel`` (v4: bit-exact like ``ncc infer``; v3: like the K210 SDK, told apart by the
    file itself), a ``.kfpkg`` (``member``: the name or flash address of its kmodel, needed when it
    holds several) or a source model, ``.tflite`` or ``.onnx`` (float evaluator)."""
    from .errors import InputError

    if is_source_path(path):
        if member is not None:
            raise InputError(f"{path}: --member is for .kfpkg files")
        from .frontends import load_float

        return load_float(path)
    from .kfpkg import is_kfpkg

    if is_kfpkg(path):
        from .kfpkg import load as load_kfpkg

        return load_kfpkg(path, member)
    if member is not None:
        raise InputError(f"{path}: --member is for .kfpkg files")
    from .runtime import load_kmodel

    return load_kmodel(path)


def compile(tflite_path, dataset=None, output=None, **options):  # noqa: A001 - mirrors `ncc compile`
    """Compile a float TFLite or ONNX model to kmodel v4. Returns the kmodel bytes, or the output path when
    ``output`` is given. Options are ncc's, with underscores (``input_mean=0.5``...)."""
    from .compiler import compile_model

    return compile_model(tflite_path, dataset=dataset, output=output, **options)


def compare(model, dataset, kmodel=None, **options):
    """Run the float model and its kmodel side by side on the pictures of ``dataset``, layer by layer.
    Returns a report (``.text()``, ``.to_dict()``, ``.layers``, ``.outputs``); see :mod:`kmodelpy.accuracy`."""
    from .accuracy import compare as run

    return run(model, dataset, kmodel=kmodel, **options)
