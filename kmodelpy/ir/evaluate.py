"""Float evaluator of an HLIR graph (compiler spec §8.2): ncc's compile-time evaluator, used for the
float reference (``load("model.tflite")``), for calibration and for ``fold_constant``.

Nodes run in ncc's DFS order (:meth:`Graph.dfs`). Every neutral op reuses the array-level kernel of
its runtime op module (:mod:`kmodelpy.ops`), so the emulator, the calibration and this evaluator
share one float32 arithmetic: sequential left folds, one rounding per operation, glibc ``expf``.

Hooks:
* ``evaluate(graph, inputs, on_output=cb)`` calls ``cb(output_connector, value)`` for every output
  connector of every evaluated node, in evaluation order (calibration collects ranges with it);
* :func:`kmodelpy.ir.ops.register_evaluator` adds evaluators for other ops (``fn(node, args)``);
* ``evaluate(graph, inputs, overrides={node: fn})`` evaluates the listed nodes with ``fn(node, args)`` instead:
  the float reference of a TFLite model uses it for TFLite's own arithmetic
  (:func:`kmodelpy.frontends.tflite.xnnpack.tflite_evaluators`); without it every node keeps ncc's float
  arithmetic (the compiler's view).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .graph import Graph, Node, OutputConnector
from .ops import BINARY_OPS, REDUCE_OPS, RESIZE_MODES, UNARY_OPS, evaluator, register_evaluator

F32 = np.float32


def evaluate(graph: Graph, inputs, on_output: Callable | None = None, keep: bool = False,
             overrides: dict | None = None):
    """Evaluate ``graph``. ``inputs``: list of arrays in ``graph.inputs`` order, or a dict by input
    name. Returns the list of output values (``graph.outputs`` order), or with ``keep=True``
    ``(outputs, values)`` where ``values`` maps every OutputConnector to its value.
    ``overrides``: node -> ``fn(node, args)`` giving that node's outputs instead of its op's evaluator."""
    if isinstance(inputs, dict):
        feed = {n: inputs[n.name] for n in graph.inputs}
    else:
        inputs = list(inputs)
        if len(inputs) != len(graph.inputs):
            raise ValueError(f"the graph has {len(graph.inputs)} inputs, {len(inputs)} values given")
        feed = dict(zip(graph.inputs, inputs))
    order = graph.dfs()
    remaining: dict[OutputConnector, int] = {}
    for n in order:
        for oc in n.outputs:
            remaining[oc] = len(oc.consumers)
    values: dict[OutputConnector, np.ndarray] = {}
    results: dict[Node, np.ndarray] = {}
    for n in order:
        if n.op == "input":
            x = feed.get(n)
            if x is None:
                raise ValueError(f"no value for graph input {n.name!r}")
            oc = n.output
            x = np.asarray(x, dtype=oc.dtype)
            if x.size != int(np.prod(oc.shape)):
                raise ValueError(f"input {n.name!r}: expected shape {list(oc.shape)}, got {list(x.shape)}")
            outs = [x.reshape(oc.shape)]
        else:
            args = [values[ic.producer] for ic in n.inputs]
            if n.op == "output":
                results[n] = args[0]
                outs = []
            elif n.op == "ignore":
                outs = []
            elif overrides and n in overrides:
                outs = overrides[n](n, args)
            else:
                outs = evaluator(n.op)(n, args)
        for oc, v in zip(n.outputs, outs):
            v = np.asarray(v)
            if v.shape != oc.shape:
                v = v.reshape(oc.shape)
            values[oc] = v
            if on_output is not None:
                on_output(oc, v)
        if not keep:
            for ic in n.inputs:
                p = ic.producer
                remaining[p] -= 1
                if remaining[p] <= 0:
                    values.pop(p, None)
    outputs = [results.get(n) for n in graph.outputs]
    return (outputs, values) if keep else outputs


# ---------------------------------------------------------------- neutral evaluators
def _act(node: Node):
    lo, hi = node.attrs.get("fused_activation", (-float(np.finfo(F32).max), float(np.finfo(F32).max)))
    return F32(lo), F32(hi)


def _ev_constant(node, args):
    return [np.asarray(node["data"])]


def _ev_conv2d(node, args):
    from ..ops.conv2d import conv2d

    a = node.attrs
    lo, hi = _act(node)
    return [conv2d(args[0], a["weights"], a["bias"], a["groups"], a["padding_h"], a["padding_w"], a["stride_h"],
                   a["stride_w"], a["dilation_h"], a["dilation_w"], lo, hi)]


def _ev_conv2d_transpose(node, args):
    from ..ops.conv2d_transpose import conv2d_transpose

    a = node.attrs
    lo, hi = _act(node)
    return [conv2d_transpose(args[0], a["weights"], a["bias"], node.output.shape, a["groups"], a["padding_h"],
                             a["padding_w"], a["stride_h"], a["stride_w"], a["dilation_h"], a["dilation_w"], lo, hi)]


def _ev_matmul(node, args):
    from ..ops.matmul import matmul

    lo, hi = _act(node)
    return [matmul(args[0], args[1], node["bias"], lo, hi)]


def _binary(a, b, op: str, lo, hi, out_shape):
    from ..ops.binary import binary

    if max(np.ndim(a), np.ndim(b), len(out_shape)) > 4:  # rare: >4-D, numpy broadcasting, same ops
        from ..ops.binary import apply_f32
        from ..ops._arith import np_clamp

        a2, b2 = np.broadcast_arrays(np.asarray(a, F32), np.asarray(b, F32))
        return np_clamp(apply_f32(BINARY_OPS.index(op), a2, b2), lo, hi).reshape(out_shape)
    return binary(a, b, BINARY_OPS.index(op), lo, hi).reshape(out_shape)


def _ev_binary(node, args):
    lo, hi = _act(node)
    return [_binary(args[0], args[1], node["binary_op"], lo, hi, node.output.shape)]


def _ev_clamp(node, args):
    """HLIR clamp lowers to binary max(x, low) then binary min(·, high) (compiler spec §8.1)."""
    x, lo, hi = args
    full = F32(np.finfo(F32).max)
    t = _binary(x, lo, "max", -full, full, node.output.shape)
    return [_binary(t, hi, "min", -full, full, node.output.shape)]


def _ev_unary(node, args):
    from ..ops.unary import unary

    return [unary(args[0], UNARY_OPS.index(node["unary_op"]))]


def _ev_fused_unary(node, args):
    from ..compiler.fused_unary import evaluate as run_program

    return [np.asarray(run_program(node["program"], np.asarray(args[0], F32)), F32).reshape(node.output.shape)]


def _ev_concat(node, args):
    from ..ops.concat import concat

    return [concat([np.asarray(a) for a in args], node["axis"])]


def _ev_transpose(node, args):
    from ..ops.transpose import transpose

    return [transpose(args[0], node["perm"])]


def _ev_reshape(node, args):
    return [np.asarray(args[0]).reshape(node.output.shape)]


def _ev_pad(node, args):
    from ..ops.pad import pad

    x = np.asarray(args[0])
    return [pad(x, node["paddings"], x.dtype.type(node.attrs.get("pad_value", 0)))]


def _ev_strided_slice(node, args):
    from ..ops.strided_slice import strided_slice

    a = node.attrs
    return [strided_slice(args[0], a["begin"], a["end"], a["strides"]).reshape(node.output.shape)]


def _ev_resize(node, args):
    from .resample import resize

    return [resize(args[0], node["new_size"], node["sampling"])]


def _ev_resize_image(node, args):
    from ..ops.resize_image import resize_image

    h, w = node["new_size"]
    return [resize_image(args[0], int(h), int(w), RESIZE_MODES.index(node["mode"]), bool(node["align_corners"]))]


def _ev_reduce(node, args):
    from ..ops.reduce import reduce

    x = np.asarray(args[0], F32)
    axis = node["axis"]
    keep = tuple(1 if i in axis else d for i, d in enumerate(x.shape))
    if x.ndim <= 4:
        in4 = (1,) * (4 - x.ndim) + x.shape
        out4 = (1,) * (4 - x.ndim) + keep
        y = reduce(x, REDUCE_OPS.index(node["reduce_op"]), in4, out4, node["init_value"])
    else:  # >4-D: move the reduced axes last and fold them sequentially (same row-major order)
        y = _reduce_nd(x, node["reduce_op"], axis, F32(node["init_value"]))
    return [y.reshape(node.output.shape)]


def _reduce_nd(x, op, axis, init):
    kept = [i for i in range(x.ndim) if i not in axis]
    t = np.transpose(x, kept + list(axis)).reshape(int(np.prod([x.shape[i] for i in kept])), -1)
    acc = np.full(t.shape[0], init, F32)
    for j in range(t.shape[1]):
        v = t[:, j]
        acc = np.where(v < acc, v, acc) if op == "min" else np.where(acc < v, v, acc) if op == "max" else acc + v
    if op == "mean":
        acc = acc * (F32(acc.size) / F32(x.size))
    return acc


def _ev_reduce_window2d(node, args):
    from ..ops.reduce_window2d import reduce_window2d

    a = node.attrs
    lo, hi = _act(node)
    return [reduce_window2d(args[0], REDUCE_OPS.index(a["reduce_op"]), a["filter_h"], a["filter_w"], a["stride_h"],
                            a["stride_w"], a["dilation_h"], a["dilation_w"], a["padding_h"], a["padding_w"],
                            a["init_value"], lo, hi)]


def _qp(node):
    qp = node["quant_param"]
    if hasattr(qp, "zero_point"):
        return int(qp.zero_point), float(qp.scale)
    return int(qp[0]), float(qp[1])


def _ev_quantize(node, args):
    from ..ops.quantize import quantize

    return [quantize(args[0], *_qp(node))]


def _ev_dequantize(node, args):
    from ..ops.dequantize import dequantize

    return [dequantize(args[0], *_qp(node))]


for _name, _fn in (("constant", _ev_constant), ("conv2d", _ev_conv2d), ("conv2d_transpose", _ev_conv2d_transpose),
                   ("matmul", _ev_matmul), ("binary", _ev_binary), ("clamp", _ev_clamp), ("unary", _ev_unary),
                   ("fused_unary", _ev_fused_unary), ("concat", _ev_concat), ("transpose", _ev_transpose),
                   ("reshape", _ev_reshape), ("pad", _ev_pad), ("strided_slice", _ev_strided_slice),
                   ("resize", _ev_resize), ("resize_image", _ev_resize_image), ("reduce", _ev_reduce),
                   ("reduce_window2d", _ev_reduce_window2d), ("quantize", _ev_quantize),
                   ("dequantize", _ev_dequantize)):
    register_evaluator(_name, _fn)
