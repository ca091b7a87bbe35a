"""Reproduce ncc's quantization numbers on the reference micro models (compiler spec §7.1-7.10).

For each case the float weights come from model.tflite, the calibration ranges are computed here from
the case's dataset (PNG → ``f32(v)·f32(1/255)`` RGB planes, §7.1; raw float32 for iris) with the
emulator's float kernels (conv2d starting at the bias, taps ic → ky → kx; matmul; glibc expf), and every
field our quantization math derives is compared with the node ncc wrote into ncc.kmodel.
"""
from __future__ import annotations

import glob
from functools import lru_cache

import cv2
import numpy as np
import pytest

from kmodelpy.compiler import fused_unary as fu
from kmodelpy.compiler.cpu_quant_params import fused_unary_lut, quantized_binary_params, quantized_conv2d_params
from kmodelpy.compiler.kpu_params import kpu_conv_params
from kmodelpy.compiler.l2_calibration import Histogram, print_line
from kmodelpy.compiler.quant import FLT_MAX, Range, fixup_range, get_quant_param, get_range
from kmodelpy.format.kmodel import KModel
from kmodelpy.frontends.tflite.reader import read_tflite
from kmodelpy.ops.binary import binary
from kmodelpy.ops.conv2d import conv2d
from kmodelpy.ops.matmul import matmul
from kmodelpy.ops.reduce import REDUCE_MEAN as REDUCE_MEAN_R
from kmodelpy.ops.reduce import reduce
from kmodelpy.ops.reduce_window2d import REDUCE_MAX, REDUCE_MEAN, reduce_window2d

from refcases import CASES, case_json

F32 = np.float32
NONE = (-FLT_MAX, FLT_MAX)
ACTS = {"NONE": NONE, "RELU": (F32(0), FLT_MAX), "RELU6": (F32(0), F32(6)), "RELU_N1_TO_1": (F32(-1), F32(1))}


# --------------------------------------------------------------------------- data and float model


def _dataset_files(case: str, pattern: str) -> list[str]:
    args = case_json(case)["ncc_args"]
    d = CASES / case / args[args.index("--dataset") + 1]
    return sorted(glob.glob(str(d / "**" / pattern), recursive=True))


@lru_cache(maxsize=None)
def _images(case: str) -> tuple[np.ndarray, ...]:
    """Calibration batches [1, 3, H, W]: OpenCV BGR decode, RGB planes, ``f32(v)·f32(1/255)`` (§7.1)."""
    out = []
    for f in _dataset_files(case, "*.png"):
        im = cv2.imread(f, cv2.IMREAD_COLOR)
        planes = im[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
        out.append((planes * F32(1.0 / 255.0)).astype(np.float32)[None])
    assert out, f"{case}: no calibration images"
    return tuple(out)


@lru_cache(maxsize=None)
def _model(case: str):
    return read_tflite(CASES / case / "model.tflite")


@lru_cache(maxsize=None)
def _kmodel(case: str) -> KModel:
    return KModel.parse((CASES / case / "ncc.kmodel").read_bytes(), case)


def _nodes(case: str, name: str) -> list:
    return [n.op for n in _kmodel(case).nodes if type(n.op).__name__ == name]


def _conv(case: str, op_index: int) -> dict:
    """Float conv of the TFLite model in nncase's layout (OIHW; depthwise [C, 1, k, k])."""
    t = _model(case)
    op = t.operators[op_index]
    w = t.tensors[op.inputs[1]].data
    depthwise = op.builtin == "DEPTHWISE_CONV_2D"
    w = w.transpose(3, 0, 1, 2) if depthwise else w.transpose(0, 3, 1, 2)
    b = t.tensors[op.inputs[2]].data
    return dict(w=np.ascontiguousarray(w, np.float32), b=np.asarray(b, np.float32), depthwise=depthwise,
                act=ACTS[op.options["fused_activation"]], k=w.shape[2])


def _run_conv(x: np.ndarray, c: dict) -> np.ndarray:
    """Float conv as evaluated at calibration time: stride 1, SAME-style implicit padding k//2
    (a KPU conv runs at full resolution, §7.6), fused clamp."""
    p = c["k"] // 2
    groups = c["w"].shape[0] if c["depthwise"] else 1
    return conv2d(x, c["w"], c["b"], groups, (p, p), (p, p), 1, 1, 1, 1, c["act"][0], c["act"][1])


def _union(ranges) -> Range:
    r = None
    for v in ranges:
        g = get_range(v)
        r = g if r is None else r.union(g)
    return r


LEAKY = lambda alpha: (fu.FuOp.ldx(), fu.FuOp.constant(alpha), fu.FuOp.binary("mul", 0, 1), fu.FuOp.ldx(),  # noqa: E731
                       fu.FuOp.binary("max", 3, 2))
SIGMOID = (fu.FuOp.ldx(), fu.FuOp.unary("neg", 0), fu.FuOp.unary("exp", 1), fu.FuOp.constant(1.0),
           fu.FuOp.binary("add", 3, 2), fu.FuOp.constant(1.0), fu.FuOp.binary("div", 5, 4))


def _program(case: str, op_index: int | None):
    if op_index is None:
        return None
    op = _model(case).operators[op_index]
    if op.builtin == "LEAKY_RELU":
        return LEAKY(F32(op.options["alpha"]))
    if op.builtin == "LOGISTIC":
        return SIGMOID
    raise AssertionError(op.builtin)


# --------------------------------------------------------------------------- KPU convs


def _tf_padding(size: int, k: int, stride: int, padding: str) -> tuple[int, int]:
    if padding == "VALID":
        return (0, 0)
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return (total // 2, total - total // 2)


def _pad_hw(x: np.ndarray, ph, pw) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), tuple(ph), tuple(pw))).astype(np.float32)


