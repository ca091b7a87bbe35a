"""Code generation: scheduled LLIR → :class:`kmodelpy.format.kmodel.KModel` (compiler spec §10).

Every node body is a runtime op object of :mod:`kmodelpy.ops` (the same classes the emulator runs and
the parser reads), so the writer and the emulator can never disagree; the file bytes come from
:meth:`KModel.to_bytes`. What this module decides is only what ncc's emitters decide
(src/codegen/codegen.cpp, ops/neutral/neutral_ops.cpp, ops/k210/k210_ops.cpp):

* inputs, input shapes (``to4``), outputs and nodes in compute-sequence order; ``input``, ``output``,
  ``ignore`` and ``constant`` produce no node;
* every memory range = the tensor's allocation, datatype of the producing output, size = valid size;
* the constants blob: ``const_usage`` zero bytes with each constant's data at its start;
* shapes right-aligned to 4-D (§10.2; strided-slice ``begin`` filled with 0), paddings with leading
  (0, 0), transpose perms extended with leading identity axes, concat ``inner_size`` in bytes;
* ``Pad`` bodies never carry the pad value (8 zero bytes, quirk §13.3);
* ``KPUConv2D``: the layer words of §10.5 from :func:`kmodelpy.kpu.layer_args.ncc_layer_args`.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import CompileError
from ..format.binio import DT_FLOAT32, DT_UINT8, MEM_CONST, MEM_KPU, MEM_MAIN, MemoryRange, ValueRange
from ..format.kmodel import KModel, NodeEntry
from ..ir.graph import Graph, InputConnector, Node, OutputConnector
from .schedule import Schedule, to4

MEMORY_IDS = {"const": MEM_CONST, "main": MEM_MAIN, "kpu": MEM_KPU}
DTYPE_IDS = {"float32": DT_FLOAT32, "uint8": DT_UINT8}
BINARY_OPS = {"add": 0, "sub": 1, "mul": 2, "div": 3, "min": 4, "max": 5}
UNARY_OPS = {n: i for i, n in enumerate(("abs", "ceil", "cos", "exp", "floor", "log", "neg", "rsqrt", "sin", "square"))}
REDUCE_OPS = {"mean": 0, "min": 1, "max": 2, "sum": 3}
RESIZE_MODES = {"bilinear": 0, "nearest_neighbor": 1}
NOT_EMITTED = {"input", "output", "ignore", "constant"}


def emit(llir: Graph, sched: Schedule) -> KModel:
    """Build the kmodel of a scheduled LLIR graph (codegen.cpp ``gencode``)."""
    km = KModel(main_mem=sched.main_usage)
    constants = bytearray(sched.const_usage)
    for node in sched.sequence:
        try:
            _emit_one(km, constants, node, sched)
        except CompileError as e:  # e.g. a 5-D shape: name the layer
            raise CompileError(f"layer {node.name or node.op} ({node.op}): {e}") from None
    km.constants = bytes(constants)
    return km


def _emit_one(km: KModel, constants: bytearray, node: Node, sched: Schedule) -> None:
    if node.op == "input":
        km.inputs.append(memory_range(sched, node.outputs[0]))
        km.input_shapes.append(to4(node.outputs[0].shape))
    elif node.op == "output":
        km.outputs.append(memory_range(sched, node.inputs[0]))
    elif node.op == "constant":
        out = node.outputs[0]
        if out in sched.buffers:  # a constant nobody reads is never allocated
            data = constant_bytes(node)
            start = sched.buffers[out].start
            constants[start:start + len(data)] = data
    elif node.op not in NOT_EMITTED:
        km.nodes.append(NodeEntry(emit_node(node, sched)))


def constant_bytes(node: Node) -> bytes:
    out = node.outputs[0]
    data = np.asarray(node.attrs["data"])
    dt = "<f4" if out.dtype == "float32" else "u1"
    return np.ascontiguousarray(data, dtype=dt).tobytes()


def memory_range(sched: Schedule, conn: InputConnector | OutputConnector) -> MemoryRange:
    """The allocation of a tensor (an input connector means its producer's output), as ncc's
    ``codegen_context::get_allocation``."""
    out = conn.producer if isinstance(conn, InputConnector) else conn
    if out is None:
        raise CompileError(f"{conn.node.name}: input {conn.index} is not connected (kmodelpy compiler bug)")
    buf = sched.buffers[out]
    return MemoryRange(MEMORY_IDS[out.memory], DTYPE_IDS[out.dtype], buf.start, buf.valid_size)


def _make(cls, **kw):
    """Construct a runtime op, checking that every body field is given (so a renamed field fails loudly)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(kw) - names
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}; fields are {sorted(names)}")
    return cls(**kw)


