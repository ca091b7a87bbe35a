"""``--equalize-activations``: activation equalisation of linear conv → conv pairs (kmodelpy; cross-layer
equalisation, Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction", ICCV 2019).

A convolution whose output feeds only another convolution that mixes channels — with nothing between them
but a zero pad, and no activation or only a ReLU (scale-invariant) — can scale each output channel ``c`` by
``k_c > 0`` (its weights and bias) while the next convolution divides its input channel ``c`` by ``k_c``: the
float model computes the same thing, only the quantization changes. In BlazeFace's blocks the depthwise
convolution's output is such a tensor: a few channels set its per-tensor uint8 range and the others use a
handful of the 256 codes. Each channel is scaled up to the tensor's range, ``k_c = max(r) / r_c`` with ``r_c``
the channel's calibrated largest magnitude (the full equalisation measured better on both face detectors than
Nagel et al.'s balance ``k_c ∝ sqrt(w_c / r_c)`` against the next weights' column sizes ``w_c``, which also
weighs the coarser grid of the shrunken weight columns; docs/accuracy.md).
The producer's weights stay below the divergence threshold (``--weights-quantize-threshold``: a wider conv
would fall back to float); a CPU conv's weights (one uint8 grid for the whole tensor) keep their largest
magnitude; no channel grows by more than :data:`MAX_GAIN`.

Runs after pass P2 (the KPU convs are ``fake_kpu_conv2d``, still float) and before the quantization
checkpoints; the per-channel ranges come from one float run over the calibration set. The source tensor tag of
the scaled output gets a step dividing by ``k_c`` back (``compare`` still reads the source tensor).
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph
from ..ir.origins import VALUE, Origin, keeps_float

MAX_GAIN = 1000.0  # no channel is scaled up more than this (a dead channel would otherwise go to infinity)
CONVS = ("conv2d", "fake_kpu_conv2d")


class ChannelScale:
    """An origin step multiplying axis 1 by ``factors`` (undoes the equalisation for ``compare``)."""

    op = "channel_scale"
    changes_values = True

    def __init__(self, factors: np.ndarray, shape):
        self.factors = np.asarray(factors, np.float32)
        self.out_shape = tuple(shape)

    def apply(self, x, layout_only: bool = False, fill=None):
        x = np.asarray(x)
        if layout_only:
            return x
        f = self.factors.reshape((1, -1) + (1,) * (x.ndim - 2))
        return (x * f).astype(np.float32)

    def __repr__(self) -> str:
        return f"<step channel_scale -> {list(self.out_shape)}>"


def _linear_act(node) -> bool:
    """No activation, or a ReLU (max(x, 0) commutes with a positive scale)."""
    lo, hi = node.attrs.get("fused_activation", (-np.inf, np.inf))
    return hi >= 3.0e38 and (lo <= -3.0e38 or lo == 0.0)


def _mixes_channels(node) -> bool:
    if node.op == "fake_kpu_conv2d":
        return not node["is_depthwise"]
    return node.op == "conv2d" and int(node["groups"]) == 1


def find_pairs(g: Graph) -> list:
    """(producer conv, consumer conv) pairs joined by a single-consumer chain of zero pads."""
    pairs = []
    outputs = {n.inputs[0].producer for n in g.nodes if n.op == "output" and n.inputs}
    for n in g.nodes:
        if n.op not in CONVS or keeps_float(n) or not _linear_act(n) or n.output in outputs:
            continue
        oc = n.output
        while len(oc.consumers) == 1:
            c = oc.consumers[0].node
            if c.op == "pad" and float(c["pad_value"]) == 0.0 and tuple(c["paddings"][1]) == (0, 0) \
                    and c.output not in outputs:
                oc = c.output
                continue
            if c.op in CONVS and _mixes_channels(c) and oc.consumers[0].index == 0:
                pairs.append((n, c))
            break
    return pairs


def channel_ranges(g: Graph, nodes, opts, out) -> dict:
    """{node: (per-channel min, per-channel max)} of the nodes' outputs over the calibration set."""
    from .calibrate import _run

    lo: dict = {}
    hi: dict = {}
    watch = {n.output: n for n in nodes}

    def record(oc, v):
        axes = tuple(i for i in range(v.ndim) if i != 1)
        a, b = v.min(axis=axes), v.max(axis=axes)
        n = watch[oc]
        lo[n] = a if n not in lo else np.minimum(lo[n], a)
        hi[n] = b if n not in hi else np.maximum(hi[n], b)

    _run(g, opts.dataset, opts.dataset_format, opts.mean, opts.std, record, out, opts.jobs, set(watch))
    return {n: (lo[n], hi[n]) for n in lo}


def channel_gains(lo, hi, producer_weights, weights_limit: float) -> np.ndarray:
    """``k_c`` for each output channel of the producer: ``max(r) / r_c`` with ``r_c = max(|lo_c|, |hi_c|)``, so
    every channel reaches the tensor's range; at most :data:`MAX_GAIN`, and at most what keeps the channel's
    largest weight under ``weights_limit``; 1 for a channel that is always 0."""
    r = np.maximum(np.abs(lo), np.abs(hi)).astype(np.float64)
    R = r.max()
    k = np.ones_like(r)
    live = r > 0
    if not R > 0:
        return k
    k[live] = R / r[live]
    w1 = np.abs(np.asarray(producer_weights, np.float64)).reshape(len(r), -1).max(axis=1)
    cap = np.where(w1 > 0, weights_limit / np.maximum(w1, 1e-30), MAX_GAIN)
    return np.clip(k, 1.0, np.minimum(np.maximum(cap, 1.0), MAX_GAIN))


def equalize_activations(g: Graph, opts, out) -> int:
    """Scale every eligible pair (module docstring); returns the number of pairs scaled."""
    pairs = find_pairs(g)
    if not pairs:
        return 0
    out.write(f"  Equalize activations of {len(pairs)} conv pairs...\n")
    ranges = channel_ranges(g, [p for p, _ in pairs], opts, out)
    limit = 0.45 * float(opts.weights_quantize_threshold)
    for prod, cons in pairs:
        w1 = np.asarray(prod["weights"], np.float32)
        widest = float(np.abs(w1).max())
        # a KPU conv equalises its weights per output channel; a CPU conv's share one uint8 grid, which must
        # not widen
        limit_p = max(limit, widest) if prod.op == "fake_kpu_conv2d" else widest
        k = channel_gains(*ranges[prod], w1, limit_p).astype(np.float32)
        shape = (-1,) + (1,) * (w1.ndim - 1)
        prod.attrs = dict(prod.attrs, weights=(w1 * k.reshape(shape)).astype(np.float32),
                          bias=(np.asarray(prod["bias"], np.float32) * k).astype(np.float32))
        w2 = np.asarray(cons["weights"], np.float32)
        cons.attrs = dict(cons.attrs, weights=(w2 / k.reshape((1, -1) + (1,) * (w2.ndim - 2))).astype(np.float32))
        oc = prod.output
        undo = ChannelScale(np.float32(1.0) / k, oc.shape)
        oc.origins = tuple(Origin(o.key, (undo,) + tuple(o.steps), o.kind) if o.kind == VALUE else o
                           for o in oc.origins)
    return len(pairs)
