"""THE one definition of the K210 KPU bitfields (runtime spec §C.1, §C.2; compiler spec §10.5).

* :class:`LayerArgs`: the 12 × u64 layer-argument registers, every named field of C.1 including the
  reserved ones (so garbage round-trips bit for bit). Fields the PC emulator reads as signed
  (``arg_w``, ``arg_x`` S24, ``arg_add`` S40) hold signed values; all others are unsigned.
* Batch-norm words (:class:`BatchNorm`): norm_mul S24, norm_add S32, norm_shift U4, bits 60-63 kept.
* The 144-byte activation table (:class:`ActivationTable`): 16 segment words (shift_number U8,
  y_mul S16, x_start S36, bits 60-63 kept) and 16 add bytes at table offsets 128+j.
* :func:`ncc_layer_args`: the register values ncc's codegen writes for a layer (compiler §10.5).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from .layout import row_layout

MASK64 = (1 << 64) - 1


def sign_extend(v: int, bits: int) -> int:
    """Interpret the low ``bits`` bits of ``v`` as two's complement."""
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def sign_extend_array(v: np.ndarray, bits: int) -> np.ndarray:
    """Vectorised :func:`sign_extend` of a u64/i64 array -> i64."""
    v = np.asarray(v).astype(np.uint64) & np.uint64((1 << bits) - 1)
    s = v.astype(np.int64)
    return np.where(s >= (1 << (bits - 1)), s - (1 << bits), s).astype(np.int64)


# (name, register, lowest bit, width, signed) -- the table of C.1, every bit of every register once.
FIELDS: tuple[tuple[str, int, int, int, bool], ...] = (
    # 0 interrupt_enabe
    ("int_en", 0, 0, 1, False), ("ram_flag", 0, 1, 1, False), ("full_add", 0, 2, 1, False),
    ("depth_wise_layer", 0, 3, 1, False), ("interrupt_reserved", 0, 4, 60, False),
    # 1 image_addr
    ("image_src_addr", 1, 0, 15, False), ("image_addr_reserved0", 1, 15, 17, False),
    ("image_dst_addr", 1, 32, 15, False), ("image_addr_reserved1", 1, 47, 17, False),
    # 2 image_channel_num
    ("i_ch_num", 2, 0, 10, False), ("channel_reserved0", 2, 10, 22, False),
    ("o_ch_num", 2, 32, 10, False), ("channel_reserved1", 2, 42, 6, False),
    ("o_ch_num_coef", 2, 48, 10, False), ("channel_reserved2", 2, 58, 6, False),
    # 3 image_size
    ("i_row_wid", 3, 0, 10, False), ("i_col_high", 3, 10, 9, False), ("size_reserved0", 3, 19, 13, False),
    ("o_row_wid", 3, 32, 10, False), ("o_col_high", 3, 42, 9, False), ("size_reserved1", 3, 51, 13, False),
    # 4 kernel_pool_type_cfg
    ("kernel_type", 4, 0, 3, False), ("pad_type", 4, 3, 1, False), ("pool_type", 4, 4, 4, False),
    ("first_stride", 4, 8, 1, False), ("bypass_conv", 4, 9, 1, False), ("load_para", 4, 10, 1, False),
    ("pool_reserved0", 4, 11, 5, False), ("dma_burst_size", 4, 16, 8, False), ("pad_value", 4, 24, 8, False),
    ("bwsx_base_addr", 4, 32, 32, False),
    # 5 kernel_load_cfg
    ("load_coor", 5, 0, 1, False), ("load_time", 5, 1, 6, False), ("load_reserved0", 5, 7, 8, False),
    ("para_size", 5, 15, 17, False), ("para_start_addr", 5, 32, 32, False),
    # 6 kernel_offset
    ("coef_column_offset", 6, 0, 4, False), ("coef_row_offset", 6, 4, 12, False),
    ("offset_reserved0", 6, 16, 48, False),
    # 7 kernel_calc_type_cfg
    ("channel_switch_addr", 7, 0, 15, False), ("calc_reserved", 7, 15, 1, False),
    ("row_switch_addr", 7, 16, 4, False), ("coef_size", 7, 20, 8, False), ("coef_group", 7, 28, 3, False),
    ("load_act", 7, 31, 1, False), ("active_addr", 7, 32, 32, False),
    # 8 write_back_cfg
    ("wb_channel_switch_addr", 8, 0, 15, False), ("wb_reserved0", 8, 15, 1, False),
    ("wb_row_switch_addr", 8, 16, 4, False), ("wb_group", 8, 20, 3, False), ("wb_reserved1", 8, 23, 41, False),
    # 9 conv_value
    ("shr_w", 9, 0, 4, False), ("shr_x", 9, 4, 4, False), ("arg_w", 9, 8, 24, True),
    ("arg_x", 9, 32, 24, True), ("conv_reserved0", 9, 56, 8, False),
    # 10 conv_value2
    ("arg_add", 10, 0, 40, True), ("conv2_reserved", 10, 40, 24, False),
    # 11 dma_parameter
    ("send_data_out", 11, 0, 1, False), ("dma_reserved", 11, 1, 15, False),
    ("channel_byte_num", 11, 16, 16, False), ("dma_total_byte", 11, 32, 32, False),
)
FIELD_INDEX = {f[0]: f for f in FIELDS}
N_REGS = 12


