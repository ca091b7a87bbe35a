"""TFLite import: graph structure as ncc builds it, the operators ncc refused (checked against
hand-computed numpy results on small models written with tflite_builder), and one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kmodelpy
from kmodelpy.errors import FormatError, KmodelpyError, UnsupportedError
from kmodelpy.frontends.tflite.reader import read_tflite
from kmodelpy.frontends.tflite.importer import import_tflite, supported_operators
from refcases import CASES
from tflite_builder import TFLiteBuilder

RNG = np.random.default_rng(1234)


def _run(tmp_path, b: TFLiteBuilder, ins, outs, *values):
    """Save, load with kmodelpy.load, run on NHWC values; returns outputs in TFLite layout (NHWC)."""
    path = b.save(tmp_path / "m.tflite", ins, outs)
    model = kmodelpy.load(path)
    feeds = [v.transpose(0, 3, 1, 2) if v.ndim == 4 else v for v in values]
    res = model.run(*feeds)
    return [r.transpose(0, 2, 3, 1) if r.ndim == 4 else r for r in res]


def _conv1x1_ref(x, w_ohwi, bias):
    return np.einsum("nhwi,oi->nhwo", x.astype(np.float64), w_ohwi[:, 0, 0, :].astype(np.float64)) + bias


def _x(shape, lo=-3.0, hi=3.0):
    return RNG.uniform(lo, hi, shape).astype(np.float32)


# ---------------------------------------------------------------- structure (compiler spec §4)
def test_structure_follows_ncc(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("img", [1, 4, 4, 3])
    w = b.const("w", _x((2, 1, 1, 3)))
    bias = b.const("b", _x((2,)))
    c = b.tensor("c", [1, 4, 4, 2])
    b.op("CONV_2D", [x, w, bias], [c], "Conv2DOptions", padding="SAME", stride_h=1, stride_w=1)
    r = b.tensor("r", [1, 4, 4, 2])
    b.op("RELU", [c], [r])
    g = import_tflite(read_tflite(b.save(tmp_path / "m.tflite", [x], [r])))
    ops = [n.op for n in g.nodes]
    # operators in file order, then the input (+transpose), the output (+transpose), the constants
    assert ops == ["transpose", "conv2d", "transpose", "constant", "binary", "input", "transpose", "transpose",
                   "output"]
    conv = g.nodes[1]
    assert conv["weights"].shape == (2, 3, 1, 1) and conv["groups"] == 1
    assert conv["padding_h"] == (0, 0) and conv["fused_activation"] == (-np.finfo(np.float32).max,
                                                                     np.finfo(np.float32).max)
    relu = g.nodes[4]
    assert relu["binary_op"] == "max" and relu.producer(1).op == "constant"
    assert relu.producer(1)["data"].shape == (1,) and relu.producer(0) is g.nodes[2]
    assert g.inputs[0].name == "img" and g.inputs[0].output.shape == (1, 3, 4, 4)
    assert g.nodes[6]["perm"] == (0, 2, 3, 1) and g.nodes[7]["perm"] == (0, 3, 1, 2)
    assert g.outputs[0].name == "r" and g.outputs[0].input.shape == (1, 2, 4, 4)
    assert [n.op for n in g.dfs()][-1] == "output"


def test_fully_connected_structure():
    g = import_tflite(CASES / "dense" / "model.tflite")
    mm = [n for n in g.nodes if n.op == "matmul"]
    assert len(mm) == 1
    a, bnode = mm[0].producer(0), mm[0].producer(1)
    assert a.op == "reshape" and bnode.op == "transpose" and bnode["perm"] == (1, 0)
    assert bnode.producer(0).op == "constant"
    assert bnode.output.shape[0] == a.output.shape[1]


def test_depthwise_and_padding_rule():
    g = import_tflite(CASES / "dwconv3x3_s2" / "model.tflite")
    dw = [n for n in g.nodes if n.op == "conv2d" and n["groups"] > 1]
    assert dw and dw[0]["weights"].shape[1] == 1 and dw[0]["weights"].shape[0] == dw[0]["groups"]
    # SAME, 3x3 stride 2 on an even size: total padding 1 → (0, 1)
    assert dw[0]["padding_h"] == (0, 1) and dw[0]["padding_w"] == (0, 1)


# ---------------------------------------------------------------- operators ncc refused
def test_prelu(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3])
    alpha = RNG.uniform(0.05, 0.5, (1, 1, 3)).astype(np.float32)
    a = b.const("alpha", alpha)
    y = b.tensor("y", [1, 4, 4, 3])
    b.op("PRELU", [x, a], [y])
    xv = _x((1, 4, 4, 3))
    (out,) = _run(tmp_path, b, [x], [y], xv)
    np.testing.assert_array_equal(out, np.where(xv >= 0, xv, alpha * xv))


def test_tanh_op_and_fused(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 1, 8, 8])
    y = b.tensor("y", [1, 1, 8, 8])
    b.op("TANH", [x], [y])
    xv = np.concatenate([np.linspace(-30, 30, 40), [0.0, 1e-6, -1e-6, 1e-3, -1e-3, 0.5, -0.5, 44, -44, 90, -90,
                                                     5, -5, 2, -2, 1e-8, 7, -7, 0.25, -0.25, 3, -3, 1, -1]])
    xv = xv.astype(np.float32).reshape(1, 1, 8, 8)
    (out,) = _run(tmp_path, b, [x], [y], xv)
    np.testing.assert_allclose(out, np.tanh(xv.astype(np.float64)), rtol=0, atol=3e-7)

    b = TFLiteBuilder()
    x = b.tensor("x", [1, 2, 2, 2])
    c = b.const("c", np.float32([0.5, -2.0]))
    y = b.tensor("y", [1, 2, 2, 2])
    b.op("MUL", [x, c], [y], "MulOptions", fused_activation="TANH")
    xv = _x((1, 2, 2, 2))
    (out,) = _run(tmp_path, b, [x], [y], xv)
    np.testing.assert_allclose(out, np.tanh(xv * np.float32([0.5, -2.0])), rtol=0, atol=3e-7)


def test_hard_swish(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 2])
    y = b.tensor("y", [1, 4, 4, 2])
    b.op("HARD_SWISH", [x], [y])
    xv = _x((1, 4, 4, 2), -6, 6)
    (out,) = _run(tmp_path, b, [x], [y], xv)
    np.testing.assert_allclose(out, xv * np.clip(xv + 3, 0, 6) / 6, rtol=1e-6, atol=1e-7)


def test_split_and_split_v(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 6])
    axis = b.const("axis", np.int32([3]))
    outs = [b.tensor(f"s{k}", [1, 4, 4, 2]) for k in range(3)]
    b.op("SPLIT", [axis, x], outs, "SplitOptions", num_splits=3)
    xv = _x((1, 4, 4, 6))
    res = _run(tmp_path, b, [x], outs, xv)
    for k in range(3):
        np.testing.assert_array_equal(res[k], xv[..., 2 * k:2 * k + 2])

    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 6])
    sizes = b.const("sizes", np.int32([1, -1, 2]))
    axis = b.const("axis", np.int32([-1]))
    outs = [b.tensor("a", [1, 4, 4, 1]), b.tensor("b", [1, 4, 4, 3]), b.tensor("c", [1, 4, 4, 2])]
    b.op("SPLIT_V", [x, sizes, axis], outs, "SplitVOptions", num_splits=3)
    res = _run(tmp_path, b, [x], outs, xv)
    for r, (lo, hi) in zip(res, [(0, 1), (1, 4), (4, 6)]):
        np.testing.assert_array_equal(r, xv[..., lo:hi])


def test_squeeze_expand_dims(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 1, 1, 8])
    s = b.tensor("s", [1, 8])
    b.op("SQUEEZE", [x], [s], "SqueezeOptions", squeeze_dims=[1, 2])
    ax = b.const("ax", np.int32([1]))
    e = b.tensor("e", [1, 1, 8])
    b.op("EXPAND_DIMS", [s, ax], [e])
    xv = _x((1, 1, 1, 8))
    (out,) = _run(tmp_path, b, [x], [e], xv)
    np.testing.assert_array_equal(out, xv.reshape(1, 1, 8))


def test_pack_unpack(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 3, 8])
    parts = [b.tensor(f"u{k}", [1, 8]) for k in range(3)]
    b.op("UNPACK", [x], parts, "UnpackOptions", num=3, axis=1)
    r = b.tensor("r", [1, 8])
    b.op("RELU", [parts[2]], [r])
    p = b.tensor("p", [1, 2, 8])
    b.op("PACK", [r, parts[0]], [p], "PackOptions", values_count=2, axis=1)
    xv = _x((1, 3, 8))
    (out,) = _run(tmp_path, b, [x], [p], xv)
    np.testing.assert_array_equal(out, np.stack([np.maximum(xv[:, 2], 0), xv[:, 0]], axis=1))


def test_shape_subgraph_is_folded(tmp_path):
    """TF2's Flatten: RESHAPE(x, PACK(STRIDED_SLICE(SHAPE(x))[0], 48))."""
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3])
    shp = b.tensor("shape", [4], "INT32")
    b.op("SHAPE", [x], [shp], "ShapeOptions", out_type="INT32")
    begin, end, strides = (b.const(n, np.int32([v])) for n, v in (("b", 0), ("e", 1), ("s", 1)))
    batch = b.tensor("batch", [], "INT32")
    b.op("STRIDED_SLICE", [shp, begin, end, strides], [batch], "StridedSliceOptions", shrink_axis_mask=1)
    c48 = b.const("c48", np.int32(48))
    new_shape = b.tensor("new_shape", [2], "INT32")
    b.op("PACK", [batch, c48], [new_shape], "PackOptions", values_count=2, axis=0)
    y = b.tensor("y", [1, 48])
    b.op("RESHAPE", [x, new_shape], [y])
    path = b.save(tmp_path / "m.tflite", [x], [y])
    g = import_tflite(path)
    assert [n.op for n in g.nodes] == ["reshape", "input", "transpose", "output"]
    assert g.nodes[0]["new_shape"] == (1, 48)
    xv = _x((1, 4, 4, 3))
    (out,) = _run(tmp_path, b, [x], [y], xv)
    np.testing.assert_array_equal(out, xv.reshape(1, 48))


