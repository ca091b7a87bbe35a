"""The sampling of a ``resize`` node — where each output reads its input — and its float evaluation.

Both front ends import a resize as one HLIR ``resize`` node whose :class:`Sampling` is the source model's own
definition; the compiler lowers it (:mod:`kmodelpy.compiler.transforms.resize_lowering`), the float evaluator
computes it here. Per axis, output ``o`` of ``n_out`` reads source coordinate ``v`` of ``n_in``:

=========================  ===========================================  ============================================
coordinate                 TFLite's reference kernels (``tflite``)      onnxruntime (``onnx``; ``s`` its scale)
=========================  ===========================================  ============================================
``asymmetric``             ``o · (in/out)``                             ``o / s``
``half_pixel``             ``(o + ½) · (in/out) − ½`` (bilinear)        ``(o + ½) / s − ½``
``pytorch_half_pixel``     —                                            ``half_pixel``, but 0 when out = 1
``half_pixel_symmetric``   —                                            ``half_pixel`` shifted to keep the centre
``tf_half_pixel_for_nn``   ``(o + ½) · (in/out)`` (nearest)             ``(o + ½) / s``
``align_corners``          ``o · ((in−1)/(out−1))``                     ``o · (in−1) / (out−1)``
=========================  ===========================================  ============================================

all in float32 with each framework's own operation order (``convention``), so a nearest index or a weight
falls exactly where the framework puts it (TFLite's ``resize_bilinear.h`` ``ComputeInterpolationValues`` and
``resize_nearest_neighbor.h`` ``GetNearestNeighbor``; onnxruntime's ``upsamplebase.h``). TFLite's scale is
``in/out`` (``(in−1)/(out−1)`` with align_corners and out > 1); ONNX's ``s`` is the model's scale when it gives
one, else ``out/in``.

* **nearest**: index ``floor(v)``, ``ceil(v)``, ``round_prefer_floor`` / ``round_prefer_ceil`` (the nearer
  index, a tie to the lower / upper one — onnxruntime counts a fraction within 1e-6 of ½ as a tie; TFLite's
  align-corners rounding is ``round_prefer_ceil``, exact) or ONNX's ``simple`` (Resize-10, Upsample: ``ceil``
  when downscaling, else truncation), clamped to ``[0, in−1]``; onnxruntime copies an axis whose scale is 1.
* **bilinear**: ``lo = max(floor(v), 0)``, ``hi = min(ceil(v), in−1)``, the weight of ``hi`` is ``v − lo``
  (onnxruntime first clamps ``v`` to ``[0, in−1]``; TFLite's border rows then weigh one row twice, which is the
  same value), and the output is TFLite's ``x[lo,lo]·(1−dy)·(1−dx) + x[hi,lo]·dy·(1−dx) + x[lo,hi]·(1−dy)·dx +
  x[hi,hi]·dy·dx``, or for ``onnx`` onnxruntime's own weights and order (:func:`_onnx_bilinear`): both bit for bit.
* **cubic** (ONNX): the 4-tap cubic convolution with coefficient ``a`` (−0.75 by default; −0.5 is Keys'),
  border taps clamped to the edge or, with ``exclude_outside``, dropped and the rest renormalised;
  **antialias** (ONNX, downscaling only) stretches the linear or cubic kernel by ``1/s`` and normalises it.
  Both are an ``[out, in]`` matrix per axis (:func:`axis_matrix`), applied as ``A_h · x · A_wᵀ``.

ncc's own ResizeImage (:mod:`kmodelpy.ops.resize_image`) samples at ``o · (in/out)`` (``(in−1)/(out−1)`` for
align-corners bilinear) with a floor: :func:`ncc_taps` gives its tables, which the lowering compares with the
requested ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32 = np.float32
COORDINATES = ("asymmetric", "half_pixel", "pytorch_half_pixel", "half_pixel_symmetric", "tf_half_pixel_for_nn",
               "align_corners")
NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil", "simple")
MODES = ("bilinear", "nearest_neighbor", "cubic")
CONVENTIONS = ("tflite", "onnx")
ONNX_TIE = 1e-6  # onnxruntime's round_prefer_* treat a fraction this close to ½ as a tie
WEIGHT_TOLERANCE = 2.0 ** -20  # two interpolation weights this close are the same sampling (float rounding)


@dataclass(frozen=True)
class Sampling:
    """A resize's full definition but the output size (the ``resize`` node's ``sampling`` attribute)."""

    mode: str  # one of MODES
    coordinate: str = "asymmetric"  # one of COORDINATES
    nearest_mode: str = "floor"  # one of NEAREST_MODES (nearest only)
    convention: str = "onnx"  # whose float32 formulas: "tflite" or "onnx" (module doc)
    scales: tuple | None = None  # ONNX: the model's (scale_h, scale_w), float32; None: out/in
    cubic_a: float = -0.75
    exclude_outside: bool = False
    antialias: bool = False

    def __post_init__(self):
        for value, allowed in ((self.mode, MODES), (self.coordinate, COORDINATES),
                               (self.nearest_mode, NEAREST_MODES), (self.convention, CONVENTIONS)):
            if value not in allowed:
                raise ValueError(f"resize sampling {value!r} is not one of {', '.join(allowed)}")

    def scale(self, axis: int, n_in: int, n_out: int) -> np.float32:
        """ONNX's scale of spatial axis 0 (H) or 1 (W)."""
        return F32(self.scales[axis]) if self.scales is not None else F32(n_out) / F32(n_in)

    @property
    def is_matrix(self) -> bool:
        """Cubic and antialiased resizes are evaluated as per-axis matrices."""
        return self.mode == "cubic" or self.antialias

    @classmethod
    def tflite(cls, mode: str, align_corners: bool, half_pixel_centers: bool) -> "Sampling":
        """RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR's flags (both set is refused by TFLite and the importer)."""
        if align_corners:
            coordinate = "align_corners"
        elif half_pixel_centers:
            coordinate = "half_pixel" if mode == "bilinear" else "tf_half_pixel_for_nn"
        else:
            coordinate = "asymmetric"
        return cls(mode, coordinate, "round_prefer_ceil" if align_corners else "floor", "tflite")


