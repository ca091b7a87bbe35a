"""Fitting KPU RAM (``--kpu-ram-overflow fit``, kmodelpy/compiler/kpu_ram): placement, idle tensors kept in
main memory, row bands, the CPU as the last resort.

The remedies other than the CPU must not change a single output byte: a model that fits is compiled once
normally and once with a forced small KPU RAM budget (or with one KPU layer split at random rows), and the
emulated outputs are compared bit for bit.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmodelpy.compiler import pipeline as P
from kmodelpy.compiler.allocator import MemoryAllocator
from kmodelpy.compiler.kpu_ram import bands as B
from kmodelpy.compiler.transforms.build import POOL_STRIDE
from tflite_builder import TFLiteBuilder

F32 = np.float32
POOLS = {  # TFLite pool after a non-depthwise stride-1 conv -> the KPU pool ncc fuses it into
    "max2": ("MAX_POOL_2D", 2, 2, "VALID"), "avg2": ("AVERAGE_POOL_2D", 2, 2, "VALID"),
    "max4": ("MAX_POOL_2D", 4, 4, "VALID"), "avg2s1": ("AVERAGE_POOL_2D", 2, 1, "SAME"),
    "max2s1": ("MAX_POOL_2D", 2, 1, "SAME"),
}


# ----------------------------------------------------------------------------------------- band geometry
def _layer(x, kernel, pool_type):
    """A KPU layer's row geometry in float: "same" conv (zero padding), then the KPU pool (the calibration's
    float KPU layer, tests/test_compile_passes.py checks it against a naive conv + pool)."""
    from kmodelpy.compiler.kpu_float import kpu_conv_f32

    w = np.arange(1, kernel * kernel + 1, dtype=F32).reshape(1, 1, kernel, kernel) / 7
    return np.ascontiguousarray(kpu_conv_f32(x, w, np.zeros(1, F32), False, (-1e30, 1e30), pool_type))


@settings(max_examples=150, deadline=None)
@given(st.integers(4, 40), st.integers(4, 9), st.lists(st.tuples(st.sampled_from([1, 3]), st.integers(0, 9)),
                                                      min_size=1, max_size=3), st.data())
def test_bands_give_the_whole_layers(h, w, chain, data):
    """Every band's kept rows are the rows of the whole layer — or chain of layers, each band running each
    layer on the previous one's whole band output — for every kernel, pool and cut."""
    layers, rows = [], h
    for kernel, pool_type in chain:
        if rows < B.MIN_ROWS:
            break
        layers.append(B.LayerRows(rows, kernel, pool_type))
        rows = layers[-1].out_rows(rows)
    if rows < 1:
        layers.pop()
    rows = B.output_rows(layers)
    cuts = sorted(data.draw(st.sets(st.integers(1, rows - 1), max_size=6)) if rows > 1 else set())
    bands = B.plan_bands([0] + cuts + [rows], layers)
    x = np.random.default_rng(h * 100 + w).uniform(-1, 1, (1, 1, h, w)).astype(F32)
    whole = x
    for layer in layers:
        whole = _layer(whole, layer.kernel, layer.pool_type)
    parts = []
    for b in bands:
        out = x[:, :, b.in_begin:b.in_end]
        for (a, e), layer in zip(b.spans, layers):
            assert e - a >= B.MIN_ROWS and a % layer.stride == 0 and out.shape[2] == e - a
            out = _layer(out, layer.kernel, layer.pool_type)
        assert out.shape[2] == b.band_rows
        parts.append(out[:, :, b.keep_begin:b.keep_end])
    assert np.concatenate(parts, axis=2).tobytes() == whole.tobytes()


