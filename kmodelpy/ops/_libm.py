"""glibc's float transcendentals (``expf``, ``logf``, ``sinf``, ``cosf``), callable from numba.

``ncc infer`` calls the host C library for these (runtime spec §0 and H.4); numpy's own SIMD
``exp``/``log`` differ from glibc in the last bit, so bit-exact kernels must call glibc itself.

Mechanism: the addresses of glibc's functions (resolved by the dynamic linker through ctypes, so
the same ifunc variant a C caller would get) are registered with LLVM under private names
(``kmodelpy_expf`` ...), and numba kernels call them as :class:`numba.types.ExternalFunction`.
The private names keep LLVM from treating the calls as known library functions (it would
constant-fold or rewrite ``expf`` with its own arithmetic). A kernel cached on disk
(``cache=True``) refers to the symbol by name, which is resolved again in every new process, once
this module has been imported (every kernel module imports it before defining its kernels).

Kernels use :data:`EXPF`, :data:`LOGF`, :data:`SINF`, :data:`COSF`; everyone else uses the
array-level :func:`expf`, :func:`logf`, :func:`sinf`, :func:`cosf` (float32 in, float32 out, any
shape). :data:`LIBM` is the ctypes handle, for checks.
"""
from __future__ import annotations

import ctypes
import ctypes.util

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types


def _load_libm() -> ctypes.CDLL:
    name = ctypes.util.find_library("m") or "libm.so.6"
    return ctypes.CDLL(name)


LIBM = _load_libm()

_NAMES = ("expf", "logf", "sinf", "cosf")
for _n in _NAMES:
    _f = getattr(LIBM, _n)
    _f.restype = ctypes.c_float
    _f.argtypes = [ctypes.c_float]
    llvm.add_symbol(f"kmodelpy_{_n}", ctypes.cast(_f, ctypes.c_void_p).value)

_SIG = types.float32(types.float32)
EXPF = types.ExternalFunction("kmodelpy_expf", _SIG)
LOGF = types.ExternalFunction("kmodelpy_logf", _SIG)
SINF = types.ExternalFunction("kmodelpy_sinf", _SIG)
COSF = types.ExternalFunction("kmodelpy_cosf", _SIG)


@numba.njit(cache=True, nogil=True)
def _expf_loop(x, out):
    for i in range(x.size):
        out[i] = EXPF(x[i])


@numba.njit(cache=True, nogil=True)
def _logf_loop(x, out):
    for i in range(x.size):
        out[i] = LOGF(x[i])


@numba.njit(cache=True, nogil=True)
def _sinf_loop(x, out):
    for i in range(x.size):
        out[i] = SINF(x[i])


@numba.njit(cache=True, nogil=True)
def _cosf_loop(x, out):
    for i in range(x.size):
        out[i] = COSF(x[i])


def _apply(loop, x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != np.float32:
        a = a.astype(np.float32)
    flat = np.ascontiguousarray(a).reshape(-1)
    out = np.empty_like(flat)
    if flat.size:
        loop(flat, out)
    return out.reshape(a.shape)


def expf(x) -> np.ndarray:
    """glibc ``expf`` elementwise (float32 in/out, shape kept)."""
    return _apply(_expf_loop, x)


def logf(x) -> np.ndarray:
    """glibc ``logf`` elementwise (float32 in/out, shape kept)."""
    return _apply(_logf_loop, x)


def sinf(x) -> np.ndarray:
    """glibc ``sinf`` elementwise (float32 in/out, shape kept)."""
    return _apply(_sinf_loop, x)


def cosf(x) -> np.ndarray:
    """glibc ``cosf`` elementwise (float32 in/out, shape kept)."""
    return _apply(_cosf_loop, x)


def ctypes_call(name: str, x) -> np.ndarray:
    """Slow reference: call glibc's ``name`` through ctypes on each element (for tests)."""
    f = getattr(LIBM, name)
    a = np.asarray(x, dtype=np.float32)
    return np.array([f(float(v)) for v in a.reshape(-1)], dtype=np.float32).reshape(a.shape)
