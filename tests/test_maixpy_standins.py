"""MaixPy v1 stand-ins (image, KPU, sensor, lcd), ``kmodelpy maixpy`` and ``kmodelpy detect``.

The numbers that reach a model follow py_image.c (pix_to_ai, resize) and Maix_kpu.c (set_outputs,
forward, run_yolo2); the kmodel runs are kmodelpy's bit-exact emulation, so ``fmap[:]`` is byte for byte
what ``ncc infer`` writes (reference/ncc_outputs/cases/kmodel__yolo20).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from refcases import CASES, ncc_out

from kmodelpy import cli
from kmodelpy.maixpy import image, kpu, lcd, sensor, session, yolo2_region
from kmodelpy.maixpy.image import G628, RB528, Image, pack565

ROOT = Path(__file__).resolve().parent
PICTURES = ROOT / "data" / "pictures"
LINE = Path(cli.__file__).resolve().parent / "data" / "line_follower.kmodel"
YOLO = CASES / "kmodel__yolo20" / "ncc.kmodel"
VOC = (1.08, 1.19, 3.42, 4.41, 6.63, 11.38, 9.42, 5.11, 16.62, 10.52)
COCO = ["436511", "436520", "436551"]  # the kmodel__yolo20 inputs, as pictures


def _run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def camera(tmp_path):
    """A session whose camera is the three COCO frames of kmodel__yolo20 (320x240, as ncc reads them)."""
    cam = tmp_path / "cam"
    cam.mkdir()
    for k in COCO:
        (cam / f"coco_{k}.png").write_bytes((PICTURES / f"coco_{k}.png").read_bytes())
    s = session.Session(flash={0x500000: YOLO}, camera=sensor.FrameSource(cam))
    prev = session.activate(s)
    sensor.reset()
    sensor.set_pixformat(sensor.RGB565)
    sensor.set_framesize(sensor.QVGA)
    yield s
    session.activate(prev)


# ----------------------------------------------------------------------------------------- image
def test_pix_to_ai_is_planar_rgb_from_byte_swapped_rgb565():
    r5 = np.array([[0, 31], [17, 3]])
    g6 = np.array([[63, 0], [40, 5]])
    b5 = np.array([[9, 31], [0, 22]])
    img = Image._make(2, pack565(r5, g6, b5).astype(np.uint16))
    assert int(img._px[0, 1]) == (31 << 3) | (31 << 8)  # imlib's word: R5 at bit 3, B5 at bit 8
    img.pix_to_ai()
    want = np.concatenate([RB528[r5].reshape(-1), G628[g6].reshape(-1), RB528[b5].reshape(-1)])
    np.testing.assert_array_equal(img._pix_ai, want)
    assert RB528[31] == 255 and RB528[17] == (17 * 255 + 15) // 31 and G628[40] == (40 * 255 + 31) // 63


def test_resize_downscale_is_nearest_and_clears_pix_ai():
    px = np.arange(4 * 8, dtype=np.uint16).reshape(4, 8)
    img = Image._make(2, px, pix_ai=np.zeros(96, np.uint8))
    out = img.resize(3, 2)  # sx = 8/3, sy = 2: in[(int)(y*sy)][(int)(x*sx)]
    np.testing.assert_array_equal(out._px, px[np.ix_([0, 2], [0, 2, 5])])
    assert out._pix_ai is None
    tall = img.resize(16, 2)  # w0 < w but h0 > h: still nearest
    np.testing.assert_array_equal(tall._px, px[np.ix_([0, 2], [x // 2 for x in range(16)])])


def test_resize_upscale_is_bilinear_in_565_space():
    r5 = np.array([[0, 16], [8, 24]])
    img = Image._make(2, pack565(r5, np.zeros((2, 2), int), np.zeros((2, 2), int)).astype(np.uint16))
    out = img.resize(4, 4)  # sx = sy = 0.5: at (1, 1) x_src = y_src = 0.25, weights 0.75 / 0.25
    got = (out._px.astype(np.int64) >> 3) & 31
    t1 = 0.75 * 0 + 0.25 * 16
    t2 = 0.75 * 8 + 0.25 * 24
    assert got[1, 1] == int(0.75 * t1 + 0.25 * t2)
    assert got[0, 0] == 0  # x_src = -0.25: x1 = (uint16)-0.25 = 0, extrapolated to -6, stored as 0 (fcvt.wu.s)
    assert got[3, 3] == 24  # x2 = 2 >= w0: the edge pixel is copied


def test_resize_matches_the_firmware_c_code():
    """tests/data/maixpy/maixpy_cases.npz: py_image_resize's own loops on 80 random images (tests/data/maixpy/README.md)."""
    z = np.load(ROOT / "data" / "maixpy" / "maixpy_cases.npz")
    names = sorted({k.split("/")[0] for k in z.files if k.startswith("resize")})
    assert len(names) == 80
    for name in names:
        px, want = z[f"{name}/in"], z[f"{name}/out"]
        img = Image._make(2 if px.dtype == np.uint16 else 1, px.copy())
        got = img.resize(want.shape[1], want.shape[0])._px
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_grayscale_shrink_is_the_box_average_with_the_firmware_bug():
    px = np.tile(np.arange(8, dtype=np.uint8), (4, 1))  # value = column
    out = Image._from_gray(px).resize(2, 2)  # sx = 4, sy = 2; the x range uses sy
    # y = 0: rows 0..2, x = 0: cols 0..2 -> 3 * (0 + 1 + 2) / 9 = 1; x = 1: cols 2..4 -> 3 * 9 / 9 = 3
    # y = 1: rows 2..4, row 4 lies past the picture (read as 0 here): 2 * 3 / 9 = 0 and 2 * 9 / 9 = 2
    np.testing.assert_array_equal(out._px, [[1, 3], [0, 2]])


