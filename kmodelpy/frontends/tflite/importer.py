"""TFLite → HLIR graph, built exactly as ncc v0.2's importer builds it (compiler spec §4), plus the
operators K210 users hit and ncc refused.

Node creation order is ncc's: every operator in file order (its nodes in ncc's emplace order),
then the graph-input nodes (+ NCHW→NHWC transpose for 4-D inputs), then the graph-output nodes
(NHWC→NCHW transpose + output node for 4-D outputs), then the ``constant`` nodes for constant
tensors used as node inputs (one node per tensor, shared by its consumers). Internal connections
are made while an operator is converted; tensor connections afterwards, in the order the
connectors were created (ncc iterates a hash map here; its order is not reproducible, see
compiler spec §15.4). Op nodes are unnamed (``assign_names`` names them); input/output nodes carry
their tensor names. ``graph.source`` maps a node to ``(op index, builtin, output tensor name)``.

Beyond ncc:
* int8 weights (dynamic-range models) are dequantized **per channel** (ncc uses scale[0] only),
  for CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED; ``graph.conv_origins`` maps
  each CONV_2D/DEPTHWISE_CONV_2D node to a :class:`~kmodelpy.frontends.tflite.hybrid.ConvOrigin` (its kind, and
  for per-channel int8 weights the raw weights and scales), which the float reference uses to
  evaluate dynamic-range models like TFLite does (:mod:`kmodelpy.frontends.tflite.hybrid`);
* DEQUANTIZE (fp16 / int8 constants), CAST, SHAPE and the constant sub-graphs TF2 converters emit
  (SHAPE → STRIDED_SLICE → PACK → RESHAPE ...) are folded at import;
* PRELU = max(x,0) + α·min(x,0); TANH = (1−t)/(1+t) with t = exp(−2·max(x,−10)) (also as a fused
  activation); HARD_SWISH = x·min(max(x+3, 0), 6)/6; SPLIT/SPLIT_V/UNPACK = strided slices (+ reshape);
  SQUEEZE/EXPAND_DIMS = reshape; PACK = reshapes + concat; SQUARE = unary square;
  SQUARED_DIFFERENCE = (a−b)·(a−b); ADD_N = chained adds; PADV2 (pad value); RELU_0_TO_1 = clamp;
  DEPTHWISE_CONV_2D with depth_multiplier > 1 (groups = C); RESHAPE without a shape tensor;
  declared outputs that are also consumed inside the graph; DEPTH_TO_SPACE (reshape + transpose + reshape);
  MediaPipe's custom ``Convolution2DTransposeBias`` (a TRANSPOSE_CONV with its bias).
* RESIZE_* with ``half_pixel_centers`` or a nearest-neighbour ``align_corners`` (ncc silently ignores both): the
  ``resize`` node carries TFLite's sampling (:mod:`kmodelpy.ir.resample`), which the compiler lowers onto
  kmodel v4 ops (ncc's own ResizeImage wherever its sampling is the same).
* Refused with one line: fully int8/uint8-quantized models (export a float model:
  ``converter.optimizations = []`` and no representative dataset), unsupported operators (listing
  the supported ones), dynamic input shapes (see :mod:`kmodelpy.frontends.tflite.reader`).
"""
from __future__ import annotations

import numpy as np

from ...errors import FormatError, KmodelpyError, UnsupportedError
from .reader import Operator, TFLiteFile, read_tflite
from ...ir.graph import Graph, InputConnector, OutputConnector
from ..builder import GraphBuilder, first_line
from .hybrid import ConvOrigin
from ...ir.ops import FLT_MAX, FULL_RANGE, normalize_strided_slice, windowed_padding
from ...ir import resample
from . import fold

MAX_WINDOW = 4096  # largest kernel extent, stride or dilation accepted (beyond any real model)

ACTIVATIONS = {"NONE": FULL_RANGE, "RELU": (0.0, FLT_MAX), "RELU_N1_TO_1": (-1.0, 1.0), "RELU6": (0.0, 6.0)}

EXPORT_FLOAT_HINT = ("export a float32 model instead (converter.optimizations = [], no representative_dataset, "
                     "no inference_input_type/inference_output_type)")


def import_tflite(src, ncc_exact: bool = False) -> Graph:
    """Import a .tflite path (or a :class:`TFLiteFile`) into an HLIR :class:`Graph`.

    ``ncc_exact=True`` reproduces ncc's graph even where ncc computes the wrong thing: the
    TRANSPOSE_CONV bias is dropped (by default it is added after the op as a ``binary add`` with a
    [C] constant, because ncc's conv2d_transpose kernel never adds its bias) and L2_NORMALIZATION
    reduces over every non-batch axis (by default: the last axis, as TFLite)."""
    tfl = src if isinstance(src, TFLiteFile) else read_tflite(src)
    return _Importer(tfl, ncc_exact).run()


def _shape(t) -> tuple:
    return tuple(t.shape) if len(t.shape) else (1,)


