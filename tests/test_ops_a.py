"""Runtime ops part A: body round trips, kernels against straight-from-the-spec loops, and the ncc
reference cases (synth__binary_*, synth__qbinary_*, synth__conv2d_*, synth__matmul_*, synth__cpuops_*)
bit for bit.

The reference loops below (``ref_*``) follow runtime spec §B.3–B.23 literally — per output, taps
in the spec's order, np.float32 scalar arithmetic (one IEEE rounding per op) and Python ints with
explicit i32 wrapping — so they check the numba kernels' loop reorderings and overflow handling.
"""
from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmodelpy.errors import FormatError, KernelError
from kmodelpy.format.binio import FLT_MAX, MemoryRange, Reader, ValueRange
from kmodelpy.format.kmodel import KModel
from kmodelpy.ops import _arith
from kmodelpy.ops.base import op_class
from kmodelpy.ops.binary import Binary, binary
from kmodelpy.ops.concat import Concat, concat
from kmodelpy.ops.conv2d import Conv2D, conv2d
from kmodelpy.ops.conv2d_transpose import Conv2DTranspose, conv2d_transpose
from kmodelpy.ops.cpu_conv2d import CPUConv2D, cpu_conv2d
from kmodelpy.ops.cpu_depthwise_conv2d import CPUDepthwiseConv2D, cpu_depthwise_conv2d
from kmodelpy.ops.cpu_quantized_conv2d import CPUQuantizedConv2D, cpu_quantized_conv2d
from kmodelpy.ops.cpu_quantized_depthwise_conv2d import CPUQuantizedDepthwiseConv2D, cpu_quantized_depthwise_conv2d
from kmodelpy.ops.matmul import MatMul, matmul
from kmodelpy.ops.quantized_binary import QuantizedBinary, quantized_binary
from kmodelpy.ops.quantized_conv2d import QuantizedConv2D, quantized_conv2d
from kmodelpy.ops.quantized_matmul import QuantizedMatMul, quantized_matmul
from kmodelpy.runtime import KernelFailure, Memory, load_kmodel

from refcases import CASES, all_cases, inputs, ncc_out

F32 = np.float32
I32 = st.integers(-(2**31), 2**31 - 1)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
W32 = _arith.wrap_i32_py
MCS = _arith.mcs_py


# ================================================================ integer / f32 helpers
class TestArith:
    def test_rhu_rounds_half_up(self):
        # exact halves go toward +inf, on both signs
        assert [int(_arith.carry_shift(v, 1)) for v in (1, 3, -1, -3, 5, -5)] == [1, 2, 0, -1, 3, -2]
        assert int(_arith.carry_shift(-7, 0)) == -7

    def test_mcs_hand_values(self):
        m = 2**31 - 1
        assert int(_arith.mul_and_carry_shift(1, m, 31)) == 1  # (2^31 - 1 + 2^30) >> 31
        assert int(_arith.mul_and_carry_shift(3, 1, 257)) == 2  # shift 257 is a u8 1
        assert int(_arith.mul_and_carry_shift(1, m, 287)) == 1  # 287 mod 256 = 31
        # shift 32: (2^31-1)^2 + 2^31 >> 32 = 2^30 - 1
        assert int(_arith.mul_and_carry_shift(m, m, 32)) == 2**30 - 1
        # truncation to i32 wraps
        assert int(_arith.mul_and_carry_shift(2**20, 2**20, 0)) == 0
        assert int(_arith.mul_and_carry_shift(3 << 29, 2, 0)) == W32(3 << 30) == -(2**30)
        # negative multiplier, exact half: -3/2 -> -1
        assert int(_arith.mul_and_carry_shift(3, -1, 1)) == -1

    @FAST
    @given(I32, I32, st.integers(-300, 300))
    def test_mcs_matches_python(self, v, m, s):
        assert int(_arith.mul_and_carry_shift(v, m, s)) == MCS(v, m, s)

    def test_tdiv_truncates(self):
        for a, b in [(7, 2), (-7, 2), (7, -2), (-7, -2), (-1, 3), (6, 3), (-6, 3)]:
            assert int(_arith.tdiv(a, b)) == int(a / b) == _arith.tdiv_py(a, b)

    def test_get_out(self):
        assert _arith.get_out(5, 3, 2, 1, 1, 1) == 3
        assert _arith.get_out(4, 3, 1, 2, -1, 0) == -1  # tdiv(4-1-5+1, 1)
        assert _arith.get_out(2, 3, 2, 1, 0, 0) == 0  # tdiv(-1+2, 2) = 0

    def test_std_min_max_clamp_nan(self):
        nan, one, two = F32("nan"), F32(1), F32(2)
        assert np.isnan(_arith.f32_min(nan, one)) and _arith.f32_min(one, nan) == one
        assert np.isnan(_arith.f32_max(nan, one)) and _arith.f32_max(one, nan) == one
        assert np.isnan(_arith.clamp(nan, one, two)) and _arith.clamp(F32(3), one, two) == two
        assert _arith.clamp(F32(0), one, two) == one
        a = np.array([nan, 1, 5], F32)
        b = np.array([1, nan, 3], F32)
        assert np.array_equal(_arith.np_min(a, b), [nan, 1, 3], equal_nan=True)
        assert np.array_equal(_arith.np_max(a, b), [nan, 1, 5], equal_nan=True)
        assert np.array_equal(_arith.np_clamp(a, 2, 4), [nan, 2, 4], equal_nan=True)

    def test_tap_out_range(self):
        for base in range(-7, 8):
            for size in range(0, 6):
                for stride in (1, 2, 3):
                    o0, o1 = _arith.tap_out_range(base, size, stride, 5)
                    want = [o for o in range(5) if 0 <= o * stride + base < size]
                    assert list(range(o0, o1)) == want


