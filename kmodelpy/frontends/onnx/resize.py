"""ONNX Resize / Upsample on the K210's one resize kernel.

The kmodel's ResizeImage knows two coordinate rules only: ``src = dst · in/out`` (ONNX "asymmetric";
nearest takes the floor) and ``align_corners``. Every other ONNX form is rebuilt exactly from that kernel
plus edge padding, strided slices and a 2x2 mean pool:

* **nearest**, any ``coordinate_transformation_mode`` / ``nearest_mode``: onnxruntime's source index of
  every output row/column is computed here (float32, as onnxruntime does). Per axis it is either an
  arithmetic progression (a strided slice: downscaling, identity) or ``clamp(floor((m + start)/s) − pad)``
  for an integer factor ``s`` — an asymmetric nearest upscale by ``s`` of the axis edge-padded by ``pad``,
  sliced from ``start``. The importer checks the rebuilt index map against onnxruntime's before using it.
* **linear**, ``asymmetric`` and ``align_corners``: the kernel as it is. ``half_pixel`` /
  ``pytorch_half_pixel`` (PyTorch's bilinear default, which ncc computes as asymmetric) with an integer
  upscale ``s``: edge-pad 1, asymmetric bilinear upscale by ``2s``, then the strided slice that starts at
  ``s + 1`` with step 2 — position ``2m + 1 + s`` of the ``2s`` upscale is exactly ``(m + ½)/s − ½`` of the
  input. A ``half_pixel`` downscale by 2 is a 2x2 (or 2x1) mean pool; by an odd factor, a strided slice.
* cubic, ``tf_crop_and_resize``, ``tf_half_pixel_for_nn`` with linear, antialiasing and other scales are
  refused with one line.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32


def source_coords(out_len: int, in_len: int, scale: float, ctm: str) -> np.ndarray:
    """onnxruntime's original coordinate of every output index (float32 arithmetic)."""
    m = np.arange(out_len, dtype=F32)
    s = F32(scale)
    if ctm == "asymmetric":
        return m / s
    if ctm == "half_pixel" or (ctm == "pytorch_half_pixel" and out_len > 1):
        return (m + F32(0.5)) / s - F32(0.5)
    if ctm == "pytorch_half_pixel":
        return np.zeros(out_len, F32)
    if ctm == "tf_half_pixel_for_nn":
        return (m + F32(0.5)) / s
    if ctm == "align_corners":
        if out_len == 1:
            return np.zeros(1, F32)
        return m * F32(in_len - 1) / F32(out_len - 1)
    raise ValueError(f"coordinate_transformation_mode {ctm!r}")


def nearest_index(coords: np.ndarray, mode: str, in_len: int, downsample: bool) -> np.ndarray:
    """onnxruntime's nearest source index (``simple`` is Resize-10 / Upsample), clamped to the input."""
    fl = np.floor(coords)
    if mode == "round_prefer_floor":
        idx = np.where(coords == fl + F32(0.5), fl, np.round(coords))
    elif mode == "round_prefer_ceil":
        idx = np.where(coords == fl + F32(0.5), fl + 1, np.round(coords))
    elif mode == "floor":
        idx = fl
    elif mode == "ceil":
        idx = np.ceil(coords)
    elif mode == "simple":
        idx = np.ceil(coords) if downsample else np.trunc(coords)
    else:
        raise ValueError(f"nearest_mode {mode!r}")
    return np.clip(idx.astype(np.int64), 0, in_len - 1)


def _kernel_nearest(n: int, out_len: int) -> np.ndarray:
    """The K210 nearest kernel's source index (runtime spec §B.16)."""
    sh = F32(n) / F32(out_len)
    return np.minimum(np.floor(np.arange(out_len, dtype=F32) * sh).astype(np.int64), n - 1)