def _conv1x1_model(b, x, w_tensor, bias, out_ch):
    y = b.tensor("y", [1, 4, 4, out_ch])
    b.op("CONV_2D", [x, w_tensor, bias], [y], "Conv2DOptions", padding="VALID", stride_h=1, stride_w=1)
    return y


def test_dequantize_fp16_weights(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3])
    w16 = _x((4, 1, 1, 3)).astype(np.float16)
    wq = b.const("w16", w16)
    w = b.tensor("w", [4, 1, 1, 3])
    b.op("DEQUANTIZE", [wq], [w])
    bias = _x((4,))
    y = _conv1x1_model(b, x, w, b.const("bias", bias), 4)
    xv = _x((1, 4, 4, 3))
    (out,) = _run(tmp_path, b, [x], [y], xv)
    np.testing.assert_allclose(out, _conv1x1_ref(xv, w16.astype(np.float32), bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("through_dequantize", [True, False])
def test_int8_per_channel_weights(tmp_path, through_dequantize):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3])
    q = RNG.integers(-127, 128, (4, 1, 1, 3)).astype(np.int8)
    scales = np.float32([0.01, 0.5, 0.002, 3.0])
    quant = (scales, np.zeros(4, np.int64), 0)
    if through_dequantize:
        wq = b.const("wq", q, quant=quant)
        w = b.tensor("w", [4, 1, 1, 3])
        b.op("DEQUANTIZE", [wq], [w])
    else:  # dynamic-range model: int8 weights straight into the conv
        w = b.const("wq", q, quant=quant)
    bias = _x((4,))
    y = _conv1x1_model(b, x, w, b.const("bias", bias), 4)
    xv = _x((1, 4, 4, 3))
    path = b.save(tmp_path / "m.tflite", [x], [y])
    from kmodelpy.frontends.tflite.model import load_tflite

    model = load_tflite(path, hybrid=False)  # dynamic-range: plain float on request (default: hybrid)
    assert model.hybrid is False and kmodelpy.load(path).hybrid is not through_dequantize
    out = model.run(xv.transpose(0, 3, 1, 2))[0].transpose(0, 2, 3, 1)
    w_real = q.astype(np.float32) * scales.reshape(4, 1, 1, 1)
    np.testing.assert_allclose(out, _conv1x1_ref(xv, w_real, bias), rtol=1e-5, atol=1e-4)
    # the compiler's import path keeps the dequantized float weights
    conv = [n for n in import_tflite(read_tflite(path)).nodes if n.op == "conv2d"][0]
    np.testing.assert_array_equal(conv["weights"], w_real.transpose(0, 3, 1, 2))