# ================================================================ body round trips
MR = st.builds(MemoryRange, st.integers(0, 2), st.integers(0, 1), st.integers(0, 2**32 - 1),
               st.integers(0, 2**32 - 1))
F32S = st.floats(width=32, allow_nan=False)
ACT = st.builds(ValueRange, F32S, F32S)
SHAPE = st.lists(st.integers(0, 5), min_size=4, max_size=4)
PAD = st.tuples(st.integers(-3, 3), st.integers(-3, 3))
SMALL = st.integers(1, 3)


def f32_array(n):
    return st.lists(F32S, min_size=n, max_size=n).map(lambda v: np.array(v, F32))


def arr(dtype, n):
    lo, hi = (0, 255) if dtype == np.uint8 else (-(2**31), 2**31 - 1)
    return st.lists(st.integers(lo, hi), min_size=n, max_size=n).map(lambda v: np.array(v, dtype))


@st.composite
def binary_ops(draw, cls):
    kw = dict(input_a=draw(MR), input_b=draw(MR), output=draw(MR), binary_op=draw(st.integers(0, 2**32 - 1)),
              in_a_shape=draw(SHAPE), in_b_shape=draw(SHAPE), out_shape=draw(SHAPE))
    if cls is Binary:
        return Binary(**kw, act=draw(ACT))
    return QuantizedBinary(**kw, **{k: draw(I32) for k in QuantizedBinary._INTS})


@st.composite
def window(draw):
    return dict(padding_h=draw(PAD), padding_w=draw(PAD), filter_h=draw(SMALL), filter_w=draw(SMALL),
                stride_h=draw(SMALL), stride_w=draw(SMALL), dilation_h=draw(SMALL), dilation_w=draw(SMALL))


QUANT = ("input_offset", "filter_offset", "output_mul", "output_shift", "output_offset")


@st.composite
def conv_ops(draw, cls):
    g = draw(st.integers(1, 3))
    c, oc = g * draw(SMALL), g * draw(SMALL)
    shape = [draw(SMALL), c, draw(SMALL), draw(SMALL)]
    win = draw(window())
    n_w = oc * c // g * win["filter_h"] * win["filter_w"]
    io = dict(input=draw(MR), output=draw(MR), in_shape=shape)
    if cls is Conv2D:
        return Conv2D(**io, groups=g, out_channels=oc, **win, act=draw(ACT), weights=draw(f32_array(n_w)),
                      bias=draw(f32_array(oc)))
    if cls is QuantizedConv2D:
        return QuantizedConv2D(**io, groups=g, out_channels=oc, **win, **{k: draw(I32) for k in QUANT},
                               bias=draw(arr(np.int32, oc)), weights=draw(arr(np.uint8, n_w)))
    out_shape = [shape[0], oc, draw(SMALL), draw(SMALL)]
    return Conv2DTranspose(**io, out_shape=out_shape, groups=g, **win, act=draw(ACT),
                           weights=draw(f32_array(n_w)), bias=draw(f32_array(oc)))


@st.composite
def cpu_ops(draw, cls):
    shape = [draw(SMALL), draw(SMALL), draw(SMALL), draw(SMALL)]
    win = draw(window())
    io = dict(input=draw(MR), output=draw(MR), in_shape=shape)
    c, k = shape[3], win["filter_h"] * win["filter_w"]
    if cls is CPUConv2D:
        oc = draw(SMALL)
        return CPUConv2D(**io, out_channels=oc, **win, act=draw(ACT), weights=draw(f32_array(oc * k * c)),
                         bias=draw(f32_array(oc)))
    if cls is CPUDepthwiseConv2D:
        return CPUDepthwiseConv2D(**io, **win, act=draw(ACT), weights=draw(f32_array(c * k)),
                                  bias=draw(f32_array(c)))
    q = {n: draw(I32) for n in QUANT}
    if cls is CPUQuantizedConv2D:
        oc = draw(SMALL)
        return CPUQuantizedConv2D(**io, out_channels=oc, **win, **q, weights=draw(arr(np.uint8, oc * k * c)),
                                  bias=draw(arr(np.int32, oc)))
    return CPUQuantizedDepthwiseConv2D(**io, **win, **q, weights=draw(arr(np.uint8, c * k)),
                                       bias=draw(arr(np.int32, c)))


@st.composite
def matmul_ops(draw, cls):
    io = dict(input_a=draw(MR), input_b=draw(MR), output=draw(MR))
    rows, cols, bc = draw(st.integers(0, 4)), draw(st.integers(0, 4)), draw(st.integers(0, 4))
    if cls is MatMul:
        return MatMul(**io, a_rows=rows, a_cols=cols, b_cols=bc, act=draw(ACT), bias=draw(f32_array(bc)))
    return QuantizedMatMul(**io, a_rows=rows, a_cols=cols, b_cols=bc,
                           **{k: draw(I32) for k in QuantizedMatMul._QUANT}, bias=draw(arr(np.int32, bc)))


@st.composite
def concat_ops(draw):
    n = draw(st.integers(0, 4))
    return Concat(draw(MR), draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)),
                  [draw(MR) for _ in range(n)], [draw(I32) for _ in range(n)])


