"""The HLIR operator vocabulary (ncc v0.2's hlir ops) as a registry: display name, shape
inference and float evaluation per op name (compiler spec §3, §4, §5.1, §8.2).

Registration API (used here for the neutral ops and by the compiler modules for theirs)::

    from kmodelpy.ir.ops import register_op, register_evaluator, make

    register_op("fake_kpu_conv2d", "FakeKPUConv2D", infer=lambda attrs, in_shapes: [out_shape])
    register_evaluator("fake_kpu_conv2d", lambda node, args: [y])   # args: list of np arrays
    node = make(graph, "binary", [a.output, b.output], binary_op="add", fused_activation=FULL)

* ``infer(attrs, in_shapes) -> list[tuple]`` gives the output shapes (``None``: the caller must pass
  ``out_shapes`` to :meth:`Graph.add` itself).
* an evaluator takes ``(node, args)`` — the node and its input values (float32 numpy arrays, or
  uint8 for quantized tensors) in input order — and returns the list of output values.
  The neutral ops' evaluators live in :mod:`kmodelpy.ir.evaluate`.
* ``memory``: default memory kind of the op's outputs ("const" for ``constant``).

Node attributes of the ops produced by the importer (all 4-D tensors NCHW; names as in the spec):

==================  ==================================================================================
input / output      — (output: one input; ``input`` node outputs the graph input)
ignore              — (one input, keeps a value alive)
constant            ``data``: np.ndarray (float32 unless stated), output memory "const"
conv2d              ``weights`` OIHW f32, ``bias`` [O] f32, ``groups``, ``padding_h``/``padding_w``
                    (before, after), ``stride_h``, ``stride_w``, ``dilation_h``, ``dilation_w``,
                    ``fused_activation`` (lo, hi)
conv2d_transpose    same as conv2d plus ``output_shape`` (NCHW); bias is zeros (ncc)
matmul              inputs a [M,K], b [K,N]; ``bias`` [N], ``fused_activation``
binary              inputs a, b (numpy broadcast); ``binary_op`` add|sub|mul|div|min|max, ``fused_activation``
clamp               inputs x, low, high (1-element constants)
unary               ``unary_op`` abs|ceil|cos|exp|floor|log|neg|rsqrt|sin|square
fused_unary         ``program``: sequence of :class:`kmodelpy.compiler.fused_unary.FuOp` (constant(v) |
                    identity(i) | ldx | unary(op, i) | binary(op, i, j) | clamp(x, lo, hi)); the last is
                    the result; evaluated through NNIL exactly as ncc does
concat              ``axis``; n inputs
transpose           ``perm``
reshape             ``new_shape`` (fully resolved tuple)
pad                 ``paddings`` list of (before, after) per dim, ``pad_value`` (float)
strided_slice       ``begin``, ``end``, ``strides`` (normalised as §4.2, masks reset to 0),
                    ``begin_mask``, ``end_mask`` (0), ``ellipsis_mask``, ``new_axis_mask``, ``shrink_axis_mask``
resize              ``new_size`` (h, w), ``sampling`` (:class:`kmodelpy.ir.resample.Sampling`: the source model's
                    own resize — mode, coordinate transformation, nearest rounding, ...); the importers' node,
                    lowered at the start of pass P1 (:mod:`kmodelpy.compiler.transforms.resize_lowering`)
resize_image        ``mode`` bilinear|nearest_neighbor, ``new_size`` (h, w), ``align_corners``: ncc's ResizeImage
                    and its sampling (made by the lowering of ``resize``)
reduce              ``reduce_op`` mean|min|max|sum, ``axis`` (sorted, non-negative), ``init_value``, ``keep_dims``
reduce_window2d     ``reduce_op``, ``init_value``, ``filter_h``, ``filter_w``, ``padding_h``, ``padding_w``,
                    ``stride_h``, ``stride_w``, ``dilation_h``, ``dilation_w``, ``fused_activation``
quantize            ``quant_param`` (:class:`kmodelpy.format.binio.QuantParam` or a (zero_point, scale)
                    pair) — q = x·scale + zp; output uint8
dequantize          ``quant_param``; input uint8, output float32
==================  ==================================================================================

``fused_activation`` is a pair of Python floats exactly representable in float32;
:data:`FULL_RANGE` (= [−FLT_MAX, FLT_MAX]) is "no activation".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)
FULL_RANGE = (-FLT_MAX, FLT_MAX)

BINARY_OPS = ("add", "sub", "mul", "div", "min", "max")
UNARY_OPS = ("abs", "ceil", "cos", "exp", "floor", "log", "neg", "rsqrt", "sin", "square")
REDUCE_OPS = ("mean", "min", "max", "sum")
RESIZE_MODES = ("bilinear", "nearest_neighbor")


@dataclass
class OpDef:
    name: str
    display: str
    infer: Callable | None = None
    evaluate: Callable | None = None
    memory: str = "main"


_REGISTRY: dict[str, OpDef] = {}


def register_op(name: str, display: str, infer: Callable | None = None, evaluate: Callable | None = None,
                memory: str = "main") -> OpDef:
    """Register (or update) an op. Keeps an already registered evaluator unless one is given."""
    old = _REGISTRY.get(name)
    d = OpDef(name, display, infer, evaluate if evaluate is not None else (old.evaluate if old else None), memory)
    _REGISTRY[name] = d
    return d


def register_evaluator(name: str, fn: Callable) -> None:
    """Attach a float evaluator ``fn(node, args) -> list[np.ndarray]`` to a registered op."""
    if name not in _REGISTRY:
        _REGISTRY[name] = OpDef(name, name)
    _REGISTRY[name].evaluate = fn


def opdef(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown HLIR op {name!r}") from None


def display_name(name: str) -> str:
    """ncc's OpName (second column of hlir opcode.def), used for automatic node names."""
    d = _REGISTRY.get(name)
    return d.display if d is not None else "".join(p.capitalize() for p in name.split("_"))


