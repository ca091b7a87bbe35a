"""The ``kmodelpy`` command: happy paths of infer / run / inspect / demo, and every kind of bad input
giving exit status 2, exactly one line on stderr and no output file."""
from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from refcases import CASES, DATASETS, ncc_out

from kmodelpy import cli
from kmodelpy.format.kmodel import HEADER_SIZE

DATA = Path(cli.__file__).resolve().parent / "data"
LINE = DATA / "line_follower.kmodel"
IRIS = CASES / "kmodel__iris" / "ncc.kmodel"
PNG = DATA / "test000.png"


def _run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _header(data: bytes, **fields) -> bytes:
    names = ["identifier", "version", "flags", "target", "constants", "main_mem", "nodes", "inputs",
             "outputs", "reserved0"]
    vals = list(struct.unpack_from("<10I", data))
    for k, v in fields.items():
        vals[names.index(k)] = v
    return struct.pack("<10I", *vals) + data[HEADER_SIZE:]


def _unknown_opcode(data: bytes) -> bytes:
    _, _, _, _, n_const, _, _, n_in, n_out, _ = struct.unpack_from("<10I", data)
    b = bytearray(data)
    struct.pack_into("<I", b, HEADER_SIZE + 32 * n_in + 16 * n_out + n_const, 0x77)
    return bytes(b)


def _four_channels(data: bytes) -> bytes:
    """iris (input [1,1,1,4] f32, 16 bytes) re-declared as [1,4,1,1]: same bytes, C = 4."""
    b = bytearray(data)
    struct.pack_into("<4i", b, HEADER_SIZE + 16, 1, 4, 1, 1)
    return bytes(b)


BAD_MODELS = {
    "wrong_magic": (lambda d: b"GIF89a" + d[6:], "not a kmodel"),
    "truncated": (lambda d: d[:1000], "truncated"),
    "kmodel_v3": (lambda d: struct.pack("<I", 3) + d[4:], "kmodel v3"),
    "kmodel_v5": (lambda d: _header(d, version=5), "MaixPy cannot load it"),
    "offset_past_file": (lambda d: _header(d, constants=len(d) + 100), "do not fit"),
    "absurd_memory": (lambda d: _header(d, main_mem=0xFFFFFF00), "main memory"),
    "unknown_opcode": (_unknown_opcode, "unknown opcode 0x0077"),
}


def _assert_user_error(rc, out_err, words, *no_files):
    out, err = out_err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert words in lines[0]
    assert "Traceback" not in err
    for p in no_files:
        assert not p.exists() or not any(p.iterdir()), f"{p} should hold no output"


@pytest.mark.parametrize("kind", sorted(BAD_MODELS))
@pytest.mark.parametrize("command", ["infer", "run", "inspect"])
def test_bad_model_files(kind, command, tmp_path, capsys):
    mutate, words = BAD_MODELS[kind]
    bad = tmp_path / "bad.kmodel"
    bad.write_bytes(mutate(LINE.read_bytes()))
    out = tmp_path / "out"
    if command == "infer":
        argv = ["infer", bad, out, "--dataset", DATA]
    elif command == "run":
        argv = ["run", bad, PNG, "--save", out]
    else:
        argv = ["inspect", bad]
    rc = cli.main([str(a) for a in argv])
    out_err = capsys.readouterr()
    _assert_user_error(rc, out_err, words, out)
    assert str(bad) in out_err.err


def test_error_line_names_the_file(tmp_path, capsys):
    bad = tmp_path / "weird name é.kmodel"
    bad.write_bytes(b"garbage" * 10)
    rc, _, err = _run(capsys, "inspect", bad)
    assert rc == 2 and str(bad) in err


def test_model_with_channels_images_cannot_feed(tmp_path, capsys):
    m = tmp_path / "four.kmodel"
    m.write_bytes(_four_channels(IRIS.read_bytes()))
    out = tmp_path / "out"
    rc = cli.main(["run", str(m), str(PNG), "--save", str(out)])
    _assert_user_error(rc, capsys.readouterr(), "4 channels", out)
    rc = cli.main(["infer", str(m), str(out), "--dataset", str(DATA)])
    _assert_user_error(rc, capsys.readouterr(), "4 channels", out)