# ------------------------------------------------------------------------------------------ per axis
def source_coordinates(s: Sampling, axis: int, n_in: int, n_out: int) -> np.ndarray:
    """The float32 source coordinate of every output index of spatial axis ``axis`` (0: H, 1: W)."""
    o = np.arange(n_out, dtype=F32)
    c = s.coordinate
    if s.convention == "tflite":
        scale = F32(n_in - 1) / F32(n_out - 1) if c == "align_corners" and n_out > 1 else F32(n_in) / F32(n_out)
        if c == "half_pixel":
            return ((o + F32(0.5)) * scale - F32(0.5)).astype(F32)
        if c == "tf_half_pixel_for_nn":
            return ((o + F32(0.5)) * scale).astype(F32)
        return (o * scale).astype(F32)
    sc = s.scale(axis, n_in, n_out)
    if c == "asymmetric":
        v = o / sc
    elif c == "half_pixel" or (c == "pytorch_half_pixel" and n_out > 1):
        v = (o + F32(0.5)) / sc - F32(0.5)
    elif c == "pytorch_half_pixel":
        v = np.zeros(n_out, F32)
    elif c == "half_pixel_symmetric":  # onnxruntime adds in double here
        adjustment = F32(n_out) / (sc * F32(n_in))
        offset = F32(n_in) / F32(2) * (F32(1) - adjustment)
        v = (np.float64(offset) + (o + 0.5) / np.float64(sc) - 0.5).astype(F32)
    elif c == "tf_half_pixel_for_nn":
        v = (o + F32(0.5)) / sc
    elif n_out == 1:  # align_corners
        v = np.zeros(1, F32)
    else:
        v = o * F32(n_in - 1) / F32(n_out - 1)
    return np.asarray(v, F32)


def _round(v: np.ndarray, mode: str, downscale: bool, tie: float) -> np.ndarray:
    """``v`` rounded by ``mode``; a fraction within ``tie`` of ½ is a tie (onnxruntime: 1e-6; TFLite: exact)."""
    fl = np.floor(v)
    frac = v - fl  # exact in float32
    if mode == "floor":
        return fl
    if mode == "ceil":
        return np.ceil(v)
    if mode in ("round_prefer_floor", "round_prefer_ceil"):
        half = np.abs(frac - F32(0.5)) <= F32(tie)
        return np.where(half, fl + (mode == "round_prefer_ceil"), np.where(frac > F32(0.5), fl + 1, fl))
    return np.ceil(v) if downscale else np.trunc(v)  # simple


