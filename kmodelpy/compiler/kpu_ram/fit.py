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
3. **Split into row bands.** Otherwise the KPU layer at that age runs as the fewest row bands that
   fit (:mod:`.bands`, :func:`.rewrite.split_chain`), bit-identical to the whole layer — together
   with the KPU layers before and after it that it is linked to KPU→KPU (nothing else reading the
   link), when that copies fewer bytes: a band then keeps the intermediate tensors in KPU RAM instead
   of joining and re-uploading them. Among the runs of up to ``MAX_CHAIN`` linked layers that contain
   the layer and fit, the cheapest is taken (bytes copied, plus halo rows recomputed by the KPU at
   ``MACS_PER_BYTE`` multiply-accumulates per byte).
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
from .bands import Band, LayerRows, smallest_split
from .rewrite import evict, split_chain

COPY_OPS = frozenset({"strided_slice", "concat", "kpu_upload", "pad", "transpose", "memory_copy"})
MAX_CHAIN = 6  # longest run of linked KPU layers split together
# the K210's CPU copies some 10^8 bytes a second, its KPU does some 10^11 multiply-accumulates: a band's
# recomputed halo rows cost as much as copying one byte per thousand of their multiply-accumulates
MACS_PER_BYTE = 1000


@dataclass
class Remedy:
    """One change ``fit_kpu_ram`` made: ``kind`` is "split", "evict" or "cpu"; ``layer`` the layer's
    name; ``text`` one line for the compile output, with the cost."""

    kind: str
    layer: str
    text: str
    cost: str = ""  # the cost part of ``text``
    layers: tuple = ()  # every layer a "split" runs as bands (``layer`` is the one that did not fit)
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
    """Evict the largest idle KPU tensor at the peak age (or at the age of the KPU layer whose tensors are
    live there), else split (or give up on) that layer, which is then alone in KPU RAM."""
    kpu = sched.allocators[MEM_KPU]
    owner = {b: o for o, b in sched.buffers.items() if o.memory == MEM_KPU}
    at = {id(n): k for k, n in enumerate(sched.sequence)}
    t, _ = kpu.peak_live()
    conv = _layer_at(sched.sequence[t])
    for age in (t, at[id(conv)]) if conv is not None else (t,):
        idle = [b for b in kpu.live_at(age) if owner[b] not in _touched(sched.sequence[age])]
        if idle:
            return _evict(llir, sched, owner[max(idle, key=lambda b: (b.size, -b.birth))], age, at)
    if conv is None:
        raise AssertionError(f"no KPU layer to split at {sched.sequence[t]} (kmodelpy compiler bug)")
    return _split(llir, conv, budget)


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
    what = f"+{cost} B copied per run"
    return Remedy("evict", out.node.name, f"KPU RAM: the output of {label} ({size} B) waits in main memory, not in "
                  f"KPU RAM, until {names} reads it: {what}", what, copied_bytes=cost)


def _split(llir: Graph, conv: Node, budget: int) -> Remedy:
    """Split the cheapest fitting run of linked KPU layers around ``conv``; a "cpu" remedy when none fits."""
    source = conv.attrs.get("band_of", conv.name)
    best = None
    for chain in _runs(conv):
        bands = smallest_split([(c.inputs[0].shape, c.outputs[0].shape) for c in chain],
                               [layer_rows(c) for c in chain], budget)
        if bands is not None:
            copies, extra = split_cost(chain, bands)
            if best is None or copies + extra / MACS_PER_BYTE < best[0]:
                best = copies + extra / MACS_PER_BYTE, chain, bands
    if best is None:
        macs = layer_macs(conv)
        what = f"{macs} multiply-accumulates per run"
        return Remedy("cpu", source, f"KPU RAM: {describe(conv)} does not fit even as bands of one output row: it "
                      f"runs on the CPU ({what})", what, cpu_macs=macs)
    _, chain, bands = best
    macs, copies = kpu_macs(llir), copied_bytes(llir)
    labels = " + ".join(describe(c) for c in chain)
    for c in chain:
        c.attrs["band_of"] = c.attrs.get("band_of", c.name)
    split_chain(llir, chain, bands)
    extra, cost = kpu_macs(llir) - macs, copied_bytes(llir) - copies
    rows = ", ".join(f"{b.in_begin}-{b.in_end}" for b in bands)
    what = f"KPU work +{100 * extra / max(macs, 1):.1f}% (halo rows), +{cost} B copied per run"
    return Remedy("split", source, f"KPU RAM: {labels} run{'s' if len(chain) == 1 else ''} as {len(bands)} row "
                  f"bands (input rows {rows}): {what}", what, layers=tuple(c.attrs["band_of"] for c in chain),
                  bands=len(bands), extra_kpu_macs=extra, copied_bytes=cost)


