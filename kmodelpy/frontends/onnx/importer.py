"""ONNX → HLIR graph, built exactly as ncc v0.2's ONNX importer builds it where ncc is right
(ncc-v0.2-onnx-importer spec), correct where it is wrong, and complete where it refuses.

Node creation order is ncc's: every ONNX node in graph order (its HLIR nodes in ncc's emplace order; a
``Constant`` node becomes an HLIR constant where it stands), then one ``input`` node per graph input, then
one ``output`` node per graph output. Tensors are NCHW as in ONNX: no layout transposes. Internal
connections are made while a node is converted, tensor connections afterwards in the order the connectors
were created (ncc iterates a hash map there); a constant operand that is an initializer or a folded value
gets its ``constant`` node then (one per tensor, shared). Op nodes are unnamed (``assign_names`` names
them); input/output nodes carry their tensor names. ``graph.source`` maps a node to ``(ONNX node index,
op_type, output name)``.

Where kmodelpy differs from ncc (docs/deviations.md D21-D30):
* Conv ``pads`` in ONNX order ``[h_begin, w_begin, h_end, w_end]`` and ``auto_pad=SAME_LOWER`` with the odd
  pad before (ncc: ``[h_begin, h_end, w_begin, w_end]``, LOWER = UPPER);
* ConvTranspose with ONNX's ``[C_in, C_out/group, kh, kw]`` weights, its stride, pads, output_padding and
  output_shape, and its bias (ncc: weights misread, no bias, stride ignored in the shape);
* Resize ``half_pixel`` and the other coordinate modes, nearest modes, cubic and antialiased resizes: one
  ``resize`` node with onnxruntime's sampling (ncc: asymmetric), lowered by the compiler;
* Softmax before opset 13 normalises over every axis from ``axis`` on (ncc: that axis only);
* LpNormalization p=1 is x / Σ|x| (ncc: Σ|x| with one channel);
* Squeeze/Unsqueeze/Reduce* axes given as an input (opset 13/18), Slice ends of INT64_MAX, Reshape 0;
* MaxPool/AveragePool work (pads, ceil_mode, count_include_pad, dilations; ncc crashes), Pad on 4-D tensors
  (constant, reflect, edge; ncc pads N and C), LeakyRelu (ncc: shape error), initializers and Constant nodes
  alike wherever a constant is allowed;
* operators ncc lacks, from existing HLIR ops: Gemm (matmul with its bias), BatchNormalization (folded into
  the conv before it, else per-channel mul + add), Flatten/Unsqueeze (reshape), Clip (clamp: fused into the
  conv's activation by the compiler), GlobalAveragePool/GlobalMaxPool (reduce), Sigmoid, HardSigmoid,
  HardSwish, Tanh, PRelu, Identity, Dropout, Upsample, Split, Gather with constant indices, Sum/Mean,
  Reciprocal, Pow by 2/0.5/1, and the shape sub-graphs (Shape → Gather → Unsqueeze → Concat → Reshape ...)
  folded at import (:mod:`.fold`).
* Refused with one line: symbolic input sizes other than the batch (read as 1), unsupported operators (the
  list of supported ones follows), non-float graph inputs.
"""
from __future__ import annotations

import numpy as np

from ...errors import FormatError, KmodelpyError, UnsupportedError
from ...ir.graph import Graph, InputConnector, OutputConnector
from ...ir.ops import FLT_MAX, FULL_RANGE, normalize_strided_slice
from ..builder import GraphBuilder, first_line
from . import fold
from .layers import Layers
from .reader import Node, OnnxFile, read_onnx

F32 = np.float32


def import_onnx(src) -> Graph:
    """Import an .onnx path (or an :class:`OnnxFile`) into an HLIR :class:`Graph`."""
    f = src if isinstance(src, OnnxFile) else read_onnx(src)
    return _Importer(f).run()


def _shape(a) -> tuple:
    s = tuple(np.shape(a))
    return s if s else (1,)


