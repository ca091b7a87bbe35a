"""kmodel v4 container: header, input/output descriptors, constants, node headers and bodies.

Parsing tolerates what real files contain (a missing last-body tail padding, trailing bytes after
the last body, garbage in ``reserved0``) and remembers it, so :meth:`KModel.to_bytes` reproduces a
parsed file byte for byte. Bodies are parsed and written by the op modules (:mod:`kmodelpy.ops`).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import FormatError, UnsupportedError
from .binio import MemoryRange, Reader, Writer, read_shape4, write_shape4

KMODEL_IDENTIFIER = 0x4B4D444C  # 'KMDL' as a C multichar constant; bytes "LDMK" on disk
HEADER_SIZE = 40
MAX_MAIN_MEM = 64 << 20  # refuse absurd sizes before allocating (the K210 has 6 MB of RAM)
MAX_CONSTANTS = 64 << 20
MAX_NODES = 1 << 20


@dataclass
class NodeEntry:
    """One node: its parsed body and what is needed to write the file back unchanged."""

    op: object  # an ops.base.Op
    tail: bytes | None = None  # bytes after the parsed body within body_size (None: plain 8-alignment)


@dataclass
class KModel:
    main_mem: int = 0
    inputs: list[MemoryRange] = field(default_factory=list)
    input_shapes: list[list[int]] = field(default_factory=list)
    outputs: list[MemoryRange] = field(default_factory=list)
    constants: bytes = b""
    nodes: list[NodeEntry] = field(default_factory=list)
    version: int = 4
    flags: int = 0
    target: int = 1
    reserved0: int = 0
    # bytes counted in the last body_size but absent from the file. None (new models): drop the last
    # body's alignment padding, as ncc does (it seeks over it and never writes it).
    missing_tail: int | None = None
    trailer: bytes = b""  # extra bytes after the last body (seen in files from public projects)

    @property
    def ops(self) -> list:
        return [n.op for n in self.nodes]

    # ------------------------------------------------------------------ reading
    @classmethod
    def parse(cls, data: bytes, file: str = "model") -> "KModel":
        from ..ops.base import op_class

        data = bytes(data)
        if len(data) < 8:
            raise FormatError(f"{file}: file is {len(data)} bytes, too short to be a kmodel")
        ident, version = struct.unpack_from("<II", data, 0)
        if ident != KMODEL_IDENTIFIER:
            if ident == 3:
                raise UnsupportedError(
                    f"{file}: this is a kmodel v3 (nncase v0.1): this reader is for kmodel v4; "
                    "kmodelpy.load and the kmodelpy commands read both (kmodelpy.v3.KModelV3 is the v3 container)"
                )
            raise FormatError(
                f"{file}: not a kmodel (magic {data[:4].hex()} instead of 4c444d4b 'LDMK'); "
                "pass a .kmodel file written by ncc v0.2 or kmodelpy"
            )
        if version != 4:
            hint = (
                "kmodel v5 comes from nncase >= 1.0 and MaixPy cannot load it; compile with "
                "`kmodelpy compile` (or ncc v0.2) to get a kmodel v4"
                if version == 5
                else "kmodelpy reads kmodel v4 only"
            )
            raise UnsupportedError(f"{file}: kmodel version {version}: {hint}")
        r = Reader(data, 0, len(data), "header", file)
        r.skip(8)
        flags, target = r.u32("flags"), r.u32("target")
        n_const, main_mem, n_nodes = r.u32("constants"), r.u32("main_mem"), r.u32("nodes")
        n_in, n_out, reserved0 = r.u32("inputs"), r.u32("outputs"), r.u32("reserved0")
        if target not in (0, 1):
            raise FormatError(f"{file}: header target {target} is neither 0 (CPU) nor 1 (K210)")
        if main_mem > MAX_MAIN_MEM:
            raise FormatError(
                f"{file}: header asks for {main_mem} bytes of main memory (the K210 has 6 MB, kmodelpy "
                f"allows {MAX_MAIN_MEM}); the file is damaged"
            )
        if n_const > len(data) or n_nodes > MAX_NODES or n_in > 4096 or n_out > 4096:
            raise FormatError(
                f"{file}: header counts (constants {n_const} B, {n_nodes} nodes, {n_in} inputs, "
                f"{n_out} outputs) do not fit a {len(data)}-byte file; the file is truncated or damaged"
            )
        r = Reader(data, HEADER_SIZE, len(data), "input/output descriptors", file)
        inputs = [MemoryRange.read(r, f"input {i} descriptor") for i in range(n_in)]
        shapes = [read_shape4(r, f"input {i} shape") for i in range(n_in)]
        outputs = [MemoryRange.read(r, f"output {i} descriptor") for i in range(n_out)]
        r.what = "constants"
        constants = r.raw(n_const, "constants")
        r.what = "node headers"
        headers = [(r.u32("opcode"), r.u32("body_size")) for _ in range(n_nodes)]
        pos = r.pos
        nodes: list[NodeEntry] = []
        for k, (opcode, size) in enumerate(headers):
            cls_ = op_class(opcode)
            if cls_ is None:
                raise UnsupportedError(
                    f"{file}: node {k} has unknown opcode 0x{opcode:04X} ({opcode}); "
                    "this is not a kmodel v4 written by ncc v0.2 (or the file is damaged)"
                )
            end = pos + size
            if end > len(data) + 7 or (pos > len(data)):
                raise FormatError(
                    f"{file}: node {k} ({cls_.name}) body [{pos}, {end}) runs past the end of the "
                    f"{len(data)}-byte file; the file is truncated"
                )
            br = Reader(data, pos, min(end, len(data)), f"node {k} ({cls_.name}) body", file)
            op = read_body(cls_, br, f"node {k} ({cls_.name})", file)
            rest = bytes(data[br.pos : min(end, len(data))])
            natural = (-(br.pos)) % 8
            short = max(0, end - len(data))  # only the last body may be cut short (ncc quirk)
            if not any(rest) and len(rest) + short == natural:
                tail = None
            else:
                tail = rest + bytes(short)
            nodes.append(NodeEntry(op, tail))
            pos = end
        missing_tail = max(0, pos - len(data))
        trailer = data[pos:] if pos < len(data) else b""
        km = cls(
            main_mem=main_mem, inputs=inputs, input_shapes=shapes, outputs=outputs, constants=constants,
            nodes=nodes, version=version, flags=flags, target=target, reserved0=reserved0,
            missing_tail=missing_tail, trailer=trailer,
        )
        return km

    # ------------------------------------------------------------------ writing
    def to_bytes(self) -> bytes:
        w = Writer(0)
        for v in (KMODEL_IDENTIFIER, self.version, self.flags, self.target, len(self.constants),
                  self.main_mem, len(self.nodes), len(self.inputs), len(self.outputs), self.reserved0):
            w.u32(v)
        for mr in self.inputs:
            mr.write(w)
        for s in self.input_shapes:
            write_shape4(w, s)
        for mr in self.outputs:
            mr.write(w)
        w.raw(self.constants)
        bodies = [(entry.op.opcode, entry.op.write, entry.tail) for entry in self.nodes]
        return write_bodies(w, bodies, self.missing_tail) + self.trailer


def write_bodies(w: Writer, bodies, missing_tail: int | None) -> bytes:
    """Append the bodies of a kmodel (v4 nodes, v3 layers) after a table of 8-byte headers (u32 code, u32
    body size); return all of ``w``'s bytes. ``bodies`` holds ``(code, write, tail)``: ``write(w)`` writes
    a body, then comes ``tail`` as the file read had it, or (None) zeros up to 8-byte alignment. The
    last body's padding is dropped, or, when ``missing_tail`` is not None, its ``missing_tail`` bytes
    that the file read lacked."""
    headers_at = len(w.buf)
    w.zeros(8 * len(bodies))
    last_pad = 0
    for k, (code, write, tail) in enumerate(bodies):
        start = w.offset
        write(w)
        if tail is None:
            last_pad = w.align(8)
        else:
            w.raw(tail)
            last_pad = 0
        struct.pack_into("<II", w.buf, headers_at + 8 * k, code, w.offset - start)
    out = bytes(w.buf)
    if bodies:
        drop = last_pad if missing_tail is None else missing_tail
        out = out[: len(out) - drop]
    return out


def read_body(cls_, br: Reader, what: str, file: str):
    """Parse one body with ``cls_.read``; anything but a KmodelpyError raised by the reader means the
    body's fields are inconsistent (a damaged file), and is reported as such (``what`` names the body:
    "node 3 (Conv2D)"; kmodel v3 uses this too)."""
    from ..errors import KmodelpyError

    try:
        return cls_.read(br)
    except KmodelpyError:
        raise
    except (ValueError, IndexError, OverflowError, MemoryError, struct.error, TypeError, KeyError) as e:
        raise FormatError(
            f"{file}: {what} body is inconsistent ({type(e).__name__}: "
            f"{' '.join(str(e).split())}); the file is damaged"
        ) from None


def node_opcodes(data: bytes, file: str = "model") -> list[int]:
    """The opcode of every node, read from the header and node headers only (no body parsing)."""
    data = bytes(data)
    r = Reader(data, 0, len(data), "header", file)
    r.skip(16)
    n_const, _, n_nodes, n_in, n_out = (r.u32(n) for n in ("constants", "main_mem", "nodes", "inputs", "outputs"))
    if n_nodes > MAX_NODES:
        raise FormatError(f"{file}: header says {n_nodes} nodes; the file is damaged")
    r = Reader(data, HEADER_SIZE + 32 * n_in + 16 * n_out + n_const, len(data), "node headers", file)
    out = []
    for _ in range(n_nodes):
        out.append(r.u32("opcode"))
        r.skip(4, "body_size")
    return out
