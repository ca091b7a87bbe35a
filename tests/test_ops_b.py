"""Runtime ops, part B: body round trips, hand-computed kernel checks, error paths, glibc libm, and
bit-exactness on the reference cases that exercise these ops."""
from __future__ import annotations

import re
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from refcases import CASES, all_cases, inputs, ncc_out

from kmodelpy.errors import KernelError
from kmodelpy.format.binio import DT_FLOAT32, DT_UINT8, FLT_MAX, MEM_CONST, MEM_MAIN, MemoryRange, Reader, ValueRange
from kmodelpy.format.kmodel import KModel
from kmodelpy.ops import _libm
from kmodelpy.ops.base import OPS
from kmodelpy.ops.cpu_reduce_window2d import CPUReduceWindow2D, cpu_reduce_window2d
from kmodelpy.ops.dequantize import Dequantize, dequantize
from kmodelpy.ops.memory_copy import MemoryCopy
from kmodelpy.ops.nnil_unary_method import NNILUnaryMethod, assemble, disassemble, nnil_eval
from kmodelpy.ops.pad import Pad, pad
from kmodelpy.ops.quantize import Quantize, quantize
from kmodelpy.ops.reduce import Reduce, reduce
from kmodelpy.ops.reduce_window2d import ReduceWindow2D, reduce_window2d
from kmodelpy.ops.resize_image import ResizeImage, resize_image
from kmodelpy.ops.softmax import Softmax, softmax
from kmodelpy.ops.strided_slice import StridedSlice, strided_slice
from kmodelpy.ops.table_lookup1d import TableLookup1D, table_lookup1d
from kmodelpy.ops.transpose import Transpose, transpose
from kmodelpy.ops.unary import Unary, unary
from kmodelpy.runtime import KernelFailure, Memory

SLOW = settings(max_examples=40, deadline=None)


def bits(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).view(np.uint32)


# ------------------------------------------------------------------ glibc libm
SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-40, -3e-39, 1.17549435e-38,
                     88.72283, 88.72284, -87.33655, -103.97, -104.0, 1e10, -1e10, 3e38, -3e38,
                     3.1415927, 1.5707964, 1e5, 12345.678, 0.5, 1.0, 2.0, -1.0], dtype=np.float32)


def _libm_sample(seed: int, n: int) -> np.ndarray:
    rnd = np.random.default_rng(seed).integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    small = np.random.default_rng(seed + 1).uniform(-120, 120, n).astype(np.float32)
    return np.concatenate([SPECIALS, rnd, small])


@pytest.mark.parametrize("name", ["expf", "logf", "sinf", "cosf"])
def test_libm_equals_glibc_ctypes(name):
    x = _libm_sample(7, 4000)
    got = getattr(_libm, name)(x)
    want = _libm.ctypes_call(name, x)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.array_equal(bits(got), bits(want))


def test_libm_differs_from_naive_double_rounding_somewhere():
    # the point of _libm: glibc's expf is not numpy's exp; make sure we are not calling numpy
    x = np.linspace(-80, 80, 200001, dtype=np.float32)
    assert np.array_equal(bits(_libm.expf(x)), bits(_libm.ctypes_call("expf", x)))


def test_libm_fresh_process_uses_cached_kernels():
    """A new interpreter (kernels loaded from numba's on-disk cache) still calls glibc."""
    code = (
        "import numpy as np\n"
        "from kmodelpy.ops import _libm\n"
        "x = np.random.default_rng(3).integers(0, 2**32, 3000, dtype=np.uint64).astype(np.uint32).view(np.float32)\n"
        "for n in ('expf','logf','sinf','cosf'):\n"
        "    a = getattr(_libm, n)(x).view(np.uint32); b = _libm.ctypes_call(n, x).view(np.uint32)\n"
        "    assert np.array_equal(a, b), n\n"
        "print('ok')\n"
    )
    for _ in range(2):  # the first run may compile and write the cache, the second loads it
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_libm_keeps_shape_and_converts():
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    y = _libm.expf(x)
    assert y.shape == (2, 3) and y.dtype == np.float32
    assert _libm.logf(np.zeros((0, 4), np.float32)).shape == (0, 4)


