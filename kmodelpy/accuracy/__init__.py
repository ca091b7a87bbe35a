"""``kmodelpy compare``: where does the kmodel lose accuracy against the float model, layer by layer?

::

    report = kmodelpy.compare("model.tflite", "pictures/", input_mean=0.5, input_std=0.5)
    print(report.text())

compiles the model (compile options as for :func:`kmodelpy.compile`; the calibration set is ``dataset``
unless ``calibration_dataset`` is given), or takes ``kmodel=`` — a kmodel kmodelpy compiled from this
model with the same options (checked: a fresh compile must give the same bytes) —, then runs the float
model and the emulated kmodel side by side on every picture of ``dataset``. Every source tensor is
matched by construction: the compiler knows which kmodel buffer holds it (:mod:`kmodelpy.compiler.tensor_map`).
A kmodel that kmodelpy did not write from this model (ncc's, other options) is compared on its outputs only.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .report import Report, find_jump, find_largest, layer_rows, output_rows


def compare(model, dataset, kmodel=None, calibration_dataset=None, dataset_format: str = "image",
            limit: int | None = None, calibration_format: str | None = None, **options) -> Report:
    """Compare ``model`` (a source model: .tflite, ...) with its kmodel on the pictures of ``dataset``
    (a folder or a file, read like ``ncc infer`` does, in ``dataset_format``; the calibration set is read in
    ``calibration_format``, by default the same). Returns a :class:`~kmodelpy.accuracy.report.Report`."""
    from .. import images
    from ..compiler.pipeline import Options
    from ..frontends import load_float, source_format
    from .measure import PictureStats, Session

    model = Path(model)
    if source_format(model) is None:
        raise InputError(f"{model}: compare needs the source model (e.g. a .tflite), not a kmodel; pass the kmodel "
                         "with --kmodel")
    if not model.exists():
        raise InputError(f"{model}: no such model file")
    options = _compile_options(options)
    pictures = images.list_dataset(dataset, dataset_format)[: None if limit is None else max(0, int(limit))]
    if not pictures:
        raise InputError(f"{dataset}: no pictures to compare on")
    float_model = load_float(model)
    if len(float_model.graph.inputs) != 1:
        raise InputError(f"{model}: compare feeds one model input, this model has {len(float_model.graph.inputs)}")
    given = _given_kmodel(kmodel)
    if given is not None:
        _check_input(model, float_model, given[1], kmodel)
    opts = Options(dataset=str(calibration_dataset or dataset), dataset_format=calibration_format or dataset_format,
                   **options)
    m = _match(model, opts, given, kmodel)
    if given is None:  # a given kmodel was checked above, before compiling
        _check_input(model, float_model, m.kmodel, m.name)
    from ..parallel import free_cores, map_ordered
    from ..runtime import Model

    def worker():  # a kmodel of its own per thread (op objects hold work arrays); the float model is shared
        return Session(float_model, Model.from_bytes(m.data, m.name or "kmodel"), m.taps, dataset_format, opts.mean,
                       opts.std)

    total = PictureStats()
    for stats in map_ordered(lambda session, path: session.measure(path), pictures, opts.jobs or free_cores(), worker):
        total.merge(stats)
    graph = float_model.graph
    defaults = Options()
    shown = {k: _shown(v) for k, v in options.items() if v != getattr(defaults, k, None)}
    report = Report(str(model), m.name, shown, total.pictures, str(dataset), "layers" if m.taps else "outputs",
                    m.reason, picture_names=[str(p) for p in pictures])
    if m.taps:
        report.layers = layer_rows(getattr(graph, "source_layers", []), m.taps, m.merged, total)
        by_key = {r.key: r for r in report.layers}
        out_snrs = [by_key[n.name].snr_db for n in graph.outputs if n.name in by_key and by_key[n.name].mapped]
        out_snr = min(out_snrs) if out_snrs else None
        report.jump = find_jump(report.layers, out_snr)
        report.largest = find_largest(report.layers, report.jump, out_snr)
    report.outputs = output_rows([n.name for n in graph.outputs], [n.inputs[0].shape for n in graph.outputs], total)
    return report


@dataclass
class _Matched:
    kmodel: object  # the emulated kmodel (kmodelpy.runtime.Model)
    data: bytes  # its bytes
    taps: dict  # source key -> Tap (empty: outputs only)
    merged: dict  # source key -> the key whose buffer computes it too
    name: str | None  # the kmodel file, None when compiled here
    reason: str  # why outputs only


def _compile_options(options: dict) -> dict:
    from ..compiler import OPTION_NAMES

    unknown = sorted(set(options) - set(OPTION_NAMES) - {"no_quantized_binary"})
    if unknown:
        raise InputError(f"unknown compile option(s): {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}")
    options = dict(options)
    if options.pop("no_quantized_binary", False):
        options["quantize_binary"] = False
    return options


def _given_kmodel(kmodel):
    """(bytes, emulator) of a kmodel file the user gave, or None."""
    if kmodel is None:
        return None
    from ..errors import read_user_file
    from ..runtime import Model

    data = read_user_file(kmodel, "a .kmodel file")
    return data, Model.from_bytes(data, str(kmodel))


def _match(model: Path, opts, given, kmodel) -> _Matched:
    """Compile ``model``; its tensor map is valid for the given kmodel only if the bytes are the same."""
    from ..compiler.pipeline import run_pipeline
    from ..compiler.tensor_map import merged_layers, tensor_map
    from ..runtime import Model

    result = run_pipeline(model, opts, io.StringIO())
    taps, merged, reason = {}, {}, f"the {model.suffix} front end does not tag its tensors"
    if getattr(result.graph, "source_layers", None):
        taps, merged, reason = tensor_map(result.llir, result.schedule), merged_layers(result.llir), ""
    if given is None:
        return _Matched(Model.from_bytes(result.kmodel, "kmodel"), result.kmodel, taps, merged, None, reason)
    if given[0] != result.kmodel:
        taps, merged = {}, {}
        reason = (f"{kmodel} is not what kmodelpy compiles from {model.name} with these options (ncc's kmodel, "
                  "other options or another calibration set): its buffers cannot be matched to the model's tensors")
    return _Matched(given[1], given[0], taps, merged, str(kmodel), reason)


def _check_input(model, float_model, kmodel, name) -> None:
    import numpy as np

    fshape = list(float_model.graph.inputs[0].output.shape)
    kshape = list(kmodel.input_shape)
    if int(np.prod(fshape)) != int(np.prod(kshape)) or fshape[-2:] != kshape[-2:]:
        raise InputError(f"{name or 'the kmodel'}: its input is {'x'.join(map(str, kshape))} but {model} wants "
                         f"{'x'.join(map(str, fshape))} (NCHW): it was not compiled from this model")


def _shown(v):
    """Option values for the report header: layer lists by their short names."""
    from ..compiler.float_layers import parse_names
    from .report import short_name

    if isinstance(v, (list, tuple)) or (isinstance(v, str) and "," in v):
        return ",".join(short_name(n) for n in parse_names(v))
    return v
