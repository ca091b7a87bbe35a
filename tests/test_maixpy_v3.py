"""MaixPy stand-ins with kmodel v3 files (needs the kmodel v3 runtime): the face detector of
MaixPy-v1_scripts (face_model_at_0x300000.kfpkg = reference v3/maixpy_facedetect) through
kpu.load(address) of a kflash package, run_yolo2 on the v3 output shape (the last KPU conv), and a v3
classifier's fmap (typecode of its last layer)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from kmodelpy import cli

ROOT = Path(__file__).resolve().parent
V3 = ROOT.parent / "reference" / "ncc_outputs" / "v3"
PICTURES = ROOT / "data" / "pictures"
FACE_ANCHORS = (1.889, 2.5245, 2.9465, 3.94056, 3.99987, 5.3658, 5.155437, 6.92275, 6.718375, 9.01025)

FIND_FACE = """\
import sensor, image, lcd, time
import KPU as kpu
sensor.reset()
sensor.set_pixformat(sensor.RGB565)
sensor.set_framesize(sensor.QVGA)
lcd.init(type=1)
task = kpu.load(0x300000)
kpu.init_yolo2(task, 0.5, 0.3, 5, (1.889, 2.5245, 2.9465, 3.94056, 3.99987, 5.3658, 5.155437, 6.92275, 6.718375, 9.01025))
while True:
    img = sensor.snapshot()
    for obj in kpu.run_yolo2(task, img) or []:
        print(obj.rect(), '%.3f' % obj.value())
        img.draw_rectangle(obj.rect())
    lcd.display(img)
"""

CLASSIFY = """\
import sensor, KPU as kpu
sensor.reset()
sensor.set_pixformat(sensor.RGB565)
sensor.set_framesize(sensor.QVGA)
sensor.set_windowing((224, 224))
task = kpu.load(0x300000)
fmap = kpu.forward(task, sensor.snapshot())
plist = fmap[:]
print(fmap.typecode(), fmap.w(), fmap.h(), fmap.ch(), len(plist), plist.index(max(plist)))
"""


def _run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_find_face_script_with_the_kfpkg(tmp_path, capsys):
    pkg = tmp_path / "face_model_at_0x300000.kfpkg"
    with zipfile.ZipFile(pkg, "w") as z:
        z.writestr("flash-list.json", json.dumps({"version": "0.1.0", "files": [
            {"address": 3145728, "bin": "facedetect.kmodel", "sha256Prefix": False}]}))
        z.writestr("facedetect.kmodel", (V3 / "maixpy_facedetect" / "model.kmodel").read_bytes())
    (tmp_path / "main.py").write_text(FIND_FACE)
    cam = tmp_path / "cam"
    cam.mkdir()
    for name in ("skimage_astronaut.png", "coco_436617.png"):
        (cam / name).write_bytes((PICTURES / name).read_bytes())
    rc, out, err = _run(capsys, "maixpy", tmp_path / "main.py", "--camera", cam, "--flash", pkg, "--lcd", tmp_path / "lcd")
    assert rc == 0, err
    (rect, score), = [ln.rsplit(" ", 1) for ln in out.splitlines()]  # one face: the astronaut's
    x, y, w, h = eval(rect)
    assert abs(x - 118) <= 2 and abs(y - 23) <= 2 and abs(w - 47) <= 2 and abs(h - 63) <= 2 and float(score) > 0.9
    assert len(list((tmp_path / "lcd").iterdir())) == 2


def test_detect_on_the_v3_face_detectors(capsys):
    for case in ("maixpy_facedetect", "demo_face_detect"):
        meta = json.loads((V3 / case / "case.json").read_text())
        inp = V3 / case / "inputs" / "skimage_astronaut.bin"
        rc, out, err = _run(capsys, "detect", V3 / case / "model.kmodel", inp, "--anchors", ",".join(map(str, FACE_ANCHORS)))
        assert rc == 0, err
        (sanity,) = [i["sanity_decode"] for i in meta["inputs"] if i["file"].endswith("skimage_astronaut.bin")]
        lines = out.splitlines()[1:]
        assert len(lines) == len(sanity) == 1
        score = float(lines[0].split()[3])
        assert abs(score - sanity[0]["prob"]) < 1e-3


def test_v3_classifier_fmap(tmp_path, capsys):
    (tmp_path / "main.py").write_text(CLASSIFY)
    cam = tmp_path / "cam"
    cam.mkdir()
    (cam / "chelsea.png").write_bytes((PICTURES / "skimage_chelsea.png").read_bytes())
    rc, out, err = _run(capsys, "maixpy", tmp_path / "main.py", "--camera", cam,
                        "--flash", f"0x300000={V3 / 'mbnet75_imagenet' / 'model.kmodel'}")
    assert rc == 0, err
    typecode, w, h, ch, n, best = out.split()
    assert (typecode, w, h, ch, n) == ("f", "4000", "1", "1", "1000")  # SOFTMAX last; w = bytes (MaixPy's bug)
    assert int(best) in range(281, 286)  # ImageNet cats (285 Egyptian cat)
