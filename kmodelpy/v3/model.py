"""The kmodel v3 runner: what the K210 SDK's ``kpu_run_kmodel`` does (runtime spec §1.2).

* Input: the first layer decides. A K210_CONV first layer takes a planar CHW u8 image, uploaded to
  KPU RAM at its ``image_src_addr`` in the KPU row layout (for widths that are multiples of 64 the
  SDK DMAs ``channel_switch_addr*64*C`` bytes instead: the same bytes when the layer is consistent,
  which is checked at load). A FULLY_CONNECTED first layer takes ``in_channels`` float32, copied to
  its input address. Any other first layer cannot be fed (the SDK returns -1).
* Layers run in file order; the main buffer (``main_mem_usage`` bytes) and the 2 MiB KPU RAM are
  zero-filled once per model and persist across runs.
* Outputs: every ``(address, size)`` of the header, float32 in main memory, in index order.

The public interface is kmodel v4's :class:`kmodelpy.runtime.Model`: ``input_shape``, ``input_dtype``,
``output_shapes()``, ``run(x)``, ``output_bytes()``, ``profile(x)``, ``last_error``.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError, InputError, KernelError, KmodelpyError, UnsupportedError
from ..format.binio import DT_FLOAT32, MEM_MAIN, MemoryRange
from ..runtime import Memory
from .kmodel import KModelV3
from .layer import main_f32, type_name

_DAMAGE = (IndexError, ValueError, OverflowError, ZeroDivisionError, MemoryError, KeyError)


def _one_line(e) -> str:
    return " ".join(str(e).split())


class Model:
    """A loaded kmodel v3, ready to run. ``kmodelpy.load(path)`` returns one for a v3 file."""

    version = 3

    def __init__(self, km: KModelV3, path: str = "model"):
        self.kmodel = km
        self.path = str(path)
        self.mem = Memory(km, self.path)
        self.last_error: str | None = None
        self._shapes: list[list[int]] | None = None
        self._input = self._find_input()
        self._check_ranges()

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "model") -> "Model":
        return cls(KModelV3.parse(data, path), path)

    # ---------------------------------------------------------------- input
    def _find_input(self):
        """(kind, NCHW shape, dtype, place): how kpu_run_kmodel feeds the first layer."""
        layers = self.kmodel.layers
        if not layers:
            raise FormatError(f"{self.path}: the kmodel v3 has no layers")
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
            return "kpu", [1, c, h, w], np.dtype(np.uint8), first.inputs()[0]
        if first.code == 18:
            return "main", [1, int(first.in_channels)], np.dtype(np.float32), main_f32(first.input, first.in_channels)
        raise UnsupportedError(
            f"{self.path}: layer 0 is {type_name(first.code)}: the K210 SDK feeds only a K210_CONV or "
            "FULLY_CONNECTED first layer (kpu_run_kmodel returns -1), so this kmodel cannot be run"
        )

    def _check_ranges(self) -> None:
        """Refuse at load any range outside main memory or KPU RAM: one line, not a crash later."""
        mem = self.mem
        mem.node = "the input"
        mem.span(self._input[3])
        for i, (address, size) in enumerate(self.kmodel.outputs):
            mem.node = f"output {i}"
            mem.span(MemoryRange(MEM_MAIN, DT_FLOAT32, address, size))
        for k, layer in enumerate(self.kmodel.layers):
            mem.node = f"layer {k} ({layer.name})"
            try:
                ranges = list(layer.inputs()) + list(layer.outputs())
            except FormatError as e:
                raise FormatError(f"{self.path}: {mem.node}: {_one_line(e)}") from None
            for mr in ranges:
                if mr.size:
                    mem.span(mr)
        mem.node = "?"

    @property
    def input_shape(self) -> list[int]:
        return list(self._input[1])

    @property
    def input_dtype(self) -> np.dtype:
        return self._input[2]

    # ---------------------------------------------------------------- outputs
    def output_shapes(self) -> list[list[int]]:
        """Shape of each output, from the last layer writing it (element-wise layers pass the
        question to their input's producer); a flat vector when none says."""
        if self._shapes is None:
            self._shapes = [self._output_shape(address, size // 4) for address, size in self.kmodel.outputs]
        return [list(s) for s in self._shapes]

    def _output_shape(self, address: int, n: int) -> list[int]:
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

    # ---------------------------------------------------------------- running
    def set_input(self, x) -> None:
        kind, shape, want, place = self._input
        x = np.asarray(x)
        if x.dtype != want:
            if want == np.uint8 and x.dtype.kind == "f":
                raise InputError(f"{self.path}: the model input is uint8 but a {x.dtype} array was given; pass "
                                 "pixel codes 0..255 as uint8")
            if want == np.uint8 and x.size and (x.min() < 0 or x.max() > 255):
                raise InputError(f"{self.path}: input values must be 0..255 for this uint8 model")
            x = x.astype(want)
        n = int(np.prod(shape))
        if x.size != n:
            raise InputError(f"{self.path}: input has shape {list(x.shape)} but the model wants "
                             f"{'x'.join(map(str, shape))} ({want})")
        x = np.ascontiguousarray(x).reshape(shape)
        if kind == "kpu":
            from ..kpu.layout import kpu_upload

            kpu_upload(self.mem.kpu, place.start, x)
        else:
            self.mem.span(place)[:] = x.reshape(-1).view(np.uint8)

    def run(self, x) -> list[np.ndarray]:
        """Run one input (CHW/NCHW u8 image, or the float32 vector of an FC-first model); returns the
        outputs (float32 arrays, copies)."""
        self.set_input(x)
        self.run_layers()
        return self.read_outputs()

    def run_layers(self) -> None:
        self.last_error = None
        for k, layer in enumerate(self.kmodel.layers):
            self._run_layer(k, layer)

    run_nodes = run_layers  # the v4 Model's name

    def _run_layer(self, k: int, layer) -> None:
        mem = self.mem
        mem.node = f"layer {k} ({layer.name})"
        try:
            layer.run(mem)
        except KernelError as e:
            raise KernelError(f"{self.path}: {mem.node}: {_one_line(e)}") from None
        except KmodelpyError:
            raise
        except _DAMAGE as e:
            raise FormatError(
                f"{self.path}: {mem.node} failed ({type(e).__name__}: {_one_line(e)}): its body's fields are "
                "inconsistent (a damaged file) or this is a kmodelpy bug (KMODELPY_DEBUG=1 shows where)"
            ) from e

    def profile(self, x, repeats: int = 1) -> list[tuple[int, str, float]]:
        """``[(layer index, layer type, best seconds)]`` over ``repeats`` runs of ``x``."""
        import time

        best: dict[int, float] = {}
        layers = self.kmodel.layers
        for _ in range(max(1, repeats)):
            self.set_input(x)
            for k, layer in enumerate(layers):
                t0 = time.perf_counter()
                self._run_layer(k, layer)
                dt = time.perf_counter() - t0
                best[k] = min(best.get(k, dt), dt)
        return [(k, layers[k].name, best[k]) for k in sorted(best)]


def load_v3(data: bytes, path: str = "model") -> Model:
    return Model.from_bytes(data, path)
