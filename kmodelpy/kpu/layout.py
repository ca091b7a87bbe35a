"""KPU RAM feature-map layout (runtime spec §C.3, compiler spec §9.1).

A u8 tensor [N, C, H, W] at byte address B: channels are grouped G per 64-byte line, each image row
takes L lines, channel ``c mod G`` sits at byte ``(c mod G) * P`` of each line::

    addr(n, c, y, x) = B + n*S + (c // G)*(L*H*64) + (c % G)*P + y*(L*64) + x,   S = L*H*ceil(C/G)*64

Upload writes only element positions (line padding and unused group slots keep their bytes);
download reads them back. Both are numpy strided views, no Python loops.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError

LINE = 64


def row_layout(w: int) -> tuple[int, int, int]:
    """(groups G, row_len L in 64-byte lines, row_pitch P in bytes) for an image width ``w``."""
    if w <= 16:
        return 4, 1, 16
    if w <= 32:
        return 2, 1, 32
    return 1, (w + LINE - 1) // LINE, LINE


def kpu_bytes(shape_nchw) -> int:
    """Bytes the tensor occupies in KPU RAM (ncc's ``get_kpu_bytes``): N * L*H*ceil(C/G)*64."""
    n, c, h, w = (int(v) for v in shape_nchw)
    g, l, _ = row_layout(w)
    return n * l * h * (-(-c // g)) * LINE


def _blocks(ram: np.ndarray, start: int, shape) -> tuple[np.ndarray, int, int]:
    """A writable view ``[N, CB, G, H, P]`` of the tensor's bytes in ``ram``, plus (G, W)."""
    n, c, h, w = (int(v) for v in shape)
    g, l, p = row_layout(w)
    cb = -(-c // g)
    size = n * l * h * cb * LINE
    if start < 0 or start + size > len(ram):
        raise FormatError(
            f"KPU tensor {n}x{c}x{h}x{w} at byte {start} needs {size} bytes, past the end of the "
            f"{len(ram)}-byte KPU RAM; the kmodel is damaged"
        )
    region = ram[start : start + size]
    if g == 1:
        # one channel per line group: [N, CB, H, L*64] -> add the G axis
        return region.reshape(n, cb, h, l * LINE)[:, :, None, :, :], g, w
    return region.reshape(n, cb, h, g, p).transpose(0, 1, 3, 2, 4), g, w


def kpu_upload(ram: np.ndarray, start: int, x_nchw_u8: np.ndarray) -> None:
    """Store an NCHW u8 tensor into KPU RAM at byte ``start`` (only the element positions)."""
    x = np.asarray(x_nchw_u8, dtype=np.uint8)
    n, c, h, w = x.shape
    view, g, _ = _blocks(ram, start, x.shape)
    full = c // g
    if full:
        view[:, :full, :, :, :w] = x[:, : full * g].reshape(n, full, g, h, w)
    r = c - full * g
    if r:
        view[:, full, :r, :, :w] = x[:, full * g :]


def kpu_download(ram: np.ndarray, start: int, shape) -> np.ndarray:
    """Read an NCHW u8 tensor of ``shape`` from KPU RAM at byte ``start`` (a fresh array)."""
    n, c, h, w = (int(v) for v in shape)
    view, g, _ = _blocks(ram, start, shape)
    cb = view.shape[1]
    out = np.empty((n, cb * g, h, w), dtype=np.uint8)
    out.reshape(n, cb, g, h, w)[...] = view[..., :w]
    return out[:, :c] if cb * g != c else out
