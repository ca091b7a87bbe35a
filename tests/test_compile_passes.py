"""Unit tests of the compiler's front and middle: ncc's rewrite engine (compiler spec §3.3), the pass
lists (§2.1), individual transforms (§5, §6), the calibration helpers (§7.1-7.4) and the options/CLI."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kmodelpy.compiler import transforms as T
from kmodelpy.compiler.rewrite import Context, Match, Transform, is_self_contained, reroute, run_pass
from kmodelpy.compiler.transforms import build
from kmodelpy.errors import InputError
from kmodelpy.ir.graph import Graph
from kmodelpy.ir.ops import FULL_RANGE
from tflite_builder import TFLiteBuilder

F32 = np.float32


def chain(ops_perm):
    """input [1,2,3,4] → transposes with the given perms → output."""
    g = Graph()
    x = build.input_node(g, (1, 2, 3, 4), "float32", name="x")
    src = x.output
    for p in ops_perm:
        src = build.transpose(g, src, p).output
    g.add("output", [src], (), [], name="y")
    return g


def kinds(g):
    return [n.op for n in g.dfs()]


# ------------------------------------------------------------------------------------ rewrite engine
class Rename(Transform):
    """Toy transform: replaces every 'unary' whose attr done is False; records the matched names."""

    name = "rename"
    ops = frozenset({"unary"})

    def __init__(self, log):
        self.log = log

    def match(self, node, ctx):
        return None if node.attrs.get("done") else Match([node], [node.input], [node.output])

    def rewrite(self, g, m, ctx):
        n = m.nodes[0]
        self.log.append(n.name)
        new = g.add("unary", [m.inputs[0].producer], [n.output.shape], name=n.name, unary_op="neg", done=True)
        reroute(m.outputs[0], new.output)


def test_pass_rewrites_first_dfs_match_and_restarts():
    g = Graph()
    x = build.input_node(g, (1, 4), "float32", name="x")
    a = g.add("unary", [x.output], [(1, 4)], name="a", unary_op="neg")
    b = g.add("unary", [a.output], [(1, 4)], name="b", unary_op="neg")
    c = g.add("unary", [x.output], [(1, 4)], name="c", unary_op="neg")
    s = g.add("binary", [b.output, c.output], [(1, 4)], name="s", binary_op="add", fused_activation=FULL_RANGE)
    g.add("output", [s.output], (), [], name="y")
    log = []
    assert run_pass(g, [Rename(log)], Context()) == 3
    assert log == ["a", "b", "c"]  # DFS post-order from the output: a, b (input 0 first), then c
    assert len(g.nodes) == 6  # the three replaced unaries were garbage-collected
    assert all(n.attrs.get("done") for n in g.nodes if n.op == "unary")


def test_default_list_folds_inverse_transposes_and_gc():
    g = chain([(0, 2, 3, 1), (0, 3, 1, 2)])
    run_pass(g, T.pass_p1(Context()), Context())
    assert kinds(g) == ["input", "output"] and len(g.nodes) == 2


def test_fold_transpose_composes_perms():
    g = chain([(0, 2, 3, 1), (0, 2, 3, 1)])
    run_pass(g, [T.FoldTranspose()], Context())
    (t,) = [n for n in g.nodes if n.op == "transpose"]
    assert t["perm"] == (0, 3, 1, 2) and t.output.shape == (1, 4, 2, 3)


def test_transpose_to_reshape_when_order_of_real_dims_kept():
    g = Graph()
    x = build.input_node(g, (1, 8, 1, 1), "float32")
    t = build.transpose(g, x.output, (0, 2, 3, 1))
    g.add("output", [t.output], (), [])
    run_pass(g, [T.TransposeToReshape()], Context())
    assert kinds(g) == ["input", "reshape", "output"]


def test_self_contained_check():
    g = chain([(0, 2, 3, 1), (0, 3, 1, 2)])
    t1, t2 = [n for n in g.nodes if n.op == "transpose"]
    assert is_self_contained(Match([t1, t2], [t1.input], [t2.output]))
    assert not is_self_contained(Match([t2], [], [t2.output]))  # t2's input comes from outside
    g.add("output", [t1.output], (), [], name="extra")
    assert not is_self_contained(Match([t1, t2], [t1.input], [t2.output]))  # t1 is used outside


def test_disabled_self_contained_check_duplicates_shared_nodes():
    """Quirk §13.7: a transpose with two unary consumers is moved behind each of them (two copies)."""
    g = Graph()
    x = build.input_node(g, (1, 2, 3, 4), "float32")
    t = build.transpose(g, x.output, (0, 2, 3, 1))
    for i in range(2):
        u = g.add("unary", [t.output], [t.output.shape], name=f"u{i}", unary_op="abs")
        g.add("output", [u.output], (), [])
    run_pass(g, [T.TransposeUnaryMotion()], Context())
    assert [n.op for n in g.nodes].count("transpose") == 2
    for o in g.outputs:
        assert o.producer(0).op == "transpose" and o.producer(0).producer(0).op == "unary"


# ------------------------------------------------------------------------------------ pass lists
def test_pass_lists_match_the_spec():
    ctx = Context()
    names = lambda ts: [t.name for t in ts]  # noqa: E731
    d = names(T.default_list(ctx))
    assert len(d) == 26 and d[:3] == ["fold_constant", "fold_nop_pad", "fold_nop_reshape"]
    assert d[20:] == ["simplify_reduce", "fuse_one_unary", "fuse_one_binary", "fuse_two_fused_unary",
                      "fuse_one_fused_unary_with_binary", "fuse_two_fused_unary_with_binary"]
    assert len(T.default_list(Context(inference_type="float"))) == 21
    assert names(T.pass_p2(ctx))[:5] == ["eliminate_dilated_conv2d", "fake_kpu_conv2d", "matmul_to_fake_kpu_conv2d",
                                         "strided_slice_motion", "fuse_fake_kpu_conv2d_strided_slice"]
    assert names(T.pass_q1(ctx)) == ["kpu_conv2d", "fold_quantize"]
    assert names(T.pass_q2(ctx)) == ["fuse_kpu_conv2d_pool", "fold_quantize"]
    assert names(T.pass_q3(ctx)) == ["fold_kpu_upload", "fold_quantize"]
    q4 = names(T.pass_q4(ctx))
    # kmodelpy's one addition: the uint8 motion of the resize lowering's edge-replication concats (D11)
    assert q4[:11] == ["fold_input_quantize", "dequantize_reshape_motion", "dequantize_transpose_motion",
                       "dequantize_pad_motion", "dequantize_strided_slice_motion", "dequantize_resize_image_motion",
                       "dequantize_replication_concat_motion", "quantized_conv2d", "quantized_matmul",
                       "quantized_binary", "fused_unary_to_lookup1d"]
    assert names(T.pass_p1(ctx)) == ["lower_resize"] + d  # D11, D24, then ncc's default list
    q4_nobin_float_in = names(T.pass_q4(Context(quantize_binary=False, input_type="float")))
    assert "quantized_binary" not in q4_nobin_float_in and "fold_input_quantize" not in q4_nobin_float_in
    assert names(T.pass_q5(ctx))[:2] == ["fuse_kpu_download", "fold_input_kpu_upload"]
    assert [t.self_contained for t in T.pass_p2(ctx)[:5]] == [False, False, False, True, False]
    c3 = T.pass_c3(Context(quantize_binary=False))[0]
    assert c3.ops == {"conv2d", "matmul", "fused_unary"}


# ------------------------------------------------------------------------------------ transforms
def test_fuse_clamp_keeps_the_lower_upper_bound():
    """Deviation D2: ncc's max() would turn a separate RELU6 into a RELU."""
    g = Graph()
    x = build.input_node(g, (1, 1, 4, 4), "float32")
    c = build.conv2d(g, x.output, np.ones((2, 1, 1, 1), F32), np.zeros(2, F32), 1, (0, 0), (0, 0), 1, 1, 1, 1,
                     (0.0, float(np.finfo(F32).max)))
    lo, hi = build.constant(g, np.array([0], F32)), build.constant(g, np.array([6], F32))
    cl = g.add("clamp", [c.output, lo.output, hi.output], [c.output.shape])
    g.add("output", [cl.output], (), [])
    run_pass(g, [T.FuseClampConv2d()], Context())
    (conv,) = [n for n in g.nodes if n.op == "conv2d"]
    assert conv["fused_activation"] == (0.0, 6.0) and "clamp" not in kinds(g)


