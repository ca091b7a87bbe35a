"""Row bands of KPU layers: which input rows each band reads and which of its output rows it keeps.

A KPU layer (runtime spec §C.5) computes a stride-1 "same" convolution of its whole input (3x3: one row
of padding with the input zero point above and below), then its pool (§C.6). A band runs the same
layer on input rows ``[begin, end)`` only. An output row of the band is exact when every input row its
convolution and pool windows read is an exact row of the band's input, or lies past the *real* image
edge; next to a cut the band reads its own padding instead of the neighbour's rows. So a band reads
``kernel // 2`` halo rows beyond the rows it keeps and drops the rows next to a cut; with a pool it
starts on a pool window (a multiple of the pool stride), and a 2x2 stride-1 pool reads one row more below.

A band may run a *chain* of layers, each reading the previous one's KPU output: the first layer reads
a slice of the input, each following layer the previous band's whole output (its inexact edge rows
included), and only the last layer's exact rows are kept. :func:`band` finds the smallest slice of the
first layer's input that keeps given output rows of the last layer, :func:`plan_bands` a partition,
:func:`smallest_split` the fewest bands whose KPU tensors fit a budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from ...kpu.layout import kpu_bytes
from ..transforms.build import POOL_STRIDE

# rows of the convolution output one pooled row reads, starting at row q * stride (runtime spec §C.6):
# the select pools read one row, 2x2 pools two (2x2 stride 1: rows q and q + 1), 4x4 pools four
POOL_WINDOW_ROWS = {0: 1, 1: 2, 2: 2, 3: 4, 4: 4, 5: 1, 6: 1, 7: 1, 8: 2, 9: 2}
MIN_ROWS = 4  # the KPU's smallest input height (compiler spec §6.1)


@dataclass(frozen=True)
class LayerRows:
    """The row geometry of one KPU layer: input rows, kernel size (1 or 3), pool type."""

    height: int
    kernel: int
    pool_type: int

    @property
    def stride(self) -> int:
        return POOL_STRIDE[self.pool_type]

    def out_rows(self, rows: int) -> int:
        """Output rows for ``rows`` input rows (the pool floors)."""
        return rows // self.stride

    def exact_rows(self, span, exact):
        """(output span, exact output rows) of a band reading input rows ``span`` of which ``exact`` are
        exact; all in layer coordinates, as half-open (begin, end) pairs."""
        (a, b), (ea, eb) = span, exact
        p, s, win, h = self.kernel // 2, self.stride, POOL_WINDOW_ROWS[self.pool_type], self.height
        ca = 0 if ea == 0 else ea + p  # exact convolution rows (the image edges pad like the whole layer)
        cb = h if eb == h else eb - p
        o0, n = a // s, self.out_rows(b - a)
        if ca >= cb:
            return (o0, o0 + n), (o0, o0)
        oa = max(-(-ca // s), o0)
        ob = o0 + n if cb == h else min((cb - win) // s + 1, o0 + n)  # a window must end inside the exact rows
        return (o0, o0 + n), (oa, max(oa, ob))


@dataclass(frozen=True)
class Band:
    """One band: ``spans[j]`` are the input rows layer j of the chain reads; it delivers the last layer's
    output rows ``[out_begin, out_end)``, found at row ``keep_begin`` of its own ``band_rows``-row output."""

    spans: tuple
    out_begin: int
    out_end: int
    keep_begin: int
    band_rows: int

    @property
    def in_begin(self) -> int:
        return self.spans[0][0]

    @property
    def in_end(self) -> int:
        return self.spans[0][1]

    @property
    def in_rows(self) -> int:
        return self.in_end - self.in_begin

    @property
    def keep_end(self) -> int:
        return self.keep_begin + self.out_end - self.out_begin


def forward(layers, begin: int, end: int):
    """(spans, output span, exact output rows) of a band reading rows [begin, end) of the first layer."""
    span = exact = (begin, end)
    spans = []
    for layer in layers:
        spans.append(span)
        span, exact = layer.exact_rows(span, exact)
    return spans, span, exact


def output_rows(layers) -> int:
    rows = layers[0].height
    for layer in layers:
        rows = layer.out_rows(rows)
    return rows


def band(out_begin: int, out_end: int, layers) -> Band:
    """The smallest band delivering output rows ``[out_begin, out_end)`` of the last layer of ``layers``
    (a list of :class:`LayerRows`, or one layer): it starts on every layer's pool window and gives every
    layer at least the KPU's 4 input rows."""
    layers = [layers] if isinstance(layers, LayerRows) else list(layers)
    if not 0 <= out_begin < out_end <= output_rows(layers):
        raise ValueError(f"output rows [{out_begin}, {out_end}) outside the layers' {output_rows(layers)}")
    step, height = prod(layer.stride for layer in layers), layers[0].height
    begin = out_begin * step
    while begin > 0 and forward(layers, begin, height)[2][0] > out_begin:
        begin -= step
    end = max(begin + 1, min(height, out_end * step))  # the last span ends at floor(end / step)
    while True:
        spans, (o0, o1), (e0, e1) = forward(layers, begin, end)
        if e0 <= out_begin and e1 >= out_end and min(b - a for a, b in spans) >= MIN_ROWS:
            return Band(tuple(spans), out_begin, out_end, out_begin - o0, o1 - o0)
        if end < height:
            end += 1
        elif begin > 0:
            begin -= step
        else:
            raise ValueError(f"a layer of the chain has fewer than the KPU's {MIN_ROWS} input rows")


