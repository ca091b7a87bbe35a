"""kmodelpy.parallel: one BLAS thread during runs, ordered maps over pictures on threads, and the
``--jobs`` options of ``infer`` and ``compile`` writing exactly what one job writes."""
from __future__ import annotations

import shutil
import struct
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from refcases import CASES, DATASETS
from threadpoolctl import threadpool_info

import kmodelpy
from kmodelpy import cli, parallel
from kmodelpy.errors import InputError
from kmodelpy.format.kmodel import HEADER_SIZE

LINE = CASES / "line_follower_kpu" / "ncc.kmodel"


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


# ------------------------------------------------------------------ map_ordered
class Boom(Exception):
    pass


@settings(max_examples=40, deadline=None)
@given(items=st.lists(st.integers(-50, 50), max_size=30), jobs=st.integers(1, 5),
       fail_at=st.one_of(st.none(), st.integers(0, 29)))
def test_map_ordered_is_the_sequential_map(items, jobs, fail_at):
    """Results in item order whatever the thread count; each worker's state made once; an error
    surfaces after exactly the results of the items before it."""
    made = []
    lock = threading.Lock()

    def init():
        with lock:
            made.append(threading.get_ident())
        return threading.get_ident()

    def work(state, pair):
        k, v = pair
        assert state == threading.get_ident()  # the state of the worker running the item
        if k == fail_at:
            raise Boom(k)
        return v * v - k

    pairs = list(enumerate(items))
    expected = [v * v - k for k, v in pairs]
    got = []
    failing = fail_at is not None and fail_at < len(items)
    if failing:
        with pytest.raises(Boom):
            for r in parallel.map_ordered(work, pairs, jobs, init):
                got.append(r)
        assert got == expected[:fail_at]
    else:
        got = list(parallel.map_ordered(work, pairs, jobs, init))
        assert got == expected
    assert len(made) == len(set(made)) <= max(1, min(jobs, len(items)))


def test_free_cores_is_between_one_and_the_available_cores():
    assert 1 <= parallel.free_cores() <= parallel.available_cores()


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_jobs_option_refuses_non_positive(bad, tmp_path, capsys):
    rc = cli.main(["infer", str(LINE), str(tmp_path / "o"), "--dataset", str(DATASETS / "line160" / "test"),
                   "--jobs", bad])
    err = capsys.readouterr().err
    assert rc == 2 and "--jobs" in err and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ one BLAS thread
def test_one_blas_thread_while_running_and_restored_after():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        inside = []
        with parallel.one_blas_thread:
            inside.append(_blas_threads())
            with parallel.one_blas_thread:  # nested (overlapping threads): still one, restored once
                inside.append(_blas_threads())
            inside.append(_blas_threads())
        assert all(n == [1] * len(before) for n in inside)
        assert _blas_threads() == before


def test_model_runs_on_one_blas_thread(monkeypatch):
    """Every GEMM of a KPU layer runs while BLAS is limited to the calling thread."""
    from kmodelpy.ops import kpu_conv2d

    seen = []
    real = kpu_conv2d._Plan._matmul

    def spy(self, x, d):
        seen.append(_blas_threads())
        return real(self, x, d)

    monkeypatch.setattr(kpu_conv2d._Plan, "_matmul", spy)
    model = kmodelpy.load(LINE)
    model.run(np.zeros(model.input_shape, np.uint8))
    assert seen and all(n and set(n) == {1} for n in seen)


# ------------------------------------------------------------------ --jobs writes what one job writes
def _files(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_infer_jobs_write_the_same_files(tmp_path, capsys):
    ds = tmp_path / "ds"
    ds.mkdir()
    for p in sorted((DATASETS / "line160" / "test").glob("*.png"))[:7]:
        shutil.copy(p, ds)
    outs = {}
    for jobs in ("1", "2", "3"):
        rc = cli.main(["infer", str(LINE), str(tmp_path / jobs), "--dataset", str(ds), "--jobs", jobs])
        assert rc == 0, capsys.readouterr().err
        outs[jobs] = _files(tmp_path / jobs)
    assert len(outs["1"]) == 7 and outs["1"] == outs["2"] == outs["3"]


def test_infer_jobs_stop_at_the_same_bad_picture(tmp_path, capsys):
    ds = tmp_path / "ds"
    ds.mkdir()
    pngs = sorted((DATASETS / "line160" / "test").glob("*.png"))[:6]
    for p in pngs:
        shutil.copy(p, ds)
    (ds / "test002b.png").write_bytes(pngs[0].read_bytes()[:200])  # listed as an image, cannot be decoded
    results = {}
    for jobs in ("1", "2"):
        rc = cli.main(["infer", str(LINE), str(tmp_path / jobs), "--dataset", str(ds), "--jobs", jobs])
        err = capsys.readouterr().err
        assert rc == 2 and "test002b.png" in err and "cannot decode" in err
        results[jobs] = (_files(tmp_path / jobs), err)
    assert sorted(results["1"][0]) == ["test000.bin", "test001.bin", "test002.bin"]
    assert results["1"] == results["2"]


def test_infer_jobs_print_kernel_failures_in_order(tmp_path, capsys):
    """A Binary node with op 9 fails in every run (``Fatal: ...`` each time, files still written)."""
    src = CASES / "synth__binary_s1_op0_noact" / "ncc.kmodel"
    data = bytearray(src.read_bytes())
    _, _, _, _, n_const, _, n_nodes, n_in, n_out, _ = struct.unpack_from("<10I", data)
    body = HEADER_SIZE + 32 * n_in + 16 * n_out + n_const + 8 * n_nodes
    struct.pack_into("<I", data, body + 48, 9)
    bad = tmp_path / "op9.kmodel"
    bad.write_bytes(bytes(data))
    ds = tmp_path / "ds"
    for i, f in enumerate(sorted((CASES / "synth__binary_s1_op0_noact" / "inputs").iterdir()) * 3):
        ds.mkdir(exist_ok=True)
        shutil.copy(f, ds / f"{i:02d}_{f.name}")
    results = {}
    for jobs in ("1", "2"):
        rc = cli.main(["infer", str(bad), str(tmp_path / jobs), "--dataset", str(ds), "--dataset-format", "raw",
                       "--jobs", jobs])
        err = capsys.readouterr().err
        assert rc == 0 and err.count("Fatal:") == len(list(ds.iterdir()))
        results[jobs] = (_files(tmp_path / jobs), err)
    assert results["1"] == results["2"]


def test_compile_jobs_write_the_same_kmodel(tmp_path, capsys):
    kmodels = []
    for jobs in ("1", "2"):
        out = tmp_path / f"dense{jobs}.kmodel"
        rc = cli.main(["compile", str(CASES / "dense" / "model.tflite"), str(out), "-q", "--dataset",
                       str(DATASETS / "rand32" / "calib"), "--calibrate-method", "l2", "--jobs", jobs])
        assert rc == 0, capsys.readouterr().err
        kmodels.append(out.read_bytes())
    assert kmodels[0] == kmodels[1]
    assert kmodelpy.compile(CASES / "dense" / "model.tflite", DATASETS / "rand32" / "calib", jobs=3,
                            calibrate_method="l2") == kmodels[0]


def test_compile_refuses_bad_jobs():
    with pytest.raises(InputError, match="--jobs"):
        kmodelpy.compile(CASES / "dense" / "model.tflite", DATASETS / "rand32" / "calib", jobs=0)
