"""``--bias-correction``: after quantizing, fold each output channel's mean error into the layer's additive
term (the KPU batch-norm add, the CPU quantized conv/matmul bias), layer by layer in run order, each
correction measured with the corrections of the layers before it in place (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", ICCV 2019, §4.2 — here the expectation is
empirical, over calibration pictures).

The quantized side is the kmodel itself, emulated bit for bit node by node on every picture (one memory
per picture); the float side is the source model. Every corrected layer's output tensor is found by
construction (:mod:`kmodelpy.compiler.tensor_map`). The target is a zero mean error per output channel
over every element of the layer's output; a change of the add moves that mean only through the elements
its activation and uint8 grid do not clip, so each step divides the error by that share (Newton's method,
up to :data:`ITERATIONS` steps, re-running the layer between them). KPU layers whose activation is a
fitted function (an absorbed sigmoid...) are left alone. The change is ``round(error · units per real)``:
``s_act_in`` batch-norm units on the KPU (the add is ``round(bias · s_act_in)``), ``iq.scale · wq.scale``
for CPU bias words.
"""
from __future__ import annotations

import sys

import numpy as np

from ..errors import InputError
from .tensor_map import CORRECTABLE, channel_index, emitted_nodes, tensor_map

MAX_PICTURES = 100  # calibration pictures used (evenly spaced over the sorted set)
ITERATIONS = 3  # Newton steps per layer
MIN_SHARE = 0.02  # a channel with less of its elements on the linear part keeps its add
INT32 = (-(2**31), 2**31 - 1)


