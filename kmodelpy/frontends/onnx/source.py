"""An ONNX model as front-end-neutral :class:`~kmodelpy.frontends.source.SourceOp` layers (for the fit report),
with the PyTorch wording of the fixes."""
from __future__ import annotations

import numpy as np

from ..source import SourceModel, SourceOp

KINDS = {"Conv": "conv", "Gemm": "dense", "MatMul": "dense", "ConvTranspose": "transpose_conv", "MaxPool": "pool",
         "AveragePool": "pool", "GlobalAveragePool": "reduce", "GlobalMaxPool": "reduce", "ReduceMean": "reduce",
         "ReduceSum": "reduce", "ReduceMax": "reduce", "ReduceMin": "reduce", "Clip": "clamp", "HardSigmoid": "clamp",
         "PRelu": "prelu", "Pad": "pad", "Reshape": "reshape", "Flatten": "reshape", "Squeeze": "reshape",
         "Unsqueeze": "reshape", "Identity": "reshape", "Dropout": "reshape", "Cast": "reshape",
         "Transpose": "transpose", "Slice": "data", "Split": "data", "Gather": "data", "Resize": "resize",
         "Upsample": "resize", "Expand": "data", "Concat": "concat", "Softmax": "softmax"}
BINARY = {"Add", "Sub", "Mul", "Div", "Min", "Max", "Sum", "Mean"}
UNARY = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "Abs", "Ceil", "Cos", "Exp", "Floor", "Log", "Neg",
         "Sin", "Sqrt", "Reciprocal", "Pow"}
CURVES = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "HardSwish": "hard_swish"}

HINTS = {
    "framework": "PyTorch", "conv": "Conv2d", "dense": "Linear", "ncc_refuses": "Not supported ONNX opcode",
    "stride2": "nn.Conv2d(..., kernel_size=3, stride=2, padding=1) on an even-sized input (pads [1,1,1,1]) makes this "
               "stride-2 conv fully KPU",
    "dw_stride2": "make a 1x1 Conv2d its only consumer and give this conv padding=1 on an even-sized input: ncc then "
                  "moves the subsampling into the 1x1 conv's KPU pool",
    "symmetric_pad": "make the explicit Pad #{k} symmetric: 1 pixel on every side for a 3x3 kernel (none for 1x1), "
                     "which the KPU does by itself, or drop it and give the conv padding=1 (3x3) / 0 (1x1)",
    "same": "use padding=1 for a 3x3 kernel (0 for 1x1): symmetric padding, which the KPU does by itself",
    "same_short": "use symmetric padding (padding=1 for 3x3, 0 for 1x1)",
    "fuse_relu6": " (use nn.ReLU6 / torch.clamp right after the conv: exported as one Clip, the compiler fuses it "
                  "into the conv's KPU activation)",
    "clamp_fix": "put it right after a Conv2d (nn.ReLU6 / Hardtanh export as Clip, which is then fused into the "
                 "conv's KPU activation)",
    "upsample": "use nn.Upsample(scale_factor=2, mode='nearest') followed by a 3x3 Conv2d (KPU)",
}


def source_model(path_or_file) -> SourceModel:
    from .importer import _Importer
    from .reader import OnnxFile, read_onnx

    f = path_or_file if isinstance(path_or_file, OnnxFile) else read_onnx(path_or_file)
    imp = _Importer(f)
    graph = imp.run()
    return SourceModel(f.path, "NCHW", [_op(imp, n) for n in f.nodes], graph, HINTS)


def _shape(imp, name) -> tuple:
    try:
        return tuple(imp.shape(name))
    except Exception:  # noqa: BLE001 - a tensor of a folded branch without a shape: show none
        return ()


def _op(imp, n) -> SourceOp:
    name = n.op_type
    kind = KINDS.get(name, "elementwise" if name in BINARY | UNARY else "other")
    ins = [imp.resolve(t) if t else None for t in n.inputs]
    const = {k: imp.static[t] for k, t in enumerate(ins) if t is not None and t in imp.static}
    out = n.outputs[0] if n.outputs else ""
    a = n.attrs
    s = SourceOp(n.index, name, kind, out, _shape(imp, out) if out else (), ins, list(n.outputs), const,
                 binary=name in BINARY and len(ins) > 1, curve=CURVES.get(name, ""),
                 pool_op="max" if name == "MaxPool" else "mean")
    if ins and ins[0] is not None:
        s.in_shape = _shape(imp, ins[0])
    s.stride = tuple(int(v) for v in a.get("strides", [1, 1]))[:2]
    s.dilation = tuple(int(v) for v in a.get("dilations", [1, 1]))[:2]
    w = const.get(1)
    if kind == "conv" and w is not None and np.ndim(w) == 4:
        s.weights, s.kernel, s.groups = np.asarray(w), tuple(w.shape[2:]), int(a.get("group", 1))
        if s.groups == s.cin and s.cin > 1 and w.shape[0] == s.cin:
            s.kind = "depthwise"
    elif kind == "dense" and w is not None and np.ndim(w) == 2:
        s.weights = np.asarray(w) if int(a.get("transB", 0)) else np.asarray(w).T  # [N, K]
    elif kind == "dense":
        s.weights = None
    if kind in ("conv", "dense", "transpose_conv") and w is not None:
        s.params = int(np.size(w))
    return s
