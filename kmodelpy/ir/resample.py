"""Where a resize reads its input: TFLite's sampling (half-pixel centers, align-corners nearest) next to ncc's
ResizeImage sampling, as per-axis tables, and TFLite's float evaluation of a ``resize_image`` node.

TFLite's reference kernels define the sampling (tensorflow/lite/kernels/internal/reference/
resize_bilinear.h ``ComputeInterpolationValues``, resize_nearest_neighbor.h ``GetNearestNeighbor``), all in
float32: ``scale = in/out``, or ``(in-1)/(out-1)`` with align_corners and out > 1;

* bilinear: ``v = (o + 0.5)·scale − 0.5`` with half-pixel centers, else ``o·scale``; ``lo = max(floor(v), 0)``,
  ``hi = min(ceil(v), in−1)``, and the weight of ``hi`` is ``v − lo`` (so a border output, where ``v < 0`` or
  ``v > in−1``, reads one input row: edge replication). The output is
  ``x[lo,lo]·(1−dy)·(1−dx) + x[hi,lo]·dy·(1−dx) + x[lo,hi]·(1−dy)·dx + x[hi,hi]·dy·dx``, left to right.
* nearest: ``t = (o + offset)·scale`` (offset 0.5 with half-pixel centers), index ``round(t)`` (half away
  from zero) with align_corners else ``floor(t)``, at most ``in−1``, at least 0 with half-pixel centers.

ncc's ResizeImage (:mod:`kmodelpy.ops.resize_image`) has no half-pixel mode and no align-corners nearest:
``v = o·scale``, ``lo = floor(v)``, ``hi = min(lo+1, in−1)``, nearest ``min(floor(o·scale), in−1)``.
:func:`same_as_ncc` compares the tables, so the importer keeps ncc's op exactly where the two agree
(e.g. a half-pixel nearest upscale by an integer factor) and the compiler lowers the rest
(:mod:`kmodelpy.compiler.transforms.resize_lowering`).
"""
from __future__ import annotations

import numpy as np

F32 = np.float32


def _scale(n_in: int, n_out: int, align_corners: bool) -> np.float32:
    if align_corners and n_out > 1:
        return F32(n_in - 1) / F32(n_out - 1)
    return F32(n_in) / F32(n_out)


def bilinear_taps(n_in: int, n_out: int, align_corners: bool, half_pixel: bool):
    """TFLite's per-axis bilinear sampling: (lo, hi, frac) arrays over the outputs (int64, int64, float32)."""
    scale = _scale(n_in, n_out, align_corners)
    o = np.arange(n_out, dtype=F32)
    v = (o + F32(0.5)) * scale - F32(0.5) if half_pixel else o * scale
    v = v.astype(F32)
    lo = np.maximum(np.floor(v).astype(np.int64), 0)
    hi = np.minimum(np.ceil(v).astype(np.int64), n_in - 1)
    return lo, hi, (v - lo.astype(F32)).astype(F32)


def nearest_index(n_in: int, n_out: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """TFLite's per-axis nearest-neighbour source index (int64 array over the outputs)."""
    scale = _scale(n_in, n_out, align_corners)
    t = ((np.arange(n_out, dtype=F32) + F32(0.5 if half_pixel else 0.0)) * scale).astype(F32)
    idx = np.trunc(t + np.copysign(F32(0.5), t)) if align_corners else np.floor(t)
    idx = np.minimum(idx.astype(np.int64), n_in - 1)
    return np.maximum(idx, 0) if half_pixel else idx


def ncc_bilinear_taps(n_in: int, n_out: int, align_corners: bool):
    """ncc's ResizeImage bilinear sampling (kmodelpy.ops.resize_image._resize_bilinear) as (lo, hi, frac)."""
    scale = _scale(n_in, n_out, align_corners)
    v = (np.arange(n_out, dtype=F32) * scale).astype(F32)
    lo = np.floor(v).astype(np.int64)
    return lo, np.minimum(lo + 1, n_in - 1), (v - lo.astype(F32)).astype(F32)


def ncc_nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """ncc's ResizeImage nearest sampling (kmodelpy.ops.resize_image._resize_nearest)."""
    v = (np.arange(n_out, dtype=F32) * (F32(n_in) / F32(n_out))).astype(F32)
    return np.minimum(np.floor(v).astype(np.int64), n_in - 1)


def _same_taps(a, b) -> bool:
    """Same samples: equal weights and low index, and equal high index wherever its weight is not 0."""
    (lo1, hi1, f1), (lo2, hi2, f2) = a, b
    return bool(np.array_equal(lo1, lo2) and np.array_equal(f1, f2) and np.all((hi1 == hi2) | (f1 == 0)))


def same_as_ncc(mode: str, in_hw, out_hw, align_corners: bool, half_pixel: bool) -> bool:
    """True when TFLite's sampling equals ncc's ResizeImage sampling on both axes (same result, any input)."""
    for n_in, n_out in zip(in_hw, out_hw):
        if mode == "bilinear":
            if not _same_taps(bilinear_taps(n_in, n_out, align_corners, half_pixel),
                              ncc_bilinear_taps(n_in, n_out, align_corners)):
                return False
        elif not np.array_equal(nearest_index(n_in, n_out, align_corners, half_pixel), ncc_nearest_index(n_in, n_out)):
            return False
    return True


def uses_tflite_sampling(node) -> bool:
    """A ``resize_image`` node with TFLite's sampling where it differs from ncc's: the importer gives it a
    ``half_pixel_centers`` attribute (True or False); ncc's own resizes have none."""
    return "half_pixel_centers" in node.attrs


def resize_tflite(x, out_h: int, out_w: int, mode: str, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """TFLite's float resize of an NCHW array, bit for bit its reference kernel's arithmetic."""
    x = np.asarray(x, F32)
    _, _, h, w = x.shape
    if mode == "bilinear":
        y0, y1, dy = bilinear_taps(h, out_h, align_corners, half_pixel)
        x0, x1, dx = bilinear_taps(w, out_w, align_corners, half_pixel)
        dy, dx = dy[:, None], dx[None, :]
        one = F32(1.0)
        rows0, rows1 = x[:, :, y0, :], x[:, :, y1, :]
        out = rows0[..., x0] * (one - dy) * (one - dx)
        out = out + rows1[..., x0] * dy * (one - dx)
        out = out + rows0[..., x1] * (one - dy) * dx
        out = out + rows1[..., x1] * dy * dx
        return np.ascontiguousarray(out, F32)
    iy = nearest_index(h, out_h, align_corners, half_pixel)
    ix = nearest_index(w, out_w, align_corners, half_pixel)
    return np.ascontiguousarray(x[:, :, iy, :][..., ix])
