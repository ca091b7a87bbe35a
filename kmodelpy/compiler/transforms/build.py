"""Node constructors used by the transforms: each creates one HLIR node with ncc's attributes and its
output shape (the constructors of src/ir/hlir/ops/*.cpp, compiler spec §4.1, §6.1).

Attribute names follow kmodelpy/ir/ops.py: conv2d {weights, bias, groups, padding_h, padding_w,
stride_h, stride_w, dilation_h, dilation_w, fused_activation}; pad {paddings, pad_value}; reshape
{new_shape}; transpose {perm}; strided_slice {begin, end, strides, begin_mask, end_mask,
ellipsis_mask, new_axis_mask, shrink_axis_mask}; quantize/dequantize {quant_param}; ...
"""
from __future__ import annotations

import math

import numpy as np

from ...ir.graph import MEM_CONST, MEM_KPU, MEM_MAIN, Graph, Node, OutputConnector

F32 = "float32"
U8 = "uint8"

# KPU pool types (runtime k210_sim_types.h) and their output stride (compiler spec §6.1)
POOL_BYPASS, POOL_MAX_2_S2, POOL_MEAN_2_S2, POOL_MAX_4_S4, POOL_MEAN_4_S4 = 0, 1, 2, 3, 4
POOL_LEFT_TOP_2_S2, POOL_RIGHT_TOP_2_S2, POOL_LEFT_TOP_4_S4, POOL_MEAN_2_S1, POOL_MAX_2_S1 = 5, 6, 7, 8, 9
POOL_STRIDE = {0: 1, 1: 2, 2: 2, 3: 4, 4: 4, 5: 2, 6: 2, 7: 4, 8: 1, 9: 1}


def pool_out(size: int, pool_type: int) -> int:
    return size // POOL_STRIDE[pool_type]


def windowed_out(size: int, pad: tuple[int, int], k: int, stride: int, dilation: int) -> int:
    eff = (k - 1) * dilation + 1
    return (size + pad[0] + pad[1] - eff) // stride + 1


# ---------------------------------------------------------------------------------------- constructors
def constant(g: Graph, data: np.ndarray, shape=None, name: str = "") -> Node:
    data = np.asarray(data)
    shape = tuple(shape) if shape is not None else (tuple(data.shape) or (1,))
    data = np.ascontiguousarray(data.reshape(shape))
    dtype = U8 if data.dtype == np.uint8 else F32
    return g.add("constant", (), [shape], [dtype], name=name, memory=MEM_CONST, data=data)


def pad(g: Graph, src: OutputConnector, paddings, pad_value=0.0, name: str = "") -> Node:
    paddings = [(int(b), int(a)) for b, a in paddings]
    out = tuple(d + b + a for d, (b, a) in zip(src.shape, paddings))
    return g.add("pad", [src], [out], [src.dtype], name=name, paddings=paddings, pad_value=pad_value)


def reshape(g: Graph, src: OutputConnector, new_shape, name: str = "") -> Node:
    new_shape = tuple(int(d) for d in new_shape)
    return g.add("reshape", [src], [new_shape], [src.dtype], name=name, new_shape=new_shape)


def transpose(g: Graph, src: OutputConnector, perm, name: str = "") -> Node:
    perm = tuple(int(p) for p in perm)
    out = tuple(src.shape[p] for p in perm)
    return g.add("transpose", [src], [out], [src.dtype], name=name, perm=perm)


def normalize_slice(shape, begin, end, strides, begin_mask, end_mask, shrink_axis_mask):
    """op_utils.h:210-264 (compiler spec §4.2 last paragraph)."""
    b_out, e_out = [], []
    for i, dim in enumerate(shape):
        s = strides[i]
        b = (0 if s > 0 else dim - 1) if (begin_mask >> i) & 1 else (dim + begin[i] if begin[i] < 0 else begin[i])
        b_out.append(int(b))
    for i, dim in enumerate(shape):
        s = strides[i]
        e = (dim if s > 0 else -1) if (end_mask >> i) & 1 else (dim + end[i] if end[i] < 0 else end[i])
        if (shrink_axis_mask >> i) & 1:
            e = b_out[i] + 1
        e_out.append(int(e))
    return b_out, e_out


def slice_shape(begin, end, strides, shrink_axis_mask):
    out = []
    for i, (b, e, s) in enumerate(zip(begin, end, strides)):
        if (shrink_axis_mask >> i) & 1:
            continue
        out.append(int(math.ceil(np.float32(e - b) / np.float32(s))))
    return tuple(out) or (1,)


