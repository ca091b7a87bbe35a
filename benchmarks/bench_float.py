"""Float evaluation time per image: kmodelpy.load("model.tflite").run(x) on the line follower
reference models (and TFLite's own interpreter when tensorflow or ai-edge-litert is importable —
optional, never required).

    python benchmarks/bench_float.py [--repeat 10] [model.tflite ...]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "reference" / "ncc_outputs" / "cases"
DEFAULT = [CASES / c / "model.tflite" for c in ("line_follower_kpu", "line_follower_stock",
                                                "line_follower_kpu_dynrange")]


def _tflite_interpreter(path):
    for mod in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite"):
        try:
            m = __import__(mod, fromlist=["Interpreter"])
            return m.Interpreter(model_path=str(path))
        except Exception:  # noqa: BLE001 - optional dependency
            continue
    return None


def bench(path: Path, repeat: int) -> None:
    import kmodelpy

    t0 = time.perf_counter()
    model = kmodelpy.load(path)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, model.input_shape).astype(np.float32)
    t0 = time.perf_counter()
    model.run(x)  # first run: numba kernels compile or load from the cache
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        model.run(x)
        times.append(time.perf_counter() - t0)
    line = (f"{path.parent.name:32s} load {load_s * 1e3:7.1f} ms  first run {first_s * 1e3:8.1f} ms  "
            f"per image {np.median(times) * 1e3:7.1f} ms (median of {repeat})")
    interp = _tflite_interpreter(path)
    if interp is not None:
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        xt = x.transpose(0, 2, 3, 1).copy()
        tt = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            interp.set_tensor(inp["index"], xt)
            interp.invoke()
            tt.append(time.perf_counter() - t0)
        line += f"  | TFLite {np.median(tt) * 1e3:6.1f} ms"
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    for p in args.models or DEFAULT:
        bench(p, args.repeat)


if __name__ == "__main__":
    main()
