"""Sparse TFLite constants (``Tensor.sparsity``) densified at read time, as TFLite's own format converter does
(tensorflow/lite/kernels/internal/utils/sparsity_format_converter.cc, ``SparseToDense``).

A sparse tensor of rank n with a k-dimensional block stores its values in a tree of n + k *levels*:
``traversal_order`` names the (original or block) dimension each level walks, ``block_map[i]`` the original
dimension block dimension ``n + i`` subdivides, and ``dim_metadata[level]`` is either DENSE (``dense_size``
children per node, indices 0..size-1) or SPARSE_CSR (node ``p``'s children are the positions
``array_segments[p] .. array_segments[p+1]-1``, their indices ``array_indices[...]``; both vectors are Int32,
Uint16 or Uint8). The buffer holds the leaves' values in depth-first order; every other element is zero.

The parameters are checked first, with the rules of TFLite's model verifier (``VerifyAndCountSparseElements``
in tensorflow/lite/core/tools/verifier.cc: permutations, dense sizes, monotone segments, indices in range,
exactly one value per leaf), so a malformed block is one :class:`FormatError` line naming the tensor instead
of TFLite's silent garbage. Then the leaves are placed exactly as ``FormatConverter::Populate`` places them
(the level indices of a leaf, block indices folded into their original dimension as
``orig·block_size + index``, row-major flattening over the dense shape).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import FormatError

DENSE, SPARSE_CSR = 0, 1


@dataclass
class DimMetadata:
    format: int
    dense_size: int = 0
    segments: np.ndarray | None = None  # int64, SPARSE_CSR only (None: the vector is missing)
    indices: np.ndarray | None = None


@dataclass
class Sparsity:
    traversal_order: list[int]
    block_map: list[int]
    dim_metadata: list[DimMetadata]


def read_sparsity(tflite, t) -> Sparsity | None:
    """The :class:`Sparsity` of a flatbuffer Tensor ``t`` (None for a dense tensor)."""
    s = t.Sparsity()
    if s is None:
        return None
    order = [int(v) for v in s.TraversalOrderAsNumpy()] if not s.TraversalOrderIsNone() else []
    block_map = [int(v) for v in s.BlockMapAsNumpy()] if not s.BlockMapIsNone() else []
    dims = []
    for k in range(s.DimMetadataLength()):
        d = s.DimMetadata(k)
        dims.append(DimMetadata(int(d.Format()), int(d.DenseSize()),
                                _index_vector(tflite, d.ArraySegmentsType(), d.ArraySegments()),
                                _index_vector(tflite, d.ArrayIndicesType(), d.ArrayIndices())))
    return Sparsity(order, block_map, dims)


def _index_vector(tflite, kind: int, table) -> np.ndarray | None:
    """An Int32Vector / Uint16Vector / Uint8Vector union member as int64 (None when absent)."""
    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}.get(int(kind))
    if cls is None or table is None:
        return None
    vec = cls()
    vec.Init(table.Bytes, table.Pos)
    if vec.ValuesIsNone():
        return None
    return np.asarray(vec.ValuesAsNumpy(), np.int64).reshape(-1)


def _check(sp: Sparsity, shape: tuple, n_values: int, bad) -> list[int]:
    """TFLite's verifier rules; returns the expanded dimension sizes (original dims divided by their blocks,
    then the block sizes). ``bad(reason)`` raises."""
    rank, order, dims = len(shape), sp.traversal_order, sp.dim_metadata
    total = len(order)
    if total < rank or len(dims) != total:
        bad(f"traversal_order has {total} levels and dim_metadata {len(dims)} for a rank-{rank} tensor")
    k = total - rank
    if len(sp.block_map) != k:
        bad(f"block_map has {len(sp.block_map)} entries for {k} block dimension(s)")
    if sorted(order[:rank]) != list(range(rank)) or sorted(order[rank:]) != list(range(rank, total)):
        bad(f"traversal_order {order} is not a permutation of the tensor's then the block's dimensions")
    if order[rank:] != list(range(rank, total)):
        bad(f"traversal_order {order} walks the block dimensions out of order")
    if sp.block_map != sorted(set(sp.block_map)) or any(not 0 <= b < rank for b in sp.block_map):
        bad(f"block_map {sp.block_map} must name distinct dimensions of the rank-{rank} tensor, in increasing order")
    sizes = list(shape) + [0] * k
    for i in range(k):
        block = dims[rank + i].dense_size
        if dims[rank + i].format != DENSE or block <= 0:
            bad(f"block level {rank + i} must be DENSE with a positive dense_size")
        sizes[order[rank + i]] = block
        b = sp.block_map[i]
        if shape[b] % block:
            bad(f"dimension {b} (size {shape[b]}) is not a multiple of its block size {block}")
        sizes[b] //= block
    count = 1
    for level, d in enumerate(dims):
        size = sizes[order[level]]
        if d.format == DENSE:
            if d.dense_size != size:
                bad(f"level {level} is DENSE with dense_size {d.dense_size}, the dimension has {size}")
            count *= size
        elif d.format == SPARSE_CSR:
            seg, idx = d.segments, d.indices
            if seg is None or idx is None:
                bad(f"level {level} is SPARSE_CSR without array_segments/array_indices")
            if seg.size != count + 1 or seg[0] != 0 or np.any(np.diff(seg) < 0) or seg[-1] != idx.size:
                bad(f"level {level}: array_segments must rise from 0 to {idx.size} (the number of indices) in "
                    f"{count + 1} entries, it has {seg.size}")
            if idx.size and (idx.min() < 0 or idx.max() >= size):
                bad(f"level {level}: array_indices must lie in 0..{size - 1}")
            count = int(idx.size)
        else:
            bad(f"level {level} has an unknown format {d.format}")
    if count != n_values:
        bad(f"the sparsity block describes {count} values, the buffer holds {n_values}")
    return sizes


def densify(values: np.ndarray, sp: Sparsity, shape: tuple, tensor: str, file: str) -> np.ndarray:
    """The dense ``shape`` array of a sparse tensor's stored ``values`` (1-D, its own dtype)."""
    def bad(reason: str):
        raise FormatError(f"{file}: sparse tensor '{tensor}' has a malformed sparsity block ({reason}); "
                          "re-export or re-download the model")

    shape = tuple(int(d) for d in shape)
    if any(d <= 0 for d in shape):
        bad(f"its shape {list(shape)} has an empty dimension")
    _check(sp, shape, int(values.size), bad)
    rank, order = len(shape), sp.traversal_order
    # expand the tree level by level, in depth-first leaf order: node positions and the index of each level
    pos = np.zeros(1, np.int64)
    level_index: list[np.ndarray] = []
    for level, d in enumerate(sp.dim_metadata):
        if d.format == DENSE:
            child = np.arange(d.dense_size, dtype=np.int64)
            level_index = [np.repeat(a, d.dense_size) for a in level_index]
            level_index.append(np.tile(child, pos.size))
            pos = (pos[:, None] * d.dense_size + child[None, :]).reshape(-1)
        else:
            starts, ends = d.segments[pos], d.segments[pos + 1]
            counts = ends - starts
            pos = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts) + np.arange(counts.sum())
            level_index = [np.repeat(a, counts) for a in level_index]
            level_index.append(d.indices[pos])
    orig = [None] * rank
    for level in range(rank):
        orig[order[level]] = level_index[level]
    block_size = {i: sp.dim_metadata[order[rank + i]].dense_size for i in range(len(sp.block_map))}
    for level in range(rank, len(order)):
        b = order[level] - rank
        dim = sp.block_map[b]
        orig[dim] = orig[dim] * block_size[b] + level_index[level]
    flat = np.zeros(values.size, np.int64)
    for dim in range(rank):
        flat = flat * shape[dim] + orig[dim]
    dense = np.zeros(int(np.prod(shape)), values.dtype)
    dense[flat] = values
    return dense.reshape(shape)
