"""Faster numba start-up: keep numba's first dispatch from importing ``scipy.linalg``.

On its first dispatch (even from the on-disk cache) numba imports ``numba.np.arraymath``, whose
module-level ``_HAVE_BLAS = _check_blas()`` imports ``scipy.linalg.cython_blas`` -- and with it all
of ``scipy.linalg`` (about 0.2 s, measured with ``python -X importtime``), although kmodelpy's
kernels never call BLAS. :func:`skip_scipy_on_first_dispatch` imports ``numba.np.arraymath`` itself
with that check answered from whether scipy is installed (``importlib.util.find_spec``, no import),
then puts numba's own ``ensure_blas`` back, so every later BLAS/LAPACK use (``np.dot``,
``np.linalg`` in user code) still imports and checks scipy exactly as numba does. It does nothing
when ``numba.np.arraymath`` or ``scipy.linalg`` is already imported, and any failure leaves numba
to its normal path.
"""
from __future__ import annotations

import sys

_done = False


def skip_scipy_on_first_dispatch() -> None:
    global _done
    if _done:
        return
    _done = True
    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    try:
        import importlib.util

        import numba.np.linalg as nla

        real = nla.ensure_blas
        have_scipy = importlib.util.find_spec("scipy") is not None

        def _answer():
            if not have_scipy:
                raise ImportError("scipy is not installed")

        nla.ensure_blas = _answer
        try:
            import numba.np.arraymath as am
        finally:
            nla.ensure_blas = real
        if getattr(am, "ensure_blas", real) is _answer:
            am.ensure_blas = real
    except Exception:  # noqa: BLE001 - an optimisation only: numba then starts the usual way
        pass
