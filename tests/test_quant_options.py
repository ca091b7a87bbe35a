"""The quantization options of docs/accuracy.md that rewrite the graph: --equalize-activations,
--no-range-clamp, --fold-relu, --float-heads — each tested for what it claims."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

import kmodelpy
from kmodelpy.compiler import pipeline as P
from kmodelpy.compiler.quant import Range, fixup_range, get_quant_param
from kmodelpy.runtime import Model
from tflite_builder import TFLiteBuilder

NORM = {"input_mean": 0.0, "input_std": 1.0}


def _conv(b, rng, x, name, cin, cout, k, act, scale=0.5, shape=(1, 16, 16)):
    w = b.const(name + "/w", rng.normal(0, scale, (cout, k, k, cin)).astype(np.float32))
    bias = b.const(name + "/b", rng.normal(0, 0.1, cout).astype(np.float32))
    y = b.tensor(name, list(shape) + [cout])
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding="SAME", stride_h=1, stride_w=1, fused_activation=act)
    return y


def _add_relu_head(b, rng, x, c, a, path):
    """add_d = c + a → relu_e → head 1x1 (2 channels) → the model output; saves the model."""
    d = b.tensor("add_d", [1, 16, 16, 8])
    b.op("ADD", [c, a], [d], "AddOptions")
    e = b.tensor("relu_e", [1, 16, 16, 8])
    b.op("RELU", [d], [e])
    h = _conv(b, rng, e, "head", 8, 2, 1, "NONE")
    return b.save(str(path), inputs=[x], outputs=[h])


def _block_model(path, seed=0):
    """x [1,16,16,3] → conv_a 3x3 (8, relu) → dw_b 3x3 (no activation; channel 0 ×20 the others) →
    pw_c 1x1 (8) → add_d (pw_c + conv_a) → relu_e → head 1x1 (2) → out: a BlazeFace block in small."""
    rng = np.random.default_rng(seed)
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 16, 16, 3])
    a = _conv(b, rng, x, "conv_a", 3, 8, 3, "RELU")
    wd = rng.normal(0, 0.3, (1, 3, 3, 8)).astype(np.float32)
    wd[..., 0] *= 20.0  # one channel sets the depthwise output's range
    dw = b.tensor("dw_b", [1, 16, 16, 8])
    b.op("DEPTHWISE_CONV_2D", [a, b.const("dw_b/w", wd), b.const("dw_b/b", np.zeros(8, np.float32))], [dw],
         "DepthwiseConv2DOptions", padding="SAME", stride_h=1, stride_w=1, depth_multiplier=1)
    c = _conv(b, rng, dw, "pw_c", 8, 8, 1, "NONE", scale=0.2)
    return _add_relu_head(b, rng, x, c, a, path)


def _nonneg_add_model(path, seed=1):
    """conv_a (relu) and conv_b (relu) → add_d → relu_e → head: the sum is never negative."""
    rng = np.random.default_rng(seed)
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 16, 16, 3])
    a = _conv(b, rng, x, "conv_a", 3, 8, 3, "RELU")
    c = _conv(b, rng, a, "conv_b", 8, 8, 1, "RELU")
    return _add_relu_head(b, rng, x, c, a, path)


def _scale_model(path):
    """A KPU 1x1 conv of weights ±25 on x in [−50, 50] (--input-mean 0.5 --input-std 0.01): outputs up to
    ±2500."""
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 32, 32, 3])
    w = np.array([[25, 25, 0], [-25, 0, 25], [0, 25, -25], [25, -25, 25]], np.float32).reshape(4, 1, 1, 3)
    y = b.tensor("scaled", [1, 32, 32, 4])
    b.op("CONV_2D", [x, b.const("w", w), b.const("b", np.zeros(4, np.float32))], [y], "Conv2DOptions",
         padding="SAME", stride_h=1, stride_w=1)
    return b.save(str(path), inputs=[x], outputs=[y])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("quantopts")
    pics = d / "pics"
    pics.mkdir()
    rng = np.random.default_rng(7)
    for i in range(8):
        cv2.imwrite(str(pics / f"p{i:02d}.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return {"block": _block_model(d / "block.tflite"), "nonneg": _nonneg_add_model(d / "nonneg.tflite"),
            "scale": _scale_model(d / "scale.tflite"), "pics": pics}


def _float_graph(model, pics, **options):
    """The HLIR graph after pass P2 (what the accuracy passes see) and its options."""
    opts = P.Options(dataset=str(pics), **NORM, **options)
    ctx = P.make_context(opts)
    g = P.import_graph(model, io.StringIO())
    P.optimize(g, ctx, io.StringIO(), opts)
    return g, ctx, opts


def _run(g, x, connectors):
    from kmodelpy.compiler.calibrate import run_graph

    got = {}
    run_graph(g, x, lambda oc, v: got.__setitem__(oc, np.array(v)), watch=set(connectors))
    return [got[c] for c in connectors]


def _pictures(pics, n=3):
    from kmodelpy.images import load_image_f32

    return [load_image_f32(p, 3, 16, 16, 0.0, 1.0)[None] for p in sorted(pics.iterdir())[:n]]


def _image_u8(pics, size=16):
    from kmodelpy.images import load_image_u8

    return load_image_u8(sorted(pics.iterdir())[0], 3, size, size)


# ------------------------------------------------------------------------------ equalisation
def test_equalisation_is_float_exact_and_spreads_the_channels(models):
    from kmodelpy.compiler.equalize import equalize_activations, find_pairs

    g, ctx, opts = _float_graph(models["block"], models["pics"])
    (dw, pw), = find_pairs(g)  # the depthwise → 1x1 pair; pw_c → add_d and head → output are no pairs
    assert dw["is_depthwise"] and not pw["is_depthwise"]
    outs = [n.inputs[0].producer for n in g.nodes if n.op == "output"]
    xs = _pictures(models["pics"])
    before = [_run(g, x, outs + [dw.output]) for x in xs]
    assert equalize_activations(g, opts, io.StringIO()) == 1
    after = [_run(g, x, outs + [dw.output]) for x in xs]
    for (y0, d0), (y1, d1) in zip(before, after):
        assert np.allclose(y1, y0, rtol=1e-5, atol=1e-5 * np.abs(y0).max())  # the model computes the same

    def smallest_share(d):  # the narrowest channel's share of the tensor's range
        r = np.abs(d).max(axis=(0, 2, 3))
        return r.min() / r.max()

    assert smallest_share(np.concatenate([d for _, d in after])) > 3 * smallest_share(
        np.concatenate([d for _, d in before]))
    # the KPU's per-output-channel weight equalisation still fills the weights' grid in every channel
    from kmodelpy.compiler.kpu_params import quantize_kpu_weights

    kw = quantize_kpu_weights(dw["weights"])
    assert all(np.ptp(kw.codes[c].astype(int)) > 128 for c in range(kw.codes.shape[0]))


def test_equalisation_raises_the_depthwise_snr(models):
    plain = kmodelpy.compare(models["block"], models["pics"], **NORM)
    equal = kmodelpy.compare(models["block"], models["pics"], equalize_activations=True, **NORM)
    row = {r.key: r for r in plain.layers}["dw_b"], {r.key: r for r in equal.layers}["dw_b"]
    assert row[1].snr_db > row[0].snr_db  # compare reads the source tensor back through the channel scale
    assert equal.outputs[0].cosine > 0.99
    # bias correction measures the scaled layer in its own units (the tap reads it through the inverse scale)
    both = kmodelpy.compare(models["block"], models["pics"], equalize_activations=True, bias_correction=True, **NORM)
    assert {r.key: r for r in both.layers}["dw_b"].snr_db > row[1].snr_db - 0.5


# ------------------------------------------------------------------------------ range clamp
def test_no_range_clamp_keeps_a_5000_wide_range(models):
    r = Range(-2500.0, 2500.0)
    assert float(fixup_range(r).max) == 1000.0 and float(fixup_range(r).min) == -1000.0  # ncc's clip
    kept = fixup_range(r, clamp=False)
    assert (float(kept.min), float(kept.max)) == (-2500.0, 2500.0)
    assert get_quant_param(r, 8, clamp=False).scale == np.float32(255 / 5000)
    assert float(fixup_range(Range(3.0, 3.0), clamp=False).max) == np.float32(3.1)  # minimum width kept
    x = _image_u8(models["pics"], 32)
    f = kmodelpy.load(models["scale"]).run((x.astype(np.float32) / 255 - 0.5) / 0.01)[0]
    opts = {"input_mean": 0.5, "input_std": 0.01}
    clipped = Model.from_bytes(kmodelpy.compile(models["scale"], dataset=models["pics"], **opts)).run(x)[0]
    kept = Model.from_bytes(kmodelpy.compile(models["scale"], dataset=models["pics"], range_clamp=False,
                                             **opts)).run(x)[0]
    assert np.abs(f).max() > 1500
    assert np.abs(clipped - f).max() > 400  # cut at ±1000
    assert np.abs(kept - f).max() < 100  # a few steps of 5000/255 (with the input's rounding)


# ------------------------------------------------------------------------------ ReLU fold
def _ops(data):
    from kmodelpy.format.kmodel import KModel

    return [type(n.op).__name__ for n in KModel.parse(data).nodes]


def test_relu_fold_is_exact_where_add_then_relu_is(models):
    """The sum of two ReLU outputs is never negative: the ReLU's table is the identity on the sum's grid, so
    folding it into the add gives the same uint8 codes, one lookup table fewer."""
    pics = models["pics"]
    a = kmodelpy.compile(models["nonneg"], dataset=pics, **NORM)
    b = kmodelpy.compile(models["nonneg"], dataset=pics, fold_relu=True, **NORM)
    assert _ops(b).count("TableLookup1D") == _ops(a).count("TableLookup1D") - 1
    for p in sorted(pics.iterdir())[:3]:
        from kmodelpy.images import load_image_u8

        x = load_image_u8(p, 3, 16, 16)
        assert np.array_equal(Model.from_bytes(a).run(x)[0], Model.from_bytes(b).run(x)[0])


def test_relu_fold_clamps_like_the_relu(models):
    from kmodelpy.compiler.transforms.relu_fold import FoldReluIntoBinary
    from kmodelpy.compiler.rewrite import run_pass

    g, ctx, _ = _float_graph(models["block"], models["pics"])
    outs = [n.inputs[0].producer for n in g.nodes if n.op == "output"]
    xs = _pictures(models["pics"])
    before = [_run(g, x, outs)[0] for x in xs]
    assert run_pass(g, [FoldReluIntoBinary()], ctx) == 1
    assert not any(n.op == "fused_unary" for n in g.nodes)
    add = next(n for n in g.nodes if n.op == "binary")
    assert float(add["fused_activation"][0]) == 0.0
    for x, y0 in zip(xs, before):
        assert np.array_equal(_run(g, x, outs)[0], y0)
    rep = kmodelpy.compare(models["block"], pics := models["pics"], fold_relu=True, **NORM)
    rows = {r.key: r for r in rep.layers}
    assert rows["relu_e"].where == "CPU uint8" and rows["add_d"].merged_into == "relu_e"
    assert rows["relu_e"].cosine > 0.999 and len(list(pics.iterdir())) == rep.pictures


# ------------------------------------------------------------------------------ float heads
def test_float_heads_keep_the_small_output_conv_in_float(models):
    from kmodelpy.compiler.float_layers import mark_float_heads

    from kmodelpy.compiler import transforms as T
    from kmodelpy.compiler.rewrite import run_pass

    def after_p1():
        ctx = P.make_context(P.Options())
        g = P.import_graph(models["block"], io.StringIO())
        run_pass(g, T.pass_p1(ctx), ctx)
        return g

    assert mark_float_heads(after_p1()) == ["head"]
    assert mark_float_heads(after_p1(), limit=1000) == []  # 16·16·2·8 = 4096 multiply-adds
    rep = kmodelpy.compare(models["block"], models["pics"], float_heads=True, **NORM)
    rows = {r.key: r for r in rep.layers}
    assert rows["head"].where == "CPU float" and rows["pw_c"].where == "KPU"


def test_defaults_unchanged(models):
    a = kmodelpy.compile(models["block"], dataset=models["pics"], **NORM)
    b = kmodelpy.compile(models["block"], dataset=models["pics"], equalize_activations=False, range_clamp=True,
                         fold_relu=False, float_heads=False, **NORM)
    assert a == b
