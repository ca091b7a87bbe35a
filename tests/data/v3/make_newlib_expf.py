"""Makes newlib_expf.npz: newlib's expf, as compiled C, on chosen float32 inputs (run once; the
output is committed, this script documents where it comes from).

    python make_newlib_expf.py PATH/TO/kendryte-newlib/newlib/libm/math/ef_exp.c

ef_exp.c is read from a checkout of kendryte/kendryte-newlib @ 01de41f5 (the newlib of the Kendryte
toolchain v8.2.0-20190409); it is not part of this repository. Its ``__ieee754_expf`` is compiled
twice with the host gcc: ``-O2 -mfma`` (GCC's default contraction: the fused build the K210 SDK
runs, kmodel v3 runtime spec section 3) and ``-O2 -ffp-contract=off`` (every operation rounded on
its own), behind the two checks of wf_exp.c's wrapper that apply in newlib's _XOPEN_ mode (fdlibm.h:
"REDHAT LOCAL: Default to XOPEN_MODE"): a finite x > 0x42b17180 gives HUGE_VAL, x < 0xc2cff1b5 gives 0.
Inputs: every float32 where the two builds differ among 2^22 random inputs in [-110, 95], 2000 more
random ones, and the special values and thresholds. Stored as uint32 bit patterns x, fused, plain.
"""
import ctypes
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PRELUDE = r"""
#include <stdint.h>
typedef int32_t __int32_t;
typedef uint32_t __uint32_t;
typedef union { float value; uint32_t word; } ieee_float_shape_type;
#define GET_FLOAT_WORD(i,d) do { ieee_float_shape_type gf_u; gf_u.value = (d); (i) = gf_u.word; } while (0)
#define SET_FLOAT_WORD(d,i) do { ieee_float_shape_type sf_u; sf_u.word = (i); (d) = sf_u.value; } while (0)
#define FLT_UWORD_IS_NAN(x) ((x)>0x7f800000L)
#define FLT_UWORD_IS_INFINITE(x) ((x)==0x7f800000L)
#define FLT_UWORD_LOG_MAX 0x42b17217
#define FLT_UWORD_LOG_MIN 0x42cff1b5
"""
EPILOGUE = r"""
static float wrapped_expf(float x)  /* wf_exp.c's expf with _LIB_VERSION == _XOPEN_ */
{
    float z = __ieee754_expf(x);
    if (__builtin_isfinite(x)) {
        if (x > 8.8721679688e+01f) return (float)__builtin_huge_val();
        else if (x < -1.0397208405e+02f) return 0.0f;
    }
    return z;
}
void batch(const float *x, float *y, long n) { for (long i = 0; i < n; i++) y[i] = wrapped_expf(x[i]); }
"""


def build(src: str, flags: list[str], tmp: Path) -> ctypes.CDLL:
    body = re.sub(r'#include\s+"[^"]+"', "", src)
    body = re.sub(r"#if __OBSOLETE_MATH\n", "", body)
    body = body[: body.rindex("#endif")]  # the closing #endif of __OBSOLETE_MATH
    c = tmp / "ef_exp_build.c"
    c.write_text(PRELUDE + body + EPILOGUE)
    so = tmp / f"lib{len(list(tmp.iterdir()))}.so"
    subprocess.run(["gcc", "-O2", *flags, "-shared", "-fPIC", "-o", str(so), str(c)], check=True)
    lib = ctypes.CDLL(str(so))
    lib.batch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
    return lib


def run(lib, x: np.ndarray) -> np.ndarray:
    y = np.empty_like(x)
    lib.batch(x.ctypes.data, y.ctypes.data, x.size)
    return y


def main(path: str) -> None:
    src = Path(path).read_text()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        fused, plain = build(src, ["-mfma"], tmp), build(src, ["-ffp-contract=off"], tmp)
        rng = np.random.default_rng(20240101)
        sweep = rng.uniform(-110, 95, 1 << 22).astype(np.float32)
        diff = sweep[run(fused, sweep).view(np.uint32) != run(plain, sweep).view(np.uint32)]
        bits = [0x42B17217, 0x42B17218, 0x42B17180, 0x42B17181, 0x42B171C0, 0x42B17200, 0xC2CFF1B5, 0xC2CFF1B6, 0x3EB17218, 0x3EB17219,
                0x3F851592, 0x3F851591, 0x31800000, 0x317FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0, 0x80000000,
                0xC2AEAC4F, 0xC2AEAC50, 0xC2B00000, 0x3F800000, 0xBF800000, 1, 0x80000001]
        special = np.array(bits, np.uint32).view(np.float32)
        x = np.concatenate([special, diff, rng.uniform(-110, 95, 2000).astype(np.float32)])
        out = Path(__file__).with_name("newlib_expf.npz")
        np.savez_compressed(out, x=x.view(np.uint32), fused=run(fused, x).view(np.uint32),
                            plain=run(plain, x).view(np.uint32))
        print(f"{out}: {x.size} inputs, {diff.size} where the fused and plain builds differ")


if __name__ == "__main__":
    main(sys.argv[1])