def same_fields(a, b) -> bool:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            x, y = np.asarray(x), np.asarray(y)
            if x.dtype != y.dtype or x.ravel().tobytes() != y.ravel().tobytes():
                return False
        elif isinstance(x, (list, tuple)):
            if list(x) != list(y):
                return False
        elif x != y:
            return False
    return True


def extra_bytes(op) -> int:
    if isinstance(op, Concat):
        return 20 * len(op.input_ranges)
    return sum(np.asarray(getattr(op, n)).nbytes for n in ("weights", "bias") if hasattr(op, n))


OP_STRATEGIES = {
    Binary: binary_ops(Binary), QuantizedBinary: binary_ops(QuantizedBinary), Concat: concat_ops(),
    Conv2D: conv_ops(Conv2D), QuantizedConv2D: conv_ops(QuantizedConv2D), Conv2DTranspose: conv_ops(Conv2DTranspose),
    MatMul: matmul_ops(MatMul), QuantizedMatMul: matmul_ops(QuantizedMatMul), CPUConv2D: cpu_ops(CPUConv2D),
    CPUDepthwiseConv2D: cpu_ops(CPUDepthwiseConv2D), CPUQuantizedConv2D: cpu_ops(CPUQuantizedConv2D),
    CPUQuantizedDepthwiseConv2D: cpu_ops(CPUQuantizedDepthwiseConv2D),
}
SPEC_SIZES = {Binary: 108, QuantizedBinary: 136, Concat: 28, Conv2D: 104, QuantizedConv2D: 116,
              Conv2DTranspose: 116, MatMul: 68, QuantizedMatMul: 80, CPUConv2D: 100, CPUDepthwiseConv2D: 96,
              CPUQuantizedConv2D: 112, CPUQuantizedDepthwiseConv2D: 108}
OPCODES = {Binary: 0x00, Concat: 0x01, Conv2D: 0x02, MatMul: 0x04, QuantizedConv2D: 0x0F, QuantizedMatMul: 0x10,
           QuantizedBinary: 0x11, Conv2DTranspose: 0x13, CPUConv2D: 0x1001, CPUDepthwiseConv2D: 0x1002,
           CPUQuantizedConv2D: 0x1004, CPUQuantizedDepthwiseConv2D: 0x1005}


@pytest.mark.parametrize("cls", list(OP_STRATEGIES), ids=lambda c: c.__name__)
def test_registered(cls):
    assert op_class(OPCODES[cls]) is cls and cls.opcode == OPCODES[cls]


def test_opcode_module_table_matches_the_registry():
    """op_class imports only the module OP_MODULES names for an opcode; with every op module imported,
    the registry holds exactly those opcodes, each defined in its named module."""
    from kmodelpy.ops.base import OP_MODULES, OPS, _load_all

    _load_all()
    assert {k: v.__module__.rsplit(".", 1)[1] for k, v in OPS.items()} == OP_MODULES
    assert op_class(0x15) is None and op_class(0x2003) is None


@pytest.mark.parametrize("cls", list(OP_STRATEGIES), ids=lambda c: c.__name__)
def test_body_round_trip(cls):
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(OP_STRATEGIES[cls])
    def check(op):
        body = op.body_bytes()
        assert len(body) == SPEC_SIZES[cls] + extra_bytes(op)
        back = cls.read(Reader(body + bytes(7), 0, len(body), "body"))
        assert same_fields(op, back)
        assert back.body_bytes() == body
        if len(body) > SPEC_SIZES[cls] - 4:  # a truncated body is a FormatError, never something else
            with pytest.raises(FormatError):
                cls.read(Reader(body, 0, len(body) - 1, "body"))

    check()


def test_binary_field_offsets():
    op = Binary(MemoryRange(1, 0, 8, 16), MemoryRange(0, 0, 24, 4), MemoryRange(1, 0, 32, 16), 4,
                [1, 2, 3, 4], [1, 1, 1, 4], [5, 6, 7, 8], ValueRange(-1.0, 6.0))
    b = op.body_bytes()
    assert struct.unpack_from("<I", b, 48)[0] == 4
    assert struct.unpack_from("<4i", b, 84) == (5, 6, 7, 8)
    assert struct.unpack_from("<2f", b, 100) == (-1.0, 6.0)
    q = QuantizedBinary(output_offset=255, output_mul=35050460, output_shift=32)
    qb = q.body_bytes()
    assert struct.unpack_from("<3i", qb, 124) == (255, 35050460, 32)


def test_qconv_bias_before_weights_cpu_after():
    q = QuantizedConv2D(in_shape=[1, 1, 1, 1], bias=np.array([0x01020304], np.int32), weights=np.array([9], np.uint8))
    assert q.body_bytes()[116:121] == bytes([4, 3, 2, 1, 9])
    c = CPUQuantizedConv2D(in_shape=[1, 1, 1, 1], weights=np.array([9], np.uint8),
                           bias=np.array([0x01020304], np.int32))
    assert c.body_bytes()[112:117] == bytes([9, 4, 3, 2, 1])


# ================================================================ reference loops (spec, literally)
def taps(o, stride, before, dil, size, f):
    org = o * stride - before
    k0 = max(0, _arith.tdiv_py(-org + dil - 1, dil))
    k1 = min(f, _arith.tdiv_py(size - org + dil - 1, dil))
    return [(k, org + dil * k) for k in range(k0, k1)]


def conv_window(k):
    """The window arguments of the array-level conv functions, in their order."""
    return k["ph"], k["pw"], k["sh"], k["sw"], k["dh"], k["dw"]


