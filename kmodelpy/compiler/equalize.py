"""``--equalize-activations``: activation equalisation of linear conv → conv pairs (kmodelpy; cross-layer
equalisation, Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction", ICCV 2019).

A convolution whose output feeds only another convolution that mixes channels — with nothing between them
but a zero pad, and no activation or only a ReLU (scale-invariant) — can scale each output channel ``c`` by
``k_c > 0`` (its weights and bias) while the next convolution divides its input channel ``c`` by ``k_c``: the
float model computes the same thing, only the quantization changes. In BlazeFace's blocks the depthwise
convolution's output is such a tensor: a few channels set its per-tensor uint8 range and the others use a
handful of the 256 codes. Scaling channel ``c`` up raises its resolution; it also shrinks column ``c`` of the
next convolution's weights, whose per-output-channel KPU grid is set by the largest column. The scale balances
the two as Nagel et al.'s equalisation does, with the calibrated activation range ``r_c`` of the channel in
place of the first layer's weight range: ``k_c ∝ sqrt(w_c / r_c)``, ``w_c`` the largest of column ``c`` of the
next weights relative to its row's largest, normalised so that the widest channel keeps the tensor's range.
The producer's weights stay below the divergence threshold (``--weights-quantize-threshold``: a wider conv
would fall back to float) and no channel grows by more than :data:`MAX_GAIN`.

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


def channel_gains(lo, hi, next_weights, producer_weights, weights_limit: float) -> np.ndarray:
    """``k_c`` for each output channel of the producer (see the module docstring)."""
    r = np.maximum(np.abs(lo), np.abs(hi)).astype(np.float64)
    w2 = np.abs(np.asarray(next_weights, np.float64)).reshape(next_weights.shape[0], next_weights.shape[1], -1)
    rel = w2.max(axis=2) / np.maximum(w2.max(axis=(1, 2)), 1e-30)[:, None]  # [O, C]: column size in its row
    w = rel.max(axis=0)
    R = r.max()
    if not R > 0:
        return np.ones_like(r)
    live = (r > 0) & (w > 0)
    k = np.ones_like(r)
    import os
    a, b = (float(x) for x in os.environ.get("KMQ_EQ", "0.5,0.5").split(","))
    k[live] = w[live] ** b / r[live] ** a
    k /= (k * r).max()  # the widest scaled channel keeps the tensor's range
    k *= R
    w1 = np.abs(np.asarray(producer_weights, np.float64)).reshape(len(r), -1).max(axis=1)
    cap = np.where(w1 > 0, weights_limit / np.maximum(w1, 1e-30), MAX_GAIN)
    k = np.clip(k, 1.0 / MAX_GAIN, np.minimum(cap, MAX_GAIN))
    k[~live] = 1.0
    return k


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
        limit_p = max(limit, float(np.abs(w1).max()))
        k = channel_gains(*ranges[prod], np.asarray(cons["weights"]), w1, limit_p).astype(np.float32)
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