def nearest_plan(idx: np.ndarray, in_len: int):
    """How to produce the source index map ``idx`` on one axis: ("slice", begin, step) or
    ("upscale", pad_before, pad_after, factor, start); None when neither form matches."""
    out_len = len(idx)
    if out_len == 1 or (out_len > 1 and np.all(np.diff(idx) == idx[1] - idx[0]) and idx[1] - idx[0] >= 1):
        step = int(idx[1] - idx[0]) if out_len > 1 else 1
        return ("slice", int(idx[0]), step)
    for s in range(2, out_len // max(in_len, 1) + 3):
        for pb in (0, 1):
            for pa in (0, 1):
                n = in_len + pb + pa
                src = np.clip(_kernel_nearest(n, n * s) - pb, 0, in_len - 1)
                for start in range(0, n * s - out_len + 1):
                    if np.array_equal(src[start:start + out_len], idx):
                        return ("upscale", pb, pa, s, start)
    return None


def build(imp, x, in_shape, out_hw, scales_hw, mode: str, ctm: str, nearest_mode: str):
    """Nodes computing the resize of NCHW ``x`` to ``out_hw`` (the importer ``imp`` builds them); returns
    the output connector. ``scales_hw``: onnxruntime's scale per axis (given, or out/in)."""
    _, _, h, w = in_shape
    if mode == "nearest":
        plans = []
        for n, o, s in ((h, out_hw[0], scales_hw[0]), (w, out_hw[1], scales_hw[1])):
            idx = nearest_index(source_coords(o, n, s, ctm), nearest_mode, n, s < 1)
            plan = nearest_plan(idx, n)
            if plan is None:
                raise imp.unsupported(f"nearest resize {n}->{o} ({ctm}, {nearest_mode}) has no exact form on the "
                                      "K210 resize kernel; use an integer scale factor")
            plans.append(plan)
        return _nearest(imp, x, plans, out_hw)
    if mode != "linear":
        raise imp.unsupported(f"resize mode {mode!r} is not supported (nearest and linear are)")
    if any(F32(n) * F32(sc) != F32(o) for n, o, sc in ((h, out_hw[0], scales_hw[0]), (w, out_hw[1], scales_hw[1]))):
        raise imp.unsupported(f"linear resize {h}x{w}->{out_hw[0]}x{out_hw[1]} by scales {list(scales_hw)}: the "
                              "input size times the scale must be a whole number (give sizes instead of scales)")
    if ctm in ("asymmetric", "align_corners"):
        return imp.node("resize_image", [x], mode="bilinear", new_size=tuple(out_hw),
                        align_corners=ctm == "align_corners").output
    if ctm not in ("half_pixel", "pytorch_half_pixel"):
        raise imp.unsupported(f"linear resize with coordinate_transformation_mode {ctm!r} is not supported; "
                              "use half_pixel, asymmetric or align_corners")
    ups = [o // n if o % n == 0 else 0 for n, o in ((h, out_hw[0]), (w, out_hw[1]))]
    if all(u >= 1 for u in ups) and all(abs(F32(s) - F32(u)) == 0 for s, u in zip(scales_hw, ups)):
        p = imp.edge_pad(x, in_shape, (1, 1), (1, 1))
        big = imp.node("resize_image", [p], mode="bilinear", new_size=(2 * ups[0] * (h + 2), 2 * ups[1] * (w + 2)),
                       align_corners=False)
        begin = (0, 0, ups[0] + 1, ups[1] + 1)
        return imp.slice(big.output, begin, (in_shape[0], in_shape[1], begin[2] + 2 * out_hw[0] - 1,
                                             begin[3] + 2 * out_hw[1] - 1), (1, 1, 2, 2))
    downs = [n // o if o and n % o == 0 else 0 for n, o in ((h, out_hw[0]), (w, out_hw[1]))]
    if all(t in (1, 2) for t in downs) and all(F32(s) == F32(1) / F32(t) for s, t in zip(scales_hw, downs)):
        return imp.node("reduce_window2d", [x], reduce_op="mean", init_value=0.0, filter_h=downs[0],
                        filter_w=downs[1], padding_h=(0, 0), padding_w=(0, 0), stride_h=downs[0],
                        stride_w=downs[1], dilation_h=1, dilation_w=1, fused_activation=imp.FULL_RANGE).output
    if all(t % 2 == 1 for t in downs) and all(F32(s) == F32(1) / F32(t) for s, t in zip(scales_hw, downs)):
        begin = (0, 0, (downs[0] - 1) // 2, (downs[1] - 1) // 2)
        return imp.slice(x, begin, in_shape, (1, 1, downs[0], downs[1]))
    raise imp.unsupported(f"linear half_pixel resize {h}x{w}->{out_hw[0]}x{out_hw[1]} is not supported on the K210: "
                          "use an integer upscale factor (or downscale by 2)")


def _nearest(imp, x, plans, out_hw):
    """Strided slices for the progression axes, then edge pad + nearest upscale + slice for the others."""
    shape = imp.shape(x)
    if any(p[0] == "slice" and (p[1] != 0 or p[2] != 1 or o != shape[ax]) for ax, p, o in zip((2, 3), plans, out_hw)):
        begin, end, step = [0, 0, 0, 0], list(shape), [1, 1, 1, 1]
        for ax, p, o in zip((2, 3), plans, out_hw):
            if p[0] == "slice":
                begin[ax], step[ax] = p[1], p[2]
                end[ax] = p[1] + p[2] * (o - 1) + 1
        x = imp.slice(x, tuple(begin), tuple(end), tuple(step))
    if not any(p[0] == "upscale" for p in plans):
        return x
    pads = [(p[1], p[2]) if p[0] == "upscale" else (0, 0) for p in plans]
    if any(a or b for a, b in pads):
        x = imp.edge_pad(x, imp.shape(x), pads[0], pads[1])
    shape = imp.shape(x)
    fac = [p[3] if p[0] == "upscale" else 1 for p in plans]
    up = imp.node("resize_image", [x], mode="nearest_neighbor", new_size=(shape[2] * fac[0], shape[3] * fac[1]),
                  align_corners=False).output
    starts = [p[4] if p[0] == "upscale" else 0 for p in plans]
    if tuple(starts) == (0, 0) and tuple(up.shape[2:]) == tuple(out_hw):
        return up
    begin = (0, 0, starts[0], starts[1])
    return imp.slice(up, begin, (up.shape[0], up.shape[1], starts[0] + out_hw[0], starts[1] + out_hw[1]), (1, 1, 1, 1))
