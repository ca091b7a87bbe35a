"""The one resize lowering of both front ends (pass P1, kmodelpy/compiler/transforms/resize_lowering.py): every form
it can pick computes the node's own sampling (TFLite's or onnxruntime's, kmodelpy/ir/resample.py) exactly in
float, the plan picks the documented form, and the compiled uint8 kmodel of an ONNX resize stays within a few
quantization steps of float. The float evaluation itself is pinned against TFLite's kernels in
tests/test_tflite_resize.py and against onnxruntime in tests/test_onnx_import.py."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmodelpy.compiler.transforms import resize_lowering as RL
from kmodelpy.ir import resample
from kmodelpy.ir.resample import Sampling

F32 = np.float32
ONNX_SCALES = [0.5, 0.6, 0.75, 1.0, 4 / 3, 1.5, 2.0, 2.5, 3.0, 4.0]


@st.composite
def resizes(draw):
    """(Sampling, in HW, out HW) of either front end."""
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    if draw(st.booleans()):
        mode = draw(st.sampled_from(["bilinear", "nearest_neighbor"]))
        ac, hp = draw(st.sampled_from([(False, False), (True, False), (False, True)]))
        return Sampling.tflite(mode, ac, hp), (h, w), (draw(st.integers(1, 20)), draw(st.integers(1, 20)))
    mode = draw(st.sampled_from(["bilinear", "nearest_neighbor", "cubic"]))
    coordinate = draw(st.sampled_from(resample.COORDINATES))
    antialias = mode != "nearest_neighbor" and draw(st.booleans())
    if draw(st.booleans()):  # sizes given: the scale is out/in
        scales, out = None, (draw(st.integers(1, 20)), draw(st.integers(1, 20)))
    else:
        scales = (float(F32(draw(st.sampled_from(ONNX_SCALES)))), float(F32(draw(st.sampled_from(ONNX_SCALES)))))
        out = tuple(max(1, int(np.floor(F32(n) * F32(s)))) for n, s in zip((h, w), scales))
    s = Sampling(mode, coordinate, draw(st.sampled_from(resample.NEAREST_MODES[:4])), "onnx", scales,
                 cubic_a=draw(st.sampled_from([-0.75, -0.5])), exclude_outside=draw(st.booleans()),
                 antialias=antialias)
    return s, (h, w), out


def _graph(s, in_hw, out_hw, c=2):
    from kmodelpy.compiler.k210_ops import register_all
    from kmodelpy.ir.graph import Graph

    register_all()
    g = Graph()
    x = g.add("input", [], [(1, c) + tuple(in_hw)], name="x")
    r = g.add("resize", [x.output], [(1, c) + tuple(out_hw)], name="r", new_size=tuple(out_hw), sampling=s)
    g.add("output", [r.output], [], name="y")
    return g, x, r


def _lowered(s, in_hw, out_hw, p):
    """The graph with the resize built in form ``p`` (the rewrite LowerResize does for its own plan)."""
    from kmodelpy.compiler.rewrite import reroute

    g, x, r = _graph(s, in_hw, out_hw)
    reroute(r.output, RL.BUILDERS[p.form](g, r, x.output, p))
    g.collect()
    return g


@settings(max_examples=80, deadline=None)
@given(resizes(), st.integers(0, 2**31))
def test_every_form_is_exact_in_float(r, seed):
    """Each form the plan can give the resize (alone before the separable fallback) computes the float resize."""
    from kmodelpy.ir.evaluate import evaluate

    s, in_hw, out_hw = r
    x = np.random.default_rng(seed).standard_normal((1, 2) + in_hw).astype(F32)
    want = resample.resize(x, out_hw, s)
    for form in RL.FORMS:
        p = RL.plan(s, in_hw, out_hw, forms=(form, "separable"))
        if p.form != form:
            continue
        g = _lowered(s, in_hw, out_hw, p)
        ops = [n.op for n in g.nodes]
        assert "resize" not in ops
        if form in ("resize_image", "copy"):
            assert "conv2d" not in ops
        (got,) = evaluate(g, [x])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * (1 + np.abs(x).max()), err_msg=f"{form} {p}")


@settings(max_examples=40, deadline=None)
@given(resizes())
def test_pass_lowers_with_its_plan(r):
    """LowerResize leaves no resize node and builds the form plan() names (what the fit report reads)."""
    from kmodelpy.compiler.rewrite import Context, run_pass

    s, in_hw, out_hw = r
    p = RL.plan(s, in_hw, out_hw)
    g, _, _ = _graph(s, in_hw, out_hw)
    run_pass(g, [RL.LowerResize()], Context())
    ops = [n.op for n in g.nodes]
    assert "resize" not in ops
    expect = {"resize_image": "resize_image", "bilinear_filter": "conv2d", "mean_pool": "reduce_window2d"}
    if p.form in expect:
        assert expect[p.form] in ops
    if p.form == "resize_image":
        (ri,) = [n for n in g.nodes if n.op == "resize_image"]
        assert (ri["mode"], ri["align_corners"], ri["new_size"]) == (s.mode,) + (p.detail[1], tuple(out_hw))


def test_forms_of_onnx_resizes():
    """Where ncc's ONNX importer is right (asymmetric and align-corners linear, asymmetric floor nearest) the node
    is ncc's ResizeImage; PyTorch's defaults get their exact forms."""
    def form(mode, ctm, nearest, in_hw, out_hw, scales=None, **more):
        return RL.plan(Sampling(mode, ctm, nearest, "onnx", scales, **more), in_hw, out_hw).form

    assert form("bilinear", "asymmetric", "floor", (16, 16), (32, 32), (2.0, 2.0)) == "resize_image"
    assert form("bilinear", "align_corners", "floor", (16, 16), (32, 32), (2.0, 2.0)) == "resize_image"
    assert form("nearest_neighbor", "asymmetric", "floor", (16, 16), (32, 32), (2.0, 2.0)) == "resize_image"
    # nn.Upsample(scale_factor=2, mode="bilinear") exports half_pixel (pytorch_half_pixel for align_corners=False)
    assert form("bilinear", "pytorch_half_pixel", "floor", (16, 16), (32, 32), (2.0, 2.0)) == "bilinear_filter"
    assert form("bilinear", "half_pixel", "floor", (16, 16), (8, 8), (0.5, 0.5)) == "mean_pool"
    assert form("nearest_neighbor", "half_pixel", "round_prefer_floor", (16, 16), (8, 8)) == "resize_image"  # 2o+½ → 2o
    assert form("nearest_neighbor", "half_pixel", "round_prefer_ceil", (16, 16), (8, 8)) == "copy"  # 2o+1
    assert form("nearest_neighbor", "tf_half_pixel_for_nn", "round_prefer_ceil", (5, 5), (10, 10)) == "copy"
    assert form("bilinear", "half_pixel", "floor", (6, 6), (9, 9)) == "separable"
    assert form("cubic", "half_pixel", "floor", (8, 8), (16, 16)) == "separable"
    assert form("bilinear", "half_pixel", "floor", (8, 8), (4, 4), antialias=True) == "separable"


def test_copy_search_reaches_whole_factors_and_borders():
    """The copy form: edge replication, ncc's nearest upscale by a whole factor and a strided slice."""
    s = Sampling("nearest_neighbor", "tf_half_pixel_for_nn", "ceil", "onnx", (2.0, 1.0))  # 1 1 2 2 ... 4 4 4 4
    p = RL.plan(s, (5, 4), (10, 4))
    assert p.form == "copy" and p.detail == (RL.AxisCopy(0, 1, 2, 2, 1), RL.AxisCopy(0, 0, 1, 0, 1))
    s = Sampling("nearest_neighbor", "asymmetric", "ceil", "onnx", (2.0, 2.0))  # ceil(o/2): 0 1 1 2 2 ... last
    p = RL.plan(s, (4, 4), (8, 8))
    assert p.form == "copy" and p.detail[0].pb + p.detail[0].pa >= 1