def _act(a) -> ValueRange:
    lo, hi = a if a is not None else (-3.4028234663852886e38, 3.4028234663852886e38)
    return ValueRange(float(lo), float(hi))


def emit_node(node: Node, sched: Schedule):
    """One LLIR node → its runtime op object."""
    fn = EMITTERS.get(node.op)
    if fn is None:
        raise CompileError(f"Emitter for {node.op} is not found (kmodelpy compiler bug)")
    return fn(node, sched)


# ------------------------------------------------------------------------------------------- neutral ops
def _binary(n, s):
    from ..ops.binary import Binary

    a, b = n.inputs
    return _make(Binary, input_a=memory_range(s, a), input_b=memory_range(s, b), output=memory_range(s, n.outputs[0]),
                 binary_op=BINARY_OPS[n.attrs["binary_op"]], in_a_shape=to4(a.shape), in_b_shape=to4(b.shape),
                 out_shape=to4(n.outputs[0].shape), act=_act(n.attrs.get("fused_activation")))


def _quantized_binary(n, s):
    from ..ops.quantized_binary import QuantizedBinary

    a, b = n.inputs
    at = n.attrs
    return _make(QuantizedBinary, input_a=memory_range(s, a), input_b=memory_range(s, b),
                 output=memory_range(s, n.outputs[0]), binary_op=BINARY_OPS[at["binary_op"]],
                 in_a_shape=to4(a.shape), in_b_shape=to4(b.shape), out_shape=to4(n.outputs[0].shape),
                 **{k: int(at[k]) for k in ("input_a_offset", "input_a_mul", "input_a_shift", "input_b_offset",
                                            "input_b_mul", "input_b_shift", "output_offset", "output_mul",
                                            "output_shift")})


def _concat(n, s):
    from ..ops.concat import Concat

    out = n.outputs[0]
    axis = int(n.attrs["axis"])
    inner = 4 if out.dtype == "float32" else 1
    outer = 1
    for i, d in enumerate(out.shape):
        if i > axis:
            inner *= int(d)
        elif i < axis:
            outer *= int(d)
    return _make(Concat, output=memory_range(s, out), inner_size=inner, outer_size=outer,
                 input_ranges=[memory_range(s, ic) for ic in n.inputs], dims=[int(ic.shape[axis]) for ic in n.inputs])


def _conv_common(n):
    at = n.attrs
    w = np.asarray(at["weights"])
    return dict(in_shape=to4(n.inputs[0].shape), groups=int(at["groups"]),
                padding_h=tuple(int(v) for v in at["padding_h"]), padding_w=tuple(int(v) for v in at["padding_w"]),
                filter_h=int(w.shape[2]), filter_w=int(w.shape[3]), stride_h=int(at["stride_h"]),
                stride_w=int(at["stride_w"]), dilation_h=int(at["dilation_h"]), dilation_w=int(at["dilation_w"]))


def _conv2d(n, s):
    from ..ops.conv2d import Conv2D

    at = n.attrs
    w = np.asarray(at["weights"], dtype=np.float32)
    return _make(Conv2D, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]),
                 out_channels=int(w.shape[0]), act=_act(at.get("fused_activation")),
                 weights=w.reshape(-1), bias=np.asarray(at["bias"], dtype=np.float32).reshape(-1), **_conv_common(n))


def _quantized_conv2d(n, s):
    from ..ops.quantized_conv2d import QuantizedConv2D

    at = n.attrs
    w = np.asarray(at["weights"], dtype=np.uint8)
    return _make(QuantizedConv2D, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]),
                 out_channels=int(w.shape[0]), input_offset=int(at["input_offset"]),
                 filter_offset=int(at["filter_offset"]), output_mul=int(at["output_mul"]),
                 output_shift=int(at["output_shift"]), output_offset=int(at["output_offset"]),
                 bias=np.asarray(at["bias"], dtype=np.int32).reshape(-1), weights=w.reshape(-1), **_conv_common(n))


def _conv2d_transpose(n, s):
    from ..ops.conv2d_transpose import Conv2DTranspose

    at = n.attrs
    common = _conv_common(n)
    return _make(Conv2DTranspose, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]),
                 out_shape=to4(n.outputs[0].shape), act=_act(at.get("fused_activation")),
                 weights=np.asarray(at["weights"], dtype=np.float32).reshape(-1),
                 bias=np.asarray(at["bias"], dtype=np.float32).reshape(-1), **common)


