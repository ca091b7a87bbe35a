"""NNILUnaryMethod (opcode 0x14): a fused elementwise function as NNIL stack bytecode.

Runtime spec §B.22 and §D: the body is MR input, MR output, then the program = *all remaining
body bytes* (including the zero alignment padding, 0x00 being ``nop``). For each element a fresh
64-entry f32 stack is used; execution stops at ``ret`` (pop -> output) or when the bytes run out
(then the output element is not written). Binary ops pop ``b`` then ``a`` and push ``a op b``;
``clamp`` pops high, low, v. Errors throw (§B.26): "Invalid nnil op", "stack overflow",
"stack underflow", "empty stack" (dup of an empty stack).

Two cases are undefined behaviour in ncc and raise here: ``dup`` on a full stack (ncc writes
past its stack array, reported as "stack overflow") and an ``ldc.r4`` whose immediate runs past
the end of the body.

Also: :func:`nnil_eval` (array level), :func:`assemble` / :func:`disassemble` (mnemonic list <->
bytes) for the compiler, which emits NNIL programs for fused unaries.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numba
import numpy as np

from ..errors import KernelError
from ..format.binio import MemoryRange, Reader, Writer
from ._libm import COSF, EXPF, LOGF, SINF
from .base import Op, register

OPCODES = {
    "nop": 0x00, "dup": 0x01, "pop": 0x02, "lda.0": 0x03, "ldc.r4.0": 0x04, "ldc.r4.1": 0x05, "ldc.r4": 0x06,
    "abs": 0x20, "ceil": 0x21, "cos": 0x22, "exp": 0x23, "floor": 0x24, "log": 0x25, "neg": 0x26,
    "rsqrt": 0x27, "sin": 0x28, "square": 0x29,
    "add": 0x40, "sub": 0x41, "mul": 0x42, "div": 0x43, "min": 0x44, "max": 0x45,
    "clamp": 0x80, "ret": 0xA0,
}
MNEMONICS = {v: k for k, v in OPCODES.items()}
LDC_R4 = 0x06
_TRUNCATED = -1  # pseudo-opcode: ldc.r4 without its 4 immediate bytes

ERRORS = {1: "Invalid nnil op", 2: "stack overflow", 3: "stack underflow", 4: "empty stack",
          5: "nnil ldc.r4 immediate runs past the end of the program"}


def assemble(items) -> bytes:
    """Mnemonic list -> program bytes. Items: a mnemonic (``"lda.0"``), ``("ldc.r4", value)``,
    the string ``"ldc.r4 <value>"``, or ``("byte", n)`` for a raw byte."""
    out = bytearray()
    for it in items:
        if isinstance(it, str) and it.startswith("ldc.r4 "):
            it = ("ldc.r4", float(it.split()[1]))
        if isinstance(it, tuple):
            name, arg = it
            if name == "ldc.r4":
                out.append(LDC_R4)
                out += struct.pack("<f", arg)
            elif name == "byte":
                out.append(int(arg) & 0xFF)
            else:
                raise ValueError(f"NNIL instruction {name!r} takes no operand")
        elif it in OPCODES and it != "ldc.r4":
            out.append(OPCODES[it])
        else:
            raise ValueError(f"unknown NNIL instruction {it!r}")
    return bytes(out)


def disassemble(program: bytes) -> list:
    """Program bytes -> mnemonic list (inverse of :func:`assemble`); an unknown opcode or a
    truncated ``ldc.r4`` becomes ``("byte", n)`` items."""
    items: list = []
    p = bytes(program)
    i = 0
    while i < len(p):
        b = p[i]
        if b == LDC_R4 and i + 5 <= len(p):
            items.append(("ldc.r4", struct.unpack_from("<f", p, i + 1)[0]))
            i += 5
            continue
        items.append(MNEMONICS[b] if b in MNEMONICS and b != LDC_R4 else ("byte", b))
        i += 1
    return items


def decode(program: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Pre-decode into (opcodes int32, immediates float32); an unknown byte stays as is (it only
    fails if executed), a truncated ``ldc.r4`` becomes a failing pseudo-opcode."""
    p = bytes(program)
    ops, imms = [], []
    i = 0
    while i < len(p):
        b = p[i]
        i += 1
        if b == LDC_R4:
            if i + 4 > len(p):
                ops.append(_TRUNCATED)
                imms.append(0.0)
                break
            ops.append(b)
            imms.append(struct.unpack_from("<f", p, i)[0])
            i += 4
        else:
            ops.append(b)
            imms.append(0.0)
    return np.asarray(ops, dtype=np.int32), np.asarray(imms, dtype=np.float32)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _nnil_kernel(ops, imms, x, out):
    """Runs the decoded program on every element; returns 0 or an :data:`ERRORS` code."""
    stack = np.zeros(64, dtype=np.float32)
    one = np.float32(1.0)
    for i in range(x.size):
        top = 0
        for pc in range(ops.size):
            op = ops[pc]
            if op == 0x00:
                continue
            if op == 0x01:  # dup
                if top == 0:
                    return 4
                if top >= 64:
                    return 2
                stack[top] = stack[top - 1]
                top += 1
            elif op == 0x02:
                if top == 0:
                    return 3
                top -= 1
            elif op == 0x03 or op == 0x04 or op == 0x05 or op == 0x06:
                if top >= 64:
                    return 2
                if op == 0x03:
                    stack[top] = x[i]
                elif op == 0x04:
                    stack[top] = np.float32(0.0)
                elif op == 0x05:
                    stack[top] = one
                else:
                    stack[top] = imms[pc]
                top += 1
            elif 0x20 <= op <= 0x29:
                if top == 0:
                    return 3
                v = stack[top - 1]
                if op == 0x20:
                    r = np.abs(v)
                elif op == 0x21:
                    r = np.float32(np.ceil(v))
                elif op == 0x22:
                    r = COSF(v)
                elif op == 0x23:
                    r = EXPF(v)
                elif op == 0x24:
                    r = np.float32(np.floor(v))
                elif op == 0x25:
                    r = LOGF(v)
                elif op == 0x26:
                    r = -v
                elif op == 0x27:
                    r = one / np.sqrt(v)
                elif op == 0x28:
                    r = SINF(v)
                else:
                    r = v * v
                stack[top - 1] = r
            elif 0x40 <= op <= 0x45:
                if top < 2:
                    return 3
                b = stack[top - 1]
                a = stack[top - 2]
                if op == 0x40:
                    r = a + b
                elif op == 0x41:
                    r = a - b
                elif op == 0x42:
                    r = a * b
                elif op == 0x43:
                    r = a / b
                elif op == 0x44:
                    r = b if b < a else a
                else:
                    r = b if a < b else a
                top -= 1
                stack[top - 1] = r
            elif op == 0x80:  # clamp: pop high, pop low, pop v
                if top < 3:
                    return 3
                hi = stack[top - 1]
                lo = stack[top - 2]
                v = stack[top - 3]
                top -= 2
                stack[top - 1] = lo if v < lo else (hi if hi < v else v)
            elif op == 0xA0:  # ret
                if top == 0:
                    return 3
                out[i] = stack[top - 1]
                break
            elif op == -1:
                return 5
            else:
                return 1
    return 0