# ------------------------------------------------------------------ body round trips
i32 = st.integers(-(2**31), 2**31 - 1)
u32 = st.integers(0, 2**32 - 1)
f32 = st.floats(width=32, allow_nan=False)
mr = st.builds(MemoryRange, st.integers(0, 2), st.integers(0, 1), u32, u32)
shape4 = st.lists(i32, min_size=4, max_size=4)
pad_pair = st.tuples(i32, i32)
act = st.builds(ValueRange, f32, f32)
nnil_item = st.one_of(st.sampled_from(["nop", "dup", "pop", "lda.0", "ldc.r4.0", "ldc.r4.1", "abs", "exp", "add",
                                       "min", "max", "clamp", "ret", "rsqrt", "sin"]),
                      st.tuples(st.just("ldc.r4"), f32))

BODIES = {
    Quantize: st.builds(Quantize, mr, mr, i32, f32),
    Dequantize: st.builds(Dequantize, mr, mr, i32, f32),
    MemoryCopy: st.builds(MemoryCopy, mr, mr),
    Pad: st.builds(Pad, mr, mr, shape4, st.lists(pad_pair, min_size=4, max_size=4), u32,
                   st.binary(min_size=4, max_size=4)),
    Reduce: st.builds(Reduce, mr, mr, u32, shape4, shape4, f32),
    ReduceWindow2D: st.builds(ReduceWindow2D, mr, mr, u32, shape4, pad_pair, pad_pair, *[i32] * 6, f32, act),
    CPUReduceWindow2D: st.builds(CPUReduceWindow2D, mr, mr, u32, shape4, pad_pair, pad_pair, *[i32] * 6, f32, act),
    ResizeImage: st.builds(ResizeImage, mr, mr, shape4, i32, i32, u32, st.one_of(st.booleans(), st.integers(2, 255)),
                           st.binary(min_size=3, max_size=3)),
    Softmax: st.builds(Softmax, mr, mr, i32, i32, f32),
    Transpose: st.builds(Transpose, mr, mr, shape4, shape4),
    StridedSlice: st.builds(StridedSlice, mr, mr, shape4, shape4, shape4, shape4, i32, i32, i32, i32, i32),
    Unary: st.builds(Unary, mr, mr, u32),
    TableLookup1D: st.builds(TableLookup1D, mr, mr, mr),
    NNILUnaryMethod: st.builds(NNILUnaryMethod, mr, mr, st.lists(nnil_item, max_size=12).map(assemble)),
}
BODY_SIZES = {Quantize: 40, Dequantize: 40, MemoryCopy: 32, Pad: 88, Reduce: 72, ReduceWindow2D: 104,
              CPUReduceWindow2D: 104, ResizeImage: 64, Softmax: 44, Transpose: 64, StridedSlice: 116, Unary: 36,
              TableLookup1D: 48}


@pytest.mark.parametrize("cls", list(BODIES), ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_body_round_trip(cls, data):
    op = data.draw(BODIES[cls])
    raw = op.body_bytes()
    if cls in BODY_SIZES:
        assert len(raw) == BODY_SIZES[cls]
    back = cls.read(Reader(raw, 0, len(raw), "body"))
    assert back == op
    assert back.body_bytes() == raw
    assert OPS[cls.opcode] is cls


def test_resize_bool_and_padding_bytes_survive():
    op = ResizeImage(MemoryRange(1, 0, 0, 16), MemoryRange(1, 0, 16, 64), [1, 1, 2, 2], 4, 4, 0, True, b"\x01\x02\x03")
    raw = op.body_bytes()
    assert raw[60:64] == b"\x01\x01\x02\x03"
    back = ResizeImage.read(Reader(raw, 0, len(raw)))
    assert back.align_corners is True and back.struct_padding == b"\x01\x02\x03"
    odd = raw[:60] + b"\x02" + raw[61:]  # a non-0/1 bool byte is kept for a byte-exact round trip
    assert ResizeImage.read(Reader(odd, 0, len(odd))).body_bytes() == odd


def test_nnil_assembler_disassembler():
    items = ["lda.0", "dup", "mul", ("ldc.r4", 0.25), "add", "ldc.r4 2.5", "max", "ret"]
    prog = assemble(items)
    assert prog == bytes([0x03, 0x01, 0x42, 0x06]) + struct.pack("<f", 0.25) + bytes([0x40, 0x06]) + \
        struct.pack("<f", 2.5) + bytes([0x45, 0xA0])
    dis = disassemble(prog)
    assert dis == ["lda.0", "dup", "mul", ("ldc.r4", 0.25), "add", ("ldc.r4", 2.5), "max", "ret"]
    assert assemble(dis) == prog
    odd = bytes([0x07, 0x03, 0x06, 0x00])  # unknown opcode, truncated immediate
    assert disassemble(odd) == [("byte", 7), "lda.0", ("byte", 6), "nop"]
    assert assemble(disassemble(odd)) == odd
    with pytest.raises(ValueError):
        assemble(["bogus"])


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=40))
def test_nnil_disassemble_round_trips_any_bytes(prog):
    assert assemble(disassemble(prog)) == prog


