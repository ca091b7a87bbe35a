"""kmodel v3 container (nncase v0.1): header, outputs, layer headers, bodies (runtime spec §1.1).

::

    u32 version = 3, flags (bit 0: 8-bit weights), arch = 0, layers_length, max_start_address,
        main_mem_usage, output_count
    {u32 address, u32 size} outputs[output_count]       (main memory, float32)
    {u32 type, u32 body_size} headers[layers_length]
    bodies, back to back

nncase v0.1 pads every body to an 8-byte file offset and counts the padding in body_size, so the last
body may end up to 7 bytes past the end of the file; the SDK reads those bytes (here: zeros).
Parsing remembers that, and any trailing bytes, so :meth:`KModelV3.to_bytes` reproduces a parsed file
byte for byte. Bodies are parsed and written by the layer modules (:mod:`kmodelpy.v3.layer`).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import FormatError, UnsupportedError
from ..format.binio import Reader, Writer
from ..format.kmodel import read_body, write_bodies
from .layer import LAYER_TYPES, Layer, layer_class

VERSION = 3
HEADER_SIZE = 28
MAX_MAIN_MEM = 64 << 20  # as for v4: the K210 has 6 MB of RAM
MAX_LAYERS = 1 << 16
MAX_OUTPUTS = 4096
LAST_BODY_SLACK = 7  # nncase v0.1's missing end padding
KNOWN_RANGES = "1-25 and 10240-10243"


def is_kmodel_v3(data: bytes) -> bool:
    """True when the file starts with version 3 (kmodel v4 starts with 'LDMK')."""
    return len(data) >= 4 and struct.unpack_from("<I", data, 0)[0] == VERSION


@dataclass
class LayerEntry:
    """One layer: its parsed body and what is needed to write the file back unchanged."""

    layer: Layer
    tail: bytes | None = None  # bytes after the parsed body within body_size (None: plain 8-alignment)


@dataclass
class KModelV3:
    flags: int = 1
    arch: int = 0
    max_start_address: int = 0
    main_mem: int = 0
    outputs: list[tuple[int, int]] = field(default_factory=list)  # (address, size in bytes)
    entries: list[LayerEntry] = field(default_factory=list)
    missing_tail: int | None = None  # bytes of the last body_size absent from the file (None: drop its padding)
    trailer: bytes = b""
    version: int = VERSION
    constants: bytes = b""  # none in v3 (the runner's Memory takes a model with constants and main_mem)

    @property
    def layers(self) -> list[Layer]:
        return [e.layer for e in self.entries]

    ops = layers  # what the runner (kmodel v4's) iterates

    # ------------------------------------------------------------------ reading
    @classmethod
    def parse(cls, data: bytes, file: str = "model") -> "KModelV3":
        data = bytes(data)
        r = Reader(data, 0, len(data), "kmodel v3 header", file)
        version, flags, arch = r.u32("version"), r.u32("flags"), r.u32("arch")
        n_layers, max_start, main_mem, n_out = (r.u32(n) for n in ("layers_length", "max_start_address",
                                                                    "main_mem_usage", "output_count"))
        if version != VERSION:
            raise FormatError(f"{file}: version {version} is not a kmodel v3")
        if arch != 0:
            raise FormatError(f"{file}: kmodel v3 header says arch {arch}; the K210 SDK loads only arch 0")
        if main_mem > MAX_MAIN_MEM:
            raise FormatError(
                f"{file}: kmodel v3 header asks for {main_mem} bytes of main memory (the K210 has 6 MB, "
                f"kmodelpy allows {MAX_MAIN_MEM}); the file is damaged"
            )
        if n_layers > MAX_LAYERS or n_out > MAX_OUTPUTS or HEADER_SIZE + 8 * (n_out + n_layers) > len(data):
            raise FormatError(
                f"{file}: kmodel v3 header counts ({n_layers} layers, {n_out} outputs) do not fit the "
                f"{len(data)}-byte file; the file is truncated or damaged"
            )
        r.what = "kmodel v3 output table"
        outputs = [(r.u32("output address"), r.u32("output size")) for _ in range(n_out)]
        r.what = "kmodel v3 layer headers"
        headers = [(r.u32("layer type"), r.u32("body_size")) for _ in range(n_layers)]
        padded = data + bytes(LAST_BODY_SLACK)  # the bytes the SDK reads past a short last body
        pos = r.pos
        entries = []
        for k, (code, size) in enumerate(headers):
            cls_ = _known_class(code, k, file)
            end = pos + size
            if end > len(data) + LAST_BODY_SLACK:
                raise FormatError(
                    f"{file}: kmodel v3 layer {k} ({cls_.name}) body [{pos}, {end}) runs past the end of the "
                    f"{len(data)}-byte file; the file is truncated"
                )
            br = Reader(padded, pos, end, f"kmodel v3 layer {k} ({cls_.name}) body", file)
            layer = read_body(cls_, br, f"kmodel v3 layer {k} ({cls_.name})", file)
            rest = bytes(padded[br.pos : end])
            natural = (-br.pos) % 8
            entries.append(LayerEntry(layer, None if (not any(rest) and len(rest) == natural) else rest))
            pos = end
        return cls(flags=flags, arch=arch, max_start_address=max_start, main_mem=main_mem, outputs=outputs,
                   entries=entries, missing_tail=max(0, pos - len(data)),
                   trailer=data[pos:] if pos < len(data) else b"")

    # ------------------------------------------------------------------ writing
    def to_bytes(self) -> bytes:
        w = Writer(0)
        for v in (self.version, self.flags, self.arch, len(self.entries), self.max_start_address, self.main_mem,
                  len(self.outputs)):
            w.u32(v)
        for address, size in self.outputs:
            w.u32(address)
            w.u32(size)
        bodies = [(entry.layer.code, entry.layer.write, entry.tail) for entry in self.entries]
        return write_bodies(w, bodies, self.missing_tail) + self.trailer


def _known_class(code: int, k: int, file: str):
    cls_ = layer_class(code)
    if cls_ is not None:
        return cls_
    if code in LAYER_TYPES:
        raise UnsupportedError(
            f"{file}: kmodel v3 layer {k} has type {code} ({LAYER_TYPES[code]}), which the K210 SDK's runtime "
            "does not implement (it stops with 'Layer is not supported'); this kmodel cannot run on a K210"
        )
    raise UnsupportedError(
        f"{file}: kmodel v3 layer {k} has unknown type {code} (0x{code:X}); the layer types are {KNOWN_RANGES}: "
        "the file is damaged or not a kmodel v3"
    )


def layer_types(data: bytes, file: str = "model") -> list[int]:
    """The type of every layer, from the headers only (no body parsing)."""
    r = Reader(bytes(data), 0, len(data), "kmodel v3 header", file)
    r.skip(12)
    n_layers = r.u32("layers_length")
    r.skip(8)
    n_out = r.u32("output_count")
    if n_layers > MAX_LAYERS or n_out > MAX_OUTPUTS:
        raise FormatError(f"{file}: kmodel v3 header says {n_layers} layers, {n_out} outputs; the file is damaged")
    r.skip(8 * n_out, "output table")
    out = []
    for _ in range(n_layers):
        out.append(r.u32("layer type"))
        r.skip(4, "body_size")
    return out