def _matmul(n, s):
    from ..ops.matmul import MatMul

    a, b = n.inputs
    return _make(MatMul, input_a=memory_range(s, a), input_b=memory_range(s, b), output=memory_range(s, n.outputs[0]),
                 a_rows=int(a.shape[0]), a_cols=int(a.shape[1]), b_cols=int(b.shape[1]),
                 act=_act(n.attrs.get("fused_activation")),
                 bias=np.asarray(n.attrs["bias"], dtype=np.float32).reshape(-1))


def _quantized_matmul(n, s):
    from ..ops.quantized_matmul import QuantizedMatMul

    a, b = n.inputs
    at = n.attrs
    return _make(QuantizedMatMul, input_a=memory_range(s, a), input_b=memory_range(s, b),
                 output=memory_range(s, n.outputs[0]), a_rows=int(a.shape[0]), a_cols=int(a.shape[1]),
                 b_cols=int(b.shape[1]), input_a_offset=int(at["input_a_offset"]),
                 input_b_offset=int(at["input_b_offset"]), output_mul=int(at["output_mul"]),
                 output_shift=int(at["output_shift"]), output_offset=int(at["output_offset"]),
                 bias=np.asarray(at["bias"], dtype=np.int32).reshape(-1))


def _pad(n, s):
    from ..ops.pad import Pad

    pads = [(int(b), int(a)) for b, a in n.attrs["paddings"]]
    pads = [(0, 0)] * (4 - len(pads)) + pads
    # quirk §13.3: ncc's emitter never sets the pad value -> type 0, storage 00 00 00 00. kmodelpy
    # deviates for uint8 pads whose value is not 0 (the zero point, docs/deviations.md D3): type 1 + the code.
    pv = n.attrs.get("pad_value", 0)
    if n.inputs[0].dtype == "uint8" and int(pv) != 0:
        ptype, pbytes = 1, bytes([int(pv)]) + bytes(3)
    else:
        ptype, pbytes = 0, bytes(4)
    return _make(Pad, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]),
                 in_shape=to4(n.inputs[0].shape), paddings=pads, pad_value_type=ptype, pad_value=pbytes)


def _quantize(n, s, cls_name="Quantize", module="quantize"):
    import importlib

    cls = getattr(importlib.import_module(f"kmodelpy.ops.{module}"), cls_name)
    qp = n.attrs["quant_param"]
    zp, scale = (qp.zero_point, qp.scale) if hasattr(qp, "zero_point") else qp
    return _make(cls, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]),
                 zero_point=int(zp), scale=float(np.float32(scale)))


def _dequantize(n, s):
    return _quantize(n, s, "Dequantize", "dequantize")


def _reduce(n, s):
    from ..ops.reduce import Reduce

    at = n.attrs
    axes = set(int(a) for a in at["axis"])
    in_shape = n.inputs[0].shape
    kept = [1 if i in axes else int(d) for i, d in enumerate(in_shape)]
    return _make(Reduce, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]),
                 reduce_op=REDUCE_OPS[at["reduce_op"]], in_shape=to4(in_shape), out_shape=to4(kept),
                 init_value=float(at["init_value"]))


def _reduce_window2d(n, s):
    from ..ops.reduce_window2d import ReduceWindow2D

    at = n.attrs
    return _make(ReduceWindow2D, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]),
                 reduce_op=REDUCE_OPS[at["reduce_op"]], in_shape=to4(n.inputs[0].shape),
                 padding_h=tuple(int(v) for v in at["padding_h"]), padding_w=tuple(int(v) for v in at["padding_w"]),
                 filter_h=int(at["filter_h"]), filter_w=int(at["filter_w"]), stride_h=int(at["stride_h"]),
                 stride_w=int(at["stride_w"]), dilation_h=int(at["dilation_h"]), dilation_w=int(at["dilation_w"]),
                 init_value=float(at["init_value"]), act=_act(at.get("fused_activation")))


def _resize_image(n, s):
    from ..ops.resize_image import ResizeImage

    at = n.attrs
    h, w = (int(v) for v in at["new_size"])
    return _make(ResizeImage, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]),
                 in_shape=to4(n.inputs[0].shape), out_h=h, out_w=w, mode=RESIZE_MODES[at["mode"]],
                 align_corners=bool(at["align_corners"]))


