"""ncc's float emulation of a fake KPU convolution, used by the calibration (compiler spec §8.2;
k210_kernels.h ``fake_kpu_conv2d`` + ``kpu_pool2d``): a stride-1 conv with the KPU's implicit zero
padding (0 for 1×1, 1 for 3×3), every output starting from its bias and adding its in-image taps in
ic → ky → kx order (one f32 multiply, one f32 add each — the order of kmodelpy.ops.conv2d, so the
results are bit-identical, see tests/test_compile_passes.py), the fused clamp, then the pool in float32.

Two kernels compute the same numbers with different vectorisation: along output rows (NCHW; wide
images, few channels) or along output channels (NHWC; small images, many channels). For the
select pools (left/right-top) only the kept pixels are computed.
"""
from __future__ import annotations

import numba
import numpy as np

from ..ops._arith import clamp

POOL_FILTER = {0: 1, 1: 2, 2: 2, 3: 4, 4: 4, 5: 2, 6: 2, 7: 4, 8: 2, 9: 2}
POOL_STRIDE = {0: 1, 1: 2, 2: 2, 3: 4, 4: 4, 5: 2, 6: 2, 7: 4, 8: 1, 9: 1}
SELECT_OFFSET = {5: (0, 0), 6: (0, 1), 7: (0, 0)}  # left_top_2_s2, right_top_2_s2, left_top_4_s4
F32_LOWEST = np.float32(-np.finfo(np.float32).max)


def kpu_pool_f32(x: np.ndarray, pool_type: int) -> np.ndarray:
    """kpu_pool2d on float32 NCHW data, in ncc's order (sequential float32 sums for mean pools)."""
    if pool_type == 0:
        return x
    n, c, h, w = x.shape
    f, s = POOL_FILTER[pool_type], POOL_STRIDE[pool_type]
    oh, ow = h // s, w // s
    if pool_type in SELECT_OFFSET:  # offset < stride and out = floor(in/stride): always inside the image
        dy, dx = SELECT_OFFSET[pool_type]
        return x[:, :, dy::s, dx::s][:, :, :oh, :ow]
    oy = np.arange(oh) * s
    ox = np.arange(ow) * s
    if pool_type in (1, 3, 9):  # max pools: out-of-image taps are the lowest float
        xp = np.full((n, c, h + f, w + f), F32_LOWEST, np.float32)
        xp[:, :, :h, :w] = x
        out = np.full((n, c, oh, ow), F32_LOWEST, np.float32)
        for ky in range(f):
            for kx in range(f):
                out = np.maximum(out, xp[:, :, oy + ky][:, :, :, ox + kx])
        return out
    out = np.zeros((n, c, oh, ow), np.float32)  # mean pools: taps clamped into the image
    for ky in range(f):
        yy = np.clip(oy + ky, 0, h - 1)
        for kx in range(f):
            xx = np.clip(ox + kx, 0, w - 1)
            out = (out + x[:, :, yy][:, :, :, xx]).astype(np.float32)
    return (out / np.float32(f * f)).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _conv_channels(x, wt, bias, k, depthwise, lo, hi, s, dy, dx, oh, ow, out):
    """NHWC ``x`` [N, H, W, IC] → ``out`` [N·OH·OW, OC] at conv centres (i·s+dy, j·s+dx); ``wt`` is
    [IC·k·k, OC] (regular) or [k·k, C] (depthwise). Vectorised over output channels."""
    n_b, h, w, ic_n = x.shape
    oc_n = out.shape[1]
    p = 0 if k == 1 else 1
    acc = np.empty(oc_n, np.float32)
    for n in range(n_b):
        for i in range(oh):
            oy = i * s + dy
            ky0 = max(0, p - oy)
            ky1 = min(k, h - oy + p)
            for j in range(ow):
                ox = j * s + dx
                kx0 = max(0, p - ox)
                kx1 = min(k, w - ox + p)
                for o in range(oc_n):
                    acc[o] = bias[o]
                # (indexed in place: a row view per tap would cost two atomic reference-count
                # updates, more than the tap's own multiply-adds)
                if depthwise:
                    for ky in range(ky0, ky1):
                        for kx in range(kx0, kx1):
                            yy, xx, r = oy + ky - p, ox + kx - p, ky * k + kx
                            for o in range(oc_n):
                                acc[o] += x[n, yy, xx, o] * wt[r, o]
                else:
                    for ic in range(ic_n):
                        for ky in range(ky0, ky1):
                            for kx in range(kx0, kx1):
                                xv = x[n, oy + ky - p, ox + kx - p, ic]
                                r = (ic * k + ky) * k + kx
                                for o in range(oc_n):
                                    acc[o] += xv * wt[r, o]
                row = (n * oh + i) * ow + j
                for o in range(oc_n):
                    out[row, o] = clamp(acc[o], lo, hi)