def test_band_halo_and_pool_alignment():
    # 3x3 + 2x2 stride-2 pool: output rows 5.. start at conv row 10, need input row 9: the band starts at 8
    b = B.band(5, 10, B.LayerRows(40, 3, 1))
    assert (b.in_begin, b.in_end, b.keep_begin, b.band_rows) == (8, 21, 1, 6)
    assert B.band(0, 3, B.LayerRows(40, 1, 0)) == B.Band(((0, 4),), 0, 3, 0, 4)  # 1x1: the KPU reads >= 4 rows
    # two 3x3 layers: two halo rows, the first layer's output is read whole by the second
    assert B.band(10, 20, [B.LayerRows(40, 3, 0)] * 2).spans == ((8, 22), (8, 22))
    with pytest.raises(ValueError):
        B.plan_bands([0, 3, 3, 20], B.LayerRows(20, 3, 0))


def test_smallest_split_fits_the_budget():
    shape = (1, 16, 240, 320)
    layer = B.LayerRows(240, 3, 0)
    bands = B.smallest_split([(shape, shape)], layer, 2 * 1024 * 1024)
    assert len(bands) == 2 and [(b.in_begin, b.in_end) for b in bands] == [(0, 121), (119, 240)]
    assert all(B.band_bytes(b, [(shape, shape)]) <= 2 * 1024 * 1024 for b in bands)
    assert B.smallest_split([(shape, shape)], layer, 3 * 320 * 16 * 2) is None  # not even one row per band


# ----------------------------------------------------------------------------------------- placement
@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(1, 6), st.integers(1, 40)), min_size=1, max_size=25))
def test_largest_first_placement_never_overlaps(bufs):
    al = MemoryAllocator("kpu", 64)
    for birth, age, lines in bufs:
        b = al.allocate(lines * 64)
        b.birth, b.age = birth, age
    top = al.place_by_size()
    for i, a in enumerate(al.buffers):
        for b in al.buffers[i + 1:]:
            if a.birth < b.birth + b.age and b.birth < a.birth + a.age:
                assert a.end <= b.start or b.end <= a.start
    assert top >= al.peak_live()[1]


def test_largest_first_closes_first_fit_holes():
    """first fit leaves the short-lived 2-line buffer's hole under the long one; largest first does not"""
    al = MemoryAllocator("kpu", 64)
    for birth, age, lines in ((0, 2, 2), (1, 4, 3), (2, 2, 4), (4, 2, 5)):
        b = al.allocate(lines * 64)
        b.birth, b.age = birth, age
    assert al.finish() > al.peak_live()[1]
    assert al.place_by_size() == al.peak_live()[1]