def nhwc_outputs(k, oh, ow):
    """Every NHWC output position with its valid taps (§B.2): yields ``(n, oy, ox, ty, tx)``, where
    ``ty``/``tx`` are the ``(k, input coordinate)`` pairs of :func:`taps`."""
    for n in range(k["n"]):
        for oy in range(oh):
            for ox in range(ow):
                yield (n, oy, ox, taps(oy, k["sh"], k["ph"][0], k["dh"], k["h"], k["fh"]),
                       taps(ox, k["sw"], k["pw"][0], k["dw"], k["w"], k["fw"]))


def std_clamp(v, lo, hi):
    return lo if v < lo else hi if hi < v else v


def ref_conv2d(x, w, bias, groups, ph, pw, sh, sw, dh, dw, lo, hi):
    n_b, c, h, wd = x.shape
    oc_n, g_ic, fh, fw = w.shape
    g_oc = oc_n // groups
    oh, ow = _arith.get_out(h, fh, sh, dh, *ph), _arith.get_out(wd, fw, sw, dw, *pw)
    out = np.zeros((n_b, oc_n, max(oh, 0), max(ow, 0)), F32)
    for n in range(n_b):
        for g in range(groups):
            for oc in range(g_oc):
                for oy in range(oh):
                    for ox in range(ow):
                        v = F32(bias[g * g_oc + oc])
                        for ic in range(g_ic):
                            for ky, iy in taps(oy, sh, ph[0], dh, h, fh):
                                for kx, ix in taps(ox, sw, pw[0], dw, wd, fw):
                                    v = F32(v + F32(x[n, g * g_ic + ic, iy, ix] * w[g * g_oc + oc, ic, ky, kx]))
                        out[n, g * g_oc + oc, oy, ox] = std_clamp(v, F32(lo), F32(hi))
    return out


def ref_qconv2d(x, w, bias, groups, ph, pw, sh, sw, dh, dw, io, fo, om, osh, oo):
    n_b, c, h, wd = x.shape
    oc_n, g_ic, fh, fw = w.shape
    g_oc = oc_n // groups
    oh, ow = _arith.get_out(h, fh, sh, dh, *ph), _arith.get_out(wd, fw, sw, dw, *pw)
    out = np.zeros((n_b, oc_n, max(oh, 0), max(ow, 0)), np.uint8)
    for n in range(n_b):
        for g in range(groups):
            for oc in range(g_oc):
                for oy in range(oh):
                    for ox in range(ow):
                        v = int(bias[g * g_oc + oc])
                        for ic in range(g_ic):
                            for ky, iy in taps(oy, sh, ph[0], dh, h, fh):
                                for kx, ix in taps(ox, sw, pw[0], dw, wd, fw):
                                    a = W32(int(x[n, g * g_ic + ic, iy, ix]) + io)
                                    b = W32(int(w[g * g_oc + oc, ic, ky, kx]) + fo)
                                    v = W32(v + W32(a * b))
                        out[n, g * g_oc + oc, oy, ox] = min(max(W32(MCS(v, om, osh) + oo), 0), 255)
    return out


@st.composite
def conv_case(draw, max_c=3):
    g = draw(st.integers(1, 2))
    c, oc = g * draw(st.integers(1, max_c)), g * draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    fh, fw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    p = st.integers(-1, 2)
    return dict(n=draw(st.integers(1, 2)), c=c, h=h, w=w, oc=oc, groups=g, fh=fh, fw=fw,
                ph=(draw(p), draw(p)), pw=(draw(p), draw(p)), sh=draw(SMALL), sw=draw(SMALL),
                dh=draw(st.integers(1, 2)), dw=draw(st.integers(1, 2)), seed=draw(st.integers(0, 2**31)))


def rnd_f32(rng, shape):
    return (rng.standard_normal(shape) * 3).astype(F32)


