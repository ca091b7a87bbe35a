"""Emulator speed and memory, in-process, one thread: per-image time (median over repeats, after
start-up and the first JIT run), peak memory, and the cold start of ``kmodelpy run`` as a subprocess.

    python benchmarks/bench_emulator.py [--repeats N] [--profile]

Targets (issue 15: 20x ncc's 27 ms / 112 ms): line_follower_kpu <= 1.4 ms/image, kmodel__yolo20
<= 5.6 ms/image, cold `kmodelpy run` <= 0.5 s. ``--profile`` adds the slowest nodes of each model
(``Model.profile``). Whole processes, busy neighbours and ``--jobs``: benchmarks/bench_process.py.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tracemalloc
from collections import defaultdict
from pathlib import Path

import numpy as np
from timing import cold_start_seconds, repeat_seconds

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "reference" / "ncc_outputs" / "cases"
MODELS = {"line_follower_kpu": 1.4, "kmodel__yolo20": 5.6}  # name -> target ms per image
COLD_TARGET_S = 0.5


def bench_model(case: str, repeats: int, profile: bool) -> dict:
    import kmodelpy

    model = kmodelpy.load(CASES / case / "ncc.kmodel")
    x = np.fromfile(sorted((CASES / case / "inputs").glob("*.bin"))[0], dtype=model.input_dtype)
    x = x.reshape(model.input_shape)
    times = repeat_seconds(lambda: model.run(x), repeats)
    tracemalloc.start()
    model.run(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    res = {"case": case, "median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
           "traced_peak_mb": peak / 2**20}
    if profile:
        per_op: dict[str, float] = defaultdict(float)
        nodes = model.profile(x, repeats=max(3, repeats // 4))
        for _, name, sec in nodes:
            per_op[name] += sec
        res["per_op_ms"] = sorted(((1e3 * s, n) for n, s in per_op.items()), reverse=True)
        res["slowest_nodes_ms"] = sorted(((1e3 * s, k, n) for k, n, s in nodes), reverse=True)[:5]
    return res


def cold_start(repeats: int = 3) -> float:
    data = ROOT / "kmodelpy" / "data"
    return cold_start_seconds([sys.executable, "-m", "kmodelpy", "run", str(data / "line_follower.kmodel"),
                               str(data / "test000.png")], repeats)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--profile", action="store_true", help="per-op and per-node times")
    args = ap.parse_args(argv)
    ok = True
    for case, target in MODELS.items():
        r = bench_model(case, args.repeats, args.profile)
        verdict = "ok" if r["median_ms"] <= target else "SLOWER than target"
        ok &= r["median_ms"] <= target
        print(f"{case:20s} median {r['median_ms']:8.2f} ms/image (min {r['min_ms']:.2f}; target {target} ms: "
              f"{verdict}); traced peak {r['traced_peak_mb']:.1f} MB")
        for ms, name in r.get("per_op_ms", []):
            print(f"    {name:28s} {ms:8.3f} ms")
        for ms, k, name in r.get("slowest_nodes_ms", []):
            print(f"    slowest: node {k:3d} {name:22s} {ms:8.3f} ms")
    cold = cold_start()
    ok &= cold <= COLD_TARGET_S
    print(f"cold `kmodelpy run` (subprocess, warm numba cache): {cold:.2f} s (target {COLD_TARGET_S} s: "
          f"{'ok' if cold <= COLD_TARGET_S else 'SLOWER than target'})")
    print(f"process peak RSS (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
