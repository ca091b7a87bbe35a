"""Every reference case with ``ncc_out``: emulating ``ncc.kmodel`` reproduces ``ncc infer`` bit for bit,
through the library (``Model.run``) and through ``kmodelpy infer --dataset-format raw``; and
``kmodelpy run X.png --save`` on the line-follower test PNGs equals ``ncc_out/X.bin``."""
from __future__ import annotations

import shutil
from functools import lru_cache

import numpy as np
import pytest
from refcases import CASES, DATASETS, case_json, cases_with, inputs, ncc_out

from kmodelpy import cli
from kmodelpy.format.kmodel import node_opcodes
from kmodelpy.ops.base import OPS

REF_CASES = cases_with("ncc_out")


@lru_cache(maxsize=1)
def _registered() -> frozenset:
    """Opcodes whose module imports (modules still being written are skipped, not failed)."""
    import importlib
    import pkgutil

    import kmodelpy.ops as pkg
    from kmodelpy.ops import base

    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name != "base" and not m.name.startswith("_"):
            try:
                importlib.import_module(f"kmodelpy.ops.{m.name}")
            except Exception as e:  # noqa: BLE001 - reported by test_every_op_module_imports
                BROKEN[m.name] = f"{type(e).__name__}: {e}"
    base._loaded = True  # parse with what imports; the broken modules fail the test below
    return frozenset(OPS)


BROKEN: dict[str, str] = {}


def test_every_op_module_imports():
    _registered()
    assert not BROKEN, BROKEN


def _missing_ops(case: str) -> list[int]:
    data = (CASES / case / "ncc.kmodel").read_bytes()
    return sorted({c for c in node_opcodes(data, case) if c not in _registered()})


@lru_cache(maxsize=4)
def _model(case: str):
    import kmodelpy

    missing = _missing_ops(case)
    if missing:
        pytest.skip(f"opcodes not implemented yet: {', '.join(f'0x{c:04X}' for c in missing)}")
    return kmodelpy.load(CASES / case / "ncc.kmodel")


def _input(model, path) -> np.ndarray:
    return np.fromfile(path, dtype=model.input_dtype).reshape(model.input_shape)


def test_reference_set_is_complete():
    assert len([c for c in REF_CASES if c.startswith("synth__")]) == 301
    assert len([c for c in REF_CASES if c.startswith("kmodel__")]) == 5
    assert len([c for c in REF_CASES if c.startswith("onnx__")]) == 45
    assert len(REF_CASES) == 349 + 45


@pytest.mark.parametrize("case", REF_CASES)
def test_library_bit_exact(case):
    model = _model(case)
    for x in inputs(case):
        outs = model.run(_input(model, x))
        assert model.last_error is None or "error occurs in running kernel" in model.last_error
        want = ncc_out(case, x.stem)
        got = model.output_bytes()
        assert len(got) == len(want), f"{case}/{x.stem}: output size"
        assert got == want, f"{case}/{x.stem}: {np.count_nonzero(np.frombuffer(got, 'u1') != np.frombuffer(want, 'u1'))} bytes differ"
        # the arrays returned by run() hold the same bytes (the whole elements of each output range)
        pos = 0
        for o, mr in zip(outs, model.kmodel.outputs):
            whole = mr.size - mr.size % mr.itemsize
            assert o.dtype == mr.dtype and o.tobytes() == want[pos : pos + whole]
            pos += mr.size


@pytest.mark.parametrize("case", REF_CASES)
def test_cli_infer_raw_bit_exact(case, tmp_path):
    _model(case)  # skip early when an opcode is missing
    data = tmp_path / "inputs"
    shutil.copytree(CASES / case / "inputs", data)
    out = tmp_path / "out"
    rc = cli.main(["infer", str(CASES / case / "ncc.kmodel"), str(out), "--dataset", str(data),
                   "--dataset-format", "raw"])
    assert rc == 0
    stems = sorted(p.stem for p in inputs(case))
    assert sorted(p.stem for p in out.iterdir()) == stems
    for s in stems:
        assert (out / f"{s}.bin").read_bytes() == ncc_out(case, s), f"{case}/{s}"


def _uint8_line160_cases() -> list[str]:
    out = []
    for c in REF_CASES:
        j = case_json(c)
        if not c.startswith("line_follower") or j.get("input_dtype") != "u8":
            continue
        stems = [p.stem for p in inputs(c)]
        if all((DATASETS / "line160" / "test" / f"{s}.png").exists() for s in stems):
            out.append(c)
    return out


LINE160_U8 = _uint8_line160_cases()


def test_line160_cases_found():
    assert {"line_follower_kpu", "line_follower_stock"} <= set(LINE160_U8)


@pytest.mark.parametrize("case", LINE160_U8)
def test_cli_run_png_bit_exact(case, tmp_path, capsys):
    _model(case)
    stems = [p.stem for p in inputs(case)]
    pngs = [str(DATASETS / "line160" / "test" / f"{s}.png") for s in stems]
    rc = cli.main(["run", str(CASES / case / "ncc.kmodel"), *pngs, "--save", str(tmp_path)])
    assert rc == 0
    printed = capsys.readouterr().out
    for s in stems:
        assert f"{s}.png" in printed
        assert (tmp_path / f"{s}.bin").read_bytes() == ncc_out(case, s), f"{case}/{s}"


def test_profile_times_every_node_and_keeps_results():
    case = "line_follower_kpu"
    model = _model(case)
    x = _input(model, inputs(case)[0])
    prof = model.profile(x, repeats=2)
    assert [k for k, _, _ in prof] == list(range(len(model.kmodel.ops)))
    assert [n for _, n, _ in prof] == [op.name for op in model.kmodel.ops]
    assert all(s >= 0 for _, _, s in prof)
    assert model.output_bytes() == ncc_out(case, inputs(case)[0].stem)
