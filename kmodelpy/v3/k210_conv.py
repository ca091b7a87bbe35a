"""K210_CONV (10240): one KPU layer (convolution, batch norm, activation, pool), kpu.c 1269-1311.

Body: u32 flags (bit 0 KLF_MAIN_MEM_OUT), main_mem_out_address, then the **absolute file offsets** of
the 96-byte layer argument, the u8 weights, the batch-norm words and the 144-byte activation table.
nncase v0.1 puts them in that order inside the body: the layer argument at the next multiple of 8,
the weights at a multiple of 128, batch norm at 128, the activation table at 256 (file offsets). The
gap bytes are kept when they differ from that, so a parsed body is written back unchanged; sections
outside the body or out of order are refused (nncase v0.1 never writes them).

The layer argument, batch norm and activation table are kmodel v4's (the same KPU registers), and the
layer runs on kmodelpy's bit-exact KPU: :class:`kmodelpy.ops.kpu_conv2d.KPUConv2D` (one batch, the
main-memory copy of a KLF_MAIN_MEM_OUT layer as its main_mem_output: the dense NCHW map the SDK's
DMA sends there). The SDK patches the three table addresses into the layer argument at run time;
the fields as stored in the file are kept as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError
from ..format.binio import DT_UINT8, MEM_MAIN, MemoryRange, Reader, Writer
from ..kpu.layer_args import ACT_TABLE_SIZE, ActivationTable, BatchNorm, LayerArgs
from .layer import Layer, register

KLF_MAIN_MEM_OUT = 1
HEAD_SIZE = 24
ALIGNS = (8, 128, 128, 256)  # layer argument, weights, batch norm, activation table
SECTIONS = ("layer argument", "weights", "batch-norm table", "activation table")


@register
@dataclass(eq=False)
class K210Conv(Layer):
    """``gaps`` holds the four gap bytes read from a file (before each section) when they are not
    nncase v0.1's zero alignment; None means "align as nncase v0.1" when writing. ``run`` caches
    the KPU layer: call :meth:`invalidate` after changing fields."""

    code = 10240
    name = "K210_CONV"
    on_kpu = True

    flags: int = 0
    main_mem_out: int = 0
    layer_argument: LayerArgs = field(default_factory=LayerArgs)
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    bn: BatchNorm = None
    activation: ActivationTable = None
    gaps: tuple[bytes, bytes, bytes, bytes] | None = None

    # ---------------------------------------------------------------- encoding
    def weight_count(self) -> int | None:
        la = self.layer_argument
        k = la.kernel_size
        if k is None:
            return None
        ic, oc = la.i_ch_num + 1, la.o_ch_num + 1
        return oc * k * k * (1 if la.depth_wise_layer else ic)

    @classmethod
    def read(cls, r: Reader) -> "K210Conv":
        body = (r.pos, r.end)
        flags, mmo, *offsets = (r.u32(n) for n in ("flags", "main_mem_out_address", "layer_offset",
                                                   "weights_offset", "bn_offset", "act_offset"))
        gaps = []

        def gap_to(k: int) -> None:
            off = offsets[k]
            if off < r.pos or off > r.end:
                raise FormatError(
                    f"{r.file}: {r.what}: the {SECTIONS[k]} (file offset {off}) is not inside the body "
                    f"[{body[0]}, {body[1]}) after the parts before it, as nncase v0.1 lays it out; the file "
                    "is damaged"
                )
            gaps.append(r.raw(off - r.pos, f"gap before the {SECTIONS[k]}"))

        gap_to(0)
        la = LayerArgs.from_bytes(r.raw(LayerArgs.SIZE, "layer argument"))
        oc = la.o_ch_num + 1
        layer = cls(flags, mmo, la)
        gap_to(1)
        n = layer.weight_count()
        layer.weights = r.array(np.uint8, max(0, offsets[2] - r.pos) if n is None else n, "weights")
        gap_to(2)
        layer.bn = BatchNorm.unpack(r.array("<u8", oc, "batch-norm table"))
        gap_to(3)
        layer.activation = ActivationTable.from_bytes(r.raw(ACT_TABLE_SIZE, "activation table"))
        if tuple(gaps) != layer._nncase_gaps(body[0]):
            layer.gaps = tuple(gaps)
        return layer

    def _sizes(self) -> tuple[int, int, int, int]:
        return LayerArgs.SIZE, len(self.weights), 8 * len(self.bn), ACT_TABLE_SIZE

    def _nncase_gaps(self, start: int) -> tuple[bytes, ...]:
        """The zero gaps nncase v0.1 writes for a body at file offset ``start``."""
        out, p = [], start + HEAD_SIZE
        for align, size in zip(ALIGNS, self._sizes()):
            g = (-p) % align
            out.append(bytes(g))
            p += g + size
        return tuple(out)

    def write(self, w: Writer) -> None:
        gaps = self.gaps if self.gaps is not None else self._nncase_gaps(w.offset)
        offsets, p = [], w.offset + HEAD_SIZE
        for g, size in zip(gaps, self._sizes()):
            offsets.append(p + len(g))
            p += len(g) + size
        for v in (self.flags, self.main_mem_out, *offsets):
            w.u32(v)
        parts = (self.layer_argument.to_bytes(), np.ascontiguousarray(self.weights, np.uint8).tobytes(),
                 self.bn.pack().astype("<u8").tobytes(), self.activation.to_bytes())
        for g, part in zip(gaps, parts):
            w.raw(g)
            w.raw(part)

    # ---------------------------------------------------------------- the KPU layer
    def kpu_layer(self):
        """The layer as kmodelpy's KPU runs it (a v4 KPUConv2D with one batch), built once."""
        op = self.__dict__.get("_kpu")
        if op is None:
            from ..ops.kpu_conv2d import KPUConv2D

            la = self.layer_argument
            oc, oh, ow = la.out_shape
            mmo = (MemoryRange(MEM_MAIN, DT_UINT8, self.main_mem_out, oc * oh * ow)
                   if self.flags & KLF_MAIN_MEM_OUT else MemoryRange())
            op = KPUConv2D(main_mem_output=mmo, batches=1, reserved0=0, layer_argument=la, bn=self.bn,
                           activation=self.activation, weights=self.weights)
            self.__dict__["_kpu"] = op
        return op

    def invalidate(self) -> None:
        self.__dict__.pop("_kpu", None)

    def inputs(self):
        return self.kpu_layer().inputs()

    def outputs(self):
        return self.kpu_layer().outputs()

    def output_shape(self):
        oc, oh, ow = self.layer_argument.out_shape
        return [1, oc, oh, ow]

    def summary(self) -> str:
        la = self.layer_argument
        (ic, ih, iw), (oc, oh, ow) = la.in_shape, la.out_shape
        k = la.kernel_size
        kind = f"k{k}" if k else f"kernel_type {la.kernel_type}"
        return (f"{ic}x{ih}x{iw} -> {oc}x{oh}x{ow} {kind}{' dw' if la.depth_wise_layer else ''} pool{la.pool_type}"
                + (f" +main_mem_out @{self.main_mem_out}" if self.flags & KLF_MAIN_MEM_OUT else ""))

    def run(self, mem) -> None:
        self.kpu_layer().run(mem)
