"""The KPU fit report (kmodelpy.fit_report / fit_rules) against what ncc v0.2 actually did.

Expectations are read from each reference case's ncc.kmodel, not from hand-written tables: the node
list is turned into a data-flow graph (a node's input is produced by the last earlier node writing an
overlapping range of the same memory), every conv / dense compute node is matched to its TFLite layer
by (input channels, output channels, kernel size), and

* KPUConv2D with a CPU Pad/StridedSlice feeding it (not coming from another KPU layer) or, after it, a
  StridedSlice or a Pad that crops (a negative amount) or feeds the next KPU conv -> "partial", else "KPU";
* Conv2D / MatMul / Conv2DTranspose -> "CPU" float; QuantizedConv2D / QuantizedMatMul -> "CPU" uint8;
* KPU pools (max/mean pool types) and CPU ReduceWindow2D nodes are counted against the pool verdicts.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kmodelpy.fit_report import LayerVerdict, analyse, analyse_with_kpu_ram, report
from kmodelpy.format.kmodel import KModel
from refcases import CASES, case_json, cases_with

COMPUTE = {"KPUConv2D", "Conv2D", "QuantizedConv2D", "MatMul", "QuantizedMatMul", "Conv2DTranspose"}
PASS_THROUGH = {"KPUUpload", "Quantize", "Dequantize"}
CROPS = {"Pad", "StridedSlice"}
KPU_MAXMEAN_POOLS = {1, 2, 3, 4, 8, 9}


def _arg(args, flag, default):
    return type(default)(args[args.index(flag) + 1]) if flag in args else default


def _uint8_cases():
    out = []
    for c in cases_with("model.tflite"):
        j = case_json(c)
        args = j.get("ncc_args", [])
        if (CASES / c / "ncc.kmodel").exists() and _arg(args, "--inference-type", "uint8") == "uint8":
            out.append(c)
    return out


UINT8_CASES = _uint8_cases()


@lru_cache(maxsize=None)
def _tfl(case):
    from kmodelpy.frontends.tflite.reader import read_tflite

    return read_tflite(CASES / case / "model.tflite")


@lru_cache(maxsize=None)
def _analyse_cached(digest: str, path: str, wqt: float) -> tuple[LayerVerdict, ...]:
    return tuple(analyse(path, weights_quantize_threshold=wqt))


def verdicts(case: str) -> tuple[LayerVerdict, ...]:
    path = CASES / case / "model.tflite"
    wqt = _arg(case_json(case).get("ncc_args", []), "--weights-quantize-threshold", 64.0)
    return _analyse_cached(hashlib.sha1(path.read_bytes()).hexdigest(), str(path), wqt)


# ----------------------------------------------------------------------------- kmodel side
def _overlaps(a, b) -> bool:
    return a.memory_type == b.memory_type and a.start < b.start + b.size and b.start < a.start + a.size


def dataflow(ops):
    """(producers, consumers): per node, the producing node index of each input (None: model input)."""
    prods = []
    for i, op in enumerate(ops):
        ps = []
        for r in op.inputs():
            if r.memory_type == 0:
                continue
            j = next((j for j in range(i - 1, -1, -1) if any(_overlaps(r, o) for o in ops[j].outputs())), None)
            ps.append(j)
        prods.append(ps)
    cons = {i: [k for k, ps in enumerate(prods) if i in ps] for i in range(len(ops))}
    return prods, cons


def _name(op) -> str:
    return type(op).__name__


def kmodel_expectations(case: str):
    """[(signature, verdict, precision, node index)] for the compute nodes of the case's ncc.kmodel,
    plus (KPU max/mean pools, CPU ReduceWindow2D nodes)."""
    return node_expectations(KModel.parse((CASES / case / "ncc.kmodel").read_bytes(), case).ops)


def _dense_pad(op) -> bool:
    """The 1x1 -> 4x4 zero pad of a dense layer mapped to a KPU conv (it belongs to the dense layer, not to the
    conv whose flattened output feeds it)."""
    return list(op.in_shape[2:]) == [1, 1] and [tuple(p) for p in op.paddings[2:]] == [(0, 3), (0, 3)]


def node_expectations(ops):
    prods, cons = dataflow(ops)

    def back(j):
        while j is not None and _name(ops[j]) in PASS_THROUGH and prods[j]:
            j = prods[j][0]
        return j

    def forward(i, through=PASS_THROUGH - {"KPUUpload"}):
        seen, todo = [], list(cons[i])
        while todo:
            k = todo.pop()
            if _name(ops[k]) in through:
                todo += cons[k]
            else:
                seen.append(k)
        return seen

    out, kpu_pools, cpu_pools = [], 0, 0
    for i, op in enumerate(ops):
        n = _name(op)
        if n == "ReduceWindow2D":
            cpu_pools += 1
        if n not in COMPUTE:
            continue
        if n == "KPUConv2D":
            la = op.layer_argument
            sig = (la.in_shape[0], la.out_shape[0], la.kernel_size)
            kpu_pools += la.pool_type in KPU_MAXMEAN_POOLS
            p = back(prods[i][0] if prods[i] else None)
            pre = p is not None and _name(ops[p]) in CROPS and not (
                prods[p] and back(prods[p][0]) is not None and _name(ops[back(prods[p][0])]) == "KPUConv2D")
            post = any(_name(ops[k]) == "StridedSlice" or (_name(ops[k]) == "Pad" and not _dense_pad(ops[k]) and (
                any(b < 0 or a < 0 for b, a in ops[k].paddings) or
                any(_name(ops[m]) == "KPUConv2D" for m in forward(k, through=PASS_THROUGH))))
                for k in forward(i))
            out.append((sig, "partial" if pre or post else "KPU", "uint8", i))
        elif n in ("Conv2D", "QuantizedConv2D", "Conv2DTranspose"):
            sig = (op.in_shape[1], op.out_shape[1] if n == "Conv2DTranspose" else op.out_channels, op.filter_h)
            out.append((sig, "CPU", "uint8" if n.startswith("Quantized") else "float", i))
        else:
            out.append(((op.a_cols, op.b_cols, 1), "CPU", "uint8" if n.startswith("Quantized") else "float", i))
    return out, kpu_pools, cpu_pools


def tflite_signature(case, v: LayerVerdict):
    tfl = _tfl(case) if isinstance(case, str) else case
    op = tfl.operators[v.index]
    w = tfl.tensors[op.inputs[1]].shape
    if v.op == "CONV_2D":
        return (tfl.tensors[op.inputs[0]].shape[3], w[0], w[1])
    if v.op == "DEPTHWISE_CONV_2D":
        return (tfl.tensors[op.inputs[0]].shape[3], w[3], w[1])
    if v.op == "FULLY_CONNECTED":
        return (w[1], w[0], 1)
    if v.op == "TRANSPOSE_CONV":
        return (w[3], w[0], w[1])
    return None


LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "Conv", "Gemm", "MatMul",
             "ConvTranspose")


@lru_cache(maxsize=None)
def _onnx_ops(case):
    from kmodelpy.fit_rules import source_model

    return source_model(CASES / case / "model.onnx").ops


def onnx_signature(case, v: LayerVerdict):
    op = _onnx_ops(case)[v.index]
    if op.kind in ("conv", "depthwise"):
        return (op.cin, op.weights.shape[0], op.kernel[0])
    if op.kind == "dense":
        return (op.weights.shape[1], op.weights.shape[0], 1)
    return None


def _uint8_onnx_cases():
    out = []
    for c in cases_with("model.onnx"):
        args = case_json(c).get("ncc_args", [])
        if (CASES / c / "ncc.kmodel").exists() and _arg(args, "--inference-type", "uint8") == "uint8":
            out.append(c)
    return out


UINT8_ONNX_CASES = _uint8_onnx_cases()


# ----------------------------------------------------------------------------- tests
def test_reference_cases_found():
    assert len(UINT8_CASES) >= 30


def check_layers(case, expected, vs):
    """Every conv/dense layer's verdict equals the one its matched compute node shows."""
    unused = list(expected)
    layers = [v for v in vs if v.op in LAYER_OPS]
    label = case if isinstance(case, str) else case.path
    assert layers, label
    onnx = isinstance(case, str) and case.startswith("onnx__")
    for v in layers:
        sig = onnx_signature(case, v) if onnx else tflite_signature(case, v)
        hit = next((e for e in unused if e[0] == sig), None)
        assert hit is not None, f"{label}: layer #{v.index} {v.op} {sig}: no such compute node in ncc.kmodel"
        unused.remove(hit)
        twin = next((e for e in unused if e[0] == sig), None)
        if twin is not None and any("runs this KPU conv twice" in n for n in v.notes):
            unused.remove(twin)  # a conv feeding its absorbed activation and other layers is duplicated
        assert (v.verdict, v.precision) == hit[1:3], \
            f"{label}: layer #{v.index} {v.op}: report says {v.verdict}/{v.precision}, ncc did {hit[1]}/{hit[2]}"
    assert not unused, f"{label}: ncc.kmodel compute nodes not explained by any layer: {unused}"