def nearest_index(s: Sampling, axis: int, n_in: int, n_out: int) -> np.ndarray:
    """The source index of every output index (int64). onnxruntime copies an axis whose scale is 1."""
    if s.convention == "onnx" and s.scale(axis, n_in, n_out) == 1:
        return np.minimum(np.arange(n_out), n_in - 1)
    v = source_coordinates(s, axis, n_in, n_out)
    onnx = s.convention == "onnx"
    idx = _round(v, s.nearest_mode, onnx and s.scale(axis, n_in, n_out) < 1, ONNX_TIE if onnx else 0.0)
    return np.clip(idx.astype(np.int64), 0, n_in - 1)


def bilinear_taps(s: Sampling, axis: int, n_in: int, n_out: int):
    """(lo, hi, frac): the two source indices of every output index and the weight of ``hi`` (float32)."""
    v = source_coordinates(s, axis, n_in, n_out)
    if s.convention == "onnx":
        v = np.clip(v, F32(0), F32(n_in - 1)).astype(F32)
    lo = np.maximum(np.floor(v).astype(np.int64), 0)
    hi = np.minimum(np.ceil(v).astype(np.int64), n_in - 1)
    return lo, hi, (v - lo.astype(F32)).astype(F32)


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def axis_matrix(s: Sampling, axis: int, n_in: int, n_out: int) -> np.ndarray:
    """The ``[n_out, n_in]`` float64 matrix of the resize along one axis (every mode)."""
    a = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if s.mode == "nearest_neighbor":
        a[rows, nearest_index(s, axis, n_in, n_out)] = 1.0
        return a
    if not s.is_matrix:
        lo, hi, frac = bilinear_taps(s, axis, n_in, n_out)
        np.add.at(a, (rows, lo), 1.0 - frac.astype(np.float64))
        np.add.at(a, (rows, hi), frac.astype(np.float64))
        return a
    v = source_coordinates(s, axis, n_in, n_out).astype(np.float64)
    sc = float(s.scale(axis, n_in, n_out))
    stretch = min(sc, 1.0) if s.antialias else 1.0  # antialias widens the kernel when downscaling
    support = (2.0 if s.mode == "cubic" else 1.0) / stretch
    first = np.floor(v - support).astype(np.int64) + 1  # taps strictly inside the support
    taps = first[:, None] + np.arange(int(np.ceil(2 * support)) + 1)[None, :]
    d = (taps - v[:, None]) * stretch
    w = _cubic(d, s.cubic_a) if s.mode == "cubic" else np.clip(1.0 - np.abs(d), 0.0, None)
    inside = (taps >= 0) & (taps < n_in)
    if s.exclude_outside:
        w = np.where(inside, w, 0.0)
    if s.exclude_outside or s.antialias:
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    np.add.at(a, (np.repeat(rows, taps.shape[1]), np.clip(taps, 0, n_in - 1).reshape(-1)), w.reshape(-1))
    return a


# ------------------------------------------------------------------------------------------ ncc's kernel
def ncc_taps(mode: str, n_in: int, n_out: int, align_corners: bool = False):
    """ncc's ResizeImage sampling as (lo, hi, frac) (nearest: ``hi = lo``, ``frac = 0``), runtime spec §B.16."""
    if mode == "bilinear" and align_corners and n_out > 1:
        scale = F32(n_in - 1) / F32(n_out - 1)
    else:
        scale = F32(n_in) / F32(n_out)
    v = (np.arange(n_out, dtype=F32) * scale).astype(F32)
    lo = np.minimum(np.floor(v).astype(np.int64), n_in - 1)
    if mode != "bilinear":
        return lo, lo, np.zeros(n_out, F32)
    return lo, np.minimum(lo + 1, n_in - 1), (v - lo.astype(F32)).astype(F32)


def taps(s: Sampling, axis: int, n_in: int, n_out: int):
    """The requested sampling of a nearest or bilinear axis as (lo, hi, frac)."""
    if s.mode == "nearest_neighbor":
        idx = nearest_index(s, axis, n_in, n_out)
        return idx, idx, np.zeros(n_out, F32)
    return bilinear_taps(s, axis, n_in, n_out)


