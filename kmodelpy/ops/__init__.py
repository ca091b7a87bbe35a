"""Runtime ops: one module per kmodel v4 opcode (body layout, reader, writer and emulation kernel).

Shared numerical helpers live in ``_arith`` (carry shifts, f32 helpers) and ``_libm`` (glibc expf and
friends). See :mod:`kmodelpy.ops.base` for the contract and the registry.
"""
from .base import OPS, Op, op_class, register  # noqa: F401
