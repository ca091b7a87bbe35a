"""A TFLite model as front-end-neutral :class:`~kmodelpy.frontends.source.SourceOp` layers (for the fit
report), with the Keras wording of the fixes."""
from __future__ import annotations

import numpy as np

from ..source import SourceModel, SourceOp

KINDS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "dense",
         "TRANSPOSE_CONV": "transpose_conv", "MAX_POOL_2D": "pool", "AVERAGE_POOL_2D": "pool", "MEAN": "reduce",
         "SUM": "reduce", "REDUCE_MAX": "reduce", "REDUCE_MIN": "reduce", "RELU6": "clamp", "RELU_N1_TO_1": "clamp",
         "RELU_0_TO_1": "clamp", "PRELU": "prelu", "PAD": "pad", "PADV2": "pad", "RESHAPE": "reshape",
         "SQUEEZE": "reshape", "EXPAND_DIMS": "reshape", "TRANSPOSE": "transpose", "STRIDED_SLICE": "data",
         "SLICE": "data", "RESIZE_BILINEAR": "resize", "RESIZE_NEAREST_NEIGHBOR": "resize", "SPLIT": "data",
         "SPLIT_V": "data", "UNPACK": "data", "CONCATENATION": "concat", "SOFTMAX": "softmax"}
BINARY = {"ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM"}
UNARY = {"LEAKY_RELU", "LOGISTIC", "RELU", "TANH", "HARD_SWISH", "ABS", "CEIL", "COS", "EXP", "FLOOR", "LOG", "NEG",
         "RSQRT", "SIN", "SQUARE"}
CURVES = {"LOGISTIC": "sigmoid", "TANH": "tanh", "EXP": "exp", "HARD_SWISH": "hard_swish"}

HINTS = {
    "framework": "Keras", "conv": "Conv2D", "dense": "Dense", "ncc_refuses": "Not supported tflite opcode",
    "stride2": "ZeroPadding2D(((1,1),(1,1))) + padding='valid' on an even-sized input makes this stride-2 conv "
               "fully KPU",
    "dw_stride2": "make a 1x1 Conv2D its only consumer and pad it (1,1) with ZeroPadding2D + padding='valid' on an "
                  "even-sized input: ncc then moves the subsampling into the 1x1 conv's KPU pool",
    "symmetric_pad": "make the explicit PAD #{k} symmetric: 1 pixel on every side for a 3x3 kernel (none for 1x1), "
                     "which the KPU does by itself, or drop it and use padding='same'",
    "same": "use padding='same' (1 pixel on every side for 3x3, none for 1x1), which the KPU does by itself",
    "same_short": "use padding='same' (or less explicit padding)",
    "fuse_relu6": " (fuse the {op} into the conv before it: activation='relu6' on that Conv2D)",
    "clamp_fix": "use ReLU6 fused in the conv (activation='relu6' on Conv2D, or BatchNorm + ReLU6 right after the "
                 "conv so the TFLite converter fuses it) instead of a separate layer",
    "upsample": "use UpSampling2D (nearest, a cheap CPU copy) followed by a 3x3 Conv2D (KPU)",
}


def source_model(path_or_file, graph=None) -> SourceModel:
    from .importer import import_tflite
    from .reader import TFLiteFile, read_tflite

    tfl = path_or_file if isinstance(path_or_file, TFLiteFile) else read_tflite(path_or_file)
    ops = [_op(tfl, op) for op in tfl.operators]
    return SourceModel(tfl.path, "NHWC", ops, graph if graph is not None else import_tflite(tfl), HINTS)


def _nchw(shape) -> tuple:
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else tuple(shape)


def _op(tfl, op) -> SourceOp:
    t = tfl.tensors[op.outputs[0]] if op.outputs else None
    name = op.builtin
    kind = KINDS.get(name, "elementwise" if name in BINARY | UNARY else "other")
    ins = [i if i >= 0 else None for i in op.inputs]
    const = {k: tfl.tensors[i].data for k, i in enumerate(op.inputs) if i >= 0 and tfl.tensors[i].data is not None}
    o = op.options
    s = SourceOp(op.index, name, kind, t.name if t else "", tuple(t.shape) if t else (), ins,
                 [i if i >= 0 else None for i in op.outputs], const, binary=name in BINARY,
                 curve=CURVES.get(name, ""), pool_op="max" if name == "MAX_POOL_2D" else "mean")
    if op.inputs and op.inputs[0] >= 0:
        s.in_shape = _nchw(tfl.tensors[op.inputs[0]].shape)
    s.stride = (o.get("stride_h", 1), o.get("stride_w", 1))
    s.dilation = (o.get("dilation_h", 1), o.get("dilation_w", 1))
    if kind in ("conv", "depthwise", "dense", "transpose_conv"):
        w = tfl.tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
        s.weights = w.data if w is not None else None
        s.params = int(np.prod(w.shape)) if w is not None and w.data is not None else 0
        q = w.quantization if w is not None else None
        if w is not None and w.dtype == "INT8" and q is not None and len(np.unique(q.scales)) > 1:
            s.notes.append("int8 weights with per-channel scales (dynamic-range model): ncc v0.2 dequantizes them "
                           "with scale[0] only (silently wrong); kmodelpy uses every scale")
        if kind in ("conv", "depthwise") and w is not None and len(w.shape) == 4:
            s.kernel = (w.shape[1], w.shape[2])
            c = s.cin
            s.groups = (1 if c == 1 else c) if kind == "depthwise" else max(1, c // max(1, w.shape[3]))
    return s
