"""MaixPy v1's YOLOv2 region layer (kmodelpy.maixpy.yolo2_region) and newlib's expf/qsort.

Truth: reference/ncc_outputs/maixpy (the firmware's own C code, run by the reference build) and
tests/data/maixpy/maixpy_cases.npz (the same C code on ties, overflows and other anchor counts; see
tests/data/maixpy/README.md). Hand-computed cases pin the rules one by one; properties check the invariants.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmodelpy.maixpy import yolo2_region
from kmodelpy.maixpy.region import RegionLayer, RegionLayerError, check_yolo2_args
from kmodelpy.newlib import expf_plain, qsort

ROOT = Path(__file__).resolve().parent
REF = ROOT.parent / "reference" / "ncc_outputs" / "maixpy"
ORACLE = ROOT / "data" / "maixpy" / "maixpy_cases.npz"
DEMO = (1.08, 1.19, 3.42, 4.41, 6.63, 11.38, 9.42, 5.11, 16.62, 10.52)
REF_CASES = sorted(p.name for p in REF.iterdir() if p.is_dir()) if REF.is_dir() else []


def _bits(v) -> str:
    return f"0x{int(np.float32(v).view(np.uint32)):08x}"


def _rows(objs):
    if objs is None:
        return None
    return [(o.x(), o.y(), o.w(), o.h(), o.classid(), _bits(o.value()), o.index(), o.objnum()) for o in objs]


# ----------------------------------------------------------------------------------------- reference
@pytest.mark.parametrize("case", REF_CASES)
def test_reference_case(case):
    d = REF / case
    p = json.loads((d / "params.json").read_text())
    b = json.loads((d / "boxes.json").read_text())
    feat = np.fromfile(d / "feature.bin", dtype="<f4")
    so, iy = p["set_outputs"], p["init_yolo2"]
    args = (feat, so["w"], so["h"], so["ch"], iy["anchor"], iy["threshold"], iy["nms_value"], p["net_w"], p["net_h"])
    if not b["ok"]:
        with pytest.raises(RegionLayerError):
            yolo2_region(*args, classes=p.get("classes_override"))
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = _rows(yolo2_region(*args, classes=p.get("classes_override")))
    want = None if b["result"] is None else [
        (r["x"], r["y"], r["w"], r["h"], r["classid"], r["value_f32_hex"], r["index"], r["objnum"]) for r in b["result"]]
    assert got == want
    np.testing.assert_array_equal(np.fromfile(d / "feature.bin", dtype="<f4").view(np.uint32), feat.view(np.uint32))


# ----------------------------------------------------------------------------------------- oracle
def _oracle():
    if not ORACLE.exists():
        return None, []
    z = np.load(ORACLE)
    return z, json.loads(bytes(z["index"]).decode())


_Z, _INDEX = _oracle()


@pytest.mark.parametrize("case", _INDEX, ids=[c["name"] for c in _INDEX])
def test_firmware_oracle_case(case):
    """Every object the firmware's C code writes (all of them, past the 10 slots): uint32 corners,
    class, probability bits, in order; and the Python list (uint8 count, int16 rects)."""
    feat = _Z[f"{case['name']}/feature"]
    raw = _Z[f"{case['name']}/objects"]
    thr, nms, anc = check_yolo2_args(case["threshold"], case["nms"], len(case["anchors"]) // 2, case["anchors"])
    layer = RegionLayer(case["w"], case["h"], case["ch"], len(anc) // 2, case["classes"], feat.size)
    buf = feat.copy()
    got = layer.run(buf, anc, thr, nms, case["net_w"], case["net_h"])
    assert len(got) == case["obj_number"] == len(raw)
    got_raw = np.array([[x1, y1, x2, y2, c, np.float32(p).view(np.uint32)] for x1, y1, x2, y2, c, p in got],
                       dtype=np.uint64).reshape(-1, 6)
    np.testing.assert_array_equal(got_raw, raw.astype(np.uint64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        objs = yolo2_region(feat, case["w"], case["h"], case["ch"], case["anchors"], case["threshold"], case["nms"],
                            case["net_w"], case["net_h"], classes=case["classes"])
    n8 = case["obj_number"] & 0xFF
    if n8 == 0:
        assert objs is None
        return
    assert len(objs) == n8 and all(o.objnum() == n8 for o in objs)

    def s16(v):
        v = int(v) & 0xFFFF
        return v - 0x10000 if v & 0x8000 else v

    for i, o in enumerate(objs):
        x1, y1, x2, y2 = (int(v) for v in raw[i, :4])
        assert o.rect() == (s16(x1), s16(y1), s16((x2 - x1) & 0xFFFFFFFF), s16((y2 - y1) & 0xFFFFFFFF))
        assert o.index() == i


def test_newlib_expf_matches_the_c_library():
    x, y = _Z["expf/x"], _Z["expf/y"]
    got = expf_plain(x)
    same = (got.view(np.uint32) == y.view(np.uint32)) | (np.isnan(got) & np.isnan(y))
    assert same.all(), x[~same][:5]


# ----------------------------------------------------------------------------------------- by hand
def _one_box(w=2, h=2, classes=1, tx=0.0, ty=0.0, tw=0.0, th=0.0, obj=40.0, logits=None, cell=(0, 0), anchor=0):
    """A feature map with every objectness logit at -40 except one box."""
    ch = 5 * (5 + classes)
    f = np.zeros((5, 5 + classes, h, w), dtype=np.float32)
    f[:, 4] = -40.0
    r, c = cell
    f[anchor, 0:5, r, c] = (tx, ty, tw, th, obj)
    if logits is not None:
        f[anchor, 5:, r, c] = logits
    return f.reshape(-1), ch


def test_single_box_by_hand():
    # sig(0) = 0.5, expf(0) = 1: centre (0.5/2, 0.5/2) of a 64x64 input = (16, 16); w = 1 * anchor 1.0 / 2
    # cells = 32 px; obj 40: 1/(1+expf(-40)) = 1.0 in float32; one class: softmax 1.0
    feat, ch = _one_box()
    objs = yolo2_region(feat, 2, 2, ch, (1.0, 1.0) * 5, 0.5, 0.3, 64, 64)
    assert _rows(objs) == [(0, 0, 32, 32, 0, _bits(1.0), 0, 1)]
    assert str(objs[0]) == '{"x":0, "y":0, "w":32, "h":32, "value":1.000000, "classid":0, "index":0, "objnum":1}'


def test_threshold_is_strict():
    feat, ch = _one_box(obj=0.0)  # sig(0) = 0.5 exactly
    assert yolo2_region(feat, 2, 2, ch, DEMO, 0.5, 0.3, 64, 64) is None
    assert len(yolo2_region(feat, 2, 2, ch, DEMO, 0.49, 0.3, 64, 64)) == 1


def test_softmax_picks_the_first_largest_class():
    feat, ch = _one_box(classes=3, logits=(1.0, 3.0, 3.0))
    (o,) = yolo2_region(feat, 2, 2, ch, DEMO, 0.2, 0.3, 64, 64)
    e = math.exp(-2.0)
    assert o.classid() == 1 and abs(o.value() - 1 / (1 + e + 1)) < 1e-6


def test_negative_corner_becomes_zero_and_width_is_the_far_corner():
    # box centred at (16, 16) with anchor 3.0 (96 px wide): x1 = 16 - 48 < 0 -> 0, w = x2 - 0 = 64
    feat, ch = _one_box()
    (o,) = yolo2_region(feat, 2, 2, ch, (3.0, 3.0) * 5, 0.5, 0.3, 64, 64)
    assert o.rect() == (0, 0, 64, 64)


def test_huge_box_wraps_to_int16():
    # expf(10) * 1.0 / 2 * 64 = 704,842 px: x2 - x1 = 1,409,684 (uint32) -> low 16 bits as int16
    feat, ch = _one_box(tw=10.0, th=0.0)
    (o,) = yolo2_region(feat, 2, 2, ch, (1.0, 1.0) * 5, 0.5, 0.3, 64, 64)
    wide = np.float32(np.float32(expf_plain(np.float32(10.0)) * np.float32(1.0) / np.float32(2)) * np.float32(64))
    x2 = int(np.float32(np.float32(0.25) * np.float32(64)) + wide / np.float32(2))
    w16 = x2 & 0xFFFF
    assert o.w() == (w16 - 0x10000 if w16 & 0x8000 else w16)


def test_nms_suppresses_the_lower_box_of_the_same_class_only():
    f = np.zeros((5, 7, 2, 2), dtype=np.float32)
    f[:, 4] = -40.0
    f[0, 0:7, 0, 0] = (0.0, 0.0, 0.0, 0.0, 40.0, 30.0, 0.0)
    f[1, 0:7, 0, 0] = (0.0, 0.0, 0.0, 0.0, 1.0, 30.0, 0.0)  # same place, lower score, same class
    objs = yolo2_region(f.reshape(-1), 2, 2, 35, (1.0, 1.0) * 5, 0.5, 0.3, 64, 64)
    assert [o.value() for o in objs] == [1.0]
    f[1, 5:7, 0, 0] = (0.0, 30.0)  # the lower box is now of class 1: not suppressed
    objs = yolo2_region(f.reshape(-1), 2, 2, 35, (1.0, 1.0) * 5, 0.5, 0.3, 64, 64)
    assert sorted(o.classid() for o in objs) == [0, 1]


def test_scan_order_is_anchor_major():
    f = np.zeros((5, 6, 2, 2), dtype=np.float32)
    f[:, 4] = -40.0
    f[0, 0:5, 1, 1] = (0.0, 0.0, -3.0, -3.0, 40.0)  # anchor 0, last cell
    f[1, 0:5, 0, 0] = (0.0, 0.0, -3.0, -3.0, 40.0)  # anchor 1, first cell
    objs = yolo2_region(f.reshape(-1), 2, 2, 30, (1.0, 1.0) * 5, 0.5, 0.3, 64, 64)
    assert [(o.x() > 32, o.index()) for o in objs] == [(True, 0), (False, 1)]


def test_input_buffer_is_not_modified():
    feat, ch = _one_box()
    before = feat.copy()
    yolo2_region(feat, 2, 2, ch, DEMO, 0.5, 0.3, 64, 64)
    np.testing.assert_array_equal(before, feat)


def test_errors_are_maixpy_s():
    feat, ch = _one_box()
    with pytest.raises(ValueError, match=r"\[MAIXPY\]kpu: threshold only support 0 to 1"):
        yolo2_region(feat, 2, 2, ch, DEMO, 1.5, 0.3, 64, 64)
    with pytest.raises(ValueError, match=r"\[MAIXPY\]kpu: nms_value only support 0 to 1"):
        yolo2_region(feat, 2, 2, ch, DEMO, 0.5, -0.1, 64, 64)
    with pytest.raises(ValueError, match="requested length 10 but object has length 8"):
        check_yolo2_args(0.5, 0.3, 5, DEMO[:8])
    with pytest.raises(ValueError, match="anchor_number should > 0"):
        check_yolo2_args(0.5, 0.3, 0, ())
    with pytest.raises(RegionLayerError, match="outside the buffer"):  # 9 anchors, ch 54: classes = 5
        yolo2_region(np.zeros(10 * 8 * 54, np.float32), 10, 8, 54, (1.0,) * 18, 0.5, 0.2, 320, 256)
    assert yolo2_region(np.zeros(10 * 8 * 54, np.float32), 10, 8, 54, (1.0,) * 18, 0.5, 0.2, 320, 256,
                        classes=1) is None


def test_more_than_ten_objects_warn_once_and_come_back_as_written():
    import kmodelpy.maixpy.region as region

    f = np.zeros((5, 6, 4, 4), dtype=np.float32)
    f[:, 2:4] = -3.0  # small boxes: no overlap between cells
    f[:, 4] = 40.0
    region._warned_overflow = False
    with pytest.warns(RuntimeWarning, match="holds 10"):
        objs = yolo2_region(f.reshape(-1), 4, 4, 30, (1.0, 1.0) * 5, 0.5, 1.0, 128, 128)
    assert len(objs) == 80 and objs[-1].objnum() == 80
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yolo2_region(f.reshape(-1), 4, 4, 30, (1.0, 1.0) * 5, 0.5, 1.0, 128, 128)


# ----------------------------------------------------------------------------------------- properties


@given(st.lists(st.floats(min_value=-87.0, max_value=88.5, width=32), min_size=1, max_size=64))
def test_expf_within_one_ulp(xs):
    x = np.array(xs, dtype=np.float32)
    got = expf_plain(x).astype(np.float64)
    exact = np.exp(x.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(got - exact) <= ulp)


@given(st.lists(st.integers(min_value=0, max_value=6), max_size=120))
def test_qsort_sorts_descending_and_permutes(keys):
    order = list(range(len(keys)))
    qsort(order, lambda a, b: (keys[b] > keys[a]) - (keys[b] < keys[a]))
    assert sorted(order) == list(range(len(keys)))
    assert [keys[i] for i in order] == sorted(keys, reverse=True)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 4), st.sampled_from([0.0, 0.2, 0.5, 0.9]),
       st.sampled_from([0.0, 0.3, 1.0]), st.integers(0, 2 ** 32 - 1))
def test_region_layer_invariants(w, h, classes, thr, nms, seed):
    rng = np.random.default_rng(seed)
    feat = rng.normal(0, 3, w * h * 5 * (5 + classes)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        objs = yolo2_region(feat, w, h, 5 * (5 + classes), DEMO, thr, nms, w * 32, h * 32)
    if objs is None:
        return
    n = len(objs)
    assert all(o.index() == i and o.objnum() == n for i, o in enumerate(objs))
    assert all(0 <= o.classid() < classes and o.value() > np.float32(thr) and o.x() >= 0 for o in objs)
