"""Import-time folding of constant TFLite sub-graphs (numpy, TFLite's own NHWC semantics).

TF2 converters emit small integer sub-graphs (SHAPE → STRIDED_SLICE → PACK → RESHAPE's shape),
float16 / int8 weights behind DEQUANTIZE (and DENSIFY, for sparse weights the reader densified), and CASTs of constants. ncc refuses these operators; the
importer (:mod:`kmodelpy.frontends.tflite.importer`) evaluates them here instead:

* :func:`can_fold` — SHAPE always folds (shapes are static); an operator of :data:`FOLD_ONLY` folds
  when all its inputs are constant; any other operator folds when all its inputs are constant
  **and** its output is not FLOAT32 (integer shape arithmetic). Float operators ncc imports keep
  their nodes, as in ncc (its ``fold_constant`` pass evaluates them later).
* :func:`to_float` — the float32 value of a constant: FLOAT16 widened; INT8/UINT8/INT16/INT32 with
  quantization dequantized as ``f32(scale[c]) · f32(q − zero_point[c])`` along
  ``quantized_dimension`` (per channel — ncc only uses element 0).
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedError
from .reader import _NP_DTYPES, Operator, TFLiteFile

FOLD_ONLY = ("SHAPE", "CAST", "DEQUANTIZE", "DENSIFY", "QUANTIZE", "GATHER", "FILL", "RANGE", "REDUCE_PROD", "FLOOR_DIV", "PACK",
             "UNPACK", "SQUEEZE", "EXPAND_DIMS", "ZEROS_LIKE", "ONES_LIKE")


def to_float(tensor, data: np.ndarray) -> np.ndarray:
    """float32 value of a constant tensor (dequantized per channel when it carries scales)."""
    data = np.asarray(data)
    if data.dtype == np.float32:
        return data
    if data.dtype.kind == "f":
        return data.astype(np.float32)
    q = tensor.quantization
    if q is None or data.dtype.kind not in "iu":
        return data.astype(np.float32)
    scales = np.asarray(q.scales, np.float32)
    zps = np.asarray(q.zero_points, np.int64)
    if zps.size == 0:
        zps = np.zeros(1, np.int64)
    shifted = data.astype(np.int64)
    if scales.size > 1:
        dim = q.quantized_dimension
        bshape = [1] * data.ndim
        bshape[dim] = scales.size
        scales = scales.reshape(bshape)
        zps = np.broadcast_to(zps.reshape(bshape) if zps.size == scales.size else zps.reshape(-1)[:1], bshape)
    else:
        zps = zps.reshape(-1)[:1]
    return (scales * (shifted - zps).astype(np.float32)).astype(np.float32)


def can_fold(op: Operator, static: dict, tfl: TFLiteFile) -> bool:
    if op.builtin == "SHAPE":
        return True
    ins = [i for i in op.inputs if i >= 0]
    if not ins or not all(i in static for i in ins):
        return False
    if op.builtin in FOLD_ONLY:
        return True
    return any(tfl.tensors[o].dtype != "FLOAT32" for o in op.outputs if o >= 0)


def _out_dtype(tfl: TFLiteFile, op: Operator, k: int = 0):
    return _NP_DTYPES.get(tfl.tensors[op.outputs[k]].dtype, np.float32)


def _vec(a) -> list[int]:
    return [int(v) for v in np.asarray(a).reshape(-1)]


def _strided_slice(x, begin, end, strides, o):
    bm, em, sm = o.get("begin_mask", 0), o.get("end_mask", 0), o.get("shrink_axis_mask", 0)
    if o.get("ellipsis_mask", 0) or o.get("new_axis_mask", 0):
        raise UnsupportedError("STRIDED_SLICE with ellipsis/new_axis masks is not supported")
    idx = []
    for i in range(x.ndim):
        b = None if bm & (1 << i) else begin[i]
        e = None if em & (1 << i) else end[i]
        if sm & (1 << i):
            idx.append(begin[i])
        else:
            idx.append(slice(b, e, strides[i]))
    return x[tuple(idx)]


def fold(op: Operator, tfl: TFLiteFile, static: dict) -> list[np.ndarray]:
    """Evaluate ``op`` on constant inputs; returns one array per output tensor."""
    name, o = op.builtin, op.options
    t = [tfl.tensors[i] if i >= 0 else None for i in op.inputs]
    v = [static.get(i) if i >= 0 else None for i in op.inputs]
    out_shape = tuple(tfl.tensors[op.outputs[0]].shape)
    dt = _out_dtype(tfl, op)
    if name == "SHAPE":
        return [np.asarray(t[0].shape, dt)]
    if name == "DEQUANTIZE":
        return [to_float(t[0], v[0])]
    if name == "DENSIFY":  # the reader densified the sparse constant already
        return [np.asarray(v[0]).reshape(out_shape)]
    if name == "QUANTIZE":  # a constant re-quantized (float or int → int8/uint8/int16)
        q = tfl.tensors[op.outputs[0]].quantization
        x = to_float(t[0], v[0]).astype(np.float32)
        scale = np.float32(q.scales.reshape(-1)[0]) if q is not None else np.float32(1)
        zp = int(q.zero_points.reshape(-1)[0]) if q is not None and q.zero_points.size else 0
        info = np.iinfo(dt) if np.dtype(dt).kind in "iu" else None
        r = np.trunc(x / scale + np.copysign(np.float32(0.5), x / scale)).astype(np.int64) + zp
        return [np.clip(r, info.min, info.max).astype(dt) if info else r.astype(dt)]
    if name == "CAST":
        return [np.asarray(to_float(t[0], v[0]) if dt == np.float32 else v[0]).astype(dt)]
    if name in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS"):
        if name == "RESHAPE" and len(v) > 1 and v[1] is not None:
            shape = _vec(v[1])
        elif name == "RESHAPE" and "new_shape" in o:
            shape = o["new_shape"]
        else:
            shape = out_shape
        return [np.asarray(v[0]).reshape(shape).astype(dt)]
    if name == "PACK":
        return [np.stack([np.asarray(a) for a in v], axis=int(o.get("axis", 0))).astype(dt)]
    if name == "UNPACK":
        axis = int(o.get("axis", 0))
        x = np.asarray(v[0])
        return [np.take(x, k, axis=axis) for k in range(x.shape[axis])]
    if name == "GATHER":
        return [np.take(np.asarray(v[0]), np.asarray(v[1]), axis=int(o.get("axis", 0))).astype(dt)]
    if name == "FILL":
        return [np.full(_vec(v[0]), np.asarray(v[1]).reshape(-1)[0], dt)]
    if name == "RANGE":
        return [np.arange(np.asarray(v[0]).item(), np.asarray(v[1]).item(), np.asarray(v[2]).item()).astype(dt)]
    if name == "ZEROS_LIKE":
        return [np.zeros_like(np.asarray(v[0]), dt)]
    if name == "ONES_LIKE":
        return [np.ones_like(np.asarray(v[0]), dt)]
    if name in ("REDUCE_PROD", "SUM", "MEAN", "REDUCE_MAX", "REDUCE_MIN"):
        fn = {"REDUCE_PROD": np.prod, "SUM": np.sum, "MEAN": np.mean, "REDUCE_MAX": np.max, "REDUCE_MIN": np.min}[name]
        axes = tuple(_vec(v[1]))
        return [np.asarray(fn(np.asarray(v[0]), axis=axes, keepdims=bool(o.get("keep_dims", False)))).astype(dt)]
    if name == "STRIDED_SLICE":
        return [np.asarray(_strided_slice(np.asarray(v[0]), _vec(v[1]), _vec(v[2]), _vec(v[3]), o)).astype(dt)]
    if name == "SLICE":
        b, s = _vec(v[1]), _vec(v[2])
        x = np.asarray(v[0])
        idx = tuple(slice(bb, None if ss == -1 else bb + ss) for bb, ss in zip(b, s))
        return [x[idx].astype(dt)]
    if name == "CONCATENATION":
        return [np.concatenate([np.asarray(a) for a in v], axis=int(o.get("axis", 0))).astype(dt)]
    if name == "TRANSPOSE":
        return [np.transpose(np.asarray(v[0]), _vec(v[1])).astype(dt)]
    binops = {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply, "MAXIMUM": np.maximum,
              "MINIMUM": np.minimum, "FLOOR_DIV": np.floor_divide}
    if name in binops:
        return [binops[name](np.asarray(v[0]), np.asarray(v[1])).astype(dt)]
    if name == "DIV":
        a, b = np.asarray(v[0]), np.asarray(v[1])
        res = np.trunc(a / b) if a.dtype.kind in "iu" else a / b
        return [np.asarray(res).astype(dt)]
    raise UnsupportedError(f"constant operator {name} cannot be folded")
