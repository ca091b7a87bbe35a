"""What ``fit_kpu_ram`` will do to a model, before any calibration (``kmodelpy inspect model.tflite``).

Which KPU tensors exist, their shapes and their lifetimes follow from the graph's structure alone: the
quantize-stage transforms decide on shapes and on which tensors are calibrated, never on the ranges'
values. So the preview runs the compiler's own stages 1-6 (:func:`kmodelpy.compiler.pipeline.lower_and_fit`,
with its rerun for layers moved to the CPU) with the ranges of one deterministic random input in place
of the calibration set. That costs about as much as the quantization stage of a compile, so the fit
report first takes :func:`upper_bound` of the KPU RAM from the graph after pass P2, and previews only
a model that might not fit.
"""
from __future__ import annotations

import io

import numpy as np

from ...kpu.layout import kpu_bytes
from .fit import KpuFit


def upper_bound(g) -> int:
    """KPU RAM that ncc's first fit can at most need, from the HLIR graph after pass P2: every KPU layer's
    input and (unpooled) output at once — twice for a layer quantization converts twice (its output
    feeds an absorbed activation and other layers). First fit never needs more than the sum of the
    buffers it places."""
    total = 0
    for f in g.nodes:
        if f.op == "fake_kpu_conv2d":
            readers = [ic.node for ic in f.output.consumers]
            twice = any(r.op == "fused_unary" for r in readers) and len(readers) > 1
            total += (1 + twice) * (kpu_bytes(f.input.shape) + kpu_bytes(f.output.shape))
    return total


def sample_calibration(g, ctx, opts, out) -> None:
    """Calibration stand-in: the ranges of one uniform [0, 1) input (seed 0), broadcast as usual."""
    from ..calibrate import broadcast_ranges, sample_ranges

    x = np.random.default_rng(0).uniform(0, 1, g.inputs[0].output.shape).astype(np.float32)
    ctx.ranges = sample_ranges(g, x)
    broadcast_ranges(g, ctx.ranges)


def preview_kpu_ram(tfl, weights_quantize_threshold: float = 64.0, output_quantize_threshold: int = 1024,
                    kpu_ram_budget: int | None = None, checkpointed=None) -> KpuFit:
    """The :class:`KpuFit` of compiling ``tfl`` (a path or a parsed TFLite file) for uint8 with these
    thresholds and the default ``--kpu-ram-overflow fit`` (``kpu_ram_budget``: as the compile option).
    ``checkpointed``: the model's graph after the checkpoints (stage 4.1), which the preview consumes."""
    from .. import pipeline as P

    opts = P.Options(weights_quantize_threshold=weights_quantize_threshold,
                     output_quantize_threshold=output_quantize_threshold)
    if kpu_ram_budget is not None:
        opts.kpu_ram_budget = int(kpu_ram_budget)
    return P.lower_and_fit(tfl, opts, io.StringIO(), sample_calibration, checkpointed)[2]
