"""KPU: layout (C.3), bitfields (C.1, C.2), KPUUpload (B.24), KPUConv2D encoding (C.4) and
execution (C.5, C.6), checked against an independent numpy transcription of the spec and, bit for
bit, against every KPU reference case of ``ncc infer``."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kmodelpy.runtime as rt
from kmodelpy.errors import KernelError
from kmodelpy.format.binio import DT_UINT8, MEM_KPU, MEM_MAIN, MemoryRange, Reader, Writer
from kmodelpy.format.kmodel import KModel
from kmodelpy.kpu.kernels import POOL_STRIDE, kround, pool_plane
from kmodelpy.kpu.layer_args import (FIELDS, ActivationTable, BatchNorm, LayerArgs, ncc_layer_args,
                                     sign_extend)
from kmodelpy.kpu.layout import kpu_bytes, kpu_download, kpu_upload, row_layout
from kmodelpy.ops.base import op_class
from kmodelpy.ops.kpu_conv2d import KPUConv2D, kpu_conv2d
from kmodelpy.ops.kpu_upload import KPUUpload

from refcases import CASES, all_cases, inputs, ncc_out

u64 = st.integers(0, (1 << 64) - 1)


# ------------------------------------------------------------------------------------ bitfields
@settings(max_examples=200)
@given(st.lists(u64, min_size=12, max_size=12))
def test_layer_args_round_trip_every_bit(words):
    la = LayerArgs.unpack(words)
    assert la.pack() == words
    assert LayerArgs.from_bytes(la.to_bytes()) == la


def test_layer_args_field_positions():
    # a few fields checked against C.1 by hand
    la = LayerArgs(depth_wise_layer=1, image_dst_addr=0x7FFF, o_col_high=511, pad_value=0xAB, arg_x=-1,
                   arg_add=-2, bwsx_base_addr=168)
    w = la.pack()
    assert w[0] == 1 << 3
    assert w[1] == 0x7FFF << 32
    assert w[3] == 511 << 42
    assert w[4] == (0xAB << 24) | (168 << 32)
    assert w[9] == ((1 << 24) - 1) << 32
    assert w[10] == (1 << 40) - 2
    assert LayerArgs.unpack(w).arg_x == -1 and LayerArgs.unpack(w).arg_add == -2
    assert {f[0] for f in FIELDS} >= {"arg_w", "shr_x", "channel_switch_addr", "dma_total_byte"}


def test_sign_extend():
    assert sign_extend(0x800000, 24) == -(1 << 23)
    assert sign_extend(0x7FFFFF, 24) == (1 << 23) - 1
    assert sign_extend(0x800000000, 36) == -(1 << 35)


@settings(max_examples=100)
@given(st.lists(u64, min_size=1, max_size=40))
def test_batch_norm_words_round_trip(words):
    bn = BatchNorm.unpack(np.array(words, np.uint64))
    assert np.array_equal(bn.pack(), np.array(words, np.uint64))
    w0 = words[0]
    assert bn.norm_mul[0] == sign_extend(w0, 24)
    assert bn.norm_add[0] == sign_extend(w0 >> 24, 32)
    assert bn.norm_shift[0] == (w0 >> 56) & 15


@settings(max_examples=100)
@given(st.lists(u64, min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_activation_table_round_trip(words, add):
    raw = np.array(words, "<u8").tobytes() + add
    act = ActivationTable.from_bytes(raw)
    assert act.to_bytes() == raw
    assert act.shift_number[3] == words[3] & 0xFF
    assert act.y_mul[3] == sign_extend(words[3] >> 8, 16)
    assert act.x_start[3] == sign_extend(words[3] >> 24, 36)
    assert act.add[15] == add[15]


# ------------------------------------------------------------------------------------ layout
@settings(max_examples=80, deadline=None)
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 6), st.integers(1, 200), st.integers(0, 40))
def test_upload_download_inverse(n, c, h, w, line):
    rng = np.random.default_rng(n * 1000 + c * 100 + h * 10 + w)
    x = rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)
    ram = rng.integers(0, 256, 1 << 16, dtype=np.uint8)
    before = ram.copy()
    start = line * 64
    kpu_upload(ram, start, x)
    assert np.array_equal(kpu_download(ram, start, x.shape), x)
    # only element positions change, and they are where C.3 says
    g, l, p = row_layout(w)
    s = kpu_bytes(x.shape) // n
    touched = np.zeros(len(ram), bool)
    for (bn, bc, by, bx) in [(0, 0, 0, 0), (n - 1, c - 1, h - 1, w - 1), (n // 2, c // 2, h // 2, w // 2)]:
        a = start + bn * s + (bc // g) * (l * h * 64) + (bc % g) * p + by * (l * 64) + bx
        assert ram[a] == x[bn, bc, by, bx]
    for bn in range(n):
        for bc in range(c):
            for by in range(h):
                a = start + bn * s + (bc // g) * (l * h * 64) + (bc % g) * p + by * (l * 64)
                touched[a : a + w] = True
    assert np.array_equal(ram[~touched], before[~touched])
    assert touched.sum() == x.size


def test_row_layout_and_size():
    assert row_layout(16) == (4, 1, 16) and row_layout(17) == (2, 1, 32) and row_layout(32) == (2, 1, 32)
    assert row_layout(33) == (1, 1, 64) and row_layout(65) == (1, 2, 64) and row_layout(320) == (1, 5, 64)
    assert kpu_bytes((1, 3, 240, 320)) == 230400
    assert kpu_bytes((2, 5, 7, 10)) == 2 * 7 * 2 * 64


# ------------------------------------------------------------------------------------ KROUND and pools
@pytest.mark.parametrize("t,s,want", [
    (5, 0, 5), (-5, 0, -5), (6, 2, 2), (5, 2, 1), (7, 2, 2), (2, 2, 0), (10, 2, 2), (14, 2, 4),
    (-1, 2, -2),  # the t < 0 quirk: correct rounding would give 0
    (-2, 2, -2), (-3, 2, -1), (-6, 2, -2), (-5, 2, -3), (-7, 2, -2), (1, 1, 0), (3, 1, 2),
])
def test_kround(t, s, want):
    assert kround(np.int64(t), np.int64(s)) == want


U = np.arange(30, dtype=np.uint8).reshape(5, 6) * 7 % 251


@pytest.mark.parametrize("pool,want", [
    (0, U),
    (1, np.array([[U[y:y + 2, x:x + 2].max() for x in (0, 2, 4)] for y in (0, 2)])),
    (2, np.array([[U[y:y + 2, x:x + 2].astype(int).sum() // 4 for x in (0, 2, 4)] for y in (0, 2)])),
    (3, np.array([[U[0:4, 0:4].max()]])),
    (4, np.array([[U[0:4, 0:4].astype(int).sum() // 16]])),
    (5, U[0:4:2, 0:6:2]),
    (6, U[0:4:2, 1:6:2]),
    (7, U[0:4:4, 0:4:4]),
    (8, np.array([[(int(U[y, x]) + int(U[y, min(x + 1, 5)]) + int(U[min(y + 1, 4), x]) + int(U[min(y + 1, 4), min(x + 1, 5)])) // 4
                   for x in range(6)] for y in range(5)])),
    (9, np.array([[np.pad(U, ((0, 1), (0, 1)))[y:y + 2, x:x + 2].max() for x in range(6)] for y in range(5)])),
])
def test_pools_on_hand_arrays(pool, want):
    s = POOL_STRIDE[pool]
    dst = np.zeros((5 // s, 6 // s), np.uint8)
    pool_plane(U.reshape(-1).copy(), 5, 6, pool, dst)
    assert np.array_equal(dst, want)


# ------------------------------------------------------------------------------------ C.5 reference
def _kround_np(t, s):
    q = t >> s
    f = t & ((1 << s) - 1)
    h = (1 << s) >> 1
    sig = np.where(t < 0, -1, 1)
    up = (f > h) | ((f == h) & (q & 1 == 1))
    return np.where(s == 0, t, np.where(up, q + sig, q))


def _pool_np(u, pool):
    oc, ih, iw = u.shape
    s = POOL_STRIDE[pool]
    oh, ow = ih // s, iw // s
    v = u.astype(np.int64)
    if pool == 0:
        return v
    if pool in (1, 2, 3, 4):
        win = v[:, : oh * s, : ow * s].reshape(oc, oh, s, ow, s)
        return win.max(axis=(2, 4)) if pool in (1, 3) else win.sum(axis=(2, 4)) // (s * s)
    if pool in (5, 7):
        return v[:, : oh * s : s, : ow * s : s]
    if pool == 6:
        return v[:, : oh * s : s, 1 : ow * s : s]
    if pool == 8:
        e = np.pad(v, ((0, 0), (0, 1), (0, 1)), mode="edge")
    else:
        e = np.pad(v, ((0, 0), (0, 1), (0, 1)))
    taps = [e[:, dy : dy + ih, dx : dx + iw] for dy in (0, 1) for dx in (0, 1)]
    return sum(taps) // 4 if pool == 8 else np.max(taps, axis=0)


def _conv_c(x_n, w, k, dw, zp, ax, sx, aw, sw, aadd, oc):
    """C of C.5 step 2a for one batch, i64 [OC, H, W]."""
    ic, ih, iw = x_n.shape
    pad = (k - 1) // 2
    xpd = np.pad(x_n.astype(np.int64), ((0, 0), (pad, pad), (pad, pad)), constant_values=zp)
    wk = w.astype(np.int64).reshape(oc, 1 if dw else ic, k, k)
    sxw = np.zeros((oc, ih, iw), np.int64)
    sxs = np.zeros((oc, ih, iw), np.int64)
    for o in range(oc):
        chans = [o] if dw else range(ic)
        for ci, c in enumerate(chans):
            for ky in range(k):
                for kx in range(k):
                    win = xpd[c, ky : ky + ih, kx : kx + iw]
                    sxw[o] += win * wk[o, ci, ky, kx]
                    sxs[o] += win
    gic = 1 if dw else ic
    swv = wk.reshape(oc, -1).sum(axis=1)[:, None, None]
    return sxw + ((ax * sxs) >> sx) + ((aw * swv) >> sw) + aadd * gic


def reference_kpu(x, w, bn, act, k, dw, pool, zp, ax, sx, aw, sw, aadd):
    """C.5 transcribed directly (numpy int64, no decomposition)."""
    oc = len(bn.norm_mul)
    outs = []
    for n in range(x.shape[0]):
        c_val = _conv_c(x[n], w, k, dw, zp, ax, sx, aw, sw, aadd, oc)
        bv = ((c_val * bn.norm_mul[:, None, None]) >> bn.norm_shift[:, None, None]) + bn.norm_add[:, None, None]
        j = np.full(bv.shape, -1)
        for s in range(16):
            j = np.where(bv > act.x_start[s], s, j)
        assert (j >= 0).all()
        t = (bv - act.x_start[j]) * act.y_mul[j]
        r = _kround_np(t, act.shift_number[j]) + act.add[j]
        outs.append(_pool_np(np.clip(r, 0, 255), pool))
    return np.array(outs).astype(np.uint8)


@pytest.mark.parametrize("live", [1, 2, 3, 4, 5, 15])
@pytest.mark.parametrize("pool", [0, 1, 5, 9])
@pytest.mark.parametrize("neg_bn", [False, True])
def test_kpu_conv2d_reachable_segment_counts(live, pool, neg_bn):
    """Tables whose reachable segments (inside the layer's Bv range) number 1..15, unused ones
    parked at 2^35-2 as ncc does: every fast path of the activation against the transcription."""
    rng = np.random.default_rng(live * 100 + pool + 7 * neg_bn)
    x = rng.integers(0, 256, (2, 3, 8, 9), dtype=np.uint8)
    w = rng.integers(0, 256, 4 * 3 * 9, dtype=np.uint8)
    mul = -1 if neg_bn else 1
    bn = BatchNorm(np.full(4, mul), np.zeros(4, np.int64), np.zeros(4, np.int64))
    bvs = np.sort(mul * np.concatenate([_conv_c(x[n], w, 3, False, 7, 0, 0, 0, 0, 0, 4).ravel() for n in range(2)]))
    starts = np.full(16, (1 << 35) - 2, np.int64)
    starts[0] = -(1 << 35)
    inner = np.quantile(bvs, np.linspace(0, 1, live + 1)[1:-1]).astype(np.int64) if live > 1 else []
    starts[1 : 1 + len(inner)] = np.sort(inner)
    if live == 1:
        starts[1] = bvs[0] - 5  # one segment, below everything
    for monotone in (False, True):
        act = ActivationTable(rng.integers(0, 21, 16), rng.integers(0, 4096, 16), starts.copy(),
                              rng.integers(0, 256, 16))
        if monotone:
            _make_monotone(act)
        got = kpu_conv2d(x, w, bn, act, 3, False, pool, 7, 0, 0, 0, 0, 0)
        assert np.array_equal(got, reference_kpu(x, w, bn, act, 3, False, pool, 7, 0, 0, 0, 0, 0))


def _make_monotone(act):
    """Raise the add byte of each segment so the activation never steps down (C.5 c)."""
    act.x_start[:] = np.sort(act.x_start)
    act.y_mul[:] = np.abs(act.y_mul)
    act.shift_number[:] = np.minimum(act.shift_number, 31)
    for b in range(1, 16):
        prev = act.value(int(act.x_start[b]))
        if prev is not None:
            act.add[b] = max(int(act.add[b]), prev)
    return act


def _random_layer(rng, ic, oc, k, dw, neg_mul, sorted_starts):
    taps = k * k * (1 if dw else ic)
    w = rng.integers(0, 256, oc * taps, dtype=np.uint8)
    # |Bv| < 2^35 stays guaranteed, so segment 0 (x_start = -2^35) always matches
    bn = BatchNorm(rng.integers(-(1 << 10), 1 << 10, oc), rng.integers(-(1 << 20), 1 << 20, oc),
                   rng.integers(8, 16, oc))
    starts = rng.integers(-(1 << 18), 1 << 18, 16)
    if sorted_starts:
        starts = np.sort(starts)
    starts[0] = -(1 << 35)
    mul = rng.integers(-(1 << 15) if neg_mul else 0, 1 << 12, 16)
    act = ActivationTable(rng.integers(0, 24, 16), mul, starts, rng.integers(0, 256, 16))
    return w, bn, act


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 3), st.integers(1, 6), st.integers(1, 40), st.booleans(),
       st.booleans(), st.integers(0, 9), st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_kpu_conv2d_matches_spec_transcription(seed, n, h, w, k3, dw, pool, neg_mul, sorted_starts, shifts,
                                               monotone):
    rng = np.random.default_rng(seed)
    k = 3 if k3 else 1
    ic = int(rng.integers(1, 12))
    oc = ic if dw else int(rng.integers(1, 12))
    if not k3 and not dw and rng.integers(0, 2):
        ic = int(rng.integers(128, 150))  # long reductions take the im2col dot-product path
    s = POOL_STRIDE[pool]
    h, w = max(h, s), max(w, s)
    x = rng.integers(0, 256, (n, ic, h, w), dtype=np.uint8)
    wts, bn, act = _random_layer(rng, ic, oc, k, dw, neg_mul, sorted_starts)
    if monotone:  # the kernel then max-pools before activating
        assert _make_monotone(act).is_monotone()
    zp = int(rng.integers(0, 256))
    sx, sw = (int(rng.integers(0, 16)), int(rng.integers(0, 16))) if shifts else (0, 0)
    ax, aw = int(rng.integers(-(1 << 12), 1 << 12)), int(rng.integers(-(1 << 12), 1 << 12))
    aadd = int(rng.integers(-(1 << 20), 1 << 20))
    got = kpu_conv2d(x, wts, bn, act, k, dw, pool, zp, ax, sx, aw, sw, aadd)
    want = reference_kpu(x, wts, bn, act, k, dw, pool, zp, ax, sx, aw, sw, aadd)
    assert np.array_equal(got, want)


def test_invalid_filter_and_no_segment():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (1, 2, 4, 4), dtype=np.uint8)
    wts, bn, act = _random_layer(rng, 2, 2, 1, False, False, True)
    with pytest.raises(KernelError, match="Invalid kpu filter"):
        kpu_conv2d(x, wts, bn, act, 1, False, 10, 0, 0, 0, 0, 0, 0)
    with pytest.raises(KernelError, match="Invalid kpu filter"):
        kpu_conv2d(x, wts, bn, act, 5, False, 0, 0, 0, 0, 0, 0, 0)
    act.x_start[:] = 1 << 34  # nothing can be above every start
    with pytest.raises(KernelError, match="no segment"):
        kpu_conv2d(x, wts, bn, act, 1, False, 0, 0, 0, 0, 0, 0, 0)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.booleans())
def test_is_monotone_agrees_with_sampling(seed, repair):
    rng = np.random.default_rng(seed)
    _, _, act = _random_layer(rng, 1, 1, 1, False, bool(rng.integers(0, 2)), bool(rng.integers(0, 2)))
    if repair:
        _make_monotone(act)
    pts = sorted({int(v) + d for v in act.x_start for d in (-1, 0, 1, 2, 1000)} | {1 << 34})
    vals = [act.value(b) for b in pts if b > -(1 << 35)]
    if act.is_monotone():
        assert all(a <= b for a, b in zip(vals, vals[1:]))
    if repair:
        assert act.is_monotone()


def _synth_model_bytes(case, **changes):
    km = KModel.parse((CASES / case / "ncc.kmodel").read_bytes(), case)
    for e in km.nodes:
        if isinstance(e.op, KPUConv2D):
            for k, v in changes.items():
                setattr(e.op.layer_argument, k, v)
    return km.to_bytes()


@pytest.mark.parametrize("changes", [{"kernel_type": 2}, {"kernel_type": 7}, {"pool_type": 10}, {"pool_type": 15}])
def test_invalid_kpu_filter_in_a_model(changes):
    case = "synth__kpu_c01_p0_12x16_N1_ic4_oc4_k0_dw1"
    m = rt.Model.from_bytes(_synth_model_bytes(case, **changes), case)
    x = np.frombuffer(inputs(case)[0].read_bytes(), m.input_dtype)
    with pytest.raises(KernelError, match=r"KPUConv2D.*Invalid kpu filter"):
        m.run(x)


# ------------------------------------------------------------------------------------ body encoding
def _random_op(rng, gaps):
    ic, oc = int(rng.integers(1, 20)), int(rng.integers(1, 20))
    dw = bool(rng.integers(0, 2))
    oc = ic if dw else oc
    k = int(rng.choice([1, 3]))
    la = ncc_layer_args(in_addr=64 * int(rng.integers(0, 100)), out_addr=64 * int(rng.integers(0, 100)),
                        in_shape=(ic, 8, 40), out_shape=(oc, 8, 40), kernel_size=k, depthwise=dw, pool_type=0,
                        pad_value=int(rng.integers(0, 256)), arg_x=-5, shift_x=0, arg_w=-7, shift_w=0, arg_add=35 * k * k,
                        main_output=False)
    w, bn, act = _random_layer(rng, ic, oc, k, dw, True, True)
    act.unused[:] = rng.integers(0, 16, 16)  # bits 60..63 garbage must survive
    op = KPUConv2D(MemoryRange(MEM_MAIN, DT_UINT8, 128, 0), 1, 0, la, bn, act, w)
    if gaps:
        op.bn_gap, op.act_gap, op.weights_gap = (bytes(rng.integers(0, 256, int(rng.integers(0, 300)),
                                                                    dtype=np.uint8)) for _ in range(3))
    return op


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 4000), st.booleans())
def test_kpu_conv2d_body_round_trip(seed, base, gaps):
    rng = np.random.default_rng(seed)
    op = _random_op(rng, gaps)
    base = base * 8
    body = op.body_bytes(base)
    data = bytes(base) + body
    back = KPUConv2D.read(Reader(data, base, len(data)))
    assert back.body_bytes(base) == body
    la = LayerArgs.from_bytes(body[24:120])
    bn_at = base + 120 + la.bwsx_base_addr
    act_at = bn_at + 8 * len(op.bn) + la.active_addr
    w_at = act_at + 144 + la.para_start_addr
    if not gaps:
        assert bn_at % 256 == 0 and act_at % 256 == 0 and w_at % 256 == 0
        assert not any(body[120 : bn_at - base])
    assert data[w_at : w_at + len(op.weights)] == op.weights.tobytes()
    assert back.activation == op.activation and back.bn == op.bn


def test_yolo_first_body_gaps_match_spec_example():
    # C.4 worked example: body at 224, IC 3, OC 16, 3x3 -> G1 168, G2 128, G3 112, body 1232 bytes
    km = KModel.parse((CASES / "kmodel__yolo20" / "ncc.kmodel").read_bytes())
    op = km.nodes[0].op
    assert op.gaps(224) == (168, 128, 112)
    assert len(op.body_bytes(224)) == 1232 - 0  # 1456 - 224, already 8-aligned


@settings(max_examples=30)
@given(st.lists(st.integers(0, (1 << 32) - 1), min_size=8, max_size=8), st.lists(st.integers(1, 300), min_size=4,
                                                                                   max_size=4))
def test_kpu_upload_body_round_trip(mr, shape):
    op = KPUUpload(MemoryRange(*mr[:4]), MemoryRange(*mr[4:]), shape)
    body = op.body_bytes()
    assert len(body) == 48
    assert KPUUpload.read(Reader(body)).body_bytes() == body


def test_kpu_upload_run_places_layout():
    km_ram = np.zeros(1 << 16, np.uint8)

    class Mem:
        main = np.arange(2 * 3 * 5 * 20, dtype=np.uint8)
        kpu = km_ram

        def span(self, mr, size=None):
            return self.main[mr.start : mr.start + (mr.size if size is None else size)]

    op = KPUUpload(MemoryRange(MEM_MAIN, DT_UINT8, 0, 600), MemoryRange(MEM_KPU, DT_UINT8, 640, 0), [2, 3, 5, 20])
    op.run(Mem())
    assert np.array_equal(kpu_download(km_ram, 640, (2, 3, 5, 20)), Mem.main.reshape(2, 3, 5, 20))
    assert op.output_shape(op.output) == [2, 3, 5, 20]


# ------------------------------------------------------------------------------------ reference cases
KPU_CASES = [c for c in all_cases() if c.startswith(("synth__kpu_", "synth__kpu2_"))
             and (CASES / c / "ncc_out").is_dir()]
KMODEL_CASES = [c for c in all_cases() if c.startswith("kmodel__") and (CASES / c / "ncc_out").is_dir()]


def _missing_opcodes(path) -> list[str]:
    import struct

    d = path.read_bytes()
    h = struct.unpack_from("<10I", d, 0)
    off = 40 + 32 * h[7] + 16 * h[8] + h[4]
    missing = set()
    for k in range(h[6]):
        opcode = struct.unpack_from("<I", d, off + 8 * k)[0]
        if op_class(opcode) is None:
            missing.add(f"0x{opcode:04X}")
    return sorted(missing)


def _check_case(case):
    path = CASES / case / "ncc.kmodel"
    missing = _missing_opcodes(path)
    if missing:
        pytest.skip(f"opcodes not registered yet: {missing}")
    m = rt.load_kmodel(path)
    for f in inputs(case):
        m.run(np.frombuffer(f.read_bytes(), m.input_dtype))
        assert m.last_error is None
        assert m.output_bytes() == ncc_out(case, f.stem), f"{case}/{f.stem}"


def test_kpu_case_count():
    assert len(KPU_CASES) >= 100


@pytest.mark.parametrize("case", KPU_CASES)
def test_synth_kpu_bit_exact(case):
    _check_case(case)


@pytest.mark.parametrize("case", KMODEL_CASES)
def test_real_kmodel_bit_exact(case):
    _check_case(case)


@pytest.mark.parametrize("case", [c for c in all_cases() if (CASES / c / "ncc.kmodel").exists()])
def test_kmodel_parse_write_identical(case):
    path = CASES / case / "ncc.kmodel"
    missing = _missing_opcodes(path)
    if missing:
        pytest.skip(f"opcodes not registered yet: {missing}")
    data = path.read_bytes()
    assert KModel.parse(data, case).to_bytes() == data


def test_ncc_layer_args_reproduce_ncc_registers():
    """Every KPU layer ncc compiled (compile cases): rebuilding the layer argument from its decoded
    shapes and parameters with ncc_layer_args gives the same registers, gaps aside."""
    n = 0
    for case in all_cases():
        path = CASES / case / "ncc.kmodel"
        if not (CASES / case / "model.tflite").exists() or not path.exists() or _missing_opcodes(path):
            continue
        for entry in KModel.parse(path.read_bytes(), case).nodes:
            op = entry.op
            if not isinstance(op, KPUConv2D):
                continue
            la = op.layer_argument
            mine = ncc_layer_args(in_addr=la.image_src_addr * 64, out_addr=la.image_dst_addr * 64,
                                  in_shape=la.in_shape, out_shape=la.out_shape, kernel_size=la.kernel_size,
                                  depthwise=bool(la.depth_wise_layer), pool_type=la.pool_type,
                                  pad_value=la.pad_value, arg_x=la.arg_x, shift_x=la.shr_x, arg_w=la.arg_w,
                                  shift_w=la.shr_w, arg_add=la.arg_add,
                                  main_output=op.main_mem_output.size != 0)
            mine.bwsx_base_addr, mine.active_addr, mine.para_start_addr = (
                la.bwsx_base_addr, la.active_addr, la.para_start_addr)
            assert mine == la, case
            n += 1
    if n == 0:
        pytest.skip("no compile case parses yet")


def test_gemm_layer_in_im2col_row_blocks_and_int32_chunks(monkeypatch):
    """A 3x3 GEMM layer whose im2col matrix is built a few output rows at a time (last block
    shorter), and a 1x1 layer past MAX_F32_TAPS taps (float32 partial products summed in int32),
    equal the transcription."""
    import kmodelpy.ops.kpu_conv2d as kc

    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (1, 16, 8, 11), dtype=np.uint8)
    w, bn, act = _random_layer(rng, 16, 3, 3, False, True, True)
    monkeypatch.setattr(kc, "IM2COL_BYTES", 4 * 144 * 11 * 3)  # three output rows per block
    got = kpu_conv2d(x, w, bn, act, 3, False, 1, 3, -9, 0, -3, 0, 27)
    assert np.array_equal(got, reference_kpu(x, w, bn, act, 3, False, 1, 3, -9, 0, -3, 0, 27))
    x = rng.integers(0, 256, (1, 1101, 4, 5), dtype=np.uint8)
    x[0, :, 0, 0] = 255  # x' = w' = 127: an odd sum past 2^24, which float32 cannot hold
    w = np.full(2 * 1101, 255, np.uint8)
    c00 = int(_conv_c(x[0], w, 1, False, 0, 0, 0, 0, 0, 0, 2)[0, 0, 0])
    bn = BatchNorm(np.ones(2, np.int64), np.zeros(2, np.int64), np.zeros(2, np.int64))  # Bv = C
    starts = np.full(16, (1 << 35) - 2, np.int64)
    starts[0], starts[1] = -(1 << 35), c00 - 100  # U = C − x_start: one unit of C shows
    act = ActivationTable(np.zeros(16, np.int64), np.ones(16, np.int64), starts, np.zeros(16, np.int64))
    got = kpu_conv2d(x, w, bn, act, 1, False, 0, 0, 0, 0, 0, 0, 0)
    assert np.array_equal(got, reference_kpu(x, w, bn, act, 1, False, 0, 0, 0, 0, 0, 0, 0))


@pytest.mark.parametrize("pool", [5, 6, 7])
@pytest.mark.parametrize("k", [1, 3])
def test_select_pool_computes_only_the_kept_positions(pool, k):
    """A select pool (left_top_2, right_top_2, left_top_4) on a layer whose activation is defined
    for every input runs the convolution on the kept positions only (one GEMM over their im2col
    columns) and equals the transcription; when a dropped position could reach an undefined case
    (no segment), every position is computed and the error still shows."""
    import kmodelpy.ops.kpu_conv2d as kc

    rng = np.random.default_rng(pool * 10 + k)
    x = rng.integers(0, 256, (2, 5, 9, 13), dtype=np.uint8)
    w, bn, act = _random_layer(rng, 5, 6, k, False, True, True)
    args = (k, False, pool, 17, -300, 3, 45, 2, -1000)
    pr = kc._Prepared(w, k, False, 5, 6, bn, act)
    s = POOL_STRIDE[pool]
    plan = kc._Plan(pr, x.shape, (2, 6, 9 // s, 13 // s), *args[3:], pool)
    assert plan.mode == "select" and plan.cols.shape == (5 * k * k, (9 // s) * (13 // s))  # the kept positions
    assert plan.execute(x) == 0
    assert np.array_equal(plan.out, reference_kpu(x, w, bn, act, *args))
    act.x_start[0] = 1 << 34  # Bv below every start for some inputs: no longer always defined
    act.x_start[1:] = (1 << 34) + 1
    pr = kc._Prepared(w, k, False, 5, 6, bn, act)
    assert not pr.always_defined(*args[-5:])
    with pytest.raises(KernelError, match="no segment"):
        kc._run_prepared(x, pr, pool, *args[3:])


def test_depthwise_with_more_input_channels_uses_the_first_ones():
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (2, 5, 6, 7), dtype=np.uint8)
    w, bn, act = _random_layer(rng, 3, 3, 3, True, False, True)
    got = kpu_conv2d(x, w, bn, act, 3, True, 0, 9, -4, 0, -9, 0, 36 * 9)
    assert np.array_equal(got, reference_kpu(x, w, bn, act, 3, True, 0, 9, -4, 0, -9, 0, 36 * 9))
    with pytest.raises(KernelError, match="depthwise"):
        kpu_conv2d(x[:, :2], w, bn, act, 3, True, 0, 9, -4, 0, -9, 0, 0)


def test_layer_past_kpu_ram_and_zero_batches_are_clear_errors():
    from kmodelpy.errors import FormatError

    case = "synth__kpu_c01_p0_12x16_N1_ic4_oc4_k0_dw1"
    x = np.frombuffer(inputs(case)[0].read_bytes(), np.uint8)
    with pytest.raises(FormatError, match=r"KPUConv2D.*past the end"):
        rt.Model.from_bytes(_synth_model_bytes(case, image_dst_addr=(2 << 20) // 64 - 1), case).run(x)
    km = KModel.parse((CASES / case / "ncc.kmodel").read_bytes(), case)
    for e in km.nodes:
        if isinstance(e.op, KPUConv2D):
            e.op.batches = 0
    with pytest.raises(KernelError, match="batches"):
        rt.Model.from_bytes(km.to_bytes(), case).run(x)


@pytest.mark.parametrize("batches", [1, 2])
def test_op_run_in_kpu_ram_matches_the_array_kernel(batches):
    """KPUConv2D.run reads KPU RAM inside the compiled call (straight into the padded plane for
    one batch); it must equal download + kpu_conv2d + upload, for every real model layer width
    class (line_follower: 160..5 wide)."""
    km = KModel.parse((CASES / "line_follower_kpu" / "ncc.kmodel").read_bytes(), "lf")
    rng = np.random.default_rng(batches * 10)
    for op in [e.op for e in km.nodes if isinstance(e.op, KPUConv2D)][::3]:
        op.batches = batches
        op.invalidate()
        la = op.layer_argument
        mem = rt.Memory(km, "lf")
        mem.node = "test"
        x = rng.integers(0, 256, op._in_shape4(), dtype=np.uint8)
        kpu_upload(mem.kpu, la.image_src_addr * 64, x)
        want = kpu_conv2d(x, op.weights, op.bn, op.activation, la.kernel_size, la.depth_wise_layer, la.pool_type,
                          la.pad_value, la.arg_x, la.shr_x, la.arg_w, la.shr_w, la.arg_add)
        op.run(mem)
        assert np.array_equal(kpu_download(mem.kpu, la.image_dst_addr * 64, op._out_shape4()), want)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 15), st.integers(0, 22), st.booleans(), st.booleans(),
       st.integers(1, 16))
def test_i32_activation_equals_the_64_bit_one(seed, bsh, sh, neg, near_limit, nseg):
    """activate_i32 (8 lanes of i32, taken only when every intermediate provably fits) gives the
    same bytes as the checked 64-bit activate on ncc-like and extreme parameters, or declines."""
    from kmodelpy.kpu.kernels import activate, activate_i32, segment_table

    rng = np.random.default_rng(seed)
    span = (1 << 30) if near_limit else (1 << 22)
    cv = rng.integers(-span, span, 300).astype(np.int32)
    coff = int(rng.integers(-(1 << 20), 1 << 20))
    mul = int(rng.integers(1, 1 << (24 if near_limit else 21))) * (-1 if neg else 1)
    badd = int(rng.integers(-(1 << 22), 1 << 22))
    c = cv.astype(np.int64) + coff
    c_lo, c_hi = int(c.min()), int(c.max())
    b = ((np.array([c_lo, c_hi]) * mul) >> bsh) + badd
    bv_lo, bv_hi = int(b.min()), int(b.max())
    starts = np.full(16, (1 << 35) - 2, np.int64)
    starts[0] = -(1 << 35)
    inner = np.sort(rng.integers(bv_lo, bv_hi + 1, nseg - 1))
    starts[1:nseg] = inner
    ymul = rng.integers(-(1 << 12), 1 << 12, 16)
    ymul[0] = rng.choice([0, int(ymul[0])])
    shifts = np.full(16, sh, np.int64)
    add = rng.integers(0, 256, 16)
    seg = segment_table(shifts, ymul, starts, add)
    u32 = np.zeros(300, np.uint8)
    ok = activate_i32(cv, np.int64(coff), np.int64(c_lo), np.int64(c_hi), np.int64(mul), np.int64(bsh),
                      np.int64(badd), seg, np.int64(bv_lo), np.int64(bv_hi), np.zeros(16, np.int64), u32)
    u64 = np.zeros(300, np.uint8)
    activate(cv.astype(np.int64), np.int64(coff), np.int64(mul), np.int64(bsh), np.int64(badd), seg, True, u64)
    if ok:
        assert np.array_equal(u32, u64)
    if not near_limit and bsh == 15 and sh <= 20 and ymul[0] == 0 and nseg <= 3:  # ncc-like: the i32 path
        assert ok


@pytest.mark.parametrize("top", [900_000, 1_036_000, 1_050_000, 3_000_000])
def test_i32_activation_on_ncc_relu6_table(top):
    """ncc's ReLU6 table (0, a ramp, then 14 short segments of one value each near the cap) takes
    the 32-bit path as the ramp plus steps only where a near-cap segment's value differs from the
    ramp's own rounding (252 up to 1034270 where the ramp rounds to 253, then 253 again), and
    equals the 64-bit activation."""
    from kmodelpy.kpu.kernels import activate, activate_i32, segment_table

    km = KModel.parse((CASES / "line_follower_kpu" / "ncc.kmodel").read_bytes(), "lf")
    act = [e.op for e in km.nodes if isinstance(e.op, KPUConv2D)][13].activation
    seg = segment_table(act.shift_number, act.y_mul, act.x_start, act.add)
    mul, bsh, badd = 1 << 15, 15, 0  # Bv = C
    cv = np.random.default_rng(top).integers(-50_000, top, 5000).astype(np.int32)
    cv[:3] = [1030186, 1030187, 1034271]
    lo, hi = int(cv.min()), int(cv.max())
    u32, u64 = np.zeros(5000, np.uint8), np.zeros(5000, np.uint8)
    ok = activate_i32(cv, np.int64(0), np.int64(lo), np.int64(hi), np.int64(mul), np.int64(bsh), np.int64(badd),
                      seg, np.int64(lo), np.int64(hi), np.zeros(16, np.int64), u32)
    activate(cv.astype(np.int64), np.int64(0), np.int64(mul), np.int64(bsh), np.int64(badd), seg, True, u64)
    assert ok and np.array_equal(u32, u64)
    from kmodelpy.kpu.kernels import _i32_pieces, _reachable

    i_lo, i_hi = _reachable(seg, lo, hi)
    ok, ja, _, _, nlin, nst = _i32_pieces(seg, lo, hi, i_lo - 1, i_hi, np.zeros(16, np.int64))
    assert ok and (ja, nlin) == (1, 0) and nst < i_hi - 2  # fewer steps than near-cap segments reached


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10**6), st.integers(8, 22), st.integers(1, 4000), st.integers(0, 12), st.booleans(),
       st.booleans())
def test_i32_activation_merges_only_segments_that_add_nothing(seed, sh, ymul, nsteps, exact_steps, zero_first):
    """ncc-like tables: a constant first segment, a ramp, then segments that restate the ramp's
    value near points of it (or, sometimes, differ by one). The 32-bit path leaves out exactly the
    segments that change nothing, and always equals the 64-bit activation."""
    from kmodelpy.kpu.kernels import activate, activate_i32, segment_table

    rng = np.random.default_rng(seed)
    x1 = int(rng.integers(-(1 << 22), 1 << 22))
    add1 = int(rng.integers(0, 20))
    ramp = lambda bv: min(max(int(_kround_np(np.array([(bv - x1) * ymul], np.int64), np.array([sh]))[0]) + add1, 0), 255)
    span = ((256 << sh) // ymul) + 2
    starts = np.full(16, (1 << 35) - 2, np.int64)
    starts[0], starts[1] = -(1 << 35), x1
    mul = np.zeros(16, np.int64)
    mul[1:] = ymul
    add = np.zeros(16, np.int64)
    add[0] = min(add1, 255) if zero_first else int(rng.integers(0, 256))
    add[1] = add1
    inner = np.sort(rng.integers(x1 + 1, x1 + span, nsteps))
    for i, x in enumerate(inner):
        starts[2 + i] = x
        mul[2 + i] = 0 if rng.integers(0, 2) else ymul  # a step stays within one rounding of the ramp
        add[2 + i] = ramp(int(x) + 1) + (0 if exact_steps else int(rng.integers(-1, 2)))
    seg = segment_table(np.full(16, sh), mul, starts, add)
    cv = rng.integers(x1 - span, x1 + 2 * span, 2000).astype(np.int32)
    lo, hi = int(cv.min()), int(cv.max())
    u32, u64 = np.zeros(2000, np.uint8), np.zeros(2000, np.uint8)
    ok = activate_i32(cv, np.int64(0), np.int64(lo), np.int64(hi), np.int64(1 << 15), np.int64(15), np.int64(0),
                      seg, np.int64(lo), np.int64(hi), np.zeros(16, np.int64), u32)
    activate(cv.astype(np.int64), np.int64(0), np.int64(1 << 15), np.int64(15), np.int64(0), seg, True, u64)
    if ok:
        assert np.array_equal(u32, u64)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.booleans(), st.booleans(), st.sampled_from([0, 1, 5, 8]), st.booleans(),
       st.booleans())
def test_layer_programs_and_folded_sums_equal_the_transcription(seed, dw, k3, pool, big_ax, neg_mul):
    """ncc-like layers (a ReLU table; batch norm centering each channel's Bv on the ramp): every
    channel's activation program is written once from its exact C bounds over all inputs, Σx' is
    folded into the weights when the sums stay exact in float32 (not with a large ax), and the run
    equals both the transcription and the run that classifies every channel afresh (programs
    cleared)."""
    import kmodelpy.ops.kpu_conv2d as kc
    from kmodelpy.kpu.kernels import PR_OK

    rng = np.random.default_rng(seed)
    k = 3 if k3 else 1
    ic = int(rng.integers(1, 12))
    oc = ic if dw else int(rng.integers(1, 12))
    n, h, w = int(rng.integers(1, 3)), int(rng.integers(4, 14)), int(rng.integers(4, 14))
    x = rng.integers(0, 256, (n, ic, h, w), dtype=np.uint8)
    wts = rng.integers(0, 256, oc * k * k * (1 if dw else ic), dtype=np.uint8)
    ax = int(rng.integers(30000, 40000)) if big_ax else int(rng.integers(-200, 0))
    args = (int(rng.integers(0, 256)), ax, 0, int(rng.integers(-200, 0)), 0, int(rng.integers(-5000, 5000)))
    c = np.stack([_conv_c(x[b], wts, k, dw, *args, oc) for b in range(n)], axis=1).reshape(oc, -1)
    top = min((1 << 31) // max(1, int(np.abs(c).max())), 1 << 22)  # |C·mul| <= 2^31: Bv spans up to 2^16
    mul = rng.integers(max(1, top // 4), top + 1, oc) * (-1 if neg_mul else 1)
    bv = (c * mul[:, None]) >> 15
    add = -np.median(bv, axis=1).astype(np.int64)  # each channel's Bv around 0, where the ramp starts
    spread = max(1, int(np.abs(bv + add[:, None]).max()))
    sh = int(rng.integers(8, 16))
    starts = np.full(16, (1 << 35) - 2, np.int64)
    starts[0], starts[1] = -(1 << 35), 0
    ymul = np.zeros(16, np.int64)
    ymul[1] = min(max((128 << sh) // spread, 1), 4095)  # the ramp's values up to about 128
    bn = BatchNorm(mul, add, np.full(oc, 15))
    act = ActivationTable(np.full(16, sh), ymul, starts, np.zeros(16, np.int64))
    pr = kc._Prepared(wts, k, dw, ic, oc, bn, act)
    s = POOL_STRIDE[pool]
    plan = kc._Plan(pr, x.shape, (n, oc, h // s, w // s), *args, pool)
    assert plan.prog[:, PR_OK].all()
    taps = k * k * (1 if dw else ic)  # |w' + 128 + ax| is 30000..40255 with the large ax: 2^24 at 4..5 taps
    assert plan.folded if not big_ax or taps <= 3 else (taps == 4 or not plan.folded)
    want = reference_kpu(x, wts, bn, act, k, dw, pool, *args)
    assert len(np.unique(want)) > 2 or want.size <= 16 or np.ptp(c) == 0  # values along the ramp, not its ends
    assert plan.execute(x) == 0 and np.array_equal(plan.out, want)
    plan.prog[:] = 0
    plan.out[:] = 0
    assert plan.execute(x) == 0 and np.array_equal(plan.out, want)
    assert not plan.prog[:, PR_OK].any()  # a program written for one run's C range is not kept as static
