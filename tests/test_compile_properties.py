"""Property test: random small conv stacks compile, and the emulated uint8 kmodel stays within a few
quantization steps of the float TFLite graph (kernel, stride, padding, channels, activation and pooling
drawn at random; models written with tests/tflite_builder.py, calibrated on raw float samples)."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tflite_builder import TFLiteBuilder

F32 = np.float32

layer = st.fixed_dictionaries({
    "k": st.sampled_from([1, 3, 5]),
    "stride": st.sampled_from([1, 1, 2]),
    "padding": st.sampled_from(["SAME", "VALID"]),
    "oc": st.integers(1, 12),
    "act": st.sampled_from(["NONE", "RELU", "RELU6"]),
    "depthwise": st.booleans(),
    "pool": st.sampled_from([None, None, "MAX_POOL_2D", "AVERAGE_POOL_2D"]),
    # all-non-positive weight tensors: ncc's equalisation divides 0/0 there (deviation D7)
    "weights": st.sampled_from(["mixed", "mixed", "nonpos"]),
})


def out_size(n, k, s, padding):
    return -(-n // s) if padding == "SAME" else (n - k) // s + 1


def build_model(h, w, c, layers, seed):
    rng = np.random.default_rng(seed)
    b = TFLiteBuilder()
    x = b.tensor("x", [1, h, w, c])
    cur, shape = x, [1, h, w, c]
    for i, L in enumerate(layers):
        k, s = L["k"], L["stride"]
        oh, ow = out_size(shape[1], k, s, L["padding"]), out_size(shape[2], k, s, L["padding"])
        if oh < 1 or ow < 1:
            continue
        ic = shape[3]
        dw = L["depthwise"] and ic > 1
        oc = ic if dw else L["oc"]
        wshape = (1, k, k, ic) if dw else (oc, k, k, ic)
        wv = (rng.uniform(-1, 1, wshape) / np.sqrt(k * k * (1 if dw else ic))).astype(F32)
        if L["weights"] == "nonpos":
            wv = -np.abs(wv)
        wt = b.const(f"w{i}", wv)
        bias = b.const(f"b{i}", rng.uniform(-0.2, 0.2, oc).astype(F32))
        y = b.tensor(f"y{i}", [1, oh, ow, oc])
        if dw:
            b.op("DEPTHWISE_CONV_2D", [cur, wt, bias], [y], "DepthwiseConv2DOptions", padding=L["padding"],
                 stride_h=s, stride_w=s, depth_multiplier=1, fused_activation=L["act"])
        else:
            b.op("CONV_2D", [cur, wt, bias], [y], "Conv2DOptions", padding=L["padding"], stride_h=s, stride_w=s,
                 fused_activation=L["act"])
        cur, shape = y, [1, oh, ow, oc]
        if L["pool"] and oh >= 2 and ow >= 2:
            p = b.tensor(f"p{i}", [1, oh // 2, ow // 2, oc])
            b.op(L["pool"], [cur], [p], "Pool2DOptions", padding="VALID", stride_h=2, stride_w=2, filter_h=2,
                 filter_w=2, fused_activation="NONE")
            cur, shape = p, [1, oh // 2, ow // 2, oc]
    if cur == x:
        return None
    return b.build(inputs=[x], outputs=[cur])


OPS = ["conv1", "conv3", "dw3", "add_const", "mul_scalar", "relu", "relu6", "logistic", "leaky", "maxpool",
       "avgpool", "pad", "concat_self", "residual", "conv3_s2", "resize2x", "softmax", "slice", "bilinear_hp2x",
       "resize_tflite"]


def build_chain(h, w, c, ops, seed):
    """A chain of TFLite ops on an NHWC tensor (shapes kept small), ending with MEAN over H, W."""
    rng = np.random.default_rng(seed)
    b = TFLiteBuilder()
    x = b.tensor("x", [1, h, w, c])
    cur, shape = x, [1, h, w, c]
    for i, op in enumerate(ops):
        n, hh, ww, cc = shape
        if op in ("conv1", "conv3", "dw3"):
            k = 1 if op == "conv1" else 3
            oc = cc if op == "dw3" else int(rng.integers(1, 9))
            wshape = (1, k, k, cc) if op == "dw3" else (oc, k, k, cc)
            wv = (rng.uniform(-1, 1, wshape) / k).astype(F32)
            if rng.random() < 0.25:
                wv = -np.abs(wv)  # all-non-positive weights (deviation D7)
            y = b.tensor(f"t{i}", [1, hh, ww, oc])
            ins = [cur, b.const(f"w{i}", wv), b.const(f"b{i}", rng.uniform(-0.1, 0.1, oc).astype(F32))]
            if op == "dw3":
                b.op("DEPTHWISE_CONV_2D", ins, [y], "DepthwiseConv2DOptions", padding="SAME", stride_h=1, stride_w=1,
                     depth_multiplier=1, fused_activation="NONE")
            else:
                b.op("CONV_2D", ins, [y], "Conv2DOptions", padding="SAME", stride_h=1, stride_w=1,
                     fused_activation="NONE")
            shape = [1, hh, ww, oc]
        elif op == "conv3_s2":
            oh, ow = -(-hh // 2), -(-ww // 2)
            if oh < 2 or ow < 2:
                continue
            oc = int(rng.integers(1, 9))
            wv = (rng.uniform(-1, 1, (oc, 3, 3, cc)) / 3).astype(F32)
            if rng.random() < 0.25:
                wv = -np.abs(wv)  # all-non-positive weights (deviation D7)
            shape = [1, oh, ow, oc]
            y = b.tensor(f"t{i}", shape)
            b.op("CONV_2D", [cur, b.const(f"w{i}", wv), b.const(f"b{i}", np.zeros(oc, F32))], [y], "Conv2DOptions",
                 padding="SAME", stride_h=2, stride_w=2, fused_activation="RELU")
        elif op == "resize2x":
            if hh > 16 or ww > 16:
                continue
            shape = [1, 2 * hh, 2 * ww, cc]
            y = b.tensor(f"t{i}", shape)
            b.op("RESIZE_NEAREST_NEIGHBOR", [cur, b.const(f"s{i}", np.array([2 * hh, 2 * ww], np.int32))], [y],
                 "ResizeNearestNeighborOptions", align_corners=False)
        elif op in ("bilinear_hp2x", "resize_tflite"):  # TFLite's sampling: the lowering of issue 11
            if hh > 16 or ww > 16:
                continue
            if op == "bilinear_hp2x":  # UpSampling2D(interpolation='bilinear'): half-pixel, the KPU filter form
                kind, oh, ow, hp, ac = "RESIZE_BILINEAR", 2 * hh, 2 * ww, True, False
            else:  # fractional / downscaling half-pixel bilinear, align-corners or half-pixel nearest
                kind = ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR")[int(rng.integers(2))]
                oh, ow = (int(v) for v in rng.integers(2, 2 * max(hh, ww) + 1, 2))
                hp = bool(rng.integers(2))
                ac = not hp
            shape = [1, oh, ow, cc]
            y = b.tensor(f"t{i}", shape)
            b.op(kind, [cur, b.const(f"s{i}", np.array([oh, ow], np.int32))], [y],
                 "ResizeBilinearOptions" if kind == "RESIZE_BILINEAR" else "ResizeNearestNeighborOptions",
                 align_corners=ac, half_pixel_centers=hp)
        elif op == "softmax":
            y = b.tensor(f"t{i}", shape)
            b.op("SOFTMAX", [cur], [y], "SoftmaxOptions", beta=1.0)
        elif op == "slice":
            if hh < 3 or ww < 3:
                continue
            shape = [1, hh - 1, ww - 2, cc]
            y = b.tensor(f"t{i}", shape)
            b.op("STRIDED_SLICE", [cur, b.const(f"sb{i}", np.array([0, 1, 1, 0], np.int32)),
                                   b.const(f"se{i}", np.array([1, hh, ww - 1, cc], np.int32)),
                                   b.const(f"ss{i}", np.array([1, 1, 1, 1], np.int32))], [y], "StridedSliceOptions",
                 begin_mask=0, end_mask=0, ellipsis_mask=0, new_axis_mask=0, shrink_axis_mask=0)
        elif op == "add_const":
            y = b.tensor(f"t{i}", shape)
            b.op("ADD", [cur, b.const(f"k{i}", rng.uniform(-0.5, 0.5, cc).astype(F32))], [y], "AddOptions",
                 fused_activation="NONE")
        elif op == "mul_scalar":
            y = b.tensor(f"t{i}", shape)
            b.op("MUL", [cur, b.const(f"k{i}", np.array([rng.uniform(0.5, 2)], F32))], [y], "MulOptions",
                 fused_activation="NONE")
        elif op in ("relu", "relu6", "logistic"):
            y = b.tensor(f"t{i}", shape)
            b.op({"relu": "RELU", "relu6": "RELU6", "logistic": "LOGISTIC"}[op], [cur], [y])
        elif op == "leaky":
            y = b.tensor(f"t{i}", shape)
            b.op("LEAKY_RELU", [cur], [y], "LeakyReluOptions", alpha=0.1)
        elif op in ("maxpool", "avgpool"):
            if hh < 4 or ww < 4:
                continue
            shape = [1, hh // 2, ww // 2, cc]
            y = b.tensor(f"t{i}", shape)
            b.op("MAX_POOL_2D" if op == "maxpool" else "AVERAGE_POOL_2D", [cur], [y], "Pool2DOptions",
                 padding="VALID", stride_h=2, stride_w=2, filter_h=2, filter_w=2, fused_activation="NONE")
        elif op == "pad":
            shape = [1, hh + 2, ww + 1, cc]
            y = b.tensor(f"t{i}", shape)
            b.op("PAD", [cur, b.const(f"p{i}", np.array([[0, 0], [1, 1], [0, 1], [0, 0]], np.int32))], [y])
        elif op == "concat_self":
            shape = [1, hh, ww, 2 * cc]
            y = b.tensor(f"t{i}", shape)
            b.op("CONCATENATION", [cur, cur], [y], "ConcatenationOptions", axis=3, fused_activation="NONE")
        elif op == "residual":
            mid = b.tensor(f"m{i}", shape)
            b.op("CONV_2D", [cur, b.const(f"w{i}", (rng.uniform(-1, 1, (cc, 1, 1, cc)) + np.eye(cc).reshape(
                cc, 1, 1, cc)).astype(F32)), b.const(f"b{i}", np.zeros(cc, F32))], [mid], "Conv2DOptions",
                 padding="SAME", stride_h=1, stride_w=1, fused_activation="RELU")
            y = b.tensor(f"t{i}", shape)
            b.op("ADD", [cur, mid], [y], "AddOptions", fused_activation="NONE")
        cur = y
    out = b.tensor("out", [1, shape[3]])
    b.op("MEAN", [cur, b.const("axes", np.array([1, 2], np.int32))], [out], "ReducerOptions", keep_dims=False)
    return b.build(inputs=[x], outputs=[out])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(4, 12), st.integers(4, 12), st.sampled_from([1, 3, 4]),
       st.lists(st.sampled_from(OPS), min_size=1, max_size=5), st.integers(0, 2**31 - 1))
def test_random_op_chain_float_kmodel_equals_tflite(tmp_path_factory, h, w, c, ops, seed):
    """P1's folds and transpose motions preserve the float graph: a --inference-type float kmodel of a
    random op chain gives TFLite's outputs (up to float32 summation order)."""
    import kmodelpy
    import kmodelpy.compiler as C

    tmp = tmp_path_factory.mktemp("chain")
    model = tmp / "m.tflite"
    model.write_bytes(build_chain(h, w, c, ops, seed))
    path = C.compile_model(model, inference_type="float", output=tmp / "m.kmodel")
    x = np.random.default_rng(seed).uniform(0, 1, (1, c, h, w)).astype(F32)
    got = np.asarray(kmodelpy.load(path).run(x)[0], F32).reshape(-1)  # kmodels carry no output shapes
    want = np.asarray(kmodelpy.load(model).run(x)[0], F32).reshape(-1)
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) <= 1e-5 * max(1.0, float(np.abs(want).max()))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(6, 20), st.integers(6, 20), st.sampled_from([1, 3]), st.lists(layer, min_size=1, max_size=3),
       st.integers(0, 2**31 - 1))
