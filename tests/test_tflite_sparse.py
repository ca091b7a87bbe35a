"""Sparse TFLite constants (``Tensor.sparsity``) densified at read time as TFLite's format converter does:
hand-built sparse tensors (any traversal order, DENSE / SPARSE_CSR levels, 2-D blocks, Int32 / Uint16 / Uint8
index vectors; float32, float16 and int8 values) round-trip to the dense array through a .tflite file and the
float evaluator, and malformed sparsity blocks are one line naming the tensor."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tflite_builder import TFLiteBuilder

import kmodelpy
from kmodelpy.errors import FormatError


def encode(dense: np.ndarray, order, formats, block_map=(), block=()):
    """Independent encoder from the format's definition: the tensor split into blocks, walked in traversal
    order; a SPARSE_CSR level keeps the indices whose sub-tree holds a non-zero, a DENSE level every index."""
    rank = dense.ndim
    shape = list(dense.shape)
    e = dense
    for b, size in zip(block_map, block):  # split dim b into (shape[b] / size, size), block axis last
        s = list(e.shape)
        e = e.reshape(s[:b] + [s[b] // size, size] + s[b + 1:])
        e = np.moveaxis(e, b + 1, -1)
        shape[b] //= size
    expanded = e.transpose(order)
    nodes = [()]
    dims = []
    for level, fmt in enumerate(formats):
        size = expanded.shape[level]
        if fmt == "DENSE":
            nodes = [p + (i,) for p in nodes for i in range(size)]
            dims.append(("DENSE", size))
            continue
        segments, indices, new = [0], [], []
        for p in nodes:
            kept = [i for i in range(size) if np.any(expanded[p + (i,)] != 0)]
            indices += kept
            new += [p + (i,) for i in kept]
            segments.append(len(indices))
        nodes = new
        dims.append(("SPARSE_CSR", segments, indices))
    values = np.array([expanded[p] for p in nodes], dense.dtype)
    assert rank + len(block_map) == len(formats)
    return values, dims


def _index_kind(values, draw_kind):
    biggest = max([0] + list(values))
    if draw_kind == "Uint8Vector" and biggest < 256 or draw_kind == "Uint16Vector" and biggest < 65536:
        return draw_kind
    return "Int32Vector"


def sparse_model(dense, order, formats, block_map=(), block=(), kinds=("Int32Vector",), quant=None,
                 stored_dtype=None):
    """x + DEQUANTIZE?(DENSIFY(sparse constant)): with x = 0 the output is the densified constant (float)."""
    values, dims = encode(dense, order, formats, block_map, block)
    meta = []
    for k, d in enumerate(dims):
        if d[0] == "DENSE":
            meta.append(d)
        else:
            kind = kinds[k % len(kinds)]
            meta.append(("SPARSE_CSR", (_index_kind(d[1], kind), d[1]), (_index_kind(d[2], kind), d[2])))
    b = TFLiteBuilder()
    dtype = stored_dtype or {np.dtype(np.float32): "FLOAT32", np.dtype(np.float16): "FLOAT16",
                             np.dtype(np.int8): "INT8"}[dense.dtype]
    s = b.tensor("sparse_w", list(dense.shape), dtype, data=values, quant=quant,
                 sparsity=(list(order), list(block_map), meta))
    d = b.tensor("dense_w", list(dense.shape), dtype, quant=quant)
    b.op("DENSIFY", [s], [d])
    if dtype != "FLOAT32":
        f = b.tensor("float_w", list(dense.shape))
        b.op("DEQUANTIZE", [d], [f])
        d = f
    x = b.tensor("x", list(dense.shape))
    y = b.tensor("y", list(dense.shape))
    b.op("ADD", [x, d], [y], "AddOptions", fused_activation="NONE")
    return b, x, y


def _densified(tmp_path, b, x, y, shape):
    model = kmodelpy.load(b.save(tmp_path / "m.tflite", [x], [y]))
    out = model.run(np.zeros(model.input_shape, np.float32))[0]
    return out.transpose(0, 2, 3, 1) if len(shape) == 4 else out.reshape(shape)  # 4-D outputs are NCHW


@st.composite
def sparse_cases(draw):
    rank = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 5)) for _ in range(rank)]
    block_map, block = (), ()
    if rank >= 2 and draw(st.booleans()):  # a 2-D block over the last two dims, as TFLite's pruning emits
        block = (draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2, 4])))
        block_map = (rank - 2, rank - 1)
        shape[-2] *= block[0]
        shape[-1] *= block[1]
    order = list(draw(st.permutations(range(rank)))) + list(range(rank, rank + len(block)))
    formats = [draw(st.sampled_from(["DENSE", "SPARSE_CSR"])) for _ in range(rank)] + ["DENSE"] * len(block)
    dtype = draw(st.sampled_from([np.float32, np.float16, np.int8]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    dense = rng.integers(-100, 100, shape) * (rng.random(shape) < draw(st.sampled_from([0.1, 0.5, 1.0])))
    kinds = (draw(st.sampled_from(["Int32Vector", "Uint16Vector", "Uint8Vector"])),)
    return np.asarray(dense, dtype), order, formats, block_map, block, kinds


@settings(max_examples=40, deadline=None)
@given(sparse_cases())
def test_sparse_constants_round_trip(tmp_path_factory, case):
    dense, order, formats, block_map, block, kinds = case
    quant = ((np.float32(0.5),), (0,), 0) if dense.dtype == np.int8 else None
    b, x, y = sparse_model(dense, order, formats, block_map, block, kinds, quant)
    out = _densified(tmp_path_factory.mktemp("sparse"), b, x, y, dense.shape)
    want = dense.astype(np.float32) * (np.float32(0.5) if dense.dtype == np.int8 else 1)
    np.testing.assert_array_equal(out, want)


def test_csr_example_by_hand(tmp_path):
    """A 3x4 matrix, rows dense and columns SPARSE_CSR: the stored values and index arrays written out."""
    dense = np.array([[0, 2, 0, 3], [0, 0, 0, 0], [4, 0, 0, 5]], np.float32)
    values, dims = encode(dense, [0, 1], ["DENSE", "SPARSE_CSR"])
    assert values.tolist() == [2, 3, 4, 5] and dims[1] == ("SPARSE_CSR", [0, 2, 2, 4], [1, 3, 0, 3])
    b, x, y = sparse_model(dense, [0, 1], ["DENSE", "SPARSE_CSR"], kinds=("Uint8Vector",))
    np.testing.assert_array_equal(_densified(tmp_path, b, x, y, dense.shape), dense)
    # column-major traversal: the same tensor stored column by column
    b, x, y = sparse_model(dense, [1, 0], ["DENSE", "SPARSE_CSR"], kinds=("Uint16Vector",))
    np.testing.assert_array_equal(_densified(tmp_path, b, x, y, dense.shape), dense)


def _malformed(tmp_path, **change):
    dense = np.array([[0, 2, 0, 3], [0, 0, 0, 0], [4, 0, 0, 5]], np.float32)
    seg, idx = [0, 2, 2, 4], [1, 3, 0, 3]
    meta = [("DENSE", change.get("dense_size", 3)),
            ("SPARSE_CSR", ("Int32Vector", change.get("segments", seg)), ("Int32Vector", change.get("indices", idx)))]
    b = TFLiteBuilder()
    values = np.float32(change.get("values", [2, 3, 4, 5]))
    s = b.tensor("pruned/kernel", [3, 4], data=values, sparsity=(change.get("order", [0, 1]), [], meta))
    d = b.tensor("dense", [3, 4])
    b.op("DENSIFY", [s], [d])
    x = b.tensor("x", [3, 4])
    y = b.tensor("y", [3, 4])
    b.op("ADD", [x, d], [y], "AddOptions", fused_activation="NONE")
    return b.save(tmp_path / "bad.tflite", [x], [y])


@pytest.mark.parametrize("change, words", [
    (dict(segments=[0, 2, 1, 4]), "array_segments"),
    (dict(segments=[0, 2, 4]), "array_segments"),
    (dict(indices=[1, 3, 0, 4]), "array_indices"),
    (dict(values=[2, 3, 4]), "the buffer holds 3"),
    (dict(order=[0, 0]), "traversal_order"),
    (dict(order=[0, 1, 2]), "traversal_order"),
    (dict(dense_size=4), "dense_size"),
])
def test_malformed_sparsity_is_one_line_naming_the_tensor(tmp_path, capsys, change, words):
    from kmodelpy.cli import main

    path = _malformed(tmp_path, **change)
    with pytest.raises(FormatError) as e:
        kmodelpy.load(path)
    msg = str(e.value)
    assert "\n" not in msg and "'pruned/kernel'" in msg and words in msg and "bad.tflite" in msg
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pruned/kernel" in err and "Traceback" not in err