class _Importer(GraphBuilder, Layers):
    FULL_RANGE = FULL_RANGE

    def __init__(self, f: OnnxFile):
        super().__init__()
        self.f = f
        self.produced: dict[str, OutputConnector] = {}
        self.static: dict[str, np.ndarray] = dict(f.initializers)
        self.alias: dict[str, str] = {}
        self.n: Node | None = None
        self.consumers = f.consumers()
        self.graph_outputs = {o.name for o in f.outputs}
        self.input_shapes = {v.name: self.input_shape(v) for v in f.inputs}

    # ------------------------------------------------------------ helpers
    def where(self) -> str:
        n = self.n
        name = f" '{n.name}'" if n.name else ""
        return f"{self.f.path}: node #{n.index}{name} ({n.op_type})"

    def unsupported(self, what: str) -> UnsupportedError:
        return UnsupportedError(f"{self.where()}: {what}")

    def input_shape(self, v) -> tuple:
        if v.elem_type != "FLOAT":
            raise UnsupportedError(f"{self.f.path}: graph input '{v.name}' is {v.elem_type}; only float32 inputs "
                                   "are supported (export the model in float32)")
        if v.dims is None:
            raise UnsupportedError(f"{self.f.path}: graph input '{v.name}' has no shape; export it with a fixed "
                                   "input size")
        dims = []
        for k, d in enumerate(v.dims):
            if isinstance(d, int) and d > 0:
                dims.append(d)
            elif k == 0:
                dims.append(1)  # a symbolic batch: the K210 runs one image at a time
            else:
                name = f"'{d}'" if isinstance(d, str) else "unknown"
                raise UnsupportedError(
                    f"{self.f.path}: graph input '{v.name}' dimension {k} is symbolic ({name}); export with a fixed "
                    f"size: torch.onnx.export(model, torch.randn(1, C, H, W), ...) without dynamic_axes for that "
                    "dimension")
        return tuple(dims)

    def resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def inp(self, k: int) -> str:
        """Input ``k`` of the current node (resolved through Identity/Dropout), '' when absent."""
        ins = self.n.inputs
        return self.resolve(ins[k]) if k < len(ins) and ins[k] else ""

    def has(self, k: int) -> bool:
        return bool(self.inp(k))

    def shape(self, name) -> tuple:
        """Shape of a tensor name or an OutputConnector."""
        if isinstance(name, OutputConnector):
            return name.shape
        name = self.resolve(name)
        if name in self.produced:
            return self.produced[name].shape
        if name in self.static:
            return _shape(self.static[name])
        if name in self.input_shapes:
            return self.input_shapes[name]
        raise FormatError(f"{self.location()}: tensor '{name}' is read before it is produced (graph not sorted?)")

    def value(self, k: int, what: str) -> np.ndarray:
        name = self.inp(k)
        if not name:
            raise self.unsupported(f"{what} (input #{k}) is missing")
        if name not in self.static:
            raise self.unsupported(f"{what} (tensor '{name}') must be a constant (an initializer or a Constant "
                                   "node, or computed from shapes only)")
        return np.asarray(self.static[name])

    def fvalue(self, k: int, what: str) -> np.ndarray:
        return np.ascontiguousarray(self.value(k, what), F32)

    def ints(self, k: int, what: str) -> list[int]:
        return [int(v) for v in self.value(k, what).reshape(-1)]

    def attr(self, name: str, default=None):
        return self.n.attrs.get(name, default)

    # GraphBuilder hooks
    def tensor_shape(self, key) -> tuple:
        return self.shape(key)

    def location(self) -> str:
        return self.where() if self.n is not None else self.f.path

    def source_entry(self):
        if self.n is None:
            return None
        return (self.n.index, self.n.op_type, self.n.outputs[0] if self.n.outputs else "")

    def node(self, op: str, inputs, out_shapes=None, **attrs):
        """GraphBuilder.node with tensor names resolved through Identity/Dropout."""
        return super().node(op, [self.resolve(i) if isinstance(i, str) else i for i in inputs], out_shapes, **attrs)

    def out(self, k: int, oc) -> None:
        """Output ``k`` of the current node is ``oc`` (a connector, or a tensor name when nothing was computed)."""
        if k < len(self.n.outputs) and self.n.outputs[k]:
            if isinstance(oc, str):
                self.alias[self.n.outputs[k]] = oc
            else:
                self.produced[self.n.outputs[k]] = oc

    def binary(self, a, b, op: str, act=FULL_RANGE) -> OutputConnector:
        return self.node("binary", [a, b], binary_op=op, fused_activation=act).output

    def unary(self, x, op: str) -> OutputConnector:
        return self.node("unary", [x], unary_op=op).output

    def clamp(self, x, lo: float, hi: float) -> OutputConnector:
        lo_c, hi_c = self.const(lo), self.const(hi)
        return self.node("clamp", [x, lo_c, hi_c]).output

    def reshape(self, x, new_shape) -> OutputConnector:
        n = self.node("reshape", [x], new_shape=tuple(int(v) for v in new_shape))
        n.attrs["new_shape"] = n.output.shape
        return n.output

    def slice(self, x, begin, end, strides, shrink: int = 0) -> OutputConnector:
        shape = self.shape(x)
        end_mask = sum(1 << i for i, (e, s) in enumerate(zip(end, strides)) if s < 0 and e < 0)
        b, e = normalize_strided_slice(shape, begin, end, strides, 0, end_mask, shrink)
        return self.node("strided_slice", [x], begin=b, end=e, strides=tuple(int(s) for s in strides), begin_mask=0,
                         end_mask=0, ellipsis_mask=0, new_axis_mask=0, shrink_axis_mask=int(shrink)).output

    def concat(self, parts, axis: int) -> OutputConnector:
        return parts[0] if len(parts) == 1 else self.node("concat", list(parts), axis=axis).output

    def pad_axis(self, x, axis: int, before: int, after: int, mode: str) -> OutputConnector:
        """Reflect/edge padding of one axis: slices of the border concatenated around ``x``."""
        if not before and not after:
            return x
        shape = self.shape(x)
        rank, dim = len(shape), shape[axis]
        if mode == "reflect" and (before >= dim or after >= dim):
            raise self.unsupported(f"reflect padding of {max(before, after)} on an axis of size {dim}")

        def part(b, e, s):
            begin, end, st = [0] * rank, list(shape), [1] * rank
            begin[axis], end[axis], st[axis] = b, e, s
            return self.slice(x, begin, end, st)

        parts = []
        if before:
            parts += [part(before, 0, -1)] if mode == "reflect" else [part(0, 1, 1)] * before
        parts.append(x)
        if after:
            parts += [part(dim - 2, dim - 2 - after, -1)] if mode == "reflect" else [part(dim - 1, dim, 1)] * after
        return self.concat(parts, axis)

    # ------------------------------------------------------------ driver
    def run(self) -> Graph:
        f = self.f
        for n in f.nodes:
            self.n = n
            if n.domain not in ("", "ai.onnx"):
                raise self.unsupported(f"operator {n.domain}.{n.op_type} is not a standard ONNX operator; export "
                                       "with the default opset only (no custom/contrib operators)")
            try:
                self.convert(n)
            except KmodelpyError:
                raise
            except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError, OverflowError) as e:
                raise self.unsupported(f"cannot import this node ({type(e).__name__}: {first_line(e)}); "
                                       "check the model") from None
        self.n = None
        self.make_io()
        return self.g

    def convert(self, n: Node) -> None:
        if n.op_type == "Constant":
            return self.op_Constant(n)
        handler = getattr(self, "op_" + n.op_type, None)
        ins = [self.resolve(i) if i else "" for i in n.inputs]
        if fold.can_fold(n.op_type, ins, self.static):
            try:
                vals = fold.fold(n, [self.static.get(i) if i else None for i in ins],
                                 [self.shape(i) if i else () for i in ins])
            except UnsupportedError:
                vals = None
            except Exception as e:  # noqa: BLE001 - report the node, not a traceback
                if handler is None:
                    raise self.unsupported(f"cannot fold this constant node ({first_line(e)})") from None
                vals = None
            if vals is not None:
                for t, v in zip(n.outputs, vals):
                    if t:
                        self.static[t] = np.asarray(v)
                if n.op_type not in fold.NCC_GRAPH_OPS:
                    return  # ncc's float operators on constants keep their nodes (its fold_constant pass runs later)
        if handler is None:
            raise self.unsupported(f"operator {n.op_type} is not supported; supported: "
                                   f"{', '.join(graph_operators())} (and on constants only: "
                                   f"{', '.join(fold_only_operators())})")
        for i in ins:
            if i and i not in self.static and i not in self.produced and i not in self.input_shapes:
                raise FormatError(f"{self.where()}: tensor '{i}' is read before it is produced (graph not sorted?)")
        handler(n)

    def make_io(self) -> None:
        f, g = self.f, self.g
        created_inputs: dict[str, OutputConnector] = {}
        for v in f.inputs:
            node = g.add("input", [], [self.input_shapes[v.name]], name=v.name)
            created_inputs[v.name] = node.output
        outs: list[tuple[InputConnector, str]] = []
        for v in f.outputs:
            name = self.resolve(v.name)
            if name in self.produced:
                shape = self.produced[name].shape
            elif name in self.static:
                shape = _shape(self.static[name])
            elif name in created_inputs:
                shape = created_inputs[name].shape
            else:
                raise FormatError(f"{f.path}: graph output '{v.name}' is not produced by any node")
            declared = v.dims
            if declared is not None and all(isinstance(d, int) and d > 0 for d in declared) and \
                    int(np.prod(declared)) != int(np.prod(shape)):
                raise FormatError(f"{f.path}: graph output '{v.name}' is declared {list(declared)} but computes "
                                  f"{list(shape)}")
            node = g.add("output", [], [], name=v.name)
            ic = InputConnector(node, 0, shape, "float32")
            node.inputs.append(ic)
            outs.append((ic, name))
        consts: dict[str, OutputConnector] = {}
        pending = self.pending + outs
        for ic, name in pending:
            if name in self.produced:
                self.connect(ic, self.produced[name])
            elif name in self.static:
                if name not in consts:
                    data = np.ascontiguousarray(np.asarray(self.static[name], F32))
                    consts[name] = self.node("constant", [], data=data.reshape(_shape(data))).output
                self.connect(ic, consts[name])
        for ic, name in pending:
            if ic.producer is None:
                if name not in created_inputs:
                    raise FormatError(f"{f.path}: tensor '{name}' is read by a node but is neither produced, "
                                      "constant nor a graph input")
                self.connect(ic, created_inputs[name])

    # ------------------------------------------------------------ constants and pass-through
    def op_Constant(self, n):
        a = n.attrs
        if "value" in a:
            v = np.asarray(a["value"])
        elif "value_float" in a:
            v = np.asarray(a["value_float"], F32)
        elif "value_floats" in a:
            v = np.asarray(a["value_floats"], F32)
        elif "value_int" in a:
            v = np.asarray(a["value_int"], np.int64)
        elif "value_ints" in a:
            v = np.asarray(a["value_ints"], np.int64)
        else:
            raise self.unsupported("Constant without a value/value_float(s)/value_int(s) attribute is not supported")
        self.static[n.outputs[0]] = v
        if v.dtype.kind in "fiub":  # ncc: an HLIR constant where the node stands (int64 as float32)
            self.out(0, self.node("constant", [], data=np.ascontiguousarray(v.astype(F32).reshape(_shape(v)))).output)

    def op_Identity(self, n):
        self.out(0, self.inp(0))

    def used(self, k: int) -> bool:
        """Output ``k`` of the current node is read by a node or is a graph output."""
        t = self.n.outputs[k] if k < len(self.n.outputs) else ""
        return bool(t) and (t in self.consumers or t in self.graph_outputs)

    def op_Dropout(self, n):
        training = self.has(2) and bool(self.value(2, "training_mode").reshape(-1)[0])
        if self.used(1) or training or int(self.attr("is_test", 1)) == 0 and self.f.opset < 7:
            raise self.unsupported("Dropout in training mode (or its mask output) is not supported; export the "
                                   "model in eval mode (model.eval())")
        self.op_Identity(n)

    def op_Cast(self, n):
        to = int(self.attr("to"))
        if to not in (1, 10, 11):  # float, float16, double: the tensor stays float32 here
            raise self.unsupported("Cast of a non-constant tensor to a non-float type is not supported")
        self.op_Identity(n)

    # ------------------------------------------------------------ elementwise
    def _binary(self, n, op):
        if len(n.inputs) == 1:
            return self.op_Identity(n)
        acc = self.binary(self.inp(0), self.inp(1), op)
        for k in range(2, len(n.inputs)):
            acc = self.binary(acc, self.inp(k), op)
        self.out(0, acc)

    def op_Add(self, n): self._binary(n, "add")  # noqa: E704
    def op_Sub(self, n): self._binary(n, "sub")  # noqa: E704
    def op_Mul(self, n): self._binary(n, "mul")  # noqa: E704
    def op_Div(self, n): self._binary(n, "div")  # noqa: E704
    def op_Min(self, n): self._binary(n, "min")  # noqa: E704
    def op_Max(self, n): self._binary(n, "max")  # noqa: E704
    def op_Sum(self, n): self._binary(n, "add")  # noqa: E704

    def op_Mean(self, n):
        self._binary(n, "add")
        if len(n.inputs) > 1:
            self.out(0, self.binary(self.produced[n.outputs[0]], self.const(len(n.inputs)), "div"))

    def _unary(self, op):
        self.out(0, self.unary(self.inp(0), op))

    def op_Abs(self, n): self._unary("abs")  # noqa: E704
    def op_Ceil(self, n): self._unary("ceil")  # noqa: E704
    def op_Cos(self, n): self._unary("cos")  # noqa: E704
    def op_Exp(self, n): self._unary("exp")  # noqa: E704
    def op_Floor(self, n): self._unary("floor")  # noqa: E704
    def op_Log(self, n): self._unary("log")  # noqa: E704
    def op_Neg(self, n): self._unary("neg")  # noqa: E704
    def op_Sin(self, n): self._unary("sin")  # noqa: E704

    def op_Sqrt(self, n):
        rs = self.unary(self.inp(0), "rsqrt")  # ncc: 1 / rsqrt(x)
        self.out(0, self.binary(self.const(1.0), rs, "div"))

    def op_Reciprocal(self, n):
        self.out(0, self.binary(self.const(1.0), self.inp(0), "div"))

    def op_Pow(self, n):
        e = self.value(1, "the exponent").reshape(-1)
        if e.size != 1 or float(e[0]) not in (0.5, 1.0, 2.0):
            raise self.unsupported("Pow is supported with a constant exponent of 0.5, 1 or 2 only")
        p = float(e[0])
        if p == 2.0:
            self.out(0, self.unary(self.inp(0), "square"))
        elif p == 0.5:
            self.op_Sqrt(n)
        else:
            self.op_Identity(n)

    def op_Relu(self, n):
        zero = self.const(0.0)  # ncc: max(x, Constant 0)
        self.out(0, self.binary(self.inp(0), zero, "max"))

    def op_LeakyRelu(self, n):
        alpha = self.const(F32(self.attr("alpha", 0.01)))
        mul = self.binary(self.inp(0), alpha, "mul")
        self.out(0, self.binary(self.inp(0), mul, "max"))

    def op_PRelu(self, n):
        slope = self.fvalue(1, "the slope")
        x = self.inp(0)
        rank = len(self.shape(x))
        if self.f.opset < 7 and slope.ndim == 1 and slope.size > 1 and rank > 2:  # PRelu-6: a slope per channel
            slope = slope.reshape((-1,) + (1,) * (rank - 2))
        zero = self.const(0.0)
        pos = self.binary(x, zero, "max")
        neg = self.binary(x, zero, "min")
        self.out(0, self.binary(pos, self.binary(neg, self.const(slope), "mul"), "add"))

    def op_Clip(self, n):
        if self.f.opset < 11 or not (self.has(1) or self.has(2)):
            lo, hi = float(self.attr("min", -FLT_MAX)), float(self.attr("max", FLT_MAX))
        else:
            lo = float(self.value(1, "min").reshape(-1)[0]) if self.has(1) else -FLT_MAX
            hi = float(self.value(2, "max").reshape(-1)[0]) if self.has(2) else FLT_MAX
        lo, hi = float(F32(max(lo, -FLT_MAX))), float(F32(min(hi, FLT_MAX)))
        self.out(0, self.clamp(self.inp(0), lo, hi))

    def sigmoid(self, x) -> OutputConnector:
        e = self.unary(self.unary(x, "neg"), "exp")
        one = self.const(1.0)
        return self.binary(one, self.binary(one, e, "add"), "div")

    def op_Sigmoid(self, n):
        self.out(0, self.sigmoid(self.inp(0)))

    def op_Tanh(self, n):
        """tanh(x) = (1 − t)/(1 + t), t = exp(−2·max(x, −10)) (as the TFLite front end)."""
        lo = self.binary(self.inp(0), self.const(-10.0), "max")
        t = self.unary(self.binary(lo, self.const(-2.0), "mul"), "exp")
        one = self.const(1.0)
        self.out(0, self.binary(self.binary(one, t, "sub"), self.binary(one, t, "add"), "div"))

    def op_HardSigmoid(self, n):
        ax = self.binary(self.inp(0), self.const(F32(self.attr("alpha", 0.2))), "mul")
        b = self.binary(ax, self.const(F32(self.attr("beta", 0.5))), "add")
        self.out(0, self.clamp(b, 0.0, 1.0))

    def op_HardSwish(self, n):
        p3 = self.binary(self.inp(0), self.const(3.0), "add")
        m = self.binary(self.inp(0), self.clamp(p3, 0.0, 6.0), "mul")
        self.out(0, self.binary(m, self.const(6.0), "div"))

    def op_Softmax(self, n):
        shape = self.shape(self.inp(0))
        rank = len(shape)
        axis = int(self.attr("axis", 1 if self.f.opset < 13 else -1))
        axis = axis + rank if axis < 0 else axis
        axes = (axis,) if self.f.opset >= 13 else tuple(range(axis, rank))  # < 13: flattened from the axis on
        x = self.inp(0)
        mx = self.node("reduce", [x], reduce_op="max", axis=axes, init_value=-FLT_MAX, keep_dims=True)
        sub = self.binary(x, mx.output, "sub")
        exp = self.unary(sub, "exp")
        s = self.node("reduce", [exp], reduce_op="sum", axis=axes, init_value=0.0, keep_dims=True)
        if len(axes) == 1:  # ncc: exp / Σexp
            self.out(0, self.binary(exp, s.output, "div"))
        else:  # many elements: Σexp is large and each result tiny, which a uint8 division cannot resolve
            self.out(0, self.binary(exp, self.binary(self.const(1.0), s.output, "div"), "mul"))

    def op_LpNormalization(self, n):
        shape = self.shape(self.inp(0))
        axis = int(self.attr("axis", -1))
        axis = (axis + len(shape) if axis < 0 else axis,)
        p = int(self.attr("p", 2))
        x = self.inp(0)
        if p == 2:  # ncc: x · rsqrt(max(Σx², 1e-10))
            sq = self.unary(x, "square")
            s = self.node("reduce", [sq], reduce_op="sum", axis=axis, init_value=0.0, keep_dims=True)
            mx = self.binary(s.output, self.const(1e-10), "max")
            self.out(0, self.binary(x, self.unary(mx, "rsqrt"), "mul"))
        elif p == 1:
            s = self.node("reduce", [self.unary(x, "abs")], reduce_op="sum", axis=axis, init_value=0.0, keep_dims=True)
            self.out(0, self.binary(x, self.binary(s.output, self.const(1e-10), "max"), "div"))
        else:
            raise self.unsupported(f"LpNormalization p={p} (ONNX allows 1 and 2)")

    # ------------------------------------------------------------ reductions
    def axes(self, k: int, rank: int):
        """Axes from the ``axes`` attribute (older opsets) or input ``k`` (newer); None when absent."""
        if "axes" in self.n.attrs:
            raw = list(self.attr("axes"))
        elif self.has(k):
            raw = self.ints(k, "the axes")
        else:
            return None
        return [int(a) + rank if int(a) < 0 else int(a) for a in raw]

    def _reduce(self, n, op, init):
        rank = len(self.shape(self.inp(0)))
        axes = self.axes(1, rank)
        if not axes:
            if axes is not None and int(self.attr("noop_with_empty_axes", 0)):
                return self.op_Identity(n)
            axes = list(range(rank))
        node = self.node("reduce", [self.inp(0)], reduce_op=op, axis=tuple(sorted(axes)), init_value=init,
                         keep_dims=bool(self.attr("keepdims", 1)))
        self.out(0, node.output)

    def op_ReduceMean(self, n): self._reduce(n, "mean", 0.0)  # noqa: E704
    def op_ReduceSum(self, n): self._reduce(n, "sum", 0.0)  # noqa: E704
    def op_ReduceMax(self, n): self._reduce(n, "max", -FLT_MAX)  # noqa: E704
    def op_ReduceMin(self, n): self._reduce(n, "min", FLT_MAX)  # noqa: E704

    # ------------------------------------------------------------ data movement
    def op_Reshape(self, n):
        target = fold.reshape_target(self.shape(self.inp(0)), self.ints(1, "the shape"),
                                     bool(self.attr("allowzero", 0)))
        self.out(0, self.reshape(self.inp(0), target))

    def op_Flatten(self, n):
        s = self.shape(self.inp(0))
        ax = int(self.attr("axis", 1))
        ax = ax + len(s) if ax < 0 else ax
        self.out(0, self.reshape(self.inp(0), (int(np.prod(s[:ax])), int(np.prod(s[ax:])))))

    def op_Squeeze(self, n):
        s = self.shape(self.inp(0))
        axes = self.axes(1, len(s))
        if axes is None:
            axes = [i for i, d in enumerate(s) if d == 1]
        for a in axes:
            if s[a] != 1:
                raise self.unsupported(f"axis {a} of {list(s)} cannot be squeezed (size {s[a]})")
        self.out(0, self.reshape(self.inp(0), [d for i, d in enumerate(s) if i not in axes]))

    def op_Unsqueeze(self, n):
        raw = list(self.attr("axes")) if "axes" in n.attrs else self.ints(1, "the axes")
        self.out(0, self.reshape(self.inp(0), fold.unsqueeze_shape(self.shape(self.inp(0)), raw)))

    def op_Transpose(self, n):
        rank = len(self.shape(self.inp(0)))
        perm = tuple(int(p) for p in self.attr("perm", list(range(rank))[::-1]))
        self.out(0, self.node("transpose", [self.inp(0)], perm=perm).output)

    def op_Concat(self, n):
        rank = len(self.shape(self.inp(0)))
        axis = int(self.attr("axis"))
        self.out(0, self.node("concat", [self.inp(k) for k in range(len(n.inputs))],
                              axis=axis + rank if axis < 0 else axis).output)

    def op_Slice(self, n):
        shape = self.shape(self.inp(0))
        if "starts" in n.attrs:  # Slice-1: attributes
            starts, ends, axes, steps = list(self.attr("starts")), list(self.attr("ends")), self.attr("axes"), None
        else:
            starts, ends = self.ints(1, "the starts"), self.ints(2, "the ends")
            axes = self.ints(3, "the axes") if self.has(3) else None
            steps = self.ints(4, "the steps") if self.has(4) else None
        b, e, s = fold.slice_params(shape, starts, ends, axes, steps)
        self.out(0, self.slice(self.inp(0), b, e, s))

    def op_Split(self, n):
        shape = self.shape(self.inp(0))
        axis = int(self.attr("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        if "split" in n.attrs:
            sizes = list(self.attr("split"))
        elif self.has(1):
            sizes = self.ints(1, "the split sizes")
        else:
            k = len(n.outputs)
            sizes = [-(-shape[axis] // k)] * (k - 1)
            sizes.append(shape[axis] - sum(sizes))
        start = 0
        for k, size in enumerate(sizes):
            begin, end = [0] * len(shape), list(shape)
            begin[axis], end[axis] = start, start + size
            start += size
            self.out(k, self.slice(self.inp(0), begin, end, [1] * len(shape)))

    def op_Gather(self, n):
        shape = self.shape(self.inp(0))
        idx = self.value(1, "the indices").astype(np.int64)
        axis = int(self.attr("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        flat = [int(i) + shape[axis] if i < 0 else int(i) for i in idx.reshape(-1)]
        parts = []
        for i in flat:
            begin, end = [0] * len(shape), list(shape)
            begin[axis], end[axis] = i, i + 1
            parts.append(self.slice(self.inp(0), begin, end, [1] * len(shape)))
        res = self.concat(parts, axis)
        out_shape = shape[:axis] + tuple(idx.shape) + shape[axis + 1:]
        self.out(0, self.reshape(res, out_shape) if res.shape != out_shape else res)

    def op_Expand(self, n):
        target = self.ints(1, "the shape")
        shape = np.broadcast_shapes(self.shape(self.inp(0)), tuple(target))
        self.out(0, self.binary(self.inp(0), self.const(np.ones(shape, F32)), "mul"))

    def op_Pad(self, n):
        shape = self.shape(self.inp(0))
        rank = len(shape)
        if self.f.opset < 11:
            pads, value = list(self.attr("pads")), float(self.attr("value", 0.0))
        else:
            pads = self.ints(1, "the pads")
            value = float(self.value(2, "the pad value").reshape(-1)[0]) if self.has(2) else 0.0
        axes = list(range(rank))
        if self.has(3):
            axes = [a + rank if a < 0 else a for a in self.ints(3, "the axes")]
        full = [(0, 0)] * rank
        for i, a in enumerate(axes):
            full[a] = (int(pads[i]), int(pads[i + len(axes)]))
        mode = self.attr("mode", "constant")
        if mode == "constant":
            self.out(0, self.node("pad", [self.inp(0)], paddings=full, pad_value=value).output)
            return
        if mode not in ("reflect", "edge"):
            raise self.unsupported(f"Pad mode {mode!r} is not supported (constant, reflect and edge are)")
        if any(b < 0 or a < 0 for b, a in full):
            raise self.unsupported("negative pads with mode reflect/edge are not supported")
        x = self.inp(0)
        for ax, (b, a) in enumerate(full):
            x = self.pad_axis(x, ax, b, a, mode)
        self.out(0, x)

def graph_operators() -> list[str]:
    """ONNX operators imported as graph nodes."""
    return sorted(["Constant"] + [name[3:] for name in dir(_Importer) if name.startswith("op_")])


def fold_only_operators() -> list[str]:
    return sorted({"Shape", "Size", "ConstantOfShape", "Range", "Tile", "Where", "Equal", "Less", "Greater", "And",
                   "Or", "Not", "ReduceProd", "CastLike"})


def supported_operators() -> list[str]:
    return sorted(set(graph_operators()) | set(fold_only_operators()))
