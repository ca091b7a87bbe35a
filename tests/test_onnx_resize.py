"""ONNX Resize on the float evaluator against onnxruntime: tests/data/onnx_resize.npz holds onnxruntime 1.32's
outputs for Resize nodes with non-integer scale factors (x1.5, x2.5 by x1.25, x0.75, sizes 7x5 -> 10x12 ...) and every
coordinate transformation kmodelpy takes, nearest roundings (one with a coordinate 2.4e-7 below a tie, which
onnxruntime rounds as a tie), cubic and antialias (made once by tools/onnx_resize_reference.py; onnxruntime is not a
dependency). Nearest and linear are onnxruntime's bit for bit (kmodelpy/ir/resample.py reproduces its float32
sampling and operation order); cubic and antialias, evaluated as float64 matrices, within 1e-6 of the output's
range. The compiled kmodels of such resizes are checked in tests/test_resize_lowering.py."""
from __future__ import annotations

import numpy as np
import pytest

import kmodelpy
from kmodelpy.errors import KmodelpyError
from refcases import ROOT

REFERENCES = np.load(ROOT / "tests" / "data" / "onnx_resize.npz")
CASES = sorted(k[len("model_"):] for k in REFERENCES.files if k.startswith("model_"))


def _model(tmp_path, name):
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(REFERENCES[f"model_{name}"].tobytes())
    return kmodelpy.load(path)


def test_references_cover_the_coordinate_modes():
    assert len(CASES) >= 15
    for ctm in ("_half_pixel_", "_pytorch_half_pixel_", "_align_corners_", "_asymmetric_", "_half_pixel_symmetric_"):
        assert any(ctm in c and "x1.5" in c and c.startswith("linear") for c in CASES), ctm


@pytest.mark.parametrize("name", CASES)
def test_float_resize_matches_onnxruntime(tmp_path, name):
    (got,) = _model(tmp_path, name).run(REFERENCES[f"x_{name}"])
    want = REFERENCES[f"y_{name}"]
    assert got.shape == want.shape and got.dtype == np.float32
    if name.startswith("cubic") or "antialias" in name:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * float(np.ptp(want)))
    else:
        np.testing.assert_array_equal(got, want)


def test_align_corners_with_a_fractional_size_is_refused(tmp_path):
    """align_corners with scales whose product with the input size is not whole: onnxruntime divides by the floored
    output size, the ONNX reference by the exact product (onnx's test_resize_downsample_scales_linear_align_corners
    expects 3.142857 where onnxruntime gives 4). One line asks for sizes instead."""
    from onnx import TensorProto, helper, numpy_helper, save

    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear",
                            coordinate_transformation_mode="align_corners")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 2])],
                          [numpy_helper.from_array(np.array([1, 1, 0.6, 0.6], np.float32), "scales")])
    path = tmp_path / "ac.onnx"
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(KmodelpyError) as e:
        kmodelpy.load(path)
    msg = str(e.value)
    assert "\n" not in msg and "Resize" in msg and "give the sizes input instead of scales" in msg