def even_cuts(rows: int, count: int) -> list[int]:
    """``count + 1`` increasing boundaries splitting ``rows`` output rows into near-equal parts."""
    return [round(k * rows / count) for k in range(count + 1)]


def plan_bands(cuts, layers) -> list[Band]:
    """Bands delivering the last layer's output rows between consecutive ``cuts`` (0 to its height)."""
    layers = [layers] if isinstance(layers, LayerRows) else list(layers)
    rows = output_rows(layers)
    if cuts[0] != 0 or cuts[-1] != rows or any(a >= b for a, b in zip(cuts, cuts[1:])):
        raise ValueError(f"cuts {list(cuts)} do not split the {rows} output rows")
    return [band(a, b, layers) for a, b in zip(cuts, cuts[1:])]


def band_bytes(b: Band, shapes) -> int:
    """KPU RAM of one band: the most any of its layers needs for its input and output rows at once.
    ``shapes``: (input NCHW, output NCHW) of each layer of the chain."""
    outs = [e - a for a, e in b.spans[1:]] + [b.band_rows]  # each layer's output is the next one's input
    return max(kpu_bytes((x[0], x[1], e - a, x[3])) + kpu_bytes((y[0], y[1], rows, y[3]))
               for (a, e), rows, (x, y) in zip(b.spans, outs, shapes))


def smallest_split(shapes, layers, budget: int) -> list[Band] | None:
    """Few near-equal bands (at least 2) that fit ``budget`` bytes of KPU RAM each — the fewest up to 8
    bands, then the first of 12, 18, 27, ... (x1.5) that fits — or None when even one output row per band
    does not fit."""
    layers = [layers] if isinstance(layers, LayerRows) else list(layers)
    rows = output_rows(layers)

    def fitting(count):
        bands = plan_bands(even_cuts(rows, count), layers)
        return bands if max(band_bytes(b, shapes) for b in bands) <= budget else None

    if rows < 2 or fitting(rows) is None:
        return None
    counts = list(range(2, min(rows, 8) + 1))
    while counts[-1] < rows:
        counts.append(min(rows, counts[-1] * 3 // 2))
    for count in counts:
        bands = fitting(count)
        if bands is not None:
            return bands
    return None