def test_transpose_reduce_motion_quirk_perm():
    """Quirk §13.9: the non-keep-dims perm is built against the pre-motion axes."""
    g = Graph()
    x = build.input_node(g, (1, 8, 4, 4), "float32")
    t = build.transpose(g, x.output, (0, 2, 3, 1))
    r = g.add("reduce", [t.output], [(1, 8)], reduce_op="mean", axis=(1, 2), keep_dims=False, init_value=0.0)
    g.add("output", [r.output], (), [])
    run_pass(g, [T.TransposeReduceMotion()], Context())
    (r2,) = [n for n in g.nodes if n.op == "reduce"]
    (t2,) = [n for n in g.nodes if n.op == "transpose"]
    assert list(r2["axis"]) == [2, 3] and r2.output.shape == (1, 8) and list(t2["perm"]) == [0, 1]


def test_strided_slice_to_pad_crops():
    g = Graph()
    x = build.input_node(g, (1, 3, 8, 8), "float32")
    s = build.strided_slice(g, x.output, [0, 0, 1, 2], [1, 3, 7, 8], [1, 1, 1, 1])
    g.add("output", [s.output], (), [])
    run_pass(g, [T.StridedSliceToPad()], Context())
    (p,) = [n for n in g.nodes if n.op == "pad"]
    assert p["paddings"] == [(0, 0), (0, 0), (-1, -1), (-2, 0)] and p.output.shape == (1, 3, 6, 6)


