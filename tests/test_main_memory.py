"""Main memory of a kmodel that would not fit the K210 (deviation D70): ncc's first-fit placement is kept
whenever it fits 6 MiB; above that, largest first and element-wise binaries computed in place, with the
same numbers; the compile output says so and warns when the kmodel cannot run on a K210."""
from __future__ import annotations

import io

import numpy as np

from tflite_builder import TFLiteBuilder

F32 = np.float32


def _model(tmp_path):
    """x -> conv a -> conv b(a) -> add(a, b) -> conv: the add may overwrite a (nothing reads a after it)."""
    rng = np.random.default_rng(3)
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 8, 8, 4])
    cur, ts = x, []
    for i in range(2):
        y = b.tensor(f"c{i}", [1, 8, 8, 4])
        b.op("CONV_2D", [cur, b.const(f"w{i}", rng.uniform(-1, 1, (4, 3, 3, 4)).astype(F32)),
                         b.const(f"b{i}", np.zeros(4, F32))], [y], "Conv2DOptions", padding="SAME", stride_h=1,
             stride_w=1, fused_activation="NONE")
        cur = y
        ts.append(y)
    s = b.tensor("sum", [1, 8, 8, 4])
    b.op("ADD", ts, [s], "AddOptions", fused_activation="NONE")
    out = b.tensor("out", [1, 8, 8, 2])
    b.op("CONV_2D", [s, b.const("w2", rng.uniform(-1, 1, (2, 1, 1, 4)).astype(F32)), b.const("b2", np.zeros(2, F32))],
         [out], "Conv2DOptions", padding="SAME", stride_h=1, stride_w=1, fused_activation="NONE")
    path = tmp_path / "m.tflite"
    path.write_bytes(b.build(inputs=[x], outputs=[out]))
    return path


def _compile(path):
    from kmodelpy.compiler.pipeline import Options, run_pipeline

    out = io.StringIO()
    res = run_pipeline(path, Options(inference_type="float", target="cpu"), out)
    return res, out.getvalue()


def test_over_the_k210_main_memory_buffers_move_and_numbers_stay(tmp_path, monkeypatch):
    import kmodelpy
    import kmodelpy.compiler.schedule as S

    path = _model(tmp_path)
    ncc, console = _compile(path)
    assert ncc.schedule.main_placement is None and "kmodelpy:" not in console  # fits: ncc's placement
    monkeypatch.setattr(S, "K210_MAIN_RAM", ncc.schedule.main_usage - 1)  # now ncc's would not fit
    small, console = _compile(path)
    assert small.schedule.main_usage < ncc.schedule.main_usage
    assert small.schedule.first_fit_main == ncc.schedule.main_usage
    assert "in place" in small.schedule.main_placement
    assert f"placement needs {ncc.schedule.main_usage} B" in console and "D70" in console
    assert "cannot run on a K210" in console  # the kmodel file and main memory do not fit 6 MiB - 1 here
    x = np.random.default_rng(0).uniform(-1, 1, (1, 4, 8, 8)).astype(F32)
    km_ncc, km_small = (tmp_path / "a.kmodel", tmp_path / "b.kmodel")
    km_ncc.write_bytes(ncc.kmodel)
    km_small.write_bytes(small.kmodel)
    assert np.array_equal(kmodelpy.load(km_ncc).run(x)[0], kmodelpy.load(km_small).run(x)[0])


def test_main_memory_above_the_k210_is_a_warning_naming_the_tensors(tmp_path, monkeypatch):
    import kmodelpy.compiler.schedule as S

    monkeypatch.setattr(S, "K210_MAIN_RAM", 64)
    _, console = _compile(_model(tmp_path))
    warn = [line for line in console.splitlines() if line.startswith("WARN: kmodelpy")]
    assert len(warn) == 1 and "main memory" in warn[0] and "cannot run on a K210" in warn[0]
    assert "float32" in warn[0]  # the live tensors at the peak, with their shapes

