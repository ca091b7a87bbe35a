"""Stand-in for MaixPy v1's ``image`` module: ``image.Image`` with the operations KPU scripts use.

Pixels are stored as MaixPy stores them (``omv/img/include/imlib.h``): grayscale bytes, or RGB565 words
in the byte-swapped layout (``R5 = (p >> 3) & 31``, ``G6 = ((p & 7) << 3) | (p >> 13)``,
``B5 = (p >> 8) & 31``) with the ``rgb2rgb_tab.c`` conversions to and from 8-bit colour. The operations
that change the numbers a model sees follow ``omv/py/py_image.c`` exactly (sipeed/MaixPy-v1 @ d8901fd):
``pix_to_ai`` (py_image_pix_to_ai: planar R, G, B from RGB565), ``resize`` (py_image_resize: nearest or
bilinear for RGB565, bilinear or the box average with its x-uses-sy bug for grayscale; float32
arithmetic, float-to-int conversions as RISC-V's ``fcvt.wu.s``), ``copy``/``cut``. An image made by an
operation has no ``pix_ai`` (py_image() sets it NULL): call ``pix_to_ai()`` before ``kpu.forward`` or
``kpu.run_yolo2``. Drawing follows imlib's geometry (``omv/img/draw.c``); text is drawn with an OpenCV
font, not MaixPy's bitmap font.
"""
from __future__ import annotations

import numpy as np

from . import session

BINARY, GRAYSCALE, RGB565 = 1, 2, 3  # image.BINARY...: MaixPy's bpp codes are 0, 1, 2 internally
_F = np.float32
LCD_W, LCD_H = 320, 240  # CONFIG_LCD_DEFAULT_WIDTH / HEIGHT