def _tflite_input_quant(v):
    """TFLite's AsymmetricQuantizeFloats (one batch item), written out scalar by scalar."""
    rmin, rmax = min(0.0, float(v.min())), max(0.0, float(v.max()))
    scale = (rmax - rmin) / 255.0
    zp = -128.0 - rmin / scale if 128 + abs(rmin / scale) < 127 + abs(rmax / scale) else 127.0 - rmax / scale
    zp = -128 if zp <= -128 else 127 if zp >= 127 else int(np.floor(abs(zp) + 0.5)) * (1 if zp > 0 else -1)
    sf = np.float32(scale)
    inv = np.float32(1.0 / float(sf))
    q = [min(127, max(-128, int(np.floor(abs(float(t)) + 0.5)) * (1 if t > 0 else -1) + zp))
         for t in (v.ravel() * inv).astype(np.float32)]
    return np.array(q).reshape(v.shape), sf, zp


def test_asymmetric_input_quantization():
    from kmodelpy.frontends.tflite.hybrid import asymmetric_quantize

    q, sf, zp = asymmetric_quantize(np.float32([[0.0, 1.0, 2.55, 1.275]]))
    assert zp[0] == -128 and sf[0] == np.float32(0.01)
    assert list(q[0]) == [-128, -28, 127, 0]  # 127.5 rounds half away from zero
    q, sf, zp = asymmetric_quantize(np.zeros((2, 3), np.float32))
    assert not q.any() and list(sf) == [1, 1] and list(zp) == [0, 0]
    x = RNG.uniform(-1.5, 4.0, (2, 5, 7)).astype(np.float32)
    q, sf, zp = asymmetric_quantize(x)
    for n in range(2):  # per batch item
        rq, rsf, rzp = _tflite_input_quant(x[n])
        np.testing.assert_array_equal(q[n], rq)
        assert sf[n] == rsf and zp[n] == rzp