def strided_slice(g: Graph, src: OutputConnector, begin, end, strides, begin_mask=0, end_mask=0,
                  ellipsis_mask=0, new_axis_mask=0, shrink_axis_mask=0, name: str = "") -> Node:
    strides = [int(s) for s in strides]
    b, e = normalize_slice(src.shape, begin, end, strides, begin_mask, end_mask, shrink_axis_mask)
    out = slice_shape(b, e, strides, shrink_axis_mask)
    return g.add("strided_slice", [src], [out], [src.dtype], name=name, begin=b, end=e, strides=strides,
                 begin_mask=0, end_mask=0, ellipsis_mask=ellipsis_mask, new_axis_mask=new_axis_mask,
                 shrink_axis_mask=shrink_axis_mask)


def conv2d(g: Graph, src: OutputConnector, weights, bias, groups, padding_h, padding_w, stride_h, stride_w,
           dilation_h, dilation_w, fused_activation, name: str = "") -> Node:
    n, _, h, w = src.shape
    oc, _, kh, kw = weights.shape
    out = (n, oc, windowed_out(h, padding_h, kh, stride_h, dilation_h), windowed_out(w, padding_w, kw, stride_w, dilation_w))
    return g.add("conv2d", [src], [out], [F32], name=name, weights=weights, bias=bias, groups=int(groups),
                 padding_h=tuple(padding_h), padding_w=tuple(padding_w), stride_h=int(stride_h), stride_w=int(stride_w),
                 dilation_h=int(dilation_h), dilation_w=int(dilation_w), fused_activation=tuple(fused_activation))


def like(g: Graph, old: Node, inputs, out_shapes, out_dtypes=None, name: str | None = None, **changes) -> Node:
    """A new node of ``old``'s kind and attributes (with ``changes``) on new inputs."""
    attrs = dict(old.attrs)
    attrs.update(changes)
    dtypes = out_dtypes if out_dtypes is not None else [o.dtype for o in old.outputs]
    return g.add(old.op, list(inputs), out_shapes, dtypes, name=old.name if name is None else name, **attrs)


def broadcast_shape(a, b) -> tuple:
    return tuple(int(d) for d in np.broadcast_shapes(tuple(a), tuple(b)))


def binary(g: Graph, a: OutputConnector, b: OutputConnector, binary_op, fused_activation, name: str = "") -> Node:
    return g.add("binary", [a, b], [broadcast_shape(a.shape, b.shape)], [F32], name=name, binary_op=binary_op,
                 fused_activation=tuple(fused_activation))


def fused_unary(g: Graph, src: OutputConnector, program, name: str = "") -> Node:
    return g.add("fused_unary", [src], [src.shape], [F32], name=name, program=tuple(program))


def quantize(g: Graph, src: OutputConnector, qp, name: str = "") -> Node:
    return g.add("quantize", [src], [src.shape], [U8], name=name, quant_param=qp)


def dequantize(g: Graph, src: OutputConnector, qp, name: str = "") -> Node:
    return g.add("dequantize", [src], [src.shape], [F32], name=name, quant_param=qp)


def input_node(g: Graph, shape, dtype: str, name: str = "", memory: str = MEM_MAIN) -> Node:
    return g.add("input", (), [tuple(shape)], [dtype], name=name, memory=memory)


def ignore_node(g: Graph, src: OutputConnector) -> Node:
    return g.add("ignore", [src], (), [])


def fake_kpu_conv2d(g: Graph, src: OutputConnector, is_depthwise, filter_type, pool_type, weights, bias,
                    fused_activation, name: str = "") -> Node:
    n, _, h, w = src.shape
    out = (n, int(weights.shape[0]), pool_out(h, pool_type), pool_out(w, pool_type))
    return g.add("fake_kpu_conv2d", [src], [out], [F32], name=name, is_depthwise=bool(is_depthwise),
                 filter_type=int(filter_type), pool_type=int(pool_type), weights=weights, bias=bias,
                 fused_activation=tuple(fused_activation))


def kpu_upload(g: Graph, src: OutputConnector, name: str = "") -> Node:
    return g.add("kpu_upload", [src], [src.shape], [U8], name=name, memory=MEM_KPU)


def kpu_download(g: Graph, src: OutputConnector, name: str = "") -> Node:
    return g.add("kpu_download", [src], [src.shape], [U8], name=name)


def kpu_conv2d(g: Graph, src: OutputConnector, has_main_mem_output: bool, params: dict, name: str = "") -> Node:
    """params: is_depthwise, filter_type, pool_type, weights (u8 OIHW), pad_value, arg_x, shift_x, arg_w,
    shift_w, arg_add, batch_norm, activation (see kmodelpy/compiler/k210_ops.py)."""
    n, _, h, w = src.shape
    pt = params["pool_type"]
    out = (n, int(params["weights"].shape[0]), pool_out(h, pt), pool_out(w, pt))
    node = g.add("kpu_conv2d", [src], [out], [U8], name=name, memory=MEM_KPU, **params)
    if has_main_mem_output:  # output 1: the main-memory copy (a second output of another memory kind)
        node.outputs.append(OutputConnector(node, 1, out, U8, MEM_MAIN))
    node.attrs["has_main_mem_output"] = bool(has_main_mem_output)
    return node
