"""tests/data/onnx_resize.npz: onnxruntime's float outputs for ONNX Resize nodes kmodelpy's front end takes —
non-integer scale factors, every coordinate transformation, nearest rounding, cubic and antialias — made once
with onnxruntime in its own environment (never a kmodelpy dependency)::

    /work/refgen/venv/bin/python tools/onnx_resize_reference.py tests/data/onnx_resize.npz

Each case stores the serialized model (``model_<name>``, uint8), its input (``x_<name>``) and onnxruntime's output
(``y_<name>``); tests/test_onnx_resize.py evaluates the model with ``kmodelpy.load`` and compares.
"""
from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

F32 = np.float32
# name: (input HW, scales or None, sizes or None, attributes)
CASES = {
    "linear_half_pixel_x1.5": ((6, 8), (1.5, 1.5), None, dict(mode="linear", coordinate_transformation_mode="half_pixel")),
    "linear_pytorch_half_pixel_x1.5": ((6, 8), (1.5, 1.5), None,
                                       dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel")),
    "linear_align_corners_x1.5": ((6, 8), (1.5, 1.5), None,
                                  dict(mode="linear", coordinate_transformation_mode="align_corners")),
    "linear_asymmetric_x1.5": ((6, 8), (1.5, 1.5), None, dict(mode="linear", coordinate_transformation_mode="asymmetric")),
    "linear_half_pixel_x2.5_x1.25": ((4, 8), (2.5, 1.25), None,
                                     dict(mode="linear", coordinate_transformation_mode="half_pixel")),
    "linear_half_pixel_sizes_7x5_to_10x12": ((7, 5), None, (10, 12),
                                             dict(mode="linear", coordinate_transformation_mode="half_pixel")),
    "linear_half_pixel_x0.75": ((8, 12), (0.75, 0.75), None,
                                dict(mode="linear", coordinate_transformation_mode="half_pixel")),
    "linear_align_corners_sizes_9x9_to_6x5": ((9, 9), None, (6, 5),
                                              dict(mode="linear", coordinate_transformation_mode="align_corners")),
    "linear_half_pixel_symmetric_x1.5": ((6, 8), (1.5, 1.5), None,
                                         dict(mode="linear", coordinate_transformation_mode="half_pixel_symmetric")),
    "nearest_half_pixel_round_prefer_floor_x1.5": ((6, 8), (1.5, 1.5), None,
                                                   dict(mode="nearest", coordinate_transformation_mode="half_pixel",
                                                        nearest_mode="round_prefer_floor")),
    "nearest_asymmetric_floor_x1.5": ((6, 8), (1.5, 1.5), None,
                                      dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                                           nearest_mode="floor")),
    "nearest_align_corners_round_prefer_ceil_x1.5": ((6, 8), (1.5, 1.5), None,
                                                     dict(mode="nearest", coordinate_transformation_mode="align_corners",
                                                          nearest_mode="round_prefer_ceil")),
    "nearest_asymmetric_round_prefer_ceil_near_tie_7_to_8": ((7, 7), None, (8, 8),
                                                             dict(mode="nearest",
                                                                  coordinate_transformation_mode="asymmetric",
                                                                  nearest_mode="round_prefer_ceil")),
    "cubic_half_pixel_x1.5": ((6, 8), (1.5, 1.5), None, dict(mode="cubic", coordinate_transformation_mode="half_pixel")),
    "cubic_align_corners_sizes_6x8_to_9x11": ((6, 8), None, (9, 11),
                                              dict(mode="cubic", coordinate_transformation_mode="align_corners")),
    "cubic_exclude_outside_a-0.5_x1.5": ((6, 8), (1.5, 1.5), None,
                                         dict(mode="cubic", coordinate_transformation_mode="half_pixel",
                                              cubic_coeff_a=-0.5, exclude_outside=1)),
    "linear_antialias_x0.6": ((10, 10), (0.6, 0.6), None,
                              dict(mode="linear", coordinate_transformation_mode="half_pixel", antialias=1)),
    "cubic_antialias_sizes_12x12_to_5x7": ((12, 12), None, (5, 7),
                                          dict(mode="cubic", coordinate_transformation_mode="half_pixel", antialias=1)),
}


def model(in_hw, scales, sizes, attrs) -> bytes:
    inits = [numpy_helper.from_array(np.array([], F32), "roi")]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.array((1, 1) + tuple(scales), F32), "scales"))
        inputs = ["x", "roi", "scales"]
    else:
        inits.append(numpy_helper.from_array(np.array((1, 2) + tuple(sizes), np.int64), "sizes"))
        inputs = ["x", "roi", "", "sizes"]
    node = helper.make_node("Resize", inputs, ["y"], **attrs)
    out_hw = sizes if sizes is not None else [int(np.floor(F32(n) * F32(s))) for n, s in zip(in_hw, scales)]
    g = helper.make_graph([node], "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, *in_hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, *out_hw])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    return m.SerializeToString()


def main(out: str) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for name, (in_hw, scales, sizes, attrs) in CASES.items():
        blob = model(in_hw, scales, sizes, attrs)
        x = rng.standard_normal((1, 2, *in_hw)).astype(F32)
        sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        arrays[f"model_{name}"] = np.frombuffer(blob, np.uint8)
        arrays[f"x_{name}"] = x
        arrays[f"y_{name}"] = sess.run(None, {"x": x})[0]
    arrays["onnxruntime_version"] = np.array(ort.__version__)
    np.savez_compressed(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
