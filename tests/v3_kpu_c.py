"""Direct transcriptions of the K210 SDK's kmodel v3 layer functions (kpu.c, as the kmodel v3
runtime spec §1.3, §1.4, §1.5 and §3 state them), in plain Python on byte arrays: the oracle the
v3 layer kernels are tested against. Slow, literal, independent of kmodelpy's kernels: C's loops in
C's order, int32/u32/int64 arithmetic spelled out, every float32 operation rounded on its own
(numpy float32 scalars), fmaf by exact rationals (:func:`f32_exact.fmaf_exact`). expf is kmodelpy's
newlib transcription (tested bit-exact against the compiled C in test_newlib.py).
"""
from __future__ import annotations

import math
import struct
from fractions import Fraction

import numpy as np
from f32_exact import fmaf_exact

from kmodelpy.newlib import expf

F = np.float32


def u32(v: int) -> int:
    return v & 0xFFFFFFFF


def s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def s64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def rf(m, a: int) -> np.float32:
    return np.frombuffer(bytes(m[a : a + 4]), "<f4")[0]


def wf(m, a: int, v) -> None:
    m[a : a + 4] = struct.pack("<f", float(F(v)))


def roundf(x: np.float32) -> np.float32:
    if not np.isfinite(x):
        return x
    q = Fraction(float(x))
    r = math.floor(abs(q) + Fraction(1, 2))
    return F(math.copysign(r, float(x)))


def fcvt_w(x: np.float32) -> int:
    """RISC-V fcvt.w.s rtz: truncate, saturate, NaN -> INT32_MAX."""
    if np.isnan(x) or x >= 2.0**31:
        return 2**31 - 1
    if x <= -(2.0**31):
        return -(2**31)
    return math.trunc(float(x))


def fcvt_wu(x: np.float32) -> int:
    """RISC-V fcvt.wu.s rtz: truncate, negative -> 0, NaN or too big -> 2^32-1."""
    if np.isnan(x) or x >= 2.0**32:
        return 2**32 - 1
    if x <= 0:
        return 0
    return math.trunc(float(x))


# ---------------------------------------------------------------- kpu.c 613-630
def kpu_carry_shift(value: int, shift: int) -> int:
    shift = u32(shift)
    if shift > 0:
        value = s64(value) >> ((shift - 1) & 63)
        if value & 0x1:
            value = (value >> 1) - 1 if value < 0 else (value >> 1) + 1
        else:
            value >>= 1
    return value


# ---------------------------------------------------------------- CPU layers (kpu.c 745-1267)
def add(L, m) -> None:
    with np.errstate(all="ignore"):
        for i in range(L.count):
            wf(m, L.output + 4 * i, rf(m, L.input_a + 4 * i) + rf(m, L.input_b + 4 * i))


def quantized_add(L, m) -> None:
    count = u32(L.count + 7) & u32(~7)
    a, b, d = L.input_a, L.input_b, L.output
    i = 0
    while i < count and max(a, b, d) + i < len(m):
        n = min(8, count - i, len(m) - max(a, b, d) - i)
        av = [m[a + i + j] for j in range(n)]
        bv = [m[b + i + j] for j in range(n)]
        for j in range(n):
            x = s64((av[j] + L.in_a_offset) * L.in_a_mul)
            y = s64((bv[j] + L.in_b_offset) * L.in_b_mul)
            if L.in_a_shift == L.in_b_shift:
                v = s64(x + y) >> (L.in_a_shift & 63)
            else:
                v = s64((x >> (L.in_a_shift & 63)) + (y >> (L.in_b_shift & 63)))
            v = s64(kpu_carry_shift(s64(v * L.out_mul), L.out_shift) + L.out_offset)
            m[d + i + j] = min(0xFF, max(0, v))
        i += n


def global_average_pool2d(L, m) -> None:
    with np.errstate(all="ignore"):
        r = F(1.0) / F(L.kernel_size)
        src = L.input
        for oc in range(L.channels):
            s = F(0.0)
            for _ in range(L.kernel_size):
                s = F(s + rf(m, src))
                src += 4
            wf(m, L.output + 4 * oc, s * r)