@numba.njit(cache=True, nogil=True)
def _conv_rows(x, w, bias, k, depthwise, lo, hi, s, dy, dx, out):
    """NCHW ``x`` → NCHW ``out`` [N, OC, OH, OW] at conv centres (i·s+dy, j·s+dx). Vectorised along
    output rows."""
    n_b, _, h, wd = x.shape
    ic_n = w.shape[1]
    oc_n, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    p = 0 if k == 1 else 1
    acc = np.empty(ow, np.float32)
    for n in range(n_b):
        for o in range(oc_n):
            for i in range(oh):
                oy = i * s + dy
                ky0 = max(0, p - oy)
                ky1 = min(k, h - oy + p)
                for j in range(ow):
                    acc[j] = bias[o]
                for ic in range(ic_n):
                    for ky in range(ky0, ky1):
                        xrow = x[n, o if depthwise else ic, oy + ky - p]
                        for kx in range(k):
                            wv = w[o, ic, ky, kx]
                            first = p - dx - kx  # j·s must be >= first for the tap to be in the image
                            j0 = 0 if first <= 0 else (first + s - 1) // s
                            last = wd - 1 - dx - kx + p  # ... and <= last
                            if last < 0:
                                continue
                            j1 = min(ow, last // s + 1)
                            if j1 <= j0:
                                continue
                            start = j0 * s + dx + kx - p
                            accs = acc[j0:j1]
                            if s == 1:  # contiguous slices: LLVM vectorises (no FMA, no reassociation)
                                xs = xrow[start:start + (j1 - j0)]
                                for t in range(j1 - j0):
                                    accs[t] += xs[t] * wv
                            else:
                                for t in range(j1 - j0):
                                    accs[t] += xrow[start + t * s] * wv
                for j in range(ow):
                    out[n, o, i, j] = clamp(acc[j], lo, hi)


_PREPARED: dict = {}  # id(weights) -> (weights, [(IC or 1)·k·k, OC] copy); the array is kept alive here


def _channels_last(weights) -> np.ndarray:
    hit = _PREPARED.get(id(weights))
    if hit is None or hit[0] is not weights:
        w = np.asarray(weights, np.float32)
        hit = (weights, np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0))).reshape(-1, w.shape[0]))
        if len(_PREPARED) > 1024:
            _PREPARED.clear()
        _PREPARED[id(weights)] = hit
    return hit[1]


def release_prepared() -> None:
    """Forget the channels-last weight copies (the calibration calls it when a run ends)."""
    _PREPARED.clear()


def kpu_conv_f32(x, weights, bias, depthwise: bool, act, pool_type: int = 0) -> np.ndarray:
    """Fake KPU conv + pool: NCHW float32 in and out. The result may be an NCHW *view* of an NHWC
    buffer (chained KPU convs then never copy between layouts)."""
    w = np.asarray(weights, np.float32)
    oc, _, k, _ = w.shape
    lo, hi = np.float32(act[0]), np.float32(act[1])
    b = np.ascontiguousarray(bias, np.float32).reshape(-1)
    n, _, h, wd = x.shape
    if pool_type in SELECT_OFFSET:
        s = POOL_STRIDE[pool_type]
        dy, dx = SELECT_OFFSET[pool_type]
        oh, ow = h // s, wd // s
    else:
        s, dy, dx, oh, ow = 1, 0, 0, h, wd
    # kernel choice by measurement: rows for wide depthwise layers with few channels and for narrow
    # stride-1 convs over wide images; channels (NHWC) otherwise, and for every select-pool layer
    if (depthwise and oc < 32 and wd >= 32 and s == 1) or (not depthwise and s == 1 and oc <= 16 and wd >= 32):
        out = np.empty((n, oc, oh, ow), np.float32)
        _conv_rows(np.ascontiguousarray(x, np.float32), np.ascontiguousarray(w), b, k, bool(depthwise), lo, hi,
                   s, dy, dx, out)
    else:
        xh = np.ascontiguousarray(np.transpose(np.asarray(x, np.float32), (0, 2, 3, 1)))
        flat = np.empty((n * oh * ow, oc), np.float32)
        _conv_channels(xh, _channels_last(weights), b, k, bool(depthwise), lo, hi, s, dy, dx, oh, ow, flat)
        out = np.transpose(flat.reshape(n, oh, ow, oc), (0, 3, 1, 2))
    return out if pool_type in SELECT_OFFSET else kpu_pool_f32(out, pool_type)
