"""Whole-process timing of ``kmodelpy compare`` on the line follower with 100 pictures (target <= 10 s):

    kmodelpy compare reference/.../line_follower_kpu/model.tflite --dataset reference/.../line160/calib100

i.e. compile (calibrated on the same 100 pictures), then the float model and the emulated kmodel side by side
on each picture, with every layer's statistics. Run: ``python benchmarks/bench_compare.py [--repeat N]``.
Each repetition runs the command as a fresh process twice, side by side: as is, and with
OPENBLAS_NUM_THREADS=1 (numpy's OpenBLAS threads spin against each other on a busy 2-core machine; the
speed work of issue 15 makes one thread the default). Prints the best wall and CPU time of each.

Measured on the shared 2-core machine at load average 0.9 (best of 2): as is 7.1 s wall (7.1 s CPU), with one
BLAS thread 7.4 s wall; at load average 9.7 the same run took 43 s wall for 8.1 s of CPU.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REF = ROOT / "reference" / "ncc_outputs"
CMD = [sys.executable, "-m", "kmodelpy", "compare", str(REF / "cases" / "line_follower_kpu" / "model.tflite"),
       "--dataset", str(REF / "datasets" / "line160" / "calib100")]


def run(env: dict) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(CMD, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"compare failed: {p.stderr.strip()}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    variants = {"as is": env, "OPENBLAS_NUM_THREADS=1": dict(env, OPENBLAS_NUM_THREADS="1")}
    run(variants["OPENBLAS_NUM_THREADS=1"])  # warm the numba cache once
    best = {k: (float("inf"), 0.0) for k in variants}
    for _ in range(a.repeat):
        for name, e in variants.items():
            wall, cpu = run(e)
            if wall < best[name][0]:
                best[name] = (wall, cpu)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"kmodelpy compare line_follower_kpu, 100 pictures (best of {a.repeat}, load average {load}):")
    for name, (wall, cpu) in best.items():
        print(f"  {name:24s} {wall:6.2f} s wall {cpu:6.2f} s CPU  {'<= 10 s' if wall <= 10 else '> 10 s'}")


if __name__ == "__main__":
    main()
