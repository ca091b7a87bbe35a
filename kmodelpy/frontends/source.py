"""A front-end-neutral view of a source model's layers, for the KPU fit report (:mod:`kmodelpy.fit_rules`).

Each front end lists its operators as :class:`SourceOp` (``kmodelpy.frontends.<format>.source``): the
operator's own name (``CONV_2D``, ``Conv``) and a neutral ``kind`` the rules dispatch on, its tensors, and
for convolution / dense layers their geometry and weights. :class:`SourceModel` adds the imported HLIR graph
(whose ``graph.source`` maps each node to the index of the operator it came from) and the framework's
wording of the fixes the report suggests (``hints``).

Kinds: ``conv``, ``depthwise``, ``dense``, ``transpose_conv``, ``pool`` (``pool_op`` "max"/"mean"),
``reduce``, ``elementwise`` (``binary``: an operation of two operands), ``clamp``, ``prelu``, ``pad``,
``reshape``, ``transpose``, ``data`` (other data movement), ``resize`` (a resize with its sampling in
``SourceOp.resize``), ``concat``, ``softmax``, ``other``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: elementwise operators the KPU's activation approximates piecewise-linearly (the report warns)
CURVED = ("sigmoid", "tanh", "exp", "hard_swish")


@dataclass
class SourceOp:
    index: int
    op: str  # the source format's own operator name
    kind: str
    output: str
    shape: tuple  # the output's shape as the source declares it (NHWC for TFLite, NCHW for ONNX)
    inputs: list  # tensor keys (None for an absent optional input)
    outputs: list
    const: dict = field(default_factory=dict)  # input position -> constant value
    binary: bool = False  # elementwise operation of two operands
    curve: str = ""  # one of CURVED for a curved elementwise function
    pool_op: str = ""  # "max" / "mean" for pools
    # convolution / dense geometry (channels-first where it matters)
    in_shape: tuple = ()  # the data input's shape, NCHW
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    dilation: tuple = (1, 1)
    groups: int = 1
    weights: np.ndarray | None = None  # conv weights OIHW / dense weights [N, K] (None: not constant)
    params: int = 0
    notes: list = field(default_factory=list)
    # kind "resize": (the imported ``resize`` node's Sampling, in HW, out HW), set by SourceModel
    resize: tuple = ()

    @property
    def cin(self) -> int:
        return self.in_shape[1] if len(self.in_shape) > 1 else 1

    def data_input(self):
        """The first input that is not a constant (None if every input is)."""
        return next((t for k, t in enumerate(self.inputs) if t is not None and k not in self.const), None)


@dataclass
class SourceModel:
    path: str
    layout: str  # "NHWC" or "NCHW": how ``SourceOp.shape`` is written
    ops: list
    graph: object  # the imported HLIR graph, graph.source: node -> (op index, ...)
    hints: dict  # fix wording in the framework's terms (see kmodelpy.fit_rules.HINT_KEYS)

    def __post_init__(self):
        by_index = {op.index: op for op in self.ops}
        for n, src in getattr(self.graph, "source", {}).items():
            if n.op == "resize" and src[0] in by_index:
                by_index[src[0]].resize = (n["sampling"], tuple(n.input.shape[2:]), tuple(n["new_size"]))

    def producers(self) -> dict:
        return {t: op.index for op in self.ops for t in op.outputs if t is not None}

    def consumers(self) -> dict:
        out: dict = {}
        for op in self.ops:
            for t in op.inputs:
                if t is not None:
                    out.setdefault(t, []).append(op.index)
        return out