def _fake_kpu_output(x: np.ndarray, c: dict, stride: int, pad_h, pad_w) -> np.ndarray:
    """What ncc's calibration records for a KPU conv (§6.2, §7.6): the stride-1 "same" conv on the input
    padded by the non-negative part of (TF padding − KPU padding); for a non-depthwise stride-2 conv the
    slice is fused into a select pool (extra zero row/column as the rule says), and the range covers the
    subsampled output including rows a later crop removes. Other strides / depthwise: full resolution."""
    kp = c["k"] // 2
    rel_h, rel_w = (pad_h[0] - kp, pad_h[1] - kp), (pad_w[0] - kp, pad_w[1] - kp)
    xin = _pad_hw(x, [max(v, 0) for v in rel_h], [max(v, 0) for v in rel_w])
    if stride != 2 or c["depthwise"]:
        return _run_conv(xin, c)
    begin_h, begin_w = -min(rel_h[0], 0), -min(rel_w[0], 0)  # fold_pad_strided_slice
    h_s = xin.shape[2]
    sel_h = [begin_h % 2, 0]
    if (h_s + sel_h[0]) % 2:
        sel_h[1] += 1
    sel_w = [0, 1 if xin.shape[3] % 2 else 0]
    full = _run_conv(_pad_hw(xin, sel_h, sel_w), c)
    oh, ow = full.shape[2] // 2, full.shape[3] // 2
    return full[:, :, 0::2, begin_w % 2::2][:, :, :oh, :ow]


def _tf_conv(x: np.ndarray, c: dict, stride: int, pad_h, pad_w) -> np.ndarray:
    """The float op as the graph evaluates it downstream (what the next layer consumes)."""
    groups = c["w"].shape[0] if c["depthwise"] else 1
    return conv2d(x, c["w"], c["b"], groups, tuple(pad_h), tuple(pad_w), stride, stride, 1, 1, *c["act"])


# case -> number of leading KPU convs checked (in kmodel node order = TFLite op order here)
KPU_CASES = {
    "conv3x3_s1_same": 1, "conv1x1_s1": 1, "conv_bn_relu": 1, "conv_bn_relu6": 1, "conv_leakyrelu": 1,
    "conv_sigmoid": 1, "conv_avgpool2x2": 1, "conv_maxpool2x2": 1, "conv_maxpool3x3_s2": 1, "conv_maxpool4x4": 1,
    "dwconv3x3_s1": 2, "dwconv3x3_s2": 2, "add_residual": 2, "add_residual__no_qbin": 2, "concat_channels": 2,
    "conv3x3_s2_same": 1, "conv3x3_s2_valid": 1, "conv3x3_s3": 1, "pad_explicit": 1, "global_avgpool": 1,
    "reshape_transpose": 1, "upsample_nearest": 1, "conv_transpose": 1, "dense": 1, "output_2x2": 3,
    "softmax_head": 2, "large_input_320x240": 3, "many_channels_1024": 3, "line_follower_kpu": 5,
    "line_follower_stock": 3, "line_follower_stock__l2": 3, "line_follower_stock__mean_std": 3,
    "line_follower_stock__wqt1000": 3, "line_follower_stock__float_input": 3, "add_residual__float_input": 2,
    "conv3x3_s1_same__float_input": 1, "dense__float_input": 1,
}