# ----------------------------------------------------------------------------------------- whole models
def _kpu_model(h, w, c, layers, seed, residual=False):
    """A stack of KPU-eligible layers; ``layers``: dicts k (1/3), stride (1/2), dw, oc, pool (POOLS key or
    None), dil (dilation of a stride-1 3x3 conv: ncc runs it as a KPU conv of a batch of 4 sub-images).
    ``residual``: the last layer's input also feeds a 1x1 conv whose output is added to it."""
    rng = np.random.default_rng(seed)
    b = TFLiteBuilder()
    x = b.tensor("x", [1, h, w, c])
    cur, shape = x, [1, h, w, c]
    branch = None
    for i, L in enumerate(layers):
        k, s, ic = L["k"], L["stride"], shape[3]
        dw = L["dw"] and ic > 1
        oc = ic if dw else L["oc"]
        oh, ow = -(-shape[1] // s), -(-shape[2] // s)
        if oh < 4 or ow < 4:
            break
        if residual and i == len(layers) - 1:
            branch = cur, list(shape)
        wv = (rng.uniform(-1, 1, (1, k, k, ic) if dw else (oc, k, k, ic)) / np.sqrt(k * k * (1 if dw else ic)))
        wt, bias = b.const(f"w{i}", wv.astype(F32)), b.const(f"b{i}", rng.uniform(-0.2, 0.2, oc).astype(F32))
        y = b.tensor(f"y{i}", [1, oh, ow, oc])
        if dw:
            b.op("DEPTHWISE_CONV_2D", [cur, wt, bias], [y], "DepthwiseConv2DOptions", padding="SAME", stride_h=s,
                 stride_w=s, depth_multiplier=1, fused_activation="RELU")
        else:
            d = L.get("dil", 1) if s == 1 and k == 3 else 1
            b.op("CONV_2D", [cur, wt, bias], [y], "Conv2DOptions", padding="SAME", stride_h=s, stride_w=s,
                 fused_activation="RELU", dilation_h=d, dilation_w=d)
        cur, shape = y, [1, oh, ow, oc]
        pool = POOLS.get(L["pool"]) if not dw and s == 1 else None
        if pool is not None and oh >= 8 and ow >= 8:
            op, f, ps, pad = pool
            ph, pw = (oh, ow) if ps == 1 else (oh // f, ow // f)
            p = b.tensor(f"p{i}", [1, ph, pw, oc])
            b.op(op, [cur], [p], "Pool2DOptions", padding=pad, stride_h=ps, stride_w=ps, filter_h=f, filter_w=f,
                 fused_activation="NONE")
            cur, shape = p, [1, ph, pw, oc]
    if branch is not None and branch[0] != cur and branch[1][1:3] == shape[1:3]:
        src, bshape = branch
        wt = b.const("wr", (rng.uniform(-1, 1, (shape[3], 1, 1, bshape[3])) / np.sqrt(bshape[3])).astype(F32))
        r = b.tensor("r", shape)
        b.op("CONV_2D", [src, wt, b.const("br", np.zeros(shape[3], F32))], [r], "Conv2DOptions", padding="SAME",
             stride_h=1, stride_w=1, fused_activation="NONE")
        y = b.tensor("sum", shape)
        b.op("ADD", [cur, r], [y], "AddOptions", fused_activation="NONE")
        cur = y
    return b.build(inputs=[x], outputs=[cur]) if cur != x else None


def _dataset(tmp, c, h, w, seed, count=4):
    ds = tmp / "calib"
    ds.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):  # raw calibration samples are float32 (the float model's input)
        rng.uniform(0, 1, (c, h, w)).astype(F32).tofile(ds / f"{i}.bin")
    return ds


def _outputs(kmodel: bytes, tmp, xs):
    import kmodelpy

    path = tmp / "m.kmodel"
    path.write_bytes(kmodel)
    m = kmodelpy.load(path)
    return [[(np.asarray(v).shape, np.asarray(v).tobytes()) for v in m.run(x)] for x in xs]


def _options(ds, **kw):
    return P.Options(dataset=str(ds), dataset_format="raw", **kw)


layer = st.fixed_dictionaries({"k": st.sampled_from([1, 3]), "stride": st.sampled_from([1, 1, 2]),
                               "dw": st.booleans(), "oc": st.integers(1, 12),
                               "pool": st.sampled_from([None, None, *POOLS]), "dil": st.sampled_from([1, 1, 2])})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.integers(8, 40), st.integers(8, 40), st.sampled_from([1, 3, 4]), st.lists(layer, min_size=1, max_size=3),
       st.integers(0, 2**31 - 1), st.data())
def test_split_layers_are_bit_identical(tmp_path, h, w, c, layers, seed, data):
    """A run of linked KPU layers (drawn) split at drawn rows gives the kmodel's outputs bit for bit, and
    adds the copies and KPU work split_cost predicts."""
    from kmodelpy.compiler.kpu_ram import fit as F
    from kmodelpy.compiler.kpu_ram.rewrite import split_chain

    model = _kpu_model(h, w, c, layers, seed)
    if model is None:
        return
    (tmp_path / "m.tflite").write_bytes(model)
    ds = _dataset(tmp_path, c, h, w, seed)
    g, llir, fit, ctx = P.lower_and_fit(tmp_path / "m.tflite", _options(ds), io.StringIO())
    convs = [n for n in llir.dfs() if n.op == "kpu_conv2d"]
    if not convs:
        return
    xs = [np.random.default_rng(seed + k).integers(0, 256, (1, c, h, w), dtype=np.uint8) for k in range(2)]
    want = _outputs(P.generate(llir, io.StringIO(), fit.placement)[0], tmp_path, xs)
    chain = data.draw(st.sampled_from(F._runs(data.draw(st.sampled_from(convs)))))
    rows = B.output_rows([F.layer_rows(n) for n in chain])
    if rows < 2:
        return
    cuts = sorted(data.draw(st.sets(st.integers(1, rows - 1), min_size=1, max_size=4)))
    bands = B.plan_bands([0] + cuts + [rows], [F.layer_rows(n) for n in chain])
    copies, macs = F.copied_bytes(llir), F.kpu_macs(llir)
    predicted = F.split_cost(chain, bands)
    split_chain(llir, chain, bands)
    assert sum(n.op == "kpu_conv2d" for n in llir.nodes) == len(convs) + len(cuts) * len(chain)
    assert (F.copied_bytes(llir) - copies, F.kpu_macs(llir) - macs) == predicted
    assert _outputs(P.generate(llir, io.StringIO(), fit.placement)[0], tmp_path, xs) == want


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.integers(8, 36), st.integers(8, 36), st.sampled_from([1, 3]), st.lists(layer, min_size=1, max_size=3),
       st.booleans(), st.integers(0, 2**31 - 1), st.floats(0.15, 0.95))
