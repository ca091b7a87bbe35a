"""The kmodel v4 interpreter: memories, input placement, node loop, outputs.

Mirrors ``ncc infer`` (nncase v0.2.0-beta4): main memory is allocated once per model and persists
across runs (it is zero-filled here; ncc leaves it uninitialised), KPU RAM is 2 MiB zero-filled once,
only input 0 is fed, nodes run in file order, and a kernel *error* stops the run but the outputs are
still returned (``Model.last_error`` says what happened), as ``ncc infer`` still writes the file.
"""
from __future__ import annotations

import numpy as np

from .errors import FormatError, InputError, KernelError, KmodelpyError
from .format.binio import DT_FLOAT32, DT_UINT8, MEM_CONST, MEM_KPU, MEM_MAIN, MemoryRange
from .format.kmodel import KModel
from .parallel import one_blas_thread

KPU_RAM_SIZE = 2 << 20


class KernelFailure(Exception):
    """Raised by a kernel where ncc's kernel returns an error: the run stops, outputs are kept.
    The message is ncc's (``error occurs in running kernel: <display name>``)."""


class Memory:
    """The three memory spaces of a running kmodel."""

    def __init__(self, km: KModel, file: str = "model"):
        self.const = np.frombuffer(km.constants, dtype=np.uint8)
        self.main = np.zeros(km.main_mem, dtype=np.uint8)
        self.kpu = np.zeros(KPU_RAM_SIZE, dtype=np.uint8)
        self.file = file
        self.node = "?"

    def space(self, mr: MemoryRange) -> np.ndarray:
        if mr.memory_type == MEM_MAIN:
            return self.main
        if mr.memory_type == MEM_KPU:
            return self.kpu
        if mr.memory_type == MEM_CONST:
            return self.const
        raise FormatError(f"{self.file}: {self.node}: memory type {mr.memory_type} is not const/main/kpu")

    def span(self, mr: MemoryRange, size: int | None = None) -> np.ndarray:
        """uint8 view of ``size`` (default ``mr.size``) bytes at ``mr.start`` (writable unless const)."""
        buf = self.space(mr)
        n = mr.size if size is None else int(size)
        if n < 0:
            raise FormatError(f"{self.file}: {self.node}: range {mr} is used with a negative size {n}; the file is damaged")
        if mr.start + n > len(buf):
            names = {MEM_MAIN: "main memory", MEM_KPU: "KPU RAM", MEM_CONST: "the constants"}
            raise FormatError(
                f"{self.file}: {self.node}: range {mr} ends at byte {mr.start + n}, past the end of "
                f"{names[mr.memory_type]} ({len(buf)} bytes); the file is damaged"
            )
        return buf[mr.start : mr.start + n]

    def view(self, mr: MemoryRange, dtype=None, count: int | None = None) -> np.ndarray:
        """Typed 1-D view of a range: ``floor(size / itemsize)`` elements (or ``count``).
        ``dtype`` defaults to the range's datatype. Unaligned starts give a (slower) unaligned view."""
        dt = np.dtype(dtype) if dtype is not None else mr.dtype
        n = mr.size // dt.itemsize if count is None else count
        return self.span(mr, n * dt.itemsize).view(dt)

    def f32(self, mr: MemoryRange, count: int | None = None) -> np.ndarray:
        return self.view(mr, np.float32, count)

    def u8(self, mr: MemoryRange, count: int | None = None) -> np.ndarray:
        return self.view(mr, np.uint8, count)


