"""kmodel v3 emulation speed: per-image time of every public v3 reference model (median over repeats,
after the first run), next to the kmodel v4 compile of the same 20-class YOLO network, and the cold
start of ``kmodelpy run`` on a v3 model as a subprocess.

    python benchmarks/bench_v3.py [--repeats N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from timing import cold_start_seconds, repeat_seconds

ROOT = Path(__file__).resolve().parent.parent
REF = ROOT / "reference" / "ncc_outputs"


def per_image_ms(path: Path, sample: Path, repeats: int) -> tuple[float, float]:
    import kmodelpy

    model = kmodelpy.load(path)
    x = np.fromfile(sample, dtype=model.input_dtype).reshape(model.input_shape)
    times = repeat_seconds(lambda: model.run(x), repeats)
    return 1e3 * statistics.median(times), 1e3 * min(times)


def cold_start(model: Path, sample: Path, repeats: int = 3) -> float:
    return cold_start_seconds([sys.executable, "-m", "kmodelpy", "run", str(model), str(sample)], repeats)


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