@pytest.mark.parametrize("depthwise", [False, True])
def test_dynamic_range_conv_runs_tflite_hybrid_kernel(tmp_path, depthwise):
    """int8 per-channel weights + float input: TFLite's hybrid kernel (run-time asymmetric int8 input,
    int32 sums, f32 rescale), checked against a scalar loop; hybrid=False is the float conv."""
    from kmodelpy.frontends.tflite.model import load_tflite

    rng = np.random.default_rng(7)
    c, oc, k = 3, (3 if depthwise else 4), 3
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 5, 5, c])
    y = b.tensor("y", [1, 5, 5, oc])
    scales = rng.uniform(0.001, 0.05, oc).astype(np.float32)
    bias = rng.uniform(-1, 1, oc).astype(np.float32)
    opts = dict(padding="SAME", stride_h=1, stride_w=1, fused_activation="RELU6")
    if depthwise:
        wq = rng.integers(-127, 128, (1, k, k, oc)).astype(np.int8)
        w = b.const("w", wq, quant=(scales, np.zeros(oc, np.int64), 3))
        b.op("DEPTHWISE_CONV_2D", [x, w, b.const("b", bias)], [y], "DepthwiseConv2DOptions", depth_multiplier=1,
             **opts)
        w_ohwi = wq[0].transpose(2, 0, 1)[..., None]  # (oc, k, k, 1): channel o reads input channel o
    else:
        wq = rng.integers(-127, 128, (oc, k, k, c)).astype(np.int8)
        w = b.const("w", wq, quant=(scales, np.zeros(oc, np.int64), 0))
        b.op("CONV_2D", [x, w, b.const("b", bias)], [y], "Conv2DOptions", **opts)
        w_ohwi = wq
    path = b.save(tmp_path / "m.tflite", [x], [y])
    xv = rng.uniform(-0.5, 3.0, (1, 5, 5, c)).astype(np.float32)
    q, sf, zp = _tflite_input_quant(xv[0])
    ref = np.zeros((5, 5, oc), np.float32)
    for oy in range(5):
        for ox in range(5):
            for o in range(oc):
                acc = 0
                for ky in range(k):
                    for kx in range(k):
                        iy, ix = oy + ky - 1, ox + kx - 1
                        if 0 <= iy < 5 and 0 <= ix < 5:
                            chans = [o] if depthwise else range(c)
                            for j, ic in enumerate(chans):
                                acc += int(w_ohwi[o, ky, kx, j]) * (int(q[iy, ix, ic]) - zp)
                f = np.float32(acc)
                v = (f * scales[o]) * sf if depthwise else f * (scales[o] * sf)
                ref[oy, ox, o] = min(max(np.float32(v + bias[o]), 0), 6)
    model = load_tflite(path)
    assert model.hybrid
    out = model.run(xv.transpose(0, 3, 1, 2))[0].transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(out[0], ref)
    plain = load_tflite(path, hybrid=False).run(xv.transpose(0, 3, 1, 2))[0].transpose(0, 2, 3, 1)
    assert not np.array_equal(plain[0], ref)
    np.testing.assert_allclose(plain[0], ref, atol=0.25)  # int8 input rounding only


def test_cast_of_constant(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 2, 2, 3])
    ci = b.const("ci", np.int32([1, -2, 3]))
    cf = b.tensor("cf", [3])
    b.op("CAST", [ci], [cf], "CastOptions", in_data_type="INT32", out_data_type="FLOAT32")
    y = b.tensor("y", [1, 2, 2, 3])
    b.op("ADD", [x, cf], [y], "AddOptions")
    xv = _x((1, 2, 2, 3))
    (out,) = _run(tmp_path, b, [x], [y], xv)
    np.testing.assert_array_equal(out, xv + np.float32([1, -2, 3]))


def test_quantize_dequantize_of_constant(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4])
    c = b.const("c", np.float32([0.26, -1.0, 30.0, 0.04]))
    q = b.tensor("q", [4], "INT8", quant=([0.1], [0], 0))
    b.op("QUANTIZE", [c], [q])
    d = b.tensor("d", [4])
    b.op("DEQUANTIZE", [q], [d])
    y = b.tensor("y", [1, 4])
    b.op("ADD", [x, d], [y], "AddOptions")
    xv = _x((1, 4))
    (out,) = _run(tmp_path, b, [x], [y], xv)
    np.testing.assert_array_equal(out, xv + np.float32([0.3, -1.0, 12.7, 0.0]))  # 30 saturates at 127


def test_squared_difference_add_n_square(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 2, 2, 3])
    c = b.const("c", np.float32([0.5, -1.5, 2.0]))
    sd = b.tensor("sd", [1, 2, 2, 3])
    b.op("SQUARED_DIFFERENCE", [x, c], [sd])
    sq = b.tensor("sq", [1, 2, 2, 3])
    b.op("SQUARE", [x], [sq])
    y = b.tensor("y", [1, 2, 2, 3])
    b.op("ADD_N", [sd, sq, x], [y])
    xv = _x((1, 2, 2, 3))
    (out,) = _run(tmp_path, b, [x], [y], xv)
    d = xv - np.float32([0.5, -1.5, 2.0])
    np.testing.assert_array_equal(out, (d * d + xv * xv) + xv)