def _conv_model(tmp_path, h, w, k, stride, padding, channels=(3, 8), depthwise=False, act="RELU6"):
    b = TFLiteBuilder()
    ic, oc = channels
    x = b.tensor("x", [1, h, w, ic])
    rng = np.random.default_rng(0)
    if depthwise:
        wt = b.const("w", rng.uniform(-1, 1, (1, k, k, ic)).astype(F32))
        oc = ic
    else:
        wt = b.const("w", rng.uniform(-1, 1, (oc, k, k, ic)).astype(F32))
    bias = b.const("b", rng.uniform(-0.1, 0.1, oc).astype(F32))
    oh = -(-h // stride) if padding == "SAME" else (h - k) // stride + 1
    ow = -(-w // stride) if padding == "SAME" else (w - k) // stride + 1
    y = b.tensor("y", [1, oh, ow, oc])
    if depthwise:
        b.op("DEPTHWISE_CONV_2D", [x, wt, bias], [y], "DepthwiseConv2DOptions", padding=padding, stride_h=stride,
             stride_w=stride, depth_multiplier=1, fused_activation=act)
    else:
        b.op("CONV_2D", [x, wt, bias], [y], "Conv2DOptions", padding=padding, stride_h=stride, stride_w=stride,
             fused_activation=act)
    path = tmp_path / "m.tflite"
    path.write_bytes(b.build(inputs=[x], outputs=[y]))
    return path


def _optimized(path):
    from kmodelpy.compiler import pipeline as P

    ctx = P.make_context(P.Options(dataset="unused"))
    g = P.import_graph(path, io.StringIO())
    P.optimize(g, ctx, io.StringIO())
    return g


def test_worked_example_3x3_s2_same_even_input(tmp_path):
    """Compiler spec §6.5: pad H (1,1) → fake conv with right-top select pool → crop the first row."""
    g = _optimized(_conv_model(tmp_path, 16, 16, 3, 2, "SAME"))
    assert kinds(g) == ["input", "pad", "fake_kpu_conv2d", "pad", "output"]
    pre, conv, crop = [n for n in g.dfs()][1:4]
    assert pre["paddings"] == [(0, 0), (0, 0), (1, 1), (0, 0)]
    assert conv["pool_type"] == build.POOL_RIGHT_TOP_2_S2 and conv.output.shape == (1, 8, 9, 8)
    assert crop["paddings"] == [(0, 0), (0, 0), (-1, 0), (0, 0)] and crop.output.shape == (1, 8, 8, 8)


def test_depthwise_stride2_keeps_cpu_slice(tmp_path):
    g = _optimized(_conv_model(tmp_path, 16, 16, 3, 2, "SAME", (8, 8), depthwise=True))
    ks = kinds(g)
    assert "fake_kpu_conv2d" in ks and "strided_slice" in ks
    (conv,) = [n for n in g.nodes if n.op == "fake_kpu_conv2d"]
    assert conv["is_depthwise"] and conv["pool_type"] == build.POOL_BYPASS


def test_stacked_stride2_1x1_convs_keep_both_subsamplings(tmp_path):
    """D10: strided_slice_motion moves the first conv's stride-2 slice behind the second 1x1 conv, which
    then has two slices; the select-pool fusion takes the first and leaves the second a CPU slice (ncc
    fuses it again into the conv that has its pool already, losing one subsampling)."""
    b = TFLiteBuilder()
    rng = np.random.default_rng(0)
    x = b.tensor("x", [1, 13, 13, 1])
    shapes = [(1, 7, 7, 1), (1, 4, 4, 2)]
    cur, ic = x, 1
    for i, shp in enumerate(shapes):
        oc = shp[3]
        wt = b.const(f"w{i}", rng.uniform(-1, 1, (oc, 1, 1, ic)).astype(F32))
        bias = b.const(f"b{i}", rng.uniform(-0.1, 0.1, oc).astype(F32))
        y = b.tensor(f"y{i}", list(shp))
        b.op("CONV_2D", [cur, wt, bias], [y], "Conv2DOptions", padding="SAME", stride_h=2, stride_w=2,
             fused_activation="NONE")
        cur, ic = y, oc
    path = tmp_path / "m.tflite"
    path.write_bytes(b.build(inputs=[x], outputs=[cur]))
    g = _optimized(path)
    convs = [n for n in g.dfs() if n.op == "fake_kpu_conv2d"]
    assert [c["pool_type"] for c in convs] == [build.POOL_BYPASS, build.POOL_LEFT_TOP_2_S2]
    assert convs[1].input.shape == (1, 1, 14, 14) and convs[1].output.shape == (1, 2, 7, 7)
    (s,) = [n for n in g.nodes if n.op == "strided_slice"]
    assert list(s["strides"]) == [1, 1, 2, 2] and s.output.shape == (1, 2, 4, 4)


def test_5x5_conv_stays_float_conv2d(tmp_path):
    g = _optimized(_conv_model(tmp_path, 8, 8, 5, 1, "SAME"))
    assert "conv2d" in kinds(g) and "fake_kpu_conv2d" not in kinds(g)


def test_weights_threshold_keeps_conv_off_the_kpu(tmp_path):
    from kmodelpy.compiler import pipeline as P

    path = _conv_model(tmp_path, 8, 8, 3, 1, "SAME")
    ctx = P.make_context(P.Options(dataset="unused", weights_quantize_threshold=0.5))
    g = P.import_graph(path, io.StringIO())
    P.optimize(g, ctx, io.StringIO())
    assert "fake_kpu_conv2d" not in kinds(g)


def test_matmul_to_fake_kpu_conv2d():
    g = Graph()
    x = build.input_node(g, (1, 64), "float32")
    w = build.constant(g, np.random.default_rng(1).uniform(-1, 1, (64, 32)).astype(F32))
    mm = g.add("matmul", [x.output, w.output], [(1, 32)], bias=np.zeros(32, F32), fused_activation=FULL_RANGE)
    g.add("output", [mm.output], (), [])
    run_pass(g, [T.MatmulToFakeKpuConv2d()], Context())
    assert kinds(g) == ["input", "reshape", "pad", "fake_kpu_conv2d", "pad", "reshape", "output"]
    (c,) = [n for n in g.nodes if n.op == "fake_kpu_conv2d"]
    assert c["weights"].shape == (32, 64, 1, 1) and c.input.shape == (1, 64, 4, 4)
    np.testing.assert_array_equal(c["weights"][:, :, 0, 0], w["data"].T)


def test_fuse_one_binary_builds_program_and_keeps_activation():
    """ncc drops the binary's fused activation here (quirk §13.4); kmodelpy appends it as max/min (D12)."""
    from kmodelpy.compiler.fused_unary import FuOp

    g = Graph()
    x = build.input_node(g, (1, 4), "float32")
    k = build.constant(g, np.array([0.5], F32))
    b = build.binary(g, k.output, x.output, "sub", (0.0, 1.0))
    g.add("output", [b.output], (), [])
    run_pass(g, [T.FuseOneBinary()], Context())
    (f,) = [n for n in g.nodes if n.op == "fused_unary"]
    assert f["program"] == (FuOp.ldx(), FuOp.constant(0.5), FuOp.binary("sub", 1, 0), FuOp.constant(0.0),
                            FuOp.binary("max", 2, 3), FuOp.constant(1.0), FuOp.binary("min", 4, 5))
    from kmodelpy.ir.evaluate import evaluate

    xv = np.float32([[-2.0, 0.0, 0.25, 3.0]])
    (y,) = evaluate(g, [xv])
    np.testing.assert_array_equal(y, np.clip(np.float32(0.5) - xv, 0, 1))


# ------------------------------------------------------------------------------------ float kernels
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2), st.integers(1, 20), st.integers(1, 20), st.integers(1, 9), st.integers(1, 40),
       st.sampled_from([1, 3]), st.booleans(), st.integers(0, 2**31 - 1), st.integers(0, 9))