def layer_rows(conv: Node) -> LayerRows:
    return LayerRows(int(conv.inputs[0].shape[2]), 3 if int(conv.attrs["filter_type"]) == 1 else 1,
                     int(conv.attrs["pool_type"]))


def _linked(a: Node, b: Node | None) -> bool:
    """``b`` is a KPU layer reading ``a``'s KPU output, which nothing else reads (``a`` has no
    main-memory readers either): a band can run both and keep the tensor between them in KPU RAM."""
    if b is None or b.op != "kpu_conv2d" or "band_of" in b.attrs or "band_of" in a.attrs:
        return False
    readers = [ic.node for ic in a.outputs[0].consumers if ic.node.op != "ignore"]
    return readers == [b] and not (len(a.outputs) > 1 and a.outputs[1].consumers)


def _runs(conv: Node) -> list[list[Node]]:
    """Runs of up to MAX_CHAIN linked KPU layers that contain ``conv``, the longest first."""
    before, after = [], []
    p = conv.inputs[0].producer.node
    while len(before) < MAX_CHAIN - 1 and p.op == "kpu_conv2d" and _linked(p, before[0] if before else conv):
        before.insert(0, p)
        p = p.inputs[0].producer.node
    last = conv
    while len(after) < MAX_CHAIN - 1:
        readers = [ic.node for ic in last.outputs[0].consumers if ic.node.op != "ignore"]
        nxt = readers[0] if len(readers) == 1 else None
        if not _linked(last, nxt):
            break
        after.append(nxt)
        last = nxt
    line = before + [conv] + after
    k = len(before)
    runs = [line[i:j] for i in range(k + 1) for j in range(k + 1, len(line) + 1) if j - i <= MAX_CHAIN]
    return sorted(runs, key=len, reverse=True)


def _u8_bytes(shape, rows=None) -> int:
    n, c, h, w = shape
    return n * c * (h if rows is None else rows) * w


def split_cost(chain: list[Node], bands: list[Band]) -> tuple[int, int]:
    """(bytes the CPU copies per run, KPU multiply-accumulates) that splitting ``chain`` into ``bands``
    adds — what :func:`copied_bytes` and :func:`kpu_macs` measure after :func:`split_chain`."""
    first, last = chain[0], chain[-1]
    x, y = first.inputs[0], last.outputs[0]
    copies = sum(2 * _u8_bytes(x.shape, b.in_rows) + _u8_bytes(y.shape, b.band_rows) for b in bands)
    copies += sum(_u8_bytes(y.shape, b.out_end - b.out_begin) for b in bands if (b.keep_begin, b.keep_end)
                  != (0, b.band_rows))
    copies += _u8_bytes(y.shape) * (1 + any(ic.node.op != "ignore" for ic in y.consumers))  # join, re-upload
    src, others = x.producer.node, len(x.producer.consumers) > 1
    if src.op == "kpu_conv2d" and len(src.outputs) == 1:
        copies += _u8_bytes(x.shape)  # the KPU layer before gets a main-memory output
    elif src.op == "kpu_upload" and not others:
        copies -= _u8_bytes(x.shape)  # its upload goes
    elif src.op == "input" and others:
        copies += _u8_bytes(x.shape)  # the input moves to main memory: its other readers need an upload
    if len(last.outputs) > 1:
        copies -= _u8_bytes(y.shape)  # replaced by the join
    whole = sum(layer_macs(c) for c in chain)
    per_row = [layer_macs(c) // c.inputs[0].shape[2] for c in chain]
    extra = sum(r * (e - a) for b in bands for (a, e), r in zip(b.spans, per_row)) - whole
    return copies, extra


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