def test_conv_prelu_reference_case():
    """ncc refuses this model ("Not supported tflite opcode: PRELU"); we import and evaluate it."""
    path = CASES / "conv_prelu" / "model.tflite"
    tfl = read_tflite(path)
    w = tfl.tensors[tfl.operators[0].inputs[1]].data.astype(np.float64)  # OHWI
    bias = tfl.tensors[tfl.operators[0].inputs[2]].data.astype(np.float64)
    alpha = tfl.tensors[tfl.operators[1].inputs[1]].data.astype(np.float64)
    x = RNG.uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = np.zeros((1, 32, 32, 16)) + bias
    for ky in range(3):
        for kx in range(3):
            conv += np.einsum("nhwi,oi->nhwo", xp[:, ky:ky + 32, kx:kx + 32, :], w[:, ky, kx, :])
    ref = np.where(conv >= 0, conv, alpha * conv)
    (out,) = kmodelpy.load(path).run(x.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(out.transpose(0, 2, 3, 1), ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- errors: one line, KmodelpyError
def _one_line_error(exc_type, fn, *args):
    with pytest.raises(exc_type) as e:
        fn(*args)
    msg = str(e.value)
    assert isinstance(e.value, KmodelpyError) and msg and "\n" not in msg
    return msg


def test_not_a_flatbuffer(tmp_path):
    p = tmp_path / "m.tflite"
    p.write_bytes(b"this is not a model at all")
    assert "not a TFLite flatbuffer" in _one_line_error(FormatError, kmodelpy.load, p)


def test_truncated(tmp_path):
    data = (CASES / "conv1x1_s1" / "model.tflite").read_bytes()
    for n in (12, len(data) // 3, len(data) - 200):
        p = tmp_path / f"t{n}.tflite"
        p.write_bytes(data[:n])
        assert str(p) in _one_line_error(FormatError, kmodelpy.load, p)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 10_000), flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)),
                                                  min_size=1, max_size=4))
def test_damaged_files_give_kmodelpy_errors(cut, flips):
    """Any truncation or byte damage: either a model comes out or a KmodelpyError, nothing else."""
    from kmodelpy.frontends.tflite.reader import parse_tflite

    data = bytearray((CASES / "softmax_head" / "model.tflite").read_bytes())
    for pos, val in flips:
        data[pos % len(data)] = val
    if cut % 3 == 0:  # a third of the examples are also truncated
        del data[len(data) - cut % len(data):]
    try:
        import_tflite(parse_tflite(bytes(data), "damaged.tflite"))
    except KmodelpyError as e:
        assert "\n" not in str(e)


def test_keras_h5_and_saved_model(tmp_path):
    h5 = tmp_path / "model.tflite"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    msg = _one_line_error(FormatError, kmodelpy.load, h5)
    assert "Keras" in msg and "TFLiteConverter" in msg
    d = tmp_path / "saved.tflite"
    d.mkdir()
    (d / "saved_model.pb").write_bytes(b"\x08\x01")
    msg = _one_line_error(FormatError, kmodelpy.load, d)
    assert "SavedModel" in msg and "TFLiteConverter" in msg
    msg = _one_line_error(FormatError, read_tflite, d / "saved_model.pb")
    assert "SavedModel" in msg


def test_unsupported_operator(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4])
    y = b.tensor("the_output", [1, 4])
    b.op("CUSTOM:MyOp", [x], [y])
    msg = _one_line_error(UnsupportedError, kmodelpy.load, b.save(tmp_path / "m.tflite", [x], [y]))
    assert "custom operator 'MyOp'" in msg and "#0" in msg and "the_output" in msg
    assert "PRELU" in supported_operators() and "RESIZE_BILINEAR" in supported_operators()
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4])
    y = b.tensor("the_output", [1, 4])
    b.op("BATCH_MATMUL", [x, x], [y])
    msg = _one_line_error(UnsupportedError, kmodelpy.load, b.save(tmp_path / "m2.tflite", [x], [y]))
    assert "BATCH_MATMUL is not supported" in msg and "CONV_2D" in msg


def test_dynamic_shape(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 1, 1, 3], shape_signature=[1, -1, -1, 3])
    y = b.tensor("y", [1, 1, 1, 3])
    b.op("RELU", [x], [y])
    msg = _one_line_error(FormatError, kmodelpy.load, b.save(tmp_path / "m.tflite", [x], [y]))
    assert "dynamic" in msg and "'x'" in msg
    b = TFLiteBuilder()  # a dynamic batch alone is read as batch 1
    x = b.tensor("x", [1, 2, 2, 3], shape_signature=[-1, 2, 2, 3])
    y = b.tensor("y", [1, 2, 2, 3])
    b.op("RELU", [x], [y])
    xv = _x((1, 2, 2, 3))
    (out,) = _run(tmp_path, b, [x], [y], xv)
    np.testing.assert_array_equal(out, np.maximum(xv, 0))


def test_fully_quantized_model_is_refused(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4], "INT8", quant=([0.1], [0], 0))
    y = b.tensor("y", [1, 4], "INT8", quant=([0.1], [0], 0))
    b.op("RELU", [x], [y])
    msg = _one_line_error(UnsupportedError, kmodelpy.load, b.save(tmp_path / "m.tflite", [x], [y]))
    assert "'x'" in msg and "quantized" in msg and "optimizations" in msg
    b = TFLiteBuilder()  # float interface, int8 inside (QUANTIZE ... DEQUANTIZE)
    x = b.tensor("x", [1, 4])
    q = b.tensor("xq", [1, 4], "INT8", quant=([0.1], [0], 0))
    b.op("QUANTIZE", [x], [q])
    y = b.tensor("y", [1, 4])
    b.op("DEQUANTIZE", [q], [y])
    msg = _one_line_error(UnsupportedError, kmodelpy.load, b.save(tmp_path / "m.tflite", [x], [y]))
    assert "'xq'" in msg and "quantized" in msg


