"""Rebuild maixpy_cases.npz: newlib's expf on 7500 floats, MaixPy's image.resize on 80 random images, and
outputs of MaixPy v1's own region-layer C code
for feature maps chosen to hit the rules the reference cases in reference/ncc_outputs/maixpy/ cover thinly
(exact probability ties that newlib's unstable qsort orders, more than 10 objects, 256 and 300 objects,
anchor counts other than 5 through the unmodified firmware path and with an explicit class count, huge and
infinite logits).

Run once, on a machine with gcc, from git mirrors of sipeed/MaixPy-v1 and kendryte/kendryte-newlib:

    python make_maixpy_cases.py /path/to/MaixPy-v1.git /path/to/kendryte-newlib.git

It compiles, like the reference build (README of reference/ncc_outputs/maixpy: x86-64 gcc -O2
-ffp-contract=off, newlib expf + qsort, plus MaixPy's -fsingle-precision-constant), the unmodified
``components/kendryte_sdk/src/sipeed_yolo2.c`` (MaixPy-v1 d8901fd) with newlib's ``libm/math/wf_exp.c``,
``ef_exp.c`` and ``libc/search/qsort.c`` (kendryte-newlib 01de41f5), changing only what an x86 build must: the
float -> uint32 stores of the corners emulate RISC-V ``fcvt.wu.s`` (negative -> 0, NaN/overflow ->
0xFFFFFFFF) and obj_info_t gets room for every object (the device writes past its 10 entries). The resize
cases run the body of ``py_image_resize`` (``components/micropython/port/src/omv/py/py_image.c``) cut out of
the file with MicroPython's object calls replaced by plain arguments, and its ``(uint8_t)``/``(uint16_t)``
float casts made RISC-V's ``fcvt.wu.s`` (negative -> 0); a box-average read past the picture reads 0. Nothing
fetched is kept: the sources are read into a temporary folder and deleted.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MAIXPY_COMMIT = "d8901fd2272f000226f1c1037c1eb7c412b88e66"
NEWLIB_COMMIT = "01de41f55e386c935b593402855622fb7aba25c8"

_FDLIBM_SHIM = """#include <stdint.h>
typedef int32_t __int32_t; typedef uint32_t __uint32_t;
typedef union { float value; __uint32_t word; } ieee_float_shape_type;
#define GET_FLOAT_WORD(i,d) do { ieee_float_shape_type u; u.value = (d); (i) = u.word; } while (0)
#define SET_FLOAT_WORD(d,i) do { ieee_float_shape_type u; u.word = (i); (d) = u.value; } while (0)
#define FLT_UWORD_IS_NAN(x) ((x)>0x7f800000L)
#define FLT_UWORD_IS_INFINITE(x) ((x)==0x7f800000L)
#define FLT_UWORD_LOG_MAX 0x42b17217
#define FLT_UWORD_LOG_MIN 0x42cff1b5
#define __OBSOLETE_MATH 1
#include <math.h>
#undef HUGE
#define HUGE ((float)3.40282346638528860e+38)
/* libm/common/fdlibm.h defines _XOPEN_MODE, so s_lib_ver.c sets _LIB_VERSION = _XOPEN_ */
enum __fdlibm_version { _IEEE_ = -1, _SVID_, _XOPEN_, _POSIX_, _ISOC_ };
static const enum __fdlibm_version _LIB_VERSION = _XOPEN_;
struct exception { int type; char *name; double arg1; double arg2; double retval; int err; };
#define OVERFLOW 3
#define UNDERFLOW 4
static int matherr(struct exception *e) { (void)e; return 0; }
float __ieee754_expf(float);
"""

_SIPEED_KPU_SHIM = """#include <stdint.h>
#include <stddef.h>
int sipeed_kpu_model_get_type(void *ctx);
int sipeed_kpu_model_get_input_shape(void *ctx, uint16_t *w, uint16_t *h, uint16_t *ch);
int sipeed_kpu_model_get_output_shape(void *ctx, uint16_t *w, uint16_t *h, uint16_t *ch);
int sipeed_kpu_get_output(void *ctx, uint32_t idx, float **data, size_t *size);
#define SIPEED_KPU_ERR_NONE 0
"""

_MAIN = r"""#include <stdio.h>
#include <stdlib.h>
#include "sipeed_yolo2.h"
static uint16_t wi, hi, wo, ho, cho; static float *out; static size_t size;
int sipeed_kpu_model_get_type(void *c) { return 4; }
int sipeed_kpu_model_get_input_shape(void *c, uint16_t *w, uint16_t *h, uint16_t *ch) { *w = wi; *h = hi; *ch = 3; return 0; }
int sipeed_kpu_model_get_output_shape(void *c, uint16_t *w, uint16_t *h, uint16_t *ch) { *w = wo; *h = ho; *ch = cho; return 0; }
int sipeed_kpu_get_output(void *c, uint32_t i, float **d, size_t *s) { *d = out; *s = size; return 0; }
static obj_info_t info;
int main(void) {
    int32_t hd[7]; float f[2]; int32_t n;
    if (fread(hd, 4, 7, stdin) != 7) return 2;
    wo = hd[0]; ho = hd[1]; cho = hd[2]; wi = hd[4]; hi = hd[5];
    int A = hd[3], classes = hd[6];
    float *anchor = malloc(8 * A);
    if (fread(f, 4, 2, stdin) != 2 || fread(anchor, 4, 2 * A, stdin) != (size_t)(2 * A) || fread(&n, 4, 1, stdin) != 1) return 2;
    out = malloc(4 * (size_t)n + 64); size = 4 * (size_t)n;
    if (fread(out, 4, n, stdin) != (size_t)n) return 2;
    region_layer_t rl; rl.anchor_number = A; rl.anchor = anchor; rl.threshold = f[0]; rl.nms_value = f[1];
    if (classes >= 0) cho = (classes + 5) * 5;  /* classes = cho / 5 - 5 */
    if (region_layer_init(&rl, NULL)) return 3;
    region_layer_run(&rl, &info);
    fwrite(&info.obj_number, 4, 1, stdout);
    for (uint32_t i = 0; i < info.obj_number; i++) fwrite(&info.obj[i], 24, 1, stdout);
    return 0;
}
"""


def _show(git_dir: Path, commit: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def build(maixpy: Path, newlib: Path, tmp: Path) -> Path:
    src = _show(maixpy, MAIXPY_COMMIT, "components/kendryte_sdk/src/sipeed_yolo2.c")
    for c, axis, size in (("x1", "x", "width"), ("y1", "y", "height")):
        old = f"obj_info->obj[obj_number].{c} = b->{axis} * image_{size} - (b->{'w' if axis == 'x' else 'h'} * image_{size} / 2);"
        assert old in src, old
        src = src.replace(old, old.replace(" = b->", " = fcvt_wu(b->").replace(";", ");"))
    for c, axis, size in (("x2", "x", "width"), ("y2", "y", "height")):
        old = f"obj_info->obj[obj_number].{c} = b->{axis} * image_{size} + (b->{'w' if axis == 'x' else 'h'} * image_{size} / 2);"
        assert old in src, old
        src = src.replace(old, old.replace(" = b->", " = fcvt_wu(b->").replace(";", ");"))
    src = ("#include <stdint.h>\n#include <stddef.h>\n"
           "static uint32_t fcvt_wu(float v) { if (v != v || v >= 4294967296.0f) return 0xffffffffu; "
           "if (v <= 0) return 0; return (uint32_t)v; }\n" + src)
    (tmp / "sipeed_yolo2.c").write_text(src)
    hdr = _show(maixpy, MAIXPY_COMMIT, "components/kendryte_sdk/include/sipeed_yolo2.h")
    (tmp / "sipeed_yolo2.h").write_text(hdr.replace("} obj[10];", "} obj[65536];"))
    (tmp / "kpu.h").write_text("#include <stdint.h>\n")
    (tmp / "sipeed_kpu.h").write_text(_SIPEED_KPU_SHIM)
    (tmp / "printf.h").write_text("#include <stdio.h>\n")
    (tmp / "fdlibm.h").write_text(_FDLIBM_SHIM)
    (tmp / "ef_exp.c").write_text(_show(newlib, NEWLIB_COMMIT, "newlib/libm/math/ef_exp.c"))
    (tmp / "wf_exp.c").write_text(_show(newlib, NEWLIB_COMMIT, "newlib/libm/math/wf_exp.c"))
    q = _show(newlib, NEWLIB_COMMIT, "newlib/libc/search/qsort.c")
    q = q.replace("#include <_ansi.h>", "").replace("#include <sys/cdefs.h>", "#define __unused")
    (tmp / "qsort.c").write_text(q)
    (tmp / "main.c").write_text(_MAIN)
    exe = tmp / "region"
    subprocess.run(["gcc", "-O2", "-ffp-contract=off", "-fsingle-precision-constant", "-fno-builtin", "-Dqsort=nl_qsort",
                    "-I", str(tmp), "-o", str(exe), str(tmp / "main.c"), str(tmp / "sipeed_yolo2.c"), str(tmp / "ef_exp.c"),
                    str(tmp / "wf_exp.c"), str(tmp / "qsort.c")],
                   check=True)
    exp_main = tmp / "expf_main.c"
    exp_main.write_text("#include <stdio.h>\nfloat expf(float);\nint main(void) { float x, y; "
                        "while (fread(&x, 4, 1, stdin) == 1) { y = expf(x); fwrite(&y, 4, 1, stdout); } return 0; }\n")
    subprocess.run(["gcc", "-O2", "-ffp-contract=off", "-fno-builtin", "-I", str(tmp), "-o", str(tmp / "expf"),
                    str(exp_main), str(tmp / "ef_exp.c"), str(tmp / "wf_exp.c")], check=True)
    return exe


def expf_vectors(tmp: Path, rng) -> tuple[np.ndarray, np.ndarray]:
    """newlib's expf on edge values and on float32 spread over every reduction branch."""
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 88.7216796875, 88.72168, 88.7217, 88.7228, 88.72283935546875,
                      88.723, 89.0, -87.3, -87.4, -100.0, -103.972084045410, -103.9721, -104.0, 1e-30, -1e-30, 3.7e-9,
                      0.34657359, 0.3465736, 1.0397208, -1.0397208, 1.0397207, 0.5, -0.5, 1.0, -1.0], np.float32)
    bits = rng.integers(0, 2 ** 32, 1500, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([edges, rng.uniform(-110, 95, 4000).astype(np.float32),
                        rng.standard_normal(2000).astype(np.float32), bits])
    out = subprocess.run([str(tmp / "expf")], input=x.tobytes(), capture_output=True, check=True).stdout
    return x, np.frombuffer(out, np.float32).copy()


_RESIZE_SHIM = r"""#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#define IMAGE_BPP_GRAYSCALE 1
#define IMAGE_BPP_RGB565 2
typedef struct { int w, h, bpp; uint8_t *pixels; } image_t;
#define xalloc malloc
static uint32_t fcvt_wu(float v) { if (v != v || v >= 4294967296.0f) return 0xffffffffu; if (v <= 0) return 0; return (uint32_t)v; }
#define COLOR_RGB565_TO_R5(p) (((p) >> 3) & 0x1F)
#define COLOR_RGB565_TO_G6(p) ({ __typeof__ (p) _p = (p); ((_p & 0x07) << 3) | (_p >> 13); })
#define COLOR_RGB565_TO_B5(p) (((p) >> 8) & 0x1F)
#define COLOR_R5_G6_B5_TO_RGB565(r5, g6, b5) ({ __typeof__ (r5) _r5 = (r5); __typeof__ (g6) _g6 = (g6); \
    __typeof__ (b5) _b5 = (b5); (_r5 << 3) | (_g6 >> 3) | ((_g6 & 0x7) << 13) | (_b5 << 8); })
"""

_RESIZE_MAIN = r"""
int main(void) {
    int hd[5];
    if (fread(hd, 4, 5, stdin) != 5) return 2;
    image_t im; im.w = hd[0]; im.h = hd[1]; im.bpp = hd[2];
    int w = hd[3], h = hd[4], bytes = im.w * im.h * (im.bpp == 2 ? 2 : 1);
    im.pixels = calloc(bytes + (1 << 20), 1);
    if (fread(im.pixels, 1, bytes, stdin) != (size_t)bytes) return 2;
    void *o = resize(&im, w, h);
    fwrite(o, 1, w * h * (im.bpp == 2 ? 2 : 1), stdout);
    return 0;
}
"""


def build_resize(maixpy: Path, tmp: Path) -> Path:
    src = _show(maixpy, MAIXPY_COMMIT, "components/micropython/port/src/omv/py/py_image.c")
    body = src[src.index("static mp_obj_t py_image_resize("):src.index("STATIC MP_DEFINE_CONST_FUN_OBJ_3(py_image_resize_obj")]
    for old, new in (
            ("static mp_obj_t py_image_resize(mp_obj_t img_obj, mp_obj_t w_obj, mp_obj_t h_obj)",
             "void *resize(image_t *img, int w, int h)"),
            ("image_t* img = (image_t *) py_image_cobj(img_obj);", ""),
            ("int w = mp_obj_get_int(w_obj);", ""), ("int h = mp_obj_get_int(h_obj);", ""),
            ("mp_obj_t image = py_image(w, h, img->bpp, out);", "void *image = out;"),
            ('mp_printf(&mp_plat_print, "only support grayscale, 565 zoom out now\\r\\n");', ""),
            ("return mp_const_none;", "return 0;"),
            ("= (uint8_t)(", "= (uint8_t)fcvt_wu("), ("= (uint16_t)x_src;", "= (uint16_t)fcvt_wu(x_src);"),
            ("= (uint16_t)y_src;", "= (uint16_t)fcvt_wu(y_src);")):
        assert old in body, old
        body = body.replace(old, new)
    (tmp / "resize.c").write_text(_RESIZE_SHIM + body + _RESIZE_MAIN)
    exe = tmp / "resize"
    subprocess.run(["gcc", "-O2", "-ffp-contract=off", "-fsingle-precision-constant", "-o", str(exe),
                    str(tmp / "resize.c")], check=True)
    return exe


def resize_cases(exe: Path, rng) -> dict:
    """80 images (grayscale and RGB565, 1..24 pixels a side) resized to 1..36 pixels a side: every branch."""
    store = {}
    for i in range(80):
        bpp = 1 if i % 2 else 2
        w0, h0 = int(rng.integers(1, 25)), int(rng.integers(1, 19))
        w, h = int(rng.integers(1, 37)), int(rng.integers(1, 29))
        px = rng.integers(0, 256, (h0, w0), dtype=np.uint8) if bpp == 1 else rng.integers(0, 65536, (h0, w0), dtype=np.uint16)
        blob = np.array([w0, h0, bpp, w, h], np.int32).tobytes() + px.tobytes()
        out = subprocess.run([str(exe)], input=blob, capture_output=True, check=True).stdout
        store[f"resize{i:02d}/in"] = px
        store[f"resize{i:02d}/out"] = np.frombuffer(out, px.dtype).reshape(h, w).copy()
    return store


def run(exe, feat, w, h, ch, anchors, thr, nms, net_w, net_h, classes):
    A = len(anchors) // 2
    blob = np.array([w, h, ch, A, net_w, net_h, -1 if classes is None else classes], np.int32).tobytes()
    blob += np.array([thr, nms], np.float32).tobytes() + np.array(anchors, np.float32).tobytes()
    blob += np.int32(feat.size).tobytes() + feat.astype(np.float32).tobytes()
    out = subprocess.run([str(exe)], input=blob, capture_output=True, check=True).stdout
    n = int(np.frombuffer(out[:4], np.uint32)[0])
    raw = np.frombuffer(out[4:4 + 24 * n], np.uint32).reshape(n, 6)
    return n, raw  # columns x1 y1 x2 y2 classid prob-bits (uint32 as the device stores them)


def cases(rng):
    """(name, feature, w, h, ch, anchors, threshold, nms, net_w, net_h, classes)."""
    out = []
    demo = [1.08, 1.19, 3.42, 4.41, 6.63, 11.38, 9.42, 5.11, 16.62, 10.52]
    for i in range(24):  # ties: logits on a coarse grid make equal probabilities across boxes
        A, C = 5, int(rng.choice([1, 2, 3, 20]))
        w, h = int(rng.integers(2, 9)), int(rng.integers(2, 7))
        feat = (np.round(rng.normal(0, 2, w * h * A * (5 + C)) * (1 if i % 2 else 2)) / (1 if i % 2 else 2))
        thr = float(rng.choice([0.1, 0.2, 0.3, 0.5]))
        nms = float(rng.choice([0.0, 0.3, 0.45, 1.0]))
        out.append((f"ties{i:02d}_a5c{C}_{w}x{h}", feat, w, h, A * (5 + C), demo, thr, nms, w * 32, h * 32, None))
    for A, C in ((3, 10), (4, 15), (1, 20)):  # unmodified firmware path: classes = ch/5 - 5
        ch = A * (5 + C)
        w, h = 6, 5
        feat = rng.normal(0, 2, w * h * ch)
        out.append((f"anchors{A}_fw_{w}x{h}_ch{ch}", feat, w, h, ch, list(rng.uniform(0.5, 8, 2 * A)), 0.2, 0.3,
                    192, 160, None))
    for A, C in ((9, 1), (3, 2), (2, 4), (6, 3)):  # explicit class count (canmv; --classes)
        w, h = 10, 8
        feat = rng.normal(0, 2, w * h * A * (5 + C))
        out.append((f"anchors{A}_classes{C}_{w}x{h}", feat, w, h, A * (5 + C), list(rng.uniform(0.1, 3, 2 * A)),
                    0.3, 0.2, 320, 256, C))
    for n_obj in (11, 25, 256, 300):  # object counts past the 10 slots and past uint8
        w, h, A, C = 20, 15, 5, 1
        feat = rng.normal(0, 1, w * h * A * 6).reshape(A, 6, w * h)
        feat[:, 4, :] = -20
        flat = feat[:, 4, :].reshape(-1)
        flat[rng.permutation(flat.size)[:n_obj]] = 6
        feat[:, 4, :] = flat.reshape(A, w * h)
        feat[:, 2:4, :] = -3  # small boxes: no overlaps, nms keeps them all
        out.append((f"count{n_obj}", feat.reshape(-1), w, h, 30, demo, 0.5, 1.0, 320, 240, None))
    w, h, A, C = 7, 5, 5, 3  # huge and infinite logits: expf overflow, int16 wrap, inf/NaN boxes
    feat = rng.normal(0, 2, w * h * A * (5 + C))
    idx = rng.permutation(feat.size)[:40]
    feat[idx] = rng.choice([88.7, 88.7216796875, 88.722, 88.7228, 95.0, -104.0, 60.0, np.inf, -np.inf, 40.0], idx.size)
    out.append(("huge_logits", feat, w, h, A * (5 + C), demo, 0.1, 0.3, 224, 160, None))
    return out


def main(maixpy: Path, newlib: Path) -> None:
    rng = np.random.default_rng(20240613)
    store, index = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(maixpy, newlib, Path(tmp))
        store["expf/x"], store["expf/y"] = expf_vectors(Path(tmp), rng)
        store.update(resize_cases(build_resize(maixpy, Path(tmp)), rng))
        for name, feat, w, h, ch, anchors, thr, nms, net_w, net_h, classes in cases(rng):
            feat = np.asarray(feat, np.float32)
            n, raw = run(exe, feat, w, h, ch, anchors, thr, nms, net_w, net_h, classes)
            store[f"{name}/feature"] = feat
            store[f"{name}/objects"] = raw
            index.append(dict(name=name, w=w, h=h, ch=ch, anchors=[float(a) for a in anchors], threshold=thr,
                              nms=nms, net_w=net_w, net_h=net_h, classes=classes, obj_number=n))
    store["index"] = np.frombuffer(json.dumps(index).encode(), np.uint8)
    np.savez_compressed(HERE / "maixpy_cases.npz", **store)
    print(f"{len(index)} region cases -> {HERE / 'maixpy_cases.npz'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
