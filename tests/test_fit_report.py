"""The KPU fit report (kmodelpy.fit_report / fit_rules) against what ncc v0.2 actually did.

Expectations are read from each reference case's ncc.kmodel, not from hand-written tables: the node
list is turned into a data-flow graph (a node's input is produced by the last earlier node writing an
overlapping range of the same memory), every conv / dense compute node is matched to its TFLite layer
by (input channels, output channels, kernel size), and

* KPUConv2D with a CPU Pad/StridedSlice feeding it (not coming from another KPU layer) or consuming its
  main-memory output -> "partial", otherwise "KPU";
* Conv2D / MatMul / Conv2DTranspose -> "CPU" float; QuantizedConv2D / QuantizedMatMul -> "CPU" uint8;
* KPU pools (max/mean pool types) and CPU ReduceWindow2D nodes are counted against the pool verdicts.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import pytest

from kmodelpy.fit_report import LayerVerdict, analyse, report
from kmodelpy.format.kmodel import KModel
from tests.refcases import CASES, case_json, cases_with

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
    ops = KModel.parse((CASES / case / "ncc.kmodel").read_bytes(), case).ops
    prods, cons = dataflow(ops)

    def back(j):
        while j is not None and _name(ops[j]) in PASS_THROUGH and prods[j]:
            j = prods[j][0]
        return j

    def forward(i):
        seen, todo = [], list(cons[i])
        while todo:
            k = todo.pop()
            if _name(ops[k]) in PASS_THROUGH - {"KPUUpload"}:
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
            post = any(_name(ops[k]) in CROPS for k in forward(i))
            out.append((sig, "partial" if pre or post else "KPU", "uint8", i))
        elif n in ("Conv2D", "QuantizedConv2D", "Conv2DTranspose"):
            sig = (op.in_shape[1], op.out_shape[1] if n == "Conv2DTranspose" else op.out_channels, op.filter_h)
            out.append((sig, "CPU", "uint8" if n.startswith("Quantized") else "float", i))
        else:
            out.append(((op.a_cols, op.b_cols, 1), "CPU", "uint8" if n.startswith("Quantized") else "float", i))
    return out, kpu_pools, cpu_pools


def tflite_signature(case: str, v: LayerVerdict):
    from kmodelpy.format.tflite_reader import read_tflite

    tfl = _tfl(case)
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


@lru_cache(maxsize=None)
def _tfl(case):
    from kmodelpy.format.tflite_reader import read_tflite

    return read_tflite(CASES / case / "model.tflite")


LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


# ----------------------------------------------------------------------------- tests
def test_reference_cases_found():
    assert len(UINT8_CASES) >= 30


@pytest.mark.parametrize("case", UINT8_CASES)
def test_conv_and_dense_verdicts_match_ncc(case):
    expected, _, _ = kmodel_expectations(case)
    unused = list(expected)
    layers = [v for v in verdicts(case) if v.op in LAYER_OPS]
    assert layers, case
    for v in layers:
        sig = tflite_signature(case, v)
        hit = next((e for e in unused if e[0] == sig), None)
        assert hit is not None, f"{case}: layer #{v.index} {v.op} {sig}: no such compute node in ncc.kmodel"
        unused.remove(hit)
        assert (v.verdict, v.precision) == hit[1:3], \
            f"{case}: layer #{v.index} {v.op}: report says {v.verdict}/{v.precision}, ncc did {hit[1]}/{hit[2]}"
    assert not unused, f"{case}: ncc.kmodel compute nodes not explained by any layer: {unused}"


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
    v.op == "SOFTMAX" for v in verdicts(c))])
def test_activation_absorption_matches_ncc(case):
    """Activations absorbed into a KPU activation leave no lookup table; the others become one."""
    ops = KModel.parse((CASES / case / "ncc.kmodel").read_bytes(), case).ops
    luts = sum(_name(o) == "TableLookup1D" for o in ops)
    acts = [v for v in verdicts(case) if v.op in ("LEAKY_RELU", "LOGISTIC", "RELU", "TANH")]
    assert sum(v.verdict == "CPU" for v in acts) == luts
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
