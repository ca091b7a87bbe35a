"""Resizes with TFLite's sampling (half-pixel centers, align-corners nearest) lowered onto kmodel v4 ops,
first transform of pass P1 (kmodelpy only: ncc ignores these flags and computes another resize, deviation D11).

The importer already keeps ncc's ``resize_image`` wherever TFLite's sampling equals ncc's
(:func:`kmodelpy.ir.resample.same_as_ncc`); a node with a ``half_pixel_centers`` attribute is one where they
differ. Every rewrite below is exact in real arithmetic (float32 rounding aside) and uses only ops that
ncc's pipeline already maps to the KPU or to uint8 CPU kernels:

* **2x bilinear, half-pixel** (per axis 2x or 1x — every TF2 ``UpSampling2D(interpolation='bilinear')``):
  TFLite's output ``2k+r`` is ``¾·x[k] + ¼·x[k∓1]`` with the border row repeated. That is a nearest 2x
  upsample ``u[j] = x[⌊j/2⌋]`` filtered by ``[1,2,1]/4`` per axis (``(u[2k−1] + 2u[2k] + u[2k+1])/4 =
  (x[k−1] + 3x[k])/4``) with edge replication. The graph: replicate the border rows/columns of ``x``
  (slices + concat on the small input), ncc's nearest ResizeImage to ``2H+4`` (its scale is exactly ½),
  a 3x3 depthwise conv ``[1,2,1]ᵀ[1,2,1]/16`` with the KPU's own 'same' padding (its zero border is never
  read by the kept outputs), and a crop of 2 on each side. On the KPU whenever ``2H+4 <= 256`` and
  ``2W+4 <= 512`` (else a uint8 CPU conv).
* **nearest, every axis an arithmetic progression** (half-pixel integer downscale, ...): one strided slice.
* **everything else** (fractional or downscaling bilinear, align-corners nearest, ...): the resize is
  separable, ``y = A_h · x · A_wᵀ`` with TFLite's interpolation matrices (two weights per row for bilinear,
  one 1 for nearest): a 1x1 conv per axis with the axis moved into the channels by a transpose (KPU 1x1
  convs when the shapes fit, else CPU convs).
"""
from __future__ import annotations

import numpy as np

from ...ir.ops import FULL_RANGE
from ...ir.resample import bilinear_taps, ncc_nearest_index, nearest_index, uses_tflite_sampling
from ..rewrite import Match, Transform, reroute
from . import build

_TRIANGLE = {1: np.array([0.0, 1.0, 0.0], np.float32), 2: np.array([0.25, 0.5, 0.25], np.float32)}