def test_fast_kpu_conv_equals_runtime_conv2d(n, c, oc, h, w, k, dw, seed, pool_type):
    """The calibration's fake-KPU conv (+ pool; select pools computed only where kept) gives the same
    float32 bits as kmodelpy.ops.conv2d followed by the pool."""
    from kmodelpy.compiler.kpu_float import kpu_conv_f32
    from kmodelpy.ops.conv2d import conv2d

    rng = np.random.default_rng(seed)
    oc = c if dw else oc
    x = rng.standard_normal((n, c, h, w)).astype(F32)
    wt = rng.standard_normal((oc, 1 if dw else c, k, k)).astype(F32)
    b = rng.standard_normal(oc).astype(F32)
    p = (k // 2, k // 2)
    want = _naive_pool(conv2d(x, wt, b, c if dw else 1, p, p, 1, 1, 1, 1, -2.0, 2.5), pool_type)
    got = np.ascontiguousarray(kpu_conv_f32(x, wt, b, dw, (-2.0, 2.5), pool_type))
    assert got.shape == want.shape and got.tobytes() == want.tobytes()


def _naive_pool(x, pool_type):
    from kmodelpy.compiler.kpu_float import POOL_FILTER, SELECT_OFFSET

    n, c, h, w = x.shape
    f, s = POOL_FILTER[pool_type], build.POOL_STRIDE[pool_type]
    out = np.zeros((n, c, h // s, w // s), F32)
    for oy in range(h // s):
        for ox in range(w // s):
            if pool_type in SELECT_OFFSET:
                dy, dx = SELECT_OFFSET[pool_type]
                y, xx = oy * s + dy, ox * s + dx
                out[:, :, oy, ox] = x[:, :, y, xx] if y < h and xx < w else 0
            elif pool_type in (1, 3, 9):
                v = np.full((n, c), -np.finfo(F32).max, F32)
                for ky in range(f):
                    for kx in range(f):
                        y, xx = oy * s + ky, ox * s + kx
                        if y < h and xx < w:
                            v = np.maximum(v, x[:, :, y, xx])
                out[:, :, oy, ox] = v
            elif pool_type == 0:
                out[:, :, oy, ox] = x[:, :, oy, ox]
            else:
                v = np.zeros((n, c), F32)
                for ky in range(f):
                    for kx in range(f):
                        v = (v + x[:, :, min(oy * s + ky, h - 1), min(ox * s + kx, w - 1)]).astype(F32)
                out[:, :, oy, ox] = (v / F32(f * f)).astype(F32)
    return out


@pytest.mark.parametrize("pool_type", range(10))
def test_kpu_pool_emulation(pool_type):
    from kmodelpy.compiler.kpu_float import kpu_pool_f32

    x = np.random.default_rng(pool_type).standard_normal((1, 3, 9, 10)).astype(F32)
    assert kpu_pool_f32(x, pool_type).tobytes() == _naive_pool(x, pool_type).tobytes()


# ------------------------------------------------------------------------------------ calibration
@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([0.0, -0.0, 1.5, -2.25, 3e38, -7.0, float("nan"), float("inf"), -1e-30]),
                max_size=12))
def test_tensor_range_equals_get_range(values):
    from kmodelpy.compiler.calibrate import tensor_range
    from kmodelpy.compiler.quant import get_range

    v = np.array(values, F32)
    a, b = tensor_range(v), get_range(v)
    assert (a.min.tobytes(), a.max.tobytes()) == (b.min.tobytes(), b.max.tobytes())


_SPECIAL = [0.0, -0.0, 1.5, -2.25, 3e38, -3.4028235e38, -7.0, 1e-40, -1e-40, 1.1754944e-38, float("nan"), float("inf"),
            -float("inf")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_SPECIAL), max_size=40), st.sampled_from(_SPECIAL[:10]), st.sampled_from(_SPECIAL[:10]))
@example(values=[-0.0, 0.0], mn=0.0, mx=-2.25)  # a zero maximum keeps the first zero's sign
def test_vectorised_fold_range_equals_the_element_fold(values, mn, mx):
    """The calibration's int-key min/max fold gives ncc's get_range fold bit for bit (first zero's sign,
    NaN/inf skipped, strict comparisons against the running range)."""
    from kmodelpy.compiler.calibrate import _fold_range, fold_range

    v = np.array(values, F32)
    a = fold_range(v, F32(mn), F32(mx))
    b = _fold_range(v, F32(mn), F32(mx))
    assert [F32(x).tobytes() for x in a] == [F32(x).tobytes() for x in b]


def test_fixed_input_range():
    from kmodelpy.compiler.calibrate import fixed_input_range

    r = fixed_input_range(0.5, 0.5)
    assert (float(r.min), float(r.max)) == (-1.0, 1.0)
    r = fixed_input_range(0.0, 1.0)
    assert (float(r.min), float(r.max)) == (0.0, 1.0)


def test_range_broadcast_gives_concat_one_branch_range():
    """§7.4 and quirk §13.5: data-movement ops take their input's range; a concat the last visiting
    branch's."""
    from kmodelpy.compiler.calibrate import broadcast_ranges
    from kmodelpy.compiler.quant import Range

    g = Graph()
    x = build.input_node(g, (1, 2, 4, 4), "float32")
    a = g.add("unary", [x.output], [x.output.shape], unary_op="abs")
    b = g.add("unary", [x.output], [x.output.shape], unary_op="neg")
    pa = build.pad(g, a.output, [(0, 0)] * 4)
    pb = build.pad(g, b.output, [(0, 0)] * 4)
    cat = g.add("concat", [pa.output, pb.output], [(1, 4, 4, 4)], axis=1)
    g.add("output", [cat.output], (), [])
    ranges = {a.output: Range(0, 1), b.output: Range(-5, 0), pa.output: Range(9, 9), pb.output: Range(9, 9),
              cat.output: Range(-5, 1)}
    broadcast_ranges(g, ranges)
    assert ranges[pa.output] == Range(0, 1) and ranges[pb.output] == Range(-5, 0)
    assert ranges[cat.output] == Range(-5, 0)  # the last branch visited (b), not the union


def test_empty_dataset_and_wrong_raw_size_are_clear_errors(tmp_path):
    import kmodelpy.compiler as C

    model = _conv_model(tmp_path, 8, 8, 3, 1, "SAME")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError) as e:
        C.compile_model(model, dataset=empty)
    assert "\n" not in str(e.value) and "empty" in str(e.value)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.bin").write_bytes(bytes(10))
    with pytest.raises(InputError) as e:
        C.compile_model(model, dataset=raw, dataset_format="raw")
    assert "a.bin" in str(e.value) and "768" in str(e.value)
    with pytest.raises(InputError):
        C.compile_model(model)  # uint8 needs a dataset
    with pytest.raises(InputError):
        C.compile_model(model, dataset=raw, calibrate_method="kl")
    with pytest.raises(InputError):
        C.compile_model(model, dataset=raw, bogus_option=1)