def nnil_eval(program: bytes, x, out=None) -> np.ndarray:
    """Array-level NNIL evaluation (float32, any shape). Elements whose run ends without ``ret``
    keep their value from ``out`` (zeros when not given). Errors raise KernelError."""
    a = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(a).reshape(-1)
    res = np.zeros(flat.size, np.float32) if out is None else \
        np.array(np.asarray(out, dtype=np.float32).reshape(-1), copy=True)
    if flat.size:
        ops, imms = decode(program)
        code = _nnil_kernel(ops, imms, flat, res) if ops.size else 0
        if code:
            raise KernelError(ERRORS[code])
    return res.reshape(a.shape)


@register
@dataclass
class NNILUnaryMethod(Op):
    opcode = 0x14
    name = "NNILUnaryMethod"

    input: MemoryRange = field(default_factory=MemoryRange)
    output: MemoryRange = field(default_factory=MemoryRange)
    program: bytes = b""  # the NNIL program: every remaining body byte, padding included

    @classmethod
    def read(cls, r: Reader) -> "NNILUnaryMethod":
        return cls(MemoryRange.read(r, "input"), MemoryRange.read(r, "output"), r.raw(r.remaining, "program"))

    def write(self, w: Writer) -> None:
        self.input.write(w)
        self.output.write(w)
        w.raw(self.program)

    def run(self, mem) -> None:
        n = self.input.size // 4
        if n == 0:
            return
        y = mem.f32(self.output, n)
        y[:] = nnil_eval(self.program, mem.f32(self.input, n), y)