@pytest.mark.parametrize("case", UINT8_CASES)
def test_conv_and_dense_verdicts_match_ncc(case):
    check_layers(case, kmodel_expectations(case)[0], verdicts(case))


@pytest.mark.parametrize("case", [c for c in UINT8_ONNX_CASES if c not in ("onnx__q_conv_same_lower_s2",
                                                                             "onnx__softmax_4d_axis1")])
def test_onnx_verdicts_match_ncc(case):
    """The same report from an .onnx (the layers ncc's ONNX importer compiled): convs and dense layers, and the
    activations absorbed into a KPU activation (none leaves a lookup table) or left as an NNIL program."""
    path = CASES / case / "model.onnx"
    vs = analyse(path)
    check_layers(case, kmodel_expectations(case)[0], vs)
    ops = KModel.parse((CASES / case / "ncc.kmodel").read_bytes(), case).ops
    if not any(v.op in ("Softmax", "LpNormalization") for v in vs):  # these make lookup tables of their own
        acts = [v for v in vs if v.op in ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Abs", "Exp", "Neg", "Sin", "Floor",
                                          "Ceil") or (v.op == "Min" and _onnx_ops(case)[v.index].const)]
        assert sum(v.verdict == "CPU" and v.precision == "uint8" for v in acts) == \
            sum(_name(o) == "TableLookup1D" for o in ops)