# D9: a ReLU that is almost always 0 gives the next KPU conv a tiny input range (so < 2^-15); ncc's
# activation multiplier then rounds 0.5 -> 1 and doubles that layer's outputs
@example(h=6, w=6, c=1, seed=1, layers=[
    {"k": 5, "stride": 1, "padding": "SAME", "oc": 10, "act": "RELU", "depthwise": False, "pool": None,
     "weights": "nonpos"},
    {"k": 3, "stride": 1, "padding": "SAME", "oc": 4, "act": "NONE", "depthwise": False, "pool": None,
     "weights": "mixed"}])
# D10: two stacked stride-2 1x1 convs; ncc fuses the second subsampling into the conv that already has
# the first one's select pool, so one subsampling is lost (outputs taken from the wrong positions)
@example(h=13, w=13, c=1, seed=0, layers=[
    {"k": 1, "stride": 2, "padding": "SAME", "oc": 1, "act": "NONE", "depthwise": False, "pool": None,
     "weights": "mixed"},
    {"k": 1, "stride": 2, "padding": "SAME", "oc": 2, "act": "NONE", "depthwise": False, "pool": None,
     "weights": "mixed"}])
def test_random_conv_stack_tracks_float(tmp_path_factory, h, w, c, layers, seed):
    import kmodelpy
    import kmodelpy.compiler as C

    data = build_model(h, w, c, layers, seed)
    if data is None:
        return
    tmp = tmp_path_factory.mktemp("prop")
    model = tmp / "m.tflite"
    model.write_bytes(data)
    rng = np.random.default_rng(seed)
    ds = tmp / "calib"
    ds.mkdir()
    samples = [rng.uniform(0, 1, (c, h, w)).astype(F32) for _ in range(6)]
    for i, s in enumerate(samples):
        s.tofile(ds / f"{i}.bin")
    kpath = C.compile_model(model, dataset=ds, dataset_format="raw", input_type="float", output=tmp / "m.kmodel")
    km, tf = kmodelpy.load(kpath), kmodelpy.load(model)
    for s in samples[:3]:
        x = s.reshape(1, c, h, w)
        got, want = np.asarray(km.run(x)[0], F32), np.asarray(tf.run(x)[0], F32)
        assert got.shape == want.shape
        lo, hi = min(0.0, float(want.min())), max(0.0, float(want.max()))
        # one output quantization step; the floor covers outputs much narrower than the layers before them
        # (inputs are in [0, 1] and the weights keep activations around unit scale)
        step = max(hi - lo, 0.25) / 255
        err = np.abs(got - want)
        # every layer adds at most a few steps of rounding; allow 4 steps per layer at the worst point
        assert float(err.max()) <= (4 * len(layers) + 2) * step * 3, (float(err.max()), step)
        assert float(err.mean()) <= (2 * len(layers) + 1) * step, (float(err.mean()), step)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(4, 12), st.integers(4, 12), st.sampled_from([1, 3, 4]),
       st.lists(st.sampled_from(OPS), min_size=1, max_size=4), st.integers(0, 2**31 - 1))