def axis_factors(mode: str, in_hw, out_hw, half_pixel: bool) -> tuple[int, int] | None:
    """(s_h, s_w) of a half-pixel bilinear resize by 1x or 2x per axis (the KPU form), else None."""
    if mode != "bilinear" or not half_pixel:
        return None
    factors = tuple(o // i if o % i == 0 else 0 for i, o in zip(in_hw, out_hw))
    return factors if all(f in (1, 2) for f in factors) else None


def progression(idx: np.ndarray) -> tuple[int, int] | None:
    """(begin, stride) when ``idx`` is begin, begin+stride, ... with stride >= 1, else None."""
    if idx.size == 1:
        return int(idx[0]), 1
    step = int(idx[1] - idx[0])
    if step >= 1 and np.array_equal(idx, idx[0] + step * np.arange(idx.size)):
        return int(idx[0]), step
    return None


def interpolation_matrix(node, axis: int) -> np.ndarray:
    """TFLite's [out, in] resampling matrix of spatial axis 2 or 3 (float32)."""
    n_in, n_out = node.input.shape[axis], node["new_size"][axis - 2]
    ac, hp = bool(node["align_corners"]), bool(node["half_pixel_centers"])
    a = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    if node["mode"] == "bilinear":
        lo, hi, frac = bilinear_taps(n_in, n_out, ac, hp)
        np.add.at(a, (rows, lo), np.float32(1.0) - frac)
        np.add.at(a, (rows, hi), frac)
    else:
        a[rows, nearest_index(n_in, n_out, ac, hp)] = 1.0
    return a


def lowering(mode: str, in_hw, out_hw, align_corners: bool, half_pixel: bool) -> str:
    """Which form :class:`LowerTfliteResize` gives a resize with TFLite's sampling: "bilinear2x", "slice" or
    "separable" (the fit report asks the same question)."""
    if axis_factors(mode, in_hw, out_hw, half_pixel) is not None:
        return "bilinear2x"
    if mode == "nearest_neighbor" and all(progression(nearest_index(n, o, align_corners, half_pixel)) is not None
                                          for n, o in zip(in_hw, out_hw)):
        return "slice"
    return "separable"


def _lowering_of(node) -> str:
    return lowering(node["mode"], node.input.shape[2:], node["new_size"], bool(node["align_corners"]),
                    bool(node["half_pixel_centers"]))


def _replicate_border(g, src, axis: int, name: str):
    """Concat of the first row (column), the tensor and its last row: edge replication by one."""
    shape = list(src.shape)
    first_end, last_begin = list(shape), [0] * 4
    first_end[axis], last_begin[axis] = 1, shape[axis] - 1
    first = build.strided_slice(g, src, [0] * 4, first_end, [1] * 4, name=name)
    last = build.strided_slice(g, src, last_begin, shape, [1] * 4, name=name)
    shape[axis] += 2
    return g.add("concat", [first.output, src, last.output], [tuple(shape)], [src.dtype], name=name, axis=axis,
                 edge_replication=True).output


def _bilinear2x(g, r, src):
    n, c, h, w = src.shape
    sh, sw = axis_factors(r["mode"], r.input.shape[2:], r["new_size"], r["half_pixel_centers"])
    x = src
    for axis, s in ((2, sh), (3, sw)):
        if s == 2:
            x = _replicate_border(g, x, axis, r.name)
    up_h = 2 * (h + 2) if sh == 2 else h
    up_w = 2 * (w + 2) if sw == 2 else w
    assert all(np.array_equal(ncc_nearest_index(i, o), np.arange(o) // (o // i))
               for i, o in ((x.shape[2], up_h), (x.shape[3], up_w)))  # ncc's nearest scale is exactly 1/2 (or 1)
    up = g.add("resize_image", [x], [(n, c, up_h, up_w)], [x.dtype], name=r.name, mode="nearest_neighbor",
               new_size=(up_h, up_w), align_corners=False)
    k = np.outer(_TRIANGLE[sh], _TRIANGLE[sw]).astype(np.float32)
    conv = build.conv2d(g, up.output, np.ascontiguousarray(np.broadcast_to(k, (c, 1, 3, 3))), np.zeros(c, np.float32),
                        c, (1, 1), (1, 1), 1, 1, 1, 1, FULL_RANGE, name=r.name)
    b = [0, 0, 2 if sh == 2 else 0, 2 if sw == 2 else 0]
    e = [n, c, b[2] + r["new_size"][0], b[3] + r["new_size"][1]]
    return build.strided_slice(g, conv.output, b, e, [1] * 4, name=r.name).output


def _slice(g, r, src):
    ac, hp = bool(r["align_corners"]), bool(r["half_pixel_centers"])
    begin, end, strides = [0, 0], list(src.shape[:2]), [1, 1]
    for n_in, n_out in zip(src.shape[2:], r["new_size"]):
        b, s = progression(nearest_index(n_in, n_out, ac, hp))
        begin.append(b)
        end.append(b + s * (n_out - 1) + 1)
        strides.append(s)
    return build.strided_slice(g, src, begin, end, strides, name=r.name).output


def _separable(g, r, src):
    """W axis: [N,C,H,W] -> [N,W,C,H] (W as channels) -> 1x1 conv A_w -> [N,OW,C,H]; H axis: -> [N,H,C,OW] ->
    1x1 conv A_h -> [N,OH,C,OW] -> [N,C,OH,OW]."""
    a_h, a_w = interpolation_matrix(r, 2), interpolation_matrix(r, 3)
    x = build.transpose(g, src, (0, 3, 1, 2), name=r.name).output
    if not (a_w.shape[0] == a_w.shape[1] and np.array_equal(a_w, np.eye(a_w.shape[0], dtype=np.float32))):
        x = _matrix_conv(g, x, a_w, r.name)
    x = build.transpose(g, x, (0, 3, 2, 1), name=r.name).output
    if not (a_h.shape[0] == a_h.shape[1] and np.array_equal(a_h, np.eye(a_h.shape[0], dtype=np.float32))):
        x = _matrix_conv(g, x, a_h, r.name)
    return build.transpose(g, x, (0, 2, 1, 3), name=r.name).output


def _matrix_conv(g, x, a, name):
    w = np.ascontiguousarray(a.reshape(a.shape[0], a.shape[1], 1, 1))
    return build.conv2d(g, x, w, np.zeros(a.shape[0], np.float32), 1, (0, 0), (0, 0), 1, 1, 1, 1, FULL_RANGE,
                        name=name).output


BUILDERS = {"bilinear2x": _bilinear2x, "slice": _slice, "separable": _separable}


class LowerTfliteResize(Transform):
    """A ``resize_image`` with TFLite's sampling → exact kmodel v4 ops (see module doc)."""

    name = "lower_tflite_resize"
    ops = frozenset({"resize_image"})

    def match(self, node, ctx):
        if uses_tflite_sampling(node):
            return Match([node], [node.input], [node.output])
        return None

    def rewrite(self, g, m, ctx):
        r = m.nodes[0]
        reroute(m.outputs[0], BUILDERS[_lowering_of(r)](g, r, m.inputs[0].producer))
