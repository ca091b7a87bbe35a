"""Stand-in for MaixPy v1's ``sensor`` module: the camera is a folder of pictures, one picture or a video.

``snapshot()`` returns the next picture as the camera would deliver it (omv/sensor.c sensor_snapshot,
py_sensor.c): scaled to the frame size (OpenCV INTER_LINEAR, as ``ncc infer`` and ``kmodelpy run`` read
pictures, so a model sees the same pixels either way), cut to the window of ``set_windowing`` (a
``(w, h)`` window is centred), as an RGB565 (or grayscale) image whose ``pix_ai`` holds the frame's 8-bit
planes, as the K210's DVP writes them. ``set_hmirror`` / ``set_vflip`` set how a sensor is mounted on
a board; the pictures are taken to be the scene as the script wants to see it, so the flips are not
applied unless the session says so (``kmodelpy maixpy --sensor-flips``).
When the pictures run out, the script ends (:class:`CameraFinished`, not an ``Exception``: a script's
``except Exception`` does not swallow it, its ``finally`` blocks run).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from . import session
from .image import Image, _gray_of_rgb

BAYER, RGB565, YUV422, GRAYSCALE, JPEG = 1, 2, 3, 4, 5
OV9650, OV2640, OV7725, MT9V034, LEPTON = 0x96, 0x26, 0x77, 0x13, 0x54
NORMAL, NEGATIVE = 0, 1
_SIZES = [(0, 0), (88, 72), (176, 144), (352, 288), (88, 60), (176, 120), (352, 240), (40, 30), (80, 60), (160, 120),
          (320, 240), (640, 480), (60, 40), (120, 80), (240, 160), (64, 32), (64, 64), (128, 64), (128, 128),
          (240, 240), (128, 160), (128, 160), (720, 480), (752, 480), (800, 600), (1280, 1024), (1600, 1200)]
(QQCIF, QCIF, CIF, QQSIF, QSIF, SIF, QQQQVGA, QQQVGA, QQVGA, QVGA, VGA, HQQQVGA, HQQVGA, HQVGA, B64X32, B64X64,
 B128X64, B128X128, B240X240, LCD, QQVGA2, WVGA, WVGA2, SVGA, SXGA, UXGA) = range(1, 27)


class CameraFinished(BaseException):
    """The camera source has no more frames: ``kmodelpy maixpy`` ends the script cleanly."""


class FrameSource:
    """The pictures of a folder (sorted, as ``kmodelpy infer`` lists a dataset), one picture, or the
    frames of a video: ``next()`` gives (name, HxWx3 uint8 RGB) or None at the end."""

    def __init__(self, path, max_frames: int | None = None):
        from ..images import _is_image, list_dataset

        self.path = Path(path)
        self.max_frames = max_frames
        self.count = 0
        self.last_name = None
        self._video = None
        if not self.path.exists():
            raise InputError(f"--camera {self.path}: no such folder, picture or video")
        if self.path.is_dir() or _is_image(str(self.path)):
            self._files = list_dataset(self.path, "image")
        else:
            import cv2

            cap = cv2.VideoCapture(str(self.path))
            if not cap.isOpened():
                raise InputError(f"--camera {self.path}: neither a folder of pictures, a picture nor a video OpenCV can read")
            self._video, self._files = cap, None

    def next(self):
        import cv2

        if self.max_frames is not None and self.count >= self.max_frames:
            return None
        if self._video is not None:
            ok, bgr = self._video.read()
            if not ok:
                return None
            name = f"{self.path.stem}_{self.count:05d}"
        else:
            if self.count >= len(self._files):
                return None
            f = self._files[self.count]
            bgr = cv2.imdecode(np.fromfile(f, dtype=np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise InputError(f"{f}: cannot decode the picture")
            name = f.stem
        self.count += 1
        self.last_name = name
        return name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class _State:
    def __init__(self):
        self.reset = False
        self.pixformat = 0
        self.framesize = 0
        self.window = None
        self.hmirror = False
        self.vflip = False
        self.after_end = 0


_state = _State()


def reset(freq=None, set_regs=True, dual_buff=False, choice=0, **_ignored):
    """sensor.reset(): the state of a freshly reset sensor (sensor.c sensor_reset: no flips)."""
    global _state
    size = _state.framesize
    _state = _State()
    _state.reset = True
    _state.framesize = size
    return None


def binocular_reset(**kw):
    return reset(**kw)


def set_pixformat(pixformat, set_regs=True, **_ignored):
    if int(pixformat) not in (RGB565, GRAYSCALE):
        raise ValueError("Pixel format is not supported!")
    _state.pixformat = int(pixformat)
    return True


def set_framesize(framesize, set_regs=True, **_ignored):
    fs = int(framesize)
    if not 0 < fs < len(_SIZES):
        raise OSError(5, "EIO")
    _state.framesize = fs
    _state.window = None
    return None


def set_windowing(roi):
    """py_sensor_set_windowing: (w, h) centred, or (x, y, w, h); multiples of 8 inside the frame."""
    res_w, res_h = _frame_size()
    vals = [int(v) for v in roi]
    if len(vals) == 4:
        x, y, w, h = vals
    elif len(vals) == 2:
        w, h = vals
        x, y = res_w // 2 - w // 2, res_h // 2 - h // 2
    else:
        raise ValueError("The tuple/list must either be (x, y, w, h) or (w, h)")
    if w < 8 or h < 8:
        raise ValueError("The selected window is too small")
    if x < 0 or x + w > res_w or y < 0 or y + h > res_h:
        raise ValueError("The selected window is outside the bounds of the frame")
    if w % 8 or h % 8:
        raise ValueError("value must be multiple of 8")
    _state.window = (x, y, w, h)
    return True


def set_hmirror(enable):
    _state.hmirror = bool(enable)
    return None


def set_vflip(enable):
    _state.vflip = bool(enable)
    return None


def _frame_size():
    return _SIZES[_state.framesize]


def width():
    return _frame_size()[0]


def height():
    return _frame_size()[1]


def get_id():
    return OV2640


def snapshot(**_ignored):
    """The next frame of the camera source (see the module docstring)."""
    if not _state.reset or not _state.framesize:
        raise RuntimeError("Not init!")
    s = session.current()
    src = s.camera
    if src is None:
        raise RuntimeError("Sensor timeout! (no camera: run with --camera FOLDER_OR_VIDEO)")
    frame = src.next()
    if frame is None:
        _state.after_end += 1
        if _state.after_end > 2 and s.hard_stop is not None:
            s.hard_stop()  # the script swallows the end of the camera and keeps asking for frames
        raise CameraFinished()
    return _make_frame(frame[1])


def _make_frame(rgb: np.ndarray) -> Image:
    import cv2

    fw, fh = _frame_size()
    if rgb.shape[0] != fh or rgb.shape[1] != fw:
        rgb = cv2.resize(rgb, (fw, fh), interpolation=cv2.INTER_LINEAR)
    if session.current().sensor_flips:
        if _state.hmirror:
            rgb = rgb[:, ::-1]
        if _state.vflip:
            rgb = rgb[::-1]
    if _state.window is not None:
        x, y, w, h = _state.window
        rgb = rgb[y:y + h, x:x + w]
    rgb = np.ascontiguousarray(rgb)
    if _state.pixformat == GRAYSCALE:
        gray = _gray_of_rgb(rgb)
        return Image._make(1, gray, gray.reshape(-1).copy())
    img = Image._from_rgb888(rgb)
    img._pix_ai = np.ascontiguousarray(rgb.transpose(2, 0, 1)).reshape(-1)  # the DVP's planar RGB888
    return img


def skip_frames(n=None, time=300, **_ignored):
    """Lets the sensor settle on the board; here no picture is used up."""
    if not _state.reset:
        raise RuntimeError("Sensor Timeout!!")
    return None


def run(enable):
    return True


def _no_op(*_args, **_kw):
    return None


(set_framerate, set_gainceiling, set_contrast, set_brightness, set_saturation, set_colorbar, set_auto_gain,
 set_auto_exposure, set_auto_whitebal, set_special_effect, set_lens_correction, set_jb_quality, flush, deinit,
 sleep, shutdown) = (_no_op,) * 16


def get_gain_db():
    return 0.0


def get_exposure_us():
    return 10000


def get_rgb_gain_db():
    return (0.0, 0.0, 0.0)


def __getattr__(name):
    raise AttributeError(f"sensor.{name} is not provided by kmodelpy's MaixPy stand-ins")
