"""Every kmodel v3 reference case (reference/ncc_outputs/v3: real models from public K210 projects,
the K210 SDK runtime's outputs) bit for bit through the library (``kmodelpy.load(...).run``) and
through ``kmodelpy infer --dataset-format raw``; ``inspect`` and ``run`` give sensible output; .kfpkg
packages are listed and their kmodels run (``--member``)."""
from __future__ import annotations

import json
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import kmodelpy
from kmodelpy import cli

V3 = Path(__file__).resolve().parent.parent / "reference" / "ncc_outputs" / "v3"
CASES = sorted(p.name for p in V3.iterdir() if (p / "model.kmodel").exists())
PICTURES = Path(__file__).resolve().parent / "data" / "pictures"


def _case(name: str) -> dict:
    return json.loads((V3 / name / "case.json").read_text())


@lru_cache(maxsize=2)
def _model(name: str):
    return kmodelpy.load(V3 / name / "model.kmodel")


def test_the_reference_has_the_nine_public_cases():
    assert len(CASES) == 9


@pytest.mark.parametrize("case", CASES)
def test_library_is_bit_exact(case):
    m = _model(case)
    c = _case(case)
    assert m.input_shape == c["input"]["shape"] and m.input_dtype == np.dtype({"u8": "u1", "f32": "<f4"}[c["input"]["dtype"]])
    for entry in c["inputs"]:
        x = np.fromfile(V3 / case / entry["file"], m.input_dtype).reshape(m.input_shape)
        outs = m.run(x)
        want = (V3 / case / entry["out"]).read_bytes()
        assert m.output_bytes() == want, f"{case} {entry['file']}"
        assert b"".join(o.astype("<f4").tobytes() for o in outs) == want


@pytest.mark.parametrize("case", CASES)
def test_cli_infer_raw_is_bit_exact(case, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["infer", str(V3 / case / "model.kmodel"), str(out), "--dataset", str(V3 / case / "inputs"),
                   "--dataset-format", "raw"])
    assert rc == 0, capsys.readouterr().err
    for entry in _case(case)["inputs"]:
        name = Path(entry["file"]).name
        assert (out / name).read_bytes() == (V3 / case / entry["out"]).read_bytes(), f"{case} {name}"


@pytest.mark.parametrize("case", ["mbnet75_imagenet", "maixpy_mnist", "nncase_rc5_iris"])
def test_classifiers_top_class_is_the_references(case):
    m = _model(case)
    for entry in _case(case)["inputs"]:
        x = np.fromfile(V3 / case / entry["file"], m.input_dtype).reshape(m.input_shape)
        scores = m.run(x)[0].reshape(-1)
        assert int(np.argmax(scores)) == entry["sanity_decode"][0]["class"]


def test_run_on_a_picture_prints_the_top_classes(capsys):
    rc = cli.main(["run", str(V3 / "mbnet75_imagenet" / "model.kmodel"), str(PICTURES / "skimage_chelsea.png")])
    out = capsys.readouterr().out
    assert rc == 0 and "top-5 [285] 0.8" in out  # Egyptian cat (the picture file is a smaller copy: not the same bits)


@pytest.mark.parametrize("case", CASES)
def test_inspect(case, capsys):
    rc = cli.main(["inspect", str(V3 / case / "model.kmodel")])
    out = capsys.readouterr().out
    c = _case(case)
    assert rc == 0
    assert f"kmodel v3 (nncase v0.1" in out and f"{c['model']['layers_length']} layers" in out
    for k, name in enumerate(c["layer_sequence"]):
        assert f"\n  {k:<4}{name:<36}{'KPU' if name == 'K210_CONV' else 'CPU'}" in out
    for line in c["kpu_conv_layers"]:
        assert line.split(" +")[0] in out
    assert "no kpu.set_outputs" in out and f"main memory: {c['model']['main_mem_usage']} B" in out
    for o in c["outputs"]:
        assert f"in main [{o['address']}, {o['address'] + o['bytes']}) {o['bytes']} B" in out


