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
* Resize ``half_pixel`` and the other coordinate modes and nearest modes (:mod:`.resize`; ncc: asymmetric);
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
from ...ir.ops import FLT_MAX, FULL_RANGE, infer_shapes, normalize_strided_slice, opdef, windowed_padding
from . import fold, resize
from .reader import Node, OnnxFile, read_onnx

F32 = np.float32


def import_onnx(src) -> Graph:
    """Import an .onnx path (or an :class:`OnnxFile`) into an HLIR :class:`Graph`."""
    f = src if isinstance(src, OnnxFile) else read_onnx(src)
    return _Importer(f).run()


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _shape(a) -> tuple:
    s = tuple(np.shape(a))
    return s if s else (1,)


class _Importer:
    FULL_RANGE = FULL_RANGE

    def __init__(self, f: OnnxFile):
        self.f = f
        self.g = Graph()
        self.g.source = {}
        self.pending: list[tuple[InputConnector, str]] = []
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
        raise FormatError(f"{self.where()}: tensor '{name}' is read before it is produced (graph not sorted?)")

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

    def node(self, op: str, inputs, out_shapes=None, **attrs):
        """Create a node; ``inputs`` items are OutputConnectors or tensor names (connected at the end)."""
        names = [self.resolve(i) if isinstance(i, str) else i for i in inputs]
        shapes = [i.shape if isinstance(i, OutputConnector) else self.shape(i) for i in names]
        if out_shapes is None:
            try:
                out_shapes = infer_shapes(op, attrs, shapes)
            except (ValueError, IndexError, KeyError, ZeroDivisionError) as e:
                raise self.unsupported(_first_line(e)) from None
        n = self.g.add(op, [], out_shapes, None, memory=opdef(op).memory, **attrs)
        for k, (src, shape) in enumerate(zip(names, shapes)):
            ic = InputConnector(n, k, shape, "float32")
            n.inputs.append(ic)
            if isinstance(src, OutputConnector):
                self.connect(ic, src)
            else:
                self.pending.append((ic, src))
        if self.n is not None:
            self.g.source[n] = (self.n.index, self.n.op_type, self.n.outputs[0] if self.n.outputs else "")
        return n

    def connect(self, ic: InputConnector, out: OutputConnector) -> None:
        try:
            ic.connect(out)
        except ValueError as e:
            where = self.where() if self.n is not None else self.f.path
            raise UnsupportedError(f"{where}: {_first_line(e)}") from None

    def const(self, value) -> OutputConnector:
        data = np.asarray(value, F32)
        if data.ndim == 0:
            data = data.reshape(1)
        return self.node("constant", [], data=np.ascontiguousarray(data)).output

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

    def edge_pad(self, x, shape, pad_h, pad_w) -> OutputConnector:
        """Replicate the border rows/columns of NCHW ``x`` (ONNX Pad mode=edge on H and W)."""
        for ax, (b, a) in ((2, pad_h), (3, pad_w)):
            x = self.pad_axis(x, ax, b, a, "edge")
        return x

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
                raise self.unsupported(f"cannot import this node ({type(e).__name__}: {_first_line(e)}); "
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
                    raise self.unsupported(f"cannot fold this constant node ({_first_line(e)})") from None
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

    # ------------------------------------------------------------ convolutions
    def conv_window(self, in_hw, kernel, transpose: bool = False):
        """(strides, dilations, (pad_h, pad_w)) of a Conv/pool node (ONNX pads order, auto_pad)."""
        strides = list(self.attr("strides", [1, 1]))
        dil = list(self.attr("dilations", [1, 1]))
        auto = self.attr("auto_pad", "NOTSET")
        pads = []
        for ax in range(2):
            if auto in ("SAME_UPPER", "SAME_LOWER") and not transpose:
                b, a = windowed_padding(in_hw[ax], kernel[ax], strides[ax], dil[ax], True)
                pads.append((a, b) if auto == "SAME_LOWER" else (b, a))
            elif auto == "VALID":
                pads.append((0, 0))
            else:
                p = list(self.attr("pads", [0, 0, 0, 0]))
                pads.append((int(p[ax]), int(p[ax + 2])))
        return [int(s) for s in strides], [int(d) for d in dil], pads

    def check_4d(self, what: str = "input") -> tuple:
        s = self.shape(self.inp(0))
        if len(s) != 4:
            raise self.unsupported(f"the {what} is {len(s)}-D {list(s)}; only 2-D images (NCHW) are supported")
        return s

    def op_Conv(self, n):
        xs = self.check_4d()
        w = self.fvalue(1, "the weights")
        if w.ndim != 4:
            raise self.unsupported(f"weights of shape {list(w.shape)}; only 2-D convolutions are supported")
        bias = self.fvalue(2, "the bias").reshape(-1) if self.has(2) else np.zeros(w.shape[0], F32)
        strides, dil, (ph, pw) = self.conv_window(xs[2:], w.shape[2:])
        conv = self.node("conv2d", [self.inp(0)], weights=w, bias=bias, groups=int(self.attr("group", 1)),
                         padding_h=ph, padding_w=pw, stride_h=strides[0], stride_w=strides[1], dilation_h=dil[0],
                         dilation_w=dil[1], fused_activation=FULL_RANGE)
        self.out(0, conv.output)

    def op_ConvTranspose(self, n):
        xs = self.check_4d()
        w = self.fvalue(1, "the weights")  # [C_in, C_out/group, kh, kw]
        g = int(self.attr("group", 1))
        cg = w.shape[0] // g
        weights = np.concatenate([w[i * cg:(i + 1) * cg].transpose(1, 0, 2, 3) for i in range(g)], axis=0)
        oc = weights.shape[0]
        strides, dil, pads = self.conv_window(xs[2:], w.shape[2:], transpose=True)
        opad = list(self.attr("output_padding", [0, 0]))
        auto = self.attr("auto_pad", "NOTSET")
        out_hw = []
        for ax in range(2):
            eff = (w.shape[2 + ax] - 1) * dil[ax] + 1
            full = strides[ax] * (xs[2 + ax] - 1) + int(opad[ax]) + eff
            if self.attr("output_shape") is not None:
                o = int(list(self.attr("output_shape"))[-2 + ax])
            elif auto in ("SAME_UPPER", "SAME_LOWER"):
                o = xs[2 + ax] * strides[ax]
            else:
                out_hw.append(full - pads[ax][0] - pads[ax][1])
                continue
            total = max(0, full - o)
            pads[ax] = (total // 2, total - total // 2) if auto == "SAME_UPPER" else (total - total // 2, total // 2)
            out_hw.append(o)
        conv = self.node("conv2d_transpose", [self.inp(0)], output_shape=(xs[0], oc, out_hw[0], out_hw[1]),
                         weights=np.ascontiguousarray(weights), bias=np.zeros(oc, F32), groups=g, padding_h=pads[0],
                         padding_w=pads[1], stride_h=strides[0], stride_w=strides[1], dilation_h=dil[0],
                         dilation_w=dil[1], fused_activation=FULL_RANGE)
        res = conv.output
        if self.has(2):  # ncc never adds a transpose conv's bias (D1 for TFLite)
            bias = self.fvalue(2, "the bias").reshape(oc, 1, 1)
            if np.any(bias != 0):
                res = self.binary(res, self.const(bias), "add")
        self.out(0, res)

    def op_BatchNormalization(self, n):
        if any(self.used(k) for k in range(1, len(n.outputs))) or int(self.attr("training_mode", 0)):
            raise self.unsupported("BatchNormalization in training mode is not supported; export the model in "
                                   "eval mode (model.eval())")
        scale, beta, mean, var = (self.fvalue(k, what).reshape(-1) for k, what in
                                  ((1, "the scale"), (2, "the bias"), (3, "the mean"), (4, "the variance")))
        s = (scale / np.sqrt(var + F32(self.attr("epsilon", 1e-5)))).astype(F32)
        t = (beta - mean * s).astype(F32)
        x = self.inp(0)
        src = self.produced.get(x)
        if src is not None and src.node.op == "conv2d" and len(self.consumers.get(x, [])) == 1 and \
                x not in self.graph_outputs:  # fold into the conv before it
            c = src.node
            c.attrs["weights"] = np.ascontiguousarray(c["weights"] * s.reshape(-1, 1, 1, 1), F32)
            c.attrs["bias"] = np.ascontiguousarray(c["bias"] * s + t, F32)
            self.out(0, src)
            return
        rank = len(self.shape(x))
        cs = (-1,) + (1,) * (rank - 2)
        self.out(0, self.binary(self.binary(x, self.const(s.reshape(cs)), "mul"), self.const(t.reshape(cs)), "add"))

    # ------------------------------------------------------------ dense
    def op_MatMul(self, n):
        a, b = self.inp(0), self.inp(1)
        sa, sb = self.shape(a), self.shape(b)
        if len(sb) != 2 or len(sa) < 2:
            raise self.unsupported(f"MatMul of {list(sa)} by {list(sb)}: only a matrix right operand is supported")
        if len(sa) == 2:  # ncc: matmul with a zero bias, both operands wired by name
            self.out(0, self.node("matmul", [a, b], bias=np.zeros(sb[1], F32), fused_activation=FULL_RANGE).output)
            return
        flat = self.reshape(a, (-1, sa[-1]))
        mm = self.node("matmul", [flat, b], bias=np.zeros(sb[1], F32), fused_activation=FULL_RANGE).output
        self.out(0, self.reshape(mm, sa[:-1] + (sb[1],)))

    def op_Gemm(self, n):
        a = self.inp(0)
        if len(self.shape(a)) != 2:
            raise self.unsupported(f"Gemm input of shape {list(self.shape(a))} (must be 2-D)")
        if int(self.attr("transA", 0)):
            a = self.node("transpose", [a], perm=(1, 0)).output
        b = self.fvalue(1, "the weights")
        if int(self.attr("transB", 0)):
            b = b.T
        alpha, beta = F32(self.attr("alpha", 1.0)), F32(self.attr("beta", 1.0))
        if alpha != 1:
            b = b * alpha
        n_out = b.shape[1]
        bias, extra = np.zeros(n_out, F32), None
        if self.has(2) and self.inp(2) not in self.static:  # a computed C: added after the product
            c = self.inp(2) if beta == 1 else self.binary(self.inp(2), self.const(beta), "mul")
            mm = self.node("matmul", [a, self.const(np.ascontiguousarray(b))], bias=bias, fused_activation=FULL_RANGE)
            self.out(0, self.binary(mm.output, c, "add"))
            return
        if self.has(2):
            c = self.fvalue(2, "the bias C") * beta
            if c.size in (1, n_out) and (c.ndim <= 1 or c.shape[0] == 1):
                bias = np.ascontiguousarray(np.broadcast_to(c.reshape(-1), (n_out,)), F32)
            else:
                extra = c
        mm = self.node("matmul", [a, self.const(np.ascontiguousarray(b))], bias=bias, fused_activation=FULL_RANGE)
        res = mm.output
        if extra is not None:
            res = self.binary(res, self.const(extra), "add")
        self.out(0, res)

    # ------------------------------------------------------------ pools
    def _pool(self, n, reduce_op: str):
        xs = self.check_4d()
        if self.used(1):
            raise self.unsupported("the MaxPool indices output is not supported")
        k = [int(v) for v in self.attr("kernel_shape")]
        if len(k) != 2:
            raise self.unsupported(f"kernel_shape {k}: only 2-D pools are supported")
        strides, dil, pads = self.conv_window(xs[2:], k)
        ceil = bool(self.attr("ceil_mode", 0))
        win = []  # (before, after) with ceil_mode's extra positions after (not counted by the mean)
        for ax in range(2):
            eff = (k[ax] - 1) * dil[ax] + 1
            span = xs[2 + ax] + pads[ax][0] + pads[ax][1] - eff
            out = (-(-span // strides[ax]) if ceil else span // strides[ax]) + 1
            if ceil and (out - 1) * strides[ax] >= xs[2 + ax] + pads[ax][0]:
                out -= 1  # the last window would start in the end padding
            extra = max(0, (out - 1) * strides[ax] + eff - (xs[2 + ax] + pads[ax][0] + pads[ax][1]))
            win.append((pads[ax][0], pads[ax][1] + extra))
        x = self.inp(0)
        if reduce_op == "mean" and int(self.attr("count_include_pad", 0)) and any(sum(p) for p in pads):
            x = self.node("pad", [x], paddings=[(0, 0), (0, 0), pads[0], pads[1]], pad_value=0.0).output
            win = [(0, w[1] - p[1]) for w, p in zip(win, pads)]
        node = self.node("reduce_window2d", [x], reduce_op=reduce_op, init_value=-FLT_MAX if reduce_op == "max" else 0.0,
                         filter_h=k[0], filter_w=k[1], padding_h=win[0], padding_w=win[1], stride_h=strides[0],
                         stride_w=strides[1], dilation_h=dil[0], dilation_w=dil[1], fused_activation=FULL_RANGE)
        self.out(0, node.output)

    def op_MaxPool(self, n):
        self._pool(n, "max")

    def op_AveragePool(self, n):
        self._pool(n, "mean")

    def _global(self, reduce_op, init):
        rank = len(self.shape(self.inp(0)))
        self.out(0, self.node("reduce", [self.inp(0)], reduce_op=reduce_op, axis=tuple(range(2, rank)),
                              init_value=init, keep_dims=True).output)

    def op_GlobalAveragePool(self, n):
        self._global("mean", 0.0)

    def op_GlobalMaxPool(self, n):
        self._global("max", -FLT_MAX)

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

    # ------------------------------------------------------------ resizes
    def op_Resize(self, n):
        shape = self.check_4d()
        scales = sizes = None
        if self.f.opset < 11 or len(n.inputs) == 2:  # Resize-10: X, scales
            scales = self.value(1, "the scales").astype(F32).reshape(-1)
            ctm = "asymmetric"
            nearest_mode = "simple"
        else:
            if self.has(3):
                sizes = self.ints(3, "the sizes")
            elif self.has(2):
                scales = self.value(2, "the scales").astype(F32).reshape(-1)
            ctm = self.attr("coordinate_transformation_mode", "half_pixel")
            nearest_mode = self.attr("nearest_mode", "round_prefer_floor")
            if int(self.attr("antialias", 0)):
                raise self.unsupported("antialiased Resize is not supported")
            if self.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
                raise self.unsupported("keep_aspect_ratio_policy other than 'stretch' is not supported")
        axes = list(self.attr("axes", range(4)))
        full_scales, full_sizes = [F32(1)] * 4, list(shape)
        for i, a in enumerate(axes):
            a = a + 4 if a < 0 else a
            if sizes is not None:
                full_sizes[a] = sizes[i]
                full_scales[a] = F32(sizes[i]) / F32(shape[a])
            elif scales is not None and scales.size:
                full_scales[a] = scales[i]
                full_sizes[a] = int(np.floor(F32(shape[a]) * scales[i]))
            else:
                raise self.unsupported("Resize needs scales or sizes")
        self._resize(shape, full_sizes, full_scales, self.attr("mode", "nearest"), ctm, nearest_mode)

    def _resize(self, shape, sizes, scales, mode, ctm, nearest_mode):
        if tuple(sizes[:2]) != tuple(shape[:2]):
            raise self.unsupported(f"resizing the batch or channel axis ({list(shape)} -> {list(sizes)}) is not "
                                   "supported")
        mode = {"bilinear": "linear"}.get(mode, mode)
        self.out(0, resize.build(self, self.inp(0), shape, sizes[2:], scales[2:], mode, ctm, nearest_mode))

    def op_Upsample(self, n):
        shape = self.check_4d()
        scales = [F32(v) for v in (self.attr("scales") if "scales" in n.attrs else
                                   self.value(1, "the scales").reshape(-1))]
        sizes = [int(np.floor(F32(d) * s)) for d, s in zip(shape, scales)]
        self._resize(shape, sizes, scales, self.attr("mode", "nearest"), "asymmetric", "simple")


def graph_operators() -> list[str]:
    """ONNX operators imported as graph nodes."""
    return sorted(["Constant"] + [name[3:] for name in dir(_Importer) if name.startswith("op_")])


def fold_only_operators() -> list[str]:
    return sorted({"Shape", "Size", "ConstantOfShape", "Range", "Tile", "Where", "Equal", "Less", "Greater", "And",
                   "Or", "Not", "ReduceProd", "CastLike"})


def supported_operators() -> list[str]:
    return sorted(set(graph_operators()) | set(fold_only_operators()))