def test_float_inference_needs_no_dataset_and_raw_calibration_works(tmp_path):
    import kmodelpy
    import kmodelpy.compiler as C

    model = _conv_model(tmp_path, 8, 8, 3, 1, "SAME")
    data = C.compile_model(model, inference_type="float")
    out = tmp_path / "f.kmodel"
    out.write_bytes(data)
    from kmodelpy.frontends.tflite.model import load_tflite

    km, tf = kmodelpy.load(out), load_tflite(model, arithmetic="ncc")  # the float kmodel runs ncc's arithmetic
    x = np.random.default_rng(3).uniform(0, 1, (1, 3, 8, 8)).astype(F32)
    assert np.array_equal(km.run(x)[0], tf.run(x)[0])
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(3):
        np.random.default_rng(i).uniform(0, 1, (3, 8, 8)).astype(F32).tofile(raw / f"{i}.bin")
    path = C.compile_model(model, dataset=raw, dataset_format="raw", output=tmp_path / "q.kmodel")
    assert kmodelpy.load(path).input_dtype == np.uint8


def test_cli_defaults_and_ncc_spelling(tmp_path, monkeypatch):
    import argparse

    from kmodelpy.compiler.cli import configure_parser

    p = argparse.ArgumentParser()
    configure_parser(p)
    a = p.parse_args(["m.tflite", "-i", "tflite", "--dataset", "d"])
    assert (a.output, a.inference_type, a.input_type, a.calibrate_method) == (None, "uint8", "default", "no_clip")
    assert (a.weights_quantize_threshold, a.output_quantize_threshold, a.input_mean) == (64.0, 1024, None)
    model = _conv_model(tmp_path, 8, 8, 3, 1, "SAME")
    from kmodelpy.cli import main

    assert main(["compile", str(model), "-i", "tflite", "--inference-type", "float"]) == 0
    assert model.with_suffix(".kmodel").exists()
    assert main(["compile", str(model), "-i", "onnx"]) == 2


