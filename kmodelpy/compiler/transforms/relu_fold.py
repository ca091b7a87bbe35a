"""``--fold-relu`` (kmodelpy): a ReLU after a binary op becomes the binary's fused activation.

In uint8, a binary op (CPU ``QuantizedBinary``) followed by a ReLU (a 256-entry ``TableLookup1D``) rounds
twice, onto two grids: the sum's, then the ReLU's. Folded, the binary's output is the ReLU's tensor, its
calibrated range is ``[0, max]`` with zero point 0, and the quantized binary's clamp to code 0 *is* the ReLU:
one CPU op and one rounding fewer per residual block, and the grid spends no codes on the negative sums the
ReLU discards. In float (a binary that stays float) the fused activation clamps exactly as the ReLU did.

Runs after pass P2, before the quantization checkpoints. Only where the binary's output has no other
consumer and is no model output (its pre-ReLU value would be needed).
"""
from __future__ import annotations

import numpy as np

from ...ir.origins import keeps_float
from .. import fused_unary as fu
from ..rewrite import Match, Transform, reroute
from . import build

FLT_MAX = float(np.finfo(np.float32).max)
_PROBE = np.array([-3.0e38, -7.5, -1.0, -1e-6, -0.0, 0.0, 1e-6, 0.5, 1.0, 6.0, 7.5, 1e5, 3.0e38], np.float32)


def is_relu(program) -> bool:
    """The fused-unary program computes max(x, 0) (checked on probe values, signs of zero aside)."""
    try:
        y = np.asarray(fu.evaluate(program, _PROBE), np.float32)
    except Exception:  # noqa: BLE001 - an op the probe cannot evaluate: not a ReLU
        return False
    return bool(np.array_equal(y, np.maximum(_PROBE, np.float32(0.0))))


class FoldReluIntoBinary(Transform):
    name = "fold_relu_into_binary"
    ops = frozenset({"fused_unary"})

    def match(self, node, ctx):
        b = node.input.producer.node
        if b.op != "binary" or keeps_float(b) or keeps_float(node) or len(b.output.consumers) != 1:
            return None
        lo, hi = (float(v) for v in b["fused_activation"])
        if lo > -FLT_MAX or hi < FLT_MAX or not is_relu(node["program"]):
            return None
        return Match([node, b], list(b.inputs), [node.output])

    def rewrite(self, g, m, ctx):
        relu, b_old = m.nodes
        b = build.binary(g, m.inputs[0].producer, m.inputs[1].producer, b_old["binary_op"], (0.0, FLT_MAX),
                         name=b_old.name)
        reroute(m.outputs[0], b.output)
