"""ncc's transforms and the exact pass lists of the K210 target (compiler spec §2.1, §5.1).

``default_list(ctx)`` is the list D (21 transforms, +5 fusions for uint8 inference); the ``pass_*``
functions return the transform lists of passes P1, P2, C1-C3 and Q1-Q5 in priority order.
For ``-t cpu`` (ncc's cpu_target) P2, C1, Q1-Q3 and Q5 are empty: no KPU, only CPU quantization.
"""
from __future__ import annotations

from ..rewrite import Context, Transform
from .checkpoints import AddQuantCheckpoints
from .fusion import (FuseClampBinary, FuseClampConv2d, FuseOneBinary, FuseOneFusedUnaryWithBinary, FuseOneUnary,
                     FusePadConv2d, FuseTwoFusedUnary, FuseTwoFusedUnaryWithBinary)
from .kpu_lowering import (EliminateDilatedConv2d, FakeKpuConv2d, FuseFakeKpuConv2dStridedSlice,
                           MatmulToFakeKpuConv2d, StridedSliceMotion)
from .motion import (TransposeBinaryMotion, TransposeConcatMotion, TransposeConstantBinaryMotion, TransposePadMotion,
                     TransposeReduceMotion, TransposeUnaryMotion)
from .neutral import (FoldConstant, FoldNopPad, FoldNopReshape, FoldNopTranspose, FoldPadPad, FoldPadStridedSlice,
                      FoldQuantize, FoldReshape, FoldTranspose, SimplifyReduce, StridedSliceToPad, TransposeToReshape)


def default_list(ctx: Context) -> list[Transform]:
    """cpu/target.cpp:75-110, in priority order."""
    d: list[Transform] = [
        FoldConstant(), FoldNopPad(), FoldNopReshape(), FoldNopTranspose(), FoldPadPad(), FoldPadStridedSlice(),
        FoldQuantize(), FoldReshape(), FoldTranspose(), FusePadConv2d(), FuseClampConv2d(), FuseClampBinary(),
        StridedSliceToPad(), TransposeBinaryMotion(), TransposeConstantBinaryMotion(), TransposeConcatMotion(),
        TransposePadMotion(), TransposeReduceMotion(), TransposeUnaryMotion(), TransposeToReshape(),
        SimplifyReduce(),
    ]
    if ctx.fusion:
        d += [FuseOneUnary(), FuseOneBinary(), FuseTwoFusedUnary(), FuseOneFusedUnaryWithBinary(),
              FuseTwoFusedUnaryWithBinary()]
    return d


def pass_p1(ctx):
    """D, after the lowering of the importers' resizes (kmodelpy, deviations D11 and D24: ncc imports every
    resize as its ResizeImage, whatever the model's sampling)."""
    from .resize_lowering import LowerResize

    return [LowerResize()] + default_list(ctx)


def pass_p2(ctx):
    if ctx.target == "cpu":
        return []
    return [EliminateDilatedConv2d(), FakeKpuConv2d(), MatmulToFakeKpuConv2d(), StridedSliceMotion(),
            FuseFakeKpuConv2dStridedSlice()] + default_list(ctx)


def pass_c1(ctx):
    return [] if ctx.target == "cpu" else [AddQuantCheckpoints({"fake_kpu_conv2d"})]


def pass_c2(ctx):
    return default_list(ctx)


def pass_c3(ctx):
    ops = {"conv2d", "matmul", "fused_unary"} | ({"binary"} if ctx.quantize_binary else set())
    return [AddQuantCheckpoints(ops)]


def pass_q1(ctx):
    from .quantize_k210 import KpuConv2d

    if ctx.target == "cpu":
        return []
    return [KpuConv2d(), FoldQuantize()]


def pass_q2(ctx):
    from .quantize_k210 import FuseKpuConv2dPool

    if ctx.target == "cpu":
        return []
    return [FuseKpuConv2dPool(), FoldQuantize()]


def pass_q3(ctx):
    from .quantize_k210 import FoldKpuUpload

    if ctx.target == "cpu":
        return []
    return [FoldKpuUpload(), FoldQuantize()]


def pass_q4(ctx):
    from .quantize_neutral import (DequantizePadMotion, DequantizeReplicationConcatMotion, DequantizeReshapeMotion,
                                   DequantizeResizeImageMotion, DequantizeStridedSliceMotion, DequantizeTransposeMotion, FoldInputQuantize,
                                   FusedUnaryToLookup1d, QuantizedBinary, QuantizedConv2d, QuantizedMatmul)

    ts: list[Transform] = [FoldInputQuantize()] if ctx.input_type == "uint8" else []
    ts += [DequantizeReshapeMotion(), DequantizeTransposeMotion(), DequantizePadMotion(),
           DequantizeStridedSliceMotion(), DequantizeResizeImageMotion(), DequantizeReplicationConcatMotion(),
           QuantizedConv2d(), QuantizedMatmul()]
    if ctx.quantize_binary:
        ts.append(QuantizedBinary())
    ts.append(FusedUnaryToLookup1d())
    return ts + default_list(ctx)


def pass_q5(ctx):
    from .quantize_k210 import FoldInputKpuUpload, FuseKpuDownload

    if ctx.target == "cpu":
        return []
    return [FuseKpuDownload(), FoldInputKpuUpload()] + default_list(ctx)
