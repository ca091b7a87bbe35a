"""Float references of TFLite models, made ONCE with TFLite's own interpreter (LiteRT), stored as .npz.

Run it with a Python that has ``ai-edge-litert`` (never a kmodelpy dependency: the project's generator venv
is /work/refgen/venv)::

    /work/refgen/venv/bin/python tools/litert_reference.py MODELS_DIR OUT_DIR [--pictures DIR] [--count N | --only A,B]

For every ``*.tflite`` under MODELS_DIR (recursively) it writes ``OUT_DIR/<stem>.npz`` holding
``pictures`` (the picture stems used), ``mean`` / ``std`` (the input normalisation), and ``out0``, ``out1``, ...
(LiteRT's outputs in the subgraph's output order, NHWC as TFLite gives them, stacked over the pictures).
A model LiteRT cannot run (an unresolved custom op) gets no file, only a line on stdout.

The input tensor is built by :func:`kmodelpy.images.load_image_f32` (numpy and OpenCV only), i.e. exactly the
tensor ``kmodelpy run model.tflite picture --input-mean M --input-std S`` feeds, so the stored outputs can be
compared with kmodelpy's float evaluation on the same pictures. The normalisation is MediaPipe's own for each
model (its graph's ``ImageToTensorCalculator`` ``output_tensor_float_range``, or ``TfLiteConverterCalculator``
``zero_center``): [-1, 1] (mean 0.5, std 0.5) for the face and pose detectors, [0, 1] (mean 0, std 1) for the
others; see :data:`MEDIAPIPE_RANGES`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kmodelpy.images import list_dataset, load_image_f32  # noqa: E402  (numpy + OpenCV only)

#: model stem -> (low, high) of the float input MediaPipe feeds it (mediapipe/modules/**/*.pbtxt, v0.10.14)
MEDIAPIPE_RANGES = {
    "face_detection_short_range": (-1.0, 1.0),        # face_detection.pbtxt
    "face_detection_full_range_sparse": (-1.0, 1.0),  # face_detection.pbtxt
    "pose_detection": (-1.0, 1.0),                    # pose_detection_cpu.pbtxt
    "face_landmark": (0.0, 1.0),                      # face_landmark_cpu.pbtxt
    "face_landmark_with_attention": (0.0, 1.0),       # face_landmark_cpu.pbtxt
    "hand_landmark_full": (0.0, 1.0),                 # hand_landmark_cpu.pbtxt
    "hand_landmark_lite": (0.0, 1.0),
    "hand_recrop": (0.0, 1.0),                        # hand_recrop_by_roi_cpu.pbtxt
    "iris_landmark": (0.0, 1.0),                      # iris_landmark_cpu.pbtxt: zero_center false
    "palm_detection_full": (0.0, 1.0),                # palm_detection_cpu.pbtxt
    "palm_detection_lite": (0.0, 1.0),
    "pose_landmark_full": (0.0, 1.0),                 # pose_landmark_by_roi_cpu.pbtxt
    "selfie_segmentation": (0.0, 1.0),                # selfie_segmentation_cpu.pbtxt
    "selfie_segmentation_landscape": (0.0, 1.0),
}


def mean_std(stem: str) -> tuple[float, float]:
    """(mean, std) such that (v/255 - mean)/std spans the model's input range."""
    lo, hi = MEDIAPIPE_RANGES.get(stem, (0.0, 1.0))
    return -lo / (hi - lo), 1.0 / (hi - lo)


def reference(model: Path, pictures: list[Path]) -> dict | None:
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(model_path=str(model))
        it.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        print(f"{model.name}: LiteRT cannot run it: {str(e).splitlines()[0]}")
        return None
    (inp,) = it.get_input_details()
    n, h, w, c = (int(d) for d in inp["shape"])
    mean, std = mean_std(model.stem)
    outs: list[list[np.ndarray]] = [[] for _ in it.get_output_details()]
    for p in pictures:
        x = load_image_f32(p, c, h, w, mean, std)  # CHW
        it.set_tensor(inp["index"], np.ascontiguousarray(x.transpose(1, 2, 0)[None], np.float32))
        it.invoke()
        for k, d in enumerate(it.get_output_details()):
            outs[k].append(np.array(it.get_tensor(d["index"]), np.float32)[0])
    res = {"pictures": np.array([p.stem for p in pictures]), "mean": np.float64(mean), "std": np.float64(std)}
    res.update({f"out{k}": np.stack(v) for k, v in enumerate(outs)})
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path, help="a .tflite file or a folder searched recursively")
    ap.add_argument("out", type=Path, help="folder for the <stem>.npz files")
    ap.add_argument("--pictures", type=Path, default=Path(__file__).resolve().parent.parent / "tests/data/pictures")
    ap.add_argument("--count", type=int, default=0, help="use only the first N pictures (sorted); 0: all")
    ap.add_argument("--only", default="", help="comma-separated picture stems to use (default: every picture)")
    a = ap.parse_args(argv)
    models = [a.models] if a.models.is_file() else sorted(a.models.rglob("*.tflite"))
    pictures = list_dataset(a.pictures)
    if a.only:
        wanted = a.only.split(",")
        pictures = [p for stem in wanted for p in pictures if p.stem == stem]
        if len(pictures) != len(wanted):
            ap.error(f"--only {a.only}: not all of these pictures are in {a.pictures}")
    if a.count:
        pictures = pictures[:a.count]
    a.out.mkdir(parents=True, exist_ok=True)
    for m in models:
        ref = reference(m, pictures)
        if ref is not None:
            np.savez_compressed(a.out / f"{m.stem}.npz", **ref)
            print(f"{m.name}: {len(pictures)} pictures -> {a.out / (m.stem + '.npz')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