@pytest.mark.parametrize("pool", ["MAX_POOL_2D", "AVERAGE_POOL_2D"])
def test_4x4_pool_with_stride_2_after_kpu_conv_stays_a_cpu_pool(tmp_path, pool):
    """Deviation D8 (quirk §13.8): ncc maps the pool to the KPU's 4x4 stride-4 pool and fails on the shape
    mismatch; kmodelpy does not fuse it (a CPU ReduceWindow2D after the KPU conv) and tracks float."""
    import kmodelpy
    import kmodelpy.compiler as C
    from kmodelpy.compiler.report import cpu_fallbacks
    from kmodelpy.compiler.transforms.quantize_k210 import reduce_pool_type
    from kmodelpy.format.kmodel import KModel

    assert reduce_pool_type("max", 4, 2) is None and reduce_pool_type("mean", 4, 1) is None
    assert reduce_pool_type("max", 4, 4) == 3 and reduce_pool_type("mean", 4, 4) == 4
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 16, 16, 3])
    rng = np.random.default_rng(0)
    w = b.const("w", rng.uniform(-1, 1, (8, 3, 3, 3)).astype(F32))
    bias = b.const("b", np.zeros(8, F32))
    y = b.tensor("y", [1, 16, 16, 8])
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding="SAME", stride_h=1, stride_w=1,
         fused_activation="RELU")
    p = b.tensor("p", [1, 7, 7, 8])
    b.op(pool, [y], [p], "Pool2DOptions", padding="VALID", stride_h=2, stride_w=2, filter_h=4,
         filter_w=4, fused_activation="NONE")
    model = tmp_path / "m.tflite"
    model.write_bytes(b.build(inputs=[x], outputs=[p]))
    raw = tmp_path / "raw"
    raw.mkdir()
    samples = [rng.uniform(0, 1, (3, 16, 16)).astype(F32) for _ in range(4)]
    for i, s in enumerate(samples):
        s.tofile(raw / f"{i}.bin")
    from kmodelpy.compiler import pipeline as P

    res = P.run_pipeline(model, P.Options(dataset=str(raw), dataset_format="raw", input_type="float"), io.StringIO())
    data = res.kmodel
    assert data == C.compile_model(model, dataset=raw, dataset_format="raw", input_type="float")
    names = [type(o).__name__ for o in KModel.parse(data).ops]
    assert "KPUConv2D" in names and "ReduceWindow2D" in names
    (tmp_path / "m.kmodel").write_bytes(data)
    xin = samples[0].reshape(1, 3, 16, 16)
    got, want = kmodelpy.load(tmp_path / "m.kmodel").run(xin)[0], kmodelpy.load(model).run(xin)[0]
    assert got.shape == want.shape == (1, 8, 7, 7)
    step = float(want.max() - min(0.0, float(want.min()))) / 255
    assert float(np.abs(got - want).max()) < 3 * step
    falls = [r for n, r in cpu_fallbacks(res.llir) if n.startswith("ReduceWindow2D")]
    assert len(falls) == 1 and "4x4 stride 2" in falls[0] and "4x4 stride 4" in falls[0]


def test_dump_ir_and_weights_range(tmp_path, monkeypatch):
    import kmodelpy.compiler as C
    from kmodelpy.compiler import pipeline as P

    model = _conv_model(tmp_path, 8, 8, 3, 1, "SAME")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    P.run_pipeline(model, P.Options(inference_type="float", dump_ir=True, dump_weights_range=True), out)
    assert sorted(p.name for p in tmp_path.glob("ir_*.dot")) == [
        "ir_import.dot", "ir_lowering.dot", "ir_optimize_1.dot", "ir_optimize_3.dot"]
    text = (tmp_path / "ir_optimize_1.dot").read_text().splitlines()
    assert text[:2] == ['digraph "graph" {', 'node [shape="record"]'] and text[-1] == "}"
    assert '"Conv2D_0" [label="{Conv2D}"]' in text
    assert any(line.startswith('"Conv2D_0"->') and 'label="1x8x8x8"' in line for line in text)
    assert "Dump weights range ...\nConv2D_0{" in out.getvalue()
    assert C.compile_model(model, inference_type="float", dump_ir=False)[:4] == b"LDMK"


