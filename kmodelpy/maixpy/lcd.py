"""Stand-in for MaixPy v1's ``lcd`` module: a 320x240 screen whose frames are saved as PNG files.

``display(img)`` puts the image on the screen as py_lcd.c py_lcd_display does by default (centred;
cut to the screen when larger, black borders when smaller) and makes a frame; ``draw_string`` and
``clear`` change the current frame. Frames go to ``--lcd OUTDIR`` as ``NNNN_<picture>.png`` (NNNN counts
displays, <picture> is the camera picture last taken), written whole (temporary file + rename). Without
an output folder, the last frame stays in memory (:func:`frame`). ``rotation``/``direction``/``mirror``
are accepted and not applied to the saved frames.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from . import session

# py_lcd.c colour constants: RGB565 as the LCD takes it (not imlib's byte-swapped words)
BLACK, NAVY, DARKGREEN, DARKCYAN, MAROON, PURPLE, OLIVE = 0x0000, 0x000F, 0x03E0, 0x03EF, 0x7800, 0x780F, 0x7BE0
LIGHTGREY, DARKGREY, BLUE, GREEN, CYAN, RED, MAGENTA = 0xC618, 0x7BEF, 0x001F, 0x07E0, 0x07FF, 0xF800, 0xF81F
YELLOW, WHITE, ORANGE, GREENYELLOW, PINK = 0xFFE0, 0xFFFF, 0xFD20, 0xAFE5, 0xF81F
XY_RLUD, YX_RLUD, XY_LRUD, YX_LRUD, XY_RLDU, YX_RLDU, XY_LRDU, YX_LRDU = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0

_W, _H = 320, 240


class _Screen:
    def __init__(self):
        self.fb = np.zeros((_H, _W, 3), dtype=np.uint8)
        self.pending = None  # (index, name) of the frame not yet written
        self.count = 0


_screen = _Screen()


def _rgb_of_lcd_color(c) -> np.ndarray:
    if isinstance(c, (tuple, list)):
        return np.array([int(v) & 0xFF for v in c[:3]], dtype=np.uint8)
    c = int(c) & 0xFFFF
    r, g, b = (c >> 11) & 31, (c >> 5) & 63, c & 31
    return np.array([(r * 255 + 15) // 31, (g * 255 + 31) // 63, (b * 255 + 15) // 31], dtype=np.uint8)


def init(*args, **kw):
    flush()
    color = kw.get("color")
    _screen.fb[:] = 0 if color is None else _rgb_of_lcd_color(color)
    return None


def deinit():
    flush()


def width():
    return _W


def height():
    return _H


def type():  # noqa: A001 - MaixPy's name
    return 1


def freq(*args):
    return 15000000


def set_backlight(*args):
    return None


def get_backlight():
    return 100


def rotation(*args):
    return 0 if not args else None


def direction(*args):
    return XY_LRUD if not args else None


def mirror(*args):
    return False if not args else None


def bgr_to_rgb(*args):
    return False if not args else None


def register(*args):
    return None


def clear(color=None):
    _screen.fb[:] = 0 if color is None else _rgb_of_lcd_color(color)
    _touch()
    return None


def fill_rectangle(x, y, w, h, color):
    x0, y0, x1, y1 = max(int(x), 0), max(int(y), 0), min(int(x) + int(w), _W), min(int(y) + int(h), _H)
    if x1 > x0 and y1 > y0:
        _screen.fb[y0:y1, x0:x1] = _rgb_of_lcd_color(color)
        _touch()


def draw_string(x, y, text, color=WHITE, bg_color=BLACK):
    """Text on the screen (OpenCV font) over a background box, like the LCD's own text routine."""
    from .image import Image

    img = Image._make(2, np.zeros((_H, _W), dtype=np.uint16))
    img.draw_string(int(x), int(y), str(text), color=0xFFFF, scale=1)
    mask = img._px != 0
    if mask.any():
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        _screen.fb[y0:y1, x0:x1] = _rgb_of_lcd_color(bg_color)
        _screen.fb[mask] = _rgb_of_lcd_color(color)
    _touch()


def display(img, roi=None, oft=None, **_ignored):
    """py_lcd_display: the image centred on the screen (cut when larger, black borders when smaller)."""
    from .image import Image

    if not isinstance(img, Image):
        raise TypeError(f"Can't convert {type_name(img)} to Image")
    rgb = img._rgb888()
    if roi is not None:
        x, y, w, h = (int(v) for v in roi)
        rgb = rgb[max(y, 0):y + h, max(x, 0):x + w]
    h, w = rgb.shape[:2]
    fb = np.zeros_like(_screen.fb)
    if oft is not None:
        ox, oy = int(oft[0]), int(oft[1])
        sx = sy = 0
    else:
        ox, sx = ((_W - w) // 2, 0) if w <= _W else (0, (w - _W) // 2)
        oy, sy = ((_H - h) // 2, 0) if h <= _H else (0, (h - _H) // 2)
    cw, ch = min(w - sx, _W - ox), min(h - sy, _H - oy)
    if cw > 0 and ch > 0:
        fb[oy:oy + ch, ox:ox + cw] = rgb[sy:sy + ch, sx:sx + cw]
    flush()
    _screen.fb = fb
    _screen.count += 1
    _screen.pending = (_screen.count - 1, _camera_name())
    return None


def type_name(obj) -> str:
    return obj.__class__.__name__


def frame() -> np.ndarray:
    """The screen as HxWx3 RGB (the last frame made)."""
    return _screen.fb.copy()


def frames_shown() -> int:
    return _screen.count


def _camera_name():
    cam = session.current().camera
    return getattr(cam, "last_name", None)


def _touch():
    if _screen.pending is None and _screen.count:
        _screen.pending = (_screen.count - 1, _camera_name())


def flush() -> None:
    """Write the current frame if it has not been written since it last changed."""
    if _screen.pending is None:
        return
    index, name = _screen.pending
    _screen.pending = None
    out = session.current().lcd_dir
    if out is None:
        return
    stem = f"{index:04d}" + (f"_{name}" if name else "")
    write_png(out / f"{stem}.png", _screen.fb)


def write_png(path, rgb: np.ndarray, quality: int = 95) -> None:
    """Write an RGB picture (PNG, or JPEG/BMP by the file's suffix) whole: temporary file + rename."""
    import cv2

    path = Path(path)
    ext = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise InputError(f"{path}: cannot encode a picture with suffix {ext!r}")
    write_whole(path, data.tobytes())


def write_whole(path, data: bytes) -> None:
    """Write a file whole (temporary file + rename, the folder made if missing), with the user's umask
    (:func:`kmodelpy.files.write_atomic`)."""
    from ..files import write_atomic

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{path}: cannot write: {e.strerror or e}") from None
    write_atomic(path, data)


def reset_screen() -> None:
    """A fresh screen (a new script run)."""
    global _screen
    _screen = _Screen()


def __getattr__(name):
    raise AttributeError(f"lcd.{name} is not provided by kmodelpy's MaixPy stand-ins")