# D12: MUL by a scalar, then RELU6: fuse_clamp_binary moves the clamp into the MUL, and ncc's fuse_one_binary
# then drops it (negative outputs after a RELU6)
@example(h=4, w=4, c=1, ops=["conv1", "mul_scalar", "relu6"], seed=0)
# D45: a RELU conv followed by LOGISTIC (absorbed into the KPU activation): ncc's segment 0 outputs code 0 (0.0) for
# every pre-activation <= 0 where sigmoid(relu(x)) is 0.5 (outputs 0.13-0.49 where float gives 0.51-0.55)
@example(h=7, w=7, c=1, ops=["conv3_s2", "logistic"], seed=0)
# D46: the half-pixel 2x bilinear lowering's crop, then a zero PAD: ncc's fold_pad_pad summed them into a smaller
# crop (the padded zeros became replicated edge data: mean 0.447 where float gives 0.361)
@example(h=4, w=4, c=1, ops=["bilinear_hp2x", "pad"], seed=0)
def test_random_op_chain_uint8_tracks_float(tmp_path_factory, h, w, c, ops, seed):
    """The same chains compiled for uint8 (calibrated on raw samples) stay close to the float model."""
    import kmodelpy
    import kmodelpy.compiler as C

    tmp = tmp_path_factory.mktemp("chainq")
    model = tmp / "m.tflite"
    model.write_bytes(build_chain(h, w, c, ops, seed))
    rng = np.random.default_rng(seed)
    ds = tmp / "calib"
    ds.mkdir()
    samples = [rng.uniform(0, 1, (c, h, w)).astype(F32) for _ in range(6)]
    for i, s in enumerate(samples):
        s.tofile(ds / f"{i}.bin")
    path = C.compile_model(model, dataset=ds, dataset_format="raw", input_type="float", output=tmp / "m.kmodel")
    km, tf = kmodelpy.load(path), kmodelpy.load(model)
    for s in samples[:2]:
        x = s.reshape(1, c, h, w)
        got = np.asarray(km.run(x)[0], F32).reshape(-1)
        want = np.asarray(tf.run(x)[0], F32).reshape(-1)
        scale = max(float(np.abs(want).max()), 0.05)
        assert float(np.abs(got - want).max()) <= 0.06 * (len(ops) + 1) * scale, (got, want)