def test_dataset_plan_batches_and_top_level_compile(tmp_path):
    """§7.1: batch = N of a 4-D input; the file list is cut to a multiple of it. kmodelpy.compile()
    returns bytes, or the path when output is given."""
    import kmodelpy
    from kmodelpy.compiler.calibrate import DatasetPlan

    g = Graph()
    build.input_node(g, (2, 3, 4, 4), "float32")
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(5):
        np.full((3, 4, 4), i, F32).tofile(raw / f"{i}.bin")
    plan = DatasetPlan(g, raw, "raw", 0.5, 2.0)
    assert len(plan) == 2 and len(plan.files) == 4
    b1 = plan.load(1)
    assert b1.shape == (2, 3, 4, 4) and float(b1[0, 0, 0, 0]) == (2 - 0.5) / 2 and float(b1[1, 0, 0, 0]) == 1.25
    model = _conv_model(tmp_path, 8, 8, 3, 1, "SAME")
    data = kmodelpy.compile(model, inference_type="float")
    assert isinstance(data, bytes) and data[:4] == b"LDMK"
    out = kmodelpy.compile(model, inference_type="float", output=tmp_path / "o.kmodel")
    assert (tmp_path / "o.kmodel").read_bytes() == data and str(out).endswith("o.kmodel")


def test_uint8_pad_carries_the_zero_point(tmp_path):
    """Deviation D3: with --input-mean 0.5 --input-std 0.5 the input zero point is 128; the pad row before
    a stride-2 KPU conv must read as real 0 (code 128), not as code 0 (real -1) like ncc's Pad."""
    import kmodelpy
    import kmodelpy.compiler as C
    from kmodelpy.format.kmodel import KModel

    model = _conv_model(tmp_path, 16, 16, 3, 2, "SAME", act="NONE")
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(5)
    for i in range(4):
        rng.uniform(0, 1, (3, 16, 16)).astype(F32).tofile(raw / f"{i}.bin")
    data = C.compile_model(model, dataset=raw, dataset_format="raw", input_mean=0.5, input_std=0.5)
    km = KModel.parse(data)
    pads = [n.op for n in km.nodes if n.op.opcode == 0x05]
    assert pads and pads[0].pad_value_type == 1 and pads[0].pad_value[0] == 128

    x = rng.integers(0, 256, (1, 3, 16, 16), dtype=np.uint8)
    want = kmodelpy.load(model).run((x.astype(F32) / F32(255) - F32(0.5)) / F32(0.5))[0]

    def error(blob):
        (tmp_path / "m.kmodel").write_bytes(blob)
        return float(np.abs(kmodelpy.load(tmp_path / "m.kmodel").run(x)[0] - want).max())

    pads[0].pad_value_type, pads[0].pad_value = 0, bytes(4)  # what ncc would have written
    assert error(data) < 0.5 * error(km.to_bytes())


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_dilated_conv_space_to_batch_runs_on_the_kpu_and_tracks_float(tmp_path, padding):
    """§5.2: a dilated stride-1 conv becomes pad → space-to-batch → plain conv (KPU) → batch-to-space."""
    import kmodelpy
    import kmodelpy.compiler as C
    from kmodelpy.format.kmodel import KModel

    b = TFLiteBuilder()
    x = b.tensor("x", [1, 15, 14, 3])
    rng = np.random.default_rng(2)
    w = b.const("w", rng.uniform(-0.5, 0.5, (8, 3, 3, 3)).astype(F32))
    bias = b.const("b", rng.uniform(-0.1, 0.1, 8).astype(F32))
    oh, ow = (15, 14) if padding == "SAME" else (11, 10)
    y = b.tensor("y", [1, oh, ow, 8])
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding=padding, stride_h=1, stride_w=1, dilation_h=2,
         dilation_w=2, fused_activation="NONE")
    model = tmp_path / "m.tflite"
    model.write_bytes(b.build(inputs=[x], outputs=[y]))
    g = _optimized(model)
    assert "fake_kpu_conv2d" in kinds(g) and "conv2d" not in kinds(g)
    raw = tmp_path / "raw"
    raw.mkdir()
    samples = [rng.uniform(0, 1, (3, 15, 14)).astype(F32) for _ in range(4)]
    for i, s in enumerate(samples):
        s.tofile(raw / f"{i}.bin")
    data = C.compile_model(model, dataset=raw, dataset_format="raw", input_type="float")
    assert 0x2002 in [n.op.opcode for n in KModel.parse(data).nodes]
    (tmp_path / "m.kmodel").write_bytes(data)
    xin = samples[0].reshape(1, 3, 15, 14)
    got = kmodelpy.load(tmp_path / "m.kmodel").run(xin)[0]
    want = kmodelpy.load(model).run(xin)[0]
    step = float(want.max() - min(0.0, float(want.min()))) / 255
    assert got.shape == want.shape and float(np.abs(got - want).max()) < 4 * step


