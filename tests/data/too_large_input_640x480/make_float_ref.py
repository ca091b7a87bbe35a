"""Float reference of the reference case too_large_input_640x480 (ncc refuses it, so the case has no float/
folder): LiteRT's float32 outputs on the first two calibration pictures, every 8th row and column kept.

Run once with the reference-generator venv (ai-edge-litert is not a kmodelpy dependency):
    /work/refgen/venv/bin/python tests/data/too_large_input_640x480/make_float_ref.py
Images are fed as ncc reads them: PNG at the model's size, RGB planes, v/255 (NHWC for TFLite).
"""
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CASE = ROOT / "reference" / "ncc_outputs" / "cases" / "too_large_input_640x480"
CALIB = ROOT / "reference" / "ncc_outputs" / "datasets" / "line640x480" / "calib"
STEP = 8

interp = Interpreter(model_path=str(CASE / "model.tflite"))
interp.allocate_tensors()
inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
refs = {}
for png in sorted(CALIB.glob("*.png"))[:2]:
    bgr = cv2.imdecode(np.fromfile(png, np.uint8), cv2.IMREAD_COLOR)
    x = (cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) * np.float32(1 / 255))[None]
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    refs[png.stem] = interp.get_tensor(out["index"])[:, ::STEP, ::STEP, :].copy()
np.savez_compressed(HERE / "float_ref.npz", step=np.int32(STEP), **refs)
print({k: v.shape for k, v in refs.items()})