L2_LINES: dict[str, list[str]] = {}  # case -> the l2 lines our chain produced


@lru_cache(maxsize=None)
def _kpu_chain(case: str):
    """Walk the TFLite ops, float-evaluating over the dataset: PADs fold into the next conv's padding,
    LEAKY_RELU/LOGISTIC right after a conv are absorbed into its activation. Returns per KPU conv
    (conv, program, iq, yq, zq, boundary range, boundary output batch)."""
    t = _model(case)
    args = case_json(case)["ncc_args"]
    l2 = "--calibrate-method" in args and args[args.index("--calibrate-method") + 1] == "l2"

    def rng(v):  # no_clip range, or the l2 optimum over the same data (§7.3), remembering ncc's print line
        if not l2:
            return get_range(v)
        h = Histogram(fixup_range(get_range(v)))
        h.record(v)
        opt = h.optimal_range()
        L2_LINES.setdefault(case, []).append(print_line(h.range, opt))
        return opt

    x0 = np.concatenate(_images(case))  # all calibration images as one batch (ranges are order-free)
    if "--input-mean" in args or "--input-std" in args:  # fixed input range, normalised data (§7.1, §7.3)
        mean = F32(args[args.index("--input-mean") + 1]) if "--input-mean" in args else F32(0)
        std = F32(args[args.index("--input-std") + 1]) if "--input-std" in args else F32(1)
        x0 = ((x0 - mean).astype(F32) / std).astype(F32)
        r0 = Range(F32(F32(0 - mean) / std), F32(F32(1 - mean) / std))
    else:
        r0 = rng(x0)
    data = {t.inputs[0]: (x0, r0, ((0, 0), (0, 0)))}
    layers = []
    for i, op in enumerate(t.operators):
        if len(layers) == KPU_CASES[case] or op.inputs[0] not in data:
            break
        x, in_range, extra = data[op.inputs[0]]
        if op.builtin == "PAD":
            p = t.tensors[op.inputs[1]].data
            data[op.outputs[0]] = (x, in_range, ((int(p[1][0]), int(p[1][1])), (int(p[2][0]), int(p[2][1]))))
            continue
        if op.builtin in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            # CPU pool at calibration time (KPU pool fusion comes after quantization); range broadcast
            o = op.options
            ph = _tf_padding(x.shape[2], o["filter_h"], o["stride_h"], o["padding"])
            pw = _tf_padding(x.shape[3], o["filter_w"], o["stride_w"], o["padding"])
            mx = op.builtin == "MAX_POOL_2D"
            y = reduce_window2d(x, REDUCE_MAX if mx else REDUCE_MEAN, o["filter_h"], o["filter_w"], o["stride_h"],
                                o["stride_w"], 1, 1, ph, pw, -FLT_MAX if mx else 0.0, *ACTS[o["fused_activation"]])
            data[op.outputs[0]] = (y, in_range, ((0, 0), (0, 0)))
            continue
        if op.builtin not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        c = _conv(case, i)
        o, kp = op.options, c["k"] // 2
        ph = [a + b for a, b in zip(_tf_padding(x.shape[2] + sum(extra[0]), c["k"], o["stride_h"], o["padding"]), extra[0])]
        pw = [a + b for a, b in zip(_tf_padding(x.shape[3] + sum(extra[1]), c["k"], o["stride_w"], o["padding"]), extra[1])]
        y = _fake_kpu_output(x, c, o["stride_h"], ph, pw)
        yr = rng(y)
        # the graph's own output (what the next layer reads); without stride or crop it is y itself
        out = y if o["stride_h"] == 1 and min(ph + pw) >= kp else _tf_conv(x, c, o["stride_h"], ph, pw)
        nxt = [k for k in t.operators[i + 1:] if op.outputs[0] in k.inputs]
        prog, out_t = None, op.outputs[0]
        if len(nxt) == 1 and nxt[0].builtin in ("LEAKY_RELU", "LOGISTIC"):
            prog, out_t = _program(case, t.operators.index(nxt[0])), nxt[0].outputs[0]
            y = fu.evaluate(prog, y.ravel()).reshape(y.shape)
            out = fu.evaluate(prog, out.ravel()).reshape(out.shape)
        zr = rng(y) if prog else yr
        layers.append((c, prog, get_quant_param(in_range), get_quant_param(yr), get_quant_param(zr), zr, out))
        data[out_t] = (out, zr, ((0, 0), (0, 0)))
    return layers


