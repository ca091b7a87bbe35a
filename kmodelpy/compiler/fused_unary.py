"""Fused-unary programs: representation, ``concat``, NNIL compilation and float32 evaluation
(compiler spec §5.1; nncase src/ir/hlir/ops/fused_unary.cpp, neutral_kernels.h nnil_unary_method).

A program is a tuple of :class:`FuOp`; arguments are indices into the program and the last op is the
result. ncc never evaluates a program directly: it compiles it to NNIL bytecode and runs the bytecode
(KPU activation fit, LUT generation, the calibration evaluator), so :func:`evaluate` does the same.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..errors import CompileError

F32 = np.float32

UNARY_OPS = ("abs", "ceil", "cos", "exp", "floor", "log", "neg", "rsqrt", "sin", "square")
BINARY_OPS = ("add", "sub", "mul", "div", "min", "max")

# NNIL opcodes the compiler emits (runtime spec §D; compiler spec §5.1)
NNIL_DUP, NNIL_LDA_0, NNIL_LDC_R4, NNIL_RET = 0x01, 0x03, 0x06, 0xA0
NNIL_UNARY = {op: 0x20 + i for i, op in enumerate(UNARY_OPS)}
NNIL_BINARY = {op: 0x40 + i for i, op in enumerate(BINARY_OPS)}


@dataclass(frozen=True)
class FuOp:
    """One program op: kind ∈ constant | identity | ldx | unary | binary | clamp.

    ``op`` names the unary/binary operation, ``args`` are op indices (unary/identity: (x,), binary: (a, b),
    clamp: (x, lo, hi)), ``value`` is the float32 constant.
    """

    kind: str
    op: str | None = None
    args: tuple[int, ...] = ()
    value: float = 0.0

    @staticmethod
    def ldx() -> "FuOp":
        return FuOp("ldx")

    @staticmethod
    def constant(v) -> "FuOp":
        return FuOp("constant", value=float(F32(v)))

    @staticmethod
    def identity(x: int) -> "FuOp":
        return FuOp("identity", args=(x,))

    @staticmethod
    def unary(op: str, x: int) -> "FuOp":
        if op not in UNARY_OPS:
            raise CompileError(f"fused unary: unsupported unary op '{op}'")
        return FuOp("unary", op, (x,))

    @staticmethod
    def binary(op: str, a: int, b: int) -> "FuOp":
        if op not in BINARY_OPS:
            raise CompileError(f"fused unary: unsupported binary op '{op}'")
        return FuOp("binary", op, (a, b))

    @staticmethod
    def clamp(x: int, lo: int, hi: int) -> "FuOp":
        return FuOp("clamp", None, (x, lo, hi))

    def shifted(self, inc: int) -> "FuOp":
        return FuOp(self.kind, self.op, tuple(a + inc for a in self.args), self.value)


def concat(f1, f2) -> tuple[FuOp, ...]:
    """ncc ``concat_subgraph(f1, f2)`` (§5.1): f2's first ``ldx`` is dropped and stands for f1's result;
    later ``ldx`` become ``identity(len(f1) − 1)``; other args shift by ``len(f1)``, minus one once the
    first ldx has been dropped (literally ncc's counter, including for f2 programs whose first ldx is not
    op 0). An ``identity`` in f2 makes ncc throw ("Invalid fused unary op"); so does this."""
    result = list(f1)
    src1_out = len(result) - 1
    inc = len(result)
    first_ldx = True
    for op in f2:
        if op.kind == "ldx":
            if first_ldx:
                first_ldx = False
                inc -= 1
            else:
                result.append(FuOp.identity(src1_out))
            continue
        if op.kind == "constant":
            result.append(op)
        elif op.kind in ("unary", "binary", "clamp"):
            result.append(op.shifted(inc))
        else:
            raise CompileError(f"fused unary: cannot concatenate a program containing '{op.kind}' (ncc: Invalid fused unary op)")
    return tuple(result)


def compile_nnil(program) -> bytes:
    """``fused_unary::compile_graph``: DFS from the root with reference counts, each op emitted after its
    arguments on first visit, followed by ``refcount − 1`` dups; then ``ret``."""
    program = list(program)
    if not program:
        raise CompileError("fused unary: empty program")
    counts = [0] * len(program)
    sequence: list[int] = []
    # Iterative version of ncc's recursive calc_op_used_count (post-order on first access).
    stack: list[tuple[int, bool]] = [(len(program) - 1, False)]
    while stack:
        idx, expanded = stack.pop()
        if expanded:
            sequence.append(idx)
            continue
        if not 0 <= idx < len(program):
            raise CompileError(f"fused unary: argument index {idx} out of range")
        counts[idx] += 1
        if counts[idx] != 1:
            continue
        stack.append((idx, True))
        for a in reversed(program[idx].args):
            stack.append((a, False))

    out = bytearray()
    for idx in sequence:
        op = program[idx]
        if op.kind == "constant":
            out += bytes([NNIL_LDC_R4]) + struct.pack("<f", op.value)
        elif op.kind == "identity":
            out.append(NNIL_DUP)
        elif op.kind == "ldx":
            out.append(NNIL_LDA_0)
        elif op.kind == "unary":
            out.append(NNIL_UNARY[op.op])
        elif op.kind == "binary":
            out.append(NNIL_BINARY[op.op])
        else:
            raise CompileError("fused unary: a clamp op cannot be compiled to NNIL (ncc throws here too)")
        out += bytes([NNIL_DUP]) * (counts[idx] - 1)
    out.append(NNIL_RET)
    return bytes(out)


def evaluate(program, x) -> np.ndarray:
    """Run ``program`` on float32 samples the way ncc does: compile to NNIL, then run the bytecode with the
    emulator's own NNIL kernel (kmodelpy.ops.nnil_unary_method.nnil_eval: float32 stack machine, glibc
    expf/logf/sinf/cosf, std::min/max), so compiler and emulator cannot disagree."""
    from ..errors import KernelError
    from ..ops.nnil_unary_method import nnil_eval

    code = compile_nnil(program)
    try:
        return nnil_eval(code, np.asarray(x, dtype=np.float32))
    except KernelError as e:
        raise CompileError(f"fused unary program {code.hex()}: {e}") from None