def _pool(L, m, item: int, combine) -> None:
    """kpu_quantized_max_pool2d / kpu_average_pool2d loops; ``combine`` takes the list of tap values."""
    dest = L.output
    for oc in range(L.out_channels):
        channel_src = L.input + item * u32(L.in_width * L.in_height * oc)
        for oy in range(L.out_height):
            for ox in range(L.out_width):
                x0 = s32(u32(s32(u32(ox * L.stride_width)) - L.padding_width))
                y0 = s32(u32(s32(u32(oy * L.stride_height)) - L.padding_height))
                kxs = max(0, s32(-x0))
                kxe = s32(min(L.kernel_width, u32(L.in_width - x0)))
                kys = max(0, s32(-y0))
                kye = s32(min(L.kernel_height, u32(L.in_height - y0)))
                taps = []
                for ky in range(kys, kye):
                    for kx in range(kxs, kxe):
                        ix, iy = s32(x0 + kx), s32(y0 + ky)
                        a = channel_src + item * u32(u32(iy * L.in_width) + u32(ix))
                        taps.append(m[a] if item == 1 else rf(m, a))
                v = combine(taps)
                if item == 1:
                    m[dest] = v
                else:
                    wf(m, dest, v)
                dest += item


def quantized_max_pool2d(L, m) -> None:
    _pool(L, m, 1, lambda taps: max([0] + taps))


def average_pool2d(L, m) -> None:
    def mean(taps):
        value, count = F(0.0), F(0.0)
        with np.errstate(all="ignore"):
            for t in taps:
                value = F(value + t)
                count = F(count + F(1.0))
            return F(value / count)

    _pool(L, m, 4, mean)


def quantize(L, m) -> None:
    with np.errstate(all="ignore"):
        scale = F(1.0) / F(L.scale)
        for i in range(L.count):
            value = fcvt_w(roundf(F(F(rf(m, L.input + 4 * i) - F(L.bias)) * scale)))
            m[L.output + i] = min(0xFF, max(0, value))


def dequantize(L, m) -> None:
    for i in range(L.count):
        wf(m, L.output + 4 * i, fmaf_exact(F(m[L.input + i]), F(L.scale), F(L.bias)))


def channelwise_dequantize(L, m) -> None:
    i = 0
    for oc in range(L.channels):
        scale, bias = F(L.params[oc][0]), F(L.params[oc][1])
        for _ in range(L.channel_size):
            wf(m, L.output + 4 * i, fmaf_exact(F(m[L.input + i]), scale, bias))
            i += 1


def requantize(L, m) -> None:
    for i in range(L.count):
        m[L.output + i] = int(L.table[m[L.input + i]])


def l2_normalization(L, m) -> None:
    with np.errstate(all="ignore"):
        s = F(0.0)
        for oc in range(L.channels):
            x = rf(m, L.input + 4 * oc)
            s = fmaf_exact(x, x, s)
        if s < F(1e-10):
            s = F(1e-10)
        s = F(1.0) / np.sqrt(F(s))
        for oc in range(L.channels):
            wf(m, L.output + 4 * oc, rf(m, L.input + 4 * oc) * s)


def softmax(L, m) -> None:
    with np.errstate(all="ignore"):
        mx = F(np.finfo(np.float32).tiny)  # FLT_MIN
        for oc in range(L.channels):
            x = rf(m, L.input + 4 * oc)
            mx = x if x > mx else mx  # fmaxf
        s = F(0.0)
        for oc in range(L.channels):
            value = expf(F(rf(m, L.input + 4 * oc) - mx), True)
            s = F(s + value)
            wf(m, L.output + 4 * oc, value)
        r = F(1.0) / s
        for oc in range(L.channels):
            wf(m, L.output + 4 * oc, rf(m, L.output + 4 * oc) * r)


def concat(L, m) -> None:
    dest = L.output
    for start, size in L.inputs_mem:
        m[dest : dest + size] = bytes(m[start : start + size])
        dest += size


def fully_connected(L, m) -> None:
    n_in, n_out = L.in_channels, L.out_channels
    w = [[F(v) for v in row] for row in np.asarray(L.weights, np.float32).reshape(n_out, n_in)]
    with np.errstate(all="ignore"):
        for oc in range(n_out):
            s = F(0.0)
            if n_in % 8 == 0:
                for g in range(0, n_in, 8):
                    x = [rf(m, L.input + 4 * (g + j)) for j in range(8)]
                    t = fmaf_exact(x[0], w[oc][g], F(x[1] * w[oc][g + 1]))
                    s = F(t + s)
                    for j in range(2, 8):
                        s = fmaf_exact(x[j], w[oc][g + j], s)
            else:
                for ic in range(n_in):
                    s = fmaf_exact(rf(m, L.input + 4 * ic), w[oc][ic], s)
            wf(m, L.output + 4 * oc, s + F(L.bias[oc]))
        for oc in range(n_out):
            v = rf(m, L.output + 4 * oc)
            if L.act in (1, 2):
                v = v if v > 0 else F(0)
            if L.act == 2:
                v = v if v < 6 else F(6)
            wf(m, L.output + 4 * oc, v)