class TestConvKernels:
    def test_conv2d_hand(self):
        x = np.arange(9, dtype=F32).reshape(1, 1, 3, 3)
        w = np.array([[[[1, 2], [3, 4]]]], F32)
        y = conv2d(x, w, np.array([0.5], F32), 1, (0, 0), (0, 0), 1, 1, 1, 1)
        # out[0,0] = 0.5 + 0*1 + 1*2 + 3*3 + 4*4 = 27.5
        assert y.tolist() == [[[[27.5, 37.5], [57.5, 67.5]]]]
        # padding 1 before / -1 after (crop), stride 2: OH = tdiv(3+0-2+2, 2) = 1
        y = conv2d(x, w, np.zeros(1, F32), 1, (1, -1), (1, -1), 2, 2, 1, 1)
        assert y.tolist() == [[[[0 * 4]]]]  # only tap (1,1) of the window is inside: x[0,0]*4
        # dilation 2 picks the corners; act clamps to [0, 6]
        y = conv2d(x, w, np.zeros(1, F32), 1, (0, 0), (0, 0), 1, 1, 2, 2, 0.0, 6.0)
        assert y.tolist() == [[[[6.0]]]]  # 0*1 + 2*2 + 6*3 + 8*4 = 54 -> 6

    def test_conv2d_groups_hand(self):
        x = np.stack([np.ones((2, 2), F32), 2 * np.ones((2, 2), F32)])[None]
        w = np.array([[[[1.0]]], [[[10.0]]]], F32)  # groups=2, 1x1
        y = conv2d(x, w, np.array([0, 1], F32), 2, (0, 0), (0, 0), 1, 1, 1, 1)
        assert y[0, 0].tolist() == [[1, 1], [1, 1]] and y[0, 1].tolist() == [[21, 21], [21, 21]]

    @settings(max_examples=40, deadline=None)
    @given(conv_case(), st.booleans())
    def test_conv2d_matches_spec_loop(self, k, act):
        rng = np.random.default_rng(k["seed"])
        x = rnd_f32(rng, (k["n"], k["c"], k["h"], k["w"]))
        w = rnd_f32(rng, (k["oc"], k["c"] // k["groups"], k["fh"], k["fw"]))
        b = rnd_f32(rng, k["oc"])
        lo, hi = (-2.0, 3.0) if act else (-FLT_MAX, FLT_MAX)
        args = (k["groups"], *conv_window(k), lo, hi)
        want = ref_conv2d(x, w, b, *args)
        got = conv2d(x, w, b, *args)
        assert got.shape == want.shape and got.tobytes() == want.tobytes()

    @settings(max_examples=40, deadline=None)
    @given(conv_case(), st.sampled_from([(-128, -120), (3, 7), (-(2**31), 2**31 - 1), (2**30, 2**30)]),
           I32, st.integers(0, 300))
    def test_qconv2d_matches_spec_loop(self, k, offs, mul, shift):
        rng = np.random.default_rng(k["seed"])
        x = rng.integers(0, 256, (k["n"], k["c"], k["h"], k["w"]), dtype=np.uint8)
        w = rng.integers(0, 256, (k["oc"], k["c"] // k["groups"], k["fh"], k["fw"]), dtype=np.uint8)
        b = rng.integers(-(2**31), 2**31, k["oc"], dtype=np.int64).astype(np.int32)
        args = (k["groups"], *conv_window(k), offs[0], offs[1], mul, shift, 7)
        want = ref_qconv2d(x, w, b, *args)
        got = quantized_conv2d(x, w, b, *args)
        assert got.shape == want.shape and np.array_equal(got, want)

    def test_qconv2d_hand(self):
        x = np.array([[[[10, 20]]]], np.uint8)
        w = np.array([[[[3]]]], np.uint8)
        # acc = 5 + (10-4)*(3+1) = 29; MCS(29, 1, 1) = 15 (29/2 = 14.5 rounds up); +100 = 115
        y = quantized_conv2d(x, w, np.array([5], np.int32), 1, (0, 0), (0, 0), 1, 1, 1, 1, -4, 1, 1, 1, 100)
        assert y.tolist() == [[[[115, 135]]]]  # second: 5 + 16*4 = 69 -> 35 -> 135

    def test_conv2d_transpose_hand(self):
        x = np.array([[[[1, 2]]]], F32)  # 1x1x1x2
        w = np.array([[[[1, 10]]]], F32)  # OC=1, 1x2 filter
        # stride 2: out[0] += 1*1, out[1] += 1*10, out[2] += 2*1, out[3] += 2*10; bias 100 ignored
        y = conv2d_transpose(x, w, np.array([100], F32), [1, 1, 1, 4], 1, (0, 0), (0, 0), 1, 2, 1, 1)
        assert y.tolist() == [[[[1, 10, 2, 20]]]]
        # pad before 1 shifts left and drops out-of-range taps; act clamp applies
        y = conv2d_transpose(x, w, np.array([100], F32), [1, 1, 1, 3], 1, (0, 0), (1, 0), 1, 2, 1, 1, 0.0, 15.0)
        assert y.tolist() == [[[[10, 2, 15]]]]

    @settings(max_examples=30, deadline=None)
    @given(conv_case(), st.integers(1, 7), st.integers(1, 7), st.booleans())
    def test_conv2d_transpose_matches_spec_loop(self, k, oh, ow, act):
        rng = np.random.default_rng(k["seed"])
        x = rnd_f32(rng, (k["n"], k["c"], k["h"], k["w"]))
        w = rnd_f32(rng, (k["oc"], k["c"] // k["groups"], k["fh"], k["fw"]))
        out_shape = [k["n"], k["oc"], oh, ow]
        lo, hi = (-1.0, 1.5) if act else (-FLT_MAX, FLT_MAX)
        want = np.zeros(out_shape, F32)
        g_ic, g_oc = k["c"] // k["groups"], k["oc"] // k["groups"]
        for n in range(k["n"]):
            for g in range(k["groups"]):
                for ic in range(g_ic):
                    for iy in range(k["h"]):
                        for ix in range(k["w"]):
                            v = x[n, g * g_ic + ic, iy, ix]
                            for oc in range(g_oc):
                                o = g * g_oc + oc
                                for ky, y in taps(iy, k["sh"], k["ph"][0], k["dh"], oh, k["fh"]):
                                    for kx, xx in taps(ix, k["sw"], k["pw"][0], k["dw"], ow, k["fw"]):
                                        want[n, o, y, xx] = F32(want[n, o, y, xx] + F32(v * w[o, ic, ky, kx]))
        if act:
            want = np.where(want < F32(lo), F32(lo), np.where(F32(hi) < want, F32(hi), want))
        got = conv2d_transpose(x, w, rnd_f32(rng, k["oc"]), out_shape, k["groups"], *conv_window(k), lo, hi)
        assert got.tobytes() == want.astype(F32).tobytes()


# ================================================================ CPU (NHWC) kernels
@settings(max_examples=30, deadline=None)
@given(conv_case())
def test_cpu_float_convs_match_spec_loop(k):
    rng = np.random.default_rng(k["seed"])
    x = rnd_f32(rng, (k["n"], k["h"], k["w"], k["c"]))
    w = rnd_f32(rng, (k["oc"], k["fh"], k["fw"], k["c"]))
    wd = rnd_f32(rng, (k["c"], k["fh"], k["fw"]))
    b, bd = rnd_f32(rng, k["oc"]), rnd_f32(rng, k["c"])
    win = conv_window(k)
    got = cpu_conv2d(x, w, b, *win, -1.0, 2.0)
    got_d = cpu_depthwise_conv2d(x, wd, bd, *win, -1.0, 2.0)
    oh, ow = got.shape[1], got.shape[2]
    assert got_d.shape == (k["n"], oh, ow, k["c"])
    for n, oy, ox, ty, tx in nhwc_outputs(k, oh, ow):
        for oc in range(k["oc"]):
            v = F32(b[oc])
            for ky, iy in ty:
                for kx, ix in tx:
                    for ic in range(k["c"]):
                        v = F32(v + F32(x[n, iy, ix, ic] * w[oc, ky, kx, ic]))
            assert got[n, oy, ox, oc].tobytes() == std_clamp(v, F32(-1), F32(2)).tobytes()
        for c in range(k["c"]):
            v = F32(bd[c])
            for ky, iy in ty:
                for kx, ix in tx:
                    v = F32(v + F32(x[n, iy, ix, c] * wd[c, ky, kx]))
            assert got_d[n, oy, ox, c].tobytes() == std_clamp(v, F32(-1), F32(2)).tobytes()


@settings(max_examples=30, deadline=None)
@given(conv_case(), st.sampled_from([(128, 120), (-3, -7), (2**31 - 1, -(2**31))]), I32, st.integers(0, 64))
def test_cpu_quantized_convs_subtract_offsets(k, offs, mul, shift):
    rng = np.random.default_rng(k["seed"])
    x = rng.integers(0, 256, (k["n"], k["h"], k["w"], k["c"]), dtype=np.uint8)
    w = rng.integers(0, 256, (k["oc"], k["fh"], k["fw"], k["c"]), dtype=np.uint8)
    wd = rng.integers(0, 256, (k["c"], k["fh"], k["fw"]), dtype=np.uint8)
    b = rng.integers(-(2**20), 2**20, k["oc"]).astype(np.int32)
    bd = rng.integers(-(2**20), 2**20, k["c"]).astype(np.int32)
    win = conv_window(k)
    q = (offs[0], offs[1], mul, shift, 3)
    got = cpu_quantized_conv2d(x, w, b, *win, *q)
    got_d = cpu_quantized_depthwise_conv2d(x, wd, bd, *win, *q)
    oh, ow = got.shape[1], got.shape[2]
    for n, oy, ox, ty, tx in nhwc_outputs(k, oh, ow):
        for oc in range(k["oc"]):
            v = int(b[oc])
            for ky, iy in ty:
                for kx, ix in tx:
                    for ic in range(k["c"]):
                        xv = W32(int(x[n, iy, ix, ic]) - offs[0])
                        v = W32(v + W32(xv * W32(int(w[oc, ky, kx, ic]) - offs[1])))
            assert got[n, oy, ox, oc] == min(max(W32(MCS(v, mul, shift) + 3), 0), 255)
        for c in range(k["c"]):
            v = int(bd[c])
            for ky, iy in ty:
                for kx, ix in tx:
                    v = W32(v + W32(W32(int(x[n, iy, ix, c]) - offs[0]) * W32(int(wd[c, ky, kx]) - offs[1])))
            assert got_d[n, oy, ox, c] == min(max(W32(MCS(v, mul, shift) + 3), 0), 255)


def test_cpu_quantized_conv_hand():
    x = np.array([[[[10]]]], np.uint8)  # NHWC 1x1x1x1
    w = np.array([[[[3]]]], np.uint8)
    # (10 - 4) * (3 - 1) + 5 = 17; MCS(17, 1, 1) = 9; + 100 = 109  (NCHW variant would ADD offsets)
    got = cpu_quantized_conv2d(x, w, np.array([5], np.int32), (0, 0), (0, 0), 1, 1, 1, 1, 4, 1, 1, 1, 100)
    assert got.item() == 109
    wd = np.array([[[3]]], np.uint8)
    assert cpu_quantized_depthwise_conv2d(x, wd, np.array([5], np.int32), (0, 0), (0, 0), 1, 1, 1, 1,
                                          4, 1, 1, 1, 100).item() == 109


# ================================================================ matmul
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(0, 6), st.integers(1, 5), st.integers(0, 2**31), I32, st.integers(0, 40))
def test_matmuls_match_spec_loop(rows, cols, bc, seed, mul, shift):
    rng = np.random.default_rng(seed)
    a, b, bias = rnd_f32(rng, (rows, cols)), rnd_f32(rng, (cols, bc)), rnd_f32(rng, bc)
    got = matmul(a, b, bias, -4.0, 4.0)
    qa = rng.integers(0, 256, (rows, cols), dtype=np.uint8)
    qb = rng.integers(0, 256, (cols, bc), dtype=np.uint8)
    qbias = rng.integers(-(2**31), 2**31, bc, dtype=np.int64).astype(np.int32)
    qgot = quantized_matmul(qa, qb, qbias, -(2**31), 2**31 - 1, mul, shift, 9)
    for r in range(rows):
        for c in range(bc):
            v = F32(bias[c])
            q = int(qbias[c])
            for i in range(cols):
                v = F32(v + F32(a[r, i] * b[i, c]))
                q = W32(q + W32(W32(int(qa[r, i]) - 2**31) * W32(int(qb[i, c]) + 2**31 - 1)))
            assert got[r, c].tobytes() == std_clamp(v, F32(-4), F32(4)).tobytes()
            assert qgot[r, c] == min(max(W32(MCS(q, mul, shift) + 9), 0), 255)


def test_matmul_hand():
    y = matmul(np.array([[1, 2]], F32), np.array([[3, 4, 5], [6, 7, 8]], F32), np.array([0.5, 0, -100], F32), -50, 20)
    assert y.tolist() == [[15.5, 18.0, -50.0]]
    q = quantized_matmul(np.array([[1, 2]], np.uint8), np.array([[3], [4]], np.uint8), np.array([1], np.int32),
                         1, -1, 3, 1, 10)
    # acc = 1 + 2*2 + 3*3 = 14; MCS(14, 3, 1) = 21; + 10 = 31
    assert q.tolist() == [[31]]


# ================================================================ binary / quantized binary
class TestBinary:
    def test_equal_shapes_all_ops(self):
        a = np.array([1, -2, 3, np.nan], F32).reshape(1, 1, 2, 2)
        b = np.array([2, 4, -3, 1], F32).reshape(1, 1, 2, 2)
        got = [binary(a, b, op).ravel() for op in range(6)]
        want = [[3, 2, 0, np.nan], [-1, -6, 6, np.nan], [2, -8, -9, np.nan], [0.5, -0.5, -1, np.nan],
                [1, -2, -3, np.nan], [2, 4, 3, np.nan]]
        for g, w in zip(got, want):
            assert np.array_equal(g, np.array(w, F32), equal_nan=True)

    def test_broadcast_and_act(self):
        a = np.arange(6, dtype=F32).reshape(1, 2, 1, 3)
        b = np.arange(4, dtype=F32).reshape(1, 1, 4, 1) * 10
        y = binary(a, b, 0, 0.0, 25.0)
        assert y.shape == (1, 2, 4, 3)
        assert np.array_equal(y, np.clip(a + b, 0, 25))

    def test_reduced_index_quirk(self):
        # in_a [1,1,1,3] broadcast to out [1,1,1,5]: indices >= 3 read element 0 (§B.2), not an error
        a = np.array([1, 2, 3], F32).reshape(1, 1, 1, 3)
        b = np.zeros((1, 1, 1, 1), F32)
        assert binary(a, b, 0, out_shape=[1, 1, 1, 5]).ravel().tolist() == [1, 2, 3, 1, 1]

    def _memory(self, n_main):
        return Memory(KModel(main_mem=n_main, constants=np.arange(16, dtype=F32).tobytes()))

    def test_run_equal_path_ignores_out_shape(self):
        mem = self._memory(64)
        op = Binary(MemoryRange(0, 0, 0, 16), MemoryRange(0, 0, 16, 16), MemoryRange(1, 0, 0, 16), 2,
                    [1, 1, 2, 2], [1, 1, 2, 2], [9, 9, 9, 9], ValueRange())
        op.run(mem)
        assert mem.f32(MemoryRange(1, 0, 0, 16)).tolist() == [0, 5, 12, 21]
        assert op.output_shape(op.output) == [1, 1, 2, 2]

    def test_run_bad_op_is_kernel_failure(self):
        op = Binary(MemoryRange(0, 0, 0, 4), MemoryRange(0, 0, 0, 4), MemoryRange(1, 0, 0, 4), 6)
        with pytest.raises(KernelFailure, match="error occurs in running kernel: Binary"):
            op.run(self._memory(8))
        q = QuantizedBinary(MemoryRange(0, 1, 0, 1), MemoryRange(0, 1, 0, 1), MemoryRange(1, 1, 0, 1), 7)
        with pytest.raises(KernelFailure, match="error occurs in running kernel: QuantizedBinary"):
            q.run(self._memory(8))


class TestQuantizedBinary:
    def test_ops_hand(self):
        a = np.array([7, 200], np.uint8)
        b = np.array([2, 3], np.uint8)
        # identity requantization (mul 1, shift 0), offsets 0; output offset 100
        got = [quantized_binary(a, b, op, 0, 1, 0, 0, 1, 0, 100, 1, 0).tolist() for op in range(6)]
        assert got == [[109, 255], [105, 255], [114, 255], [104, 167], [102, 103], [107, 255]]
        # div: tdiv(A + tdiv(B, 2), B) with negative A: (-7 + 1) / 2 = -3
        u8 = lambda v: np.array([v], np.uint8)  # noqa: E731
        assert quantized_binary(u8(0), u8(2), 3, -7, 1, 0, 0, 1, 0, 10, 1, 0).item() == 7
        # requantization rounds exact halves up: (5 * 1) >> 1 -> 3; (−5) -> −2
        assert quantized_binary(u8(5), u8(0), 0, 0, 1, 1, 0, 1, 0, 50, 1, 0).item() == 53
        assert quantized_binary(u8(0), u8(5), 1, 0, 1, 0, 0, 1, 0, 50, 1, 1).item() == 48

    def test_div_by_zero_raises(self):
        with pytest.raises(KernelError, match="requantizes to 0"):
            quantized_binary(np.array([1], np.uint8), np.array([0], np.uint8), 3, 0, 1, 0, 0, 1, 0, 0, 1, 0)

    @FAST
    @given(st.lists(st.integers(1, 3), min_size=4, max_size=4), st.lists(st.integers(1, 3), min_size=4, max_size=4),
           st.integers(0, 5), st.lists(I32, min_size=9, max_size=9), st.integers(0, 2**31))
    def test_matches_spec_loop(self, sa, sb, op, p, seed):
        rng = np.random.default_rng(seed)
        so = [max(x, y) for x, y in zip(sa, sb)]
        a = rng.integers(0, 256, sa, dtype=np.uint8)
        b = rng.integers(0, 256, sb, dtype=np.uint8)
        want = np.zeros(so if sa != sb else sa, np.uint8)
        try:
            for o in np.ndindex(*want.shape):
                ia = tuple(i if i < s else 0 for i, s in zip(o, sa))
                ib = tuple(i if i < s else 0 for i, s in zip(o, sb))
                A = MCS(W32(int(a[ia]) + p[0]), p[1], p[2])
                B = MCS(W32(int(b[ib]) + p[3]), p[4], p[5])
                if op == 3 and (B == 0 or (B == -1 and W32(A + _arith.tdiv_py(B, 2)) == -(2**31))):
                    raise ZeroDivisionError
                R = [A + B, A - B, A * B, _arith.tdiv_py(W32(A + _arith.tdiv_py(B, 2)), B) if op == 3 else 0,
                     min(A, B), max(A, B)][op]
                want[o] = min(max(W32(MCS(W32(R), p[7], p[8]) + p[6]), 0), 255)
        except ZeroDivisionError:
            with pytest.raises(KernelError):
                quantized_binary(a, b, op, *p, out_shape=so)
            return
        got = quantized_binary(a, b, op, *p, out_shape=so)
        assert np.array_equal(got.reshape(want.shape), want)


# ================================================================ concat
def test_concat_mixes_const_and_main():
    km = KModel(main_mem=64, constants=bytes(range(100, 112)))
    mem = Memory(km)
    mem.main[0:8] = np.arange(8, dtype=np.uint8)
    # outer 2, inner 2 bytes; input 0 from main with dims 2 (4 bytes/row), input 1 from const with dims 1
    op = Concat(MemoryRange(1, 1, 32, 12), 2, 2, [MemoryRange(1, 1, 0, 8), MemoryRange(0, 1, 4, 4)], [2, 1])
    op.run(mem)
    assert mem.main[32:44].tolist() == [0, 1, 2, 3, 104, 105, 4, 5, 6, 7, 106, 107]
    assert concat([np.zeros((1, 2)), np.ones((1, 1))], 1).tolist() == [[0, 0, 1]]
    assert op.inputs() == op.input_ranges


# ================================================================ ncc reference cases, bit for bit
REF_PREFIXES = ("synth__binary_", "synth__qbinary_", "synth__conv2d_", "synth__matmul_", "synth__cpuops_")
REF_CASES = [c for c in all_cases() if c.startswith(REF_PREFIXES) and (CASES / c / "ncc_out").is_dir()]


def _opcodes(path) -> set[int]:
    d = path.read_bytes()
    n_const, _, n_nodes, n_in, n_out = struct.unpack_from("<5I", d, 16)
    off = 40 + 32 * n_in + 16 * n_out + n_const
    return {struct.unpack_from("<I", d, off + 8 * i)[0] for i in range(n_nodes)}


def test_reference_cases_present():
    assert len(REF_CASES) == 96


@pytest.mark.parametrize("case", REF_CASES)
def test_reference_case_bit_exact(case):
    path = CASES / case / "ncc.kmodel"
    missing = [hex(o) for o in sorted(_opcodes(path)) if op_class(o) is None]
    if missing:
        pytest.skip(f"opcodes {missing} not registered yet")
    m = load_kmodel(path)
    xs = inputs(case)
    assert xs
    for x in xs:
        m.run(np.frombuffer(x.read_bytes(), m.input_dtype))
        assert m.last_error is None
        assert m.output_bytes() == ncc_out(case, x.stem), f"{case}/{x.name}"


# ================================================================ damaged bodies fail cleanly
def test_damaged_parameters_raise_kernel_error():
    mem = Memory(KModel(main_mem=256, constants=bytes(64)))
    conv = Conv2D(MemoryRange(0, 0, 0, 16), MemoryRange(1, 0, 0, 16), [1, 1, 2, 2], 1, 1, (0, 0), (0, 0),
                  1, 1, 0, 1, 1, 1, ValueRange(), np.ones(1, F32), np.zeros(1, F32))
    with pytest.raises(KernelError, match="stride"):
        conv.run(mem)
    conv.stride_h, conv.groups = 1, 2
    with pytest.raises(KernelError, match="groups"):
        conv.run(mem)
    b = Binary(MemoryRange(0, 0, 0, 4), MemoryRange(0, 0, 0, 4), MemoryRange(1, 0, 0, 4), 0,
               [1, 1, 1, 2], [1, 1, 1, 0], [1, 1, 1, 2])
    with pytest.raises(KernelError, match="empty input"):
        b.run(mem)
    b.in_b_shape = [1, 1, 1, -1]
    with pytest.raises(KernelError, match="negative"):
        b.run(mem)
    q = QuantizedBinary(MemoryRange(0, 1, 0, 1), MemoryRange(0, 1, 0, 1), MemoryRange(1, 1, 0, 1), 3)
    with pytest.raises(KernelError, match="SIGFPE"):
        q.run(mem)  # b = 0 requantizes to 0: ncc divides by zero