def evaluator(name: str) -> Callable:
    """The float evaluator of ``name`` (loads the neutral evaluators on first use)."""
    from . import evaluate as _ev  # noqa: F401  (registers the neutral evaluators)

    d = opdef(name)
    if d.evaluate is None:
        raise KeyError(f"no float evaluator registered for HLIR op {name!r}")
    return d.evaluate


def infer_shapes(name: str, attrs: dict, in_shapes: list[tuple]) -> list[tuple]:
    d = opdef(name)
    if d.infer is None:
        raise KeyError(f"HLIR op {name!r} has no shape inference; pass out_shapes")
    return [tuple(int(v) for v in s) for s in d.infer(attrs, [tuple(s) for s in in_shapes])]


def make(graph, name: str, inputs=(), node_name: str = "", out_shapes=None, out_dtypes=None, **attrs):
    """Create a node of op ``name`` in ``graph`` with inferred output shapes (see module doc)."""
    inputs = list(inputs)
    if out_shapes is None:
        out_shapes = infer_shapes(name, attrs, [o.shape for o in inputs])
    d = opdef(name)
    return graph.add(name, inputs, out_shapes, out_dtypes, name=node_name, memory=d.memory, **attrs)


# ---------------------------------------------------------------- shape helpers (op_utils.h)
def windowed_output_size(size: int, filt: int, stride: int, dilation: int, same: bool) -> int:
    eff = (filt - 1) * dilation + 1
    return (size + stride - 1) // stride if same else (size - eff + stride) // stride


def windowed_padding(size: int, filt: int, stride: int, dilation: int, same: bool) -> tuple[int, int]:
    """SAME/VALID padding (compiler spec §4.1): total split floor(total/2) before, the rest after."""
    out = windowed_output_size(size, filt, stride, dilation, same)
    eff = (filt - 1) * dilation + 1
    total = max(0, (out - 1) * stride + eff - size)
    return (total // 2, total - total // 2)


def get_out(size: int, filt: int, stride: int, dilation: int, pad: tuple[int, int]) -> int:
    """Conv/pool output size with explicit padding (runtime spec B.2 get_out)."""
    eff = (filt - 1) * dilation + 1
    return (size + pad[0] + pad[1] - eff + stride) // stride


def broadcast_shape(a: tuple, b: tuple) -> tuple:
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"shapes {list(a)} and {list(b)} cannot be broadcast")
        out.append(max(x, y) if min(x, y) != 0 else 0)
    return tuple(out)


