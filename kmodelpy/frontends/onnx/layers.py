"""The ONNX importer's layer converters (mixed into :class:`kmodelpy.frontends.onnx.importer._Importer`, whose
helpers they use): Conv, ConvTranspose, BatchNormalization, MatMul, Gemm, the pools, Resize and Upsample.

* Conv: ONNX ``pads`` order ``[h_begin, w_begin, h_end, w_end]``, ``auto_pad`` SAME_UPPER / SAME_LOWER / VALID
  (D21; otherwise ncc's conv2d node); ConvTranspose with ONNX's weight layout, stride and bias (D22).
* BatchNormalization folds into the conv before it when that conv feeds nothing else, else per-channel mul + add.
* MatMul is ncc's matmul (zero bias, operands wired by name); Gemm a matmul with its bias (alpha/transB folded
  into the constant weights).
* MaxPool / AveragePool: reduce_window2d with ONNX pads, ceil_mode as extra end padding (not counted by the mean),
  count_include_pad as an explicit zero pad; GlobalAveragePool/GlobalMaxPool: reduce over H and W.
* Resize / Upsample: one ``resize`` node with onnxruntime's sampling, lowered by the compiler (D24).
"""
from __future__ import annotations

import numpy as np

from ...ir.ops import FLT_MAX, FULL_RANGE, windowed_padding

F32 = np.float32


class Layers:
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

    # ------------------------------------------------------------ resizes
    def op_Resize(self, n):
        shape = self.check_4d()
        scales = sizes = None
        policy = "stretch"
        if self.f.opset < 11 or len(n.inputs) == 2:  # Resize-10: X, scales
            scales = self.value(1, "the scales").astype(F32).reshape(-1)
            ctm, nearest_mode = "asymmetric", "simple"
        else:
            if self.has(3):
                sizes = self.ints(3, "the sizes")
            elif self.has(2):
                scales = self.value(2, "the scales").astype(F32).reshape(-1)
            ctm = self.attr("coordinate_transformation_mode", "half_pixel")
            nearest_mode = self.attr("nearest_mode", "round_prefer_floor")
            policy = self.attr("keep_aspect_ratio_policy", "stretch")
            if ctm == "tf_crop_and_resize":
                raise self.unsupported("coordinate_transformation_mode 'tf_crop_and_resize' (a crop by the roi input) "
                                       "is not supported; crop with Slice and resize with 'half_pixel' or "
                                       "'align_corners'")
            if policy not in ("stretch", "not_larger", "not_smaller"):
                raise self.unsupported(f"keep_aspect_ratio_policy {policy!r} is not supported")
        axes = [a + 4 if a < 0 else a for a in self.attr("axes", range(4))]
        full_scales, full_sizes = [F32(1)] * 4, list(shape)
        if sizes is not None:
            ratios = {a: F32(v) / F32(shape[a]) for a, v in zip(axes, sizes)}
            if policy != "stretch":  # one scale for every resized axis, sizes rounded half up
                one = (min if policy == "not_larger" else max)(ratios.values())
                ratios = {a: one for a in ratios}
                sizes = [int(np.floor(F32(one) * F32(shape[a]) + F32(0.5))) for a in axes]
            for a, v in zip(axes, sizes):
                full_sizes[a], full_scales[a] = int(v), ratios[a]
        elif scales is not None and scales.size:
            for a, v in zip(axes, scales):
                full_sizes[a], full_scales[a] = int(np.floor(F32(shape[a]) * F32(v))), F32(v)
                if ctm == "align_corners" and F32(shape[a]) * F32(v) != full_sizes[a]:
                    raise self.unsupported(
                        f"align_corners with scale {float(v):g} on a size of {shape[a]} ({shape[a]}x{float(v):g} is "
                        "not whole): onnxruntime and the ONNX reference differ there; give the sizes input instead of "
                        "scales")
        else:
            raise self.unsupported("Resize needs scales or sizes")
        mode = self.attr("mode", "nearest")
        self._resize(shape, full_sizes, full_scales, mode, ctm, nearest_mode,
                     cubic_a=float(F32(self.attr("cubic_coeff_a", -0.75))),
                     exclude_outside=bool(self.attr("exclude_outside", 0)), antialias=bool(self.attr("antialias", 0)))

    def _resize(self, shape, sizes, scales, mode, ctm, nearest_mode, **more):
        """A ``resize`` node with onnxruntime's sampling (:mod:`kmodelpy.ir.resample`)."""
        from ...ir.resample import Sampling

        if tuple(sizes[:2]) != tuple(shape[:2]):
            raise self.unsupported(f"resizing the batch or channel axis ({list(shape)} -> {list(sizes)}) is not "
                                   "supported")
        if min(sizes[2:]) < 1:
            raise self.unsupported(f"the resized size {list(sizes)} is empty")
        kind = {"nearest": "nearest_neighbor", "linear": "bilinear", "bilinear": "bilinear", "cubic": "cubic"}.get(mode)
        if kind is None:
            raise self.unsupported(f"resize mode {mode!r} is not supported (nearest, linear and cubic are)")
        if kind == "nearest_neighbor" and more.get("antialias"):
            more["antialias"] = False  # onnxruntime ignores antialias for nearest
        try:
            sampling = Sampling(kind, ctm, nearest_mode, "onnx", (float(scales[2]), float(scales[3])), **more)
        except ValueError as e:
            raise self.unsupported(str(e)) from None
        self.out(0, self.node("resize", [self.inp(0)], new_size=(int(sizes[2]), int(sizes[3])),
                              sampling=sampling).output)

    def op_Upsample(self, n):
        shape = self.check_4d()
        scales = [F32(v) for v in (self.attr("scales") if "scales" in n.attrs else
                                   self.value(1, "the scales").reshape(-1))]
        sizes = [int(np.floor(F32(d) * s)) for d, s in zip(shape, scales)]
        self._resize(shape, sizes, scales, self.attr("mode", "nearest"), "asymmetric", "simple")
