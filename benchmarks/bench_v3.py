"""kmodel v3 emulation speed: per-image time of every public v3 reference model (median over repeats,
after the first run), next to the kmodel v4 compile of the same 20-class YOLO network, and the cold
start of ``kmodelpy run`` on a v3 model as a subprocess.

    python benchmarks/bench_v3.py [--repeats N]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REF = ROOT / "reference" / "ncc_outputs"


def per_image_ms(path: Path, sample: Path, repeats: int) -> tuple[float, float]:
    import kmodelpy

    model = kmodelpy.load(path)
    x = np.fromfile(sample, dtype=model.input_dtype).reshape(model.input_shape)
    model.run(x)  # numba compiles or loads its cache
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.run(x)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), 1e3 * min(times)


def cold_start(model: Path, sample: Path, repeats: int = 3) -> float:
    cmd = [sys.executable, "-m", "kmodelpy", "run", str(model), str(sample)]
    subprocess.run(cmd, check=True, capture_output=True)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    runs = [(p.name, p / "model.kmodel", sorted((p / "inputs").glob("*.bin"))[0])
            for p in sorted((REF / "v3").iterdir()) if (p / "model.kmodel").exists()]
    v4 = REF / "cases" / "kmodel__yolo20"
    runs.append(("(v4) kmodel__yolo20", v4 / "ncc.kmodel", sorted((v4 / "inputs").glob("*.bin"))[0]))
    for name, path, sample in runs:
        med, best = per_image_ms(path, sample, args.repeats)
        print(f"{name:22s} median {med:8.2f} ms/image (min {best:.2f})")
    name, path, sample = runs[0]
    print(f"cold `kmodelpy run` on {name} (subprocess, warm numba cache): {cold_start(path, sample):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
