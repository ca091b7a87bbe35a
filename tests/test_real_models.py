"""Real-world models nobody here made: four small MediaPipe models (tests/data/mediapipe, Apache-2.0, from the
mediapipe 0.10.14 wheel) with LiteRT's float outputs on three ordinary pictures (made once by
tools/litert_reference.py with ai-edge-litert, which is not a dependency).

* each model compiles for uint8 with the default options, calibrated on two pictures of tests/data/pictures
  (its input normalisation, MediaPipe's own, given as --input-mean/--input-std: [-1, 1] for the face detectors,
  [0, 1] for the others);
* its float evaluation equals LiteRT's within 1e-4 of each output's range;
* the emulated kmodel's cosine against float, per output over the three pictures, does not fall below the
  figures measured when this test was written (accuracy.json; ``KMODELPY_UPDATE_ACCURACY=1`` rewrites them).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import kmodelpy
from kmodelpy.images import load_image_f32, load_image_u8

DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "mediapipe"
PICTURES = DATA / "pictures"
CALIBRATION = ("skimage_astronaut", "coco_436617")
MODELS = sorted(p.stem for p in CORPUS.glob("*.tflite"))
ACCURACY = CORPUS / "accuracy.json"
MARGIN = 0.002  # cosine may move this much (other calibration order, float rounding) without being a regression


def reference(stem: str):
    ref = np.load(CORPUS / f"{stem}.npz")
    outs = [ref[f"out{k}"] for k in range(sum(f.startswith("out") for f in ref.files))]
    return [str(p) for p in ref["pictures"]], float(ref["mean"]), float(ref["std"]), outs


def nchw(y):
    return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y  # LiteRT stores NHWC, kmodelpy gives NCHW


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """stem -> path of its uint8 kmodel (compiled once for the module)."""
    from kmodelpy.compiler import compile_model

    tmp = tmp_path_factory.mktemp("real")
    calib = tmp / "calibration"
    calib.mkdir()
    for stem in CALIBRATION:
        shutil.copy(PICTURES / f"{stem}.png", calib)
    done = {}

    def get(stem):
        if stem not in done:
            _, mean, std, _ = reference(stem)
            done[stem] = compile_model(CORPUS / f"{stem}.tflite", dataset=calib, input_mean=mean, input_std=std,
                                       output=tmp / f"{stem}.kmodel")
        return done[stem]

    return get


@pytest.fixture(scope="module")
def float_outputs():
    """stem -> [per picture: float outputs] (the float evaluation runs once per model)."""
    cache = {}

    def get(stem):
        if stem not in cache:
            pictures, mean, std, _ = reference(stem)
            model = kmodelpy.load(CORPUS / f"{stem}.tflite")
            _, c, h, w = model.input_shape
            cache[stem] = [model.run(load_image_f32(PICTURES / f"{p}.png", c, h, w, mean, std)) for p in pictures]
        return cache[stem]

    return get


def test_corpus_is_there():
    assert len(MODELS) >= 3 and "Apache License" in (CORPUS / "LICENSE").read_text()[:200]
    assert all((CORPUS / f"{m}.npz").exists() for m in MODELS)


@pytest.mark.parametrize("stem", MODELS)
def test_float_evaluation_matches_litert(stem, float_outputs):
    _, _, _, refs = reference(stem)
    ours = float_outputs(stem)
    for k, ref in enumerate(refs):
        span = float(np.ptp(ref)) or 1.0
        err = max(float(np.abs(o[k].astype(np.float64) - nchw(ref[i][None]).reshape(o[k].shape)).max())
                  for i, o in enumerate(ours))
        assert err <= 1e-4 * span, f"{stem} output {k}: max error {err:g}, range {span:g}"


def cosines(stem, kmodel_path, float_outputs) -> list[float]:
    """Per output: the cosine between the kmodel's and the float model's outputs, over all the pictures."""
    pictures, _, _, _ = reference(stem)
    km = kmodelpy.load(kmodel_path)
    c, h, w = km.input_shape[1:]
    got = [km.run(load_image_u8(PICTURES / f"{p}.png", c, h, w)) for p in pictures]
    res = []
    for k in range(len(got[0])):
        a = np.concatenate([f[k].ravel() for f in float_outputs(stem)]).astype(np.float64)
        b = np.concatenate([g[k].ravel() for g in got]).astype(np.float64)
        res.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return res


@pytest.mark.parametrize("stem", MODELS)
def test_kmodel_agreement_does_not_regress(stem, compiled, float_outputs):
    path = compiled(stem)
    km = kmodelpy.load(path)
    assert km.input_dtype == np.uint8 and len(km.output_shapes()) == len(reference(stem)[3])
    measured = cosines(stem, path, float_outputs)
    if os.environ.get("KMODELPY_UPDATE_ACCURACY"):
        table = json.loads(ACCURACY.read_text()) if ACCURACY.exists() else {}
        table[stem] = [round(c, 4) for c in measured]
        ACCURACY.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    stored = json.loads(ACCURACY.read_text())[stem]
    assert len(stored) == len(measured)
    for k, (now, then) in enumerate(zip(measured, stored)):
        assert now >= then - MARGIN, f"{stem} output {k}: cosine {now:.4f}, was {then:.4f}"


def test_fit_report_counts_weights_behind_dequantize(compiled):
    """face_detection_short_range keeps its weights as float16 behind DEQUANTIZE (and full_range's are sparse):
    `inspect model.tflite` counts them from the compiler's own nodes (it used to say 0 KiB)."""
    import re

    from kmodelpy.fit_report import report

    for stem in ("face_detection_short_range", "face_detection_full_range_sparse"):
        text = report(str(CORPUS / f"{stem}.tflite"))
        kib = int(re.search(r"estimated weights in the kmodel: (\d+) KiB", text).group(1))
        size = Path(compiled(stem)).stat().st_size / 1024
        assert 0.5 * size <= kib <= size, (stem, kib, size)