@dataclass
class LayerArgs:
    """The 96-byte KPU layer argument (runtime spec §C.1). Fields as named there; reserved bits
    have their own fields so any 96 bytes round-trip. Unset fields are 0."""

    int_en: int = 0
    ram_flag: int = 0
    full_add: int = 0
    depth_wise_layer: int = 0
    interrupt_reserved: int = 0
    image_src_addr: int = 0
    image_addr_reserved0: int = 0
    image_dst_addr: int = 0
    image_addr_reserved1: int = 0
    i_ch_num: int = 0
    channel_reserved0: int = 0
    o_ch_num: int = 0
    channel_reserved1: int = 0
    o_ch_num_coef: int = 0
    channel_reserved2: int = 0
    i_row_wid: int = 0
    i_col_high: int = 0
    size_reserved0: int = 0
    o_row_wid: int = 0
    o_col_high: int = 0
    size_reserved1: int = 0
    kernel_type: int = 0
    pad_type: int = 0
    pool_type: int = 0
    first_stride: int = 0
    bypass_conv: int = 0
    load_para: int = 0
    pool_reserved0: int = 0
    dma_burst_size: int = 0
    pad_value: int = 0
    bwsx_base_addr: int = 0
    load_coor: int = 0
    load_time: int = 0
    load_reserved0: int = 0
    para_size: int = 0
    para_start_addr: int = 0
    coef_column_offset: int = 0
    coef_row_offset: int = 0
    offset_reserved0: int = 0
    channel_switch_addr: int = 0
    calc_reserved: int = 0
    row_switch_addr: int = 0
    coef_size: int = 0
    coef_group: int = 0
    load_act: int = 0
    active_addr: int = 0
    wb_channel_switch_addr: int = 0
    wb_reserved0: int = 0
    wb_row_switch_addr: int = 0
    wb_group: int = 0
    wb_reserved1: int = 0
    shr_w: int = 0
    shr_x: int = 0
    arg_w: int = 0
    arg_x: int = 0
    conv_reserved0: int = 0
    arg_add: int = 0
    conv2_reserved: int = 0
    send_data_out: int = 0
    dma_reserved: int = 0
    channel_byte_num: int = 0
    dma_total_byte: int = 0

    SIZE = 96

    # ---------------------------------------------------------------- bits
    def pack(self) -> list[int]:
        """The 12 u64 register words. Values wider than their field are masked (signed fields in
        two's complement)."""
        words = [0] * N_REGS
        for name, reg, lo, width, _signed in FIELDS:
            words[reg] |= (int(getattr(self, name)) & ((1 << width) - 1)) << lo
        return words

    @classmethod
    def unpack(cls, words) -> "LayerArgs":
        words = [int(w) & MASK64 for w in words]
        if len(words) != N_REGS:
            raise ValueError(f"a KPU layer argument has {N_REGS} words, got {len(words)}")
        vals = {}
        for name, reg, lo, width, signed in FIELDS:
            v = (words[reg] >> lo) & ((1 << width) - 1)
            vals[name] = sign_extend(v, width) if signed else v
        return cls(**vals)

    def to_bytes(self) -> bytes:
        return np.array(self.pack(), dtype="<u8").tobytes()

    @classmethod
    def from_bytes(cls, b: bytes) -> "LayerArgs":
        return cls.unpack(np.frombuffer(bytes(b), dtype="<u8", count=N_REGS).tolist())

    # ---------------------------------------------------------------- decoded view (C.5)
    @property
    def in_shape(self) -> tuple[int, int, int]:
        """(IC, IH, IW)."""
        return self.i_ch_num + 1, self.i_col_high + 1, self.i_row_wid + 1

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """(OC, OH, OW), the pooled output size the registers say."""
        return self.o_ch_num + 1, self.o_col_high + 1, self.o_row_wid + 1

    @property
    def kernel_size(self) -> int | None:
        """1 or 3; None for an invalid kernel_type (the kernel throws ``Invalid kpu filter``)."""
        return {0: 1, 1: 3}.get(self.kernel_type)


