"""KPUConv2D (0x2002): one K210 KPU layer -- convolution, batch norm, piecewise-linear activation,
pooling -- emulated bit for bit as ``ncc infer`` does (runtime spec §C.4 encoding, §C.5 execution,
§C.6 pools, §B.26 errors). The numba kernels are in :mod:`kmodelpy.kpu.kernels`."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import FormatError, KernelError
from ..format.binio import DT_UINT8, MEM_KPU, MEM_MAIN, MemoryRange, Reader, Writer
from ..kpu.layer_args import ACT_TABLE_SIZE, ActivationTable, BatchNorm, LayerArgs
from ..kpu.layout import kpu_bytes, kpu_download, kpu_upload
from ..kpu.kernels import (CONV3_GROUP, DW_FLAT_MAX_W, ERR_NO_SEGMENT, ERR_SHIFT, MAX_F32_TAPS, POOL_STRIDE, SEG_START,
                           channel_table, gemm_finish, gemm_input, im2col_rows, kpu_layer, layer_programs,
                           ram_download, ram_upload, segment_table, select_input, work_arrays)
from .base import Op, register

ALIGN = 256  # BN table, activation table and weights start at multiples of 256 (absolute file offset)
FIXED_SIZE = 120  # main_mem_output, batches, reserved0, layer argument


def _as_bn(bn) -> BatchNorm:
    if isinstance(bn, BatchNorm):
        return bn
    mul, shift, add = bn
    return BatchNorm(norm_mul=mul, norm_add=add, norm_shift=shift)


def _as_act(act) -> ActivationTable:
    if isinstance(act, ActivationTable):
        return act
    shift, mul, x_start, add = act
    return ActivationTable(shift_number=shift, y_mul=mul, x_start=x_start, add=add)


class _Prepared:
    """Per-layer tables decoded once: centered float32 weights, and the per-channel table (batch
    norm, weight sums) and segment table of the kernels."""

    __slots__ = ("wf", "gemm", "bnt", "seg", "sorted_starts", "min_start", "k", "dw", "monotone", "shifts_ok")

    def __init__(self, weights, k, dw, ic, oc, bn: BatchNorm, act: ActivationTable):
        taps = k * k * (1 if dw else ic)
        flat = np.asarray(weights, dtype=np.uint8).reshape(-1)
        if flat.size < oc * taps:
            raise KernelError(f"the KPU layer needs {oc * taps} weights (OC {oc} x {taps} taps), got {flat.size}")
        w = flat[: oc * taps].reshape(oc, taps).astype(np.int32) - 128
        self.wf = np.ascontiguousarray(w, dtype=np.float32)  # exact: |w'| <= 128
        # non-depthwise layers run as one float32 GEMM (BLAS) unless a 3x3 over so few input
        # channels that the direct loop is faster (measured: the first layer of an RGB model)
        self.gemm = (not dw) and (k == 1 or ic >= 8)
        self.k, self.dw = k, dw
        self.bnt = channel_table(bn.norm_mul, bn.norm_shift, bn.norm_add, w.sum(axis=1, dtype=np.int64))
        self.seg = segment_table(act.shift_number, act.y_mul, act.x_start, act.add)
        starts = self.seg[SEG_START]
        self.sorted_starts = bool((starts[1:] >= starts[:-1]).all())
        self.min_start = int(starts.min())
        self.monotone = act.is_monotone()
        self.shifts_ok = bool((act.shift_number < 32).all())

    def always_defined(self, ax, sx, aw, sw, aadd) -> bool:
        """True when no input whatever can reach ncc's undefined activation cases: every segment
        shift < 32, and in every channel Bv stays above the lowest x_start for C over all input
        bytes (Sxw in [0, 255·Sw], Sx in [0, 255·T]; exact integers). A select pool may then
        skip the positions it drops without hiding an error."""
        if not self.shifts_ok:
            return False
        oc, taps = self.wf.shape
        gic = taps // (self.k * self.k)
        f_hi = (ax * 255 * taps) >> sx
        for o in range(oc):
            mul, bsh, badd, swc = (int(v) for v in self.bnt[:, o])
            s_w = swc + 128 * taps
            const = ((aw * s_w) >> sw) + aadd * gic
            ends = (min(0, f_hi) + const, 255 * s_w + max(0, f_hi) + const)
            if min(((c * mul) >> bsh) + badd for c in ends) <= self.min_start:
                return False
        return True

    def pool_first(self, pool_type) -> bool:
        """Pooling C before the activation is exact for select pools and, with a monotone
        activation, for max pools; it saves activating the dropped values."""
        return (pool_type in SELECT_POOLS and self.shifts_ok) or (pool_type in (1, 3, 9) and self.monotone)


IM2COL_BYTES = 16 << 20
SELECT_POOLS = (5, 6, 7)  # left_top_2, right_top_2, left_top_4: one kept position per window
_NO_RAM = np.empty(0, np.uint8)


class _Plan:
    """A layer's run bound once for its shapes and arguments: the path, the kernels' arguments and
    the work arrays, so a run is a few numba calls and BLAS products and nothing else. Paths:

    * ``select``: a select pool keeps one conv position per window and no input can reach an
      undefined activation case (:meth:`_Prepared.always_defined`): one GEMM over the im2col
      columns of the kept positions only, then batch norm and activation on them;
    * ``gemm``: non-depthwise layers, D = W'·X as one BLAS product (a 3×3 layer's im2col matrix
      built IM2COL_BYTES at a time), then :func:`gemm_finish` for every channel;
    * ``direct``: depthwise and narrow 3×3 layers, all in :func:`kpu_layer`."""

    def __init__(self, pr: _Prepared, in4, out4, zp, ax, sx, aw, sw, aadd, pool_type):
        n_b, ic, ih, iw = (int(v) for v in in4)
        oc, taps = pr.wf.shape
        k, pad = pr.k, (pr.k - 1) // 2
        self.pr, self.n_b = pr, n_b
        self.x = np.empty((n_b, ic, ih, iw), np.uint8)  # the downloaded input, or its shape
        self.out = np.empty(tuple(int(v) for v in out4), np.uint8)
        pf = pr.pool_first(pool_type)
        s = POOL_STRIDE[pool_type]
        gh, gw = ih // s, iw // s  # the kept positions of a select pool
        if (pool_type in SELECT_POOLS and not pr.dw and 4 * taps * gh * gw <= IM2COL_BYTES
                and pr.always_defined(ax, sx, aw, sw, aadd)):
            self.mode = "select"
            fin_pool, fin_pf = 0, False
        else:
            self.mode = "gemm" if pr.gemm else "direct"
            gh, gw, fin_pool, fin_pf = ih, iw, pool_type, pf
        # Σx' folded into the weights where exact: D + (128 + ax)·Σx' = Σ x'·(w' + 128 + ax), every
        # partial sum an integer below 128·Σ|w' + 128 + ax| <= 2^24 (then xm = 0 tells the kernels)
        wk = pr.wf + np.float32(128 + ax)
        fold = sx == 0 and 128 * float(np.abs(wk).sum(axis=1, dtype=np.float64).max(initial=0)) < (1 << 24)
        self.wk = wk if fold else pr.wf
        self.folded = fold
        xm = 0 if fold else 128 + ax
        # every channel's activation program, from its exact C bounds over all inputs (rows not ok
        # are classified per run)
        self.prog = prog = layer_programs(pr.wf, 1 if pr.dw else ic, ax, sx, aw, sw, aadd, pr.bnt, pr.seg,
                                          pr.sorted_starts, pr.min_start)
        opix = int(out4[2]) * int(out4[3])
        xp = np.empty((ic, ih + 2 * pad, iw + 2 * pad), np.float32)
        if self.mode == "direct":
            nflat = ih * xp.shape[2] if pr.dw and k == 3 and iw <= DW_FLAT_MAX_W else 0  # flat depthwise form
            self.direct_args = (self.wk, pr.dw, k, zp, ax, xm, sx, aw, sw, aadd, pr.bnt, pr.seg, prog, pr.sorted_starts,
                                pr.min_start, pool_type, pf, self.out, xp, np.empty(ih * iw, np.int32),
                                np.empty(ih * iw if sx != 0 else 0, np.int64),
                                np.empty(xp.shape[1] * xp.shape[2], np.float32),
                                *work_arrays(ih * iw * (1 if pr.dw or k != 3 else CONV3_GROUP), ih * iw, opix,
                                             nflat))
            return
        self.xp = xp
        self.sxc = np.empty(gh * gw, np.int32)
        self.axsx = np.empty(gh * gw if sx != 0 else 0, np.int64)
        chunked = taps > MAX_F32_TAPS  # then D is summed in int32 over float32 chunks
        self.d = np.empty((oc, gh * gw), np.int32 if chunked else np.float32)
        self.part = np.empty((oc, gh * gw), np.float32) if chunked else None
        if self.mode == "select":
            self.cols = np.empty((taps, gh * gw), np.float32)
            self.in_args = (k, zp, ax, xm, sx, s, 1 if pool_type == 6 else 0, gh, gw, xp, self.cols,
                            np.empty(gh * gw, np.float32), self.sxc, self.axsx)
        else:
            self.in_args = (k, zp, ax, xm, sx, xp, np.empty(xp.shape[1] * xp.shape[2], np.float32), self.sxc, self.axsx)
            self.rows = max(1, min(ih, IM2COL_BYTES // (4 * taps * iw))) if k == 3 else ih
            self.cols = np.empty(taps * self.rows * iw, np.float32) if k == 3 else None  # a block, flat
        self.fin_args = (ic, gh, gw, k, ax, xm, sx, aw, sw, aadd, pr.bnt, pr.seg, prog, pr.sorted_starts, pr.min_start,
                         fin_pool, fin_pf, self.out, *work_arrays(0, gh * gw, opix, 0))

    def execute(self, x, ram=None, src=0) -> int:
        """Run into ``self.out`` u8 [N, OC, OH, OW]; returns the kernels' error code. The input is
        ``x`` u8 [N, IC, IH, IW], or, with ``x`` None, the tensor at byte ``src`` of KPU RAM
        ``ram`` (read straight into the padded plane for one batch; all batches downloaded
        first otherwise, as ncc does before writing any)."""
        ram_arr, ram_src = _NO_RAM, -1
        if x is None:
            x = self.x
            if self.n_b > 1:
                ram_download(ram, src, x)
            else:
                ram_arr, ram_src = ram, src
        if self.mode == "direct":
            return kpu_layer(x, ram_arr, ram_src, *self.direct_args)
        err = 0
        for n in range(self.n_b):
            if self.mode == "select":
                select_input(x, n, ram_arr, ram_src, *self.in_args)
                self._matmul(self.cols, self.d)
            else:
                gemm_input(x, n, ram_arr, ram_src, *self.in_args)
                self._gemm_d()
            e = gemm_finish(self.d, self.sxc, self.axsx, n, *self.fin_args)
            if e != 0:
                err = e
        return err

    def _gemm_d(self) -> None:
        """D = W'·X of a GEMM layer from its padded planes; a 3×3 layer's im2col matrix a block of
        output rows at a time."""
        pr, xp, d = self.pr, self.xp, self.d
        taps = pr.wf.shape[1]
        if pr.k == 1:
            self._matmul(xp.reshape(taps, -1), d)
            return
        ih, iw = xp.shape[1] - 2, xp.shape[2] - 2
        for y0 in range(0, ih, self.rows):
            y1 = min(ih, y0 + self.rows)
            cols = self.cols[: taps * (y1 - y0) * iw].reshape(taps, (y1 - y0) * iw)
            im2col_rows(xp, 3, y0, y1, cols)
            self._matmul(cols, d if self.rows == ih else d[:, y0 * iw : y1 * iw])

    def _matmul(self, x, d) -> None:
        """d = W'·x, exact: one float32 BLAS product when the reduction has at most MAX_F32_TAPS
        terms, else int32 sums of float32 products over chunks of that many (``d`` is int32)."""
        w = self.wk
        taps = w.shape[1]
        if taps <= MAX_F32_TAPS:
            np.matmul(w, x, out=d)
            return
        part = self.part[:, : d.shape[1]]
        d[...] = 0
        for a in range(0, taps, MAX_F32_TAPS):
            np.matmul(w[:, a : a + MAX_F32_TAPS], x[a : a + MAX_F32_TAPS], out=part)
            np.add(d, part, out=d, casting="unsafe")


def _run_prepared(x, pr: _Prepared, pool_type, pad_value, arg_x, shift_x, arg_w, shift_w, arg_add):
    n, ic, ih, iw = x.shape
    s = POOL_STRIDE[pool_type]
    plan = _Plan(pr, x.shape, (n, pr.wf.shape[0], ih // s, iw // s), int(pad_value), int(arg_x), int(shift_x),
                 int(arg_w), int(shift_w), int(arg_add), int(pool_type))
    _check_err(plan.execute(np.ascontiguousarray(x, dtype=np.uint8)))
    return plan.out


def _check_err(err) -> None:
    if err == ERR_NO_SEGMENT:
        raise KernelError("a batch-norm value is <= every activation x_start (no segment matches; ncc's "
                          "result is undefined here); fix the activation table's segment 0")
    if err == ERR_SHIFT:
        raise KernelError("an activation segment with shift_number >= 32 is used (undefined in ncc); "
                          "fix the activation table")


def kpu_conv2d(x_nchw_u8, weights_u8, bn, act, kernel_size, depthwise, pool_type, pad_value,
               arg_x, shift_x, arg_w, shift_w, arg_add) -> np.ndarray:
    """Array-level KPU layer (C.5 steps 2a-2d for every batch): ``x`` u8 [N, IC, H, W];
    ``weights`` u8 OIHW (``OC×K×K`` if depthwise); ``bn`` a BatchNorm or (mul, shift, add);
    ``act`` an ActivationTable or (shift_number, y_mul, x_start, add). Returns the pooled u8
    [N, OC, H/stride, W/stride]."""
    x = np.asarray(x_nchw_u8, dtype=np.uint8)
    bn, act = _as_bn(bn), _as_act(act)
    if kernel_size not in (1, 3) or not 0 <= pool_type < 10:
        raise KernelError("Invalid kpu filter")
    oc = len(bn)
    if depthwise and x.shape[1] < oc:
        raise KernelError(f"a depthwise KPU layer reads input channel o for output o, but it has {x.shape[1]} "
                          f"input and {oc} output channels (ncc reads past its buffer)")
    pr = _Prepared(weights_u8, kernel_size, bool(depthwise), x.shape[1], oc, bn, act)
    return _run_prepared(x, pr, pool_type, pad_value, arg_x, shift_x, arg_w, shift_w, arg_add)


@register
@dataclass(eq=False)
class KPUConv2D(Op):
    """Body (C.4): MR main_mem_output, i32 batches, i32 reserved0, 96-byte layer argument, gap,
    OC batch-norm words, gap, 144-byte activation table, gap, weights. The gap lengths live in
    ``bwsx_base_addr`` / ``active_addr`` / ``para_start_addr``. ``*_gap`` hold gap bytes read from a
    file when writing them back needs them (non-zero bytes or not 256-aligned); ``None`` means
    "compute the gap so the block starts at a multiple of 256" when writing.

    ``run`` caches decoded tables and work arrays on the instance: call :meth:`invalidate` after
    mutating fields."""

    opcode = 0x2002
    name = "KPUConv2D"

    main_mem_output: MemoryRange = field(default_factory=MemoryRange)
    batches: int = 1
    reserved0: int = 0
    layer_argument: LayerArgs = field(default_factory=LayerArgs)
    bn: BatchNorm = None
    activation: ActivationTable = None
    weights: np.ndarray = None
    bn_gap: bytes | None = None
    act_gap: bytes | None = None
    weights_gap: bytes | None = None

    # ---------------------------------------------------------------- encoding
    @property
    def kernel_size(self) -> int | None:
        return self.layer_argument.kernel_size

    def weight_count(self) -> int | None:
        la = self.layer_argument
        k = la.kernel_size
        if k is None:
            return None
        ic, _, _ = la.in_shape
        oc, _, _ = la.out_shape
        return oc * k * k * (1 if la.depth_wise_layer else ic)

    @classmethod
    def read(cls, r: Reader) -> "KPUConv2D":
        mmo = MemoryRange.read(r, "main_mem_output")
        batches = r.i32("batches")
        reserved0 = r.i32("reserved0")
        la = LayerArgs.from_bytes(r.raw(LayerArgs.SIZE, "layer argument"))
        oc = la.o_ch_num + 1

        def gap(n, name):
            b = r.raw(n, name)
            return None if not any(b) and n == (-(r.pos - n)) % ALIGN else b

        g1 = gap(la.bwsx_base_addr, "gap before the batch-norm table (bwsx_base_addr)")
        bn = BatchNorm.unpack(r.array("<u8", oc, "batch-norm table"))
        g2 = gap(la.active_addr, "gap before the activation table (active_addr)")
        act = ActivationTable.from_bytes(r.raw(ACT_TABLE_SIZE, "activation table"))
        g3 = gap(la.para_start_addr, "gap before the weights (para_start_addr)")
        op = cls(mmo, batches, reserved0, la, bn, act, None, g1, g2, g3)
        wn = op.weight_count()
        # an invalid kernel_type throws at run time; keep every remaining byte so the file round-trips
        op.weights = r.array(np.uint8, r.remaining if wn is None else wn, "weights")
        return op

    def gaps(self, offset: int) -> tuple[int, int, int]:
        """(G1, G2, G3) for a body starting at absolute file ``offset``."""
        p = offset + FIXED_SIZE
        out = []
        for g, size in ((self.bn_gap, 8 * len(self.bn)), (self.act_gap, ACT_TABLE_SIZE), (self.weights_gap, 0)):
            n = (-p) % ALIGN if g is None else len(g)
            out.append(n)
            p += n + size
        return tuple(out)

    def write(self, w: Writer) -> None:
        g1, g2, g3 = self.gaps(w.offset)
        la = replace(self.layer_argument, bwsx_base_addr=g1, active_addr=g2, para_start_addr=g3)
        self.main_mem_output.write(w)
        w.i32(self.batches)
        w.i32(self.reserved0)
        w.raw(la.to_bytes())
        w.raw(self.bn_gap if self.bn_gap is not None else bytes(g1))
        w.array(self.bn.pack(), "<u8")
        w.raw(self.act_gap if self.act_gap is not None else bytes(g2))
        w.raw(self.activation.to_bytes())
        w.raw(self.weights_gap if self.weights_gap is not None else bytes(g3))
        w.array(self.weights, np.uint8)

    # ---------------------------------------------------------------- shapes and ranges
    def _in_shape4(self):
        ic, ih, iw = self.layer_argument.in_shape
        return [max(self.batches, 0), ic, ih, iw]

    def _out_shape4(self):
        oc, oh, ow = self.layer_argument.out_shape
        return [max(self.batches, 0), oc, oh, ow]

    def inputs(self) -> list[MemoryRange]:
        s = self._in_shape4()
        return [MemoryRange(MEM_KPU, DT_UINT8, self.layer_argument.image_src_addr * 64, kpu_bytes(s))]

    def outputs(self) -> list[MemoryRange]:
        s = self._out_shape4()
        outs = [MemoryRange(MEM_KPU, DT_UINT8, self.layer_argument.image_dst_addr * 64, kpu_bytes(s))]
        if self.main_mem_output.size != 0:
            outs.append(self.main_mem_output)
        return outs

    def output_shape(self, rng: MemoryRange) -> list[int] | None:
        return self._out_shape4()

    # ---------------------------------------------------------------- execution (C.5)
    def invalidate(self) -> None:
        self.__dict__.pop("_prep", None)
        self.__dict__.pop("_plan", None)

    def _prepare(self) -> _Prepared:
        pr = self.__dict__.get("_prep")
        if pr is not None:
            return pr
        la = self.layer_argument
        k = la.kernel_size
        if k is None or la.pool_type >= 10:
            raise KernelError("Invalid kpu filter")
        if self.batches < 1:
            raise KernelError(f"batches is {self.batches}; ncc divides by it (crash), it must be at least 1")
        ic, ih, iw = la.in_shape
        oc, oh, ow = la.out_shape
        s = POOL_STRIDE[la.pool_type]
        if (ih // s, iw // s) != (oh, ow):
            raise KernelError(
                f"pool type {la.pool_type} turns {ih}x{iw} into {ih // s}x{iw // s} but the registers say "
                f"{oh}x{ow} (o_col_high/o_row_wid); the layer is inconsistent"
            )
        if la.depth_wise_layer and ic < oc:
            raise KernelError(f"depthwise KPU layer with {ic} input but {oc} output channels (output o reads "
                              "input channel o, past the input here; ncc's result is undefined)")
        pr = _Prepared(self.weights, k, bool(la.depth_wise_layer), ic, oc, self.bn, self.activation)
        self.__dict__["_prep"] = pr
        return pr

    def _run_plan(self):
        """(plan, src byte, dst byte, lowest byte, end byte in KPU RAM, main-memory copy range)."""
        bound = self.__dict__.get("_plan")
        if bound is None:
            la = self.layer_argument
            in4, out4 = self._in_shape4(), self._out_shape4()
            plan = _Plan(self._prepare(), in4, out4, int(la.pad_value), int(la.arg_x), int(la.shr_x),
                         int(la.arg_w), int(la.shr_w), int(la.arg_add), int(la.pool_type))
            src, dst = la.image_src_addr * 64, la.image_dst_addr * 64
            mmo = None
            if self.main_mem_output.size != 0:
                mmo = MemoryRange(MEM_MAIN, DT_UINT8, self.main_mem_output.start, plan.out.size)
            bound = (plan, src, dst, min(src, dst), max(src + kpu_bytes(in4), dst + kpu_bytes(out4)), mmo)
            self.__dict__["_plan"] = bound
        return bound

    def run(self, mem) -> None:
        plan, src, dst, lo, end, mmo = self._run_plan()
        ram = mem.kpu
        if lo < 0 or end > len(ram):
            try:  # the layout functions say which range is out of KPU RAM
                kpu_download(ram, src, self._in_shape4())
                kpu_upload(ram, dst, np.zeros(self._out_shape4(), np.uint8))
            except FormatError as e:
                raise FormatError(f"{mem.file}: {mem.node}: {e}") from None
        _check_err(plan.execute(None, ram, src))
        ram_upload(ram, dst, plan.out)
        if mmo is not None:
            mem.span(mmo)[:] = plan.out.reshape(-1)
