"""Window geometry shared by the conv and pooling ops (runtime spec §B.2, bodies §B.6–§B.8, §B.15, §B.23).

Every windowed body — Conv2D, QuantizedConv2D, Conv2DTranspose, ReduceWindow2D and the five CPU*
NHWC ops — stores the same 40-byte *window block* right after its op-specific head:

| Off | Field      | Type                                   |
|-----|------------|----------------------------------------|
| +0  | padding_h  | padding (i32 before, i32 after; < 0 crops) |
| +8  | padding_w  | padding                                |
| +16 | filter_h   | i32                                    |
| +20 | filter_w   | i32                                    |
| +24 | stride_h   | i32                                    |
| +28 | stride_w   | i32                                    |
| +32 | dilation_h | i32                                    |
| +36 | dilation_w | i32                                    |

Each op module still declares these fields on its own dataclass, in body order (callers build the
bodies positionally and by keyword); this module holds the one copy of

* :func:`read_window` / :func:`write_window` — (de)serialise the block;
* :func:`out_hw` — the windowed output size ``get_out`` of §B.2 for both axes;
* :func:`check_window`, :func:`check_groups`, :func:`check_in_shape` — refuse damaged geometry;
* :func:`checked_out_hw` — the argument-checking preamble of the array-level conv functions;
* :func:`kernel_window` — the ``pad_h, pad_w, sh, sw, dh, dw`` ints the conv kernels take;
* :class:`WindowOp` — base class with the same helpers reading an op's own fields.
"""
from __future__ import annotations

from ..errors import KernelError
from ..format.binio import Reader, Writer, read_padding, write_padding
from ._arith import get_out
from .base import Op

WINDOW_INTS = ("filter_h", "filter_w", "stride_h", "stride_w", "dilation_h", "dilation_w")


def read_window(r: Reader) -> dict:
    """Read the window block; returns its fields by name (to pass on as keywords)."""
    f = {"padding_h": read_padding(r, "padding_h"), "padding_w": read_padding(r, "padding_w")}
    for n in WINDOW_INTS:
        f[n] = r.i32(n)
    return f


def write_window(w: Writer, op) -> None:
    """Write ``op``'s window block (any object with the window fields)."""
    write_padding(w, op.padding_h)
    write_padding(w, op.padding_w)
    for n in WINDOW_INTS:
        w.i32(getattr(op, n))


def out_hw(h: int, w: int, filter_h: int, filter_w: int, stride_h: int, stride_w: int, dilation_h: int,
           dilation_w: int, padding_h, padding_w, nonneg: bool = False) -> tuple[int, int]:
    """``(get_out(h, …), get_out(w, …))`` of §B.2; with ``nonneg`` each is floored at 0."""
    oh = get_out(int(h), filter_h, stride_h, dilation_h, *padding_h)
    ow = get_out(int(w), filter_w, stride_w, dilation_w, *padding_w)
    return (max(oh, 0), max(ow, 0)) if nonneg else (oh, ow)


def check_window(name: str, filter_h: int, filter_w: int, stride_h: int, stride_w: int,
                 dilation_h: int, dilation_w: int) -> None:
    """Refuse window parameters for which ncc's kernel divides by zero or loops nonsensically."""
    if min(stride_h, stride_w, dilation_h, dilation_w) <= 0 or min(filter_h, filter_w) < 0:
        raise KernelError(
            f"{name} has filter {filter_h}x{filter_w}, stride {stride_h}x{stride_w}, dilation "
            f"{dilation_h}x{dilation_w}; strides and dilations must be >= 1 (the file is damaged)"
        )


def check_groups(name: str, channels: int, out_channels: int, groups: int) -> None:
    """Refuse a channel split ncc's grouped loops cannot make (§B.6–§B.8)."""
    if groups <= 0 or channels % groups or out_channels % groups or channels < 0 or out_channels < 0:
        raise KernelError(
            f"{name}: {channels} input and {out_channels} output channels cannot be split into "
            f"{groups} groups (the file is damaged)"
        )


def check_in_shape(name: str, in_shape) -> None:
    """Refuse a negative dimension in a body's ``in_shape`` (NCHW or NHWC)."""
    if min(in_shape) < 0:
        raise KernelError(f"{name} has a negative dimension in in_shape {list(in_shape)} (the file is damaged)")


def checked_out_hw(name: str, h: int, w: int, filter_h: int, filter_w: int, stride_h: int, stride_w: int,
                   dilation_h: int, dilation_w: int, padding_h, padding_w, groups=None) -> tuple[int, int]:
    """The array-level conv preamble: :func:`check_window`, then (``groups = (channels, out_channels,
    groups)``, grouped NCHW convs only) :func:`check_groups`; returns the non-negative ``(OH, OW)``."""
    check_window(name, filter_h, filter_w, stride_h, stride_w, dilation_h, dilation_w)
    if groups is not None:
        check_groups(name, *groups)
    return out_hw(h, w, filter_h, filter_w, stride_h, stride_w, dilation_h, dilation_w, padding_h, padding_w,
                  nonneg=True)


def kernel_window(padding_h, padding_w, stride_h, stride_w, dilation_h, dilation_w) -> tuple[int, ...]:
    """``(pad_h.before, pad_w.before, sh, sw, dh, dw)`` as Python ints, the conv kernels' window args."""
    return (int(padding_h[0]), int(padding_w[0]), int(stride_h), int(stride_w), int(dilation_h),
            int(dilation_w))


def grouped_weights_count(out_channels: int, channels: int, groups: int, filter_h: int, filter_w: int) -> int:
    """ncc reads ``(size_t)out_channels * C / groups * fh * fw`` weights (left to right); -1 (the
    reader then reports a damaged body) when ``groups`` is 0."""
    if groups == 0:
        return -1
    return out_channels * channels // groups * filter_h * filter_w


class WindowOp(Op):
    """Base of the windowed op bodies: helpers reading the window fields the subclass declares."""

    def _out_hw(self, h: int, w: int, nonneg: bool = False) -> tuple[int, int]:
        return out_hw(h, w, self.filter_h, self.filter_w, self.stride_h, self.stride_w, self.dilation_h,
                      self.dilation_w, self.padding_h, self.padding_w, nonneg)

    def _check_window(self) -> None:
        check_window(self.name, self.filter_h, self.filter_w, self.stride_h, self.stride_w, self.dilation_h,
                     self.dilation_w)

    def _conv_window(self) -> tuple:
        """``(padding_h, padding_w, stride_h, stride_w, dilation_h, dilation_w)``: the window arguments
        of the array-level conv functions, in their order."""
        return (self.padding_h, self.padding_w, self.stride_h, self.stride_w, self.dilation_h, self.dilation_w)
