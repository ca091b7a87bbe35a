"""float32 operations numpy lacks, as the K210 build executes them: a fused multiply-add
(``fmaf``), C's ``roundf`` and RISC-V's float -> int32 conversion.

``fmaf(a, b, c)`` is the exactly rounded ``a*b + c`` (one rounding, to nearest even), as the
K210's ``fmadd.s`` computes it. numpy has no fma, and ``float32(float64(a)*float64(b) + c)`` rounds
twice whenever the double sum is inexact (the product is exact in float64, the sum is not), so it
is wrong in the last bit now and then. Here it is LLVM's ``llvm.fma.f32`` intrinsic, which LLVM
defines as the exact fused operation: one instruction on a CPU with FMA, glibc's (exact) ``fmaf``
elsewhere. It is a numba intrinsic, callable from ``@njit`` kernels; :func:`fmaf_array` is the
array form. tests/test_fma.py checks it against exact rational arithmetic.

Numba compiles nothing at import: the intrinsic is lowered when a kernel using it is compiled.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

INT32_MAX = 2147483647
INT32_MIN = -2147483648


@intrinsic
def _llvm_fma_f32(typingctx, a, b, c):
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        from llvmlite import ir
        from numba.core import cgutils

        fnty = ir.FunctionType(ir.FloatType(), [ir.FloatType()] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.f32")
        return builder.call(fn, args)

    return sig, codegen


@numba.njit(cache=True, error_model="numpy")
def fmaf(a, b, c):
    """C ``fmaf``: ``a*b + c`` on float32 values with one rounding (arguments cast to float32)."""
    return _llvm_fma_f32(np.float32(a), np.float32(b), np.float32(c))


@numba.njit(cache=True, error_model="numpy")
def roundf(x):
    """C ``roundf`` on a float32: the nearest integer, halves away from zero (NaN and infinities
    unchanged). ``|x| + 0.5`` is exact in float64 for every float32 below 2^23."""
    x = np.float32(x)
    a = abs(np.float64(x))
    if not a < 8388608.0:  # 2^23: already an integer (or NaN, inf)
        return x
    return np.float32(math.copysign(math.floor(a + 0.5), np.float64(x)))


@numba.njit(cache=True, error_model="numpy")
def f32_to_i32(x):
    """RISC-V ``fcvt.w.s`` with ``rtz`` (a C ``(int)`` cast of a float on the K210): truncate
    toward zero, saturate to the int32 range, NaN -> INT32_MAX."""
    v = np.float64(x)
    if v != v:
        return INT32_MAX
    if v >= 2147483647.0:
        return INT32_MAX
    if v <= -2147483648.0:
        return INT32_MIN
    return int(v)


@numba.njit(cache=True, error_model="numpy")
def _fma_loop(a, b, c, out):
    for i in range(out.size):
        out[i] = fmaf(a[i], b[i], c[i])


def fmaf_array(a, b, c) -> np.ndarray:
    """Element-wise :func:`fmaf` of float32 arrays (broadcast), float32 result."""
    a, b, c = np.broadcast_arrays(*(np.asarray(v, dtype=np.float32) for v in (a, b, c)))
    out = np.empty(a.shape, np.float32)
    if out.size:
        _fma_loop(np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1),
                  np.ascontiguousarray(c).reshape(-1), out.reshape(-1))
    return out
