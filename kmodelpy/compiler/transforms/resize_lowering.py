"""The lowering of ``resize`` nodes (both front ends' resizes, with their own sampling) onto kmodel v4 ops, first
transform of pass P1 (kmodelpy: ncc imports every resize as its ResizeImage, whose sampling is often another
one — deviations D11, D24).

:func:`plan` compares the requested sampling, axis by axis, with what each form computes (the per-axis tables of
:mod:`kmodelpy.ir.resample`) and takes the first form that computes it exactly (in real arithmetic; float32
rounding aside), in this order:

1. ``resize_image`` — ncc's own ResizeImage to the output size, where its sampling is the requested one
   (asymmetric and align-corners bilinear, floor nearest, integer half-pixel nearest upscales ...): the node ncc
   makes, so such models keep ncc's kmodel byte for byte.
2. ``copy`` — an output that reads one input each (nearest, or bilinear at whole coordinates): per axis edge
   replication of ``pb``/``pa`` border rows, ncc's nearest upscale by a whole factor ``k`` and a strided slice
   (``start``, ``step``). Pure data movement on uint8: no error at all.
3. ``bilinear_filter`` — half-pixel bilinear by 2 (or 1) per axis, every TF2 ``UpSampling2D(interpolation=
   'bilinear')`` and PyTorch ``Upsample(scale_factor=2, mode='bilinear')``: TFLite's output ``2k+r`` is
   ``¾·x[k] + ¼·x[k∓1]`` with the border row repeated, which is the nearest 2x upsample ``u[j] = x[⌊j/2⌋]``
   filtered by ``[1,2,1]/4`` (``(u[2k−1] + 2u[2k] + u[2k+1])/4 = (x[k−1] + 3x[k])/4``): replicate the border
   rows/columns, ncc's nearest ResizeImage to ``2H+4``, a 3x3 depthwise conv ``[1,2,1]ᵀ[1,2,1]/16`` (the KPU's
   'same' padding is never read by the kept outputs) and a crop of 2 on each side. On the KPU when ``2H+4 <= 256``
   and ``2W+4 <= 512``, else a uint8 CPU conv.
4. ``mean_pool`` — half-pixel bilinear downscale by 2 (or 1) per axis: a 2x2 (2x1, 1x2) mean pool, which the
   KPU fuses into the conv before it.
5. ``separable`` — everything else (fractional factors, downscales, align-corners nearest, cubic, antialias): the
   resize is separable, ``y = A_h · x · A_wᵀ`` with the ``[out, in]`` matrices of the sampling
   (:func:`kmodelpy.ir.resample.axis_matrix`): a 1x1 conv per axis with the axis moved into the channels by
   transposes (KPU 1x1 convs when the shapes fit, else CPU convs).

Edge replication is a concat of the tensor between one-row slices of itself, marked ``edge_replication``; Q4's
:class:`~kmodelpy.compiler.transforms.quantize_neutral.DequantizeReplicationConcatMotion` runs such concats on
uint8 (ncc's own concats run in float).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir import resample
from ...ir.ops import FULL_RANGE
from ..rewrite import Match, Transform, reroute
from . import build

F32 = np.float32
FORMS = ("resize_image", "copy", "bilinear_filter", "mean_pool", "separable")
_TRIANGLE = {1: np.array([0.0, 1.0, 0.0], F32), 2: np.array([0.25, 0.5, 0.25], F32)}
MAX_FACTOR = 8  # whole nearest upscale factors the ``copy`` form tries (and the resize's own factor + 2) ...
MAX_SEARCH = 64  # ... but no more


@dataclass(frozen=True)
class AxisCopy:
    """One axis of a ``copy`` form: replicate ``pb`` / ``pa`` border rows, upscale by ``k`` with ncc's nearest
    kernel, keep ``start, start+step, ...``."""

    pb: int
    pa: int
    k: int
    start: int
    step: int


@dataclass(frozen=True)
class Plan:
    form: str  # one of FORMS
    detail: tuple = ()  # resize_image: (mode, align_corners); copy: (AxisCopy, AxisCopy);
    #                     bilinear_filter / mean_pool: the per-axis factors (1 or 2)


# ------------------------------------------------------------------------------------------ the plan
def _tables(s: resample.Sampling, in_hw, out_hw):
    return [resample.taps(s, ax, n, o) for ax, (n, o) in enumerate(zip(in_hw, out_hw))]


def _single_tap(t) -> bool:
    lo, hi, _ = resample.canonical(*t)
    return bool(np.array_equal(lo, hi))


def _axis_copy(want, n_in: int, n_out: int):
    """The cheapest :class:`AxisCopy` whose table (ncc's nearest kernel on the replicated axis) equals ``want``."""
    w = resample.canonical(*want)[0]
    rise = (w[-1] - w[0]) / max(n_out - 1, 1)  # source rows per output: the step is about k · rise
    for k in range(1, min(max(MAX_FACTOR, -(-n_out // n_in) + 2), MAX_SEARCH) + 1):
        for pb, pa in ((0, 0), (1, 0), (0, 1), (1, 1)):
            n = n_in + pb + pa
            idx = np.clip(resample.ncc_taps("nearest_neighbor", n, n * k)[0] - pb, 0, n_in - 1)
            starts = np.flatnonzero(idx == w[0])
            guess = int(round(k * rise))
            for step in sorted({max(1, guess + d) for d in (-1, 0, 1)}):
                pos = starts[:, None] + step * np.arange(n_out)[None, :]
                ok = (pos[:, -1] < len(idx))
                if not ok.any():
                    continue
                found = np.flatnonzero(np.all(idx[np.minimum(pos[ok], len(idx) - 1)] == w, axis=1))
                if found.size:
                    return AxisCopy(pb, pa, k, int(starts[ok][found[0]]), step)
    return None


def _factors(tables, in_hw, out_hw, want) -> tuple | None:
    """Per axis 1 (identity) or 2 where the table is ``want(n_in, 2)``'s; None otherwise or when both are 1."""
    res = []
    for t, n, o in zip(tables, in_hw, out_hw):
        if o == n and resample.same_taps(t, (np.arange(n), np.arange(n), np.zeros(n, F32))):
            res.append(1)
        elif (wanted := want(n, o)) is not None and resample.same_taps(t, wanted):
            res.append(2)
        else:
            return None
    return tuple(res) if 2 in res else None


def _half_pixel(n: int, o: int):
    return resample.bilinear_taps(resample.Sampling("bilinear", "half_pixel", convention="tflite"), 0, n, o)


def _upscale2(n, o):
    return _half_pixel(n, o) if o == 2 * n else None


def _downscale2(n, o):
    return _half_pixel(n, o) if n == 2 * o else None


def plan(s: resample.Sampling, in_hw, out_hw, forms=None) -> Plan:
    """The form :class:`LowerResize` gives a resize of ``in_hw`` to ``out_hw`` with sampling ``s`` (module doc;
    ``forms``: the forms allowed, in order of preference, default :data:`FORMS`). The fit report asks the same
    function."""
    forms = FORMS if forms is None else forms
    in_hw, out_hw = tuple(int(v) for v in in_hw), tuple(int(v) for v in out_hw)
    tables = None if s.is_matrix else _tables(s, in_hw, out_hw)
    for form in forms:
        if form == "separable":
            return Plan(form)
        if tables is None:
            continue
        if form == "resize_image":
            for ac in (False, True):
                if all(resample.same_taps(t, resample.ncc_taps(s.mode, n, o, ac))
                       for t, n, o in zip(tables, in_hw, out_hw)):
                    return Plan(form, (s.mode, ac))
        elif form == "copy" and all(_single_tap(t) for t in tables):
            axes = [_axis_copy(t, n, o) for t, n, o in zip(tables, in_hw, out_hw)]
            if None not in axes:
                return Plan(form, tuple(axes))
        elif form == "bilinear_filter":
            f = _factors(tables, in_hw, out_hw, _upscale2)
            if f is not None:
                return Plan(form, f)
        elif form == "mean_pool":
            f = _factors(tables, in_hw, out_hw, _downscale2)
            if f is not None:
                return Plan(form, f)
    raise AssertionError("the separable form computes every resize")


def plan_of(node) -> Plan:
    return plan(node["sampling"], node.input.shape[2:], node["new_size"])


# ------------------------------------------------------------------------------------------ the forms
def _replicate(g, src, axis: int, before: int, after: int, name: str):
    """Edge replication of ``before`` / ``after`` rows (0 or 1) along ``axis``: a concat of one-row slices and the
    tensor, marked ``edge_replication`` (Q4 runs it on uint8)."""
    if not before and not after:
        return src
    shape = list(src.shape)
    parts = []
    if before:
        end = list(shape)
        end[axis] = 1
        parts.append(build.strided_slice(g, src, [0] * 4, end, [1] * 4, name=name).output)
    parts.append(src)
    if after:
        begin = [0] * 4
        begin[axis] = shape[axis] - 1
        parts.append(build.strided_slice(g, src, begin, shape, [1] * 4, name=name).output)
    shape[axis] += before + after
    return g.add("concat", parts, [tuple(shape)], [src.dtype], name=name, axis=axis, edge_replication=True).output


def _resize_image(g, x, size, mode: str, align_corners: bool, name: str):
    n, c = x.shape[:2]
    return g.add("resize_image", [x], [(n, c) + tuple(size)], [x.dtype], name=name, mode=mode,
                 new_size=tuple(size), align_corners=bool(align_corners)).output


def _crop(g, x, begin_hw, step_hw, out_hw, name: str):
    if tuple(begin_hw) == (0, 0) and tuple(step_hw) == (1, 1) and tuple(x.shape[2:]) == tuple(out_hw):
        return x
    begin = [0, 0] + list(begin_hw)
    end = list(x.shape[:2]) + [b + s * (o - 1) + 1 for b, s, o in zip(begin_hw, step_hw, out_hw)]
    return build.strided_slice(g, x, begin, end, [1, 1] + list(step_hw), name=name).output


def _lower_resize_image(g, r, src, p: Plan):
    mode, ac = p.detail
    return _resize_image(g, src, r["new_size"], mode, ac, r.name)


def _lower_copy(g, r, src, p: Plan):
    """Replicate the borders, upscale with ncc's nearest kernel, slice."""
    x = src
    for axis, a in zip((2, 3), p.detail):
        x = _replicate(g, x, axis, a.pb, a.pa, r.name)
    if any(a.k > 1 for a in p.detail):
        x = _resize_image(g, x, [d * a.k for d, a in zip(x.shape[2:], p.detail)], "nearest_neighbor", False, r.name)
    return _crop(g, x, [a.start for a in p.detail], [a.step for a in p.detail], r["new_size"], r.name)


def _lower_bilinear_filter(g, r, src, p: Plan):
    sh, sw = p.detail
    x = src
    for axis, s in ((2, sh), (3, sw)):
        if s == 2:
            x = _replicate(g, x, axis, 1, 1, r.name)
    c = x.shape[1]
    up = _resize_image(g, x, [d * s for d, s in zip(x.shape[2:], p.detail)], "nearest_neighbor", False, r.name)
    k = np.outer(_TRIANGLE[sh], _TRIANGLE[sw]).astype(F32)
    conv = build.conv2d(g, up, np.ascontiguousarray(np.broadcast_to(k, (c, 1, 3, 3))), np.zeros(c, F32), c, (1, 1),
                        (1, 1), 1, 1, 1, 1, FULL_RANGE, name=r.name)
    return _crop(g, conv.output, [2 if s == 2 else 0 for s in p.detail], [1, 1], r["new_size"], r.name)


def _lower_mean_pool(g, r, src, p: Plan):
    fh, fw = p.detail
    return g.add("reduce_window2d", [src], [tuple(src.shape[:2]) + tuple(r["new_size"])], [src.dtype], name=r.name,
                 reduce_op="mean", init_value=0.0, filter_h=fh, filter_w=fw, padding_h=(0, 0), padding_w=(0, 0),
                 stride_h=fh, stride_w=fw, dilation_h=1, dilation_w=1, fused_activation=FULL_RANGE).output


def _lower_separable(g, r, src, p: Plan):
    """W axis: [N,C,H,W] -> [N,W,C,H] (W as channels) -> 1x1 conv A_w -> [N,OW,C,H]; H axis: -> [N,H,C,OW] ->
    1x1 conv A_h -> [N,OH,C,OW] -> [N,C,OH,OW]. An identity matrix is left out."""
    s, (h, w), (oh, ow) = r["sampling"], src.shape[2:], r["new_size"]
    a_h, a_w = resample.axis_matrix(s, 0, h, oh).astype(F32), resample.axis_matrix(s, 1, w, ow).astype(F32)
    x = build.transpose(g, src, (0, 3, 1, 2), name=r.name).output
    if not (ow == w and np.array_equal(a_w, np.eye(w, dtype=F32))):
        x = _matrix_conv(g, x, a_w, r.name)
    x = build.transpose(g, x, (0, 3, 2, 1), name=r.name).output
    if not (oh == h and np.array_equal(a_h, np.eye(h, dtype=F32))):
        x = _matrix_conv(g, x, a_h, r.name)
    return build.transpose(g, x, (0, 2, 1, 3), name=r.name).output


def _matrix_conv(g, x, a, name):
    w = np.ascontiguousarray(a.reshape(a.shape[0], a.shape[1], 1, 1))
    return build.conv2d(g, x, w, np.zeros(a.shape[0], F32), 1, (0, 0), (0, 0), 1, 1, 1, 1, FULL_RANGE,
                        name=name).output


BUILDERS = {"resize_image": _lower_resize_image, "copy": _lower_copy, "bilinear_filter": _lower_bilinear_filter,
            "mean_pool": _lower_mean_pool, "separable": _lower_separable}


class LowerResize(Transform):
    """A ``resize`` → exact kmodel v4 ops (see module doc)."""

    name = "lower_resize"
    ops = frozenset({"resize"})

    def match(self, node, ctx):
        return Match([node], [node.input], [node.output])

    def rewrite(self, g, m, ctx):
        r = m.nodes[0]
        p = plan_of(r)
        reroute(m.outputs[0], BUILDERS[p.form](g, r, m.inputs[0].producer, p))