# ------------------------------------------------------------------ memory helper
def make_mem(main: int = 4096, const: bytes = b"") -> Memory:
    return Memory(KModel(main_mem=main, constants=const))


def put(mem, start, arr):
    b = np.ascontiguousarray(arr).tobytes()
    mem.main[start:start + len(b)] = np.frombuffer(b, np.uint8)


def main_mr(dt, start, size):
    return MemoryRange(MEM_MAIN, dt, start, size)


# ------------------------------------------------------------------ quantize / dequantize
def test_quantize_ties_away_from_zero_and_specials():
    x = np.array([0.5, 1.5, 2.5, -0.5, 254.5, 255.5, 0.49999997, 1e10, -1e10, 3e9, np.nan, np.inf, -np.inf,
                  -0.6, 300.0, 2147483520.0], dtype=np.float32)
    q = quantize(x, 0, 1.0)
    assert q.tolist() == [1, 2, 3, 0, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255]
    # f32 multiply, then f32 add, then roundf, step by step on random values
    xs = np.random.default_rng(5).uniform(-10, 140, 500).astype(np.float32)
    for v in xs:
        t = np.float32(np.float32(v * np.float32(1.7)) + np.float32(3))
        r = int(np.trunc(t)) + (int(np.sign(t)) if abs(t - np.trunc(t)) >= 0.5 else 0)
        assert quantize(np.float32([v]), 3, 1.7)[0] == min(max(r, 0), 255)
    assert quantize(np.float32([1.0, -1.0]), 300, 1.0).tolist() == [255, 255]


def test_dequantize_multiplies_by_f32_reciprocal():
    q = np.arange(256, dtype=np.uint8)
    scale = np.float32(3.0)
    inv = np.float32(1.0) / scale
    want = (q.astype(np.float32) - np.float32(7)) * inv
    got = dequantize(q, 7, scale)
    assert np.array_equal(bits(got), bits(want))
    assert not np.array_equal(bits(got), bits((q.astype(np.float32) - 7) / scale))  # it does not divide


def test_quantize_dequantize_run():
    mem = make_mem()
    put(mem, 0, np.float32([0.5, -3.0, 10.25, 200.0]))
    Quantize(main_mr(DT_FLOAT32, 0, 16), main_mr(DT_UINT8, 64, 4), 10, 2.0).run(mem)
    assert mem.main[64:68].tolist() == [11, 4, 31, 255]
    Dequantize(main_mr(DT_UINT8, 64, 4), main_mr(DT_FLOAT32, 128, 16), 10, 2.0).run(mem)
    assert mem.f32(main_mr(0, 128, 16)).tolist() == [0.5, -3.0, 10.5, 122.5]


