"""kmodelpy compare (per-layer accuracy) and the accuracy options: percentile/mse/kl calibration,
--bias-correction, --float-layers, --optimize-accuracy (docs/accuracy.md)."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kmodelpy
from kmodelpy.compiler.float_layers import resolve
from kmodelpy.compiler.quant import Range
from kmodelpy.compiler.range_search import Histogram, mse_range, optimal_range, percentile_range
from kmodelpy.runtime import Model
from refcases import CASES, ROOT, case_json
from test_compile_properties import OPS, build_chain
from tflite_builder import TFLiteBuilder

NORM = {"input_mean": 0.0, "input_std": 1.0}


def _model(path, seed=0):
    """x [1,8,8,3] → conv 3x3 (8, relu6) → depthwise 3x3 (relu6) → conv 1x1 (4) → add const → out."""
    rng = np.random.default_rng(seed)
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 8, 8, 3])
    w1 = b.const("w1", rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32))
    b1 = b.const("b1", rng.normal(0, 0.1, 8).astype(np.float32))
    y1 = b.tensor("conv_a", [1, 8, 8, 8])
    b.op("CONV_2D", [x, w1, b1], [y1], "Conv2DOptions", padding="SAME", stride_h=1, stride_w=1,
         fused_activation="RELU6")
    w2 = b.const("w2", rng.normal(0, 0.5, (1, 3, 3, 8)).astype(np.float32))
    b2 = b.const("b2", rng.normal(0, 0.1, 8).astype(np.float32))
    y2 = b.tensor("dw_b", [1, 8, 8, 8])
    b.op("DEPTHWISE_CONV_2D", [y1, w2, b2], [y2], "DepthwiseConv2DOptions", padding="SAME", stride_h=1, stride_w=1,
         depth_multiplier=1, fused_activation="RELU6")
    w3 = b.const("w3", rng.normal(0, 0.5, (4, 1, 1, 8)).astype(np.float32))
    b3 = b.const("b3", rng.normal(0, 0.1, 4).astype(np.float32))
    y3 = b.tensor("conv_c", [1, 8, 8, 4])
    b.op("CONV_2D", [y2, w3, b3], [y3], "Conv2DOptions", padding="SAME", stride_h=1, stride_w=1)
    c = b.const("offset", rng.normal(0, 0.5, (1, 1, 1, 4)).astype(np.float32))
    y4 = b.tensor("out", [1, 8, 8, 4])
    b.op("ADD", [y3, c], [y4], "AddOptions")
    return b.save(str(path), inputs=[x], outputs=[y4])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    model = _model(d / "tiny.tflite")
    pics = d / "pics"
    pics.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        cv2.imwrite(str(pics / f"p{i:02d}.png"), img)
    return model, pics


def _row(report, key):
    return next(r for r in report.layers if r.key == key)


# ------------------------------------------------------------------------------------ compare
def test_compare_matches_every_layer(tiny):
    model, pics = tiny
    r = kmodelpy.compare(model, pics, **NORM)
    assert r.mode == "layers" and r.pictures == 12
    assert [x.key for x in r.layers] == ["x", "conv_a", "dw_b", "conv_c", "out"]
    where = {x.key: x.where for x in r.layers}
    assert where["conv_a"] == where["dw_b"] == where["conv_c"] == "KPU"
    for x in r.layers[1:]:
        assert x.mapped and 0.99 < x.cosine <= 1.0 and x.snr_db > 20
        assert x.max_err_steps is None or x.max_err_steps < 20
    out = r.outputs[0]
    assert out.cosine > 0.99 and out.mae < 0.1
    assert abs(out.cosine - _row(r, "out").cosine) < 1e-9  # the output tensor is the last layer
    text = r.text()
    assert "conv_a" in text and "Outputs (kmodel vs float)" in text


def test_compare_names_a_deliberately_clipped_layer(tiny, monkeypatch):
    """Shrink the calibrated range of dw_b to a quarter: compare must name dw_b, clipping, as where the
    error jumps."""
    from kmodelpy.compiler import calibrate

    model, pics = tiny
    original = calibrate.broadcast_ranges

    def clip_dw_b(graph, ranges):
        for oc, rg in list(ranges.items()):
            if any(o.key == "dw_b" for o in oc.origins):
                ranges[oc] = Range(rg.min, rg.min + (rg.max - rg.min) / 4)
        original(graph, ranges)

    monkeypatch.setattr(calibrate, "broadcast_ranges", clip_dw_b)
    r = kmodelpy.compare(model, pics, **NORM)
    assert _row(r, "dw_b").clipped > 0.05
    assert _row(r, "conv_a").clipped == 0
    assert r.jump.layer == "dw_b" and r.jump.jumped
    assert "clipping" in r.jump.cause and "no_clip" in r.jump.advice


def test_compare_float_layer_is_exact(tiny):
    """A float input and the first conv kept in float: that layer is exact (cosine 1; the kmodel's float conv
    sums in ncc's order, the float model in TFLite's, so the last bits may differ)."""
    model, pics = tiny
    r = kmodelpy.compare(model, pics, input_type="float", float_layers="conv_a", **NORM)
    a = _row(r, "conv_a")
    assert a.where == "CPU float" and a.cosine == pytest.approx(1.0, abs=1e-12) and a.snr_db > 120
    assert a.max_abs_err < 1e-5 and a.drop_db < 1e-6
    rc, out, err = _cli("compile", model, tiny[1].parent / "f.kmodel", "--dataset", pics, "--input-mean", "0",
                        "--input-std", "1", "--float-layers", "conv_a")
    assert rc == 0 and "CPU fallback: Conv2D 'Conv2D_0' (1x8x8x8): kept in float by --float-layers" in out, out
    assert _row(r, "dw_b").where == "KPU"


def test_float_layers_auto_keeps_a_chain_from_the_input_within_its_budget(tiny, tmp_path, capsys):
    """--float-layers auto:MMAC: the layers next to the input, in order, as long as their multiply-accumulates
    fit the budget (conv_a: 8x8x8 outputs x 27 = 13824; dw_b: 8x8x8 x 9 = 4608; conv_c: 8x8x4 x 8 = 2048)."""
    model, pics = tiny
    for budget, chosen in ((0.014, ["conv_a"]), (0.0185, ["conv_a", "dw_b"]), (0.01, [])):
        r = kmodelpy.compare(model, pics, float_layers=f"auto:{budget}", limit=3, **NORM)
        assert [x.key for x in r.layers if x.where == "CPU float"] == chosen + ["out"], budget  # out: a CPU add
        for x in r.layers:
            if x.key in chosen:  # exact input codes, float all the way: only float32 rounding differs
                assert x.cosine > 0.999999 and x.snr_db > 60
    kmodelpy.compile(model, dataset=pics, float_layers="auto:0.0185", verbose=True, **NORM)
    out = capsys.readouterr().out
    assert "Float layers (--float-layers auto, 0.0185 MMAC budget): 2 layers, 0.02 MMAC on the CPU: " \
        "conv_a, dw_b" in out, out
    rc, out, err = _cli("compile", model, tmp_path / "b.kmodel", "--dataset", pics, "--float-layers", "auto:lots")
    assert rc == 2 and err.count("\n") == 1 and "auto:lots" in err and not (tmp_path / "b.kmodel").exists()


def test_compare_json_plot_and_cli(tiny, tmp_path):
    model, pics = tiny
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    cmd = [sys.executable, "-m", "kmodelpy", "compare", str(model), "--dataset", str(pics), "--input-mean", "0",
           "--input-std", "1", "--json", str(js), "--plot", str(png), "--limit", "4"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert p.returncode == 2 and "matplotlib" in p.stderr and not js.exists()
        return
    assert p.returncode == 0, p.stderr
    assert "conv_a" in p.stdout and "Outputs" in p.stdout
    d = json.loads(js.read_text())
    assert d["pictures"] == 4 and d["mode"] == "layers" and len(d["layers"]) == 5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_kmodel_given(tiny, tmp_path):
    """--kmodel: the same bytes as a fresh compile → layers; other bytes (other options) → outputs only."""
    model, pics = tiny
    same = tmp_path / "same.kmodel"
    kmodelpy.compile(model, dataset=pics, output=same, **NORM)
    r = kmodelpy.compare(model, pics, kmodel=same, **NORM)
    assert r.mode == "layers" and r.layers[1].mapped
    other = tmp_path / "other.kmodel"
    kmodelpy.compile(model, dataset=pics, output=other, calibrate_method="l2", **NORM)
    r = kmodelpy.compare(model, pics, kmodel=other, **NORM)
    assert r.mode == "outputs" and "not what kmodelpy compiles" in r.reason and not r.layers
    assert r.outputs[0].cosine > 0.99


def _cli(*args, cwd=ROOT):
    p = subprocess.run([sys.executable, "-m", "kmodelpy", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def test_compare_bad_input(tiny, tmp_path):
    model, pics = tiny
    other = _model(tmp_path / "other.tflite")  # a kmodel of another input shape
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 16, 16, 3])
    w = b.const("w", np.ones((4, 1, 1, 3), np.float32))
    y = b.tensor("y", [1, 16, 16, 4])
    b.op("CONV_2D", [x, w, b.const("b", np.zeros(4, np.float32))], [y], "Conv2DOptions", padding="SAME", stride_h=1,
         stride_w=1)
    wide = b.save(str(tmp_path / "wide.tflite"), inputs=[x], outputs=[y])
    km = tmp_path / "wide.kmodel"
    kmodelpy.compile(wide, dataset=pics, output=km, **NORM)
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, words in [
        ((model, "--dataset", pics, "--kmodel", km), ("wide.kmodel", "input", "16x16")),
        ((model, "--dataset", empty), ("empty",)),
        ((model, "--dataset", pics, "--float-layers", "no_such_layer"), ("no_such_layer", "compare")),
        ((other, "--dataset", pics, "--float-layers", "x"), ("'x'", "only moves data")),
    ]:
        rc, out, err = _cli("compare", *args)
        assert rc == 2, (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert all(w in err for w in words), err


# ------------------------------------------------------------------------------------ options
def test_options_give_runnable_v4_kmodels(tiny):
    """Every option compiles to a kmodel the emulator runs, with kmodel v4 opcodes only, and stays close
    to float."""
    from kmodelpy.format.kmodel import KModel
    from kmodelpy.images import load_image_u8
    from kmodelpy.ops.base import op_class

    model, pics = tiny
    x = load_image_u8(sorted(pics.iterdir())[0], 3, 8, 8)
    f = kmodelpy.load(model).run(x.astype(np.float32) / 255)[0]
    for opts in ({"calibrate_method": "percentile"}, {"calibrate_method": "mse"},
                 {"bias_correction": True}, {"float_layers": "dw_b"}, {"float_layers": "auto:0.015"},
                 {"optimize_accuracy": True}):
        data = kmodelpy.compile(model, dataset=pics, **NORM, **opts)
        km = KModel.parse(data)
        assert km.version == 4 and all(op_class(n.op.opcode) is type(n.op) for n in km.nodes)
        y = Model.from_bytes(data).run(x)[0]
        assert np.abs(y - f).max() < 0.5, opts


def test_defaults_unchanged_by_the_new_options(tiny):
    model, pics = tiny
    a = kmodelpy.compile(model, dataset=pics, **NORM)
    b = kmodelpy.compile(model, dataset=pics, calibrate_percentile=50.5, bias_correction=False, float_layers=None,
                         optimize_accuracy=False, **NORM)
    assert a == b


def test_bias_correction_removes_a_planted_offset(tiny, monkeypatch):
    """Plant +12 batch-norm units (~several output steps) in every channel of conv_c's KPU add: without
    correction conv_c's mean error is that offset; --bias-correction measures it on the calibration set with
    the emulated layer and folds it back out."""
    from kmodelpy.compiler import kpu_params

    model, pics = tiny
    original = kpu_params.kpu_batch_norm

    def planted(bias, w_scale, iq, wq, yq):
        mul, shift, add, s_act_in = original(bias, w_scale, iq, wq, yq)
        if len(add) == 4:  # conv_c: 3, 4, 5 and 6 output steps
            add = add + np.round((3 + np.arange(4)) * s_act_in / float(yq.scale)).astype(np.int64)
        return mul, shift, add, s_act_in

    monkeypatch.setattr(kpu_params, "kpu_batch_norm", planted)
    plain = _row(kmodelpy.compare(model, pics, **NORM), "conv_c")
    fixed = _row(kmodelpy.compare(model, pics, bias_correction=True, **NORM), "conv_c")
    assert plain.snr_db < 25 < fixed.snr_db
    assert fixed.max_abs_err < plain.max_abs_err / 2


@settings(max_examples=40, deadline=None)
@given(p=st.floats(90.0, 99.9), seed=st.integers(0, 2**31 - 1), shift=st.floats(-3, 3))
def test_percentile_range_clips_what_it_should(p, seed, shift):
    """Both tails at p %: the share of values outside [lo, hi] is 2·(100 − p) % (within a bin's worth of
    values), unless the range had to be widened to contain 0."""
    v = np.random.default_rng(seed).normal(shift, 1.0, 20000).astype(np.float32)
    h = Histogram(Range(v.min(), v.max()))
    h.record(v)
    r = percentile_range(h, p)
    assert r.min <= 0 <= r.max
    below, above = np.mean(v < r.min), np.mean(v > r.max)
    tail = (100 - p) / 100
    tol = 0.004  # a bin holds well under 0.4 % of these values
    if r.min < 0 and r.min > v.min():
        assert abs(below - tail) < tol
    if r.max > 0 and r.max < v.max():
        assert abs(above - tail) < tol


def test_mse_range_trims_long_tails_and_keeps_uniform_data():
    """Uniform values keep their whole range; a Gaussian's thin tails are cut where rounding noise over the
    bulk would cost more than clipping the few values out there."""
    rng = np.random.default_rng(0)
    uniform = rng.uniform(0, 4, 100000).astype(np.float32)
    h = Histogram(Range(0, 4))
    h.record(uniform)
    r = mse_range(h)
    assert r.min == 0 and r.max > 3.9
    gauss = rng.normal(0, 1, 100000).astype(np.float32)
    h = Histogram(Range(gauss.min(), gauss.max()))
    h.record(gauss)
    r = mse_range(h)
    assert 3.0 < r.max < 0.95 * gauss.max() and 0.95 * gauss.min() < r.min < -3.0
    assert optimal_range(h, "percentile", 99.9).max < r.max


def test_optimize_accuracy_is_percentile_auto_float_layers_and_the_graph_options():
    from kmodelpy.compiler.pipeline import Options

    o = Options(dataset="x", optimize_accuracy=True)
    o.resolve()
    assert o.calibrate_method == "percentile" and not o.bias_correction and o.float_layers == "auto"
    assert o.equalize_activations and o.fold_relu and o.float_heads and not o.range_clamp
    o = Options(dataset="x", optimize_accuracy=True, bias_correction=True, float_layers="conv_a")
    o.resolve()
    assert o.calibrate_method == "percentile" and o.bias_correction and o.float_layers == "conv_a"
    o = Options(dataset="x", optimize_accuracy=True, calibrate_method="mse")
    o.resolve()
    assert o.calibrate_method == "mse"


# ------------------------------------------------------------------------------------ reference cases
REF_SUBSET = ["conv3x3_s2_same", "add_residual__no_qbin", "dense", "concat_channels", "conv_bn_relu6",
              "onnx__add_residual"]
D3_CASES = {"conv3x3_s2_same", "conv3x3_s2_valid", "pad_explicit"}  # kmodel bytes differ from ncc's (D3)


def _case_args(case):
    """compare's arguments for a compile reference case: its ncc_args' options."""
    from kmodelpy.compiler.cli import ncc_args_options

    model = next(CASES.joinpath(case).glob("model.*"))
    return (model, *ncc_args_options(case_json(case)["ncc_args"][2:], CASES / case))


@pytest.mark.parametrize("case", REF_SUBSET)
def test_compare_on_reference_cases(case):
    """compare runs on compile reference cases; ncc's kmodel is compared layer by layer exactly when
    kmodelpy writes the same bytes (D3 cases differ: outputs only)."""
    model, calib, fmt, opts = _case_args(case)
    r = kmodelpy.compare(model, CASES / case / "inputs", kmodel=CASES / case / "ncc.kmodel", calibration_dataset=calib,
                         dataset_format="raw", calibration_format=fmt, limit=2, **opts)
    assert r.pictures == 2
    assert r.mode == ("outputs" if case in D3_CASES else "layers"), r.reason
    if r.mode == "layers":
        assert any(x.where == "KPU" for x in r.layers) and all(x.cosine > 0.99 for x in r.layers if x.mapped)
    for o in r.outputs:
        assert o.cosine > 0.99


@settings(max_examples=12, deadline=None)
@given(st.integers(4, 10), st.integers(4, 10), st.sampled_from([1, 3]),
       st.lists(st.sampled_from(OPS), min_size=1, max_size=4), st.integers(0, 2**31 - 1))
def test_every_layer_matched_by_construction(tmp_path_factory, h, w, c, ops, seed):
    """A float kmodel (--inference-type float) of a random op chain computes every source tensor exactly as
    the float model: every layer compare matches is exact up to float32 summation order (a wrong match
    would show a large error), and every layer that computes something is matched or merged."""
    tmp = tmp_path_factory.mktemp("orig")
    model = tmp / "m.tflite"
    model.write_bytes(build_chain(h, w, c, ops, seed))
    ds = tmp / "x"
    ds.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(2):
        rng.uniform(0, 1, (c, h, w)).astype(np.float32).tofile(ds / f"{i}.bin")
    r = kmodelpy.compare(model, ds, dataset_format="raw", inference_type="float")
    layers = {layer.key: layer for layer in kmodelpy.load(model).graph.source_layers}
    for row in r.layers:
        if row.mapped:
            assert row.snr_db > 80 or row.max_abs_err < 1e-5, (ops, row)
        else:
            assert row.merged_into or not layers[row.key].computes, (ops, row)


# ------------------------------------------------------------------------------------ real-world corpus, ONNX, --jobs
MEDIAPIPE = ROOT / "tests" / "data" / "mediapipe"
FACE_PICTURE = ROOT / "tests" / "data" / "pictures" / "skimage_astronaut.png"


@pytest.mark.parametrize("stem", sorted(p.stem for p in MEDIAPIPE.glob("*.tflite")))
def test_compare_on_the_real_world_corpus(stem):
    """compare on each MediaPipe model of tests/data/mediapipe (one picture, MediaPipe's normalisation): layer by
    layer, every layer that computes something matched or named as merged, the outputs close to float."""
    ref = np.load(MEDIAPIPE / f"{stem}.npz")
    norm = {"input_mean": float(ref["mean"]), "input_std": float(ref["std"])}
    r = kmodelpy.compare(MEDIAPIPE / f"{stem}.tflite", FACE_PICTURE, **norm)
    assert r.mode == "layers" and r.pictures == 1
    source = kmodelpy.load(MEDIAPIPE / f"{stem}.tflite").graph.source_layers
    layers = {layer.key: layer for layer in source}
    assert sum(x.mapped for x in r.layers) > len(r.layers) / 2
    for row in r.layers:
        assert row.mapped or row.merged_into or not layers[row.key].computes, row
    assert any(x.where == "KPU" for x in r.layers)
    assert r.outputs and all(o.cosine > 0.9 for o in r.outputs), [(o.name, o.cosine) for o in r.outputs]
    assert r.jump is not None and resolve(source, [r.jump.layer]), r.jump  # the name --float-layers takes


def test_compare_compiles_an_onnx_model():
    """compare compiles an .onnx model itself (no --kmodel) and matches its layers like a .tflite's."""
    case = "onnx__add_residual"
    model, calib, fmt, opts = _case_args(case)
    assert model.suffix == ".onnx"
    r = kmodelpy.compare(model, CASES / case / "inputs", calibration_dataset=calib, dataset_format="raw",
                         calibration_format=fmt, limit=2, **opts)
    assert r.mode == "layers" and any(x.where == "KPU" for x in r.layers)
    assert all(x.cosine > 0.99 for x in r.layers if x.mapped) and r.outputs[0].cosine > 0.99


def test_compare_jobs_gives_the_same_numbers(tiny, tmp_path):
    """--jobs 2 measures the pictures on two threads: the same report as --jobs 1."""
    model, pics = tiny
    reports = []
    for jobs in ("1", "2"):
        js = tmp_path / f"j{jobs}.json"
        rc, out, err = _cli("compare", model, "--dataset", pics, "--input-mean", "0", "--input-std", "1", "--jobs",
                            jobs, "--json", js)
        assert rc == 0, err
        reports.append(json.loads(js.read_text()))
    for d in reports:
        d.pop("options", None)
    assert reports[0] == reports[1]


def test_compare_names_a_later_larger_loss_too():
    """An early 6 dB jump does not hide a later layer that loses far more (a late uint8 dense layer): both are
    named, each with its cause; a later loss not clearly larger than the first jump is not repeated."""
    from kmodelpy.accuracy.report import LayerRow, find_jump, find_largest

    def row(i, name, drop, where="KPU", kernel="kpu_conv2d"):
        return LayerRow(i, name, name, "CONV_2D", where, kernel, cosine=0.9, snr_db=20.0, drop_db=drop,
                        clipped=0.0, codes_used=200, range=(-1.0, 1.0))

    rows = [row(0, "conv_a", 6.5), row(1, "conv_b", 1.0),
            row(2, "dense", 21.4, "CPU uint8", "quantized_matmul"), row(3, "conv_c", 2.0)]
    jump = find_jump(rows, 5.0)
    assert jump.layer == "conv_a" and jump.jumped
    largest = find_largest(rows, jump, 5.0)
    assert largest is not None and largest.layer == "dense" and largest.drop_db == 21.4
    assert "CPU" in largest.cause and "--float-layers 'dense'" in largest.advice
    rows[2].drop_db = 8.0  # not clearly larger than the 6.5 dB jump
    assert find_largest(rows, find_jump(rows, 5.0), 5.0) is None
    rows[0].drop_db = 3.0  # no jump at all: the largest loss is the jump itself, not repeated
    jump = find_jump(rows, 5.0)
    assert jump.layer == "dense" and find_largest(rows, jump, 5.0) is None
