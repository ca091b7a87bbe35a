"""Faster numba start-up for kmodelpy's own kernels (``kmodelpy run`` cold start, ``compile``).

Loading a kernel from numba's on-disk cache goes through ``Cache.load_overload``, which first
*refreshes* the target context: it imports and installs every lowering registry numba has (the
typed containers, random generators, polynomials, ``npyimpl``, ...) -- about a quarter of a cold
``kmodelpy run`` (cProfile) -- although a cached function needs none of it: its machine code is
only linked in. Before that, the first dispatch scans the installed packages' entry points for
numba extensions, which kmodelpy's kernels do not use.

:func:`install` changes both steps for functions defined in kmodelpy's modules only (numba's own
and the user's dispatchers keep numba's behaviour): a cache load initialises numba's runtime
(NRT, which the compiled code calls) and loads; a cache miss compiles as usual (the compiler
refreshes the context itself). Loading still imports the numba modules whose helper functions a
kernel's code references (``numba.np.arraymath`` among them): that one is imported with its
module-level BLAS check (``_HAVE_BLAS = _check_blas()``, which imports all of ``scipy.linalg``
although kmodelpy's kernels never call BLAS) answered from whether scipy is installed
(``importlib.util.find_spec``, no import), then numba's own ``ensure_blas`` is put back, so every
later BLAS/LAPACK use still imports and checks scipy exactly as numba does. On a numba whose cache
load differs from the one this was written against (0.58-0.68), nothing is changed.
"""
from __future__ import annotations

import sys

_installed = False


def _ours(py_func) -> bool:
    return getattr(py_func, "__module__", "").startswith("kmodelpy.")


def _import_arraymath_without_scipy() -> None:
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
    except Exception:  # noqa: BLE001 - an optimisation only: numba then imports it the usual way
        pass


def install() -> None:
    """Patch numba's cache load and first-dispatch hook for kmodelpy's kernels (idempotent).
    Importing numba's modules here costs nothing more: kmodelpy calls this where numba is needed."""
    global _installed
    if _installed:
        return
    _installed = True
    try:
        from numba.core.caching import Cache
        from numba.core.dispatcher import _DispatcherBase
        from numba.core.runtime import rtsys
    except Exception:  # noqa: BLE001
        return
    real_load = Cache.load_overload
    real_hook = _DispatcherBase._compilation_chain_init_hook
    if "refresh" not in real_load.__code__.co_names or not hasattr(Cache, "_load_overload"):
        return  # not the cache load this was written for: leave numba alone

    def load_overload(self, sig, target_context):
        if not _ours(getattr(self, "_py_func", None)):
            return real_load(self, sig, target_context)
        rtsys.initialize(target_context)  # the runtime the compiled code calls
        _import_arraymath_without_scipy()
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    def compilation_chain_init_hook(self):
        if not _ours(self.py_func):  # kmodelpy's kernels use no numba extension
            real_hook(self)

    Cache.load_overload = load_overload
    _DispatcherBase._compilation_chain_init_hook = compilation_chain_init_hook