class Model:
    """A loaded kmodel, ready to run. ``kmodelpy.load(path)`` returns one."""

    version = 4  # the kmodel version (kmodelpy.v3.model.Model: 3)
    UNIT = "node"  # what errors call a step of the model (kmodel v3: "layer")

    def __init__(self, km: KModel, path: str = "model"):
        self.kmodel = km
        self.path = str(path)
        self.mem = Memory(km, self.path)
        self.last_error: str | None = None
        self._shapes: list[list[int]] | None = None
        self._check_input()
        self._check_ranges()

    def _check_input(self) -> None:
        """Refuse, at load time, a model that cannot be fed (kmodel v3 also finds its input here)."""
        if not self.kmodel.inputs:
            raise FormatError(f"{self.path}: the kmodel has no inputs")

    def _check_ranges(self) -> None:
        """Refuse, at load time, any range that lies outside its memory (ncc never checks and would
        read or write past its buffers): one clear line instead of a crash in a kernel."""
        mem = self.mem
        mem.node = "input 0 descriptor"
        mr = self.kmodel.inputs[0]
        mem.span(mr)
        if mr.memory_type not in (MEM_MAIN, MEM_KPU) or mr.datatype not in (DT_FLOAT32, DT_UINT8):
            raise FormatError(
                f"{self.path}: input 0 is {mr}: an input must be float32/uint8 in main memory or "
                "uint8 in KPU RAM; the file is damaged"
            )
        if mr.memory_type == MEM_KPU and mr.datatype != DT_UINT8:
            raise FormatError(f"{self.path}: input 0 is a float input in KPU RAM, which ncc cannot feed")
        shape = self.input_shape
        if any(d <= 0 for d in shape) or any(d > KPU_RAM_SIZE for d in shape):
            raise FormatError(f"{self.path}: input 0 shape {shape} is impossible; the file is damaged")
        if mr.memory_type == MEM_KPU:
            from .kpu.layout import kpu_bytes

            nbytes = kpu_bytes(shape)
        else:
            nbytes = int(np.prod(shape, dtype=np.int64)) * mr.itemsize
        mem.node = f"input 0 ({'x'.join(map(str, shape))})"
        mem.span(mr, nbytes)
        for i, mr in enumerate(self.kmodel.outputs):
            mem.node = f"output {i} descriptor"
            mem.span(mr)
        for k, op in enumerate(self.kmodel.ops):
            mem.node = f"node {k} ({op.name})"
            for mr in list(op.inputs()) + list(op.outputs()):
                if mr is not None and mr.size:
                    mem.span(mr)
        mem.node = "?"

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "model") -> "Model":
        return cls(KModel.parse(data, path), path)

    # ---------------------------------------------------------------- description
    @property
    def input_shape(self) -> list[int]:
        return list(self.kmodel.input_shapes[0])

    @property
    def input_dtype(self) -> np.dtype:
        return self.kmodel.inputs[0].dtype

    def output_shapes(self) -> list[list[int]]:
        """Shape of each output, from the last node that writes its range (NCHW as the node lays
        it out); a flat vector when no node says."""
        if self._shapes is None:
            self._shapes = self._find_output_shapes()
        return [list(s) for s in self._shapes]

    def _find_output_shapes(self) -> list[list[int]]:
        shapes = []
        for mr in self.kmodel.outputs:
            n = mr.size // mr.itemsize
            shape = self._producer_shape(mr, n)
            if shape is None or int(np.prod(shape, dtype=np.int64)) != n:
                shape = [n]
            shapes.append([int(d) for d in shape])
        return shapes

    def _producer_shape(self, mr: MemoryRange, n: int, k: int | None = None) -> list[int] | None:
        """Shape of the tensor in ``mr`` (``n`` elements) from the last node before node ``k`` writing
        it. Element-wise nodes whose body holds no shape (quantize, dequantize, unary, memory_copy, table
        lookup...) pass the question on to the producer of their single non-const input; a Concat joins
        its inputs' shapes along the axis its sizes give (``Concat.joined_shape``)."""
        ops = self.kmodel.ops
        k = len(ops) if k is None else k
        while True:
            for k in range(k - 1, -1, -1):
                if any(_same_place(mr, o) for o in ops[k].outputs()):
                    break
            else:
                return None
            try:
                shape = ops[k].output_shape(mr)
            except Exception:  # noqa: BLE001 - a damaged body: no shape, the flat vector is used
                return None
            if shape is not None:
                return list(shape)
            if hasattr(ops[k], "joined_shape"):
                return ops[k].joined_shape([self._producer_shape(r, r.size // r.itemsize, k) for r in ops[k].inputs()])
            ins = [r for r in ops[k].inputs() if r is not None and r.memory_type != MEM_CONST]
            if len(ins) != 1 or ins[0].size // ins[0].itemsize != n:
                return None
            mr = ins[0]

    # ---------------------------------------------------------------- running
    def set_input(self, x) -> None:
        """Place input 0 the way ``ncc infer`` does (raw copy to main memory, or kpu_upload)."""
        mr, shape, want, n_el = self._input_place()
        x = np.asarray(x)
        if x.dtype != want:
            if want == np.uint8 and x.dtype.kind in "iu" and x.size and (x.min() < 0 or x.max() > 255):
                raise InputError(f"{self.path}: input values must be 0..255 for this uint8 model")
            if want == np.uint8 and x.dtype.kind == "f":
                raise InputError(
                    f"{self.path}: the model input is uint8 but a {x.dtype} array was given; pass pixel "
                    "codes 0..255 as uint8"
                )
            x = x.astype(want)
        if x.size != n_el or (x.ndim not in (1, len(shape) - 1, len(shape))):
            raise InputError(
                f"{self.path}: input has shape {list(x.shape)} but the model wants "
                f"{'x'.join(map(str, shape))} (NCHW, {want}); pass a CHW or NCHW array"
            )
        x = np.ascontiguousarray(x).reshape(shape)
        if mr.memory_type == MEM_KPU:
            from .kpu.kernels import ram_upload  # (the layout was checked to fit by _input_place)

            ram_upload(self.mem.kpu, mr.start, x if x.flags.writeable else x.copy())  # (one kernel type)
        else:
            # ncc copies the whole tensor to input.start (the load-time check keeps it in memory)
            self.mem.span(mr, x.nbytes)[:] = x.reshape(-1).view(np.uint8)

    def _input_place(self):
        """(input range, NCHW shape, dtype, element count) of input 0, checked once."""
        place = self.__dict__.get("_place")
        if place is None:
            from .kpu.layout import kpu_bytes, kpu_upload

            mr = self.kmodel.inputs[0]
            shape = tuple(self.input_shape)
            want = np.dtype(np.float32) if mr.datatype == DT_FLOAT32 else np.dtype(np.uint8)
            if mr.memory_type == MEM_KPU:
                if mr.datatype != DT_UINT8:
                    raise FormatError(f"{self.path}: a float input in KPU memory cannot be fed")
                if mr.start < 0 or mr.start + kpu_bytes(shape) > len(self.mem.kpu):
                    kpu_upload(self.mem.kpu, mr.start, np.zeros(shape, np.uint8))  # says which range
            place = self.__dict__["_place"] = (mr, shape, want, int(np.prod(shape)))
        return place

    def run(self, x) -> list[np.ndarray]:
        """Run one input (CHW or NCHW; uint8 or float32 as the model wants). Returns the outputs as
        numpy arrays (copies), shaped by :meth:`output_shapes`."""
        self.set_input(x)
        self.run_nodes()
        return self.read_outputs()

    def run_nodes(self, after=None) -> None:
        """Run every node in file order (§B.26): a KernelFailure stops the run and is kept in
        ``last_error`` (ncc prints ``Fatal: ...`` and still writes the outputs); a KernelError
        (ncc throws) propagates. BLAS runs on this thread only (:data:`one_blas_thread`). ``after(k, mem)``,
        if given, is called once node ``k`` has run (to read any node's output range before a later node
        reuses it)."""
        self.last_error = None
        with one_blas_thread:
            for k, op in enumerate(self.kmodel.ops):
                if not self._run_node(k, op):
                    return
                if after is not None:
                    after(k, self.mem)

    def run_node(self, k: int) -> bool:
        """Run node ``k`` alone on the current memory; False when its kernel failed (``last_error``)."""
        with one_blas_thread:
            return self._run_node(k, self.kmodel.nodes[k].op)

    def _run_node(self, k: int, op) -> bool:
        mem = self.mem
        mem.node = f"{self.UNIT} {k} ({op.name})"
        try:
            op.run(mem)
        except KernelFailure as e:
            self.last_error = f"{self.path}: {mem.node}: {e}"
            return False
        except KernelError as e:
            raise KernelError(f"{self.path}: {mem.node}: {_one_line(e)}") from None
        except KmodelpyError:
            raise
        except _DAMAGE as e:
            # A body whose fields contradict each other (shapes vs. range sizes...): ncc would read
            # or write out of bounds; we stop with one line naming the node.
            raise FormatError(
                f"{self.path}: {mem.node} failed ({type(e).__name__}: {_one_line(e)}): its body's fields "
                "are inconsistent (a damaged file) or this is a kmodelpy bug (KMODELPY_DEBUG=1 shows where)"
            ) from e
        return True

    def profile(self, x, repeats: int = 1) -> list[tuple[int, str, float]]:
        """Run ``x`` ``repeats`` times and return ``[(node index, op name, best seconds)]`` for
        every node executed (to find the slow kernel)."""
        best: dict[int, float] = {}
        with one_blas_thread:
            self._profile_runs(x, repeats, best)
        return [(k, self.kmodel.ops[k].name, best[k]) for k in sorted(best)]

    def _profile_runs(self, x, repeats, best) -> None:
        import time

        for _ in range(max(1, repeats)):
            self.set_input(x)
            self.last_error = None
            for k, op in enumerate(self.kmodel.ops):
                t0 = time.perf_counter()
                ok = self._run_node(k, op)
                dt = time.perf_counter() - t0
                best[k] = min(best.get(k, dt), dt)
                if not ok:
                    break

    def read_outputs(self) -> list[np.ndarray]:
        outs = []
        for mr, shape in zip(self.kmodel.outputs, self.output_shapes()):
            raw = self.mem.span(mr).copy()
            n = mr.size // mr.itemsize
            outs.append(raw[: n * mr.itemsize].view(mr.dtype).reshape(shape))
        return outs

    def output_bytes(self) -> bytes:
        """All output ranges, raw, concatenated in output order: exactly what ``ncc infer`` writes."""
        return b"".join(self.mem.span(mr).tobytes() for mr in self.kmodel.outputs)


_DAMAGE = (IndexError, ValueError, OverflowError, ZeroDivisionError, MemoryError, KeyError)


def _one_line(e) -> str:
    return " ".join(str(e).split())


def _same_place(a: MemoryRange, b: MemoryRange) -> bool:
    return a.memory_type == b.memory_type and a.start == b.start and b.size > 0


def load_kmodel(path) -> Model:
    from .errors import read_user_file

    return model_from_bytes(read_user_file(path, "a .kmodel file"), str(path))


def model_from_bytes(data: bytes, path: str = "model"):
    """A runnable model of kmodel bytes: v4 (:class:`Model`) or v3 (:class:`kmodelpy.v3.model.Model`),
    told apart by the first word."""
    from .v3.kmodel import is_kmodel_v3

    if is_kmodel_v3(data):
        from .v3.model import Model as ModelV3

        return ModelV3.from_bytes(data, path)
    return Model.from_bytes(data, path)