def _compare_kpu(ours, node) -> list[str]:
    la = node.layer_argument
    checks = {
        "weights": np.array_equal(ours.weights.ravel(), node.weights.ravel()),
        "pad_value": ours.pad_value == la.pad_value,
        "arg_x": ours.arg_x == la.arg_x,
        "shift_x": ours.shift_x == la.shr_x,
        "arg_w": ours.arg_w == la.arg_w,
        "shift_w": ours.shift_w == la.shr_w,
        "arg_add": ours.arg_add == la.arg_add,
        "norm_mul": np.array_equal(ours.norm_mul, node.bn.norm_mul),
        "norm_shift": np.array_equal(ours.norm_shift, node.bn.norm_shift),
        "norm_add": np.array_equal(ours.norm_add, node.bn.norm_add),
        "act_start_x": np.array_equal(ours.act_start_x, node.activation.x_start),
        "act_mul": np.array_equal(ours.act_mul, node.activation.y_mul),
        "act_shift": np.array_equal(ours.act_shift, node.activation.shift_number),
        "act_add": np.array_equal(ours.act_add, node.activation.add),
        "bn_words": np.array_equal(ours.batch_norm().pack(), node.bn.pack()),
        "act_words": np.array_equal(ours.activation_table().pack_words() & np.uint64((1 << 60) - 1),
                                    node.activation.pack_words() & np.uint64((1 << 60) - 1)),
    }
    return [k for k, ok in checks.items() if not ok]


@pytest.mark.parametrize("case", sorted(KPU_CASES))
def test_kpu_conv_fields_match_ncc(case):
    layers = _kpu_chain(case)
    nodes = _nodes(case, "KPUConv2D")[: len(layers)]
    assert len(layers) == KPU_CASES[case]
    bad = {}
    for i, ((c, prog, iq, yq, zq, _, _), node) in enumerate(zip(layers, nodes)):
        ours = kpu_conv_params(c["w"], c["b"], c["act"], iq, yq, zq, prog, name=f"{case}[{i}]")
        wrong = _compare_kpu(ours, node)
        if wrong:
            bad[i] = wrong
    assert not bad, f"{case}: fields differing from ncc per KPU layer: {bad}"


@pytest.mark.parametrize("case", ["conv3x3_s1_same", "conv_leakyrelu", "conv_sigmoid", "conv_avgpool2x2",
                                  "conv_bn_relu6"])
def test_kpu_output_dequantize_matches_ncc(case):
    """The boundary output's quant params (zq) are what the final Dequantize node holds."""
    *_, (_, _, _, _, zq, _, _) = _kpu_chain(case)
    dq = _nodes(case, "Dequantize")[-1]
    assert (dq.zero_point, F32(dq.scale)) == (zq.zero_point, F32(zq.scale))


@pytest.mark.parametrize("case", ["conv3x3_s1_same__float_input", "add_residual__float_input", "dense__float_input",
                                  "line_follower_stock__float_input"])
def test_float_input_quantize_matches_ncc(case):
    """``--input-type float``: the graph input is quantized in the model with the first KPU conv's iq."""
    iq = _kpu_chain(case)[0][2]
    q = _nodes(case, "Quantize")[0]
    assert (q.zero_point, F32(q.scale)) == (iq.zero_point, iq.scale)


# --------------------------------------------------------------------------- CPU quantized ops


def test_conv5x5_quantized_conv2d_matches_ncc():
    case = "conv5x5"
    c = _conv(case, 0)
    xs = list(_images(case))
    ys = [conv2d(x, c["w"], c["b"], 1, (2, 2), (2, 2), 1, 1, 1, 1, *c["act"]) for x in xs]
    iq, yq = get_quant_param(_union(xs)), get_quant_param(_union(ys))
    p = quantized_conv2d_params(c["w"], c["b"], iq, yq)
    (node,) = _nodes(case, "QuantizedConv2D")
    got = dict(weights=np.array_equal(p.weights.ravel(), node.weights.ravel()),
               bias=np.array_equal(p.bias, node.bias), input_offset=p.input_offset == node.input_offset,
               filter_offset=p.filter_offset == node.filter_offset, output_mul=p.output_mul == node.output_mul,
               output_shift=p.output_shift == node.output_shift, output_offset=p.output_offset == node.output_offset)
    assert all(got.values()), got
    dq = _nodes(case, "Dequantize")[-1]
    assert (dq.zero_point, F32(dq.scale)) == (yq.zero_point, yq.scale)