def normalize_reshape(in_shape: tuple, new_shape) -> tuple:
    new_shape = [int(v) for v in new_shape]
    size = int(np.prod(in_shape)) if len(in_shape) else 1
    if new_shape.count(-1) > 1:
        raise ValueError("Reshape can only have 1 non-determined dimension at most")
    known = int(np.prod([v for v in new_shape if v != -1])) if new_shape else 1
    return tuple(size // known if v == -1 else v for v in new_shape)


def normalize_strided_slice(in_shape, begin, end, strides, begin_mask, end_mask, shrink_axis_mask):
    """Compiler spec §4.2 normalisation: returns (begin, end) with masks applied."""
    nb, ne = [], []
    for i, dim in enumerate(in_shape):
        s = int(strides[i])
        b = int(begin[i])
        e = int(end[i])
        b = (0 if s > 0 else dim - 1) if begin_mask & (1 << i) else (dim + b if b < 0 else b)
        e = (dim if s > 0 else -1) if end_mask & (1 << i) else (dim + e if e < 0 else e)
        if shrink_axis_mask & (1 << i):
            e = b + 1
        # out-of-range indices (e.g. TF's end = 2^31-1 without end_mask) are clamped as TFLite
        # does; ncc would compute a bogus size there, so valid ncc models are unaffected
        lo_, hi_ = (0, dim) if s > 0 else (-1, dim - 1)
        b, e = min(max(b, lo_), hi_), min(max(e, lo_), hi_)
        nb.append(b)
        ne.append(e)
    return tuple(nb), tuple(ne)


def strided_slice_shape(in_shape, begin, end, strides, shrink_axis_mask) -> tuple:
    out = []
    for i in range(len(in_shape)):
        if shrink_axis_mask & (1 << i):
            continue
        n = float(np.float32(np.float32(end[i] - begin[i]) / np.float32(strides[i])))
        out.append(max(0, int(math.ceil(n))))
    return tuple(out)


def reduced_shape(in_shape, axis, keep_dims) -> tuple:
    out = []
    for i, d in enumerate(in_shape):
        if i not in axis:
            out.append(d)
        elif keep_dims:
            out.append(1)
    return tuple(out)


# ---------------------------------------------------------------- shape inference per op
def _same(attrs, ins):
    return [ins[0]]


def _conv2d(attrs, ins):
    n, _, h, w = ins[0]
    o, _, fh, fw = attrs["weights"].shape
    return [(n, o, get_out(h, fh, attrs["stride_h"], attrs["dilation_h"], attrs["padding_h"]),
             get_out(w, fw, attrs["stride_w"], attrs["dilation_w"], attrs["padding_w"]))]


def _matmul(attrs, ins):
    return [(ins[0][0], ins[1][1])]


def _concat(attrs, ins):
    ax = attrs["axis"]
    out = list(ins[0])
    out[ax] = sum(s[ax] for s in ins)
    return [tuple(out)]


def _transpose(attrs, ins):
    return [tuple(ins[0][p] for p in attrs["perm"])]


def _pad(attrs, ins):
    return [tuple(d + p[0] + p[1] for d, p in zip(ins[0], attrs["paddings"]))]


def _strided_slice(attrs, ins):
    return [strided_slice_shape(ins[0], attrs["begin"], attrs["end"], attrs["strides"], attrs["shrink_axis_mask"])]


def _resize(attrs, ins):
    n, c, _, _ = ins[0]
    return [(n, c, int(attrs["new_size"][0]), int(attrs["new_size"][1]))]


def _reduce(attrs, ins):
    return [reduced_shape(ins[0], attrs["axis"], attrs["keep_dims"])]


def _reduce_window2d(attrs, ins):
    n, c, h, w = ins[0]
    return [(n, c, get_out(h, attrs["filter_h"], attrs["stride_h"], attrs["dilation_h"], attrs["padding_h"]),
             get_out(w, attrs["filter_w"], attrs["stride_w"], attrs["dilation_w"], attrs["padding_w"]))]


register_op("input", "Input", None)
register_op("output", "Output", lambda a, i: [])
register_op("ignore", "Ignore", lambda a, i: [])
register_op("constant", "Constant", lambda a, i: [tuple(np.shape(a["data"])) or (1,)], memory="const")
register_op("conv2d", "Conv2D", _conv2d)
register_op("conv2d_transpose", "Conv2DTranspose", lambda a, i: [tuple(a["output_shape"])])
register_op("matmul", "MatMul", _matmul)
register_op("binary", "Binary", lambda a, i: [broadcast_shape(i[0], i[1])])
register_op("clamp", "Clamp", _same)
register_op("unary", "Unary", _same)
register_op("fused_unary", "FusedUnary", _same)
register_op("concat", "Concat", _concat)
register_op("transpose", "Transpose", _transpose)
register_op("reshape", "Reshape", lambda a, i: [normalize_reshape(i[0], a["new_shape"])])
register_op("pad", "Pad", _pad)
register_op("strided_slice", "StridedSlice", _strided_slice)
register_op("resize", "ResizeImage", _resize)  # ncc's importers make a ResizeImage here (automatic names alike)
register_op("resize_image", "ResizeImage", _resize)
register_op("reduce", "Reduce", _reduce)
register_op("reduce_window2d", "ReduceWindow2D", _reduce_window2d)
register_op("quantize", "Quantize", _same)
register_op("dequantize", "Dequantize", _same)
# display names of the ops the compiler registers (so names are right even before their modules load)
for _n, _d in (("quantized_conv2d", "QuantizedConv2D"), ("quantized_matmul", "QuantizedMatMul"),
               ("quantized_binary", "QuantizedBinary"), ("quantized_reduce", "QuantizedReduce"),
               ("table_lookup1d", "TableLookup1D"), ("quantized_conv2d_transpose", "QuantizedConv2DTranspose"),
               ("fake_kpu_conv2d", "FakeKPUConv2D"), ("fake_piecewise_linear", "FakePiecewiseLinear"),
               ("kpu_upload", "KPUUpload"), ("kpu_download", "KPUDownload"), ("kpu_conv2d", "KPUConv2D")):
    register_op(_n, _d, None)