@pytest.mark.parametrize("case", UINT8_CASES)
def test_pool_verdicts_match_ncc(case):
    _, kpu_pools, cpu_pools = kmodel_expectations(case)
    pools = [v for v in verdicts(case) if v.op in ("MAX_POOL_2D", "AVERAGE_POOL_2D")]
    assert sum(v.verdict == "KPU" for v in pools) == kpu_pools
    assert sum(v.verdict == "CPU" for v in pools) == cpu_pools
    for v in pools:
        if v.verdict == "KPU":
            assert v.fused_into is not None and verdicts(case)[v.fused_into].on_kpu


@pytest.mark.parametrize("case", [c for c in UINT8_CASES if not any(
    op.builtin == "SOFTMAX" for op in _tfl(c).operators)])
def test_activation_absorption_matches_ncc(case):
    """Activations absorbed into a KPU activation leave no lookup table; the others become one."""
    ops = KModel.parse((CASES / case / "ncc.kmodel").read_bytes(), case).ops
    luts = sum(_name(o) == "TableLookup1D" for o in ops)
    nnil = sum(_name(o) == "NNILUnaryMethod" for o in ops)
    acts = [v for v in verdicts(case) if v.op in ("LEAKY_RELU", "LOGISTIC", "RELU", "TANH")]
    assert sum(v.verdict == "CPU" and v.precision == "uint8" for v in acts) == luts
    assert sum(v.verdict == "CPU" and v.precision == "float" for v in acts) == nnil
    for v in acts:
        if v.verdict == "KPU":
            assert verdicts(case)[v.fused_into].verdict == "KPU"


def test_kpu_bytes_use_kpu_layout():
    """conv3x3_s1_same: 3x32x32 in (W 32: 2 channels per 64-byte row) + 8x32x32 out."""
    v = [v for v in verdicts("conv3x3_s1_same") if v.op == "CONV_2D"][0]
    assert v.kpu_in_shape == (1, 3, 32, 32) and v.kpu_out_shape == (1, 8, 32, 32)
    assert v.kpu_bytes == 2 * 32 * 64 + 4 * 32 * 64


def test_pool_fused_output_shape():
    v = [v for v in verdicts("conv_maxpool2x2") if v.op == "CONV_2D"][0]
    assert v.kpu_out_shape == (1, 16, 16, 16)


# ----------------------------------------------------------------------------- report text
def test_report_conv_prelu():
    text = report(str(CASES / "conv_prelu" / "model.tflite"))
    line = next(l for l in text.splitlines() if "PRELU" in l)
    assert "CPU" in line
    assert "Not supported tflite opcode: PRELU" in text
    assert "LeakyReLU" in text
    conv = next(l for l in text.splitlines() if l.lstrip().startswith("#0"))
    assert "KPU" in conv


def test_report_too_large_input():
    vs = analyse(CASES / "too_large_input_640x480" / "model.tflite")
    assert vs[0].verdict == "CPU" and "larger than the KPU's 256x512" in " ".join(vs[0].reasons)
    big = [v for v in vs if v.on_kpu and not v.fits_kpu_ram]
    assert big, "the 320x240x16 layers need more than 2 MiB of KPU RAM"
    text = report(str(CASES / "too_large_input_640x480" / "model.tflite"))
    assert "DOES NOT FIT" in text
    assert "KPU allocator cannot allocate more memory" in text
    assert "320x240" in text
    # what the compile will do instead (tests/test_compile_reference.py sees the same line)
    assert [(v.index, v.kpu_ram) for v in vs if v.kpu_ram] == [
        (2, ["runs as 2 row bands in one run with #3: KPU work +0.8% (halo rows), +2483200 B copied per run"]),
        (3, ["runs as 2 row bands in one run with #2: KPU work +0.8% (halo rows), +2483200 B copied per run"])]
    assert "DOES NOT FIT  -> row bands" in text and "ncc fails; kmodelpy (--kpu-ram-overflow fit" in text
    assert ("KPUConv2D 'Conv2D_1' (1x16x240x320 -> 1x16x240x320) + KPUConv2D 'Conv2D_2' (1x16x240x320 -> "
            "1x8x240x320) run as 2 row bands (input rows 0-121, 119-240)") in text