def _onnx_conv_model(tmp_path, name, resize=None):
    """Conv 3x3 (3 -> 4 channels) + ReLU, then a Resize with ``resize`` = (scale, mode, ctm) if given: the shape of a
    PyTorch decoder stage."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"])]
    inits = [numpy_helper.from_array(rng.uniform(-1, 1, (4, 3, 3, 3)).astype(F32), "w"),
             numpy_helper.from_array(rng.uniform(0, 0.2, 4).astype(F32), "b")]
    out, y = 12, "r"
    if resize is not None:
        scale, mode, ctm = resize
        nodes.append(helper.make_node("Resize", ["r", "", "scales"], ["y"], mode=mode,
                                      coordinate_transformation_mode=ctm))
        inits.append(numpy_helper.from_array(np.array([1, 1, scale, scale], F32), "scales"))
        out, y = int(np.floor(F32(12) * F32(scale))), "y"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 4, out, out])], inits)
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("scale, mode, ctm, form", [
    (2.0, "linear", "pytorch_half_pixel", "bilinear_filter"),
    (1.5, "linear", "half_pixel", "separable"),
    (1.5, "linear", "pytorch_half_pixel", "separable"),
    (1.5, "linear", "align_corners", "resize_image"),
    (1.5, "linear", "asymmetric", "resize_image"),
    (1.5, "nearest", "half_pixel", "resize_image"),
    (0.5, "linear", "half_pixel", "mean_pool"),
    (2.0, "cubic", "half_pixel", "separable"),
])
def test_onnx_resizes_compile_and_track_float(tmp_path, scale, mode, ctm, form):
    """Forms ncc cannot compute (ncc: asymmetric; the ONNX front end refused non-integer factors and cubic before
    the lowering served both front ends) compile for uint8; the resize adds at most two quantization steps to the
    conv before it, ¾ step on average (the KPU's mean pool truncates): the kmodel with the resize against the float
    resize of the kmodel without it."""
    import kmodelpy
    from kmodelpy.compiler import compile_model
    from kmodelpy.format.kmodel import KModel

    rng = np.random.default_rng(1)
    ds = tmp_path / "calib"
    ds.mkdir()
    samples = [rng.uniform(0, 1, (3, 12, 12)).astype(F32) for _ in range(4)]
    for k, s in enumerate(samples):
        s.tofile(ds / f"{k}.bin")
    kms = [compile_model(_onnx_conv_model(tmp_path, name, resize), dataset=ds, dataset_format="raw",
                         input_type="float", output=tmp_path / f"{name}.kmodel")
           for name, resize in (("conv", None), ("resize", (scale, mode, ctm)))]
    names = [type(o).__name__ for o in KModel.parse((tmp_path / "resize.kmodel").read_bytes()).ops]
    assert names.count("KPUConv2D") >= (2 if form in ("bilinear_filter", "separable") else 1), names
    plain, resized = (kmodelpy.load(k) for k in kms)
    node = kmodelpy.load(tmp_path / "resize.onnx").graph.outputs[0].input.producer.node
    sampling = node["sampling"]
    assert RL.plan_of(node).form == form
    for s in samples:
        got = resized.run(s[None])[0]
        want = resample.resize(plain.run(s[None])[0], got.shape[2:], sampling)
        step = float(np.ptp(got)) / 255
        assert float(np.abs(got - want).max()) <= 2 * step and float(np.abs(got - want).mean()) <= 0.75 * step
