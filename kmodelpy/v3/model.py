"""The kmodel v3 runner: what the K210 SDK's ``kpu_run_kmodel`` does (runtime spec §1.2).

* Input: the first layer decides. A K210_CONV first layer takes a planar CHW u8 image, uploaded to
  KPU RAM at its ``image_src_addr`` in the KPU row layout (for widths that are multiples of 64 the
  SDK DMAs ``channel_switch_addr*64*C`` bytes instead: the same bytes when the layer is consistent,
  which is checked at load). A FULLY_CONNECTED first layer takes ``in_channels`` float32, copied to
  its input address. Any other first layer cannot be fed (the SDK returns -1).
* Layers run in file order; the main buffer (``main_mem_usage`` bytes) and the 2 MiB KPU RAM are
  zero-filled once per model and persist across runs.
* Outputs: every ``(address, size)`` of the header, float32 in main memory, in index order.

It is kmodel v4's :class:`kmodelpy.runtime.Model` (same interface: ``input_shape``, ``input_dtype``,
``output_shapes()``, ``run(x)``, ``output_bytes()``, ``profile(x)``, ``last_error``; the same input
placement, layer loop and error handling) with v3's input, outputs and load-time checks.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError, UnsupportedError
from ..format.binio import DT_FLOAT32, MEM_MAIN, MemoryRange
from ..runtime import Model as ModelV4
from .kmodel import KModelV3
from .layer import main_f32, type_name


class Model(ModelV4):
    """A loaded kmodel v3, ready to run. ``kmodelpy.load(path)`` returns one for a v3 file."""

    version = 3
    UNIT = "layer"

    def _check_input(self) -> None:
        self._place = self._find_input()

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "model") -> "Model":
        return cls(KModelV3.parse(data, path), path)

    # ---------------------------------------------------------------- input
    def _find_input(self):
        """(place, NCHW shape, dtype, element count): how kpu_run_kmodel feeds the first layer."""
        layers = self.kmodel.layers
        if not layers:
            raise FormatError(f"{self.path}: the kmodel v3 has no layers")
        if not self.kmodel.flags & 1 and any(layer.on_kpu for layer in layers):
            raise UnsupportedError(
                f"{self.path}: the kmodel v3 header's flags {self.kmodel.flags} select the KPU's 16-bit weight mode; "
                "kmodelpy emulates its 8-bit mode only (flags bit 0 set, as in every v3 model found)"
            )
        first = layers[0]
        if first.code == 10240:
            la = first.layer_argument
            c, h, w = la.in_shape
            if w % 64 == 0 and la.channel_switch_addr * 64 != h * w:
                raise FormatError(
                    f"{self.path}: layer 0 (K210_CONV): channel_switch_addr {la.channel_switch_addr} does not "
                    f"match its {w}x{h} input, so the SDK's input DMA would copy "
                    f"{la.channel_switch_addr * 64 * c} bytes instead of {c * h * w}; the file is damaged"
                )
            return first.inputs()[0], (1, c, h, w), np.dtype(np.uint8), c * h * w
        if first.code == 18:
            n = int(first.in_channels)
            return main_f32(first.input, n), (1, n), np.dtype(np.float32), n
        raise UnsupportedError(
            f"{self.path}: layer 0 is {type_name(first.code)}: the K210 SDK feeds only a K210_CONV or "
            "FULLY_CONNECTED first layer (kpu_run_kmodel returns -1), so this kmodel cannot be run"
        )

    def _input_place(self):
        return self._place

    def _check_ranges(self) -> None:
        """Refuse at load any range outside main memory or KPU RAM: one line, not a crash later."""
        mem = self.mem
        mem.node = "the input"
        mem.span(self._place[0])
        for i, (address, size) in enumerate(self.kmodel.outputs):
            mem.node = f"output {i}"
            mem.span(MemoryRange(MEM_MAIN, DT_FLOAT32, address, size))
        for k, layer in enumerate(self.kmodel.layers):
            mem.node = f"layer {k} ({layer.name})"
            try:
                ranges = list(layer.inputs()) + list(layer.outputs())
            except FormatError as e:
                raise FormatError(f"{self.path}: {mem.node}: {' '.join(str(e).split())}") from None
            for mr in ranges:
                if mr.size:
                    mem.span(mr)
        mem.node = "?"

    @property
    def input_shape(self) -> list[int]:
        return list(self._place[1])

    @property
    def input_dtype(self) -> np.dtype:
        return self._place[2]

    # ---------------------------------------------------------------- outputs
    def _find_output_shapes(self) -> list[list[int]]:
        return [self._output_shape(address, size // 4) for address, size in self.kmodel.outputs]

    def _output_shape(self, address: int, n: int) -> list[int]:
        """From the last layer writing the output (element-wise layers pass the question to their
        input's producer); a flat vector when none says."""
        layers = self.kmodel.layers
        k, place = len(layers), (MEM_MAIN, address)
        while True:
            for k in range(k - 1, -1, -1):
                if any((o.memory_type, o.start) == place and o.size for o in layers[k].outputs()):
                    break
            else:
                return [n]
            shape = layers[k].output_shape()
            if shape is not None:
                return [int(d) for d in shape] if int(np.prod(shape)) == n else [n]
            ins = layers[k].inputs()
            if len(ins) != 1:
                return [n]
            place = (ins[0].memory_type, ins[0].start)

    def read_outputs(self) -> list[np.ndarray]:
        outs = []
        for (address, size), shape in zip(self.kmodel.outputs, self.output_shapes()):
            raw = self.mem.main[address : address + size].copy()
            outs.append(raw[: size // 4 * 4].view("<f4").reshape(shape))
        return outs

    def output_bytes(self) -> bytes:
        """Every output's bytes, concatenated in index order (what the reference ``out/X.bin`` holds)."""
        return b"".join(self.mem.main[a : a + s].tobytes() for a, s in self.kmodel.outputs)
