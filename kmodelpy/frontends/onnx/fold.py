"""Import-time folding of constant ONNX sub-graphs (numpy, ONNX semantics).

PyTorch exports compute reshape targets at run time: ``Shape → Gather → Unsqueeze → Concat → Reshape``,
``Shape → Slice → Concat``, ``ConstantOfShape``, ``Range``, ``Cast`` ... Every shape is static here, so the
importer (:mod:`kmodelpy.frontends.onnx.importer`) evaluates such nodes with numpy instead of building graph
nodes for them:

* :func:`can_fold` — ``Shape``/``Size`` always fold (shapes are static); any other node folds when all its
  inputs are constants and either it is not one of the operators ncc imports as graph nodes
  (:data:`NCC_GRAPH_OPS`) or one of its inputs is not float (integer shape arithmetic). Float operators ncc
  imports keep their nodes, as in ncc (its ``fold_constant`` pass evaluates them later).
* :func:`fold` — the node's outputs as numpy arrays.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedError

#: ncc v0.2.0-beta4's ONNX opcode.def: these become graph nodes even on constant float inputs
NCC_GRAPH_OPS = ("Abs", "Add", "AveragePool", "Ceil", "Concat", "Conv", "ConvTranspose", "Cos", "Div", "Exp",
                 "Floor", "LpNormalization", "LeakyRelu", "Log", "MatMul", "MaxPool", "Max", "Min", "Mul", "Neg",
                 "Pad", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape", "Resize", "Sin",
                 "Slice", "Softmax", "Sqrt", "Squeeze", "Sub", "Transpose")

_ONNX_NP = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
            9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def is_float(a) -> bool:
    return np.asarray(a).dtype.kind == "f"


def can_fold(op_type: str, inputs: list[str], static: dict) -> bool:
    if op_type in ("Shape", "Size"):
        return True
    ins = [t for t in inputs if t]
    if not all(t in static for t in ins):
        return False
    if op_type not in NCC_GRAPH_OPS:
        return True
    return any(not is_float(static[t]) for t in ins)


def _ints(a) -> list[int]:
    return [int(v) for v in np.asarray(a).reshape(-1)]


def _axes(node, v, k: int, rank: int):
    """Axes from the attribute (older opsets) or input ``k`` (newer); None when absent."""
    if "axes" in node.attrs:
        axes = node.attrs["axes"]
    elif len(v) > k and v[k] is not None:
        axes = _ints(v[k])
    else:
        return None
    return [int(a) + rank if int(a) < 0 else int(a) for a in axes]


def slice_params(shape, starts, ends, axes, steps):
    """Per-axis (begin, end, step) of an ONNX Slice, clamped like onnxruntime (ends of INT64_MAX included)."""
    rank = len(shape)
    b, e, s = [0] * rank, list(shape), [1] * rank
    axes = list(range(len(starts))) if axes is None else [a + rank if a < 0 else a for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    for a, st, en, sp in zip(axes, starts, ends, steps):
        dim = shape[a]
        if sp == 0:
            raise ValueError("Slice step 0")
        st = st + dim if st < 0 else st
        en = en + dim if en < 0 else en
        if sp > 0:
            st, en = min(max(st, 0), dim), min(max(en, 0), dim)
        else:
            st, en = min(max(st, -1), dim - 1), min(max(en, -1), dim - 1)
        b[a], e[a], s[a] = st, en, sp
    return b, e, s


def unsqueeze_shape(shape, axes) -> tuple:
    """The shape after ONNX Unsqueeze (axes of the output, negative counted from its end)."""
    rank = len(shape) + len(axes)
    out = list(shape)
    for ax in sorted(int(a) + rank if int(a) < 0 else int(a) for a in axes):
        out.insert(ax, 1)
    return tuple(out)


def reshape_target(in_shape, shape, allowzero: bool = False) -> tuple:
    """ONNX Reshape's output shape: 0 copies the input dimension (unless ``allowzero``), -1 is inferred."""
    shape = [int(v) for v in shape]
    out = [in_shape[i] if v == 0 and not allowzero else v for i, v in enumerate(shape)]
    if out.count(-1) > 1:
        raise ValueError("Reshape has more than one -1")
    if -1 in out:
        known = int(np.prod([v for v in out if v != -1])) if len(out) > 1 else 1
        out[out.index(-1)] = int(np.prod(in_shape)) // known if known else 0
    if int(np.prod(out)) != int(np.prod(in_shape)):
        raise ValueError(f"cannot reshape {list(in_shape)} to {shape}")
    return tuple(out)