class _Importer(GraphBuilder):
    def __init__(self, tfl: TFLiteFile, ncc_exact: bool = False):
        super().__init__()
        self.tfl = tfl
        self.ncc_exact = ncc_exact
        self.g.conv_origins = {}  # conv2d node -> hybrid.ConvOrigin (TFLite's arithmetic, float reference only)
        self.g.composites = []  # (TFLite op, [(node, chain input), ...]): ops built of several nodes (float reference)
        self.produced: dict[int, OutputConnector] = {}
        self.static: dict[int, np.ndarray] = {}
        self.op: Operator | None = None
        for t in tfl.tensors:
            if t.data is not None:
                self.static[t.index] = t.data

    # ------------------------------------------------------------ helpers
    def where(self) -> str:
        op = self.op
        out = self.tfl.tensors[op.outputs[0]].name if op.outputs and op.outputs[0] >= 0 else "?"
        return f"{self.tfl.path}: operator #{op.index} {op.builtin} (output '{out}')"

    def tensor(self, k: int):
        idx = self.op.inputs[k] if k < len(self.op.inputs) else -1
        if idx < 0:
            raise UnsupportedError(f"{self.where()}: input #{k} is missing; re-export the model with it")
        return self.tfl.tensors[idx]

    def value(self, k: int, what: str) -> np.ndarray:
        t = self.tensor(k)
        if t.index not in self.static:
            raise UnsupportedError(f"{self.where()}: {what} (tensor '{t.name}') must be a constant")
        return self.static[t.index]

    def float_value(self, k: int, what: str) -> np.ndarray:
        t = self.tensor(k)
        if t.index not in self.static:
            raise UnsupportedError(f"{self.where()}: {what} (tensor '{t.name}') must be a constant")
        return fold.to_float(t, self.static[t.index])

    # GraphBuilder hooks
    def tensor_shape(self, key) -> tuple:
        return _shape(self.tfl.tensors[key])

    def location(self) -> str:
        return self.where() if self.op is not None else self.tfl.path

    def source_entry(self):
        if self.op is None:
            return None
        out = self.op.outputs[0] if self.op.outputs else -1
        return (self.op.index, self.op.builtin, self.tfl.tensors[out].name if out >= 0 else "")

    def out(self, k: int, oc: OutputConnector) -> None:
        self.produced[self.op.outputs[k]] = oc

    def to_nchw(self, src):
        return self.node("transpose", [src], perm=(0, 3, 1, 2))

    def to_nhwc(self, src: OutputConnector):
        return self.node("transpose", [src], perm=(0, 2, 3, 1))

    def activation(self, name: str):
        """(range for the op, post-op builder or None)."""
        if name in ACTIVATIONS:
            return ACTIVATIONS[name], None
        if name == "TANH":
            return FULL_RANGE, self.tanh
        raise UnsupportedError(f"{self.where()}: fused activation {name} is not supported; use NONE, RELU, "
                               "RELU6, RELU_N1_TO_1 or TANH")

    def finish(self, oc: OutputConnector, post) -> OutputConnector:
        return post(oc) if post is not None else oc

    # ------------------------------------------------------------ composite activations
    def tanh(self, x):
        """tanh(x) = (1 − t)/(1 + t), t = exp(−2·max(x, −10)): binary/unary ops only."""
        lo = self.node("binary", [x, self.const(-10.0)], binary_op="max", fused_activation=FULL_RANGE)
        m2 = self.node("binary", [lo.output, self.const(-2.0)], binary_op="mul", fused_activation=FULL_RANGE)
        t = self.node("unary", [m2.output], unary_op="exp")
        one = self.const(1.0)
        num = self.node("binary", [one, t.output], binary_op="sub", fused_activation=FULL_RANGE)
        den = self.node("binary", [one, t.output], binary_op="add", fused_activation=FULL_RANGE)
        return self.node("binary", [num.output, den.output], binary_op="div", fused_activation=FULL_RANGE).output

    # ------------------------------------------------------------ driver
    def run(self) -> Graph:
        tfl = self.tfl
        if not tfl.inputs:
            raise FormatError(f"{tfl.path}: the model declares no input tensor; re-export or re-download it")
        for v in tfl.inputs:
            t = tfl.tensors[v]
            if t.dtype in ("INT8", "UINT8", "INT16"):
                raise UnsupportedError(f"{tfl.path}: input tensor '{t.name}' is {t.dtype}: fully quantized models "
                                       f"are not supported; {EXPORT_FLOAT_HINT}")
            if t.dtype != "FLOAT32":
                raise UnsupportedError(f"{tfl.path}: input tensor '{t.name}' is {t.dtype}; only FLOAT32 inputs are "
                                       "supported")
        for op in tfl.operators:
            self.op = op
            if fold.can_fold(op, self.static, tfl):
                try:
                    vals = fold.fold(op, tfl, self.static)
                except KmodelpyError:
                    raise
                except Exception as e:  # noqa: BLE001 - report the operator, not a traceback
                    raise UnsupportedError(f"{self.where()}: cannot fold this constant operator "
                                           f"({first_line(e)})") from None
                for t, v in zip(op.outputs, vals):
                    self.static[t] = v
                continue
            self.check_float(op)
            custom = op.builtin[len("CUSTOM:"):] if op.builtin.startswith("CUSTOM:") else None
            handler = getattr(self, "op_" + op.builtin if custom is None else "custom_" + custom, None)
            if handler is None and custom is not None:
                raise UnsupportedError(f"{self.where()}: custom operator '{custom}' is not supported (it is not a "
                                       f"TFLite builtin; kmodelpy knows only the custom {', '.join(custom_operators())}): "
                                       "export the model without it, or cut the graph before it")
            if handler is None:
                raise UnsupportedError(f"{self.where()}: operator {op.builtin} is not supported; supported: "
                                       f"{', '.join(graph_operators())} (and on constants only: "
                                       f"{', '.join(sorted(set(fold.FOLD_ONLY) - set(graph_operators())))})")
            try:
                handler(op)
                self.check_outputs(op)
            except KmodelpyError:
                raise
            except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError, OverflowError) as e:
                raise UnsupportedError(f"{self.where()}: cannot import this operator ({type(e).__name__}: "
                                       f"{first_line(e)}); check the model") from None
        self.op = None
        try:
            self.make_io()
        except KmodelpyError:
            raise
        except (ValueError, IndexError, KeyError, TypeError, OverflowError) as e:
            raise FormatError(f"{self.tfl.path}: inconsistent graph inputs/outputs ({type(e).__name__}: "
                              f"{first_line(e)})") from None
        return self.g

    def check_window(self, fh, fw, sh, sw, dh, dw) -> None:
        """Kernel sizes, strides and dilations between 1 and MAX_WINDOW (a corrupted option would otherwise ask for
        gigabytes of padding)."""
        for what, v in (("filter height", fh), ("filter width", fw), ("stride_h", sh), ("stride_w", sw),
                        ("dilation_h", dh), ("dilation_w", dw)):
            if not 1 <= v <= MAX_WINDOW:
                raise FormatError(f"{self.where()}: {what} {v} is outside 1..{MAX_WINDOW} (a corrupted file?); "
                                  "re-export or re-download the model")
        if max((fh - 1) * dh, (fw - 1) * dw) >= MAX_WINDOW:
            raise FormatError(f"{self.where()}: the dilated {fh}x{fw} filter spans more than {MAX_WINDOW} pixels "
                              f"(dilation {dh}x{dw}; a corrupted file?); re-export or re-download the model")

    def check_outputs(self, op: Operator) -> None:
        """Each output the operator produced has the shape the file declares for its tensor: a corrupted file
        whose shapes contradict each other stops here, in one line, rather than in a kernel."""
        for k, idx in enumerate(op.outputs):
            t = self.tfl.tensors[idx] if idx >= 0 else None
            oc = self.produced.get(idx)
            if t is None or oc is None or not t.shape or min(t.shape) < 1:
                continue
            if tuple(oc.shape) != _shape(t):
                raise FormatError(f"{self.where()}: the inputs make a {list(oc.shape)} output but the file declares "
                                  f"tensor '{t.name}' as {list(t.shape)}: the tensor shapes contradict each other "
                                  "(a corrupted file?); re-export or re-download the model")

    def check_float(self, op: Operator) -> None:
        for idx in list(op.inputs) + list(op.outputs):
            if idx < 0 or idx in self.static:
                continue
            t = self.tfl.tensors[idx]
            if t.dtype in ("INT8", "UINT8", "INT16"):
                raise UnsupportedError(f"{self.where()}: tensor '{t.name}' is {t.dtype}: fully quantized models are "
                                       f"not supported; {EXPORT_FLOAT_HINT}")

    def make_io(self) -> None:
        tfl, g = self.tfl, self.g
        created_inputs: dict[int, OutputConnector] = {}
        for v in tfl.inputs:
            t = tfl.tensors[v]
            shape = _shape(t)
            if len(shape) == 4:
                n = g.add("input", [], [(shape[0], shape[3], shape[1], shape[2])], name=t.name)
                tr = self.node("transpose", [n.output], perm=(0, 2, 3, 1))
                created_inputs[v] = tr.output
            else:
                n = g.add("input", [], [shape], name=t.name)
                created_inputs[v] = n.output
        created_outputs: list[tuple[int, InputConnector]] = []  # a tensor may be declared as output twice
        for v in tfl.outputs:
            t = tfl.tensors[v]
            shape = _shape(t)
            if len(shape) == 4:
                pre = self.node("transpose", [], out_shapes=[(shape[0], shape[3], shape[1], shape[2])], perm=(0, 3, 1, 2))
                ic = InputConnector(pre, 0, shape, "float32")
                pre.inputs.append(ic)
                n = g.add("output", [pre.output], [], name=t.name)
                created_outputs.append((v, ic))
            else:
                n = g.add("output", [], [], name=t.name)
                ic = InputConnector(n, 0, shape, "float32")
                n.inputs.append(ic)
                created_outputs.append((v, ic))
        # constants, then graph inputs (ncc's two loops over the pending connections)
        consts: dict[int, OutputConnector] = {}
        for ic, v in self.pending:
            if v in self.produced:
                self.connect(ic, self.produced[v])
            elif v in self.static:
                if v not in consts:
                    data = fold.to_float(tfl.tensors[v], self.static[v])
                    data = data.reshape(_shape(tfl.tensors[v])) if data.size == int(np.prod(_shape(tfl.tensors[v]))) else data
                    consts[v] = self.node("constant", [], data=np.ascontiguousarray(data, np.float32)).output
                self.connect(ic, consts[v])
        for ic, v in self.pending:
            if ic.producer is None:
                if v not in created_inputs:
                    t = tfl.tensors[v]
                    raise FormatError(f"{tfl.path}: tensor '{t.name}' is read by an operator but is neither produced, "
                                      "constant nor a graph input")
                self.connect(ic, created_inputs[v])
        for v, ic in created_outputs:
            src = self.produced.get(v) or created_inputs.get(v)
            if src is None and v in self.static:
                src = self.const(fold.to_float(tfl.tensors[v], self.static[v]))
            if src is None:
                raise FormatError(f"{tfl.path}: output tensor '{tfl.tensors[v].name}' is not produced by any operator")
            self.connect(ic, src)

    # ------------------------------------------------------------ convolutions
    def _weights(self, k: int) -> np.ndarray:
        return self.float_value(k, "the weights")

    def _bias(self, k: int, n: int) -> np.ndarray:
        if k >= len(self.op.inputs) or self.op.inputs[k] < 0:
            return np.zeros(n, np.float32)  # ncc crashes on a missing bias; zeros is what TFLite means
        return self.float_value(k, "the bias").reshape(n).astype(np.float32)

    def _origin(self, kind: str, weights: np.ndarray, perm) -> ConvOrigin:
        """Where a conv2d node came from; int8 weights with one scale per output channel (a
        dynamic-range model) keep their raw values and scales for the hybrid evaluation."""
        t = self.tensor(1)
        raw = self.static.get(t.index)
        q = t.quantization
        n_oc = weights.shape[0]
        if (t.dtype != "INT8" or q is None or raw is None or np.asarray(raw).dtype != np.int8
                or np.any(np.asarray(q.zero_points) != 0)):
            return ConvOrigin(kind)
        scales = np.asarray(q.scales, np.float32).reshape(-1)
        axis = 0 if kind == "conv" else 3
        if scales.size != n_oc or (n_oc > 1 and q.quantized_dimension != axis):
            return ConvOrigin(kind)
        wq = np.ascontiguousarray(np.asarray(raw).reshape(_shape(t)).transpose(perm))
        return ConvOrigin(kind, wq.reshape(weights.shape), scales)

    def _conv(self, op, weights, groups, o, origin: ConvOrigin | None = None):
        x = self.tensor(0)
        if len(_shape(x)) != 4 or weights.ndim != 4:
            raise FormatError(f"{self.where()}: input '{x.name}' {list(_shape(x))} and weights {list(weights.shape)} "
                              "must both be 4-D (NHWC / OHWI); re-export or re-download the model")
        n, h, w, c = _shape(x)
        if weights.shape[1] * groups != c or weights.shape[0] % groups:
            raise FormatError(f"{self.where()}: input '{x.name}' has {c} channels but the filter "
                              f"{list(weights.shape)} (OIHW) expects {weights.shape[1] * groups}: the tensor shapes "
                              "contradict each other (a corrupted file, or a grouped convolution, which kmodelpy "
                              "does not support); re-export or re-download the model")
        fh, fw = weights.shape[2], weights.shape[3]
        same = o.get("padding", "SAME") == "SAME"
        dh, dw = int(o.get("dilation_h", 1)), int(o.get("dilation_w", 1))
        sh, sw = int(o["stride_h"]), int(o["stride_w"])
        self.check_window(fh, fw, sh, sw, dh, dw)
        act, post = self.activation(o.get("fused_activation", "NONE"))
        bias = self._bias(2, weights.shape[0])
        pre = self.to_nchw(op.inputs[0])
        conv = self.node("conv2d", [pre.output], weights=np.ascontiguousarray(weights, np.float32), bias=bias,
                         groups=groups, padding_h=windowed_padding(h, fh, sh, dh, same),
                         padding_w=windowed_padding(w, fw, sw, dw, same), stride_h=sh, stride_w=sw,
                         dilation_h=dh, dilation_w=dw, fused_activation=act)
        if origin is not None:
            self.g.conv_origins[conv] = origin
        sur = self.to_nhwc(conv.output)
        self.out(0, self.finish(sur.output, post))

    def op_CONV_2D(self, op):
        w = self._weights(1).transpose(0, 3, 1, 2)
        self._conv(op, w, 1, op.options, self._origin("conv", w, (0, 3, 1, 2)))

    def op_DEPTHWISE_CONV_2D(self, op):
        w = self._weights(1).transpose(3, 0, 1, 2)
        groups = w.shape[0]
        c = _shape(self.tensor(0))[3]
        mult = int(op.options.get("depth_multiplier", 1) or 1)
        origin = self._origin("depthwise", w, (3, 0, 1, 2))
        if c == 1 and mult == groups:
            self._conv(op, w, 1, op.options, origin)
        else:
            self._conv(op, w, c, op.options, origin)

    def op_TRANSPOSE_CONV(self, op):
        oshape = [int(v) for v in self.value(0, "the output shape")]
        out_shape = (oshape[0], oshape[3], oshape[1], oshape[2])
        w = self._weights(1).transpose(0, 3, 1, 2)
        o = op.options
        same = o.get("padding", "SAME") == "SAME"
        sh, sw = int(o["stride_h"]), int(o["stride_w"])
        self.check_window(w.shape[2], w.shape[3], sh, sw, 1, 1)
        self._transpose_conv(op.inputs[2], w, out_shape, windowed_padding(out_shape[2], w.shape[2], sh, 1, same),
                             windowed_padding(out_shape[3], w.shape[3], sw, 1, same), sh, sw, self._bias(3, out_shape[1]),
                             o.get("fused_activation", "NONE"))

    def _transpose_conv(self, src, w, out_shape, padding_h, padding_w, sh, sw, bias, act_name):
        act, post = self.activation(act_name)
        pre = self.to_nchw(src)
        conv = self.node("conv2d_transpose", [pre.output], output_shape=out_shape,
                         weights=np.ascontiguousarray(w, np.float32), bias=np.zeros(out_shape[1], np.float32), groups=1,
                         padding_h=padding_h, padding_w=padding_w, stride_h=sh, stride_w=sw, dilation_h=1,
                         dilation_w=1, fused_activation=FULL_RANGE)
        res = self.to_nhwc(conv.output).output
        if not self.ncc_exact and np.any(bias != 0):
            res = self.node("binary", [res, self.const(bias)], binary_op="add", fused_activation=act).output
        elif act != FULL_RANGE:
            res = self._clamp(res, act[0], act[1]).output
        self.out(0, self.finish(res, post))

    def custom_Convolution2DTransposeBias(self, op):
        """MediaPipe's transpose conv with bias (mediapipe/util/tflite/operations/transpose_conv_bias.cc): inputs
        x, OHWI weights, bias; custom options = TfLiteTransposeConvParams {padding (1 SAME, 2 VALID),
        stride_w, stride_h} as int32; output size ``s·(in−1) + k − p`` with ``p = max(0, k − (in−1) % s − 1)``
        for SAME (0 for VALID), ``p // 2`` of it before."""
        raw = op.options.get("custom_options", b"")
        if len(raw) < 12:
            raise UnsupportedError(f"{self.where()}: its custom options hold {len(raw)} bytes, the transpose conv "
                                   "parameters need 12 (padding, stride_w, stride_h); check the model")
        padding, sw, sh = (int(v) for v in np.frombuffer(raw[:12], "<i4"))
        if padding not in (1, 2) or sw < 1 or sh < 1:
            raise UnsupportedError(f"{self.where()}: padding {padding} / strides {sw}x{sh} in its custom options "
                                   "are not valid (padding 1 SAME or 2 VALID, strides >= 1)")
        n, h, wd, _ = _shape(self.tensor(0))
        w = self._weights(1).transpose(0, 3, 1, 2)
        oc, _, kh, kw = w.shape
        self.check_window(kh, kw, sh, sw, 1, 1)
        pads = []
        for size, k, s in ((h, kh, sh), (wd, kw, sw)):
            total = max(0, k - (size - 1) % s - 1) if padding == 1 else 0
            pads.append((s * (size - 1) + k - total, (total // 2, total - total // 2)))
        out_shape = (n, oc, pads[0][0], pads[1][0])
        self._transpose_conv(op.inputs[0], w, out_shape, pads[0][1], pads[1][1], sh, sw, self._bias(2, oc), "NONE")

    def op_FULLY_CONNECTED(self, op):
        wt = self.tensor(1)
        wshape = _shape(wt)
        if wt.index not in self.static:
            raise UnsupportedError(f"{self.where()}: the weights (tensor '{wt.name}') must be a constant")
        act, post = self.activation(op.options.get("fused_activation", "NONE"))
        bias = self._bias(2, wshape[0])
        wtr = self.node("transpose", [wt.index], perm=(1, 0))
        rs = self.node("reshape", [op.inputs[0]], new_shape=(-1, int(wtr.output.shape[0])))
        rs.attrs["new_shape"] = rs.output.shape
        fc = self.node("matmul", [rs.output, wtr.output], bias=bias, fused_activation=act)
        res = fc.output
        oshape = _shape(self.tfl.tensors[op.outputs[0]])
        if op.options.get("keep_num_dims") and oshape != res.shape:
            res = self.node("reshape", [res], new_shape=oshape).output
        self.out(0, self.finish(res, post))

    # ------------------------------------------------------------ pools and resizes
    def _pool(self, op, reduce_op, init):
        o = op.options
        n, h, w, c = _shape(self.tensor(0))
        same = o.get("padding", "SAME") == "SAME"
        fh, fw, sh, sw = int(o["filter_h"]), int(o["filter_w"]), int(o["stride_h"]), int(o["stride_w"])
        self.check_window(fh, fw, sh, sw, 1, 1)
        act, post = self.activation(o.get("fused_activation", "NONE"))
        pre = self.to_nchw(op.inputs[0])
        pool = self.node("reduce_window2d", [pre.output], reduce_op=reduce_op, init_value=init, filter_h=fh,
                         filter_w=fw, padding_h=windowed_padding(h, fh, sh, 1, same),
                         padding_w=windowed_padding(w, fw, sw, 1, same), stride_h=sh, stride_w=sw,
                         dilation_h=1, dilation_w=1, fused_activation=act)
        sur = self.to_nhwc(pool.output)
        self.out(0, self.finish(sur.output, post))

    def op_AVERAGE_POOL_2D(self, op):
        self._pool(op, "mean", 0.0)

    def op_MAX_POOL_2D(self, op):
        self._pool(op, "max", -FLT_MAX)

    def _resize(self, op, mode):
        size = [int(v) for v in self.value(1, "the new size")]
        hp, ac = bool(op.options.get("half_pixel_centers")), bool(op.options.get("align_corners"))
        if hp and ac:  # TFLite refuses this combination too
            raise UnsupportedError(f"{self.where()}: half_pixel_centers and align_corners are both set; TFLite "
                                   "accepts only one of them: re-export the model")
        if len(size) != 2 or min(size) < 1:
            raise UnsupportedError(f"{self.where()}: the new size {size} must be two positive numbers")
        pre = self.to_nchw(op.inputs[0])
        node = self.node("resize", [pre.output], new_size=(size[0], size[1]),
                         sampling=resample.Sampling.tflite(mode, ac, hp))
        self.out(0, self.to_nhwc(node.output).output)

    def op_RESIZE_BILINEAR(self, op):
        self._resize(op, "bilinear")

    def op_RESIZE_NEAREST_NEIGHBOR(self, op):
        self._resize(op, "nearest_neighbor")

    # ------------------------------------------------------------ elementwise
    def _binary(self, op, binary_op, act_name="NONE"):
        act, post = self.activation(act_name)
        b = self.node("binary", [op.inputs[0], op.inputs[1]], binary_op=binary_op, fused_activation=act)
        self.out(0, self.finish(b.output, post))

    def op_ADD(self, op):
        self._binary(op, "add", op.options.get("fused_activation", "NONE"))

    def op_SUB(self, op):
        self._binary(op, "sub", op.options.get("fused_activation", "NONE"))

    def op_MUL(self, op):
        self._binary(op, "mul", op.options.get("fused_activation", "NONE"))

    def op_DIV(self, op):
        self._binary(op, "div", op.options.get("fused_activation", "NONE"))

    def op_SQUARED_DIFFERENCE(self, op):
        d = self.node("binary", [op.inputs[0], op.inputs[1]], binary_op="sub", fused_activation=FULL_RANGE)
        self.out(0, self.node("binary", [d.output, d.output], binary_op="mul", fused_activation=FULL_RANGE).output)

    def op_ADD_N(self, op):
        acc = self.node("binary", [op.inputs[0], op.inputs[1]], binary_op="add", fused_activation=FULL_RANGE)
        for idx in op.inputs[2:]:
            acc = self.node("binary", [acc.output, idx], binary_op="add", fused_activation=FULL_RANGE)
        self.out(0, acc.output)

    def op_MAXIMUM(self, op):
        self._binary(op, "max")

    def op_MINIMUM(self, op):
        self._binary(op, "min")

    def op_RELU(self, op):
        zero = self.const(0.0)
        m = self.node("binary", [op.inputs[0], zero], binary_op="max", fused_activation=FULL_RANGE)
        self.out(0, m.output)

    def _clamp(self, src, lo, hi):
        lo_c, hi_c = self.const(lo), self.const(hi)
        return self.node("clamp", [src, lo_c, hi_c])

    def op_RELU6(self, op):
        self.out(0, self._clamp(op.inputs[0], 0.0, 6.0).output)

    def op_RELU_N1_TO_1(self, op):
        self.out(0, self._clamp(op.inputs[0], -1.0, 1.0).output)

    def op_RELU_0_TO_1(self, op):
        self.out(0, self._clamp(op.inputs[0], 0.0, 1.0).output)

    def op_LEAKY_RELU(self, op):
        alpha = self.const(np.float32(op.options.get("alpha", 0.2)))
        mul = self.node("binary", [op.inputs[0], alpha], binary_op="mul", fused_activation=FULL_RANGE)
        mx = self.node("binary", [op.inputs[0], mul.output], binary_op="max", fused_activation=FULL_RANGE)
        self.out(0, mx.output)

    def op_LOGISTIC(self, op):
        neg = self.node("unary", [op.inputs[0]], unary_op="neg")
        exp = self.node("unary", [neg.output], unary_op="exp")
        one = self.const(1.0)
        plus = self.node("binary", [one, exp.output], binary_op="add", fused_activation=FULL_RANGE)
        div = self.node("binary", [one, plus.output], binary_op="div", fused_activation=FULL_RANGE)
        self.g.composites.append(("LOGISTIC", [(neg, 0), (exp, 0), (plus, 1), (div, 1)]))
        self.out(0, div.output)

    def op_TANH(self, op):
        self.out(0, self.tanh(op.inputs[0]))

    def op_PRELU(self, op):
        alpha = self.float_value(1, "alpha")
        xshape = _shape(self.tensor(0))
        if alpha.ndim > 1 and all(d == 1 for d in alpha.shape[:-1]) and alpha.shape[-1] == xshape[-1]:
            alpha = alpha.reshape(alpha.shape[-1])  # [1,1,C] → [C]: same broadcast on NHWC
        zero = self.const(0.0)
        pos = self.node("binary", [op.inputs[0], zero], binary_op="max", fused_activation=FULL_RANGE)
        neg = self.node("binary", [op.inputs[0], zero], binary_op="min", fused_activation=FULL_RANGE)
        scaled = self.node("binary", [neg.output, self.const(alpha)], binary_op="mul", fused_activation=FULL_RANGE)
        res = self.node("binary", [pos.output, scaled.output], binary_op="add", fused_activation=FULL_RANGE)
        self.out(0, res.output)

    def op_HARD_SWISH(self, op):
        """x·min(max(x+3, 0), 6)/6; the clamp as binary max/min: a ``clamp`` would merge into the add's fused
        activation, which ncc's fuse_one_binary then drops (quirk §13.4)."""
        p3 = self.node("binary", [op.inputs[0], self.const(3.0)], binary_op="add", fused_activation=FULL_RANGE)
        lo = self.node("binary", [p3.output, self.const(0.0)], binary_op="max", fused_activation=FULL_RANGE)
        r6 = self.node("binary", [lo.output, self.const(6.0)], binary_op="min", fused_activation=FULL_RANGE)
        m = self.node("binary", [op.inputs[0], r6.output], binary_op="mul", fused_activation=FULL_RANGE)
        d = self.node("binary", [m.output, self.const(6.0)], binary_op="div", fused_activation=FULL_RANGE)
        self.g.composites.append(("HARD_SWISH", [(p3, 0), (lo, 0), (r6, 0), (m, 1), (d, 0)]))
        self.out(0, d.output)

    def _unary(self, op, unary_op):
        self.out(0, self.node("unary", [op.inputs[0]], unary_op=unary_op).output)

    def op_ABS(self, op): self._unary(op, "abs")  # noqa: E704
    def op_CEIL(self, op): self._unary(op, "ceil")  # noqa: E704
    def op_COS(self, op): self._unary(op, "cos")  # noqa: E704
    def op_EXP(self, op): self._unary(op, "exp")  # noqa: E704
    def op_FLOOR(self, op): self._unary(op, "floor")  # noqa: E704
    def op_LOG(self, op): self._unary(op, "log")  # noqa: E704
    def op_NEG(self, op): self._unary(op, "neg")  # noqa: E704
    def op_RSQRT(self, op): self._unary(op, "rsqrt")  # noqa: E704
    def op_SIN(self, op): self._unary(op, "sin")  # noqa: E704
    def op_SQUARE(self, op): self._unary(op, "square")  # noqa: E704

    def op_SOFTMAX(self, op):
        shape = _shape(self.tensor(0))
        axis = (len(shape) - 1,)
        mx = self.node("reduce", [op.inputs[0]], reduce_op="max", axis=axis, init_value=-FLT_MAX, keep_dims=True)
        sub = self.node("binary", [op.inputs[0], mx.output], binary_op="sub", fused_activation=FULL_RANGE)
        beta = self.const(np.float32(op.options.get("beta", 1.0)))
        mul = self.node("binary", [sub.output, beta], binary_op="mul", fused_activation=FULL_RANGE)
        exp = self.node("unary", [mul.output], unary_op="exp")
        s = self.node("reduce", [exp.output], reduce_op="sum", axis=axis, init_value=0.0, keep_dims=True)
        div = self.node("binary", [exp.output, s.output], binary_op="div", fused_activation=FULL_RANGE)
        self.out(0, div.output)

    def op_L2_NORMALIZATION(self, op):
        shape = _shape(self.tensor(0))
        if self.ncc_exact:  # ncc's quirk: every axis but the batch
            axis = (0,) if len(shape) == 1 else tuple(range(1, len(shape)))
        else:  # TFLite: the last axis
            axis = (len(shape) - 1,)
        sq = self.node("unary", [op.inputs[0]], unary_op="square")
        s = self.node("reduce", [sq.output], reduce_op="sum", axis=axis, init_value=0.0, keep_dims=True)
        mx = self.node("binary", [s.output, self.const(1e-10)], binary_op="max", fused_activation=FULL_RANGE)
        rs = self.node("unary", [mx.output], unary_op="rsqrt")
        mul = self.node("binary", [op.inputs[0], rs.output], binary_op="mul", fused_activation=FULL_RANGE)
        self.out(0, mul.output)

    # ------------------------------------------------------------ reductions
    def _reduce(self, op, reduce_op, init):
        shape = _shape(self.tensor(0))
        axes = np.asarray(self.value(1, "the axes")).reshape(-1).astype(int)
        axes = tuple(sorted(int(a) + len(shape) if a < 0 else int(a) for a in axes))
        node = self.node("reduce", [op.inputs[0]], reduce_op=reduce_op, axis=axes, init_value=init,
                         keep_dims=bool(op.options.get("keep_dims", False)))
        self.out(0, node.output)

    def op_MEAN(self, op): self._reduce(op, "mean", 0.0)  # noqa: E704
    def op_SUM(self, op): self._reduce(op, "sum", 0.0)  # noqa: E704
    def op_REDUCE_MAX(self, op): self._reduce(op, "max", -FLT_MAX)  # noqa: E704
    def op_REDUCE_MIN(self, op): self._reduce(op, "min", FLT_MAX)  # noqa: E704

    # ------------------------------------------------------------ data movement
    def op_CONCATENATION(self, op):
        axis = int(op.options.get("axis", 0))
        rank = len(_shape(self.tensor(0)))
        if axis < 0:
            axis += rank  # ncc leaves it negative and breaks (quirk); normalising is what TFLite means
        node = self.node("concat", list(op.inputs), axis=axis)
        act, post = self.activation(op.options.get("fused_activation", "NONE"))
        res = node.output
        if act != FULL_RANGE:
            res = self._clamp(res, act[0], act[1]).output
        self.out(0, self.finish(res, post))

    def op_PAD(self, op):
        p = np.asarray(self.value(1, "the paddings")).reshape(-1, 2)
        value = 0.0
        if op.builtin == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
            value = float(np.asarray(self.float_value(2, "the pad value")).reshape(-1)[0])
        node = self.node("pad", [op.inputs[0]], paddings=[(int(a), int(b)) for a, b in p], pad_value=value)
        self.out(0, node.output)

    op_PADV2 = op_PAD

    def _reshape(self, src, new_shape):
        node = self.node("reshape", [src], new_shape=tuple(int(v) for v in new_shape))
        node.attrs["new_shape"] = node.output.shape
        return node

    def op_RESHAPE(self, op):
        if len(op.inputs) > 1 and op.inputs[1] >= 0 and op.inputs[1] in self.static:
            new_shape = np.asarray(self.static[op.inputs[1]]).reshape(-1)
        elif "new_shape" in op.options:
            new_shape = op.options["new_shape"]
        else:
            new_shape = _shape(self.tfl.tensors[op.outputs[0]])
        self.out(0, self._reshape(op.inputs[0], new_shape).output)

    def op_SQUEEZE(self, op):
        self.out(0, self._reshape(op.inputs[0], _shape(self.tfl.tensors[op.outputs[0]])).output)

    op_EXPAND_DIMS = op_SQUEEZE

    def op_CAST(self, op):
        out_t = self.tfl.tensors[op.outputs[0]]
        if self.tensor(0).dtype != "FLOAT32" or out_t.dtype != "FLOAT32":
            raise UnsupportedError(f"{self.where()}: CAST {self.tensor(0).dtype}→{out_t.dtype} of a non-constant "
                                   "tensor is not supported")
        self.op_SQUEEZE(op)

    def op_TRANSPOSE(self, op):
        perm = tuple(int(v) for v in np.asarray(self.value(1, "the permutation")).reshape(-1))
        self.out(0, self.node("transpose", [op.inputs[0]], perm=perm).output)

    def _slice(self, src, in_shape, begin, end, strides, begin_mask=0, end_mask=0, ellipsis=0, new_axis=0, shrink=0):
        if ellipsis or new_axis:
            raise UnsupportedError(f"{self.where()}: non-zero ellipsis_mask/new_axis_mask is not supported")
        b, e = normalize_strided_slice(in_shape, begin, end, strides, begin_mask, end_mask, shrink)
        return self.node("strided_slice", [src], begin=b, end=e, strides=tuple(int(s) for s in strides),
                         begin_mask=0, end_mask=0, ellipsis_mask=0, new_axis_mask=0, shrink_axis_mask=int(shrink))

    def op_SLICE(self, op):
        shape = _shape(self.tensor(0))
        begin = [int(v) for v in np.asarray(self.value(1, "begin")).reshape(-1)]
        size = [int(v) for v in np.asarray(self.value(2, "size")).reshape(-1)]
        end = [b + s for b, s in zip(begin, size)]
        self.out(0, self._slice(op.inputs[0], shape, begin, end, [1] * len(begin)).output)

    def op_STRIDED_SLICE(self, op):
        o = op.options
        shape = _shape(self.tensor(0))
        vals = [[int(v) for v in np.asarray(self.value(k, n)).reshape(-1)] for k, n in
                ((1, "begin"), (2, "end"), (3, "strides"))]
        node = self._slice(op.inputs[0], shape, *vals, o.get("begin_mask", 0), o.get("end_mask", 0),
                           o.get("ellipsis_mask", 0), o.get("new_axis_mask", 0), o.get("shrink_axis_mask", 0))
        self.out(0, node.output)

    def _split(self, op, src, sizes, axis):
        shape = _shape(self.tfl.tensors[src])
        axis = axis + len(shape) if axis < 0 else axis
        start = 0
        for k, s in enumerate(sizes):
            begin = [0] * len(shape)
            end = list(shape)
            begin[axis], end[axis] = start, start + s
            start += s
            self.out(k, self._slice(src, shape, begin, end, [1] * len(shape)).output)

    def op_SPLIT(self, op):
        axis = int(np.asarray(self.value(0, "the axis")).reshape(-1)[0])
        shape = _shape(self.tensor(1))
        n = int(op.options.get("num_splits", len(op.outputs)))
        ax = axis + len(shape) if axis < 0 else axis
        self._split(op, op.inputs[1], [shape[ax] // n] * n, axis)

    def op_SPLIT_V(self, op):
        shape = _shape(self.tensor(0))
        sizes = [int(v) for v in np.asarray(self.value(1, "the split sizes")).reshape(-1)]
        axis = int(np.asarray(self.value(2, "the axis")).reshape(-1)[0])
        ax = axis + len(shape) if axis < 0 else axis
        if -1 in sizes:
            sizes[sizes.index(-1)] = shape[ax] - (sum(sizes) + 1)
        self._split(op, op.inputs[0], sizes, axis)

    def op_UNPACK(self, op):
        shape = _shape(self.tensor(0))
        axis = int(op.options.get("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        for k in range(shape[axis]):
            begin = [0] * len(shape)
            end = list(shape)
            begin[axis], end[axis] = k, k + 1
            sl = self._slice(op.inputs[0], shape, begin, end, [1] * len(shape))
            self.out(k, self._reshape(sl.output, _shape(self.tfl.tensors[op.outputs[k]])).output)

    def op_PACK(self, op):
        out_shape = _shape(self.tfl.tensors[op.outputs[0]])
        axis = int(op.options.get("axis", 0))
        axis = axis + len(out_shape) if axis < 0 else axis
        parts = []
        for idx in op.inputs:
            s = list(_shape(self.tfl.tensors[idx]))
            s.insert(axis, 1)
            parts.append(self._reshape(idx, s).output)
        self.out(0, self.node("concat", parts, axis=axis).output)

    def op_DEPTH_TO_SPACE(self, op):
        """TFLite's DCR order: out[n, h·b + i, w·b + j, c] = in[n, h, w, (i·b + j)·C' + c], as 4-D moves on NHWC:
        reshape [N·H, W, b, b·C'], swap the middle axes, reshape [N, H·b, W·b, C']."""
        n, h, w, c = _shape(self.tensor(0))
        b = int(op.options.get("block_size", 0))
        if b < 1 or c % (b * b):
            raise UnsupportedError(f"{self.where()}: block_size {b} does not divide the {c} channels into b·b "
                                   "groups; check the model")
        rs = self._reshape(op.inputs[0], (n * h, w, b, c // b))
        tp = self.node("transpose", [rs.output], perm=(0, 2, 1, 3))
        self.out(0, self._reshape(tp.output, (n, h * b, w * b, c // (b * b))).output)

    def op_SPACE_TO_BATCH_ND(self, op):
        shape = _shape(self.tensor(0))
        block = [int(v) for v in np.asarray(self.value(1, "the block shape")).reshape(-1)]
        pads = np.asarray(self.value(2, "the paddings")).reshape(-1, 2)
        ns = len(block)
        rem = len(shape) - ns - 1
        paddings = [(0, 0)] + [(int(pads[i, 0]), int(pads[i, 1])) for i in range(ns)] + [(0, 0)] * rem
        p = self.node("pad", [op.inputs[0]], paddings=paddings, pad_value=0.0)
        ps = p.output.shape
        r1 = [ps[0]]
        for i in range(ns):
            r1 += [ps[i + 1] // block[i], block[i]]
        r1 += [ps[1 + ns + i] for i in range(rem)]
        perm = [i * 2 + 2 for i in range(ns)] + [0] + [i * 2 + 1 for i in range(ns)] + [i + ns * 2 + 1 for i in range(rem)]
        r2 = [ps[0] * int(np.prod(block))] + [ps[i + 1] // block[i] for i in range(ns)] + [ps[1 + ns + i] for i in range(rem)]
        rs = self._reshape(p.output, r1)
        tp = self.node("transpose", [rs.output], perm=tuple(perm))
        self.out(0, self._reshape(tp.output, r2).output)


def graph_operators() -> list[str]:
    """Builtin operators imported as graph nodes (ncc's 40 plus the extras)."""
    return sorted(name[3:] for name in dir(_Importer) if name.startswith("op_"))


def custom_operators() -> list[str]:
    """Custom (non-builtin) operators the importer knows, by their custom code."""
    return sorted(name[7:] for name in dir(_Importer) if name.startswith("custom_"))


def supported_operators() -> list[str]:
    """Every builtin operator name the importer accepts (graph operators and constant-only folds)."""
    return sorted(set(graph_operators()) | set(fold.FOLD_ONLY))