def test_draw_rectangle_follows_imlib():
    img = Image._from_gray(np.zeros((8, 10), np.uint8))
    img.draw_rectangle(2, 1, 5, 4, color=200)
    ys, xs = np.nonzero(img._px)
    border = {(y, x) for y in range(1, 5) for x in range(2, 7) if y in (1, 4) or x in (2, 6)}
    assert set(zip(ys.tolist(), xs.tolist())) == border
    img.draw_rectangle((0, 0, 10, 8), 77, 3, tickness=9)  # positional colour / thickness; unknown keys ignored
    assert img._px[0, 0] == 77 and img._px[1, 1] == 77 and img._px[5, 1] == 77 and img._px[3, 3] == 0


def test_colours_convert_to_the_image_format():
    img = Image(size=(4, 4))
    img.draw_rectangle(0, 0, 4, 4, color=(255, 0, 0), fill=True)
    assert img.get_pixel(1, 1) == (255, 0, 0)
    assert int(img._px[1, 1]) == 31 << 3


# ----------------------------------------------------------------------------------------- KPU
def test_set_outputs_checks_only_the_byte_count(capsys):
    task = kpu.load(str(YOLO))
    assert kpu.set_outputs(task, 0, 7, 10, 125) is True  # any factorisation passes
    assert kpu.set_outputs(task, 0, 10, 7, 124) is False
    assert "w,c,ch size not match output size" in capsys.readouterr().out
    assert kpu.set_outputs(task, 1, 10, 7, 125) is False
    assert "kmodel output idx 1 out of range" in capsys.readouterr().out
    with pytest.raises(ValueError, match="set_outputs arg format error"):
        kpu.set_outputs(task, 0, 10, 7, True)