def test_report_line_follower_stock():
    path = CASES / "line_follower_stock" / "model.tflite"
    vs = analyse(path)
    partial = [v for v in vs if v.verdict == "partial" and v.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert [v.index for v in partial] == [0, 4, 9, 14, 27]
    for v in partial:
        assert any("ZeroPadding2D(((1,1),(1,1)))" in f for f in v.fixes)
    text = report(str(path))
    assert "ZeroPadding2D(((1,1),(1,1))) + padding='valid'" in text
    assert "partial" in text
    assert "Summary" in text and "MaixPy" in text


def test_fix_is_right_line_follower_kpu_has_no_partial_convs():
    """The KPU-friendly rebuild (symmetric padding) is fully KPU, as ncc compiled it."""
    vs = verdicts("line_follower_kpu")
    convs = [v for v in vs if v.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert convs and all(v.verdict == "KPU" for v in convs)


def test_weights_threshold_changes_verdict():
    """A lower --weights-quantize-threshold pushes convs to the CPU with a reason and a fix."""
    path = CASES / "conv3x3_s1_same" / "model.tflite"
    v = [v for v in analyse(path, weights_quantize_threshold=1e-6) if v.op == "CONV_2D"][0]
    assert v.verdict == "CPU"
    assert "weights range" in v.reasons[0]
    assert any("--weights-quantize-threshold" in f for f in v.fixes)


# ----------------------------------------------------------------------------- synthetic models
# Constructs the reference cases do not cover, built with tests/tflite_builder.py and checked the same
# way against kmodelpy's own compile of the model (whose pass structure reproduces ncc's kmodels).
def _b():
    from tflite_builder import TFLiteBuilder

    return TFLiteBuilder()


def _conv(b, x, cin, cout, k, stride=1, padding="SAME", act="NONE", scale=0.3, dw=False, name="c", out_hw=None,
          dilation=1, seed=0):
    rng = np.random.default_rng(seed)
    h, w = out_hw
    y = b.tensor(name, [1, h, w, cout])
    if dw:
        wt = b.const(name + "/w", (rng.standard_normal((1, k, k, cout)) * scale).astype(np.float32))
        b.op("DEPTHWISE_CONV_2D", [x, wt, b.const(name + "/b", np.zeros(cout, np.float32))], [y],
             "DepthwiseConv2DOptions", padding=padding, stride_h=stride, stride_w=stride, depth_multiplier=1,
             fused_activation=act, dilation_h=dilation, dilation_w=dilation)
    else:
        wt = b.const(name + "/w", (rng.standard_normal((cout, k, k, cin)) * scale).astype(np.float32))
        b.op("CONV_2D", [x, wt, b.const(name + "/b", np.zeros(cout, np.float32))], [y], "Conv2DOptions",
             padding=padding, stride_h=stride, stride_w=stride, fused_activation=act, dilation_h=dilation,
             dilation_w=dilation)
    return y


def _pad(b, x, shape, pads, name):
    y = b.tensor(name, shape)
    b.op("PAD", [x, b.const(name + "/p", np.array(pads, np.int32))], [y], "PadOptions")
    return y


def model_a(b):
    """relu6 separate, explicit (1,1) pad + valid stride-2 conv, leaky relu, 2x2 pool, 3x3 valid s1, 3x3 s3."""
    x = b.tensor("x", [1, 32, 32, 3])
    c0 = _conv(b, x, 3, 8, 3, name="c0", out_hw=(32, 32))
    r6 = b.tensor("r6", [1, 32, 32, 8])
    b.op("RELU6", [c0], [r6])
    p1 = _pad(b, r6, [1, 34, 34, 8], [[0, 0], [1, 1], [1, 1], [0, 0]], "p1")
    c1 = _conv(b, p1, 8, 16, 3, stride=2, padding="VALID", name="c1", out_hw=(16, 16), seed=1)
    lr = b.tensor("lr", [1, 16, 16, 16])
    b.op("LEAKY_RELU", [c1], [lr], "LeakyReluOptions", alpha=0.1)
    mp = b.tensor("mp", [1, 8, 8, 16])
    b.op("MAX_POOL_2D", [lr], [mp], "Pool2DOptions", padding="VALID", stride_h=2, stride_w=2, filter_h=2, filter_w=2)
    c2 = _conv(b, mp, 16, 16, 3, padding="VALID", name="c2", out_hw=(6, 6), seed=2)
    c3 = _conv(b, c2, 16, 8, 3, stride=3, name="c3", out_hw=(2, 2), seed=3)
    return [x], [c3]


def model_b(b):
    """1x1 conv, depthwise 3x3 s2 with (1,1) pad + valid, 1x1 conv (subsampling moved into it), 4x4 avg pool,
    global mean, Dense 64->32 on the KPU, Dense 32->10 on the CPU."""
    x = b.tensor("x", [1, 32, 32, 3])
    c0 = _conv(b, x, 3, 16, 1, act="RELU", name="c0", out_hw=(32, 32))
    p = _pad(b, c0, [1, 34, 34, 16], [[0, 0], [1, 1], [1, 1], [0, 0]], "p")
    d = _conv(b, p, 16, 16, 3, stride=2, padding="VALID", dw=True, act="RELU6", name="dw", out_hw=(16, 16), seed=1)
    c1 = _conv(b, d, 16, 64, 1, act="RELU", name="c1", out_hw=(16, 16), seed=2)
    ap = b.tensor("ap", [1, 4, 4, 64])
    b.op("AVERAGE_POOL_2D", [c1], [ap], "Pool2DOptions", padding="VALID", stride_h=4, stride_w=4, filter_h=4,
         filter_w=4)
    m = b.tensor("m", [1, 64])
    b.op("MEAN", [ap, b.const("axes", np.array([1, 2], np.int32))], [m], "ReducerOptions", keep_dims=False)
    rng = np.random.default_rng(5)
    f1 = b.tensor("f1", [1, 32])
    b.op("FULLY_CONNECTED", [m, b.const("f1/w", (rng.standard_normal((32, 64)) * 0.2).astype(np.float32)),
                             b.const("f1/b", np.zeros(32, np.float32))], [f1], "FullyConnectedOptions",
         fused_activation="RELU")
    f2 = b.tensor("f2", [1, 10])
    b.op("FULLY_CONNECTED", [f1, b.const("f2/w", (rng.standard_normal((10, 32)) * 0.2).astype(np.float32)),
                             b.const("f2/b", np.zeros(10, np.float32))], [f2], "FullyConnectedOptions")
    return [x], [f2]


def model_c(b):
    """weights too wide (float CPU conv), a 5x5 conv (uint8 CPU), a residual add, odd-size stride-2 SAME conv."""
    x = b.tensor("x", [1, 32, 32, 3])
    c0 = _conv(b, x, 3, 8, 3, scale=80.0, name="wide", out_hw=(32, 32))
    c1 = _conv(b, c0, 8, 8, 5, name="k5", out_hw=(32, 32), seed=1)
    c2 = _conv(b, c1, 8, 8, 3, name="c2", out_hw=(32, 32), seed=2)
    a = b.tensor("add", [1, 32, 32, 8])
    b.op("ADD", [c1, c2], [a], "AddOptions", fused_activation="RELU")
    c3 = _conv(b, a, 8, 8, 3, padding="VALID", name="c3", out_hw=(30, 30), seed=3)  # 30 even
    c4 = _conv(b, c3, 8, 8, 3, stride=2, name="c4", out_hw=(15, 15), seed=4)  # 30 -> SAME (0,1)
    c5 = _conv(b, c4, 8, 8, 3, stride=2, name="c5", out_hw=(8, 8), seed=5)  # 15 odd -> SAME (1,1)
    return [x], [c5]


def model_d(b):
    """Deviation D8: a 4x4 max pool with stride 2 after a KPU conv (ncc fails; kmodelpy keeps it on the CPU),
    then a 4x4 stride-4 average pool after a KPU conv (fused into it)."""
    x = b.tensor("x", [1, 32, 32, 3])
    c0 = _conv(b, x, 3, 8, 3, act="RELU", name="c0", out_hw=(32, 32))
    mp = b.tensor("mp", [1, 15, 15, 8])
    b.op("MAX_POOL_2D", [c0], [mp], "Pool2DOptions", padding="VALID", stride_h=2, stride_w=2, filter_h=4,
         filter_w=4)
    pd = _pad(b, mp, [1, 16, 16, 8], [[0, 0], [0, 1], [0, 1], [0, 0]], "pd")
    c1 = _conv(b, pd, 8, 8, 3, act="RELU", name="c1", out_hw=(16, 16), seed=1)
    ap = b.tensor("ap", [1, 4, 4, 8])
    b.op("AVERAGE_POOL_2D", [c1], [ap], "Pool2DOptions", padding="VALID", stride_h=4, stride_w=4, filter_h=4,
         filter_w=4)
    return [x], [ap]


SYNTH = {"a": model_a, "b": model_b, "c": model_c, "d": model_d}


@lru_cache(maxsize=None)
def _synth(name, tmp):
    import io
    import shutil
    from pathlib import Path

    from kmodelpy.compiler.pipeline import Options, run_pipeline
    from kmodelpy.frontends.tflite.reader import read_tflite
    from refcases import DATASETS

    b = _b()
    ins, outs = SYNTH[name](b)
    path = Path(tmp) / f"synth_{name}.tflite"
    path.write_bytes(b.build(inputs=ins, outputs=outs))
    ds = Path(tmp) / "ds"
    if not ds.exists():
        ds.mkdir()
        for f in sorted((DATASETS / "rand32" / "calib").glob("*.png"))[:2]:
            shutil.copy(f, ds / f.name)
    res = run_pipeline(str(path), Options(dataset=str(ds)), out=io.StringIO())
    return read_tflite(path), tuple(analyse(path)), KModel.parse(res.kmodel).ops


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fit_synth"))


@pytest.mark.parametrize("name", sorted(SYNTH))
def test_synthetic_models_match_compile(name, synth_dir):
    tfl, vs, ops = _synth(name, synth_dir)
    expected, kpu_pools, cpu_pools = node_expectations(ops)
    check_layers(tfl, expected, vs)
    pools = [v for v in vs if v.op in ("MAX_POOL_2D", "AVERAGE_POOL_2D")]
    assert sum(v.verdict == "KPU" for v in pools) == kpu_pools
    assert sum(v.verdict == "CPU" for v in pools) == cpu_pools


def _by_op(vs, op, k=0):
    return [v for v in vs if v.op == op][k]


def test_synthetic_a_verdicts(synth_dir):
    _, vs, ops = _synth("a", synth_dir)
    r6 = _by_op(vs, "RELU6")
    assert (r6.verdict, r6.precision) == ("CPU", "float") and "activation='relu6'" in r6.fixes[0]
    # the separate RELU6 keeps the explicit PAD from merging into the stride-2 conv: pad + crop on the CPU
    pad, c1 = _by_op(vs, "PAD"), _by_op(vs, "CONV_2D", 1)
    assert pad.verdict == "CPU" and pad.fused_into is None
    assert c1.verdict == "partial" and "PAD #2" in c1.fixes[0] and "RELU6" in c1.fixes[0]
    # the leaky relu after a partial conv is not absorbed; it becomes a float NNIL program
    lr = _by_op(vs, "LEAKY_RELU")
    assert (lr.verdict, lr.precision) == ("CPU", "float") and "#3" in lr.fixes[0]
    assert sum(type(o).__name__ == "NNILUnaryMethod" for o in ops) == 1
    assert _by_op(vs, "MAX_POOL_2D").verdict == "CPU"
    c2, c3 = _by_op(vs, "CONV_2D", 2), _by_op(vs, "CONV_2D", 3)
    assert c2.verdict == "partial" and "padding='same'" in c2.fixes[0]
    assert c3.verdict == "partial" and "stride 1 or 2" in c3.fixes[0]


def test_synthetic_b_verdicts(synth_dir):
    _, vs, _ = _synth("b", synth_dir)
    dw = _by_op(vs, "DEPTHWISE_CONV_2D")
    assert dw.verdict == "KPU" and any("next 1x1 conv" in n for n in dw.notes)
    ap = _by_op(vs, "AVERAGE_POOL_2D")  # the 1x1 conv's KPU pool already does the depthwise's stride
    assert ap.verdict == "CPU" and "already uses its KPU pool" in ap.reasons[0]
    f1, f2 = _by_op(vs, "FULLY_CONNECTED", 0), _by_op(vs, "FULLY_CONNECTED", 1)
    assert f1.verdict == "partial" and f1.kpu_in_shape == (1, 64, 4, 4)
    assert (f2.verdict, f2.precision) == ("CPU", "float")


def test_synthetic_c_verdicts(synth_dir):
    _, vs, _ = _synth("c", synth_dir)
    wide, k5 = _by_op(vs, "CONV_2D", 0), _by_op(vs, "CONV_2D", 1)
    assert (wide.verdict, wide.precision) == ("CPU", "float") and "weights range" in wide.reasons[0]
    assert (k5.verdict, k5.precision) == ("CPU", "uint8") and "use 3x3" in k5.fixes[0]
    add = _by_op(vs, "ADD")
    assert (add.verdict, add.precision) == ("CPU", "uint8")
    assert _by_op(vs, "CONV_2D", 4).verdict == "partial"  # SAME stride 2 on an even input: asymmetric pad
    assert _by_op(vs, "CONV_2D", 5).verdict == "KPU"  # SAME stride 2 on an odd input: (1,1)


def test_synthetic_d_4x4_stride2_pool_is_a_cpu_pool(synth_dir):
    """D8: the report says CPU pool (not "ncc fails"), and the compiled kmodel has one CPU ReduceWindow2D
    and one KPU mean 4x4 pool."""
    _, vs, ops = _synth("d", synth_dir)
    mp, ap = _by_op(vs, "MAX_POOL_2D"), _by_op(vs, "AVERAGE_POOL_2D")
    assert (mp.verdict, mp.precision) == ("CPU", "float")
    assert "not 4x4 stride 2" in mp.reasons[0] and "keeps it on the CPU" in mp.reasons[0]
    assert not any("fails" in r and "kmodelpy" not in r for r in mp.reasons)
    assert ap.verdict == "KPU" and "mean 4x4 s4" in ap.reasons[0]
    assert sum(_name(o) == "ReduceWindow2D" for o in ops) == 1


def test_checker_detects_a_wrong_verdict():
    """The comparison is not vacuous: one flipped verdict is reported."""
    from dataclasses import replace

    vs = list(verdicts("conv3x3_s2_same"))
    k = next(i for i, v in enumerate(vs) if v.op == "CONV_2D")
    vs[k] = replace(vs[k], verdict="KPU")
    with pytest.raises(AssertionError, match="ncc did partial"):
        check_layers("conv3x3_s2_same", kmodel_expectations("conv3x3_s2_same")[0], vs)


# ----------------------------------------------------------------------------- random one-layer models
def _out(n, k, s, padding, d=1):
    return -(-n // s) if padding == "SAME" else (n - (k - 1) * d - 1) // s + 1


def _random_model(b, p):
    h, w, cin = p.get("hwc", (32, 32, 3))
    x = b.tensor("x", [1, h, w, cin])
    c = 8
    y = _conv(b, x, cin, c, 1, act="RELU", name="c0", out_hw=(h, w))
    if p["pad"]:
        t, bo, l, r = p["pad"]
        h, w = h + t + bo, w + l + r
        y = _pad(b, y, [1, h, w, c], [[0, 0], [t, bo], [l, r], [0, 0]], "pad")
    k, s = p["k"], p["stride"]
    d = p.get("dilation", 1)
    oh, ow = _out(h, k, s, p["padding"], d), _out(w, k, s, p["padding"], d)
    if oh < 1 or ow < 1:  # a VALID kernel larger than the input: keep the model valid
        p = dict(p, padding="SAME")
        oh, ow = _out(h, k, s, "SAME", d), _out(w, k, s, "SAME", d)
    cout = c if p["dw"] else 16
    y = _conv(b, y, c, cout, k, stride=s, padding=p["padding"], act=p["act"], dw=p["dw"], name="L",
              out_hw=(oh, ow), seed=7, dilation=d)
    if p["next"] == "leaky":
        z = b.tensor("lr", [1, oh, ow, cout])
        b.op("LEAKY_RELU", [y], [z], "LeakyReluOptions", alpha=0.2)
        y = z
    elif p["next"] in ("RELU", "LOGISTIC", "RELU6"):
        z = b.tensor("act", [1, oh, ow, cout])
        b.op(p["next"], [y], [z])
        y = z
    elif p["next"] == "pool" and oh >= 2 and ow >= 2:
        z = b.tensor("mp", [1, oh // 2, ow // 2, cout])
        b.op("MAX_POOL_2D", [y], [z], "Pool2DOptions", padding="VALID", stride_h=2, stride_w=2, filter_h=2,
             filter_w=2)
        y = z
    elif p["next"] == "conv1x1":
        y = _conv(b, y, cout, 8, 1, name="pw", out_hw=(oh, ow), seed=8)
    elif p["next"] == "conv5x5":
        y = _conv(b, y, cout, 8, 5, name="k5", out_hw=(oh, ow), seed=9)
    elif p["next"] == "dense" and oh * ow * cout <= 4096:
        k = oh * ow * cout
        f = b.tensor("flat", [1, k])
        b.op("RESHAPE", [y, b.const("shape", np.array([1, k], np.int32))], [f])
        z = b.tensor("fc", [1, 16])
        rng = np.random.default_rng(3)
        b.op("FULLY_CONNECTED", [f, b.const("fc/w", (rng.standard_normal((16, k)) * 0.1).astype(np.float32)),
                                 b.const("fc/b", np.zeros(16, np.float32))], [z], "FullyConnectedOptions")
        y = z
    return [x], [y]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=st.fixed_dictionaries({
    "dw": st.booleans(), "k": st.sampled_from([1, 3, 3, 5]), "stride": st.sampled_from([1, 2, 2, 3]),
    "padding": st.sampled_from(["SAME", "VALID"]),
    "pad": st.one_of(st.none(), st.tuples(*[st.integers(0, 2)] * 4)),
    "act": st.sampled_from(["NONE", "RELU", "RELU6"]),
    "next": st.sampled_from(["none", "leaky", "RELU", "LOGISTIC", "RELU6", "pool", "conv1x1", "conv5x5", "dense"]),
    "dilation": st.sampled_from([1, 1, 2]),
    "hwc": st.tuples(st.sampled_from([4, 5, 9, 16, 17, 33, 255, 257]), st.sampled_from([4, 7, 16, 33, 320, 513]),
                     st.sampled_from([1, 3]))}))
# a dilated 1x1 conv (space-to-batch: CPU transposes around the KPU conv) then LEAKY_RELU: the activation's input
# loses its range behind the moved dequantize, so the compiler emits a float NNIL program, not a lookup table
@example(p={"dw": False, "k": 1, "stride": 1, "padding": "SAME", "pad": None, "act": "NONE", "next": "leaky",
            "dilation": 2, "hwc": (9, 7, 1)})
# the same on 4x16: the inner conv is too small for the KPU and stays a float CPU conv, so nothing is quantized
# before the transposes and the activation keeps its range: a lookup table
@example(p={"dw": False, "k": 1, "stride": 1, "padding": "SAME", "pad": None, "act": "NONE", "next": "leaky",
            "dilation": 2, "hwc": (4, 16, 1)})
# a dilated 1x1 conv, then a 5x5 conv (CPU): the report took the 5x5 conv for float (its input comes through the
# space-to-batch transposes), the compile quantizes it: the precision rule now follows quantized sources only
@example(p={"dw": False, "k": 1, "stride": 1, "padding": "SAME", "pad": None, "act": "NONE", "next": "conv5x5",
            "dilation": 2, "hwc": (4, 33, 1)})
# a dilated 1x1 conv after a CPU conv on 257x7: the space-to-batch pad (H and W made even) sits before the transposes;
# the report counted it as the KPU conv's own CPU pad ("partial"), the compile has the KPU conv between transposes
@example(p={"dw": False, "k": 1, "stride": 1, "padding": "SAME", "pad": None, "act": "NONE", "next": "none",
            "dilation": 2, "hwc": (257, 7, 1)})
# a 1x1 conv after an explicit PAD on a 255x321 map: its input + output need 2.2 MB: ncc fails, kmodelpy bands it
@example(p={"dw": False, "k": 1, "stride": 1, "padding": "SAME", "pad": (0, 0, 0, 1), "act": "NONE", "next": "none",
            "dilation": 1, "hwc": (255, 320, 1)})
def test_random_conv_layers_match_compile(p, synth_dir):
    import io
    from pathlib import Path

    from kmodelpy.compiler.pipeline import Options, run_pipeline
    from kmodelpy.errors import CompileError
    from kmodelpy.frontends.tflite.reader import read_tflite

    b = _b()
    ins, outs = _random_model(b, p)
    path = Path(synth_dir) / "random.tflite"
    path.write_bytes(b.build(inputs=ins, outputs=outs))
    h, w, cin = p["hwc"]
    ds = Path(synth_dir) / f"raw_{h}x{w}x{cin}"
    if not ds.exists():
        ds.mkdir()
        (ds / "x.bin").write_bytes(np.random.default_rng(0).random(h * w * cin, dtype=np.float32).tobytes())
    vs, fit, bound = analyse_with_kpu_ram(path)
    res = run_pipeline(str(path), Options(dataset=str(ds), dataset_format="raw"), out=io.StringIO())
    assert res.schedule.kpu_usage <= bound
    assert (fit.lines() if fit else []) == res.kpu_fit.lines(), "the report must predict the compile's changes"
    if res.kpu_fit.changed:  # ncc's first fit overflows the KPU RAM: ncc fails, kmodelpy changed the kmodel
        with pytest.raises(CompileError, match="KPU memory"):
            run_pipeline(str(path), Options(dataset=str(ds), dataset_format="raw", kpu_ram_overflow="error"),
                         out=io.StringIO())
        assert "ncc fails; kmodelpy (--kpu-ram-overflow fit, the default) compiles it" in report(str(path))
        return
    ops = KModel.parse(res.kmodel).ops
    expected, kpu_pools, cpu_pools = node_expectations(ops)
    check_layers(read_tflite(path), expected, vs)
    pools = [v for v in vs if v.op == "MAX_POOL_2D"]
    assert sum(v.verdict == "KPU" for v in pools) == kpu_pools
    assert sum(v.verdict == "CPU" for v in pools) == cpu_pools
    nnil = sum(_name(o) == "NNILUnaryMethod" for o in ops)
    luts = sum(_name(o) == "TableLookup1D" for o in ops)
    acts = [v for v in vs if v.op in ("LEAKY_RELU", "RELU", "LOGISTIC")]
    assert sum(v.verdict == "CPU" and v.precision == "uint8" for v in acts) == luts
    assert sum(v.verdict == "CPU" and v.precision == "float" for v in acts) == nnil


def test_cli_inspect_tflite(capsys):
    from kmodelpy.cli import main

    path = str(CASES / "conv5x5" / "model.tflite")
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "CPU (uint8)" in out and "use 3x3 kernels" in out
    assert main(["inspect", path, "--output-quantize-threshold", "100000"]) == 0
    assert "CPU (float)" in capsys.readouterr().out


def test_cli_inspect_onnx(capsys):
    """inspect model.onnx: the same report, NCHW shapes, PyTorch wording; Clip after a conv is fused into its
    KPU activation (the line follower with ReLU6 as Clip is fully KPU, the Relu/Min form has partial layers)."""
    from kmodelpy.cli import main

    clip = CASES / "onnx__line_follower_clip" / "model.onnx"
    assert main(["inspect", str(clip)]) == 0
    out = capsys.readouterr().out
    assert "output NCHW" in out and "fused into layer #0's activation" in out
    vs = analyse(clip)
    assert all(v.verdict == "KPU" for v in vs if v.op == "Conv")
    plain = analyse(CASES / "onnx__line_follower" / "model.onnx")
    partial = [v for v in plain if v.verdict == "partial"]
    assert partial and all("Conv2d" in v.fixes[0] for v in partial)


def test_dynamic_range_weights_are_flagged():
    vs = verdicts("line_follower_kpu_dynrange")
    flagged = [v for v in vs if any("scale[0]" in n for n in v.notes)]
    assert flagged and all(v.op in LAYER_OPS for v in flagged)
    assert not any("scale[0]" in n for v in verdicts("line_follower_kpu") for n in v.notes)
