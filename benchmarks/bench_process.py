"""What users feel: kmodelpy as whole processes, on a quiet machine and next to busy neighbours.

    python benchmarks/bench_process.py [--base PATH] [--repeats N] [--pictures N] [--quick]

Measures, each as a fresh ``python -m kmodelpy`` process (warm numba cache):

* ``infer`` of the line follower (reference case line_follower_kpu) over 200 pictures of
  line160/calib: wall time per picture (the whole process / pictures), with ``--jobs 1`` and
  ``--jobs 2``;
* the same while two *busy neighbours* run: processes started and stopped by this script, each a
  loop of 512x512 float64 GEMMs on OpenBLAS's default threads (multi-threaded work, as a CI runner
  or a training job is), for at most ``--neighbour-seconds``;
* ``compile`` of line_follower_stock with its 300 calibration pictures;
* the cold start of ``kmodelpy run`` on one picture.

With ``--base PATH`` (another kmodelpy checkout, e.g. ``git worktree add /tmp/base main``) every
measurement is also taken with that version, interleaved run by run with this one (the machine is
noisy: only a side-by-side comparison in one run means anything); a version without ``--jobs``
runs its defaults. Prints a Markdown table of medians over ``--repeats`` runs. Numba caches must
be warm (run each version once first; the script does one unmeasured warm-up run of each command).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "reference" / "ncc_outputs" / "cases"
DATASETS = ROOT / "reference" / "ncc_outputs" / "datasets"
LINE = CASES / "line_follower_kpu" / "ncc.kmodel"
STOCK = CASES / "line_follower_stock" / "model.tflite"
CALIB = DATASETS / "line160" / "calib"
PICTURE = ROOT / "kmodelpy" / "data" / "test000.png"

NEIGHBOUR = """
import sys, time
import numpy as np
a = np.random.default_rng(0).random((512, 512))
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    a = (a @ a) / 512.0
"""


class Neighbours:
    """Two busy processes (multi-threaded BLAS loops), stopped on exit, or by themselves after
    ``seconds`` at the latest."""

    def __init__(self, seconds: float, count: int = 2):
        self.seconds, self.count, self.procs = seconds, count, []

    def __enter__(self):
        env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
        self.procs = [subprocess.Popen([sys.executable, "-c", NEIGHBOUR, str(self.seconds)], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for _ in range(self.count)]
        time.sleep(1.0)  # let them get going
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return False


def _supports_jobs(tree: Path) -> bool:
    return "--jobs" in (tree / "kmodelpy" / "cli.py").read_text()


def _timed(tree: Path, argv: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "kmodelpy", *argv], env=env, cwd=tree, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{tree}: kmodelpy {' '.join(argv)} failed: {r.stderr.strip()[-500:]}")
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, help="another kmodelpy checkout to compare with, side by side")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pictures", type=int, default=200)
    ap.add_argument("--neighbour-seconds", type=float, default=600.0,
                    help="the neighbours stop by themselves after this long at the latest")
    ap.add_argument("--quick", action="store_true", help="infer only (no compile, no cold start)")
    args = ap.parse_args(argv)

    trees = {"this": ROOT}
    if args.base:
        trees["base"] = args.base.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="kmodelpy-bench-"))
    pics = tmp / "pictures"
    pics.mkdir()
    for p in sorted(CALIB.glob("*.png"))[: args.pictures]:
        os.symlink(p, pics / p.name)
    n_pics = len(list(pics.iterdir()))

    def infer(tree, jobs):
        out = tmp / f"out-{tree.name}-{jobs}"
        extra = ["--jobs", str(jobs)] if _supports_jobs(tree) else []
        return _timed(tree, ["infer", str(LINE), str(out), "--dataset", str(pics), *extra]) / n_pics

    measures = []  # (label, unit, function of tree)
    for jobs in (1, 2):
        measures.append((f"infer, {n_pics} pictures, --jobs {jobs}: per picture", "ms", 1e3,
                         lambda tree, j=jobs: infer(tree, j)))
    if not args.quick:
        measures.append(("compile line_follower_stock, 300 pictures", "s", 1.0,
                         lambda tree: _timed(tree, ["compile", str(STOCK), str(tmp / f"stock-{tree.name}.kmodel"),
                                                    "-q", "--dataset", str(CALIB)])))
        measures.append(("cold start of `kmodelpy run`", "s", 1.0,
                         lambda tree: _timed(tree, ["run", str(LINE), str(PICTURE)])))

    print(f"load average at start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; python {sys.version.split()[0]}")
    for _, _, _, fn in measures:  # warm-up (numba cache, file cache)
        for tree in trees.values():
            fn(tree)
    print()
    print("| measure | " + " | ".join(f"{n} ({t})" for n, t in trees.items()) + " |")
    print("|---|" + "---|" * len(trees), flush=True)
    for busy in (False, True):
        results = {(m[0], name): [] for m in measures for name in trees}
        for _ in range(args.repeats):
            for label, _, _, fn in measures:
                for name, tree in trees.items():
                    if busy:
                        with Neighbours(args.neighbour_seconds):
                            results[(label, name)].append(fn(tree))
                    else:
                        results[(label, name)].append(fn(tree))
        for label, unit, scale, _ in measures:
            cells = [f"{scale * statistics.median(results[(label, n)]):.3g} {unit}" for n in trees]
            print(f"| {label}{' (2 busy neighbours)' if busy else ''} | " + " | ".join(cells) + " |", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