# ---------------------------------------------------------------- property: windowed ops vs numpy
def _tf_out_pad(size, k, stride, dil, same):
    eff = (k - 1) * dil + 1
    out = -(-size // stride) if same else (size - eff) // stride + 1
    total = max((out - 1) * stride + eff - size, 0)
    return out, total // 2


def _conv_ref(x, w_hwio, bias, stride, dil, same, groups):
    """NHWC float64 convolution with TFLite's SAME/VALID rule (independent of the importer)."""
    n, h, wd, c = x.shape
    kh, kw, _, oc = w_hwio.shape
    oh, ph = _tf_out_pad(h, kh, stride[0], dil[0], same)
    ow, pw = _tf_out_pad(wd, kw, stride[1], dil[1], same)
    xp = np.zeros((n, h + 2 * kh * dil[0] + stride[0] * oh, wd + 2 * kw * dil[1] + stride[1] * ow, c))
    xp[:, ph:ph + h, pw:pw + wd] = x
    out = np.zeros((n, oh, ow, oc)) + bias
    gi, go = c // groups, oc // groups
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, ky * dil[0]:ky * dil[0] + stride[0] * oh:stride[0],
                       kx * dil[1]:kx * dil[1] + stride[1] * ow:stride[1]]
            for g in range(groups):
                out[..., g * go:(g + 1) * go] += patch[..., g * gi:(g + 1) * gi] @ w_hwio[ky, kx, :, g * go:(g + 1) * go]
    return out