def canonical(lo, hi, frac):
    """(lo, hi, frac) with one tap written one way: ``hi == lo`` and ``frac == 0`` whenever an output reads one
    source index (``frac`` within :data:`WEIGHT_TOLERANCE` of 0 or 1, or both taps alike)."""
    lo, hi, frac = np.asarray(lo), np.asarray(hi), np.asarray(frac, np.float64)
    one = (hi == lo) | (frac <= WEIGHT_TOLERANCE) | (frac >= 1 - WEIGHT_TOLERANCE)
    lo = np.where(frac >= 1 - WEIGHT_TOLERANCE, hi, lo)
    return lo, np.where(one, lo, hi), np.where(one, 0.0, frac)


def same_taps(a, b) -> bool:
    """Two (lo, hi, frac) tables read the same inputs with the same weights (up to float rounding)."""
    (lo1, hi1, f1), (lo2, hi2, f2) = canonical(*a), canonical(*b)
    return bool(lo1.shape == lo2.shape and np.array_equal(lo1, lo2) and np.array_equal(hi1, hi2)
                and np.all(np.abs(f1 - f2) <= WEIGHT_TOLERANCE))


# ------------------------------------------------------------------------------------------ evaluation
def resize(x, out_hw, s: Sampling) -> np.ndarray:
    """The float resize of an NCHW array (module doc); TFLite's reference arithmetic for bilinear."""
    x = np.asarray(x, F32)
    _, _, h, w = x.shape
    oh, ow = int(out_hw[0]), int(out_hw[1])
    if s.is_matrix:
        a_h, a_w = axis_matrix(s, 0, h, oh), axis_matrix(s, 1, w, ow)
        return np.ascontiguousarray(np.einsum("oh,nchw,pw->ncop", a_h, x.astype(np.float64), a_w), F32)
    if s.mode == "nearest_neighbor":
        return np.ascontiguousarray(x[:, :, nearest_index(s, 0, h, oh), :][..., nearest_index(s, 1, w, ow)])
    if s.convention == "onnx":
        return _onnx_bilinear(x, oh, ow, s)
    y0, y1, dy = bilinear_taps(s, 0, h, oh)
    x0, x1, dx = bilinear_taps(s, 1, w, ow)
    dy, dx = dy[:, None], dx[None, :]
    one = F32(1.0)
    rows0, rows1 = x[:, :, y0, :], x[:, :, y1, :]
    out = rows0[..., x0] * (one - dy) * (one - dx)
    out = out + rows1[..., x0] * dy * (one - dx)
    out = out + rows0[..., x1] * (one - dy) * dx
    out = out + rows1[..., x1] * dy * dx
    return np.ascontiguousarray(out, F32)


def _onnx_bilinear(x: np.ndarray, oh: int, ow: int, s: Sampling) -> np.ndarray:
    """onnxruntime's bilinear arithmetic (``upsample.cc``): per axis ``v`` clamped to ``[0, in−1]``, ``i1 = ⌊v⌋``,
    ``i2 = min(i1 + 1, in−1)``, ``d1 = |v − i1|``, ``d2 = |v − i2|`` (½ each when ``i1 = i2``), ``y = d2x·d2y·x[i1,i1] + d1x·d2y·x[i1,i2] + d2x·d1y·x[i2,i1] + d1x·d1y·x[i2,i2]``
    in float32 — bit for bit its output."""
    def axis(ax, n, o):
        v = np.clip(source_coordinates(s, ax, n, o), F32(0), F32(n - 1)).astype(F32)
        lo = np.minimum(np.floor(v).astype(np.int64), n - 1)
        hi = np.minimum(lo + 1, n - 1)
        one = lo == hi
        d1 = np.where(one, F32(0.5), np.abs(v - lo.astype(F32))).astype(F32)
        d2 = np.where(one, F32(0.5), np.abs(v - hi.astype(F32))).astype(F32)
        return lo, hi, d1, d2

    y1, y2, dy1, dy2 = axis(0, x.shape[2], oh)
    x1, x2, dx1, dx2 = axis(1, x.shape[3], ow)
    dx1, dx2, dy1, dy2 = dx1[None, :], dx2[None, :], dy1[:, None], dy2[:, None]
    top, bottom = x[:, :, y1, :], x[:, :, y2, :]
    out = dx2 * dy2 * top[..., x1] + dx1 * dy2 * top[..., x2] + dx2 * dy1 * bottom[..., x1] + dx1 * dy1 * bottom[..., x2]
    return np.ascontiguousarray(out, F32)