def fold(node, v: list, shapes: list) -> list[np.ndarray]:
    """Evaluate ``node`` on constant inputs ``v`` (None for absent optional inputs); ``shapes`` are the input
    shapes (also known for the non-constant input of Shape/Size). Returns one array per output."""
    op, a = node.op_type, node.attrs
    x = np.asarray(v[0]) if v and v[0] is not None else None
    if op == "Shape":
        s = list(shapes[0])
        start, end = a.get("start", 0), a.get("end", None)
        return [np.asarray(s[start:end], np.int64)]
    if op == "Size":
        return [np.asarray(int(np.prod(shapes[0])), np.int64)]
    if op in ("Identity", "Dropout"):
        return [x] + ([np.ones(x.shape, np.bool_)] if len(node.outputs) > 1 else [])
    if op == "Cast":
        return [x.astype(_ONNX_NP[int(a["to"])])]
    if op == "CastLike":
        return [x.astype(np.asarray(v[1]).dtype)]
    if op == "ConstantOfShape":
        val = a.get("value", np.zeros(1, np.float32))
        return [np.full(_ints(x), np.asarray(val).reshape(-1)[0], np.asarray(val).dtype)]
    if op == "Range":
        return [np.arange(x.item(), np.asarray(v[1]).item(), np.asarray(v[2]).item()).astype(x.dtype)]
    if op == "Gather":
        return [np.take(x, np.asarray(v[1]).astype(np.int64), axis=int(a.get("axis", 0)))]
    if op == "Unsqueeze":
        return [np.reshape(x, unsqueeze_shape(x.shape, a["axes"] if "axes" in a else _ints(v[1])))]
    if op == "Squeeze":
        axes = _axes(node, v, 1, x.ndim)
        return [np.squeeze(x, axis=tuple(axes)) if axes else np.squeeze(x)]
    if op == "Concat":
        return [np.concatenate([np.asarray(t).reshape(np.asarray(t).shape or (1,)) for t in v], int(a["axis"]))]
    if op == "Reshape":
        return [x.reshape(reshape_target(x.shape, _ints(v[1]), bool(a.get("allowzero", 0))))]
    if op == "Flatten":
        ax = int(a.get("axis", 1))
        ax = ax + x.ndim if ax < 0 else ax
        return [x.reshape(int(np.prod(x.shape[:ax])), -1)]
    if op == "Transpose":
        return [np.transpose(x, a.get("perm"))]
    if op == "Slice":
        if "starts" in a:
            starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
        else:
            starts, ends = _ints(v[1]), _ints(v[2])
            axes = _ints(v[3]) if len(v) > 3 and v[3] is not None else None
            steps = _ints(v[4]) if len(v) > 4 and v[4] is not None else None
        b, e, s = slice_params(x.shape, starts, ends, axes, steps)
        return [x[tuple(slice(bb, None if ee < 0 else ee, ss) for bb, ee, ss in zip(b, e, s))]]
    if op == "Expand":
        return [x * np.ones(_ints(v[1]), x.dtype)]
    if op == "Tile":
        return [np.tile(x, _ints(v[1]))]
    if op == "Where":
        return [np.where(x, v[1], v[2])]
    if op in ("ReduceProd", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"):
        fn = {"ReduceProd": np.prod, "ReduceSum": np.sum, "ReduceMean": np.mean, "ReduceMax": np.max,
              "ReduceMin": np.min}[op]
        axes = _axes(node, v, 1, x.ndim)
        axes = tuple(axes) if axes else None
        return [np.asarray(fn(x, axis=axes, keepdims=bool(a.get("keepdims", 1)))).astype(x.dtype)]
    binops = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Equal": np.equal, "Less": np.less,
              "Greater": np.greater, "And": np.logical_and, "Or": np.logical_or, "Pow": np.power}
    if op in binops:
        return [np.asarray(binops[op](x, np.asarray(v[1])))]
    if op == "Div":
        y = np.asarray(v[1])
        return [np.asarray((np.trunc(x / y).astype(x.dtype)) if x.dtype.kind in "iu" else x / y)]
    if op in ("Min", "Max", "Sum", "Mean"):
        fn = {"Min": np.minimum, "Max": np.maximum, "Sum": np.add, "Mean": np.add}[op]
        out = x
        for t in v[1:]:
            out = fn(out, np.asarray(t))
        return [out / np.asarray(len(v), out.dtype) if op == "Mean" else out]
    unops = {"Neg": np.negative, "Abs": np.abs, "Floor": np.floor, "Ceil": np.ceil, "Sqrt": np.sqrt,
             "Not": np.logical_not, "Exp": np.exp, "Log": np.log, "Reciprocal": np.reciprocal}
    if op in unops:
        return [np.asarray(unops[op](x))]
    if op == "Relu":
        return [np.maximum(x, x.dtype.type(0))]
    raise UnsupportedError(f"constant operator {op} cannot be folded")
