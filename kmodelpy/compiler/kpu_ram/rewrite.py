"""The two LLIR rewrites that make KPU tensors fit KPU RAM, both exact (the kmodel computes the same bytes).

* :func:`split_chain` runs a ``kpu_conv2d`` — or a chain of them, each reading the previous one's KPU
  output — as row bands (:mod:`.bands`): per band a uint8 ``strided_slice`` of the input rows (with the
  halo rows) from main memory, a ``kpu_upload``, the same KPU layers on those rows (the last one with a
  main-memory output), a ``strided_slice`` keeping the band's exact rows; a ``concat`` along H joins
  them in main memory. KPU consumers of the last layer's output get a ``kpu_upload`` of the joined tensor.
* :func:`evict` keeps a KPU tensor out of KPU RAM between its producer and a later consumer: that
  consumer gets its own ``kpu_upload`` of the tensor's main-memory copy, right before it runs.

Both need the KPU tensor in main memory (:func:`main_copy`): a ``kpu_upload``'s source, a
``kpu_conv2d``'s main-memory output (added when the layer has none: the KPU then also writes it to
main memory), or a graph input that lived in KPU RAM, which moves to main memory (every other KPU
consumer then reads it through a ``kpu_upload``). Only kmodel v4 opcodes are used. The graph keeps
ncc's DFS order: the new nodes of a consumer run right before it.
"""
from __future__ import annotations

from ...ir.graph import MEM_KPU, MEM_MAIN, Graph, InputConnector, Node, OutputConnector
from ...ir.origins import carry
from ..lower import connect, new_node
from ..transforms.build import U8
from .bands import Band


def attach_ignore(llir: Graph, out: OutputConnector) -> None:
    """A KPU output that nothing reads any more is still written by the KPU: keep it allocated (as
    ncc's fuse_kpu_download does with an ``ignore`` node)."""
    if not out.consumers:
        connect(new_node(llir, "ignore", "", [out.shape], [out.dtype], [], {}).inputs[0], out)


def main_output(llir: Graph, conv: Node) -> OutputConnector:
    """The main-memory output of a ``kpu_conv2d`` (added if it has none)."""
    if len(conv.outputs) == 1:
        k = conv.outputs[0]
        conv.outputs.append(OutputConnector(conv, 1, k.shape, U8, MEM_MAIN))
        conv.attrs["has_main_mem_output"] = True
    return conv.outputs[1]


def upload(llir: Graph, src: OutputConnector, shape, name: str) -> Node:
    """A ``kpu_upload`` of ``src`` (read as ``shape``)."""
    up = new_node(llir, "kpu_upload", name, [shape], [U8], [(shape, U8, MEM_KPU)], {})
    connect(up.inputs[0], src)
    return up


def main_copy(llir: Graph, kpu_out: OutputConnector) -> OutputConnector:
    """The main-memory tensor that holds the same bytes as the KPU tensor ``kpu_out``."""
    node = kpu_out.node
    if node.op == "kpu_upload":
        return node.inputs[0].producer
    if node.op == "kpu_conv2d":
        return main_output(llir, node)
    if node.op == "input":  # a uint8 input folded into KPU RAM (fold_input_kpu_upload): back to main memory
        kpu_out.memory = MEM_MAIN
        readers = list(kpu_out.consumers)
        if readers:
            up = upload(llir, kpu_out, kpu_out.shape, f"{node.name}/kpu_upload")
            for ic in readers:
                connect(ic, up.outputs[0])
        return kpu_out
    raise AssertionError(f"{node.op} {node.name!r} has no main-memory copy (kmodelpy compiler bug)")


def evict(llir: Graph, kpu_out: OutputConnector, readers: list[InputConnector]) -> None:
    """Give each of ``readers`` (consumers of ``kpu_out``) its own upload of the main-memory copy."""
    src = main_copy(llir, kpu_out)
    for ic in readers:
        connect(ic, upload(llir, src, ic.shape, f"{ic.node.name}/kpu_upload").outputs[0])
    if kpu_out.node.op == "kpu_conv2d":
        attach_ignore(llir, kpu_out)
    llir.collect()


def _slice_rows(llir: Graph, src: OutputConnector, shape, begin: int, end: int, name: str) -> Node:
    n, c, _, w = shape
    out = (n, c, end - begin, w)
    sl = new_node(llir, "strided_slice", name, [shape], [U8], [(out, U8, MEM_MAIN)],
                  dict(begin=[0, 0, begin, 0], end=[n, c, end, w], strides=[1, 1, 1, 1], begin_mask=0, end_mask=0,
                       ellipsis_mask=0, new_axis_mask=0, shrink_axis_mask=0))
    connect(sl.inputs[0], src)
    return sl


def split_chain(llir: Graph, chain: list[Node], bands: list[Band]) -> None:
    """Replace the KPU layers ``chain`` (each reading the previous one's KPU output, which nothing else
    reads) by the row bands ``bands``, which must partition the last layer's output rows."""
    first, last = chain[0], chain[-1]
    x = first.inputs[0]
    kpu_in = x.producer
    src = main_copy(llir, kpu_in)
    if x.producer is not kpu_in:  # a KPU input moved to main memory: ``first`` now reads its upload
        kpu_in = x.producer
    kout = last.outputs[0]
    n, oc, _, ow = kout.shape
    pieces = []
    for k, b in enumerate(bands):
        base = f"{last.name}/band{k}" if len(chain) == 1 else f"{first.name}..{last.name}/band{k}"
        rows = _slice_rows(llir, src, x.shape, b.in_begin, b.in_end, base + "/rows")
        cur = upload(llir, rows.outputs[0], rows.outputs[0].shape, base + "/kpu_upload").outputs[0]
        for j, conv in enumerate(chain):
            is_last = j == len(chain) - 1
            rows_out = b.band_rows if is_last else b.spans[j + 1][1] - b.spans[j + 1][0]
            shape = (n, conv.outputs[0].shape[1], rows_out, conv.outputs[0].shape[3])
            outs = [(shape, U8, MEM_KPU)] + ([(shape, U8, MEM_MAIN)] if is_last else [])
            part = new_node(llir, "kpu_conv2d", f"{conv.name}/band{k}", [cur.shape], [U8], outs,
                            dict(conv.attrs, has_main_mem_output=is_last))
            connect(part.inputs[0], cur)
            cur = part.outputs[0]
        attach_ignore(llir, cur)
        piece = part.outputs[1]
        if (b.keep_begin, b.keep_end) != (0, b.band_rows):
            piece = _slice_rows(llir, piece, piece.shape, b.keep_begin, b.keep_end, base + "/keep").outputs[0]
        pieces.append(piece)
    joined = new_node(llir, "concat", last.name + "/bands", [p.shape for p in pieces], [U8] * len(pieces),
                      [(kout.shape, U8, MEM_MAIN)], {"axis": 2})
    for ic, p in zip(joined.inputs, pieces):
        connect(ic, p)
    out = joined.outputs[0]
    for o in last.outputs:  # the joined bands hold the last layer's tensor (kmodelpy.ir.origins)
        carry(o, out)
    if len(last.outputs) > 1:
        for ic in list(last.outputs[1].consumers):
            connect(ic, out)
    kpu_readers = [ic for ic in kout.consumers if ic.node.op != "ignore"]
    if kpu_readers:
        up = upload(llir, out, kout.shape, last.name + "/bands/kpu_upload")
        for ic in kpu_readers:
            connect(ic, up.outputs[0])
    x.producer.consumers.remove(x)
    x.producer = None
    if kpu_in.node.op == "kpu_conv2d":
        attach_ignore(llir, kpu_in)
    llir.collect()
