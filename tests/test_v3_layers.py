"""Every kmodel v3 layer type runs exactly as the K210 SDK's C code (tests/v3_kpu_c.py, a literal
transcription of kpu.c as the kmodel v3 runtime spec states it) on hypothesis-made layers and memory
contents: the same main-memory and KPU RAM bytes afterwards. The public reference models cover only
some layer types; these cover all 22."""
from __future__ import annotations

import numpy as np
import pytest
import v3_kpu_c as C
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmodelpy.errors import FormatError
from kmodelpy.kpu.layer_args import ActivationTable, BatchNorm, ncc_layer_args
from kmodelpy.runtime import KPU_RAM_SIZE, Memory
from kmodelpy.v3.kmodel import KModelV3
from kmodelpy.v3.layer import LAYER_MODULES, layer_class

MAIN = 1024  # bytes of main memory in these tests
KPU_TEST = 1 << 16  # the KPU RAM bytes compared (layers here stay below)

floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
moderate = st.floats(min_value=-60.0, max_value=60.0, width=32)
i32 = st.integers(-(2**31), 2**31 - 1)


def _addr(draw, nbytes: int, align: int = 4) -> int:
    hi = max(0, (MAIN - nbytes) // align)
    return align * draw(st.integers(0, hi))


def _fill_f32(draw, values, count: int) -> bytes:
    return np.array([draw(values) for _ in range(count)], np.float32).tobytes()


@st.composite
def memory(draw, f32_regions=(), values=floats):
    """Random main memory, with float32 values drawn from ``values`` in the (start, count) regions."""
    main = bytearray(draw(st.binary(min_size=MAIN, max_size=MAIN)))
    for start, count in f32_regions:
        main[start : start + 4 * count] = _fill_f32(draw, values, count)
    return main


# ---------------------------------------------------------------- one strategy per layer type
@st.composite
def add(draw):
    n = draw(st.integers(0, 16))
    L = layer_class(1)(0, _addr(draw, 4 * n), _addr(draw, 4 * n), _addr(draw, 4 * n), n)
    return L, draw(memory([(L.input_a, n), (L.input_b, n)]))


@st.composite
def quantized_add(draw):
    n = draw(st.integers(0, 20))
    small = st.integers(-300, 300)
    shift = st.one_of(st.integers(0, 40), st.integers(-3, 70))
    mul = st.one_of(st.integers(0, 1 << 22), i32)
    args = [draw(small), draw(mul), draw(shift), draw(small), draw(mul), draw(shift)]
    if draw(st.booleans()):
        args[5] = args[2]  # the equal-shift form
    L = layer_class(2)(draw(st.integers(0, 1)), _addr(draw, n + 7, 1), _addr(draw, n + 7, 1), _addr(draw, n, 1), n,
                       *args, draw(small), draw(mul), draw(shift))
    return L, draw(memory())


@st.composite
def global_average_pool2d(draw):
    ks, ch = draw(st.integers(0, 9)), draw(st.integers(0, 6))
    L = layer_class(5)(0, _addr(draw, 4 * ks * ch), _addr(draw, 4 * ch), ks, ch)
    return L, draw(memory([(L.input, ks * ch)], moderate))


@st.composite
def pool2d(draw, code):
    w, h, c = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    kw, kh, sw, sh = (draw(st.integers(1, 4)) for _ in range(4))
    pw, ph = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    ow, oh = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    item = 1 if code == 8 else 4
    fields = [0, _addr(draw, item * w * h * c, item), _addr(draw, item * ow * oh * c, item), w, h, c, ow, oh, c,
              kw, kh, sw, sh, pw, ph]
    L = layer_class(code)(*fields, *([draw(st.integers(0, 2))] if code == 9 else []))
    return L, draw(memory([(L.input, w * h * c)] if code == 9 else [], moderate))


@st.composite
def quantize(draw):
    n = draw(st.integers(0, 16))
    L = layer_class(11)(0, _addr(draw, 4 * n), _addr(draw, n, 1), n)
    L.scale = float(draw(st.one_of(st.floats(0.0009765625, 10.0, width=32), floats)))
    L.bias = float(draw(st.one_of(moderate, floats)))
    return L, draw(memory([(L.input, n)], st.one_of(moderate, floats)))


@st.composite
def dequantize(draw):
    n = draw(st.integers(0, 16))
    L = layer_class(12)(0, _addr(draw, n, 1), _addr(draw, 4 * n), n)
    L.scale, L.bias = float(draw(floats)), float(draw(floats))
    return L, draw(memory())


@st.composite
def channelwise_dequantize(draw):
    ch, size = draw(st.integers(0, 4)), draw(st.integers(0, 5))
    L = layer_class(24)(0, _addr(draw, ch * size, 1), _addr(draw, 4 * ch * size), ch, size)
    L.params = np.array([[draw(floats), draw(floats)] for _ in range(ch)], np.float32).reshape(ch, 2)
    return L, draw(memory())


@st.composite
def requantize(draw):
    n = draw(st.integers(0, 32))
    L = layer_class(13)(0, _addr(draw, n, 1), _addr(draw, n, 1), n)
    L.table = np.frombuffer(draw(st.binary(min_size=256, max_size=256)), np.uint8).copy()
    return L, draw(memory())


@st.composite
def vector(draw, code, values=moderate):
    n = draw(st.integers(0 if code != 15 else 1, 16))
    L = layer_class(code)(0, _addr(draw, 4 * n), _addr(draw, 4 * n), n)
    return L, draw(memory([(L.input, n)], values))


@st.composite
def concat(draw, code):
    sizes = draw(st.lists(st.integers(0, 24), min_size=1, max_size=3))
    out = draw(st.integers(0, 3)) * 256  # inputs in the other quarters: memcpy of disjoint ranges
    starts = [((out // 256 + 1 + i) % 4) * 256 + draw(st.integers(0, 200)) for i in range(len(sizes))]
    L = layer_class(code)(0, out, len(sizes), list(zip(starts, sizes)))
    return L, draw(memory())


@st.composite
def fully_connected(draw):
    n_in, n_out = draw(st.sampled_from([1, 3, 7, 8, 9, 16, 24])), draw(st.integers(1, 5))
    L = layer_class(18)(0, _addr(draw, 4 * n_in), _addr(draw, 4 * n_out), n_in, n_out, draw(st.integers(0, 3)))
    L.weights = np.array([draw(moderate) for _ in range(n_in * n_out)], np.float32).reshape(n_out, n_in)
    L.bias = np.array([draw(moderate) for _ in range(n_out)], np.float32)
    return L, draw(memory([(L.input, n_in)], st.one_of(moderate, floats)))


@st.composite
def flatten(draw):
    w, h, c = (draw(st.integers(1, 4)) for _ in range(3))
    L = layer_class(20)(0, _addr(draw, 4 * w * h * c), _addr(draw, 4 * w * h * c), w, h, c)
    return L, draw(memory())


@st.composite
def resize(draw, code):
    w, h, c = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 2))
    ow, oh = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    item = 4 if code == 22 else 1
    L = layer_class(code)(0, _addr(draw, item * w * h * c, item), _addr(draw, item * ow * oh * c, item),
                          w, h, c, ow, oh, draw(st.integers(0, 1)))
    return L, draw(memory())


@st.composite
def add_padding(draw):
    n = draw(st.integers(0, 16))
    L = layer_class(10241)(0, _addr(draw, n, 1), draw(st.integers(0, 100)), n)
    return L, draw(memory())


@st.composite
def remove_padding(draw):
    n = draw(st.integers(0, 8))
    L = layer_class(10242)(0, _addr(draw, 16 * n, 1), _addr(draw, n, 1), n)
    return L, draw(memory())


@st.composite
def upload(draw):
    w = draw(st.sampled_from([1, 5, 16, 17, 32, 33, 64, 70]))
    h, c = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    n = w * h * c
    if n > MAIN:
        c = 1
        n = w * h
    L = layer_class(10243)(0, _addr(draw, n, 1), draw(st.integers(0, 200)), w, h, c)
    return L, draw(memory())


@st.composite
def k210_conv(draw):
    k = draw(st.sampled_from([1, 3]))
    dw = draw(st.booleans()) and k == 3
    ic = draw(st.integers(1, 4))
    oc = ic if dw else draw(st.integers(1, 4))
    ih, iw = draw(st.integers(4, 8)), draw(st.sampled_from([4, 5, 8, 9, 17, 20, 33]))
    pool = draw(st.integers(0, 9))
    stride = C.POOLS[pool][1]
    la = ncc_layer_args(in_addr=64 * 8, out_addr=64 * 400, in_shape=(ic, ih, iw), out_shape=(oc, ih // stride, iw // stride),
                        kernel_size=k, depthwise=dw, pool_type=pool, pad_value=draw(st.integers(0, 255)),
                        arg_x=draw(st.integers(-255, 0)), shift_x=draw(st.integers(0, 3)),
                        arg_w=draw(st.integers(-255, 0)), shift_w=draw(st.integers(0, 3)),
                        arg_add=draw(st.integers(0, 1 << 20)), main_output=False)
    bn = BatchNorm(norm_mul=[draw(st.integers(-(1 << 11), 1 << 11)) for _ in range(oc)],  # |Bv| < 2^35
                   norm_add=[draw(st.integers(-(1 << 24), 1 << 24)) for _ in range(oc)],
                   norm_shift=[draw(st.integers(0, 15)) for _ in range(oc)])
    starts = sorted(draw(st.integers(-(1 << 30), 1 << 30)) for _ in range(15))
    act = ActivationTable(shift_number=[0] + [draw(st.integers(0, 20)) for _ in range(15)],
                          y_mul=[0] + [draw(st.integers(-(1 << 15), (1 << 15) - 1)) for _ in range(15)],
                          x_start=[-(1 << 35)] + starts, add=[draw(st.integers(0, 255)) for _ in range(16)])
    nw = oc * k * k * (1 if dw else ic)
    cls = layer_class(10240)
    out_bytes = oc * (ih // stride) * (iw // stride)
    flags = draw(st.integers(0, 1)) if out_bytes <= MAIN else 0
    L = cls(flags, _addr(draw, out_bytes), la,
            np.frombuffer(draw(st.binary(min_size=nw, max_size=nw)), np.uint8).copy(), bn, act)
    return L, draw(memory())


STRATEGIES = {
    1: add(), 2: quantized_add(), 5: global_average_pool2d(), 8: pool2d(8), 9: pool2d(9), 11: quantize(),
    12: dequantize(), 13: requantize(), 14: vector(14, st.one_of(moderate, floats)), 15: vector(15),
    16: concat(16), 17: concat(17), 18: fully_connected(), 20: flatten(), 22: resize(22), 23: resize(23),
    24: channelwise_dequantize(), 25: vector(25, st.one_of(moderate, floats)), 10240: k210_conv(),
    10241: add_padding(), 10242: remove_padding(), 10243: upload(),
}


def test_every_layer_type_has_a_strategy_and_a_transcription():
    assert set(STRATEGIES) == set(LAYER_MODULES) == set(C.TRANSCRIPTIONS)


def _nan_normal(b: bytes) -> np.ndarray:
    """Main memory bytes with every float32-aligned NaN pattern made one (payloads are not specified)."""
    a = np.frombuffer(b, np.uint32).copy()
    f = a.view(np.float32)
    a[np.isnan(f)] = 0x7FC00000
    return a


def _run_both(layer, main: bytearray, kpu_seed: bytes):
    mem = Memory(KModelV3(main_mem=MAIN), "t")
    mem.main[:] = np.frombuffer(bytes(main), np.uint8)
    mem.kpu[:KPU_TEST] = np.frombuffer(kpu_seed, np.uint8)
    mem.node = f"layer ({layer.name})"
    ref_main, ref_kpu = bytearray(main), bytearray(kpu_seed) + bytearray(KPU_RAM_SIZE - KPU_TEST)
    try:
        if layer.code in C.NEEDS_KPU:
            C.TRANSCRIPTIONS[layer.code](layer, ref_main, ref_kpu)
        else:
            C.TRANSCRIPTIONS[layer.code](layer, ref_main)
    except (IndexError, ValueError):
        # the C code reads past the main buffer here (e.g. a pool window below the input): kmodelpy
        # refuses with one line instead of reading whatever follows
        with pytest.raises(FormatError, match="outside"):
            layer.run(mem)
        return None
    layer.run(mem)
    return mem, ref_main, ref_kpu


@pytest.mark.parametrize("code", sorted(STRATEGIES), ids=lambda c: layer_class(c).name)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
def test_layer_runs_as_the_sdk_c_code(code, data):
    layer, main = data.draw(STRATEGIES[code])
    kpu_seed = bytes(KPU_TEST)
    if code in C.NEEDS_KPU:  # KPU RAM's old content (random bytes from a drawn seed: 64 KB is too big to draw)
        kpu_seed = np.random.default_rng(data.draw(st.integers(0, 2**32))).integers(0, 256, KPU_TEST, np.uint8).tobytes()
    ran = _run_both(layer, main, kpu_seed)
    if ran is None:
        return
    mem, ref_main, ref_kpu = ran
    got = mem.main.tobytes()
    if got != bytes(ref_main):
        g, r = _nan_normal(got), _nan_normal(bytes(ref_main))
        bad = np.nonzero(g != r)[0]
        assert bad.size == 0, f"{layer}: main memory differs at words {bad[:8].tolist()}: {g[bad[:4]]} vs {r[bad[:4]]}"
    assert mem.kpu.tobytes() == bytes(ref_kpu), f"{layer}: KPU RAM differs"
