"""Compute sequence, buffer lifetimes and memory planning of the LLIR graph (compiler spec §9).

:func:`schedule` walks the LLIR graph in ncc's DFS order (§3.2) exactly like scheduler.cpp:

1. for every output of the node and **for every consumer connection** of it: the first time, allocate
   a buffer in the output's memory space (birth = current age, one reference); every further
   connection adds a reference. Outputs without consumers are never allocated (hence ``ignore`` nodes);
2. append the node to the compute sequence; every allocator's age grows by one (and the age of every
   still-referenced buffer);
3. unless the node is an ``output`` node, release one reference of each input's buffer, except
   const buffers (constants never die). Graph outputs are therefore never released.

Then every allocator places its buffers first-fit (:mod:`kmodelpy.compiler.allocator`). Sizes: const
and main tensors take ``elements × bytes(dtype)`` (alignment 8); KPU tensors take their KPU row-layout
size ``kpu_bytes(to4(shape))`` (alignment 64, 2 MiB limit). Working memory (``main_mem``) is the main
allocator's maximum usage; the header's ``constants`` is the const allocator's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CompileError
from ..ir.graph import MEM_CONST, MEM_KPU, MEM_MAIN, Graph, Node, OutputConnector
from .allocator import KPU_RAM_BYTES, Buffer, MemoryAllocator

DTYPE_BYTES = {"float32": 4, "uint8": 1, "int32": 4}


def to4(shape, fill: int = 1) -> list[int]:
    """Right-align a shape of rank <= 4 into 4 ints, leading entries ``fill`` (compiler spec §10.2)."""
    shape = [int(d) for d in shape]
    if len(shape) > 4:
        raise CompileError(f"shape {shape} has rank {len(shape)}; the K210 runtime supports at most 4 dimensions")
    return [fill] * (4 - len(shape)) + shape


def tensor_bytes(out: OutputConnector) -> int:
    """Bytes a tensor occupies in its memory space (main/const: dense; KPU: row layout, §9.1)."""
    if out.memory == MEM_KPU:
        from ..kpu.layout import kpu_bytes

        if out.dtype != "uint8":
            raise CompileError(f"{out.node.name}: KPU tensors must be uint8, got {out.dtype}")
        return int(kpu_bytes(to4(out.shape)))
    n = 1
    for d in out.shape:
        n *= int(d)
    return n * DTYPE_BYTES[out.dtype]


@dataclass
class Schedule:
    """Result of :func:`schedule`: the compute sequence and every tensor's placement."""

    sequence: list[Node]
    allocators: dict[str, MemoryAllocator]
    buffers: dict[OutputConnector, Buffer] = field(default_factory=dict)
    main_placement: str | None = None  # kmodelpy's main-memory placement when ncc's first fit overflows
    first_fit_main: int = 0  # ncc's first-fit main usage, when main_placement is set

    def buffer(self, out: OutputConnector) -> Buffer:
        return self.buffers[out]

    @property
    def main_usage(self) -> int:
        return self.allocators[MEM_MAIN].max_usage

    @property
    def const_usage(self) -> int:
        return self.allocators[MEM_CONST].max_usage

    @property
    def kpu_usage(self) -> int:
        return self.allocators[MEM_KPU].max_usage


def make_allocators(kpu_limit: int = KPU_RAM_BYTES) -> dict[str, MemoryAllocator]:
    """The K210 target's three allocators (cpu/target.cpp + k210/target.cpp ``fill_allocators``)."""
    return {
        MEM_CONST: MemoryAllocator(MEM_CONST, 8),
        MEM_MAIN: MemoryAllocator(MEM_MAIN, 8),
        MEM_KPU: MemoryAllocator(MEM_KPU, 64, kpu_limit),
    }


def plan_lifetimes(graph: Graph, allocators: dict[str, MemoryAllocator] | None = None,
                   in_place: bool = False) -> Schedule:
    """Steps 1–3 above (no placement yet): the compute sequence and every buffer's birth and age.
    ``in_place`` (kmodelpy, only for a model whose main memory would not fit the K210, see
    :func:`schedule`): an element-wise binary writes its output over an input that has its shape and
    that nothing reads afterwards."""
    allocators = allocators if allocators is not None else make_allocators()
    sched = Schedule([], allocators)
    for node in graph.dfs():
        for out in node.outputs:
            for _ in out.consumers:
                buf = sched.buffers.get(out)
                if buf is None:
                    buf = _dying_input(node, out, sched) if in_place else None
                    if buf is not None:
                        buf.add_ref()
                        buf.label += f" (then {_label(out)}, in place)"
                        sched.buffers[out] = buf
                        continue
                    alloc = allocators[out.memory]
                    sched.buffers[out] = alloc.allocate(tensor_bytes(out), label=_label(out))
                else:
                    buf.add_ref()
        sched.sequence.append(node)
        for alloc in allocators.values():
            alloc.grow_age()
        if node.op != "output":
            for ic in node.inputs:
                out = ic.producer
                if out is not None and out.memory != MEM_CONST and out in sched.buffers:
                    sched.buffers[out].release()
    return sched