def test_forward_needs_set_outputs_and_pix_ai(camera, capsys):
    task = kpu.load(0x500000)
    img = sensor.snapshot()
    with pytest.raises(OSError, match="ERR_OUTPUTS_SET: need kpu.set_outputs"):
        kpu.forward(task, img)
    kpu.set_outputs(task, 0, 10, 7, 125)
    with pytest.raises(ValueError, match=r"\[MAIXPY\]kpu: check img format err!"):
        kpu.forward(task, img.copy())
    assert "[MAIXPY]kpu: pix_ai is NULL!" in capsys.readouterr().out
    with pytest.raises(ValueError, match="check img format err"):
        small = img.resize(160, 120)
        small.pix_to_ai()
        kpu.forward(task, small)
    assert "img w=160,h=120, but model w=320,h=240" in capsys.readouterr().out


def test_forward_fmap_is_ncc_infer_output_and_aliases_the_buffer(camera):
    task = kpu.load(0x500000)
    kpu.set_outputs(task, 0, 10, 7, 125)
    fmap = kpu.forward(task, sensor.snapshot())
    want = np.frombuffer(ncc_out("kmodel__yolo20", f"COCO_val2014_000000{COCO[0]}"), dtype="<f4")
    assert np.array(fmap[:], dtype=np.float32).tobytes() == want.tobytes()
    assert (fmap.w(), fmap.h(), fmap.ch(), fmap.size(), fmap.typecode()) == (10, 7, 125, 35000, "f")
    assert fmap[-1] == float(want[-1]) and fmap[3:5] == tuple(float(v) for v in want[3:5])
    with pytest.raises(OSError, match="step=1"):
        fmap[::2]
    kpu.init_yolo2(task, 0.5, 0.3, 5, VOC)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        objs = kpu.run_yolo2(task, sensor.snapshot())  # runs COCO[1] and rewrites output 0 in place
    assert objs is None  # the spec: coco 436520 gives no object at threshold 0.5
    tx = np.array(fmap[0:70], dtype=np.float32)  # entry 0 of anchor 0: now sigmoids of COCO[1]'s tx
    raw = np.frombuffer(ncc_out("kmodel__yolo20", f"COCO_val2014_000000{COCO[1]}"), dtype="<f4")[:70]
    assert np.all((tx > 0) & (tx < 1)) and not np.array_equal(tx, raw)


def test_run_yolo2_is_the_region_layer_on_the_kmodel_output(camera):
    task = kpu.load(0x500000)
    kpu.set_outputs(task, 0, 10, 7, 125)
    kpu.init_yolo2(task, 0.3, 0.3, 5, VOC)
    objs = kpu.run_yolo2(task, sensor.snapshot())
    feat = np.frombuffer(ncc_out("kmodel__yolo20", f"COCO_val2014_000000{COCO[0]}"), dtype="<f4")
    want = yolo2_region(feat, 10, 7, 125, VOC, 0.3, 0.3, 320, 240)
    assert [str(o) for o in objs] == [str(o) for o in want] and len(objs) == 5
    assert {o.classid() for o in objs} == {12, 14, 16}  # horses, a person, a sheep (VOC ids)


def test_kpu_errors_are_maixpy_s(camera):
    with pytest.raises(ValueError, match="only supply .kmodel"):
        kpu.load("/flash/model.bin")
    with pytest.raises(ValueError, match="load error:2005, ERR_READ_FILE"):
        kpu.load("missing.kmodel")
    with pytest.raises(ValueError, match="model_addr must > 0"):
        kpu.load(0)
    with pytest.raises(ValueError, match="load error:2002.*--flash 0x300000"):
        kpu.load(0x300000)
    task = kpu.load(0x500000)
    kpu.set_outputs(task, 0, 10, 7, 125)
    with pytest.raises(ValueError, match="init_yolo2"):
        kpu.run_yolo2(task, sensor.snapshot())
    with pytest.raises(ValueError, match="requested length 10 but object has length 8"):
        kpu.init_yolo2(task, 0.5, 0.3, 5, VOC[:8])
    with pytest.raises(TypeError, match="kpu_net type error"):
        kpu.init_yolo2(None, 0.5, 0.3, 5, VOC)