def tensorflow_flatten(L, m) -> None:
    dest = L.output
    for oy in range(L.height):
        for ox in range(L.width):
            for oc in range(L.channels):
                a = L.input + 4 * ((oc * L.height + oy) * L.width + ox)
                m[dest : dest + 4] = m[a : a + 4]
                dest += 4


def _resize(L, m, item: int) -> None:
    with np.errstate(all="ignore"):
        hs = F(F(L.in_height) / F(L.out_height))
        ws = F(F(L.in_width) / F(L.out_width))
        dest = L.output
        for oc in range(L.in_channels):
            channel_src = L.input + item * u32(L.in_width * L.in_height * oc)
            for oy in range(L.out_height):
                fy, limy = F(np.floor(F(F(oy) * hs))), F(u32(L.in_height - 1))
                in_y = fcvt_wu(fy if fy < limy else limy)
                y_origin = channel_src + item * u32(in_y * L.in_width)
                for ox in range(L.out_width):
                    fx, limx = F(np.floor(F(F(ox) * ws))), F(u32(L.in_width - 1))
                    in_x = fcvt_wu(fx if fx < limx else limx)
                    a = y_origin + item * in_x
                    m[dest : dest + item] = bytes(m[a : a + item])
                    dest += item


def resize_nearest_neighbor(L, m) -> None:
    _resize(L, m, 4)


def quantized_resize_nearest_neighbor(L, m) -> None:
    _resize(L, m, 1)


def logistic(L, m) -> None:
    with np.errstate(all="ignore"):
        for oc in range(L.channels):
            wf(m, L.output + 4 * oc, F(1.0) / F(F(1.0) + expf(F(-rf(m, L.input + 4 * oc)), True)))


# ---------------------------------------------------------------- KPU RAM (kpu.c 632-714, 1313-1362)
def kpu_upload_core(width, height, channels, m, src, kpu, kpu_addr) -> None:
    dest = kpu_addr * 64
    row_padding, row_group, row_length = _row_layout(width)
    for oc in range(channels):
        channel_origin = dest + oc // row_group * row_length * height * 64 + oc % row_group * row_padding
        for y in range(height):
            y_origin = channel_origin + y * row_length * 64
            for x in range(width):
                kpu[y_origin + x] = m[src]
                src += 1


