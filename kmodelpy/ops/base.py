"""The contract every runtime op module fulfils, and the opcode registry.

One op, one module: ``kmodelpy/ops/<op>.py`` defines a dataclass subclass of :class:`Op` holding the
node body's fields, with

* ``read(cls, r: Reader) -> Op``   parse the body (``r`` spans exactly the node's body bytes);
* ``write(self, w: Writer)``       serialise the body *without* the trailing 8-byte alignment
  (the container adds it; ``w.offset`` is the absolute file offset, for ops that align internally);
* ``run(self, mem: Memory)``       execute it exactly as ``ncc infer`` does;
* ``inputs()`` / ``outputs()``     the memory ranges read / written (for inspect and shape lookup);
* ``output_shape(rng)``            the shape of the tensor this node writes into ``rng`` (or None).

Modules register themselves with ``@register``; :data:`OPS` maps opcode -> class.
"""
from __future__ import annotations

from typing import ClassVar

from ..format.binio import MemoryRange, Reader, Writer

OPS: dict[int, type["Op"]] = {}


def register(cls):
    """Class decorator: add an Op subclass to the opcode registry."""
    if cls.opcode in OPS and OPS[cls.opcode] is not cls:
        raise RuntimeError(f"opcode 0x{cls.opcode:04X} registered twice")
    OPS[cls.opcode] = cls
    return cls


class Op:
    opcode: ClassVar[int]
    name: ClassVar[str]  # ncc's display name, e.g. "Conv2D"

    @classmethod
    def read(cls, r: Reader) -> "Op":
        raise NotImplementedError

    def write(self, w: Writer) -> None:
        raise NotImplementedError

    def run(self, mem) -> None:
        raise NotImplementedError

    def inputs(self) -> list[MemoryRange]:
        return [getattr(self, "input")] if hasattr(self, "input") else []

    def outputs(self) -> list[MemoryRange]:
        return [getattr(self, "output")] if hasattr(self, "output") else []

    def output_shape(self, rng: MemoryRange) -> list[int] | None:
        return None

    def body_bytes(self, base: int = 0) -> bytes:
        w = Writer(base)
        self.write(w)
        return bytes(w.buf)


# opcode -> the module that defines its op (imported on first use, so a start-up imports only the
# modules of the ops a kmodel has; tests/test_ops_a.py checks this table against the registry)
OP_MODULES = {
    0x00: "binary", 0x01: "concat", 0x02: "conv2d", 0x03: "dequantize", 0x04: "matmul", 0x05: "pad",
    0x06: "quantize", 0x07: "reduce", 0x08: "reduce_window2d", 0x09: "memory_copy", 0x0A: "resize_image",
    0x0B: "softmax", 0x0C: "transpose", 0x0D: "strided_slice", 0x0E: "unary", 0x0F: "quantized_conv2d",
    0x10: "quantized_matmul", 0x11: "quantized_binary", 0x12: "table_lookup1d", 0x13: "conv2d_transpose",
    0x14: "nnil_unary_method", 0x1001: "cpu_conv2d", 0x1002: "cpu_depthwise_conv2d",
    0x1003: "cpu_reduce_window2d", 0x1004: "cpu_quantized_conv2d", 0x1005: "cpu_quantized_depthwise_conv2d",
    0x2001: "kpu_upload", 0x2002: "kpu_conv2d",
}


def op_class(opcode: int) -> type[Op] | None:
    """The op class of ``opcode`` (None if kmodel v4 has no such opcode), importing its module."""
    cls = OPS.get(opcode)
    if cls is None and opcode in OP_MODULES:
        _import_op_module(OP_MODULES[opcode])
        cls = OPS.get(opcode)
    return cls


def _import_op_module(name: str) -> None:
    import importlib

    from .._numba_start import install

    importlib.import_module(f"{__package__}.{name}")
    install()  # faster loads of the cached kernels


_loaded = False


def _load_all() -> None:
    """Import every op module (they register themselves). Importing defines numba functions but
    compiles nothing: numba compiles lazily on first call, from its on-disk cache when warm."""
    global _loaded
    if _loaded:
        return
    import pkgutil

    from .. import ops as pkg

    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name not in ("base",) and not m.name.startswith("_"):
            _import_op_module(m.name)
    _loaded = True