# ----------------------------------------------------------------------------------------- scripts
SNIPPET_FORWARD = """\
import sensor, image, lcd
import KPU as kpu
lcd.init()
sensor.reset()
sensor.set_pixformat(sensor.RGB565)
sensor.set_framesize(sensor.QVGA)
sensor.run(1)
task = kpu.load("/sd/model.kmodel")
kpu.set_outputs(task, 0, 1, 1, 1)          # kmodel v4 needs this
while True:
    img = sensor.snapshot(); img = img.resize(160, 160); img.pix_to_ai()
    fmap = kpu.forward(task, img); print(fmap[:])
    lcd.display(img)
"""

ISSUE_SNIPPET_YOLO20 = """\
import sensor, image, lcd
import KPU as kpu
sensor.reset(); sensor.set_pixformat(sensor.RGB565); sensor.set_framesize(sensor.QVGA)
task = kpu.load("/sd/model.kmodel")
kpu.set_outputs(task, 0, 10, 7, 125)          # kmodel v4 needs this
img = sensor.snapshot(); img = img.resize(320, 240); img.pix_to_ai()
fmap = kpu.forward(task, img); print(len(fmap[:]))
anchor = (1.08, 1.19, 3.42, 4.41, 6.63, 11.38, 9.42, 5.11, 16.62, 10.52)
kpu.init_yolo2(task, 0.5, 0.3, 5, anchor)
for obj in kpu.run_yolo2(task, img) or []: img.draw_rectangle(obj.rect()); print(obj)
lcd.display(img)
"""

SNIPPET_YOLO = """\
import sensor, image, lcd, time, gc, sys
import KPU as kpu
from Maix import utils
utils.gc_heap_size()
lcd.init(type=1)
lcd.clear(lcd.WHITE)
sensor.reset()
sensor.set_pixformat(sensor.RGB565)
sensor.set_framesize(sensor.QVGA)
sensor.set_vflip(1)
clock = time.clock()
task = kpu.load(0x500000)
kpu.set_outputs(task, 0, 10, 7, 125)
anchor = (1.08, 1.19, 3.42, 4.41, 6.63, 11.38, 9.42, 5.11, 16.62, 10.52)
kpu.init_yolo2(task, 0.5, 0.3, 5, anchor)
try:
    while True:
        clock.tick()
        img = sensor.snapshot()
        t = time.ticks_ms()
        for obj in kpu.run_yolo2(task, img) or []:
            img.draw_rectangle(obj.rect())
            img.draw_string(obj.x(), obj.y(), '%.3f' % obj.value(), color=(255, 0, 0), scale=2)
            print(obj.classid(), obj.rect())
        lcd.display(img)
        gc.collect()
except Exception as e:
    sys.print_exception(e)
finally:
    kpu.deinit(task)
print("never printed: the camera ends the script")
"""


def _script(tmp_path, text, name="main.py"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _camera_dir(tmp_path, pictures):
    cam = tmp_path / "cam"
    cam.mkdir(exist_ok=True)
    for k in pictures:
        (cam / f"coco_{k}.png").write_bytes((PICTURES / f"coco_{k}.png").read_bytes())
    return cam


def test_snippet_forward_half_on_the_line_follower(tmp_path, capsys):
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "model.kmodel").write_bytes(LINE.read_bytes())
    cam = _camera_dir(tmp_path, COCO[:2])
    rc, out, err = _run(capsys, "maixpy", _script(tmp_path, SNIPPET_FORWARD), "--camera", cam, "--sd", sd,
                        "--lcd", tmp_path / "lcd")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and all(ln.startswith("(") and ln.endswith(",)") for ln in lines)
    assert sorted(p.name for p in (tmp_path / "lcd").iterdir()) == ["0000_coco_436511.png", "0001_coco_436520.png"]
    assert "2 camera frame(s); 2 LCD frame(s)" in err