def test_undecodable_image(tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(PNG.read_bytes()[:200])  # a PNG signature, cut short: listed, fails to decode
    out = tmp_path / "out"
    rc = cli.main(["run", str(LINE), str(bad), "--save", str(out)])
    _assert_user_error(rc, capsys.readouterr(), "cannot decode", out)
    rc = cli.main(["infer", str(LINE), str(out), "--dataset", str(tmp_path)])
    _assert_user_error(rc, capsys.readouterr(), "cannot decode", out)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    rc = cli.main(["run", str(LINE), str(text)])
    _assert_user_error(rc, capsys.readouterr(), "cannot decode")


def test_raw_file_of_wrong_size(tmp_path, capsys):
    ds = tmp_path / "ds"
    ds.mkdir()
    shutil.copy(CASES / "kmodel__iris" / "inputs" / sorted(p.name for p in (CASES / "kmodel__iris" / "inputs").iterdir())[0], ds / "a.bin")
    (ds / "b.bin").write_bytes(b"\0" * 15)
    out = tmp_path / "out"
    rc = cli.main(["infer", str(IRIS), str(out), "--dataset", str(ds), "--dataset-format", "raw"])
    _assert_user_error(rc, capsys.readouterr(), "needs 16", out)
    rc = cli.main(["run", str(IRIS), str(ds / "b.bin"), "--save", str(out)])
    _assert_user_error(rc, capsys.readouterr(), "needs 16", out)


def test_missing_and_empty_datasets(tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["infer", str(LINE), str(out), "--dataset", str(tmp_path / "nowhere")])
    _assert_user_error(rc, capsys.readouterr(), "does not exist", out)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    rc = cli.main(["infer", str(LINE), str(out), "--dataset", str(empty)])
    _assert_user_error(rc, capsys.readouterr(), "no image file", out)
    rc = cli.main(["infer", str(LINE), str(out), "--dataset", str(tmp_path / "void"), "--dataset-format", "raw"])
    _assert_user_error(rc, capsys.readouterr(), "does not exist", out)


def test_missing_model_file(tmp_path, capsys):
    rc, _, err = _run(capsys, "run", tmp_path / "nope.kmodel", PNG)
    assert rc == 2 and "no such file" in err and len(err.strip().splitlines()) == 1


def test_tflite_commands_work(tmp_path, capsys):
    """A .tflite goes to the float evaluator (run/infer) and to the fit report (inspect)."""
    tfl = CASES / "dense" / "model.tflite"
    rc, out, err = _run(capsys, "inspect", tfl)
    assert rc == 0 and "KPU" in out and err == ""
    rc, out, err = _run(capsys, "infer", tfl, tmp_path / "o", "--dataset", DATA)
    assert rc == 0 and len(list((tmp_path / "o").glob("*.bin"))) == len(list(DATA.rglob("*.png")))


@pytest.mark.parametrize("command", ["inspect", "run", "compile"])
def test_saved_model_or_keras_file_says_how_to_convert(command, tmp_path, capsys):
    """The usual mistakes — a SavedModel folder, a Keras .h5 — get one line with the conversion."""
    sm = tmp_path / "saved"
    (sm / "variables").mkdir(parents=True)
    (sm / "saved_model.pb").write_bytes(b"\x08\x01")
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    for path in (sm, h5):
        argv = [command, path] + ([PNG] if command == "run" else []) + (
            ["--dataset", DATA] if command == "compile" else [])
        rc, out, err = _run(capsys, *argv)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "TFLiteConverter" in err, (path, err)
    assert not list(tmp_path.glob("*.kmodel"))


def test_internal_error_is_reported_as_a_bug(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(cli, "cmd_inspect", boom)
    rc, _, err = _run(capsys, "inspect", LINE)
    assert rc == 1 and "kmodelpy bug" in err and "kaboom second line" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    monkeypatch.setenv("KMODELPY_DEBUG", "1")
    rc, _, err = _run(capsys, "inspect", LINE)
    assert rc == 1 and "Traceback" in err


def test_kernel_failure_prints_fatal_and_still_writes(tmp_path, capsys):
    """A kernel *error* (ncc: `Fatal: error occurs in running kernel`) stops the run, but the outputs
    are written anyway, as ncc infer does: a Binary node with op 9."""
    src = CASES / "synth__binary_s1_op0_noact" / "ncc.kmodel"
    data = bytearray(src.read_bytes())
    _, _, _, _, n_const, _, n_nodes, n_in, n_out, _ = struct.unpack_from("<10I", data)
    body = HEADER_SIZE + 32 * n_in + 16 * n_out + n_const + 8 * n_nodes
    assert struct.unpack_from("<I", data, HEADER_SIZE + 32 * n_in + 16 * n_out + n_const)[0] == 0  # Binary
    struct.pack_into("<I", data, body + 48, 9)  # binary_op follows in_a, in_b, output
    bad = tmp_path / "op9.kmodel"
    bad.write_bytes(bytes(data))
    ds = tmp_path / "ds"
    shutil.copytree(CASES / "synth__binary_s1_op0_noact" / "inputs", ds)
    out = tmp_path / "out"
    rc, _, err = _run(capsys, "infer", bad, out, "--dataset", ds, "--dataset-format", "raw")
    assert rc == 0
    assert "Fatal:" in err and "error occurs in running kernel: Binary" in err
    assert len(list(out.iterdir())) == len(list(ds.iterdir()))


# ------------------------------------------------------------------ happy paths
def test_infer_images_matches_ncc(tmp_path, capsys):
    ds = tmp_path / "imgs" / "sub"
    ds.mkdir(parents=True)
    for s in ("test001", "test003"):
        shutil.copy(DATASETS / "line160" / "test" / f"{s}.png", ds / f"{s}.png")
    (ds / "notes.txt").write_text("ignored: not an image")
    out = tmp_path / "out"
    rc, stdout, _ = _run(capsys, "infer", LINE, out, "--dataset", tmp_path / "imgs")
    assert rc == 0 and "2 file(s)" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["test001.bin", "test003.bin"]
    for s in ("test001", "test003"):
        assert (out / f"{s}.bin").read_bytes() == ncc_out("line_follower_kpu", s)


def test_infer_float_model_with_mean_std(tmp_path, capsys):
    """Float image input: f32(v)*f32(1/255), then (v - mean)/std; with mean 0, std 1 the PNG gives
    the reference raw input exactly."""
    case = "line_follower_kpu__float"
    out = tmp_path / "out"
    ds = tmp_path / "ds"
    ds.mkdir()
    shutil.copy(DATASETS / "line160" / "test" / "test000.png", ds)
    rc, _, _ = _run(capsys, "infer", CASES / case / "ncc.kmodel", out, "--dataset", ds)
    if (CASES / case / "ncc_out" / "test000.bin").exists():
        assert rc == 0 and (out / "test000.bin").read_bytes() == ncc_out(case, "test000")
    rc, _, _ = _run(capsys, "infer", CASES / case / "ncc.kmodel", tmp_path / "o2", "--dataset", ds,
                    "--input-mean", "0.5", "--input-std", "2")
    assert rc == 0 and (tmp_path / "o2" / "test000.bin").read_bytes() != (out / "test000.bin").read_bytes()


def test_run_prints_outputs_and_saves(tmp_path, capsys):
    rc, out, _ = _run(capsys, "run", LINE, PNG, "--save", tmp_path)
    assert rc == 0
    assert "test000.png" in out and "output 0" in out and "1x1x1x1" in out
    assert (tmp_path / "test000.bin").read_bytes() == ncc_out("line_follower_kpu", "test000")
    value = np.frombuffer((tmp_path / "test000.bin").read_bytes(), "<f4")[0]
    assert f"{value:.6g}" in out


def test_run_vector_output_shows_top5(capsys):
    case = CASES / "kmodel__canmv__mnist__uint8_mnist_cnn_model"
    x = sorted((case / "inputs").iterdir())[0]
    rc, out, _ = _run(capsys, "run", case / "ncc.kmodel", x)
    assert rc == 0 and "top-5" in out and "1x10" in out
    want = np.frombuffer(ncc_out(case.name, x.stem), "<f4")
    assert f"[{int(np.argmax(want))}]" in out.split("top-5")[1].split(",")[0]


def test_inspect_kmodel(capsys):
    rc, out, _ = _run(capsys, "inspect", CASES / "kmodel__yolo20" / "ncc.kmodel")
    assert rc == 0
    assert "kmodel v4" in out and "K210" in out
    assert "KPUConv2D" in out and "x16" in out
    assert "uint8 1x3x240x320" in out and "float32 1x125x7x10" in out
    assert "KPU RAM high-water: 967680 B" in out
    assert "kpu.set_outputs(task, 0, 10, 7, 125)" in out


def test_inspect_flags_beta3_opcodes(capsys):
    rc, out, _ = _run(capsys, "inspect", CASES / "synth__nnil_noret" / "ncc.kmodel")
    assert rc == 0 and "NNILUnaryMethod" in out and "[!]" in out and "beta3" in out
    rc, out, _ = _run(capsys, "inspect", CASES / "kmodel__yolo20" / "ncc.kmodel")
    assert "[!] needs" not in out


def test_demo(capsys):
    """The demo compiles the bundled TFLite, then runs our kmodel, ncc's kmodel and float side by side."""
    rc, out, _ = _run(capsys, "demo")
    assert rc == 0 and "kmodelpy compile line_follower.tflite" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("test") and ".png" in line]
    assert len(rows) == 3 and all(r[-1] == "bit-exact" for r in rows) and "DIFFERS" not in out
    for _, ours, ncc, flt, _ in rows:  # our uint8 kmodel tracks float about as well as ncc's does
        assert abs(float(ours) - float(flt)) < 0.1 and abs(float(ncc) - float(flt)) < 0.1


def test_python_dash_m_and_console_script_entry(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kmodelpy", "inspect", str(tmp_path / "missing.kmodel")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such file" in r.stderr
    r = subprocess.run([sys.executable, "-m", "kmodelpy", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and all(c in r.stdout for c in ("infer", "run", "inspect", "demo", "compile"))


def test_infer_batch_of_two_mimics_ncc(tmp_path, capsys):
    """Input N = 2 (iris re-declared [2,1,1,2]: same 16 bytes): the dataset is cut to a multiple of
    N, each batch is named after its first file and, as in ncc v0.2, only its last file (in slot 0)
    is fed; the other slot is zero here (uninitialised in ncc)."""
    b = bytearray(IRIS.read_bytes())
    struct.pack_into("<4i", b, HEADER_SIZE + 16, 2, 1, 1, 2)
    m = tmp_path / "n2.kmodel"
    m.write_bytes(bytes(b))
    ds = tmp_path / "ds"
    ds.mkdir()
    samples = {n: np.array(v, "<f4") for n, v in (("a", [1, 2]), ("b", [3, 4]), ("c", [5, 6]))}
    for n, v in samples.items():
        v.tofile(ds / f"{n}.bin")
    out = tmp_path / "out"
    rc, _, err = _run(capsys, "infer", m, out, "--dataset", ds, "--dataset-format", "raw")
    assert rc == 0 and "batch" in err
    assert [p.name for p in out.iterdir()] == ["a.bin"]
    import kmodelpy

    iris = kmodelpy.load(IRIS)
    iris.run(np.array([3, 4, 0, 0], np.float32))
    assert (out / "a.bin").read_bytes() == iris.output_bytes()


def test_compile_is_dispatched_to_the_compiler(tmp_path, capsys):
    """`kmodelpy compile` hands over to kmodelpy.compiler.cli; the kmodel it writes runs here."""
    out = tmp_path / "dense.kmodel"
    rc, _, err = _run(capsys, "compile", CASES / "dense" / "model.tflite", out, "--dataset",
                      DATASETS / "rand32" / "calib")
    assert rc == 0, err
    rc, stdout, _ = _run(capsys, "run", out, sorted((CASES / "dense" / "inputs").iterdir())[0])
    assert rc == 0 and "1x10" in stdout


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_output_files_get_the_users_umask(tmp_path, capsys, umask):
    """`compile` and `infer` write like any other program: mode 0666 minus the umask (0644 under 022), not
    tempfile's 0600; and no temporary file is left behind."""
    old = os.umask(umask)
    try:
        km = tmp_path / "dense.kmodel"
        rc, _, err = _run(capsys, "compile", CASES / "dense" / "model.tflite", km, "--dataset",
                          DATASETS / "rand32" / "calib", "-q")
        assert rc == 0, err
        out = tmp_path / "out"
        rc, _, err = _run(capsys, "infer", km, out, "--dataset", CASES / "dense" / "inputs", "--dataset-format", "raw")
        assert rc == 0, err
    finally:
        os.umask(old)
    files = [km] + sorted(out.iterdir())
    assert len(files) > 1 and all(stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask for f in files)
    assert not [f for f in tmp_path.rglob(".*.tmp")]