def _check_fields_cover_registers() -> None:
    names = [f.name for f in fields(LayerArgs)]
    assert names == [f[0] for f in FIELDS], "LayerArgs fields and FIELDS table disagree"
    for reg in range(N_REGS):
        bits = 0
        for _n, r, lo, width, _s in FIELDS:
            if r == reg:
                m = ((1 << width) - 1) << lo
                assert not bits & m, f"overlap in register {reg}"
                bits |= m
        assert bits == MASK64, f"register {reg} not fully covered"


_check_fields_cover_registers()


# ---------------------------------------------------------------------------- batch norm (C.2)
@dataclass
class BatchNorm:
    """Per-output-channel batch-norm words: ``Bv = asr(C * norm_mul, norm_shift) + norm_add``.
    Arrays of length OC; ``unused`` keeps bits 60-63."""

    norm_mul: np.ndarray  # S24
    norm_add: np.ndarray  # S32
    norm_shift: np.ndarray  # U4
    unused: np.ndarray = None  # U4, bits 60..63

    def __post_init__(self):
        self.norm_mul = np.asarray(self.norm_mul, dtype=np.int64).reshape(-1)
        self.norm_add = np.asarray(self.norm_add, dtype=np.int64).reshape(-1)
        self.norm_shift = np.asarray(self.norm_shift, dtype=np.int64).reshape(-1)
        n = len(self.norm_mul)
        self.unused = np.zeros(n, np.int64) if self.unused is None else np.asarray(self.unused, np.int64).reshape(-1)
        if not (len(self.norm_add) == len(self.norm_shift) == len(self.unused) == n):
            raise ValueError("batch-norm arrays must all have one entry per output channel")

    def __len__(self) -> int:
        return len(self.norm_mul)

    def pack(self) -> np.ndarray:
        """u64 words, one per channel."""
        w = (self.norm_mul.astype(np.uint64) & np.uint64(0xFFFFFF))
        w |= (self.norm_add.astype(np.uint64) & np.uint64(0xFFFFFFFF)) << np.uint64(24)
        w |= (self.norm_shift.astype(np.uint64) & np.uint64(0xF)) << np.uint64(56)
        w |= (self.unused.astype(np.uint64) & np.uint64(0xF)) << np.uint64(60)
        return w

    @classmethod
    def unpack(cls, words) -> "BatchNorm":
        w = np.asarray(words, dtype=np.uint64).reshape(-1)
        return cls(
            norm_mul=sign_extend_array(w, 24),
            norm_add=sign_extend_array(w >> np.uint64(24), 32),
            norm_shift=((w >> np.uint64(56)) & np.uint64(0xF)).astype(np.int64),
            unused=(w >> np.uint64(60)).astype(np.int64),
        )

    def __eq__(self, other) -> bool:
        return isinstance(other, BatchNorm) and np.array_equal(self.pack(), other.pack())