IN_PLACE_OPS = ("binary", "quantized_binary")  # out[i] is written after a[i], b[i] are read (runtime §B.3)


def _dying_input(node: Node, out: OutputConnector, sched: Schedule) -> Buffer | None:
    """The main-memory buffer of an input of an element-wise ``node`` with ``out``'s shape and dtype whose
    only remaining readers are ``node``'s own inputs (so ``out`` may overwrite it), if any."""
    if node.op not in IN_PLACE_OPS or out.memory != MEM_MAIN:
        return None
    for ic in node.inputs:
        src = ic.producer
        buf = sched.buffers.get(src) if src is not None else None
        if (buf is None or src.memory != MEM_MAIN or src.dtype != out.dtype
                or to4(src.shape) != to4(out.shape) or src.node.op == "input"):
            continue
        if buf.refs == sum(1 for other in node.inputs if other.producer is src):
            return buf
    return None


FIRST_FIT, BY_SIZE = "first fit", "largest first"
K210_MAIN_RAM = 6 * 1024 * 1024  # the K210's general-purpose SRAM (its other 2 MiB are the KPU's)


def _first_fit(graph: Graph, kpu_limit: int, in_place: bool = False) -> Schedule:
    """:func:`plan_lifetimes` with every space placed first fit (ncc's placement)."""
    sched = plan_lifetimes(graph, make_allocators(kpu_limit), in_place)
    for alloc in sched.allocators.values():
        alloc.finish()
    return sched


def schedule(graph: Graph, kpu_placement: str = FIRST_FIT, kpu_limit: int = KPU_RAM_BYTES) -> Schedule:
    """Plan lifetimes, then place every space first-fit (KPU RAM largest first when ``kpu_placement`` is
    ``BY_SIZE``, as :mod:`kmodelpy.compiler.kpu_ram` decides for a model first fit cannot place). Raises
    CompileError when the KPU tensors do not fit the K210's 2 MiB KPU RAM (``kpu_limit``), naming the
    layer whose tensor overflows (ncc only says ``KPU allocator cannot allocate more memory.``)."""
    sched = _first_fit(graph, kpu_limit)
    if sched.main_usage > K210_MAIN_RAM:
        sched = _smaller_main_memory(graph, sched, kpu_limit)
    kpu = sched.allocators[MEM_KPU]
    if kpu_placement == BY_SIZE:
        kpu.place_by_size()
    bad = kpu.overflow()
    if bad is not None:
        raise CompileError(
            f"KPU memory overflow at layer {bad.label}: its KPU tensor needs {bad.valid_size} B at KPU "
            f"offset {bad.start}, so the KPU tensors live at that point need {kpu.max_usage} B, more than "
            + (f"the K210's 2 MB KPU RAM ({KPU_RAM_BYTES} B)" if kpu.limit == KPU_RAM_BYTES else
               f"the {kpu.limit} B of KPU RAM allowed") +
            " (ncc: 'KPU allocator cannot allocate more memory.'); "
            "reduce the input resolution or the channel count of the layers that run on the KPU, or drop "
            "--kpu-ram-overflow error (kmodelpy then fits it: row bands, main memory, the CPU)"
        )
    return sched


def _smaller_main_memory(graph: Graph, sched: Schedule, kpu_limit: int) -> Schedule:
    """kmodelpy (docs/deviations.md): ncc's first fit needs more main memory than the K210 has, so the
    kmodel could not run as ncc writes it. Try the main buffers largest first, then also with element-wise
    binaries computed in place; keep the smallest (first fit, ncc's, when nothing is smaller)."""
    best, how = sched, None
    for in_place in (False, True):
        cand = _first_fit(graph, kpu_limit, in_place)
        main = cand.allocators[MEM_MAIN]
        first_fit = main.max_usage
        if main.place_by_size() > first_fit:
            main.finish()
        if cand.main_usage < best.main_usage:
            best, how = cand, in_place
    if how is not None:
        best.main_placement = "largest first" + (", element-wise binaries in place" if how else "")
        best.first_fit_main = sched.main_usage
    return best


def _label(out: OutputConnector) -> str:
    """``<op> '<name>' output <k> <shape> <dtype>`` (the name only when the layer has one)."""
    from .report import DISPLAY

    n = out.node
    what = DISPLAY.get(n.op, n.op)
    if n.name:
        what += f" '{n.name}'"
    if len(n.outputs) > 1:
        what += f" output {out.index}"
    return f"{what} ({'x'.join(str(d) for d in out.shape)} {out.dtype})"
