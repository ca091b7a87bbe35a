"""The pass ``fit_kpu_ram``: make the KPU tensors of an LLIR graph fit KPU RAM (docs/compiler.md).

ncc places KPU tensors first-fit and fails when they need more than the K210's 2 MiB. This pass runs
after lowering, before the buffers are planned for good, and changes nothing when first fit already
fits (every model ncc compiles keeps ncc's kmodel). Otherwise it repeats, cheapest remedy first:

1. **Placement.** When placing the KPU buffers largest first fits, use that placement: the same
   computation at other addresses (first fit leaves holes behind short-lived tensors).
2. **Evict an idle tensor.** At the age where the live KPU tensors add up to the most, a tensor that
   the running node neither reads nor writes is only waiting for a later consumer (a residual
   branch, a tensor two consumers share): the largest one is re-uploaded from main memory right
   before each later consumer instead (:func:`.rewrite.evict`).
3. **Split a layer into row bands.** Otherwise the KPU layer at that age runs as the fewest row
   bands that fit (:mod:`.bands`, :func:`.rewrite.split_conv`), bit-identical to the whole layer.
4. **Move it to the CPU.** A layer whose one-output-row bands still do not fit cannot stay on the
   KPU: the result names it in ``to_cpu`` and the pipeline compiles again with that conv on the CPU
   (ncc's quantized CPU conv), which is the only remedy that changes numbers.

Each remedy is recorded with its cost (:class:`Remedy`): KPU work added by halo rows, bytes the CPU
copies per run (slices, uploads, joins and KPU main-memory outputs), multiply-accumulates moved to the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...ir.graph import MEM_KPU, Graph, Node, OutputConnector
from ..allocator import KPU_RAM_BYTES
from ..schedule import BY_SIZE, FIRST_FIT, DTYPE_BYTES, plan_lifetimes
from .bands import smallest_split
from .rewrite import evict, split_conv

COPY_OPS = frozenset({"strided_slice", "concat", "kpu_upload", "pad", "transpose", "memory_copy"})


@dataclass
class Remedy:
    """One change ``fit_kpu_ram`` made: ``kind`` is "split", "evict" or "cpu"; ``layer`` the layer's
    name; ``text`` one line for the compile output, with the cost."""

    kind: str
    layer: str
    text: str
    bands: int = 0
    extra_kpu_macs: int = 0
    copied_bytes: int = 0
    cpu_macs: int = 0


@dataclass
class KpuFit:
    """What ``fit_kpu_ram`` did: the KPU placement to use, the remedies, and the layers that must run on
    the CPU (the pipeline compiles again when there are any)."""

    budget: int = KPU_RAM_BYTES
    placement: str = FIRST_FIT
    first_fit_bytes: int = 0  # what ncc's first fit needs for the lowered graph as it came in
    kpu_bytes: int = 0  # KPU RAM the final placement needs
    remedies: list[Remedy] = field(default_factory=list)
    to_cpu: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.remedies or self.to_cpu) or self.placement != FIRST_FIT

    def lines(self) -> list[str]:
        """One line per remedy, then the placement, for the compile output (nothing when nothing changed)."""
        if not self.changed:
            return []
        out = [f"KPU RAM: first fit needs {self.first_fit_bytes} B of the {self.budget} B"]
        out += [r.text for r in self.remedies]
        if self.placement != FIRST_FIT:
            out.append(f"KPU RAM: buffers placed {self.placement} ({self.kpu_bytes} B; first fit would need more)")
        elif not self.to_cpu:
            out.append(f"KPU RAM: {self.kpu_bytes} B after these changes")
        return out


# ------------------------------------------------------------------------------------------- costs
def layer_macs(conv: Node) -> int:
    """Multiply-accumulates of a KPU layer: the stride-1 convolution of its whole input, before its pool."""
    n, ic, h, w = conv.inputs[0].shape
    oc, _, kh, kw = conv.attrs["weights"].shape
    return n * oc * h * w * kh * kw * (1 if conv.attrs["is_depthwise"] else ic)


def kpu_macs(llir: Graph) -> int:
    return sum(layer_macs(n) for n in llir.nodes if n.op == "kpu_conv2d")


def _bytes(out: OutputConnector) -> int:
    size = DTYPE_BYTES[out.dtype]
    for d in out.shape:
        size *= int(d)
    return size


def copied_bytes(llir: Graph) -> int:
    """Bytes the CPU copies per run: outputs of data-movement ops and uploads, plus the main-memory
    outputs of KPU layers (a copy out of KPU RAM on the K210)."""
    total = 0
    for n in llir.nodes:
        if n.op in COPY_OPS:
            total += sum(_bytes(o) for o in n.outputs)
        elif n.op == "kpu_conv2d" and len(n.outputs) > 1:
            total += _bytes(n.outputs[1])
    return total


def describe(conv: Node) -> str:
    shape = "x".join(str(d) for d in conv.inputs[0].shape)
    out = "x".join(str(d) for d in conv.outputs[0].shape)
    return f"KPUConv2D '{conv.name}' ({shape} -> {out})"


# ------------------------------------------------------------------------------------------- the pass
def fit_kpu_ram(llir: Graph, budget: int = KPU_RAM_BYTES) -> KpuFit:
    """Make the KPU tensors of ``llir`` fit ``budget`` bytes (rewrites ``llir``; see the module doc)."""
    fit = KpuFit(budget=budget)
    for step in range(10 * len(llir.nodes) + 10):
        sched = plan_lifetimes(llir)
        kpu = sched.allocators[MEM_KPU]
        used = kpu.finish()
        if step == 0:
            fit.first_fit_bytes = used
        if used <= budget:
            fit.kpu_bytes = used
            return fit
        by_size = kpu.place_by_size()
        if by_size <= budget:
            fit.placement, fit.kpu_bytes = BY_SIZE, by_size
            return fit
        remedy = _remedy(llir, sched, budget)
        fit.remedies.append(remedy)
        if remedy.kind == "cpu":
            fit.to_cpu.append(remedy.layer)
            return fit
    raise AssertionError("fit_kpu_ram did not converge (kmodelpy compiler bug)")


def _remedy(llir: Graph, sched, budget: int) -> Remedy:
    """Evict the largest idle KPU tensor at the peak age, else split (or give up on) the layer there."""
    kpu = sched.allocators[MEM_KPU]
    owner = {b: o for o, b in sched.buffers.items() if o.memory == MEM_KPU}
    at = {id(n): k for k, n in enumerate(sched.sequence)}
    t, _ = kpu.peak_live()
    idle = [b for b in kpu.live_at(t) if owner[b] not in _touched(sched.sequence[t])]
    if idle:
        return _evict(llir, sched, owner[max(idle, key=lambda b: (b.size, -b.birth))], t, at)
    conv = _layer_at(sched.sequence[t])
    if conv is None:
        raise AssertionError(f"no KPU layer to split at {sched.sequence[t]} (kmodelpy compiler bug)")
    tc = at[id(conv)]
    mine = [sched.buffers[o] for o in _touched(conv) if o in sched.buffers and o.memory == MEM_KPU]
    others = sum(b.size for b in kpu.live_at(tc) if b not in mine)
    return _split(llir, conv, budget - others)


def _touched(node: Node) -> set:
    """The tensors a node reads or writes."""
    return {ic.producer for ic in node.inputs} | set(node.outputs)


def _evict(llir: Graph, sched, out: OutputConnector, t: int, at: dict) -> Remedy:
    readers = [ic for ic in out.consumers if at[id(ic.node)] > t and ic.node.op != "ignore"]
    size = sched.buffers[out].valid_size
    label = describe(out.node) if out.node.op == "kpu_conv2d" else f"{out.node.op} '{out.node.name}'"
    names = ", ".join(sorted({ic.node.name for ic in readers}))
    before = copied_bytes(llir)
    evict(llir, out, readers)
    cost = copied_bytes(llir) - before
    return Remedy("evict", out.node.name,
                  f"KPU RAM: the output of {label} ({size} B) waits in main memory, not in KPU RAM, until "
                  f"{names} reads it: +{cost} B copied per run", copied_bytes=cost)


def _split(llir: Graph, conv: Node, budget: int) -> Remedy:
    kernel = 3 if int(conv.attrs["filter_type"]) == 1 else 1
    bands = smallest_split(conv.inputs[0].shape, conv.outputs[0].shape, kernel, int(conv.attrs["pool_type"]), budget)
    source = conv.attrs.get("band_of", conv.name)
    label = describe(conv)
    if bands is None:
        macs = layer_macs(conv)
        return Remedy("cpu", source, f"KPU RAM: {label} does not fit even as bands of one output row: it runs "
                      f"on the CPU ({macs} multiply-accumulates per run)", cpu_macs=macs)
    macs, copies = kpu_macs(llir), copied_bytes(llir)
    conv.attrs["band_of"] = source
    split_conv(llir, conv, bands)
    extra, cost = kpu_macs(llir) - macs, copied_bytes(llir) - copies
    rows = ", ".join(f"{b.in_begin}-{b.in_end}" for b in bands)
    return Remedy("split", source,
                  f"KPU RAM: {label} runs as {len(bands)} row bands (input rows {rows}): KPU work "
                  f"+{100 * extra / max(macs, 1):.1f}% (halo rows), +{cost} B copied per run",
                  bands=len(bands), extra_kpu_macs=extra, copied_bytes=cost)


def _layer_at(node: Node) -> Node | None:
    """The KPU layer whose tensors are live when ``node`` runs: itself, the layer reading its KPU
    output (an upload, a KPU-resident input), or the layer that wrote the tensor an ``ignore`` holds."""
    if node.op == "kpu_conv2d":
        return node
    if node.op == "ignore":
        p = node.inputs[0].producer.node
        return p if p.op == "kpu_conv2d" else None
    for o in node.outputs:
        if o.memory == MEM_KPU:
            for ic in o.consumers:
                if ic.node.op == "kpu_conv2d":
                    return ic.node
    return None
