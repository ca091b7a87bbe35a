"""Quantization checkpoints (compiler spec §5.3, §7.2; add_quant_checkpoints.cpp).

``AddQuantCheckpoints(ops)`` marks the nodes of the given kinds that will be quantized: the node gets
``need_quantize``; every producer output feeding it and every output of it get ``need_quantize`` too —
those are exactly the tensors the calibration records ranges for.
"""
from __future__ import annotations

import numpy as np

from ...ir.origins import keeps_float
from ..rewrite import Match, Transform, parent
from .kpu_lowering import weights_width


class AddQuantCheckpoints(Transform):
    name = "add_quant_checkpoints"

    def __init__(self, ops):
        self.ops = frozenset(ops)
        self.name = f"add_quant_checkpoints{{{', '.join(sorted(ops))}}}"

    def match(self, node, ctx):
        if keeps_float(node):  # --float-layers
            return None
        if node.op in ("binary", "matmul", "conv2d") and \
                int(np.prod(node.outputs[0].shape)) < ctx.output_quantize_threshold:
            return None
        if node.op == "conv2d":
            if weights_width(node["weights"]) > ctx.weights_quantize_threshold:
                return None
        elif node.op == "matmul":
            w = parent(node, "constant")
            if w is not None and weights_width(w["data"]) > ctx.weights_quantize_threshold:
                return None
        done = all(ic.producer.need_quantize for ic in node.inputs) and all(o.need_quantize for o in node.outputs)
        if done:
            return None
        return Match([node], list(node.inputs), list(node.outputs))

    def rewrite(self, g, m, ctx):
        node = m.nodes[0]
        node.need_quantize = True
        for ic in node.inputs:
            ic.producer.need_quantize = True
        for o in node.outputs:
            o.need_quantize = True
