"""The measurement of ``kmodelpy compare``: the float model and the emulated kmodel side by side, one
picture at a time, every source tensor matched by construction (:mod:`kmodelpy.compiler.tensor_map`).

:class:`Session` holds what a worker's pictures share (the float model, its own kmodel, the taps, the
loaders); :meth:`Session.measure` runs one picture and returns a :class:`PictureStats` — small per-layer
sums that :meth:`PictureStats.merge` adds up in picture order (``--jobs``: one Session per thread,
:func:`kmodelpy.parallel.map_ordered`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..errors import InputError

CODES = 256


@numba.njit(cache=True, nogil=True)
def _sums(f, k, zp, scale, counts):
    """One pass over float values ``f`` and kmodel values ``k``: (Σf², Σk², Σf·k, Σ(k−f)², Σ(grid(f)−f)², max|k−f|)
    in float64, and (when ``scale`` > 0) the codes of ``f`` on the uint8 grid (0..255; 256 below, 257 above);
    grid(f) rounds to the grid without clamping."""
    ff = kk = fk = ee = rr = 0.0
    mx = 0.0
    for i in range(f.size):
        a = np.float64(f[i])
        b = np.float64(k[i])
        e = b - a
        ff += a * a
        kk += b * b
        fk += a * b
        ee += e * e
        if abs(e) > mx:
            mx = abs(e)
        if scale > 0:
            q = np.floor(a * scale + zp + 0.5)
            r = (q - zp) / scale - a
            rr += r * r
            counts[256 if q < 0 else (257 if q > 255 else np.int64(q))] += 1
    return ff, kk, fk, ee, rr, mx


@dataclass
class LayerSums:
    """Sums over every element of one source tensor and every picture so far."""

    n: int = 0
    ff: float = 0.0  # Σ f²
    kk: float = 0.0  # Σ k²
    fk: float = 0.0  # Σ f·k
    ee: float = 0.0  # Σ (k − f)²
    max_abs: float = 0.0
    rr: float = 0.0  # Σ (f rounded to the uint8 grid, unclamped − f)²: what the grid's steps alone cost
    # the float values on the tensor's uint8 grid: code counts (index 0..255), below (256) and above (257)
    codes: np.ndarray | None = None

    def add(self, f: np.ndarray, k: np.ndarray, qp) -> None:
        f = np.ascontiguousarray(f, np.float32).ravel()
        k = np.ascontiguousarray(k, np.float32).ravel()
        zp, scale = qp if qp is not None else (0, 0.0)
        counts = np.zeros(CODES + 2, np.int64)
        sums = _sums(f, k, float(zp), float(scale), counts)
        self.n += f.size
        self.ff += sums[0]
        self.kk += sums[1]
        self.fk += sums[2]
        self.ee += sums[3]
        self.rr += sums[4]
        self.max_abs = max(self.max_abs, sums[5])
        if qp is not None:
            self.codes = counts if self.codes is None else self.codes + counts

    def merge(self, o: "LayerSums") -> None:
        self.n += o.n
        self.ff += o.ff
        self.kk += o.kk
        self.fk += o.fk
        self.ee += o.ee
        self.rr += o.rr
        self.max_abs = max(self.max_abs, o.max_abs)
        if o.codes is not None:
            self.codes = o.codes.copy() if self.codes is None else self.codes + o.codes


@dataclass
class PictureStats:
    """One picture's (or several merged pictures') contribution."""

    pictures: int = 0
    layers: dict = field(default_factory=dict)  # key -> LayerSums
    outputs: list = field(default_factory=list)  # per output: list of (float, kmodel) flat arrays, one per picture

    def merge(self, o: "PictureStats") -> None:
        self.pictures += o.pictures
        for key, s in o.layers.items():
            if key in self.layers:
                self.layers[key].merge(s)
            else:
                self.layers[key] = s
        if not self.outputs:
            self.outputs = [list(v) for v in o.outputs]
        else:
            for mine, theirs in zip(self.outputs, o.outputs):
                mine.extend(theirs)


class Session:
    """Everything the pictures share. ``taps`` (key → Tap) is empty for an outputs-only comparison."""

    def __init__(self, float_model, kmodel, taps: dict, fmt: str, mean: float, std: float):
        from ..images import model_chw

        self.float_model = float_model
        self.graph = float_model.graph
        self.kmodel = kmodel
        self.taps = taps
        self.by_node: dict[int, list] = {}
        for t in taps.values():
            self.by_node.setdefault(t.node, []).append(t)
        self.fmt, self.mean, self.std = fmt, float(mean), float(std)
        self.chw = model_chw(kmodel.input_shape)

    # ---------------------------------------------------------------- inputs
    def inputs(self, path) -> tuple[np.ndarray, np.ndarray]:
        """(float model input, kmodel input) of one picture."""
        from ..images import load_pair

        return load_pair(path, self.fmt, self.kmodel.input_dtype, self.chw, self.mean, self.std)

    # ---------------------------------------------------------------- one picture
    def measure(self, path) -> PictureStats:
        from ..ir.origins import evaluate_sources

        xf, xk = self.inputs(path)
        fouts, fvals = evaluate_sources(self.float_model, xf, self.taps)
        stats = PictureStats(pictures=1)
        model = self.kmodel
        model.set_input(np.asarray(xk).reshape(model.input_shape))
        kvals: dict = {}
        by_node = self.by_node

        def after(k, mem):
            for t in by_node.get(k, ()):
                kvals[t.key] = t.read(mem)

        after(-1, model.mem)  # the taps on the kmodel's input
        model.run_nodes(after if by_node else None)
        if model.last_error:
            raise InputError(f"{path}: the kmodel stopped: {model.last_error}")
        kouts = model.read_outputs()
        for key, k in kvals.items():
            f = fvals.get(key)
            if f is None or f.size != k.size:
                continue
            s = LayerSums()
            s.add(f, k.reshape(f.shape), self.taps[key].quant_param)
            stats.layers[key] = s
        if len(fouts) != len(kouts):
            raise InputError(f"the kmodel has {len(kouts)} outputs, the model {len(fouts)}: not compiled from it")
        for i, (f, k) in enumerate(zip(fouts, kouts)):
            f = np.asarray(f, np.float32).ravel()
            k = np.asarray(k).astype(np.float32).ravel()
            if f.size != k.size:
                raise InputError(f"output {i}: the kmodel gives {k.size} values, the model {f.size}: the kmodel "
                                 "was not compiled from this model")
            stats.outputs.append([(f, k)])
        return stats
