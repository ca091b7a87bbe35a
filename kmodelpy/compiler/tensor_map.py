"""Which kmodel buffer holds which source tensor, by construction (the compiler's side structure for
``kmodelpy compare`` and ``--bias-correction``; never written into the kmodel).

The front end tags every source tensor's connector and the compiler keeps the tags true through every
rewrite and the lowering (:mod:`kmodelpy.ir.origins`). After scheduling, each tagged LLIR output is a
buffer of the kmodel; :func:`tensor_map` turns them into :class:`Tap` records: read ``range`` right after
kmodel node ``node`` has run (−1: the input, before the first node), view it as ``shape``/``dtype`` (KPU
RAM in its row layout), apply ``steps``, and you hold the source tensor as the kmodel computed it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.binio import MemoryRange
from ..ir.graph import MEM_KPU, Graph, OutputConnector
from ..ir.origins import MERGED, VALUE, VIEWS, Step, apply_steps
from .emit import NOT_EMITTED, memory_range
from .schedule import Schedule

CORRECTABLE = ("kpu_conv2d", "quantized_conv2d", "quantized_matmul")


@dataclass
class Tap:
    key: str  # the source tensor
    node: int  # kmodel node after which the buffer holds it (-1: before the first node)
    range: MemoryRange
    shape: tuple  # shape of the buffer's tensor (NCHW for 4-D)
    dtype: str  # "uint8" | "float32"
    memory: str  # "main" | "kpu" | "const"
    steps: tuple  # Steps turning the buffer's tensor into the source tensor
    where: str  # "KPU" | "CPU uint8" | "CPU float" | "input" | "constant"
    compute: int | None  # kmodel node that computed it (None for the input and constants)
    compute_op: str  # its LLIR kind ("kpu_conv2d", "quantized_conv2d", ...; "" for the input)
    chain: tuple  # Steps from the compute node's output to the source tensor
    compute_shape: tuple  # shape of the compute node's output (channels on axis 1)
    act: tuple | None  # the compute node's clamp (lo, hi), if any

    @property
    def quant_param(self) -> tuple[int, float] | None:
        """(zero_point, scale) of the uint8 grid the values were computed on (q = x·scale + zp): the
        last dequantize between the computing node and the source tensor; None for float computations."""
        for s in reversed(self.chain):
            if s.op == "dequantize":
                return s.quant_param
        return None

    def read(self, mem) -> np.ndarray:
        """The source tensor (float32, source layout) from a running kmodel's memory (kmodelpy.runtime.Memory)."""
        if self.memory == MEM_KPU:
            from ..kpu.layout import kpu_download

            shape4 = (1,) * (4 - len(self.shape)) + tuple(self.shape)
            raw = kpu_download(mem.kpu, self.range.start, shape4).reshape(self.shape)
        else:
            n = int(np.prod(self.shape))
            raw = mem.view(self.range, np.dtype(self.dtype), n).reshape(self.shape).copy()  # later nodes reuse it
        return np.asarray(apply_steps(self.steps, raw), np.float32)


def emitted_nodes(sched: Schedule) -> list:
    """The LLIR nodes of the kmodel's nodes, in order (``kmodel.nodes[i]`` was emitted from the i-th)."""
    return [n for n in sched.sequence if n.op not in NOT_EMITTED]


def tensor_map(llir: Graph, sched: Schedule) -> dict[str, Tap]:
    """key → the first buffer (in run order) that holds the source tensor ``key`` in a readable form."""
    index = {id(n): k for k, n in enumerate(emitted_nodes(sched))}
    taps: dict[str, Tap] = {}
    for n in sched.sequence:
        for oc in n.outputs:
            if not oc.origins or oc not in sched.buffers:
                continue
            for o in oc.origins:
                if o.kind != VALUE:
                    continue
                tap = _tap(o, oc, index, sched)
                if tap is not None and (o.key not in taps or (tap.node, len(tap.steps)) < (taps[o.key].node,
                                                                                            len(taps[o.key].steps))):
                    taps[o.key] = tap
    return taps


def merged_layers(llir: Graph) -> dict[str, str]:
    """key → the source tensor whose kmodel buffer now also computes layer ``key`` (its own tensor was fused
    away, e.g. a conv's output before the activation merged into it): the value tag on the connector that
    carries the mark, or on the nearest one after it."""
    merged: dict[str, str] = {}
    for n in llir.nodes:
        for oc in n.outputs:
            keys = [o.key for o in oc.origins if o.kind == MERGED]
            if not keys:
                continue
            host = _value_downstream(oc)
            for key in keys:
                if host is not None:
                    merged.setdefault(key, host)
    return merged


def _value_downstream(oc: OutputConnector, depth: int = 6) -> str | None:
    hosts = [o.key for o in oc.origins if o.kind == VALUE]
    if hosts or depth == 0:
        return hosts[0] if hosts else None
    for ic in oc.consumers:
        if ic.node.outputs:
            found = _value_downstream(ic.node.outputs[0], depth - 1)
            if found is not None:
                return found
    return None


def _tap(o, oc: OutputConnector, index: dict, sched: Schedule) -> Tap | None:
    if oc.dtype == "uint8" and not any(s.op == "dequantize" for s in o.steps):
        return None  # codes without their quant param cannot be compared (cannot happen for float sources)
    node = oc.node
    chain = list(o.steps)
    c = oc
    while c.node.op in VIEWS and c.node.inputs and c.node.inputs[0].producer is not None:
        chain.insert(0, Step(c.node))
        c = c.node.inputs[0].producer
    comp = c.node
    if comp.op == "input":
        where, compute = "input", None
    elif comp.op == "constant":
        where, compute = "constant", None
    elif comp.op == "kpu_conv2d":
        where, compute = "KPU", index[id(comp)]
    else:
        where, compute = ("CPU uint8" if c.dtype == "uint8" else "CPU float"), index.get(id(comp))
    at = -1 if node.op in ("input", "constant") else index[id(node)]
    act = comp.attrs.get("act_range" if comp.op == "kpu_conv2d" else "fused_activation")
    return Tap(o.key, at, memory_range(sched, oc), tuple(oc.shape), oc.dtype, oc.memory, tuple(o.steps), where,
               compute, comp.op if compute is not None else "", tuple(chain), tuple(c.shape),
               tuple(act) if act is not None else None)


def channel_index(tap: Tap) -> np.ndarray:
    """For every element of the source tensor, the output channel (axis 1 of the compute node's output)
    it comes from; −1 where a step padded it in."""
    shape = tap.compute_shape
    ch = np.broadcast_to(np.arange(shape[1], dtype=np.float32).reshape((1, -1) + (1,) * (len(shape) - 2)),
                         shape).copy()
    return np.asarray(apply_steps(tap.chain, ch, layout_only=True, fill=-1.0)).astype(np.int64)
