"""The ONNX front end: importer properties against the ONNX reference evaluator (``onnx.reference``, shipped in
the ``onnx`` package), ncc's graph where ncc is right, and one-line errors for bad input (CLI: exit 2, no
output file)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import kmodelpy
from kmodelpy import cli
from kmodelpy.errors import KmodelpyError
from refcases import CASES, DATASETS

F32 = np.float32


def _model(nodes, x_shape, y_name="y", inits=(), opset=13, inputs=None):
    """A one-input float model (``x``) computing ``y_name``; shapes are left for the importer to infer."""
    g = helper.make_graph(nodes, "g", inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    inferred = onnx.shape_inference.infer_shapes(m)  # graph outputs need a shape: symbolic dims of the right rank
    for out, vi in zip(m.graph.output, inferred.graph.output):
        rank = len(vi.type.tensor_type.shape.dim) if vi.type.tensor_type.HasField("shape") else 4
        out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, [f"d{i}" for i in range(rank)]))
    return m


def _ours(model, x, tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(model, str(p))
    return kmodelpy.load(p).run(x)[0]


def _reference(model, x):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, {"x": x})[0]


def _check(model, x, tmp_path, tol=1e-5, want=None):
    want = np.asarray(_reference(model, x) if want is None else want, np.float64)
    got = np.asarray(_ours(model, x, tmp_path), np.float64)
    assert got.shape == want.shape
    span = max(float(want.max() - want.min()), 1e-6) if want.size else 1.0
    assert np.abs(got - want).max() <= tol * span + 1e-6, np.abs(got - want).max()


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(data=st.data())
def test_conv_pads_strides_groups_match_reference(data, tmp_path):
    """Conv in ONNX's pads order [h_begin, w_begin, h_end, w_end] (D21), auto_pad SAME_UPPER/SAME_LOWER/VALID,
    strides, dilations, groups; BatchNormalization folded into it (checked in numpy on the reference conv:
    onnx.reference's BatchNormalization disagrees with onnxruntime and the ONNX spec here)."""
    g = data.draw(st.sampled_from([1, 2, 4]))
    cin, cout = 4, data.draw(st.sampled_from([4, 8]))
    k = data.draw(st.sampled_from([1, 2, 3]))
    h, w = data.draw(st.integers(5, 12)), data.draw(st.integers(5, 12))
    attrs = dict(kernel_shape=[k, k], group=g, strides=[data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))],
                 dilations=[data.draw(st.integers(1, 2))] * 2)
    auto = data.draw(st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if auto == "NOTSET":
        attrs["pads"] = [data.draw(st.integers(0, 2)) for _ in range(4)]
    else:
        attrs["auto_pad"] = auto
        attrs["dilations"] = [1, 1]
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    wt = rng.standard_normal((cout, cin // g, k, k)).astype(F32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["y"])]
    inits = [("w", wt), ("b", rng.standard_normal(cout).astype(F32)), ("s", rng.random(cout).astype(F32) + 0.5),
             ("bb", rng.standard_normal(cout).astype(F32)), ("m", rng.standard_normal(cout).astype(F32)),
             ("v", rng.random(cout).astype(F32) + 0.1)]
    x = rng.standard_normal((1, cin, h, w)).astype(F32)
    conv = _reference(_model(nodes[:1], [1, cin, h, w], y_name="c", inits=inits[:2]), x)
    sc, bb, m, v = (np.asarray(a, np.float64).reshape(1, -1, 1, 1) for _, a in inits[2:])
    _check(_model(nodes, [1, cin, h, w], inits=inits), x, tmp_path, want=(conv - m) / np.sqrt(v + 1e-5) * sc + bb)


def _pool_reference(x, op, k, s, pads, ceil, count_include_pad):
    """onnxruntime's pooling, directly (onnx.reference's ceil_mode output size disagrees with onnxruntime's):
    a last window starting in the end padding is dropped; count_include_pad counts the window clipped to the
    padded input."""
    n, c, h, w = x.shape
    size = []
    for ax, d in ((0, h), (1, w)):
        span = d + pads[ax] + pads[ax + 2] - k
        o = (-(-span // s) if ceil else span // s) + 1
        size.append(o - 1 if ceil and (o - 1) * s >= d + pads[ax] else o)
    y = np.empty((n, c, size[0], size[1]))
    for i in range(size[0]):
        for j in range(size[1]):
            h0, w0 = i * s - pads[0], j * s - pads[1]
            win = x[:, :, max(h0, 0):min(h0 + k, h), max(w0, 0):min(w0 + k, w)]
            if op == "MaxPool":
                y[:, :, i, j] = win.max(axis=(2, 3))
            else:
                padded = (min(h0 + k, h + pads[2]) - h0) * (min(w0 + k, w + pads[3]) - w0)
                y[:, :, i, j] = win.sum(axis=(2, 3)) / (padded if count_include_pad else win.shape[2] * win.shape[3])
    return y


@SETTINGS
@given(data=st.data())
def test_pools_match_reference(data, tmp_path):
    """MaxPool/AveragePool with pads, strides, ceil_mode, count_include_pad (ncc crashes on every pool)."""
    op = data.draw(st.sampled_from(["MaxPool", "AveragePool"]))
    k = data.draw(st.sampled_from([2, 3]))
    attrs = dict(kernel_shape=[k, k], strides=[data.draw(st.integers(1, 3))] * 2,
                 pads=[data.draw(st.integers(0, k - 1)) for _ in range(4)], ceil_mode=data.draw(st.integers(0, 1)))
    if op == "AveragePool":
        attrs["count_include_pad"] = data.draw(st.integers(0, 1))
    h, w = data.draw(st.integers(4, 11)), data.draw(st.integers(4, 11))
    x = np.random.default_rng(data.draw(st.integers(0, 99))).standard_normal((1, 3, h, w)).astype(F32)
    want = _pool_reference(x, op, k, attrs["strides"][0], attrs["pads"], attrs["ceil_mode"],
                           attrs.get("count_include_pad", 0))
    _check(_model([helper.make_node(op, ["x"], ["y"], **attrs)], [1, 3, h, w]), x, tmp_path, want=want)


@SETTINGS
@given(data=st.data())
def test_resize_modes_match_reference(data, tmp_path):
    """Resize by integer and fractional factors in every coordinate mode and nearest mode (ncc: asymmetric floor
    only) against the ONNX reference evaluator; the one form refused in one line is align_corners with a scaled size
    that is not whole, where onnxruntime and the ONNX reference disagree (onnxruntime's outputs for fractional
    factors: tests/test_onnx_resize.py)."""
    mode = data.draw(st.sampled_from(["nearest", "linear"]))
    ctm = data.draw(st.sampled_from(["half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners"]))
    attrs = dict(mode=mode, coordinate_transformation_mode=ctm)
    if mode == "nearest":
        attrs["nearest_mode"] = data.draw(st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
    sh, sw = data.draw(st.sampled_from([1.0, 2.0, 3.0, 0.5, 1.5])), data.draw(st.sampled_from([1.0, 2.0, 4.0, 1.5]))
    h, w = 2 * data.draw(st.integers(2, 5)), data.draw(st.integers(2, 6))
    model = _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)], [1, 2, h, w],
                   inits=[("scales", np.array([1, 1, sh, sw], F32))])
    x = np.random.default_rng(data.draw(st.integers(0, 99))).standard_normal((1, 2, h, w)).astype(F32)
    whole = all(float(n * s).is_integer() for n, s in ((h, sh), (w, sw)))
    if ctm == "align_corners" and not whole:
        with pytest.raises(KmodelpyError, match="give the sizes input instead of scales"):
            _ours(model, x, tmp_path)
    else:
        _check(model, x, tmp_path)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_modes_match_reference(mode, tmp_path):
    """Pad on a 4-D tensor pads H and W (ncc pads N and C); reflect and edge from slices + concat."""
    pads = np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)
    model = _model([helper.make_node("Pad", ["x", "pads", "v"], ["y"], mode=mode)], [1, 2, 5, 6],
                   inits=[("pads", pads), ("v", np.array(0.5, F32))])
    _check(model, np.random.default_rng(1).standard_normal((1, 2, 5, 6)).astype(F32), tmp_path)


def test_pytorch_shape_subgraph_gemm_head(tmp_path):
    """What torch.onnx.export writes for x.view(x.size(0), -1) -> Linear: Shape -> Gather -> Unsqueeze -> Concat
    -> Reshape (folded at import) then Gemm; plus Flatten, Identity, Dropout, Clip, HardSwish, Sigmoid."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["c"]),
             helper.make_node("HardSwish", ["c"], ["hs"]),
             helper.make_node("Shape", ["hs"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["hs", "shape"], ["r"]),
             helper.make_node("Identity", ["r"], ["i"]),
             helper.make_node("Dropout", ["i"], ["d"]),
             helper.make_node("Gemm", ["d", "w", "b"], ["g"], transB=1),
             helper.make_node("Sigmoid", ["g"], ["y"])]
    inits = [("lo", np.array(0, F32)), ("hi", np.array(6, F32)), ("zero", np.array(0, np.int64)),
             ("ax0", np.array([0], np.int64)), ("minus1", np.array([-1], np.int64)),
             ("w", rng.standard_normal((5, 48)).astype(F32)), ("b", rng.standard_normal(5).astype(F32))]
    _check(_model(nodes, [1, 3, 4, 4], inits=inits, opset=14), rng.standard_normal((1, 3, 4, 4)).astype(F32) * 4,
           tmp_path)


def test_ncc_graph_where_ncc_is_right():
    """Relu is ncc's max(x, Constant 0); a Constant node becomes a constant where it stands (ncc's order)."""
    from kmodelpy.frontends.onnx.importer import import_onnx

    g = import_onnx(CASES / "onnx__line_follower" / "model.onnx")
    ops = [n.op for n in g.nodes]
    assert ops[:6] == ["conv2d", "constant", "binary", "constant", "binary", "conv2d"]
    assert g.nodes[2]["binary_op"] == "max" and g.nodes[4]["binary_op"] == "min"
    assert ops[-2:] == ["input", "output"] and g.inputs[0].name == "input"


# ------------------------------------------------------------------------------------------ errors
def _one_line(rc, capsys, *words):
    out, err = capsys.readouterr()
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def _save(model, path):
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("command", ["inspect", "run", "compile"])
def test_bad_onnx_inputs_are_one_line(command, tmp_path, capsys):
    png = sorted((DATASETS / "rand32" / "test").glob("*.png"))[0]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xff not a protobuf" * 20)
    unsupported = _save(_model([helper.make_node("LRN", ["x"], ["y"], size=3, name="norm1")], [1, 3, 8, 8]),
                        tmp_path / "lrn.onnx")
    symbolic = _save(_model([helper.make_node("Relu", ["x"], ["y"])], [1, 3, "H", 8]), tmp_path / "sym.onnx")
    ext = tmp_path / "ext"
    ext.mkdir()
    big = _model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])], [1, 3, 8, 8],
                 inits=[("w", np.ones((8, 3, 3, 3), F32))])
    onnx.save(big, str(ext / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    (ext / "weights.bin").unlink()
    cases = [(garbage, ["not an ONNX model"]), (unsupported, ["node #0 'norm1' (LRN)", "supported:", "Conv"]),
             (symbolic, ["dimension 2", "'H'", "dynamic_axes"]), (ext / "m.onnx", ["'w'", "weights.bin", "missing"])]
    for path, words in cases:
        out = tmp_path / f"{path.stem}.kmodel"
        argv = [command, str(path)] + ([str(png)] if command == "run" else []) + (
            [str(out), "--dataset", str(DATASETS / "rand32" / "calib")] if command == "compile" else [])
        _one_line(cli.main(argv), capsys, str(path), *words)
        assert not out.exists() and not list(tmp_path.glob(".*.kmodel*"))


def test_onnx_commands(tmp_path, capsys):
    """run / infer / inspect / compile take .onnx; compile infers -i onnx from the suffix, -i is ncc's."""
    case = CASES / "onnx__conv_relu"
    model = case / "model.onnx"
    assert cli.main(["run", str(model), str(sorted((DATASETS / "rand32" / "test").glob("*.png"))[0])]) == 0
    assert "shape 1x8x32x32 float32" in capsys.readouterr().out
    assert cli.main(["infer", str(model), str(tmp_path / "o"), "--dataset", str(case / "inputs"),
                     "--dataset-format", "raw"]) == 2  # raw float32 samples: these are uint8 pictures
    capsys.readouterr()
    assert cli.main(["inspect", str(model)]) == 0 and "Relu" in capsys.readouterr().out
    out = tmp_path / "a.kmodel"
    assert cli.main(["compile", str(model), str(out), "--dataset", str(DATASETS / "rand32" / "calib"), "-q"]) == 0
    assert out.read_bytes() == (case / "ncc.kmodel").read_bytes()
    again = tmp_path / "b.kmodel"
    assert cli.main(["compile", str(model), str(again), "-i", "onnx", "--dataset",
                     str(DATASETS / "rand32" / "calib"), "-q"]) == 0
    assert again.read_bytes() == out.read_bytes()
    _one_line(cli.main(["compile", str(model), str(tmp_path / "c.kmodel"), "-i", "caffe", "--dataset",
                        str(DATASETS / "rand32" / "calib")]), capsys, "-i caffe", "tflite and onnx")