# ------------------------------------------------------------------ memory_copy / pad / transpose / slice
@pytest.mark.parametrize("size", [3, 13, 14, 15, 16])
def test_memory_copy_leaves_tail(size):
    mem = make_mem()
    mem.main[0:32] = np.arange(1, 33, dtype=np.uint8)
    mem.main[100:132] = 0xEE
    MemoryCopy(main_mr(DT_UINT8, 0, size), main_mr(DT_UINT8, 100, size)).run(mem)
    n = 4 * (size // 4)
    assert mem.main[100:100 + n].tolist() == list(range(1, n + 1))
    assert (mem.main[100 + n:132] == 0xEE).all()


def test_pad_pads_and_crops():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    y = pad(x, [(0, 0), (1, 0), (-1, 2), (2, -1)], np.float32(9))
    assert y.shape == (1, 3, 4, 5)
    assert (y[0, 0] == 9).all()
    assert np.array_equal(y[0, 1:, 0:2, 2:], x[0, :, 1:, :3])
    assert (y[0, 1:, 2:, :] == 9).all() and (y[0, 1:, :, :2] == 9).all()


@pytest.mark.parametrize("dt", [DT_FLOAT32, DT_UINT8])
def test_pad_run_value_from_storage(dt):
    mem = make_mem()
    npdt = np.float32 if dt == DT_FLOAT32 else np.uint8
    x = np.arange(1, 7).astype(npdt).reshape(1, 1, 2, 3)
    put(mem, 0, x)
    storage = struct.pack("<f", -1.5) if dt == DT_FLOAT32 else b"\x07\x99\x99\x99"
    op = Pad(main_mr(dt, 0, x.nbytes), main_mr(dt, 256, 0), [1, 1, 2, 3], [(0, 0), (0, 0), (1, 0), (0, 1)],
             1 - dt, storage)
    op.run(mem)
    assert op.output_shape(op.output) == [1, 1, 3, 4]
    y = mem.view(main_mr(dt, 256, 12 * np.dtype(npdt).itemsize), npdt).reshape(3, 4)
    pv = npdt(-1.5) if dt == DT_FLOAT32 else 7
    assert (y[0] == pv).all() and (y[:, 3] == pv).all() and np.array_equal(y[1:, :3], x[0, 0])


@pytest.mark.parametrize("cls", [Pad, Transpose, StridedSlice])
def test_data_movement_rejects_other_datatypes(cls):
    mem = make_mem()
    op = cls(input=main_mr(2, 0, 16), output=main_mr(2, 64, 16))
    with pytest.raises(KernelError, match="Not supported data type"):
        op.run(mem)


@SLOW
@given(st.permutations([0, 1, 2, 3]), st.lists(st.integers(1, 4), min_size=4, max_size=4), st.booleans())
def test_transpose_matches_numpy(perm, shape, u8):
    dt = DT_UINT8 if u8 else DT_FLOAT32
    npdt = np.uint8 if u8 else np.float32
    x = (np.arange(int(np.prod(shape))) % 251).astype(npdt).reshape(shape)
    mem = make_mem()
    put(mem, 0, x)
    op = Transpose(main_mr(dt, 0, x.nbytes), main_mr(dt, 2048, x.nbytes), list(shape), list(perm))
    op.run(mem)
    want = x.transpose(perm)
    assert op.output_shape(op.output) == list(want.shape)
    assert np.array_equal(mem.view(main_mr(dt, 2048, x.nbytes), npdt).reshape(want.shape), want)
    assert np.array_equal(transpose(x, perm), want)


def test_strided_slice_negative_strides_and_end_minus_one():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    y = strided_slice(x, [1, 0, 3, 4], [-1, 3, -1, 0], [-1, 2, -2, -3])
    # d0: 1, 0 (end -1 means down to 0 inclusive); d1: 0, 2; d2: 3, 1; d3: 4, 1
    assert np.array_equal(y, x[np.ix_([1, 0], [0, 2], [3, 1], [4, 1])])
    op = StridedSlice(main_mr(0, 0, x.nbytes), main_mr(0, 1024, y.nbytes), [2, 3, 4, 5], [1, 0, 3, 4],
                      [-1, 3, -1, 0], [-1, 2, -2, -3], 1, 2, 3, 4, 5)
    mem = make_mem()
    put(mem, 0, x)
    op.run(mem)
    assert op.output_shape(op.output) == [2, 2, 2, 2]
    assert np.array_equal(mem.f32(main_mr(0, 1024, y.nbytes)), y.reshape(-1))
    with pytest.raises(ValueError):
        strided_slice(x, [0, 0, 0, 0], [1, 1, 1, 9], [1, 1, 1, 1])
    with pytest.raises(ValueError):
        strided_slice(x, [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 1])


def test_table_lookup():
    table = (255 - np.arange(256)).astype(np.uint8)
    mem = make_mem(const=table.tobytes())
    put(mem, 0, np.uint8([0, 1, 200, 255]))
    op = TableLookup1D(main_mr(DT_UINT8, 0, 4), MemoryRange(MEM_CONST, DT_UINT8, 0, 256), main_mr(DT_UINT8, 8, 4))
    op.run(mem)
    assert mem.main[8:12].tolist() == [255, 254, 55, 0]
    assert table_lookup1d(np.uint8([[3]]), table).tolist() == [[252]]
    op.input = main_mr(DT_FLOAT32, 0, 4)
    with pytest.raises(KernelFailure, match="error occurs in running kernel: TableLookup1D"):
        op.run(mem)


# ------------------------------------------------------------------ reductions
def _fold(values, op, init):
    acc = np.float32(init)
    for v in values:
        v = np.float32(v)
        if op == 1:
            acc = v if v < acc else acc
        elif op == 2:
            acc = v if acc < v else acc
        else:
            acc = np.float32(acc + v)
    return acc


@SLOW
@given(st.integers(0, 3), st.lists(st.booleans(), min_size=4, max_size=4), st.integers(0, 2**31))
def test_reduce_sequential_fold(op, axes, seed):
    shape = [2, 3, 4, 5]
    x = (np.random.default_rng(seed).standard_normal(shape) * 1000).astype(np.float32)
    out_shape = [1 if a else d for a, d in zip(axes, shape)]
    init = {0: 0.0, 1: FLT_MAX, 2: -FLT_MAX, 3: 0.0}[op]
    got = reduce(x, op, shape, out_shape, init)
    want = np.empty(out_shape, np.float32)
    for o in np.ndindex(*out_shape):
        sl = tuple(slice(None) if a else o[k] for k, a in enumerate(axes))
        acc = _fold(x[sl].reshape(-1), op, init)
        if op == 0:
            acc = np.float32(acc * (np.float32(np.prod(out_shape)) / np.float32(x.size)))
        want[o] = acc
    assert np.array_equal(bits(got), bits(want))


def test_reduce_mean_multiplies_by_ratio_and_kernel_error():
    x = np.float32([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    mem = make_mem()
    put(mem, 0, x)
    op = Reduce(main_mr(0, 0, 28), main_mr(0, 64, 4), 0, [1, 1, 1, 7], [1, 1, 1, 1], 0.0)
    op.run(mem)
    s = _fold(x, 0, 0.0)
    got = mem.f32(main_mr(0, 64, 4))[0]
    assert bits(got) == bits(s * (np.float32(1) / np.float32(7)))
    assert op.output_shape(op.output) == [1, 1, 1, 1]
    op.reduce_op = 4
    with pytest.raises(KernelFailure, match="Reduce"):
        op.run(mem)


def _pool_ref(x, op, fh, fw, sh, sw, dh, dw, ph, pw, init, lo, hi):
    n, c, h, w = x.shape
    oh = (h + ph[0] + ph[1] - ((fh - 1) * dh + 1) + sh) // sh
    ow = (w + pw[0] + pw[1] - ((fw - 1) * dw + 1) + sw) // sw
    out = np.empty((n, c, oh, ow), np.float32)
    for b, ch, oy, ox in np.ndindex(n, c, oh, ow):
        vals = [x[b, ch, oy * sh - ph[0] + ky * dh, ox * sw - pw[0] + kx * dw]
                for ky in range(fh) for kx in range(fw)
                if 0 <= oy * sh - ph[0] + ky * dh < h and 0 <= ox * sw - pw[0] + kx * dw < w]
        v = _fold(vals, op, init)
        if op == 0:
            with np.errstate(all="ignore"):
                v = np.float32(v / np.float32(len(vals)))
        out[b, ch, oy, ox] = lo if v < lo else (hi if hi < v else v)
    return out


@SLOW
@given(st.integers(0, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 2),
       st.integers(0, 1), st.integers(0, 1), st.integers(0, 2**31))
def test_reduce_window2d_matches_reference_loops(op, fh, fw, s, d, p0, p1, seed):
    x = np.random.default_rng(seed).standard_normal((1, 2, 5, 6)).astype(np.float32)
    ph, pw = (p0, p1), (p1, p0)
    lo, hi = np.float32(-0.5), np.float32(1.25)
    got = reduce_window2d(x, op, fh, fw, s, s, d, d, ph, pw, 0.0 if op != 1 else 9.0, lo, hi)
    want = _pool_ref(x, op, fh, fw, s, s, d, d, ph, pw, 0.0 if op != 1 else 9.0, lo, hi)
    assert np.array_equal(bits(got), bits(want))
    if op != 3:
        got_nhwc = cpu_reduce_window2d(x.transpose(0, 2, 3, 1), op, fh, fw, s, s, d, d, ph, pw,
                                       0.0 if op != 1 else 9.0, lo, hi)
        assert np.array_equal(bits(got_nhwc), bits(want.transpose(0, 2, 3, 1)))


def test_reduce_window_errors_and_shapes():
    mem = make_mem()
    rw = ReduceWindow2D(main_mr(0, 0, 64), main_mr(0, 128, 16), 4, [1, 1, 4, 4], (0, 0), (0, 0), 2, 2, 2, 2, 1, 1)
    assert rw.output_shape(rw.output) == [1, 1, 2, 2]
    with pytest.raises(KernelFailure, match="ReduceWindow2D"):
        rw.run(mem)
    cpu = CPUReduceWindow2D(main_mr(0, 0, 64), main_mr(0, 128, 16), 3, [1, 4, 4, 1], (0, 0), (0, 0), 2, 2, 2, 2, 1, 1)
    assert cpu.output_shape(cpu.output) == [1, 2, 2, 1]
    with pytest.raises(KernelFailure, match="CPUReduceWindow2D"):
        cpu.run(mem)


# ------------------------------------------------------------------ resize / softmax / unary
def test_resize_nearest_and_bilinear_by_hand():
    x = np.float32([[0, 10], [20, 30]]).reshape(1, 1, 2, 2)
    nn = resize_image(x, 3, 3, 1, True)  # align_corners ignored by nearest
    # sh = 2/3: oy 0,1,2 -> floor(0, .667, 1.333) = 0, 0, 1
    assert nn[0, 0].tolist() == [[0, 0, 10], [0, 0, 10], [20, 20, 30]]
    bl = resize_image(x, 3, 3, 0, True)  # scale (2-1)/(3-1) = 0.5
    assert bl[0, 0].tolist() == [[0, 5, 10], [10, 15, 20], [20, 25, 30]]
    bl0 = resize_image(x, 4, 4, 0, False)  # scale 0.5, last row/col clamp to the edge
    assert bl0[0, 0, 0].tolist() == [0, 5, 10, 10] and bl0[0, 0, :, 0].tolist() == [0, 10, 20, 20]
    xu = np.uint8([[0, 255], [255, 0]]).reshape(1, 1, 2, 2)
    bu = resize_image(xu, 3, 3, 0, True)
    assert bu.dtype == np.uint8 and bu[0, 0, 1].tolist() == [127, 127, 127]  # 127.5 truncates


def test_resize_run_and_kernel_error():
    mem = make_mem()
    put(mem, 0, np.uint8([1, 2, 3, 4]))
    op = ResizeImage(main_mr(DT_UINT8, 0, 4), main_mr(DT_UINT8, 16, 16), [1, 1, 2, 2], 4, 4, 7, False)
    op.run(mem)  # any mode other than 0 is nearest
    assert mem.main[16:32].tolist() == [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]
    assert op.output_shape(op.output) == [1, 1, 4, 4]
    op.input = main_mr(3, 0, 4)
    with pytest.raises(KernelFailure, match="ResizeImage"):
        op.run(mem)


def test_softmax_by_hand():
    x = np.float32([1.0, 3.0, 2.0, 3.0, -1.0, 0.0])
    beta = np.float32(0.7)
    got = softmax(x, 3, 2, beta)
    for r in range(2):
        row = x[3 * r:3 * r + 3]
        e = _libm.ctypes_call("expf", (row - row.max()) * beta)
        s = np.float32(0)
        for v in e:
            s = np.float32(s + v)
        assert np.array_equal(bits(got[3 * r:3 * r + 3]), bits(e / s))
    op = Softmax(main_mr(0, 0, 24), main_mr(0, 64, 24), 3, 2, float(beta))
    mem = make_mem()
    put(mem, 0, x)
    op.run(mem)
    assert np.array_equal(bits(mem.f32(main_mr(0, 64, 24))), bits(got))


def test_unary_all_ops():
    x = np.float32([-2.5, -0.0, 0.25, 1.0, 7.5, np.inf, 1e-40])
    with np.errstate(all="ignore"):
        ref = {0: np.abs(x), 1: np.ceil(x), 2: _libm.ctypes_call("cosf", x), 3: _libm.ctypes_call("expf", x),
               4: np.floor(x), 5: _libm.ctypes_call("logf", x), 6: -x, 7: np.float32(1) / np.sqrt(x),
               8: _libm.ctypes_call("sinf", x), 9: x * x}
    for op, want in ref.items():
        assert np.array_equal(bits(unary(x, op)), bits(want)), op
    mem = make_mem()
    put(mem, 0, x)
    u = Unary(main_mr(0, 0, 30), main_mr(0, 64, 28), 9)  # floor(30/4) = 7 elements
    u.run(mem)
    assert np.array_equal(bits(mem.f32(main_mr(0, 64, 28))), bits(x * x))
    u.unary_op = 10
    with pytest.raises(KernelFailure, match="Unary"):
        u.run(mem)


# ------------------------------------------------------------------ NNIL
def test_nnil_semantics():
    x = np.float32([-2.0, 0.5, 3.0])
    prog = assemble(["lda.0", "dup", "mul", ("ldc.r4", 1.5), "sub", "ldc.r4.0", "ldc.r4.1", "clamp", "ret"])
    got = nnil_eval(prog, x)
    want = np.clip(x * x - np.float32(1.5), 0, 1)
    assert np.array_equal(got, want)
    # binary ops: a op b with b popped first
    assert nnil_eval(assemble(["ldc.r4.1", "lda.0", "div", "ret"]), x).tolist() == (1 / x).tolist()
    assert nnil_eval(assemble(["lda.0", "ldc.r4.0", "max", "ret"]), x).tolist() == [0.0, 0.5, 3.0]
    # no ret: the old value stays; ret in the middle stops the program
    old = np.float32([7, 8, 9])
    assert nnil_eval(assemble(["lda.0", "neg"]), x, old).tolist() == [7, 8, 9]
    assert nnil_eval(assemble(["lda.0", "ret", "pop", "pop"]), x).tolist() == x.tolist()
    assert nnil_eval(bytes([0x03, 0xA0, 0xFF]), x).tolist() == x.tolist()  # garbage after ret is never decoded
    assert nnil_eval(assemble(["lda.0", "exp", "ret"]), x).tolist() == _libm.ctypes_call("expf", x).tolist()


@pytest.mark.parametrize("prog, msg", [
    (bytes([0x03, 0x07, 0xA0]), "Invalid nnil op"),
    (bytes([0x03] * 65), "stack overflow"),
    (bytes([0x02]), "stack underflow"),
    (bytes([0x03, 0x40]), "stack underflow"),
    (bytes([0xA0]), "stack underflow"),
    (bytes([0x01]), "empty stack"),
    (bytes([0x03, 0x06, 0x00]), "immediate"),
])
def test_nnil_errors(prog, msg):
    with pytest.raises(KernelError, match=msg):
        nnil_eval(prog, np.float32([1.0]))
    assert nnil_eval(prog, np.zeros(0, np.float32)).size == 0  # nothing runs for zero elements


def test_nnil_run_uses_padding_as_nop_and_keeps_output():
    mem = make_mem()
    put(mem, 0, np.float32([1, 2]))
    put(mem, 64, np.float32([5, 6]))
    op = NNILUnaryMethod(main_mr(0, 0, 8), main_mr(0, 64, 8), assemble(["lda.0", "square"]) + bytes(6))
    op.run(mem)
    assert mem.f32(main_mr(0, 64, 8)).tolist() == [5, 6]
    op.program = assemble(["lda.0", "square", "ret"])
    op.run(mem)
    assert mem.f32(main_mr(0, 64, 8)).tolist() == [1, 4]


# ------------------------------------------------------------------ reference cases
OPS_B = re.compile(r"^synth__(quant|reduce|resize|softmax|transpose_slice|pad_copy_concat_lut|nnil|cpuops)_")
REF = [c for c in all_cases() if OPS_B.match(c) and (CASES / c / "ncc_out").exists()]


def test_reference_selection_is_not_empty():
    assert len(REF) >= 100


@pytest.mark.parametrize("case", REF)
def test_reference_bit_exact(case):
    from kmodelpy.format.kmodel import node_opcodes
    from kmodelpy.ops.base import op_class
    from kmodelpy.runtime import load_kmodel

    path = CASES / case / "ncc.kmodel"
    missing = [c for c in node_opcodes(path.read_bytes(), case) if op_class(c) is None]
    if missing:
        pytest.skip(f"opcodes not registered yet: {missing}")
    m = load_kmodel(path)
    for x in inputs(case):
        m.run(np.frombuffer(x.read_bytes(), dtype=m.input_dtype))
        assert m.output_bytes() == ncc_out(case, x.stem), f"{case}/{x.stem}"