def k210_add_padding(L, m, kpu) -> None:
    dest = L.kpu_line * 64
    src = L.input
    for oc in range(L.channels):
        kpu[dest + oc // 4 * 1 * 4 * 64 + oc % 4 * 16] = m[src]
        src += 1


def k210_remove_padding(L, m) -> None:
    for oc in range(L.channels):
        m[L.output + oc] = m[L.input + oc * 16]


def k210_upload(L, m, kpu) -> None:
    kpu_upload_core(L.width, L.height, L.channels, m, L.input, kpu, L.kpu_line)


def _row_layout(width: int) -> tuple[int, int, int]:
    """(row_padding, row_group, row_length) of kpu_upload_core."""
    if width <= 16:
        return 16, 4, 1
    if width <= 32:
        return 32, 2, 1
    return 64, 1, (width + 63) // 64


def kpu_download(kpu, line, c, h, w) -> np.ndarray:
    """Read a [c, h, w] map back from where kpu_upload_core puts it."""
    rp, rg, rl = _row_layout(w)
    out = np.zeros((c, h, w), np.uint8)
    for oc in range(c):
        base = line * 64 + oc // rg * rl * h * 64 + oc % rg * rp
        for y in range(h):
            for x in range(w):
                out[oc, y, x] = kpu[base + y * rl * 64 + x]
    return out


# ---------------------------------------------------------------- the KPU layer (spec §1.5)
def kround(t: int, s: int) -> int:
    if s == 0:
        return t
    q, f, h = t >> s, t & ((1 << s) - 1), 1 << (s - 1)
    sign = -1 if t < 0 else 1
    if f < h:
        return q
    if f > h:
        return q + sign
    return q + sign if q & 1 else q


POOLS = {0: (1, 1), 1: (2, 2), 2: (2, 2), 3: (4, 4), 4: (4, 4), 5: (2, 2), 6: (2, 2), 7: (4, 4), 8: (2, 1), 9: (2, 1)}


def kpu_layer(la, weights, bn, act, x: np.ndarray) -> np.ndarray:
    """conv + batch norm + activation + pool of one [IC, IH, IW] u8 map, as §1.5 states it."""
    ic, ih, iw = la.in_shape
    oc = la.o_ch_num + 1
    k = {0: 1, 1: 3}[la.kernel_type]
    pad = (k - 1) // 2
    dw = bool(la.depth_wise_layer)
    g_ic = 1 if dw else ic
    w = np.asarray(weights, np.int64).reshape(oc, g_ic, k, k)
    u = np.zeros((oc, ih, iw), np.int64)
    for o in range(oc):
        chans = [o] if dw else list(range(ic))
        sw = int(w[o].sum())
        mul, add, shift = int(bn.norm_mul[o]), int(bn.norm_add[o]), int(bn.norm_shift[o])
        for y in range(ih):
            for xx in range(iw):
                sxw = sx = 0
                for gi, c in enumerate(chans):
                    for ky in range(k):
                        for kx in range(k):
                            iy, ix = y + ky - pad, xx + kx - pad
                            v = int(x[c, iy, ix]) if 0 <= iy < ih and 0 <= ix < iw else int(la.pad_value)
                            sxw += v * int(w[o, gi, ky, kx])
                            sx += v
                c_ = sxw + ((la.arg_x * sx) >> la.shr_x) + ((la.arg_w * sw) >> la.shr_w) + la.arg_add * g_ic
                bv = ((c_ * mul) >> shift) + add
                j = max(i for i in range(16) if bv > int(act.x_start[i]))
                r = kround((bv - int(act.x_start[j])) * int(act.y_mul[j]), int(act.shift_number[j])) + int(act.add[j])
                u[o, y, xx] = min(max(r, 0), 255)
    size, stride = POOLS[la.pool_type]
    oh, ow = ih // stride, iw // stride
    out = np.zeros((oc, oh, ow), np.int64)
    for o in range(oc):
        for y in range(oh):
            for xx in range(ow):
                y0, x0 = y * stride, xx * stride
                if la.pool_type == 0:
                    v = u[o, y, xx]
                elif la.pool_type in (5, 7):
                    v = u[o, y0, x0]
                elif la.pool_type == 6:
                    v = u[o, y0, x0 + 1]
                elif la.pool_type == 8:
                    v = sum(u[o, min(y0 + a, ih - 1), min(x0 + b, iw - 1)] for a in range(2) for b in range(2)) // 4
                elif la.pool_type == 9:
                    v = max(u[o, y0 + a, x0 + b] if y0 + a < ih and x0 + b < iw else 0 for a in range(2) for b in range(2))
                else:
                    win = u[o, y0 : y0 + size, x0 : x0 + size]
                    v = win.max() if la.pool_type in (1, 3) else win.sum() // (size * size)
                out[o, y, xx] = v
    return out.astype(np.uint8)


def k210_conv(L, m, kpu) -> None:
    la = L.layer_argument
    ic, ih, iw = la.in_shape
    x = kpu_download(kpu, la.image_src_addr, ic, ih, iw)
    out = kpu_layer(la, L.weights, L.bn, L.activation, x)
    oc, oh, ow = out.shape
    flat = out.reshape(-1)
    scratch = bytearray(flat.tobytes())
    kpu_upload_core(ow, oh, oc, scratch, 0, kpu, la.image_dst_addr)
    if L.flags & 1:
        m[L.main_mem_out : L.main_mem_out + flat.size] = flat.tobytes()


# layer type -> transcription; the ones taking KPU RAM too are listed in NEEDS_KPU
TRANSCRIPTIONS = {
    1: add, 2: quantized_add, 5: global_average_pool2d, 8: quantized_max_pool2d, 9: average_pool2d, 11: quantize,
    12: dequantize, 13: requantize, 14: l2_normalization, 15: softmax, 16: concat, 17: concat, 18: fully_connected,
    20: tensorflow_flatten, 22: resize_nearest_neighbor, 23: quantized_resize_nearest_neighbor,
    24: channelwise_dequantize, 25: logistic, 10240: k210_conv, 10241: k210_add_padding, 10242: k210_remove_padding,
    10243: k210_upload,
}
NEEDS_KPU = {10240, 10241, 10243}