def _strided_slice(n, s):
    from ..ops.strided_slice import StridedSlice

    at = n.attrs
    return _make(StridedSlice, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]),
                 in_shape=to4(n.inputs[0].shape), begin=to4(at["begin"], 0), end=to4(at["end"]),
                 strides=to4(at["strides"]), begin_mask=int(at.get("begin_mask", 0)),
                 end_mask=int(at.get("end_mask", 0)), ellipsis_mask=int(at.get("ellipsis_mask", 0)),
                 new_axis_mask=int(at.get("new_axis_mask", 0)), shrink_axis_mask=int(at.get("shrink_axis_mask", 0)))


def extend_perm(perm) -> list[int]:
    """Transpose perm extended to 4-D: leading identity axes, the others shifted (llir op_utils.h)."""
    perm = [int(p) for p in perm]
    ext = 4 - len(perm)
    return list(range(ext)) + [p + ext for p in perm]


def _transpose(n, s):
    from ..ops.transpose import Transpose

    return _make(Transpose, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]),
                 in_shape=to4(n.inputs[0].shape), perm=extend_perm(n.attrs["perm"]))


def _unary(n, s):
    from ..ops.unary import Unary

    return _make(Unary, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]),
                 unary_op=UNARY_OPS[n.attrs["unary_op"]])


def _nnil_unary_method(n, s):
    from ..ops.nnil_unary_method import NNILUnaryMethod

    return _make(NNILUnaryMethod, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]),
                 program=bytes(n.attrs["body"]))


def _table_lookup1d(n, s):
    from ..ops.table_lookup1d import TableLookup1D

    x, table = n.inputs
    return _make(TableLookup1D, input=memory_range(s, x), table=memory_range(s, table),
                 output=memory_range(s, n.outputs[0]))


def _memory_copy(n, s):
    from ..ops.memory_copy import MemoryCopy

    return _make(MemoryCopy, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]))


# ------------------------------------------------------------------------------------------- K210 ops
def _kpu_upload(n, s):
    from ..ops.kpu_upload import KPUUpload

    return _make(KPUUpload, input=memory_range(s, n.inputs[0]), output=memory_range(s, n.outputs[0]),
                 in_shape=to4(n.inputs[0].shape))


FILTER_SIZES = {0: 1, 1: 3}


def kpu_layer_args(n: Node, s: Schedule):
    """The layer argument of a kpu_conv2d node (compiler spec §10.5; k210_ops.cpp emitter)."""
    from ..kpu.layer_args import ncc_layer_args

    at = n.attrs
    x = n.inputs[0]
    kout = n.outputs[0]
    _, ic, ih, iw = to4(x.shape)
    _, oc, oh, ow = to4(kout.shape)
    return ncc_layer_args(
        in_addr=s.buffers[x.producer].start, out_addr=s.buffers[kout].start,
        in_shape=(ic, ih, iw), out_shape=(oc, oh, ow), kernel_size=FILTER_SIZES[int(at["filter_type"])],
        depthwise=bool(at["is_depthwise"]), pool_type=int(at["pool_type"]), pad_value=int(at["pad_value"]),
        arg_x=int(at["arg_x"]), shift_x=int(at["shift_x"]), arg_w=int(at["arg_w"]), shift_w=int(at["shift_w"]),
        arg_add=int(at["arg_add"]), main_output=has_main_output(n),
    )


def has_main_output(n: Node) -> bool:
    return len(n.outputs) > 1


def _kpu_conv2d(n, s):
    from ..ops.kpu_conv2d import KPUConv2D

    at = n.attrs
    main = memory_range(s, n.outputs[1]) if has_main_output(n) and n.outputs[1] in s.buffers else MemoryRange()
    return _make(KPUConv2D, main_mem_output=main, batches=int(n.inputs[0].shape[0]), reserved0=0,
                 layer_argument=kpu_layer_args(n, s), bn=at["batch_norm"], activation=at["activation"],
                 weights=np.asarray(at["weights"], dtype=np.uint8).reshape(-1))


EMITTERS = {
    "binary": _binary, "quantized_binary": _quantized_binary, "concat": _concat, "conv2d": _conv2d,
    "quantized_conv2d": _quantized_conv2d, "conv2d_transpose": _conv2d_transpose, "matmul": _matmul,
    "quantized_matmul": _quantized_matmul, "pad": _pad, "quantize": _quantize, "dequantize": _dequantize,
    "reduce": _reduce, "reduce_window2d": _reduce_window2d, "resize_image": _resize_image,
    "strided_slice": _strided_slice, "transpose": _transpose, "unary": _unary,
    "nnil_unary_method": _nnil_unary_method, "table_lookup1d": _table_lookup1d, "memory_copy": _memory_copy,
    "kpu_upload": _kpu_upload, "kpu_conv2d": _kpu_conv2d,
}