RB528 = np.array([(v * 255 + 15) // 31 for v in range(32)], dtype=np.uint8)
G628 = np.array([(v * 255 + 31) // 63 for v in range(64)], dtype=np.uint8)
RB825 = np.array([(v * 31 + 127) // 255 for v in range(256)], dtype=np.uint8)
G826 = np.array([(v * 63 + 127) // 255 for v in range(256)], dtype=np.uint8)


# ----------------------------------------------------------------------------------------- RGB565
def r5(p):
    return (p >> 3) & 31


def g6(p):
    return ((p & 7) << 3) | (p >> 13)


def b5(p):
    return (p >> 8) & 31


def pack565(r, g, b):
    """COLOR_R5_G6_B5_TO_RGB565 (values wider than 5/6 bits spill into the neighbours as in C)."""
    r, g, b = (np.asarray(v, dtype=np.int64) for v in (r, g, b))
    return ((r << 3) | (g >> 3) | ((g & 7) << 13) | (b << 8)) & 0xFFFF


def rgb888_to_565(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> RGB565 words (COLOR_R8_G8_B8_TO_RGB565)."""
    return pack565(RB825[rgb[..., 0]], G826[rgb[..., 1]], RB825[rgb[..., 2]]).astype(np.uint16)


def rgb565_to_888(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.int64)
    return np.stack([RB528[r5(p)], G628[g6(p)], RB528[b5(p)]], axis=-1)


def _gray_of_rgb(rgb: np.ndarray) -> np.ndarray:
    """Luma (BT.601) of 8-bit RGB: the formula behind MaixPy's yuv table (yuv_tab.c)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.clip(y, 0, 255).astype(np.uint8)


def _to_u(v: np.ndarray, bits: int) -> np.ndarray:
    """``(uint8_t)`` / ``(uint16_t)`` of a float on the K210: fcvt.wu.s (truncation, negative -> 0),
    then the low bits."""
    v = np.asarray(v, dtype=np.float64)
    u = np.where(np.isnan(v) | (v >= 2.0 ** 32), 2.0 ** 32 - 1, np.where(v <= 0, 0, np.trunc(v)))
    return u.astype(np.uint64) & ((1 << bits) - 1)


# ----------------------------------------------------------------------------------------- Image
class Image:
    """``image.Image()`` (an LCD-sized black RGB565 picture), ``image.Image(size=(w, h))`` or
    ``image.Image(path)`` (a picture file; ``/sd/...`` is the --sd folder)."""

    def __init__(self, path=None, *args, size=None, copy_to_fb=False, from_bytes=False, **_ignored):
        self._pix_ai = None
        if path is None:
            w, h = (LCD_W, LCD_H) if size is None else (int(size[0]), int(size[1]))
            self._bpp, self._px = 2, np.zeros((h, w), dtype=np.uint16)
            return
        self._bpp, self._px = _decode_file(path, from_bytes)

    # ------------------------------------------------------------ construction helpers
    @classmethod
    def _make(cls, bpp: int, px: np.ndarray, pix_ai=None) -> "Image":
        img = cls.__new__(cls)
        img._bpp, img._px, img._pix_ai = bpp, px, pix_ai
        return img

    @classmethod
    def _from_gray(cls, gray: np.ndarray) -> "Image":
        return cls._make(1, np.ascontiguousarray(gray, dtype=np.uint8))

    @classmethod
    def _from_rgb888(cls, rgb: np.ndarray) -> "Image":
        return cls._make(2, rgb888_to_565(rgb))

    def _rgb888(self) -> np.ndarray:
        """The picture as 8-bit RGB (what the LCD shows)."""
        if self._bpp == 1:
            return np.repeat(self._px[:, :, None], 3, axis=2)
        return rgb565_to_888(self._px).astype(np.uint8)

    # ------------------------------------------------------------ description
    def width(self):
        return int(self._px.shape[1])

    def height(self):
        return int(self._px.shape[0])

    def format(self):
        from . import sensor

        return sensor.GRAYSCALE if self._bpp == 1 else sensor.RGB565

    def size(self):
        return int(self._px.nbytes)

    def __repr__(self):
        kind = "grayscale" if self._bpp == 1 else "rgb565"
        return f'{{"w":{self.width()}, "h":{self.height()}, "type"="{kind}", "size":{self.size()}}}'

    def get_pixel(self, x, y=None, rgbtuple=None):
        if y is None:
            x, y = x
        x, y = int(x), int(y)
        if not (0 <= x < self.width() and 0 <= y < self.height()):
            return None
        p = int(self._px[y, x])
        if self._bpp == 1:
            return p
        return tuple(int(v) for v in rgb565_to_888(np.array(p)))

    def set_pixel(self, x, y, color=None, **_ignored):
        _set(self, np.array([int(y)]), np.array([int(x)]), _color(self, color))
        return self

    # ------------------------------------------------------------ AI buffer
    def pix_to_ai(self):
        """py_image_pix_to_ai (py_image.c 5780-5826): grayscale bytes, or planes R, G, B of w*h bytes
        from the RGB565 words (rb528/g628 tables)."""
        if self._bpp == 1:
            self._pix_ai = self._px.reshape(-1).copy()
        else:
            p = self._px.reshape(-1).astype(np.int64)
            self._pix_ai = np.concatenate([RB528[r5(p)], G628[g6(p)], RB528[b5(p)]])
        return None

    def ai_to_pix(self):
        """py_image_ai_to_pix: pixels back from pix_ai (COLOR_R8_G8_B8_TO_RGB565)."""
        if self._pix_ai is None:
            return None
        h, w = self._px.shape
        if self._bpp == 1:
            self._px = self._pix_ai[: w * h].reshape(h, w).copy()
        else:
            planes = self._pix_ai[: 3 * w * h].reshape(3, h, w)
            self._px = rgb888_to_565(planes.transpose(1, 2, 0))
        return None

    # ------------------------------------------------------------ geometry
    def resize(self, w, h):
        """py_image_resize (py_image.c 5621-5778). A new image, without pix_ai."""
        w, h = int(w), int(h)
        if w <= 0 or h <= 0:
            raise ValueError("resize: width and height must be > 0")
        if self._bpp == 1:
            return Image._make(1, _resize_gray(self._px, w, h))
        return Image._make(2, _resize_565(self._px, w, h))

    def copy(self, roi=None, x_scale=1.0, y_scale=1.0, copy_to_fb=False, **_ignored):
        """py_image_copy_int: the roi scaled by nearest neighbour (floor(y / y_scale) + roi.y)."""
        x0, y0, rw, rh = _roi(self, roi)
        ow, oh = int(np.floor(rw * _F(x_scale))), int(np.floor(rh * _F(y_scale)))
        if ow < 1:
            raise ValueError("Output image width is 0!")
        if oh < 1:
            raise ValueError("Output image height is 0!")
        ys = np.floor(np.arange(oh) * (_F(1) / _F(y_scale))).astype(np.int64) + y0
        xs = np.floor(np.arange(ow) * (_F(1) / _F(x_scale))).astype(np.int64) + x0
        return Image._make(self._bpp, self._px[np.ix_(ys, xs)].copy())

    def crop(self, roi=None, x_scale=1.0, y_scale=1.0, **kw):
        """In place: the image becomes its copy (py_image_crop)."""
        out = self.copy(roi, x_scale, y_scale)
        self._px, self._pix_ai = out._px, None
        return self

    def cut(self, x, y, w, h):
        """py_image_cut (py_image.c 5993-6057): a new w x h image; what lies outside the source stays 0."""
        x, y, w, h = int(x), int(y), int(w), int(h)
        out = np.zeros((h, w), dtype=self._px.dtype)
        y1, x1 = min(y + h, self.height()), min(x + w, self.width())
        if y1 > y and x1 > x:
            out[: y1 - y, : x1 - x] = self._px[y:y1, x:x1]
        return Image._make(self._bpp, out)

    # ------------------------------------------------------------ pixels
    def clear(self):
        self._px[:] = 0
        return self

    def invert(self):
        self._px = (~self._px) & (0xFF if self._bpp == 1 else 0xFFFF)
        return self

    def to_grayscale(self, copy=False, **_ignored):
        return self._to_format(1, _gray_of_rgb, copy)

    def to_rgb565(self, copy=False, **_ignored):
        return self._to_format(2, rgb888_to_565, copy)

    def _to_format(self, bpp: int, convert, copy: bool):
        """This image with ``bpp`` bytes a pixel: as it is (or a copy) if it has them, else
        ``convert(rgb888)``'s pixels, in place or (``copy``) in a new image."""
        if self._bpp == bpp:
            return self.copy() if copy else self
        px = convert(self._rgb888())
        if copy:
            return Image._make(bpp, px)
        self._bpp, self._px, self._pix_ai = bpp, px, None
        return self

    def to_bytes(self):
        return self._px.tobytes()

    # ------------------------------------------------------------ drawing (omv/img/draw.c)
    def draw_rectangle(self, *args, **kw):
        (rx, ry, rw, rh), rest = _consume(args, 4, "draw_rectangle")
        c = _color(self, _arg(rest, 0, kw, "color"))
        thickness = int(_arg(rest, 1, kw, "thickness", 1))
        fill = bool(_arg(rest, 2, kw, "fill", False))
        rx, ry, rw, rh = int(rx), int(ry), int(rw), int(rh)
        if fill:
            _fill(self, rx, ry, rx + rw, ry + rh, c)
        elif thickness > 0:
            t0, t1 = thickness // 2, (thickness - 1) // 2
            _fill(self, rx - t0, ry - t0, rx + rw + t1, ry + t1 + 1, c)  # top
            _fill(self, rx - t0, ry + rh - 1 - t0, rx + rw + t1, ry + rh + t1, c)  # bottom
            _fill(self, rx - t0, ry - t0, rx + t1 + 1, ry + rh + t1, c)  # left
            _fill(self, rx + rw - 1 - t0, ry - t0, rx + rw + t1, ry + rh + t1, c)  # right
        return self

    def draw_line(self, *args, **kw):
        (x0, y0, x1, y1), rest = _consume(args, 4, "draw_line")
        c = _color(self, _arg(rest, 0, kw, "color"))
        thickness = int(_arg(rest, 1, kw, "thickness", 1))
        if thickness > 0:
            xs, ys = _bresenham(int(x0), int(y0), int(x1), int(y1))
            for x, y in zip(xs, ys):
                _disc(self, x, y, thickness // 2, (thickness - 1) // 2, c)
        return self

    def draw_circle(self, *args, **kw):
        (cx, cy, r), rest = _consume(args, 3, "draw_circle")
        c = _color(self, _arg(rest, 0, kw, "color"))
        thickness = int(_arg(rest, 1, kw, "thickness", 1))
        fill = bool(_arg(rest, 2, kw, "fill", False))
        cx, cy, r = int(cx), int(cy), int(r)
        if fill:
            _disc(self, cx, cy, r, r, c)
        elif thickness > 0:
            ys, xs = _circle_outline(cx, cy, r, thickness)
            _set(self, ys, xs, c)
        return self

    def draw_cross(self, *args, **kw):
        (x, y), rest = _consume(args, 2, "draw_cross")
        color = _arg(rest, 0, kw, "color")
        size = int(_arg(rest, 1, kw, "size", 5))
        thickness = int(_arg(rest, 2, kw, "thickness", 1))
        x, y = int(x), int(y)
        self.draw_line(x - size, y, x + size, y, color=color, thickness=thickness)
        self.draw_line(x, y - size, x, y + size, color=color, thickness=thickness)
        return self

    def draw_string(self, *args, **kw):
        (x, y, text), rest = _consume(args, 3, "draw_string")
        c = _color(self, _arg(rest, 0, kw, "color"))
        scale = float(_arg(rest, 1, kw, "scale", 1.0))
        if not scale > 0:
            raise ValueError("Error: 0 < scale!")
        y_spacing = int(_arg(rest, 3, kw, "y_spacing", 2))
        _text(self, int(x), int(y), str(text), c, scale, y_spacing)
        return self

    def draw_image(self, image, x=0, y=0, x_scale=1.0, y_scale=1.0, alpha=256, mask=None, **_ignored):
        src = image.copy(None, x_scale, y_scale) if (x_scale, y_scale) != (1.0, 1.0) else image
        if src._bpp != self._bpp:
            src = src.to_grayscale(copy=True) if self._bpp == 1 else src.to_rgb565(copy=True)
        h, w = src._px.shape
        ys, xs = np.mgrid[0:h, 0:w]
        keep = (ys + y >= 0) & (ys + y < self.height()) & (xs + x >= 0) & (xs + x < self.width())
        self._px[ys[keep] + int(y), xs[keep] + int(x)] = src._px[keep]
        return self

    # ------------------------------------------------------------ files
    def save(self, path, roi=None, quality=50, **_ignored):
        from .lcd import write_png

        file = session.current().resolve(str(path))
        x0, y0, rw, rh = _roi(self, roi)
        write_png(file, self._rgb888()[y0:y0 + rh, x0:x0 + rw], int(quality))
        return self


    def __getattr__(self, name):
        if name.startswith("__") or name in ("_bpp", "_px", "_pix_ai"):
            raise AttributeError(name)
        raise AttributeError(f"image.Image.{name} is not provided by kmodelpy's MaixPy stand-ins")


def load_image(path, **kw):
    return Image(path, **kw)


def __getattr__(name):
    raise AttributeError(f"image.{name} is not provided by kmodelpy's MaixPy stand-ins")


# ----------------------------------------------------------------------------------------- resize
def _resize_565(px: np.ndarray, w: int, h: int) -> np.ndarray:
    h0, w0 = px.shape
    sx, sy = _F(w0) / _F(w), _F(h0) / _F(h)
    if w0 == w and h0 == h:
        return px.copy()
    if w0 >= w or h0 > h:  # nearest neighbour: in[(int)(y*sy)][(int)(x*sx)]
        ys = (np.arange(h, dtype=np.float32) * sy).astype(np.int64)
        xs = (np.arange(w, dtype=np.float32) * sx).astype(np.int64)
        return px[np.ix_(ys, xs)].copy()
    # bilinear in R5/G6/B5 space (w0 < w, h0 <= h)
    half = _F(0.5)
    x_src = (np.arange(w, dtype=np.float32) + half) * sx - half
    y_src = (np.arange(h, dtype=np.float32) + half) * sy - half
    x1 = _to_u(x_src, 16).astype(np.int64)
    y1 = _to_u(y_src, 16).astype(np.int64)
    x2, y2 = (x1 + 1) & 0xFFFF, (y1 + 1) & 0xFFFF
    XS, YS = np.meshgrid(x_src, y_src)
    X1, Y1 = np.meshgrid(x1, y1)
    X2, Y2 = np.meshgrid(x2, y2)
    edge = (X2 >= w0) | (Y2 >= h0)
    flat = px.reshape(-1).astype(np.int64)
    c11 = flat[np.clip(X1 + Y1 * w0, 0, flat.size - 1)]
    inner = ~edge
    c21 = np.where(inner, flat[np.clip(X2 + Y1 * w0, 0, flat.size - 1)], 0)
    c12 = np.where(inner, flat[np.clip(X1 + Y2 * w0, 0, flat.size - 1)], 0)
    c22 = np.where(inner, flat[np.clip(X2 + Y2 * w0, 0, flat.size - 1)], 0)
    ax, bx = X2.astype(np.float32) - XS, XS - X1.astype(np.float32)
    ay, by = Y2.astype(np.float32) - YS, YS - Y1.astype(np.float32)

    def channel(f):
        t1 = ax * f(c11).astype(np.float32) + bx * f(c21).astype(np.float32)
        t2 = ax * f(c12).astype(np.float32) + bx * f(c22).astype(np.float32)
        return _to_u(ay * t1 + by * t2, 8).astype(np.int64)

    out = pack565(channel(r5), channel(g6), channel(b5))
    return np.where(edge, c11, out).astype(np.uint16)


def _resize_gray(px: np.ndarray, w: int, h: int) -> np.ndarray:
    h0, w0 = px.shape
    sx, sy = _F(w0) / _F(w), _F(h0) / _F(h)
    flat = px.reshape(-1).astype(np.int64)
    if w >= w0 or h >= h0:  # bilinear; the weights use x0+1 / y0+1 even where the pixel is clamped
        half = _F(0.5)
        xf = (np.arange(w, dtype=np.float32) + half) * sx - half
        yf = (np.arange(h, dtype=np.float32) + half) * sy - half
        x0 = np.trunc(xf).astype(np.int64)
        y0 = np.trunc(yf).astype(np.int64)
        vx1 = np.where(x0 < w0 - 1, x0 + 1, x0)
        vy1 = np.where(y0 < h0 - 1, y0 + 1, y0)
        wx1, wx0 = (x0 + 1).astype(np.float32) - xf, xf - x0.astype(np.float32)
        wy1, wy0 = (y0 + 1).astype(np.float32) - yf, yf - y0.astype(np.float32)
        X0, Y0 = np.meshgrid(x0, y0)
        VX, VY = np.meshgrid(vx1, vy1)
        WX1, WY1 = np.meshgrid(wx1, wy1)
        WX0, WY0 = np.meshgrid(wx0, wy0)

        def at(yy, xx):
            return flat[np.clip(yy * w0 + xx, 0, flat.size - 1)].astype(np.float32)

        v = (at(Y0, X0) * WX1 * WY1 + at(Y0, VX) * WX0 * WY1) + at(VY, X0) * WX1 * WY0
        v = v + at(VY, VX) * WX0 * WY0
        return _to_u(v, 8).astype(np.uint8)
    # both sides shrink: box average over [y0, y1] x [x0, x1] inclusive, x range from sy (firmware bug)
    y0 = (np.arange(h, dtype=np.float32) * sy).astype(np.int64)
    y1 = ((np.arange(h, dtype=np.float32) + _F(1)) * sy).astype(np.int64)
    x0 = (np.arange(w, dtype=np.float32) * sy).astype(np.int64)
    x1 = ((np.arange(w, dtype=np.float32) + _F(1)) * sy).astype(np.int64)
    pad = np.concatenate([flat, np.zeros(w0 * 2 + int(x1.max()) + 2, dtype=np.int64)])  # past the end: 0
    prefix = np.concatenate([[0], np.cumsum(pad)])
    out = np.zeros((h, w), dtype=np.int64)
    for y in range(h):
        total = np.zeros(w, dtype=np.int64)
        for yy in range(y0[y], y1[y] + 1):
            total += prefix[yy * w0 + x1 + 1] - prefix[yy * w0 + x0]
        out[y] = total // ((y1[y] - y0[y] + 1) * (x1 - x0 + 1))
    return (out & 0xFF).astype(np.uint8)


# ----------------------------------------------------------------------------------------- helpers
def _decode_file(path, from_bytes=False):
    import cv2

    if from_bytes:
        data = np.frombuffer(bytes(path), dtype=np.uint8)
        where = "bytes"
    else:
        file = session.current().resolve(str(path))
        try:
            data = np.fromfile(file, dtype=np.uint8)
        except OSError:
            raise OSError(2, f"ENOENT: {path}") from None
        where = str(path)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise OSError(f"{where}: cannot decode the picture")
    if img.dtype != np.uint8:
        img = (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
    if img.ndim == 2:
        return 1, np.ascontiguousarray(img)
    rgb = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return 2, rgb888_to_565(rgb)


def _color(img: Image, color) -> int:
    """py_helper_keyword_color: default -1 (white); an int is the raw pixel; (r, g, b) is converted."""
    if color is None:
        color = -1
    if isinstance(color, (tuple, list)):
        r, g, b = (int(v) & 0xFF for v in color[:3])
        if img._bpp == 1:
            return int(_gray_of_rgb(np.array([r, g, b])))
        return int(pack565(RB825[r], G826[g], RB825[b]))
    return int(color) & (0xFF if img._bpp == 1 else 0xFFFF)


def _consume(args, n, what):
    """py_helper_consume_array: either one tuple/list of n values, or n positional values."""
    if args and isinstance(args[0], (tuple, list)):
        vals = tuple(args[0])
        rest = args[1:]
    else:
        vals, rest = tuple(args[:n]), args[n:]
    if len(vals) != n:
        raise TypeError(f"{what}: expected {n} values (or a tuple of them), got {len(vals)}")
    return vals, rest


def _arg(rest, i, kw, name, default=None):
    if i < len(rest):
        return rest[i]
    return kw.get(name, default)


def _roi(img: Image, roi):
    if roi is None:
        return 0, 0, img.width(), img.height()
    x, y, w, h = (int(v) for v in roi)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, img.width()), min(y + h, img.height())
    if x1 <= x0 or y1 <= y0:
        raise ValueError("Arg roi is not valid!")
    return x0, y0, x1 - x0, y1 - y0


def _set(img: Image, ys, xs, c: int) -> None:
    """imlib_set_pixel over many pixels: only those inside the image."""
    ys, xs = np.asarray(ys), np.asarray(xs)
    keep = (ys >= 0) & (ys < img.height()) & (xs >= 0) & (xs < img.width())
    img._px[ys[keep], xs[keep]] = c


def _fill(img: Image, x0, y0, x1, y1, c) -> None:
    """Pixels x0 <= x < x1, y0 <= y < y1, clipped to the image."""
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, img.width()), min(y1, img.height())
    if x1 > x0 and y1 > y0:
        img._px[y0:y1, x0:x1] = c


def _disc(img: Image, cx, cy, t0, t1, c) -> None:
    """point_fill (draw.c 57-67): offsets -t0..t1 with x*x + y*y <= t0*t0."""
    r = np.arange(-t0, t1 + 1)
    yy, xx = np.meshgrid(r, r, indexing="ij")
    sel = xx * xx + yy * yy <= t0 * t0
    _set(img, yy[sel] + cy, xx[sel] + cx, c)


def _bresenham(x0, y0, x1, y1):
    """imlib_draw_line's walk (draw.c 69-86)."""
    dx, sx = abs(x1 - x0), (1 if x0 < x1 else -1)
    dy, sy = abs(y1 - y0), (1 if y0 < y1 else -1)
    v = dx if dx > dy else -dy
    err = v // 2 if v >= 0 else -(-v // 2)  # C division truncates toward zero
    xs, ys = [], []
    while True:
        xs.append(x0)
        ys.append(y0)
        if x0 == x1 and y0 == y1:
            break
        e2 = err
        if e2 > -dx:
            err -= dy
            x0 += sx
        if e2 < dy:
            err += dx
            y0 += sy
    return xs, ys


def _circle_outline(cx, cy, r, thickness):
    """imlib_draw_circle's ring (draw.c 125-172): eight octants of spans between an inner and an
    outer midpoint circle."""
    t0, t1 = thickness // 2, (thickness - 1) // 2
    xo, xi = r + t0, max(r - t1, 0)
    xi_tmp, y, erro, erri = xi, 0, 1 - xo, 1 - xi
    ys, xs = [], []

    def xline(x_a, x_b, yy):
        for x in range(x_a, x_b + 1):
            xs.append(x)
            ys.append(yy)

    def yline(x, y_a, y_b):
        for yy in range(y_a, y_b + 1):
            xs.append(x)
            ys.append(yy)

    while xo >= y:
        xline(cx + xi, cx + xo, cy + y)
        yline(cx + y, cy + xi, cy + xo)
        xline(cx - xo, cx - xi, cy + y)
        yline(cx - y, cy + xi, cy + xo)
        xline(cx - xo, cx - xi, cy - y)
        yline(cx - y, cy - xo, cy - xi)
        xline(cx + xi, cx + xo, cy - y)
        yline(cx + y, cy - xo, cy - xi)
        y += 1
        if erro < 0:
            erro += 2 * y + 1
        else:
            xo -= 1
            erro += 2 * (y - xo + 1)
        if y > xi_tmp:
            xi = y
        elif erri < 0:
            erri += 2 * y + 1
        else:
            xi -= 1
            erri += 2 * (y - xi + 1)
    return np.array(ys, dtype=np.int64), np.array(xs, dtype=np.int64)


def _text(img: Image, x, y, text, c, scale, y_spacing) -> None:
    """Text in an OpenCV Hershey font at MaixPy's glyph size (8 x 10 pixels times scale)."""
    import cv2

    line_h = int(round(10 * scale))
    font_scale = 0.32 * scale
    thick = max(1, int(round(scale * 0.75)))
    for k, line in enumerate(text.replace("\r", "\n").split("\n")):
        top = y + k * (line_h + y_spacing)
        if not line:
            continue
        (tw, th), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
        pad = th + base + thick + 2
        mask = np.zeros((line_h + 2 * pad, tw + 2 * pad), dtype=np.uint8)
        cv2.putText(mask, line, (pad, pad + line_h - max(1, line_h // 5)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, 255,
                    thick, cv2.LINE_8)
        ys, xs = np.nonzero(mask)
        _set(img, ys + top - pad, xs + x - pad, c)