def test_cpu_target_has_no_kpu_layers(tmp_path):
    """-t cpu (§2.1): P2/C1/Q1-Q3/Q5 are empty, so convs become CPU QuantizedConv2D."""
    import kmodelpy
    import kmodelpy.compiler as C
    from kmodelpy.format.kmodel import KModel

    model = _conv_model(tmp_path, 16, 16, 3, 1, "SAME")  # 2048 outputs >= the 1024 threshold
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(9)
    samples = [rng.uniform(0, 1, (3, 16, 16)).astype(F32) for _ in range(3)]
    for i, s in enumerate(samples):
        s.tofile(raw / f"{i}.bin")
    data = C.compile_model(model, dataset=raw, dataset_format="raw", input_type="float", target="cpu")
    ops = [n.op.opcode for n in KModel.parse(data).nodes]
    assert 0x0F in ops and 0x2001 not in ops and 0x2002 not in ops
    (tmp_path / "c.kmodel").write_bytes(data)
    x = samples[0].reshape(1, 3, 16, 16)
    got, want = kmodelpy.load(tmp_path / "c.kmodel").run(x)[0], kmodelpy.load(model).run(x)[0]
    assert float(np.abs(got - want).max()) < 4 * float(want.max() - min(0.0, float(want.min()))) / 255


def test_kpu_conv_with_all_non_positive_weights_tracks_float(tmp_path):
    """Deviation D7: a KPU conv whose whole weight tensor is <= 0 (ncc: 0/0 = NaN equalisation scales and a
    constant output) gives the float result within a couple of quantization steps."""
    import kmodelpy
    import kmodelpy.compiler as C

    b = TFLiteBuilder()
    x = b.tensor("x", [1, 16, 16, 3])
    rng = np.random.default_rng(11)
    wv = -np.abs(rng.uniform(-1, 1, (8, 3, 3, 3))).astype(F32) / F32(3)
    wv[5] = 0.0  # an all-zero output channel too
    w = b.const("w", wv)
    bias = b.const("b", rng.uniform(-0.1, 0.5, 8).astype(F32))
    y = b.tensor("y", [1, 16, 16, 8])
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding="SAME", stride_h=1, stride_w=1,
         fused_activation="NONE")
    model = tmp_path / "m.tflite"
    model.write_bytes(b.build(inputs=[x], outputs=[y]))
    raw = tmp_path / "raw"
    raw.mkdir()
    samples = [rng.uniform(0, 1, (3, 16, 16)).astype(F32) for _ in range(4)]
    for i, s in enumerate(samples):
        s.tofile(raw / f"{i}.bin")
    path = C.compile_model(model, dataset=raw, dataset_format="raw", input_type="float", output=tmp_path / "q.kmodel")
    xin = samples[0].reshape(1, 3, 16, 16)
    got, want = kmodelpy.load(path).run(xin)[0], kmodelpy.load(model).run(xin)[0]
    step = float(max(want.max(), 0.0) - min(0.0, float(want.min()))) / 255
    assert float(np.std(got)) > 0.1  # not a constant
    assert float(np.abs(got - want).max()) < 3 * step


@pytest.mark.parametrize("float_io", [False, True])
def test_cli_refuses_a_fully_int8_model_with_one_line(tmp_path, capsys, float_io):
    """A fully int8-quantized .tflite (int8 interface, or float interface with QUANTIZE/DEQUANTIZE around
    int8 ops): `kmodelpy compile` exits 2 with one stderr line naming the tensor and how to export a float
    model, and leaves no output file."""
    from kmodelpy.cli import main

    b = TFLiteBuilder()
    if float_io:
        x = b.tensor("input", [1, 8, 8, 3])
        xq = b.tensor("input_int8", [1, 8, 8, 3], "INT8", quant=([1 / 255], [-128], 0))
        b.op("QUANTIZE", [x], [xq])
    else:
        x = xq = b.tensor("input", [1, 8, 8, 3], "INT8", quant=([1 / 255], [-128], 0))
    w = b.const("conv/w", np.ones((4, 3, 3, 3), np.int8), "INT8", quant=([0.01] * 4, [0] * 4, 0))
    bias = b.const("conv/b", np.zeros(4, np.int32), "INT32", quant=([1e-4] * 4, [0] * 4, 0))
    y = b.tensor("conv_out", [1, 8, 8, 4], "INT8", quant=([0.05], [-128], 0))
    b.op("CONV_2D", [xq, w, bias], [y], "Conv2DOptions", padding="SAME", stride_h=1, stride_w=1,
         fused_activation="RELU")
    out = y
    if float_io:
        out = b.tensor("output", [1, 8, 8, 4])
        b.op("DEQUANTIZE", [y], [out])
    model = tmp_path / "m.tflite"
    model.write_bytes(b.build(inputs=[x], outputs=[out]))
    raw = tmp_path / "raw"
    raw.mkdir()
    np.zeros((3, 8, 8), F32).tofile(raw / "0.bin")
    capsys.readouterr()
    assert main(["compile", str(model), str(tmp_path / "m.kmodel"), "--dataset", str(raw),
                 "--dataset-format", "raw"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    tensor = "input_int8" if float_io else "input"
    assert f"'{tensor}'" in err[0] and "INT8" in err[0] and "fully quantized" in err[0]
    assert "converter.optimizations = []" in err[0] and "representative_dataset" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite", "raw"]