def test_issue_snippet_run_yolo2_half_on_yolo20(tmp_path, capsys):
    """The deployment snippet with kmodel__yolo20's input size and the 20-class demo's anchors: resize to
    the same size copies the RGB565 frame, pix_to_ai rebuilds 8-bit planes from it (a 565 round trip)."""
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "model.kmodel").write_bytes(YOLO.read_bytes())
    cam = _camera_dir(tmp_path, COCO[:1])
    rc, out, err = _run(capsys, "maixpy", _script(tmp_path, ISSUE_SNIPPET_YOLO20), "--camera", cam, "--sd", sd)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "8750" and len(lines) >= 3  # the sheep and people are still found through RGB565
    assert all(ln.startswith('{"x":') and '"objnum":' in ln for ln in lines[1:])


def test_snippet_yolo_half_on_yolo20(tmp_path, capsys):
    cam = _camera_dir(tmp_path, COCO)
    rc, out, err = _run(capsys, "maixpy", _script(tmp_path, SNIPPET_YOLO), "--camera", cam,
                        "--flash", f"0x500000={YOLO}", "--lcd", tmp_path / "lcd")
    assert rc == 0, err
    assert out.splitlines() == ["14 (294, 77, 27, 78)", "16 (134, 107, 75, 116)", "12 (47, 134, 57, 90)"]
    assert len(list((tmp_path / "lcd").iterdir())) == 3
    frame = lcd.frame()
    assert frame.shape == (240, 320, 3)


@pytest.mark.parametrize("text, expect", [
    ("import sensor\nimport machine\n", "main.py:2: ModuleNotFoundError: MaixPy module 'machine' is not provided"),
    ("import KPU as kpu\n\nkpu.netinfo(None)\n", "main.py:3: AttributeError: KPU.netinfo is not provided"),
    ("import image\nimg = image.Image()\nimg.find_blobs([(0, 1)])\n", "main.py:3: AttributeError: image.Image.find_blobs"),
    ("x = = 1\n", "main.py:1: not a Python script: SyntaxError"),
    ("import KPU as kpu\nkpu.load('/sd/nothere.kmodel')\n", "main.py:2: ValueError: [MAIXPY]kpu: load error:2005"),
    ("import KPU as kpu\nt = kpu.load(0x500000)\nkpu.init_yolo2(t, 0.5, 0.3, 5, (1.0, 2.0))\n",
     "main.py:3: ValueError: requested length 10 but object has length 2"),
    ("import sensor, KPU as kpu\nsensor.reset()\nsensor.set_framesize(sensor.QVGA)\nt = kpu.load(0x500000)\n"
     "kpu.set_outputs(t, 0, 10, 7, 125)\nkpu.run_yolo2(t, sensor.snapshot())\n",
     "main.py:6: ValueError: [MAIXPY]kpu: run_yolo2 needs kpu.init_yolo2"),
    ("import sensor, KPU as kpu\nsensor.reset()\nsensor.set_framesize(sensor.QVGA)\nt = kpu.load(0x500000)\n"
     "kpu.set_outputs(t, 0, 25, 14, 25)\nkpu.init_yolo2(t, 0.5, 0.3, 9, (1.0,) * 18)\nkpu.run_yolo2(t, sensor.snapshot())\n",
     "would read outside the buffer"),
])
def test_bad_scripts_stop_with_one_line(tmp_path, capsys, text, expect):
    cam = _camera_dir(tmp_path, COCO[:1])
    rc, out, err = _run(capsys, "maixpy", _script(tmp_path, text), "--camera", cam, "--flash", f"0x500000={YOLO}",
                        "--sd", tmp_path)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and expect in err, err


def test_bad_options_exit_2(tmp_path, capsys):
    script = _script(tmp_path, "print(1)\n")
    for argv in (["--camera", tmp_path / "none"], ["--flash", "0x300000"], ["--flash", "0xZZ=a.kmodel"],
                 ["--flash", f"0x300000={tmp_path / 'none.kmodel'}"], ["--sd", tmp_path / "none"]):
        rc, out, err = _run(capsys, "maixpy", script, *argv)
        assert rc == 2 and len(err.strip().splitlines()) == 1, (argv, err)
    rc, out, err = _run(capsys, "maixpy", tmp_path / "missing.py")
    assert rc == 2 and "missing.py: no such file" in err


