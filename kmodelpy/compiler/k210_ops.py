"""The HLIR ops the compiler adds to ncc's vocabulary (src/ir/hlir/ops/k210/*, quantized_*.cpp,
table_lookup.cpp), registered into :mod:`kmodelpy.ir.ops` with shape inference and evaluators.

Attributes (the back end reads them when it emits the runtime ops):

=====================  ===========================================================================
fake_kpu_conv2d        ``is_depthwise``, ``filter_type`` (0 = 1×1, 1 = 3×3), ``pool_type`` (KPU ids,
                       compiler spec §6.1), ``weights`` f32 OIHW, ``bias`` f32, ``fused_activation``
kpu_upload             — (uint8 NCHW → KPU memory)
kpu_download           — (never emitted; removed by Q3/Q5)
kpu_conv2d             ``is_depthwise``, ``filter_type``, ``pool_type``, ``weights`` u8 OIHW, ``pad_value``,
                       ``arg_x``, ``shift_x``, ``arg_w``, ``shift_w``, ``arg_add``, ``batch_norm``,
                       ``activation`` (from kmodelpy.compiler.kpu_params), ``has_main_mem_output``;
                       output 0 lives in KPU memory, output 1 (if any) is the main-memory copy
quantized_conv2d       conv2d geometry + u8 ``weights``, i32 ``bias``, ``input_offset``, ``filter_offset``,
                       ``output_mul``, ``output_shift``, ``output_offset``
quantized_matmul       i32 ``bias``, ``input_a_offset``, ``input_b_offset``, ``output_mul``, ``output_shift``,
                       ``output_offset``
quantized_binary       ``binary_op``, ``input_a_offset/mul/shift``, ``input_b_offset/mul/shift``,
                       ``output_offset/mul/shift``
table_lookup1d         inputs: x (u8), table (u8[256] constant)
=====================  ===========================================================================

``fake_kpu_conv2d``'s float evaluation is ncc's (compiler spec §8.2), in :mod:`kmodelpy.compiler.kpu_float`.
"""
from __future__ import annotations

import numpy as np

from ..ir import ops as hops
from .kpu_float import kpu_conv_f32
from .transforms.build import pool_out

BINARY_IDS = {"add": 0, "sub": 1, "mul": 2, "div": 3, "min": 4, "max": 5}


def fake_kpu_conv2d_eval(node, args):
    return [kpu_conv_f32(args[0], node["weights"], node["bias"], node["is_depthwise"], node["fused_activation"],
                         node["pool_type"])]


def _fake_kpu_shape(attrs, ins):
    n, _, h, w = ins[0]
    pt = attrs["pool_type"]
    return [(n, int(attrs["weights"].shape[0]), pool_out(h, pt), pool_out(w, pt))]


def _kpu_conv2d_shape(attrs, ins):
    out = _fake_kpu_shape(attrs, ins)[0]
    return [out, out] if attrs.get("has_main_mem_output") else [out]


def kpu_conv2d_eval(node, args):
    from ..ops.kpu_conv2d import kpu_conv2d

    y = kpu_conv2d(args[0], node["weights"], node["batch_norm"], node["activation"], 1 if node["filter_type"] == 0 else 3,
                   node["is_depthwise"], node["pool_type"], node["pad_value"], node["arg_x"], node["shift_x"],
                   node["arg_w"], node["shift_w"], node["arg_add"])
    return [y] * len(node.outputs)


def quantized_conv2d_eval(node, args):
    from ..ops.quantized_conv2d import quantized_conv2d

    return [quantized_conv2d(args[0], node["weights"], node["bias"], node["groups"], node["padding_h"], node["padding_w"],
                             node["stride_h"], node["stride_w"], node["dilation_h"], node["dilation_w"],
                             node["input_offset"], node["filter_offset"], node["output_mul"], node["output_shift"],
                             node["output_offset"])]


def quantized_matmul_eval(node, args):
    from ..ops.quantized_matmul import quantized_matmul

    return [quantized_matmul(args[0], args[1], node["bias"], node["input_a_offset"], node["input_b_offset"],
                             node["output_mul"], node["output_shift"], node["output_offset"])]


def quantized_binary_eval(node, args):
    from ..ops.quantized_binary import quantized_binary

    return [quantized_binary(args[0], args[1], BINARY_IDS[node["binary_op"]], node["input_a_offset"], node["input_a_mul"],
                             node["input_a_shift"], node["input_b_offset"], node["input_b_mul"], node["input_b_shift"],
                             node["output_offset"], node["output_mul"], node["output_shift"],
                             out_shape=node.output.shape)]


def table_lookup1d_eval(node, args):
    from ..ops.table_lookup1d import table_lookup1d

    return [table_lookup1d(args[0], args[1])]


def fused_unary_eval(node, args):
    """fused_unary programs made by the compiler are tuples of FuOp; run them as ncc does (NNIL)."""
    from .fused_unary import evaluate

    x = np.asarray(args[0], np.float32)
    return [evaluate(node["program"], x.reshape(-1)).reshape(x.shape)]


def _conv_shape(attrs, ins):
    n, _, h, w = ins[0]
    oc, _, fh, fw = attrs["weights"].shape
    return [(n, oc, hops.get_out(h, fh, attrs["stride_h"], attrs["dilation_h"], attrs["padding_h"]),
             hops.get_out(w, fw, attrs["stride_w"], attrs["dilation_w"], attrs["padding_w"]))]


def register_all() -> None:
    """Register (idempotently) the compiler's ops and evaluators."""
    try:  # the neutral evaluators register first, so ours are not overwritten afterwards
        from ..ir import evaluate as _ev  # noqa: F401
    except ImportError:
        pass

    same = lambda a, i: [i[0]]  # noqa: E731
    hops.register_op("fake_kpu_conv2d", "FakeKPUConv2D", _fake_kpu_shape, fake_kpu_conv2d_eval)
    hops.register_op("kpu_upload", "KPUUpload", same, lambda n, a: [np.asarray(a[0], np.uint8)], memory="kpu")
    hops.register_op("kpu_download", "KPUDownload", same, lambda n, a: [np.asarray(a[0], np.uint8)])
    hops.register_op("kpu_conv2d", "KPUConv2D", _kpu_conv2d_shape, kpu_conv2d_eval, memory="kpu")
    hops.register_op("quantized_conv2d", "QuantizedConv2D", _conv_shape, quantized_conv2d_eval)
    hops.register_op("quantized_matmul", "QuantizedMatMul", lambda a, i: [(i[0][0], i[1][1])], quantized_matmul_eval)
    hops.register_op("quantized_binary", "QuantizedBinary", lambda a, i: [hops.broadcast_shape(i[0], i[1])],
                     quantized_binary_eval)
    hops.register_op("table_lookup1d", "TableLookup1D", same, table_lookup1d_eval)
    hops.register_evaluator("fused_unary", fused_unary_eval)