# ---------------------------------------------------------------------------- activation (C.2)
N_SEGMENTS = 16
ACT_TABLE_SIZE = 144


@dataclass
class ActivationTable:
    """The 16-segment piecewise-linear activation. Segment j: for ``Bv > x_start[j]`` (largest j),
    ``KROUND((Bv - x_start[j]) * y_mul[j], shift_number[j]) + add[j]``. ``unused`` keeps bits 60-63
    of each segment word (garbage in release-built ncc files)."""

    shift_number: np.ndarray  # U8
    y_mul: np.ndarray  # S16
    x_start: np.ndarray  # S36
    add: np.ndarray  # u8, table byte 128 + j
    unused: np.ndarray = None

    def __post_init__(self):
        self.shift_number = np.asarray(self.shift_number, dtype=np.int64).reshape(-1)
        self.y_mul = np.asarray(self.y_mul, dtype=np.int64).reshape(-1)
        self.x_start = np.asarray(self.x_start, dtype=np.int64).reshape(-1)
        self.add = np.asarray(self.add, dtype=np.int64).reshape(-1)
        self.unused = (np.zeros(N_SEGMENTS, np.int64) if self.unused is None
                       else np.asarray(self.unused, np.int64).reshape(-1))
        for a in (self.shift_number, self.y_mul, self.x_start, self.add, self.unused):
            if len(a) != N_SEGMENTS:
                raise ValueError(f"an activation table has {N_SEGMENTS} segments, got {len(a)}")

    def pack_words(self) -> np.ndarray:
        w = self.shift_number.astype(np.uint64) & np.uint64(0xFF)
        w |= (self.y_mul.astype(np.uint64) & np.uint64(0xFFFF)) << np.uint64(8)
        w |= (self.x_start.astype(np.uint64) & np.uint64((1 << 36) - 1)) << np.uint64(24)
        w |= (self.unused.astype(np.uint64) & np.uint64(0xF)) << np.uint64(60)
        return w

    @classmethod
    def unpack_words(cls, words, add) -> "ActivationTable":
        w = np.asarray(words, dtype=np.uint64).reshape(-1)
        return cls(
            shift_number=(w & np.uint64(0xFF)).astype(np.int64),
            y_mul=sign_extend_array(w >> np.uint64(8), 16),
            x_start=sign_extend_array(w >> np.uint64(24), 36),
            add=np.asarray(add, dtype=np.int64),
            unused=(w >> np.uint64(60)).astype(np.int64),
        )

    def to_bytes(self) -> bytes:
        return self.pack_words().astype("<u8").tobytes() + (self.add & 0xFF).astype(np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, b: bytes) -> "ActivationTable":
        b = bytes(b)
        if len(b) != ACT_TABLE_SIZE:
            raise ValueError(f"an activation table is {ACT_TABLE_SIZE} bytes, got {len(b)}")
        words = np.frombuffer(b, dtype="<u8", count=N_SEGMENTS)
        add = np.frombuffer(b, dtype=np.uint8, count=N_SEGMENTS, offset=128)
        return cls.unpack_words(words, add)

    def __eq__(self, other) -> bool:
        return isinstance(other, ActivationTable) and self.to_bytes() == other.to_bytes()

    def value(self, bv: int) -> int | None:
        """The activation output for one batch-norm value (C.5 c), exact Python ints; None when no
        segment matches or the segment's shift is >= 32 (undefined in ncc)."""
        for j in range(N_SEGMENTS - 1, -1, -1):
            if bv > int(self.x_start[j]):
                s = int(self.shift_number[j])
                if s >= 32:
                    return None
                t = (bv - int(self.x_start[j])) * int(self.y_mul[j])
                return min(max(kround_int(t, s) + int(self.add[j]), 0), 255)
        return None

    def is_monotone(self) -> bool:
        """True when the activation is a non-decreasing function of the batch-norm value: sorted
        x_start, y_mul >= 0 and shift < 32 in every reachable segment, no downward step at a segment
        boundary. Then a max pool commutes with it (the kernel pools before activating)."""
        xs = [int(v) for v in self.x_start]
        if any(a > b for a, b in zip(xs, xs[1:])):
            return False
        live = [j for j in range(N_SEGMENTS) if j == N_SEGMENTS - 1 or xs[j] < xs[j + 1]]
        if any(int(self.y_mul[j]) < 0 or int(self.shift_number[j]) >= 32 for j in live):
            return False
        for a, b in zip(live, live[1:]):
            # last value of segment a (bv = xs[b]) vs first value of segment b (bv = xs[b] + 1)
            if self.value(xs[b]) > self.value(xs[b] + 1):
                return False
        return True


