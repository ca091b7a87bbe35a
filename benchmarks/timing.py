"""Timing shared by the benchmark scripts (``python benchmarks/<name>.py`` puts this folder on the path)."""
from __future__ import annotations

import statistics
import subprocess
import time


def repeat_seconds(run, repeats: int) -> list[float]:
    """The wall times of ``repeats`` calls of ``run()``, after one call not timed (numba compiles or loads its
    cache)."""
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def cold_start_seconds(cmd: list[str], repeats: int = 3) -> float:
    """The median wall time of the whole process ``cmd``, after one run not timed that fills the numba cache."""
    return statistics.median(repeat_seconds(lambda: subprocess.run(cmd, check=True, capture_output=True), repeats))