def test_small_budget_compiles_bit_identical(tmp_path, h, w, c, layers, residual, seed, share):
    """With a KPU RAM budget below what the model needs, the compile still fits it, without changing an
    output byte, unless a layer had to move to the CPU."""
    model = _kpu_model(h, w, c, layers, seed, residual)
    if model is None:
        return
    (tmp_path / "m.tflite").write_bytes(model)
    ds = _dataset(tmp_path, c, h, w, seed)
    whole = P.run_pipeline(tmp_path / "m.tflite", _options(ds), io.StringIO())
    need = whole.schedule.kpu_usage
    if need == 0:
        return
    budget = max(64, int(need * share) // 64 * 64)
    log = io.StringIO()
    small = P.run_pipeline(tmp_path / "m.tflite", _options(ds, kpu_ram_budget=budget), log)
    assert small.schedule.kpu_usage == small.kpu_fit.kpu_bytes <= budget
    if not small.kpu_fit.changed:
        assert need <= budget
    for r in small.kpu_fit.remedies:
        assert r.text in log.getvalue()
    if any(r.kind == "cpu" for r in small.kpu_fit.remedies):
        return
    xs = [np.random.default_rng(seed + k).integers(0, 256, (1, c, h, w), dtype=np.uint8) for k in range(2)]
    assert _outputs(small.kmodel, tmp_path, xs) == _outputs(whole.kmodel, tmp_path, xs)


def _residual_model(h, w, c=3, chs=(8, 8, 8), seed=0):
    """x -> A (3x3) -> B (3x3) -> C (3x3); A -> D (1x1); C + D: A's KPU output waits for D while B and C run.
    ``chs``: output channels of A, B and C (= D). The compiler names the convs Conv2D_0 (A) to Conv2D_3 (D)."""
    rng = np.random.default_rng(seed)
    b = TFLiteBuilder()
    x = b.tensor("x", [1, h, w, c])

    def conv(name, src, ic, oc, k):
        wt = b.const(name + "/w", (rng.uniform(-1, 1, (oc, k, k, ic)) / np.sqrt(k * k * ic)).astype(F32))
        y = b.tensor(name, [1, h, w, oc])
        b.op("CONV_2D", [src, wt, b.const(name + "/b", rng.uniform(-0.1, 0.1, oc).astype(F32))], [y],
             "Conv2DOptions", padding="SAME", stride_h=1, stride_w=1, fused_activation="RELU")
        return y

    ca, cb, ch = chs
    a = conv("A", x, c, ca, 3)
    cc = conv("C", conv("B", a, ca, cb, 3), cb, ch, 3)
    d = conv("D", a, ca, ch, 1)
    y = b.tensor("y", [1, h, w, ch])
    b.op("ADD", [cc, d], [y], "AddOptions", fused_activation="NONE")
    return b.build(inputs=[x], outputs=[y])


def test_idle_tensor_waits_in_main_memory(tmp_path):
    """A's KPU output is idle while B and C run: with one tensor's worth of KPU RAM less, it is re-uploaded
    for D instead (no layer split), and the outputs do not change."""
    from kmodelpy.compiler.kpu_ram.preview import preview_kpu_ram
    from kmodelpy.kpu.layout import kpu_bytes

    h, w = 24, 40
    (tmp_path / "m.tflite").write_bytes(_residual_model(h, w))
    ds = _dataset(tmp_path, 3, h, w, 1)
    whole = P.run_pipeline(tmp_path / "m.tflite", _options(ds), io.StringIO())
    one = kpu_bytes((1, 8, h, w))
    assert whole.schedule.allocators["kpu"].peak_live()[1] == 3 * one  # A, B and C's outputs while C runs
    small = P.run_pipeline(tmp_path / "m.tflite", _options(ds, kpu_ram_budget=2 * one), io.StringIO())
    assert [r.kind for r in small.kpu_fit.remedies] == ["evict"] and small.kpu_fit.remedies[0].layer == "Conv2D_0"
    assert small.schedule.kpu_usage == 2 * one
    assert small.kpu_fit.remedies[0].copied_bytes == 2 * h * w * 8  # A's main-memory output + D's upload
    xs = [np.random.default_rng(k).integers(0, 256, (1, 3, h, w), dtype=np.uint8) for k in range(2)]
    assert _outputs(small.kmodel, tmp_path, xs) == _outputs(whole.kmodel, tmp_path, xs)
    # the compile's layer report ends with the same lines, and the fit report's preview (no calibration set)
    # says the same
    from kmodelpy.compiler.report import full_report

    report = full_report(small.llir, small.schedule, kpu_fit=small.kpu_fit).splitlines()
    assert report[-len(small.kpu_fit.lines()):] == small.kpu_fit.lines() and len(small.kpu_fit.lines()) == 3
    preview = preview_kpu_ram(tmp_path / "m.tflite", kpu_ram_budget=2 * one)
    assert preview.lines() == small.kpu_fit.lines()


def test_layer_that_cannot_be_split_moves_to_the_cpu(tmp_path):
    """Below one 4-row band of A (input + output), A runs on the CPU (ncc's quantized CPU conv): the compile
    runs once more, says so, and still tracks the float model."""
    import kmodelpy
    from kmodelpy.compiler.report import cpu_fallbacks
    from kmodelpy.kpu.layout import kpu_bytes

    h, w = 24, 40
    (tmp_path / "m.tflite").write_bytes(_residual_model(h, w, chs=(16, 1, 1)))
    ds = _dataset(tmp_path, 3, h, w, 1)
    # 4-row bands need 768 + 4096 B for A (3 -> 16 channels), 4096 + 256 B for B and D (16 -> 1), 512 B for C
    budget = 4608
    log = io.StringIO()
    res = P.run_pipeline(tmp_path / "m.tflite", _options(ds, kpu_ram_budget=budget), log)
    assert [r.kind for r in res.kpu_fit.remedies if r.kind == "cpu"] == ["cpu"]
    assert res.kpu_fit.remedies[0].layer == "Conv2D_0" and res.kpu_fit.remedies[0].cpu_macs == 16 * 3 * 9 * h * w
    assert "compiling again with Conv2D_0 on the CPU" in log.getvalue()
    assert {r.kind for r in res.kpu_fit.remedies[1:]} == {"split"}
    assert res.schedule.kpu_usage <= budget
    fb = dict(cpu_fallbacks(res.llir, kpu_fit=res.kpu_fit))
    assert "even as row bands" in fb["QuantizedConv2D 'Conv2D_0' (1x16x24x40)"]
    whole = P.run_pipeline(tmp_path / "m.tflite", _options(ds), io.StringIO())  # all on the KPU
    x = np.random.default_rng(3).integers(0, 256, (1, 3, h, w), dtype=np.uint8)
    want = np.asarray(kmodelpy.load(tmp_path / "m.tflite").run(x.astype(F32) / 255)[0], F32)
    err = []
    for data in (res.kmodel, whole.kmodel):
        path = tmp_path / "m.kmodel"
        path.write_bytes(data)
        err.append(float(np.abs(np.asarray(kmodelpy.load(path).run(x)[0], F32) - want).mean()))
    assert err[0] <= 1.5 * err[1] + 1e-4, err  # as close to float as the all-KPU kmodel


def test_error_policy_keeps_nccs_failure(tmp_path, capsys):
    import kmodelpy
    from kmodelpy.cli import main
    from kmodelpy.errors import CompileError, InputError

    h, w = 24, 40
    (tmp_path / "m.tflite").write_bytes(_residual_model(h, w))
    ds = _dataset(tmp_path, 3, h, w, 1)
    with pytest.raises(CompileError, match="KPU memory overflow at layer .*the 30720 B of KPU RAM allowed.* "
                                           "reduce the input.*--kpu-ram-overflow error"):
        P.run_pipeline(tmp_path / "m.tflite", _options(ds, kpu_ram_budget=30720, kpu_ram_overflow="error"),
                       io.StringIO())
    kmodelpy.compile(tmp_path / "m.tflite", dataset=ds, dataset_format="raw", kpu_ram_overflow="error")
    with pytest.raises(InputError, match="--kpu-ram-overflow 'split'"):
        kmodelpy.compile(tmp_path / "m.tflite", dataset=ds, dataset_format="raw", kpu_ram_overflow="split")
    out = tmp_path / "o.kmodel"
    args = ["compile", str(tmp_path / "m.tflite"), str(out), "--dataset", str(ds), "--dataset-format", "raw"]
    capsys.readouterr()
    assert main(args + ["--kpu-ram-overflow", "split"]) == 2 and not out.exists()
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main(args + ["--kpu-ram-overflow", "error"]) == 0 and out.exists()


def test_joined_bands_keep_their_shape():
    """A Concat body stores no shape: the runtime joins its inputs' shapes along the axis the sizes give."""
    from kmodelpy.format.binio import MemoryRange
    from kmodelpy.ops.concat import Concat

    cat = Concat(output=MemoryRange(1, 1, 0, 64), inner_size=8, outer_size=1, input_ranges=[], dims=[1, 3, 4])
    assert cat.joined_shape([(1, 1, 1, 8), None, (1, 1, 4, 8)]) == [1, 1, 8, 8]  # ambiguous: the last axis
    cat = Concat(output=MemoryRange(1, 0, 0, 4 * 40), inner_size=4 * 5, outer_size=1, input_ranges=[], dims=[3, 5])
    assert cat.joined_shape([(1, 3, 1, 5), (1, 5, 1, 5)]) == [1, 8, 1, 5]
    assert cat.joined_shape([None, None]) is None and cat.joined_shape([(2, 3, 1, 5), None]) is None


@pytest.mark.parametrize("case", ["line_follower_kpu", "line_follower_stock", "add_residual", "conv_maxpool2x2",
                                  "dense", "large_input_320x240"])
def test_preview_needs_what_ncc_placed(case):
    """The fit report's preview (no calibration set) places the KPU tensors exactly where ncc did: its KPU
    RAM is the KPU high-water of ncc's kmodel, and the upper bound that lets the report skip it holds."""
    from kmodelpy.compiler.kpu_ram.preview import preview_kpu_ram, upper_bound
    from kmodelpy.fit_rules import _compile_structure, source_model
    from kmodelpy.format.kmodel import KModel
    from kmodelpy.inspect_kmodel import summarize
    from refcases import CASES

    path = CASES / case / "model.tflite"
    g, _ = _compile_structure(source_model(path), 64.0, 1024)
    fit = preview_kpu_ram(path, checkpointed=g.copy())
    assert not fit.changed
    assert fit.kpu_bytes == summarize(KModel.parse((CASES / case / "ncc.kmodel").read_bytes()))["kpu_high_water"]
    assert upper_bound(g) >= fit.kpu_bytes