def kround_int(t: int, s: int) -> int:
    """KROUND (C.5) on Python ints, with ncc's sign quirk (KROUND(-1, 2) = -2)."""
    if s == 0:
        return t
    q, f, h = t >> s, t & ((1 << s) - 1), 1 << (s - 1)
    if f > h or (f == h and q & 1):
        return q + (-1 if t < 0 else 1)
    return q


# ---------------------------------------------------------------------------- ncc's codegen (compiler §10.5)
KPU_WEIGHT_LOAD_BYTES = 30 * 1024


def ncc_layer_args(*, in_addr: int, out_addr: int, in_shape, out_shape, kernel_size: int, depthwise: bool,
                   pool_type: int, pad_value: int, arg_x: int, shift_x: int, arg_w: int, shift_w: int,
                   arg_add: int, main_output: bool) -> LayerArgs:
    """The layer argument exactly as ncc v0.2's codegen fills it (compiler spec §10.5).
    ``in_shape`` = (IC, IH, IW), ``out_shape`` = (OC, OH, OW) after pooling; addresses are KPU RAM
    byte addresses (multiples of 64). The three gap fields are left 0: :class:`KPUConv2D` fills them
    when it writes the body."""
    ic, ih, iw = (int(v) for v in in_shape)
    oc, oh, ow = (int(v) for v in out_shape)
    k = int(kernel_size)
    if depthwise:
        oc_one_time, load_times, para_size = oc, 1, oc * k * k
    else:
        per_oc = k * k * ic
        oc_one_time = min(oc, KPU_WEIGHT_LOAD_BYTES // per_oc)
        para_size = per_oc * oc_one_time
        load_times = -(-oc // oc_one_time)
    g_in, l_in, _ = row_layout(iw)
    g_out, l_out, _ = row_layout(ow)
    return LayerArgs(
        depth_wise_layer=int(bool(depthwise)),
        image_src_addr=in_addr // 64, image_dst_addr=out_addr // 64,
        i_ch_num=ic - 1, o_ch_num=oc - 1, o_ch_num_coef=oc_one_time - 1,
        i_row_wid=iw - 1, i_col_high=ih - 1, o_row_wid=ow - 1, o_col_high=oh - 1,
        kernel_type={1: 0, 3: 1}[k], pool_type=pool_type, load_para=1, dma_burst_size=15,
        pad_value=pad_value,
        load_coor=1, load_time=load_times - 1, para_size=para_size,
        channel_switch_addr=l_in * ih, row_switch_addr=l_in, coef_group=g_in, load_act=1,
        wb_channel_switch_addr=l_out * oh, wb_row_switch_addr=l_out, wb_group=g_out,
        shr_w=shift_w, shr_x=shift_x, arg_w=arg_w, arg_x=arg_x, arg_add=arg_add,
        send_data_out=int(bool(main_output)), channel_byte_num=ow * oh - 1, dma_total_byte=ow * oh * oc - 1,
    )