@settings(max_examples=25, deadline=None)
@given(h=st.integers(3, 9), w=st.integers(3, 9), c=st.integers(1, 4), k=st.integers(1, 4), s=st.integers(1, 3),
       d=st.integers(1, 2), same=st.booleans(), depthwise=st.booleans(), mult=st.integers(1, 2),
       act=st.sampled_from(["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]), seed=st.integers(0, 2**16))
def test_conv_property(tmp_path_factory, h, w, c, k, s, d, same, depthwise, mult, act, seed):
    if (k - 1) * d + 1 > min(h, w) or (d > 1 and s > 1):
        return
    rng = np.random.default_rng(seed)
    b = TFLiteBuilder()
    x = b.tensor("x", [1, h, w, c])
    oc = c * mult if depthwise else mult + 2
    oh, _ = _tf_out_pad(h, k, s, d, same)
    ow, _ = _tf_out_pad(w, k, s, d, same)
    y = b.tensor("y", [1, oh, ow, oc])
    bias = rng.uniform(-1, 1, oc).astype(np.float32)
    opts = dict(padding="SAME" if same else "VALID", stride_h=s, stride_w=s, dilation_h=d, dilation_w=d,
                fused_activation=act)
    if depthwise:
        wt = rng.uniform(-1, 1, (1, k, k, oc)).astype(np.float32)
        b.op("DEPTHWISE_CONV_2D", [x, b.const("w", wt), b.const("b", bias)], [y], "DepthwiseConv2DOptions",
             depth_multiplier=mult, **opts)
        w_hwio = wt[0].reshape(k, k, 1, oc)  # output channel = input channel · mult + j
        groups = c
    else:
        wt = rng.uniform(-1, 1, (oc, k, k, c)).astype(np.float32)
        b.op("CONV_2D", [x, b.const("w", wt), b.const("b", bias)], [y], "Conv2DOptions", **opts)
        w_hwio = wt.transpose(1, 2, 3, 0)
        groups = 1
    xv = rng.uniform(-2, 2, (1, h, w, c)).astype(np.float32)
    (out,) = _run(tmp_path_factory.mktemp("conv"), b, [x], [y], xv)
    ref = _conv_ref(xv.astype(np.float64), w_hwio.astype(np.float64), bias, (s, s), (d, d), same, groups)
    lo, hi = {"NONE": (-np.inf, np.inf), "RELU": (0, np.inf), "RELU6": (0, 6), "RELU_N1_TO_1": (-1, 1)}[act]
    np.testing.assert_allclose(out, np.clip(ref, lo, hi), rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(h=st.integers(2, 9), w=st.integers(2, 9), k=st.integers(1, 3), s=st.integers(1, 3), same=st.booleans(),
       kind=st.sampled_from(["MAX_POOL_2D", "AVERAGE_POOL_2D"]), seed=st.integers(0, 2**16))
def test_pool_property(tmp_path_factory, h, w, k, s, same, kind, seed):
    if k > min(h, w):
        return
    rng = np.random.default_rng(seed)
    oh, ph = _tf_out_pad(h, k, s, 1, same)
    ow, pw = _tf_out_pad(w, k, s, 1, same)
    b = TFLiteBuilder()
    x = b.tensor("x", [1, h, w, 2])
    y = b.tensor("y", [1, oh, ow, 2])
    b.op(kind, [x], [y], "Pool2DOptions", padding="SAME" if same else "VALID", stride_h=s, stride_w=s,
         filter_h=k, filter_w=k)
    xv = rng.uniform(-2, 2, (1, h, w, 2)).astype(np.float32)
    (out,) = _run(tmp_path_factory.mktemp("pool"), b, [x], [y], xv)
    ref = np.zeros((1, oh, ow, 2))
    for oy in range(oh):
        for ox in range(ow):
            y0, x0 = oy * s - ph, ox * s - pw
            win = xv[0, max(y0, 0):min(y0 + k, h), max(x0, 0):min(x0 + k, w)].astype(np.float64)
            ref[0, oy, ox] = win.max(axis=(0, 1)) if kind == "MAX_POOL_2D" else win.mean(axis=(0, 1))
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- evaluator hooks and the op registry
def test_evaluate_records_every_output_connector():
    from kmodelpy.ir.evaluate import evaluate

    g = import_tflite(CASES / "conv_sigmoid" / "model.tflite")
    seen = []
    x = RNG.uniform(0, 1, g.inputs[0].output.shape).astype(np.float32)
    outs, values = evaluate(g, [x], on_output=lambda oc, v: seen.append((oc, v)), keep=True)
    order = g.dfs()
    assert [oc for oc, _ in seen] == [oc for n in order for oc in n.outputs]
    for oc, v in seen:
        assert v.shape == oc.shape and v.dtype == np.float32
        np.testing.assert_array_equal(values[oc], v)
    last = g.outputs[0].input.producer
    np.testing.assert_array_equal(outs[0], values[last])


def test_registry_accepts_new_ops():
    from kmodelpy.ir.evaluate import evaluate
    from kmodelpy.ir.graph import Graph
    from kmodelpy.ir.ops import display_name, make, register_evaluator, register_op

    register_op("test_double_rows", "TestDoubleRows", infer=lambda attrs, ins: [(ins[0][0] * 2,) + ins[0][1:]])
    register_evaluator("test_double_rows", lambda node, args: [np.concatenate([args[0], args[0] * node["k"]])])
    g = Graph()
    inp = g.add("input", [], [(2, 3)], name="x")
    d = make(g, "test_double_rows", [inp.output], k=np.float32(3))
    g.add("output", [d.output], [])
    assert d.output.shape == (4, 3) and display_name("test_double_rows") == "TestDoubleRows"
    g.assign_names()
    assert d.name == "TestDoubleRows_0"
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = evaluate(g, [x])
    np.testing.assert_array_equal(y, np.concatenate([x, 3 * x]))


@pytest.mark.parametrize("kind", ["conv", "depthwise"])
def test_float_conv_is_xnnpack_fma(kind):
    """Float convolutions of the TFLite float reference: XNNPACK's bias + one FMA per tap, ky→kx→ic for
    convolutions, kx→ky for depthwise (scalar loop; the FMA is exact product + one f32 rounding)."""
    from kmodelpy.frontends.tflite.xnnpack import conv2d_xnnpack

    rng = np.random.default_rng(3)
    c, k = 3, 3
    groups, oc, g_ic = (3, 3, 1) if kind == "depthwise" else (1, 4, 3)
    x = rng.uniform(-2, 2, (1, c, 5, 6)).astype(np.float32)
    w = rng.uniform(-1, 1, (oc, g_ic, k, k)).astype(np.float32)
    bias = rng.uniform(-1, 1, oc).astype(np.float32)
    out = conv2d_xnnpack(x, w, bias, kind, groups, (1, 1), (1, 1), 2, 1, 1, 1, -6.0, 6.0)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    order = [(ky, kx) for kx in range(k) for ky in range(k)] if kind == "depthwise" else \
        [(ky, kx) for ky in range(k) for kx in range(k)]
    assert out.shape == (1, oc, 3, 6)
    for o in range(oc):
        for oy in range(3):
            for ox in range(6):
                acc = bias[o]
                for ky, kx in order:
                    for j in range(g_ic):
                        ic = o if kind == "depthwise" else j
                        acc = np.float32(float(acc) + float(xp[0, ic, oy * 2 + ky, ox + kx]) * float(w[o, j, ky, kx]))
                assert out[0, o, oy, ox] == min(max(acc, np.float32(-6)), np.float32(6))


# ---------------------------------------------------------------- real-world operators (issue 11)
@pytest.mark.parametrize("block, c", [(2, 8), (3, 9), (2, 4)])
def test_depth_to_space_is_tflites_dcr_order(tmp_path, block, c):
    """out[n, h·b + i, w·b + j, d] = in[n, h, w, (i·b + j)·C' + d] (TFLite's DEPTH_TO_SPACE)."""
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 3, 5, c])
    y = b.tensor("y", [1, 3 * block, 5 * block, c // block ** 2])
    b.op("DEPTH_TO_SPACE", [x], [y], "DepthToSpaceOptions", block_size=block)
    xv = _x((1, 3, 5, c))
    (out,) = _run(tmp_path, b, [x], [y], xv)
    cp = c // block ** 2
    want = np.zeros(out.shape, np.float32)
    for h in range(3):
        for w in range(5):
            for i in range(block):
                for j in range(block):
                    want[0, h * block + i, w * block + j] = xv[0, h, w, (i * block + j) * cp:(i * block + j + 1) * cp]
    np.testing.assert_array_equal(out, want)


def _transpose_conv_bias_ref(x, w, bias, stride, padding):
    """MediaPipe's transpose_conv_bias.cc: out = bias, then every input pixel scattered through the OHWI filter."""
    n, h, wd, c = x.shape
    oc, kh, kw, _ = w.shape
    pads = []
    for size, k, s in ((h, kh, stride[0]), (wd, kw, stride[1])):
        total = max(0, k - (size - 1) % s - 1) if padding == 1 else 0
        pads.append((s * (size - 1) + k - total, total // 2))
    (oh, ph), (ow, pw) = pads
    out = np.tile(bias.astype(np.float64), (n, oh, ow, 1))
    for iy in range(h):
        for ix in range(wd):
            for ky in range(kh):
                for kx in range(kw):
                    oy, ox = iy * stride[0] - ph + ky, ix * stride[1] - pw + kx
                    if 0 <= oy < oh and 0 <= ox < ow:
                        out[:, oy, ox] += x[:, iy, ix].astype(np.float64) @ w[:, ky, kx, :].T.astype(np.float64)
    return out.astype(np.float32)


@pytest.mark.parametrize("padding, stride, k, hw", [(1, (2, 2), 2, (4, 5)), (1, (2, 2), 3, (4, 4)),
                                                    (2, (2, 1), 3, (3, 4)), (1, (1, 1), 3, (5, 3))])
def test_mediapipe_transpose_conv_bias(tmp_path, padding, stride, k, hw):
    """The custom Convolution2DTransposeBias (selfie segmentation's last layer): custom options
    {padding, stride_w, stride_h} as int32; output size s·(in−1) + k − p."""
    xv = _x((1,) + hw + (3,))
    w = _x((2, k, k, 3), -1, 1)
    bias = _x((2,))
    ref = _transpose_conv_bias_ref(xv, w, bias, stride, padding)
    b = TFLiteBuilder()
    x = b.tensor("x", [1, hw[0], hw[1], 3])
    y = b.tensor("y", list(ref.shape))
    b.op("CUSTOM:Convolution2DTransposeBias", [x, b.const("w", w), b.const("b", bias)], [y],
         custom_options=np.array([padding, stride[1], stride[0]], "<i4").tobytes())
    (out,) = _run(tmp_path, b, [x], [y], xv)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    b.ops[0] = b.ops[0][:5] + (b"\x01\x00",)  # options too short: one line naming the operator
    msg = _one_line_error(UnsupportedError, kmodelpy.load, b.save(tmp_path / "bad.tflite", [x], [y]))
    assert "Convolution2DTransposeBias" in msg and "custom options" in msg


def _add_residual_bytes():
    return (CASES / "add_residual" / "model.tflite").read_bytes()


def _patch_tensor_dim(data: bytes, tensor: int, dim: int, value: int) -> bytes:
    import struct

    import tflite

    t = tflite.Model.GetRootAsModel(data, 0).Subgraphs(0).Tensors(tensor)
    out = bytearray(data)
    struct.pack_into("<i", out, t._tab.Vector(t._tab.Offset(4)) + 4 * dim, value)
    return bytes(out)


@pytest.mark.parametrize("tensor, dim, value, words", [
    (0, 3, 5, "has 5 channels but the filter"),          # the input contradicts the first conv's filter
    (5, 3, 8, "file declares tensor"),                   # a conv output declared with other channels
    (7, 1, 16, "file declares tensor"),                  # the ADD output declared with another height
])
def test_contradicting_tensor_shapes_are_one_line(tmp_path, capsys, tensor, dim, value, words):
    """A corrupted add_residual whose tensor shapes contradict each other: one line at import naming the
    operator, exit status 2 (it used to run silently, or fail as a ValueError in the conv kernel)."""
    from kmodelpy.cli import main

    path = tmp_path / "bad.tflite"
    path.write_bytes(_patch_tensor_dim(_add_residual_bytes(), tensor, dim, value))
    msg = _one_line_error(FormatError, kmodelpy.load, path)
    assert words in msg and "operator #" in msg and "bad.tflite" in msg
    assert main(["compile", str(path), str(tmp_path / "o.kmodel"), "--inference-type", "float"]) == 2
    assert "contradict" in capsys.readouterr().err and not (tmp_path / "o.kmodel").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(8, 10**6), st.sampled_from([0, 1, 2, 3, 4, 5, 8, 16, -1, 255, 1 << 24])),
                min_size=1, max_size=4))
def test_mutated_tflite_files_only_raise_kmodelpy_errors(edits):
    """Random int32 words of add_residual's .tflite overwritten (shapes, options, offsets, indices): loading and
    running either works or stops with a one-line KmodelpyError, never another exception."""
    import struct

    from kmodelpy.frontends.tflite.reader import parse_tflite
    from kmodelpy.ir.evaluate import evaluate

    data = bytearray(_add_residual_bytes())
    for pos, value in edits:
        struct.pack_into("<i", data, (pos % (len(data) - 4)) & ~3, value)
    try:
        graph = import_tflite(parse_tflite(bytes(data), "mutated.tflite"))
        if int(np.prod(graph.inputs[0].output.shape)) <= 1 << 16:
            evaluate(graph, [np.zeros(graph.inputs[0].output.shape, np.float32)])
    except KmodelpyError as e:
        assert str(e) and "\n" not in str(e)
