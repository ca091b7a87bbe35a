"""Start-up: a kmodel run in a fresh interpreter loads kmodelpy's cached kernels without numba's
full target-context refresh (kmodelpy._numba_start), and numba stays whole for the user's own
functions afterwards."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import kmodelpy
from refcases import CASES, inputs, ncc_out

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import sys
import numpy as np
import kmodelpy

case = sys.argv[1]
model = kmodelpy.load(sys.argv[2])
model.run(np.fromfile(sys.argv[3], dtype=model.input_dtype).reshape(model.input_shape))
sys.stdout.buffer.write(model.output_bytes())
loaded = {m for m in ("numba.np.npyimpl", "numba.typed.typeddict", "numba.np.random.generator_core",
                      "scipy.linalg") if m in sys.modules}
print("\nLOADED", sorted(loaded), file=sys.stderr)

import numba  # the user's own kernel still compiles with everything numba has

@numba.njit
def user(a):
    return np.sum(a) + 1.0

assert user(np.arange(5.0)) == 11.0
assert "numba.np.npyimpl" in sys.modules
"""


def test_cold_run_skips_the_registry_refresh_and_numba_stays_whole():
    case = "line_follower_kpu"
    x = inputs(case)[0]
    # The kernels must be in numba's on-disk cache first (a fresh clone, a fresh NUMBA_CACHE_DIR, or this file
    # run alone has none): compiling them in the child would import what a cache load must not.
    model = kmodelpy.load(CASES / case / "ncc.kmodel")
    model.run(np.fromfile(x, dtype=model.input_dtype).reshape(model.input_shape))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", SCRIPT, case, str(CASES / case / "ncc.kmodel"), str(x)],
                       capture_output=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert r.stdout == ncc_out(case, x.stem)
    assert b"LOADED []" in r.stderr, r.stderr.decode()[-500:]