class _Target:
    """One correctable layer: its tap, the channel of every source element and the float sums."""

    def __init__(self, tap, llir_node, op, channels: int):
        self.tap, self.node, self.op = tap, llir_node, op
        self.chan = channel_index(tap).ravel()
        self.valid = self.chan >= 0
        self.channels = channels
        self.lo, self.hi = _linear_range(tap, llir_node)
        self.count = np.bincount(self.chan[self.valid], minlength=channels).astype(np.float64)
        # --equalize-activations scaled this layer's channels: the tap reads the source tensor (÷ k_c); the
        # errors and the clamp test are in the layer's own units (× k_c)
        gain = np.ones(channels)
        for s in tap.steps:
            if s.op == "channel_scale":
                gain = gain / np.asarray(s.factors, np.float64)
        self.gain = gain[self.chan[self.valid]]
        self.float_sum = np.zeros(channels)

    def add_float(self, f: np.ndarray) -> None:
        f = np.asarray(f, np.float64).ravel()
        self.float_sum += np.bincount(self.chan[self.valid], weights=f[self.valid] * self.gain,
                                      minlength=self.channels)

    def mean_error(self, kvals: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(mean error per channel over every element, share of the elements on the linear part: how much
        of a change of the add reaches the mean)."""
        ksum = np.zeros(self.channels)
        lin = np.zeros(self.channels)
        c = self.chan[self.valid]
        for k in kvals:
            k = np.asarray(k, np.float64).ravel()[self.valid] * self.gain
            ksum += np.bincount(c, weights=k, minlength=self.channels)
            lin += np.bincount(c, weights=((k > self.lo) & (k < self.hi)).astype(np.float64), minlength=self.channels)
        n = self.count * max(len(kvals), 1)
        ok = n > 0
        err = np.zeros(self.channels)
        err[ok] = (ksum[ok] - self.float_sum[ok]) / n[ok]
        share = np.zeros(self.channels)
        share[ok] = lin[ok] / n[ok]
        return err, share


def _linear_range(tap, node) -> tuple[float, float]:
    """(lo, hi): kmodel values strictly inside move one for one with the layer's add (its clamp, its grid)."""
    lo, hi = -np.inf, np.inf
    act = node.attrs.get("act_range")
    if act is not None:
        lo, hi = float(act[0]), float(act[1])
    qp = tap.quant_param
    if qp is not None:
        zp, scale = qp
        lo = max(lo, (0 - zp) / scale)
        hi = min(hi, (255 - zp) / scale)
    return lo, hi


def _units_per_real(node) -> float | None:
    if node.op == "kpu_conv2d":
        return node.attrs.get("act_in_scale") if node.attrs.get("act_linear") else None
    return node.attrs.get("bias_scale")


def _targets(km, llir, sched) -> list[_Target]:
    emitted = emitted_nodes(sched)
    best: dict[int, object] = {}
    for tap in tensor_map(llir, sched).values():
        if tap.compute is None or tap.compute_op not in CORRECTABLE:
            continue
        if _units_per_real(emitted[tap.compute]) is None:
            continue
        old = best.get(tap.compute)
        if old is None or (tap.node, len(tap.chain)) < (old.node, len(old.chain)):
            best[tap.compute] = tap
    out = []
    for ci, tap in sorted(best.items(), key=lambda kv: kv[1].node):
        out.append(_Target(tap, emitted[ci], km.nodes[ci].op, int(tap.compute_shape[1])))
    return out


def _apply(op, node, err: np.ndarray) -> None:
    """Fold ``err`` (real units per output channel) into the op's additive term."""
    from ..kpu.layer_args import BatchNorm

    delta = np.round(err * _units_per_real(node)).astype(np.int64)
    if node.op == "kpu_conv2d":
        bn = op.bn
        op.bn = BatchNorm(bn.norm_mul.copy(), np.clip(bn.norm_add - delta, *INT32), bn.norm_shift.copy(),
                          bn.unused.copy())
        op.invalidate()
    else:
        op.bias = np.clip(np.asarray(op.bias, np.int64) - delta, *INT32).astype(np.int32)


def pictures(dataset, fmt: str) -> list:
    from .. import images

    files = images.list_dataset(dataset, fmt)
    if len(files) > MAX_PICTURES:
        files = [files[int(i * len(files) / MAX_PICTURES)] for i in range(MAX_PICTURES)]
    return files


def correct_biases(km, llir, sched, source, opts, out=None) -> int:
    """Correct ``km`` (a :class:`~kmodelpy.format.kmodel.KModel` just emitted from ``llir``/``sched``) in
    place. Returns the number of layers corrected."""
    from ..frontends import load_float
    from ..images import load_pair, model_chw
    from ..ir.origins import evaluate_sources
    from ..runtime import Memory, Model

    out = out if out is not None else sys.stdout
    targets = _targets(km, llir, sched)
    if not targets:
        out.write("  Bias correction: no layer to correct\n")
        return 0
    files = pictures(opts.dataset, opts.dataset_format)
    model = Model(km, "kmodel")
    float_model = load_float(source)
    chw = model_chw(model.input_shape)
    mems = []
    out.write(f"  Bias correction: {len(targets)} layers, {len(files)} pictures...\n")
    for path in files:
        xf, xk = load_pair(path, opts.dataset_format, model.input_dtype, chw, opts.mean, opts.std)
        _, values = evaluate_sources(float_model, xf, [t.tap.key for t in targets])
        for t in targets:
            t.add_float(values[t.tap.key])
        model.mem = Memory(km, "kmodel")
        model.set_input(np.asarray(xk).reshape(model.input_shape))
        mems.append(model.mem)
    at_node: dict[int, list[_Target]] = {}
    for t in targets:
        at_node.setdefault(t.tap.node, []).append(t)
    done = 0

    def run(k):
        for mem in mems:
            model.mem = mem
            if not model.run_node(k):
                raise InputError(f"bias correction: the kmodel stopped on {opts.dataset}: {model.last_error}")

    for k in range(len(km.nodes)):
        run(k)
        for t in at_node.get(k, ()):
            changed = False
            for _ in range(ITERATIONS):  # Newton steps on the post-activation mean error
                err, share = t.mean_error([t.tap.read(mem) for mem in mems])
                step = np.where(share >= MIN_SHARE, err / np.maximum(share, MIN_SHARE), 0.0)
                if not np.any(np.round(step * _units_per_real(t.node)) != 0):
                    break
                _apply(t.op, t.node, step)
                changed = True
                for j in range(t.tap.compute, k + 1):  # the corrected layer and what already read it
                    run(j)
            done += changed
    return done
