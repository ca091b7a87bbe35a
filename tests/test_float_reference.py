"""The float evaluator of a .tflite / .onnx (kmodelpy.load("model.tflite")) against TFLite's own float32
outputs (reference/ncc_outputs/cases/*/float/X.npz, NHWC) and onnxruntime's (NCHW) on the same pictures."""
from __future__ import annotations

import numpy as np
import pytest

import kmodelpy
from refcases import CASES, case_json, cases_with, float_ref, inputs

FLOAT_CASES = [c for c in cases_with("float") if (CASES / c / "model.tflite").exists()]
ONNX_FLOAT_CASES = cases_with("model.onnx")


def source_model(case: str):
    """The case's model file: model.tflite or model.onnx."""
    p = CASES / case / "model.tflite"
    return p if p.exists() else CASES / case / "model.onnx"


def _arg(args: list[str], flag: str):
    return float(args[args.index(flag) + 1]) if flag in args else None


def model_input(case: str, path, shape) -> np.ndarray:
    """The float tensor TFLite was fed (reference README): uint8 planes → f32(v)·f32(1/255), then
    (x − mean)/std when the case passes --input-mean/--input-std; float inputs are stored as is."""
    j = case_json(case)
    raw = path.read_bytes()
    if j.get("input_dtype", "u8") == "u8":  # refused cases have no kmodel, hence no input_dtype: uint8 pictures
        x = np.frombuffer(raw, np.uint8).astype(np.float32) * np.float32(1.0 / 255.0)
        args = j["ncc_args"]
        mean, std = _arg(args, "--input-mean"), _arg(args, "--input-std")
        if mean is not None or std is not None:
            x = (x - np.float32(mean or 0.0)) / np.float32(1.0 if std is None else std)
    else:
        x = np.frombuffer(raw, "<f4").astype(np.float32)
    return x.reshape(shape)


def _compare(case: str, hybrid=None):
    """Largest error of each output over the case's pictures, and the output's range (over all
    pictures: a scalar output's range is its spread over the test set)."""
    from kmodelpy.frontends.tflite.model import load_tflite

    onnx = source_model(case).suffix == ".onnx"
    model = kmodelpy.load(source_model(case)) if onnx else load_tflite(CASES / case / "model.tflite", hybrid=hybrid)
    files = inputs(case)
    assert files, case
    errs, lo, hi = {}, {}, {}
    for path in files:
        ours = model.run(model_input(case, path, model.input_shape))
        refs = float_ref(case, path.stem)
        assert len(ours) == len(refs)
        for k, (y, r) in enumerate(zip(ours, refs)):
            r = np.asarray(r, np.float32)
            if r.ndim == 4 and not onnx:
                r = r.transpose(0, 3, 1, 2)  # TFLite NHWC -> kmodel NCHW (onnxruntime's are NCHW already)
            assert y.shape == r.shape, (case, path.stem, k)
            errs[k] = max(errs.get(k, 0.0), float(np.abs(y.astype(np.float64) - r).max()))
            lo[k] = min(lo.get(k, np.inf), float(r.min()))
            hi[k] = max(hi.get(k, -np.inf), float(r.max()))
    return [(errs[k], (hi[k] - lo[k]) or 1.0) for k in sorted(errs)]


# A dynamic-range model (line_follower_kpu_dynrange) is evaluated like TFLite runs it: hybrid kernels
# that quantize the activations at run time (kmodelpy.frontends.tflite.hybrid), so it matches to 1e-5 as well.
@pytest.mark.parametrize("case", FLOAT_CASES)
def test_matches_tflite_float(case):
    for k, (err, span) in enumerate(_compare(case)):
        assert err <= 1e-5 * span, f"{case} output {k}: max error {err:g}, range {span:g}"


@pytest.mark.parametrize("case", ONNX_FLOAT_CASES)
def test_matches_onnxruntime_float(case):
    """Every onnx__* case, also those ncc refuses or crashes on: kmodelpy.load("model.onnx") equals
    onnxruntime within 1e-5 of each output's range."""
    for k, (err, span) in enumerate(_compare(case)):
        assert err <= 1e-5 * span, f"{case} output {k}: max error {err:g}, range {span:g}"


def test_dynrange_plain_float_mode():
    """load_tflite(hybrid=False): per-channel dequantized weights in plain float, within 1% of the
    output range of TFLite's hybrid run (ncc's scale[0] dequantization is off by ~20% of the range)."""
    for err, span in _compare("line_follower_kpu_dynrange", hybrid=False):
        assert 1e-5 * span < err <= 1e-2 * span, f"max error {err:g}, range {span:g}"


def test_dynrange_is_dequantized_per_channel():
    """line_follower_kpu_dynrange: int8 per-channel weights must match TFLite (ncc uses scale[0])."""
    assert "line_follower_kpu_dynrange" in FLOAT_CASES
    from kmodelpy.frontends.tflite.reader import read_tflite

    tfl = read_tflite(CASES / "line_follower_kpu_dynrange" / "model.tflite")
    per_channel = [t for t in tfl.tensors if t.dtype == "INT8" and t.quantization is not None
                   and t.quantization.scales.size > 1]
    assert per_channel, "the reference model should hold per-channel int8 weights"


FLOAT_KMODEL_CASES = [c for c in cases_with("ncc_out") if c.endswith("__float")]


@pytest.mark.parametrize("case", FLOAT_KMODEL_CASES)
def test_bit_exact_with_ncc_float_kmodel(case):
    """ncc's --inference-type float kmodel runs the same f32 kernels in the same DFS order as the
    float evaluator with ncc's arithmetic, so `ncc infer`'s bytes and ours are identical (TFLite itself
    differs by ~1e-6)."""
    from refcases import ncc_out

    path = source_model(case)
    if path.suffix == ".tflite":
        from kmodelpy.frontends.tflite.model import load_tflite

        model = load_tflite(path, arithmetic="ncc")  # the float kmodel runs ncc's arithmetic
    else:
        model = kmodelpy.load(path)
    assert case_json(case).get("input_dtype", "f32") == "f32"
    for path in inputs(case):
        x = np.frombuffer(path.read_bytes(), "<f4").reshape(model.input_shape)
        model.run(x)
        assert model.output_bytes() == ncc_out(case, path.stem), f"{case}/{path.stem}"