# ------------------------------------------------------------------ .kfpkg
def _kfpkg(path: Path, files: list[tuple[str, int, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("flash-list.json", json.dumps({"version": "0.1.0", "files": [
            {"address": a, "bin": n, "sha256Prefix": n.endswith(".bin")} for n, a, _ in files]}))
        for n, _, data in files:
            z.writestr(n, data)
    return path


@pytest.fixture
def two_kmodels(tmp_path):
    mnist = (V3 / "maixpy_mnist" / "model.kmodel").read_bytes()
    iris_v4 = (V3.parent / "cases" / "kmodel__iris" / "ncc.kmodel").read_bytes()
    return _kfpkg(tmp_path / "pkg.kfpkg", [("maixpy.bin", 0, b"\x00firmware" * 10), ("mnist.kmodel", 0x300000, mnist),
                                           ("iris.kmodel", 0x500000, iris_v4)])


def test_kfpkg_inspect_lists_kmodels_with_flash_addresses(two_kmodels, capsys):
    assert cli.main(["inspect", str(two_kmodels)]) == 0
    out = capsys.readouterr().out
    assert "0x300000  mnist.kmodel" in out and "kmodel v3" in out
    assert "0x500000  iris.kmodel" in out and "kmodel v4" in out
    assert "0x000000  maixpy.bin" in out and "firmware" in out
    assert cli.main(["inspect", str(two_kmodels), "--member", "0x300000"]) == 0
    assert "11 layers" in capsys.readouterr().out


def test_kfpkg_run_and_infer_need_member_when_several(two_kmodels, tmp_path, capsys):
    sample = V3 / "maixpy_mnist" / "inputs" / "digit3_idx3.bin"
    rc = cli.main(["run", str(two_kmodels), str(sample)])
    err = capsys.readouterr().err
    assert rc == 2 and "holds 2 kmodels (mnist.kmodel at 0x300000, iris.kmodel at 0x500000)" in err and "--member" in err
    out = tmp_path / "out"
    rc = cli.main(["infer", str(two_kmodels), str(out), "--dataset", str(sample), "--dataset-format", "raw",
                   "--member", "mnist.kmodel"])
    assert rc == 0
    assert (out / "digit3_idx3.bin").read_bytes() == (V3 / "maixpy_mnist" / "out" / "digit3_idx3.bin").read_bytes()
    m = kmodelpy.load(two_kmodels, member=0x500000)  # MaixPy's kpu.load(0x500000)
    assert m.version == 4 and kmodelpy.load(two_kmodels, member="mnist.kmodel").version == 3
    rc = cli.main(["run", str(two_kmodels), str(sample), "--member", "nothing.kmodel"])
    assert rc == 2 and "no member 'nothing.kmodel'" in capsys.readouterr().err


def test_kfpkg_with_one_kmodel_needs_no_member(tmp_path):
    data = (V3 / "nncase_rc5_iris" / "model.kmodel").read_bytes()
    pkg = _kfpkg(tmp_path / "one.kfpkg", [("iris.kmodel", 0x300000, data)])
    m = kmodelpy.load(pkg)
    x = np.fromfile(V3 / "nncase_rc5_iris" / "inputs" / "iris_row050.bin", np.float32).reshape(1, 4)
    m.run(x)
    assert m.output_bytes() == (V3 / "nncase_rc5_iris" / "out" / "iris_row050.bin").read_bytes()


@pytest.mark.parametrize("content, words", [
    (b"not a zip at all", "not a .kfpkg"),
    ("no_list", "has no flash-list.json"),
    ("bad_json", "cannot be read"),
    ("missing_member", "names 'x.kmodel', which the .kfpkg does not contain"),
])
def test_bad_kfpkg_is_one_line(content, words, tmp_path, capsys):
    p = tmp_path / "bad.kfpkg"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        with zipfile.ZipFile(p, "w") as z:
            if content == "bad_json":
                z.writestr("flash-list.json", "{not json")
            elif content == "missing_member":
                z.writestr("flash-list.json", json.dumps({"files": [{"address": 0, "bin": "x.kmodel"}]}))
            else:
                z.writestr("other.txt", "hello")
    for argv in (["inspect", str(p)], ["run", str(p), str(PICTURES / "skimage_chelsea.png")]):
        rc = cli.main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ------------------------------------------------------------------ with MaixPy's region layer
VOC = ("aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike person pottedplant "
       "sheep sofa train tvmonitor").split()
ANCHORS = {"maixpy_facedetect": "1.889,2.5245,2.9465,3.94056,3.99987,5.3658,5.155437,6.92275,6.718375,9.01025",
           "nncase_rc5_yolo20": "1.08,1.19,3.42,4.41,6.63,11.38,9.42,5.11,16.62,10.52"}


@pytest.mark.parametrize("case, sample", [("maixpy_facedetect", "skimage_astronaut"),
                                          ("nncase_rc5_yolo20", "COCO_val2014_000000436511")])
def test_kmodelpy_detect_on_v3_detectors_finds_the_reference_boxes(case, sample, tmp_path, capsys):
    """kmodelpy detect (MaixPy's region layer, the grid of the last KPU conv) on the v3 emulator's output:
    the objects the reference's sanity decode lists (labels, scores to 3 digits, box centres)."""
    out = tmp_path / "boxes.json"
    rc = cli.main(["detect", str(V3 / case / "model.kmodel"), str(V3 / case / "inputs" / f"{sample}.bin"),
                   "--anchors", ANCHORS[case], "--threshold", "0.5", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    got = json.loads(out.read_text())[0]["objects"]
    entry = next(e for e in _case(case)["inputs"] if Path(e["file"]).stem == sample)
    want = entry["sanity_decode"]
    labels = ["face"] if case == "maixpy_facedetect" else VOC
    assert sorted((labels[o["classid"]], round(o["value"], 3)) for o in got) == sorted((w["label"], w["prob"]) for w in want)
    _, _, h, w = _model(case).input_shape
    for o in got:
        ref = next(r for r in want if r["label"] == labels[o["classid"]] and r["prob"] == round(o["value"], 3))
        cx, cy = (o["x"] + o["w"] / 2) / w, (o["y"] + o["h"] / 2) / h
        assert abs(cx - ref["box_xywh_fraction"][0]) < 0.01 and abs(cy - ref["box_xywh_fraction"][1]) < 0.01