def test_helper_modules_next_to_the_script_see_the_stand_ins(tmp_path, capsys):
    (tmp_path / "helper.py").write_text("import time\ndef ms():\n    return time.ticks_ms()\n")
    (tmp_path / "labels.txt").write_text("a,b\n")
    script = _script(tmp_path, "import helper\nprint(type(helper.ms()).__name__)\nprint(open('labels.txt').read().strip())\n")
    rc, out, err = _run(capsys, "maixpy", script)
    assert rc == 0 and out.splitlines() == ["int", "a,b"], err


def test_kfpkg_flash_package(tmp_path, capsys):
    import zipfile

    pkg = tmp_path / "model_at_0x500000.kfpkg"
    with zipfile.ZipFile(pkg, "w") as z:
        z.writestr("flash-list.json", json.dumps({"version": "0.1.0", "files": [
            {"address": 0x500000, "bin": "yolo.kmodel", "sha256Prefix": False}]}))
        z.writestr("yolo.kmodel", YOLO.read_bytes())
    script = _script(tmp_path, "import KPU as kpu\nt = kpu.load(0x500000)\nprint(t.model_size())\n")
    rc, out, err = _run(capsys, "maixpy", script, "--flash", pkg)
    assert rc == 0 and out.strip() == str(YOLO.stat().st_size), err


# ----------------------------------------------------------------------------------------- detect
def test_detect_prints_draws_and_writes_json(tmp_path, capsys):
    labels = tmp_path / "voc.txt"
    labels.write_text("aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,diningtable,dog,horse,motorbike,"
                      "person,pottedplant,sheep,sofa,train,tvmonitor\n")
    inputs = sorted((CASES / "kmodel__yolo20" / "inputs").glob("*.bin"))
    rc, out, err = _run(capsys, "detect", YOLO, *inputs, PICTURES / "coco_436511.png", "--anchors",
                        ",".join(map(str, VOC)), "--threshold", "0.3", "--labels", labels, "--draw", tmp_path / "drawn",
                        "--json", tmp_path / "boxes.json")
    assert rc == 0, err
    boxes = json.loads((tmp_path / "boxes.json").read_text())
    assert [len(b["objects"]) for b in boxes] == [5, 1, 2, 5]
    assert boxes[0]["objects"] == boxes[3]["objects"]  # the .bin sample and the picture are the same pixels
    assert {o["label"] for o in boxes[0]["objects"]} == {"horse", "person", "sheep"}
    assert "person" in out and sorted(p.name for p in (tmp_path / "drawn").iterdir())[-1] == "coco_436511.png"


def test_detect_bad_input(tmp_path, capsys):
    pic = PICTURES / "coco_436511.png"
    for argv, expect in ((["--anchors", "1,2,3"], "pair"), (["--anchors", "a,b"], "numbers"),
                         (["--anchors", ",".join(["1"] * 18)], "--classes"),
                         (["--anchors", ",".join(map(str, VOC)), "--threshold", "2"], "threshold only support")):
        rc, out, err = _run(capsys, "detect", YOLO, pic, *argv)
        assert rc == 2 and expect in err and len(err.strip().splitlines()) == 1, (argv, err)
    rc, out, err = _run(capsys, "detect", YOLO, pic, "--anchors", ",".join(["1"] * 18), "--classes", "20")
    assert rc == 2 and "outside the buffer" in err  # 9 anchors x 25 channels > 125
    import kmodelpy.maixpy.region as region

    region._warned_overflow = False  # warned once per process
    rc, out, err = _run(capsys, "detect", YOLO, pic, "--anchors", ",".join(["1"] * 18), "--classes", "1",
                        "--threshold", "0.2")
    lines = err.strip().splitlines()
    assert rc == 0 and len(lines) == 1 and lines[0].startswith("warning: kpu.run_yolo2: ")
    assert "objects; MaixPy's obj_info_t holds 10" in lines[0]
