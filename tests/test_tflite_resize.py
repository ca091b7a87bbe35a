"""TFLite's resizes (half_pixel_centers, align_corners): the float evaluation against scalar transcriptions of
TFLite's reference kernels (resize_bilinear.h, resize_nearest_neighbor.h) and of XNNPACK's (indirection.c +
f32-ibilinear, what LiteRT's interpreter runs), the forms the lowering picks, and the compiled uint8 kmodel (the 2x
bilinear filter on the KPU, close to float). The lowering itself, for both front ends: tests/test_resize_lowering.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tflite_builder import TFLiteBuilder

import kmodelpy
from kmodelpy.frontends.tflite.model import load_tflite

F32 = np.float32


# ------------------------------------------------------------------------------------------ transcriptions
def ref_bilinear(x, oh, ow, ac, hp):
    """TFLite reference ResizeBilinear (NHWC), one output at a time."""
    _, h, w, _ = x.shape

    def scale(i, o):
        return F32(i - 1) / F32(o - 1) if ac and o > 1 else F32(i) / F32(o)

    def interp(v, s, size):
        sv = F32(F32(F32(v) + F32(0.5)) * s - F32(0.5)) if hp else F32(F32(v) * s)
        return sv, max(int(math.floor(sv)), 0), min(int(math.ceil(sv)), size - 1)

    hs, ws = scale(h, oh), scale(w, ow)
    y = np.zeros((x.shape[0], oh, ow, x.shape[3]), F32)
    one = F32(1)
    for oy in range(oh):
        iy, y0, y1 = interp(oy, hs, h)
        dy = F32(iy - F32(y0))
        for ox in range(ow):
            ix, x0, x1 = interp(ox, ws, w)
            dx = F32(ix - F32(x0))
            y[:, oy, ox] = (x[:, y0, x0] * (one - dy) * (one - dx) + x[:, y1, x0] * dy * (one - dx)
                            + x[:, y0, x1] * (one - dy) * dx + x[:, y1, x1] * dy * dx)
    return y


def ref_nearest(x, oh, ow, ac, hp):
    """TFLite reference ResizeNearestNeighbor's GetNearestNeighbor (NHWC)."""
    _, h, w, _ = x.shape

    def index(v, size, out):
        s = F32(size - 1) / F32(out - 1) if ac and out > 1 else F32(size) / F32(out)
        t = F32(F32(F32(v) + F32(0.5 if hp else 0.0)) * s)
        r = min(int(math.copysign(math.floor(abs(t) + 0.5), t)) if ac else int(math.floor(t)), size - 1)
        return max(0, r) if hp else r

    return x[:, [index(v, h, oh) for v in range(oh)]][:, :, [index(v, w, ow) for v in range(ow)]]


def xnnpack_bilinear(x, oh, ow, ac, hp):
    """XNNPACK's resize_bilinear2d_hwc_f32 indirection + f32-ibilinear kernel (NHWC), one output at a time."""
    _, h, w, _ = x.shape

    def axis(v, size, out):
        adj = 1 if ac and out != 1 else 0
        s = F32(F32(size - adj) / F32(out - adj))
        if ac or not hp:
            p = min(F32(F32(v) * s), F32(size - 1))
        else:
            p = min(max(F32(F32(F32(v) * s) + F32(F32(F32(0.5) * s) - F32(0.5))), F32(0)), F32(size - 1))
        lo = int(p)
        return lo, min(lo + 1, size - 1), F32(p - F32(lo))

    y = np.zeros((x.shape[0], oh, ow, x.shape[3]), F32)
    for oy in range(oh):
        t0, b0, av = axis(oy, h, oh)
        for ox in range(ow):
            l0, r0, ah = axis(ox, w, ow)
            tl, tr, bl, br = x[:, t0, l0], x[:, t0, r0], x[:, b0, l0], x[:, b0, r0]
            top = tl + (tr - tl) * ah
            bottom = bl + (br - bl) * ah
            y[:, oy, ox] = top + (bottom - top) * av
    return y


def resize_model(h, w, c, oh, ow, mode, hp, ac):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, h, w, c])
    y = b.tensor("y", [1, oh, ow, c])
    op, opts = (("RESIZE_BILINEAR", "ResizeBilinearOptions") if mode == "bilinear" else
                ("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions"))
    b.op(op, [x, b.const("size", np.array([oh, ow], np.int32))], [y], opts, align_corners=ac, half_pixel_centers=hp)
    return b, x, y


resizes = st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 20), st.integers(1, 20),
                    st.sampled_from(["bilinear", "nearest_neighbor"]), st.sampled_from([(True, False), (False, True),
                                                                                          (False, False)]))


@settings(max_examples=60, deadline=None)
@given(resizes, st.integers(0, 2**31))
def test_float_evaluation_is_tflites(tmp_path_factory, r, seed):
    """The resize node's evaluation (arithmetic="ncc": kmodelpy's own float evaluator) is TFLite's reference kernel,
    bit for bit; the TFLite float reference (default) runs XNNPACK's bilinear kernel, bit for bit; nearest is a
    gather either way."""
    h, w, oh, ow, mode, (hp, ac) = r
    b, x, y = resize_model(h, w, 2, oh, ow, mode, hp, ac)
    path = b.save(tmp_path_factory.mktemp("rs") / "m.tflite", [x], [y])
    xv = np.random.default_rng(seed).standard_normal((1, h, w, 2)).astype(F32)
    ref = ref_bilinear if mode == "bilinear" else ref_nearest
    ncc_ar = load_tflite(path, arithmetic="ncc").run(xv.transpose(0, 3, 1, 2))[0].transpose(0, 2, 3, 1)
    tfl = kmodelpy.load(path).run(xv.transpose(0, 3, 1, 2))[0].transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(ncc_ar, ref(xv, oh, ow, ac, hp))
    want = xnnpack_bilinear(xv, oh, ow, ac, hp) if mode == "bilinear" else ref(xv, oh, ow, ac, hp)
    np.testing.assert_array_equal(tfl, want)