def test_add_residual_quantized_binary_matches_ncc():
    case = "add_residual"
    (_, _, _, _, _, r0, z0), (_, _, _, _, _, r1, z1) = _kpu_chain(case)
    op = _model(case).operators[2]
    out = binary(z0, z1, 0, *ACTS[op.options["fused_activation"]])
    i1q, i2q, yq = get_quant_param(r0), get_quant_param(r1), get_quant_param(get_range(out))
    p = quantized_binary_params("add", i1q, i2q, yq)
    (node,) = _nodes(case, "QuantizedBinary")
    fields = ("input_a_offset", "input_a_mul", "input_a_shift", "input_b_offset", "input_b_mul", "input_b_shift",
              "output_mul", "output_shift", "output_offset")
    wrong = [f for f in fields if getattr(p, f) != getattr(node, f)]
    assert not wrong, {f: (getattr(p, f), getattr(node, f)) for f in wrong}


def _softmax_lut_check(case: str, logits: list[np.ndarray]):
    """Softmax → ``max``, ``sub``, fused_unary ``[mul β, exp]`` → quantize → LUT → dequantize (§4.2, §7.10)."""
    t = _model(case)
    subs = [(h - h.max(axis=-1, keepdims=True)).astype(np.float32) for h in logits]
    beta = F32([op for op in t.operators if op.builtin == "SOFTMAX"][0].options["beta"])
    # importer: sub → mul(β) → exp; fuse_one_binary + fuse_one_unary + concat give this program
    prog = fu.concat((fu.FuOp.ldx(), fu.FuOp.constant(beta), fu.FuOp.binary("mul", 0, 1)),
                     (fu.FuOp.ldx(), fu.FuOp.unary("exp", 0)))
    exps = [fu.evaluate(prog, s) for s in subs]
    iq, yq = get_quant_param(_union(subs)), get_quant_param(_union(exps))
    (q,) = _nodes(case, "Quantize")[-1:]
    (lut_node,) = _nodes(case, "TableLookup1D")
    dq = _nodes(case, "Dequantize")[-1]
    assert (q.zero_point, F32(q.scale)) == (iq.zero_point, iq.scale)
    assert (dq.zero_point, F32(dq.scale)) == (yq.zero_point, yq.scale)
    table = np.frombuffer(_kmodel(case).constants, np.uint8)[lut_node.table.start: lut_node.table.start + 256]
    assert np.array_equal(fused_unary_lut(prog, iq, yq), table)


def _fc(t, op, h: np.ndarray) -> np.ndarray:
    w = t.tensors[op.inputs[1]].data.astype(np.float32)
    b = t.tensors[op.inputs[2]].data.astype(np.float32)
    return matmul(h, np.ascontiguousarray(w.T), b, *ACTS[op.options["fused_activation"]])


def test_iris_softmax_lut_matches_ncc():
    """iris_mlp: the float MLP stays on the CPU (too small); the softmax exp becomes a LUT."""
    case = "iris_mlp"
    t = _model(case)
    logits = []
    for f in _dataset_files(case, "*.bin"):
        h = np.fromfile(f, dtype="<f4").reshape(1, -1)
        for op in (op for op in t.operators if op.builtin == "FULLY_CONNECTED"):
            h = _fc(t, op, h)
        logits.append(h)
    _softmax_lut_check(case, logits)


def test_softmax_head_lut_matches_ncc():
    """softmax_head: 2 KPU convs → global mean (reduce) → float FC → softmax LUT."""
    case = "softmax_head"
    t = _model(case)
    out = _kpu_chain(case)[-1][-1]
    fc = [op for op in t.operators if op.builtin == "FULLY_CONNECTED"][0]
    logits = []
    for x in out:
        n, c, h, w = (1,) + x.shape
        m = reduce(x, REDUCE_MEAN_R, [n, c, h, w], [n, c, 1, 1], 0.0).reshape(1, c)
        logits.append(_fc(t, fc, m))
    _softmax_lut_check(case, logits)


# --------------------------------------------------------------------------- l2


def test_line_follower_l2_lines_are_printed_by_ncc():
    """Every histogram line of our chain (input, first three KPU conv outputs) is among ncc's lines."""
    case = "line_follower_stock__l2"
    log = (CASES / case / "compile.log").read_text().splitlines()
    _kpu_chain(case)
    lines = L2_LINES[case]
    assert len(lines) == 4 and lines[0] == "{0, 1} -> {0, 0.999512}"
    missing = [ln for ln in lines if ln not in log]
    assert not missing, missing
