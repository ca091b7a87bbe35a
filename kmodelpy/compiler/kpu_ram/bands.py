"""Row bands of a KPU convolution: which input rows each band reads and which of its output rows it keeps.

A KPU layer (runtime spec §C.5) computes a stride-1 "same" convolution of its whole input (3x3: one row
of padding with the input zero point above and below), then its pool (§C.6). A band runs the same
layer on input rows ``[in_begin, in_end)`` only. Its output rows are exact wherever the convolution
window lies inside the band or reaches past the *real* image edge; the rows next to a cut read the
band's own padding instead of the neighbour's rows, so each band reads ``kernel // 2`` halo rows
beyond the rows it keeps, and those rows are cropped away. With a pool the band must also start on a
pool window (a multiple of the pool stride), and a 2x2 stride-1 pool reads one more row below.

:func:`band` computes one band, :func:`plan_bands` a whole partition of the output rows, and
:func:`smallest_split` the fewest bands whose input + output fit a KPU RAM budget.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...kpu.layout import kpu_bytes
from ..transforms.build import POOL_STRIDE

# rows of the convolution output one pooled row reads, starting at row q * stride (runtime spec §C.6):
# the select pools read one row, 2x2 pools two (2x2 stride 1: rows q and q + 1), 4x4 pools four
POOL_WINDOW_ROWS = {0: 1, 1: 2, 2: 2, 3: 4, 4: 4, 5: 1, 6: 1, 7: 1, 8: 2, 9: 2}
MIN_ROWS = 4  # the KPU's smallest input height (compiler spec §6.1)


@dataclass(frozen=True)
class Band:
    """One band: input rows ``[in_begin, in_end)``; it delivers the layer's output rows
    ``[out_begin, out_end)``, found at row ``keep_begin`` of its own ``band_rows``-row output."""

    in_begin: int
    in_end: int
    out_begin: int
    out_end: int
    keep_begin: int
    band_rows: int

    @property
    def in_rows(self) -> int:
        return self.in_end - self.in_begin

    @property
    def keep_end(self) -> int:
        return self.keep_begin + self.out_end - self.out_begin


def output_rows(in_rows: int, pool_type: int) -> int:
    """Output rows of a KPU layer with ``in_rows`` input rows (the pool floors)."""
    return in_rows // POOL_STRIDE[pool_type]


def band(out_begin: int, out_end: int, height: int, kernel: int, pool_type: int) -> Band:
    """The band that delivers output rows ``[out_begin, out_end)`` of a layer with ``height`` input rows."""
    s, win, p = POOL_STRIDE[pool_type], POOL_WINDOW_ROWS[pool_type], kernel // 2
    if not 0 <= out_begin < out_end <= output_rows(height, pool_type):
        raise ValueError(f"output rows [{out_begin}, {out_end}) outside the layer's {output_rows(height, pool_type)}")
    conv_begin = out_begin * s
    conv_end = min((out_end - 1) * s + win, height)  # convolution rows the kept output rows read
    i0 = max(conv_begin - p, 0) // s * s  # on a pool window
    i1 = min(max(conv_end + p, out_end * s), height)  # the band's pool must reach out_end
    while i1 - i0 < MIN_ROWS:  # the KPU needs 4 input rows: read more below, else more above
        if i1 < height:
            i1 = min(height, i0 + MIN_ROWS)
        elif i0 > 0:
            i0 -= s
        else:
            raise ValueError(f"a {height}-row input is below the KPU's {MIN_ROWS} rows")
    b = Band(i0, i1, out_begin, out_end, out_begin - i0 // s, output_rows(i1 - i0, pool_type))
    assert b.keep_end <= b.band_rows
    return b


def even_cuts(rows: int, count: int) -> list[int]:
    """``count + 1`` increasing boundaries splitting ``rows`` output rows into near-equal parts."""
    return [round(k * rows / count) for k in range(count + 1)]


def plan_bands(cuts, height: int, kernel: int, pool_type: int) -> list[Band]:
    """Bands delivering the output rows between consecutive ``cuts`` (from 0 to the output height)."""
    if cuts[0] != 0 or cuts[-1] != output_rows(height, pool_type) or any(a >= b for a, b in zip(cuts, cuts[1:])):
        raise ValueError(f"cuts {list(cuts)} do not split the {output_rows(height, pool_type)} output rows")
    return [band(a, b, height, kernel, pool_type) for a, b in zip(cuts, cuts[1:])]


def band_bytes(b: Band, in_shape, out_shape) -> int:
    """KPU RAM of one band: its input rows and its own output, in the KPU row layout."""
    n, c, _, w = in_shape
    return kpu_bytes((n, c, b.in_rows, w)) + kpu_bytes((out_shape[0], out_shape[1], b.band_rows, out_shape[3]))


def smallest_split(in_shape, out_shape, kernel: int, pool_type: int, budget: int) -> list[Band] | None:
    """The fewest near-equal bands (at least 2) each of whose input + output fit ``budget`` bytes, or
    None when even one output row per band does not fit."""
    height = int(in_shape[2])
    rows = output_rows(height, pool_type)
    for count in range(2, rows + 1):
        bands = plan_bands(even_cuts(rows, count), height, kernel, pool_type)
        if max(band_bytes(b, in_shape, out_shape) for b in bands) <= budget:
            return bands
    return None