def test_forms_of_tflite_resizes():
    """ncc's own ResizeImage where TFLite's sampling is ncc's (every reference case: upsample_nearest keeps ncc's
    kmodel), the KPU filter for half-pixel 2x bilinear, copies for nearest, interpolation convs for the rest."""
    from kmodelpy.compiler.transforms.resize_lowering import plan
    from kmodelpy.ir.resample import Sampling

    def form(mode, in_hw, out_hw, ac, hp):
        return plan(Sampling.tflite(mode, ac, hp), in_hw, out_hw).form

    assert form("nearest_neighbor", (32, 32), (64, 64), False, True) == "resize_image"  # (o+½)/2 floors like o/2
    assert form("nearest_neighbor", (16, 16), (32, 32), False, False) == "resize_image"
    assert form("bilinear", (8, 8), (8, 8), False, True) == "resize_image"
    assert form("bilinear", (5, 7), (9, 13), True, False) == "resize_image"  # ncc's align_corners bilinear
    assert form("bilinear", (8, 8), (16, 16), False, True) == "bilinear_filter"
    assert form("bilinear", (8, 8), (8, 16), False, True) == "bilinear_filter"
    assert form("bilinear", (8, 8), (4, 4), False, True) == "mean_pool"
    assert form("nearest_neighbor", (8, 8), (4, 4), False, True) == "copy"  # (o+½)·2: rows 1, 3, 5, 7
    assert form("bilinear", (6, 6), (9, 9), False, True) == "separable"


def test_half_pixel_2x_is_a_kpu_filter(tmp_path):
    """A conv, a half-pixel 2x bilinear upsample (every TF2 UpSampling2D(interpolation='bilinear')) and a conv,
    compiled for uint8: the resize's [1,2,1]/4 filter is a KPU conv, and the kmodel stays within a few
    quantization steps of the float model; the fit report says so, and counts the filter's weights."""
    from kmodelpy.compiler import compile_model
    from kmodelpy.fit_report import analyse
    from kmodelpy.format.kmodel import KModel

    rng = np.random.default_rng(0)
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 12, 10, 3])
    t = b.tensor("t", [1, 12, 10, 4])
    b.op("CONV_2D", [x, b.const("w", rng.uniform(-1, 1, (4, 3, 3, 3)).astype(F32)), b.const("b", np.zeros(4, F32))],
         [t], "Conv2DOptions", padding="SAME", stride_h=1, stride_w=1, fused_activation="RELU")
    r = b.tensor("r", [1, 24, 20, 4])
    b.op("RESIZE_BILINEAR", [t, b.const("s", np.array([24, 20], np.int32))], [r], "ResizeBilinearOptions",
         align_corners=False, half_pixel_centers=True)
    path = b.save(tmp_path / "m.tflite", [x], [r])
    ds = tmp_path / "calib"
    ds.mkdir()
    samples = [rng.uniform(0, 1, (3, 12, 10)).astype(F32) for _ in range(4)]
    for k, s in enumerate(samples):
        s.tofile(ds / f"{k}.bin")
    km = compile_model(path, dataset=ds, dataset_format="raw", input_type="float", output=tmp_path / "m.kmodel")
    names = [type(o).__name__ for o in KModel.parse((tmp_path / "m.kmodel").read_bytes()).ops]
    assert names.count("KPUConv2D") == 2 and "ResizeImage" in names and "Concat" in names
    model, ref = kmodelpy.load(km), kmodelpy.load(path)
    for s in samples:
        got, want = model.run(s[None])[0], ref.run(s[None])[0]
        step = float(np.ptp(want)) / 255
        assert float(np.abs(got - want).max()) <= 4 * step and float(np.abs(got - want).mean()) <= step
    v = [v for v in analyse(path) if v.op == "RESIZE_BILINEAR"][0]
    assert v.verdict == "partial" and v.kpu_in_shape == (1, 4, 28, 24) and v.params == 4 * 9


@pytest.mark.parametrize("hw, out", [((6, 6), (9, 9)), ((8, 8), (4, 4)), ((5, 7), (15, 21))])
def test_other_half_pixel_resizes_compile_and_track_float(tmp_path, hw, out):
    """Fractional, downscaling and 3x half-pixel bilinear resizes (the separable interpolation convs)."""
    from kmodelpy.compiler import compile_model

    rng = np.random.default_rng(1)
    b, x, y = resize_model(hw[0], hw[1], 3, out[0], out[1], "bilinear", True, False)
    path = b.save(tmp_path / "m.tflite", [x], [y])
    fk = compile_model(path, inference_type="float", output=tmp_path / "f.kmodel")
    ds = tmp_path / "calib"
    ds.mkdir()
    samples = [rng.uniform(-1, 1, (3,) + hw).astype(F32) for _ in range(4)]
    for k, s in enumerate(samples):
        s.tofile(ds / f"{k}.bin")
    qk = compile_model(path, dataset=ds, dataset_format="raw", input_type="float", output=tmp_path / "q.kmodel")
    ref, fm, qm = kmodelpy.load(path), kmodelpy.load(fk), kmodelpy.load(qk)
    for s in samples:
        want = ref.run(s[None])[0]
        np.testing.assert_allclose(fm.run(s[None])[0].reshape(want.shape), want, atol=2e-6)
        assert float(np.abs(qm.run(s[None])[0].reshape(want.shape) - want).max()) <= 4 * float(np.ptp(want)) / 255
