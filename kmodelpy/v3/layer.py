"""The contract every kmodel v3 layer module fulfils, and the layer-type registry.

One layer type (or a closely related pair), one module: ``kmodelpy/v3/<layer>.py`` defines a
dataclass subclass of :class:`Layer` holding the body's fields (kmodel v3 runtime spec §1.3), with

* ``WORDS``: the leading u32 fields of the body, in file order (``SIGNED`` names the i32 ones);
  :meth:`Layer.read` / :meth:`Layer.write` handle them, and ``read_rest`` / ``write_rest`` whatever
  follows (tables, weights, lists);
* ``run(mem)``: execute it as the K210 SDK's ``kpu.c`` does, on ``mem.main`` / ``mem.kpu``;
* ``inputs()`` / ``outputs()``: the memory ranges read / written (main memory, or KPU RAM);
* ``output_shape()``: the shape of what it writes (None when it does not know), and ``summary()``,
  one line for ``inspect``.

Main-memory addresses are byte offsets into the main buffer; KPU addresses in bodies are 64-byte lines.

Bodies several layer types share have a base here: :class:`VectorLayer` (float32 vector in, vector out),
:class:`CountLayer` and :class:`ScaleBiasLayer` (``count`` elements in, ``count`` out), :class:`MapLayer`
(CHW map in, CHW map out); each layer module keeps its own kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import FormatError
from ..format.binio import DT_FLOAT32, DT_UINT8, MEM_KPU, MEM_MAIN, MemoryRange, Reader, Writer

# kpu.h kpu_model_layer_type_t: every name, so an unsupported one can be named in errors
LAYER_TYPES = {
    0: "INVALID", 1: "ADD", 2: "QUANTIZED_ADD", 3: "GLOBAL_MAX_POOL2D", 4: "QUANTIZED_GLOBAL_MAX_POOL2D",
    5: "GLOBAL_AVERAGE_POOL2D", 6: "QUANTIZED_GLOBAL_AVERAGE_POOL2D", 7: "MAX_POOL2D", 8: "QUANTIZED_MAX_POOL2D",
    9: "AVERAGE_POOL2D", 10: "QUANTIZED_AVERAGE_POOL2D", 11: "QUANTIZE", 12: "DEQUANTIZE", 13: "REQUANTIZE",
    14: "L2_NORMALIZATION", 15: "SOFTMAX", 16: "CONCAT", 17: "QUANTIZED_CONCAT", 18: "FULLY_CONNECTED",
    19: "QUANTIZED_FULLY_CONNECTED", 20: "TENSORFLOW_FLATTEN", 21: "QUANTIZED_TENSORFLOW_FLATTEN",
    22: "RESIZE_NEAREST_NEIGHBOR", 23: "QUANTIZED_RESIZE_NEAREST_NEIGHBOR", 24: "CHANNELWISE_DEQUANTIZE",
    25: "LOGISTIC", 10240: "K210_CONV", 10241: "K210_ADD_PADDING", 10242: "K210_REMOVE_PADDING",
    10243: "K210_UPLOAD",
}

# layer type -> the module that defines it (imported on first use)
LAYER_MODULES = {
    1: "add", 2: "add", 5: "global_average_pool2d", 8: "pool2d", 9: "pool2d", 11: "quantize",
    12: "dequantize", 13: "requantize", 14: "l2_normalization", 15: "softmax", 16: "concat", 17: "concat",
    18: "fully_connected", 20: "flatten", 22: "resize", 23: "resize", 24: "dequantize", 25: "logistic",
    10240: "k210_conv", 10241: "k210_padding", 10242: "k210_padding", 10243: "k210_upload",
}

LAYERS: dict[int, type["Layer"]] = {}


def register(cls):
    """Class decorator: add a Layer subclass to the registry."""
    if cls.code in LAYERS and LAYERS[cls.code] is not cls:
        raise RuntimeError(f"layer type {cls.code} registered twice")
    LAYERS[cls.code] = cls
    return cls


def layer_class(code: int) -> type["Layer"] | None:
    """The class of layer type ``code`` (None if the SDK runtime has no code for it)."""
    cls = LAYERS.get(code)
    if cls is None and code in LAYER_MODULES:
        import importlib

        from .._numba_start import install

        importlib.import_module(f"{__package__}.{LAYER_MODULES[code]}")
        install()  # faster loads of the cached kernels
        cls = LAYERS.get(code)
    return cls


def type_name(code: int) -> str:
    return LAYER_TYPES.get(code, f"type {code}")


def main_f32(start: int, count: int) -> MemoryRange:
    """``count`` float32 at byte ``start`` of main memory."""
    return MemoryRange(MEM_MAIN, DT_FLOAT32, int(start), 4 * int(count))


def main_u8(start: int, count: int) -> MemoryRange:
    return MemoryRange(MEM_MAIN, DT_UINT8, int(start), int(count))


def main_items(start: int, count: int, item: int) -> MemoryRange:
    """``count`` elements of ``item`` bytes (1: u8, 4: float32) at byte ``start`` of main memory."""
    return main_u8(start, count) if item == 1 else main_f32(start, count)


def outside_main_memory(mem, what: str) -> FormatError:
    """The error of a layer that would read past main memory (inconsistent fields: the C code reads
    whatever follows its buffer)."""
    return FormatError(f"{mem.file}: {mem.node}: {what} outside main memory (its shape fields disagree); "
                       "the file is damaged")


def kpu_range(line: int, nbytes: int) -> MemoryRange:
    """``nbytes`` of KPU RAM from 64-byte line ``line``."""
    return MemoryRange(MEM_KPU, DT_UINT8, 64 * int(line), int(nbytes))


def shape3(w: int, h: int, c: int) -> str:
    return f"{c}x{h}x{w}"


class Layer:
    """Base of every v3 layer (a dataclass whose first fields are ``WORDS``)."""

    code: ClassVar[int]
    name: ClassVar[str]
    on_kpu: ClassVar[bool] = False
    WORDS: ClassVar[tuple[str, ...]] = ()
    SIGNED: ClassVar[frozenset] = frozenset()

    @classmethod
    def read(cls, r: Reader) -> "Layer":
        vals = {f: (r.i32(f) if f in cls.SIGNED else r.u32(f)) for f in cls.WORDS}
        layer = cls(**vals)
        layer.read_rest(r)
        return layer

    def read_rest(self, r: Reader) -> None:
        """Read what follows the fixed words (nothing by default)."""

    def write(self, w: Writer) -> None:
        """Serialise the body without the container's 8-byte end alignment (``w.offset`` is the
        absolute file offset, for bodies that align inside)."""
        for f in self.WORDS:
            (w.i32 if f in self.SIGNED else w.u32)(int(getattr(self, f)))
        self.write_rest(w)

    def write_rest(self, w: Writer) -> None:
        """Write what follows the fixed words."""

    def body_bytes(self, base: int = 0) -> bytes:
        w = Writer(base)
        self.write(w)
        return bytes(w.buf)

    def __eq__(self, other) -> bool:
        """Same type and same body (layers are dataclasses with ``eq=False``: array fields)."""
        return type(other) is type(self) and self.body_bytes() == other.body_bytes()

    __hash__ = None

    def run(self, mem) -> None:
        raise NotImplementedError

    def inputs(self) -> list[MemoryRange]:
        return []

    def outputs(self) -> list[MemoryRange]:
        return []

    def output_shape(self) -> list[int] | None:
        return None

    def summary(self) -> str:
        return ""


@dataclass(eq=False)
class VectorLayer(Layer):
    """Body ``flags, input, output, channels``: ``channels`` float32 in, as many out, through the
    numba ``kernel(src, dest)`` (L2_NORMALIZATION, SOFTMAX, LOGISTIC)."""

    WORDS = ("flags", "input", "output", "channels")
    kernel: ClassVar = None

    flags: int = 0
    input: int = 0
    output: int = 0
    channels: int = 0

    def inputs(self):
        return [main_f32(self.input, self.channels)]

    def outputs(self):
        return [main_f32(self.output, self.channels)]

    def output_shape(self):
        return [1, int(self.channels)]

    def summary(self) -> str:
        return f"{self.channels} float32"

    def run(self, mem) -> None:
        self.kernel(mem.f32(self.inputs()[0]), mem.f32(self.outputs()[0]))


@dataclass(eq=False)
class MapLayer(Layer):
    """A CHW map in main memory to a CHW map in main memory, ``ITEM`` bytes an element (1: u8, 4: float32);
    the body starts ``flags, input, output, in_width, in_height, in_channels, out_width, out_height``, and
    the subclass adds ``out_channels`` (a field, or a property) (the pools, RESIZE_NEAREST_NEIGHBOR)."""

    ITEM: ClassVar[int] = 4

    flags: int = 0
    input: int = 0
    output: int = 0
    in_width: int = 1
    in_height: int = 1
    in_channels: int = 1
    out_width: int = 1
    out_height: int = 1

    def inputs(self):
        return [main_items(self.input, self.in_width * self.in_height * self.in_channels, self.ITEM)]

    def outputs(self):
        return [main_items(self.output, self.out_width * self.out_height * self.out_channels, self.ITEM)]

    def output_shape(self):
        return [1, int(self.out_channels), int(self.out_height), int(self.out_width)]

    def summary(self) -> str:
        return (f"{shape3(self.in_width, self.in_height, self.in_channels)} -> "
                f"{shape3(self.out_width, self.out_height, self.out_channels)}")

    def kernel_views(self, mem):
        """(source, destination) arrays for the kernel: the source runs from the input to the end of main
        memory (the kernel reports a read past it: a damaged body), the destination is the output."""
        src, dest = self.inputs()[0], self.outputs()[0]
        view = mem.u8 if self.ITEM == 1 else mem.f32
        return view(src, (len(mem.main) - src.start) // self.ITEM), view(dest)


@dataclass(eq=False)
class CountLayer(Layer):
    """Body ``flags, input, output, count``: ``count`` elements in main memory to as many, ``IN_ITEM`` /
    ``OUT_ITEM`` bytes each (1: u8, 4: float32) (QUANTIZE, DEQUANTIZE, REQUANTIZE)."""

    WORDS = ("flags", "input", "output", "count")
    IN_ITEM: ClassVar[int] = 1
    OUT_ITEM: ClassVar[int] = 1

    flags: int = 0
    input: int = 0
    output: int = 0
    count: int = 0

    def inputs(self):
        return [main_items(self.input, self.count, self.IN_ITEM)]

    def outputs(self):
        return [main_items(self.output, self.count, self.OUT_ITEM)]


@dataclass(eq=False)
class ScaleBiasLayer(CountLayer):
    """Body ``flags, input, output, count, f32 scale, f32 bias``, run by the numba
    ``kernel(src, dest, scale, bias)`` (QUANTIZE, DEQUANTIZE)."""

    kernel: ClassVar = None

    scale: float = 1.0
    bias: float = 0.0

    def read_rest(self, r: Reader) -> None:
        self.scale, self.bias = r.f32("scale"), r.f32("bias")

    def write_rest(self, w: Writer) -> None:
        w.f32(self.scale)
        w.f32(self.bias)

    def run(self, mem) -> None:
        self.kernel(mem.view(self.inputs()[0]), mem.view(self.outputs()[0]), np.float32(self.scale),
                    np.float32(self.bias))
