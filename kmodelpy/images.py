"""The one place where images and dataset files are read (``ncc infer``'s input stage, and the
compiler's calibration set).

Follows runtime spec §E (= compiler spec §7.1):

* dataset listing: a directory is walked recursively; ``--dataset-format image`` keeps the files
  OpenCV recognises as images (``cv::haveImageReader``, a content-signature check), ``raw`` keeps
  every file. ``ncc`` uses the filesystem's iteration order; kmodelpy **sorts** the list (by path)
  so runs are reproducible. A single file is accepted as a one-element dataset.
* uint8 image input: ``imdecode(IMREAD_COLOR)`` (BGR, 3 channels even for grey/alpha images) →
  ``resize(INTER_LINEAR)`` to (W, H) → planes R, G, B for C = 3, the **B** plane for C = 1 (ncc
  does no grey conversion); mean/std are not applied.
* float32 image input: decode → ``f32(v) * f32(1/255)`` → ``resize(INTER_LINEAR)`` in float →
  planes → ``f32(f32(v - mean) / std)``.
* raw: exactly C·H·W elements of the input dtype (u8, little-endian f32), CHW; for f32 inputs
  ``(v - mean) / std`` is still applied.

Files are read with ``np.fromfile`` + ``cv2.imdecode`` so paths with any characters work.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError, read_user_file

FORMATS = ("image", "raw")
_F32_INV255 = np.float32(1.0 / 255.0)


def _cv2():
    import cv2  # imported lazily: keeps `import kmodelpy` cheap

    return cv2


def _is_image(path: str) -> bool:
    cv2 = _cv2()
    try:
        return bool(cv2.haveImageReader(path))
    except cv2.error:
        return False


def list_dataset(path, fmt: str = "image") -> list[Path]:
    """Files of a dataset (a folder walked recursively, or one file), sorted by path.

    Raises :class:`InputError` for a missing path or a dataset with no usable file."""
    if fmt not in FORMATS:
        raise InputError(f"--dataset-format {fmt!r}: use one of {', '.join(FORMATS)}")
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: dataset path does not exist; pass a folder of images (or raw files) or one file")
    if p.is_file():
        files = [p]
    else:
        files = []
        for root, dirs, names in os.walk(p):
            dirs.sort()
            files.extend(Path(root) / n for n in names)
        files.sort(key=lambda f: f.relative_to(p).parts)
    if fmt == "image":
        files = [f for f in files if _is_image(str(f))]
    if not files:
        what = "no image file OpenCV can decode" if fmt == "image" else "no file"
        hint = " (for .bin samples use --dataset-format raw)" if fmt == "image" else ""
        raise InputError(f"{p}: dataset contains {what}{hint}")
    return files


def _read_bytes(path) -> np.ndarray:
    return np.frombuffer(read_user_file(path, "an image"), dtype=np.uint8)


def _check_chw(path, c: int, h: int, w: int) -> None:
    if c not in (1, 3):
        raise InputError(
            f"{path}: the model input has {c} channels; images can only feed 1 (B plane) or 3 (RGB) "
            "channels — use --dataset-format raw with CHW files"
        )
    if h <= 0 or w <= 0:
        raise InputError(f"{path}: the model input size {w}x{h} cannot hold an image")


def _decode_bgr(path) -> np.ndarray:
    cv2 = _cv2()
    data = _read_bytes(path)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InputError(f"{path}: cannot decode the image (damaged file or a format OpenCV does not read)")
    return img


def _planes(img: np.ndarray, c: int) -> np.ndarray:
    """HWC BGR → CHW: R, G, B for 3 channels, the B plane for 1."""
    if c == 3:
        return np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))
    return np.ascontiguousarray(img[None, :, :, 0])


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    if img.shape[0] == h and img.shape[1] == w:
        return img
    cv2 = _cv2()
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def load_image_u8(path, c: int, h: int, w: int) -> np.ndarray:
    """A [c, h, w] uint8 array as ``ncc infer`` builds it for a uint8 model input (§E.3)."""
    _check_chw(path, c, h, w)
    return _planes(_resize(_decode_bgr(path), h, w), c)


def normalize_f32(x: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """``f32(f32(v - mean) / std)`` element-wise (ncc applies it to every float input)."""
    x = np.asarray(x, dtype=np.float32)
    return np.divide(np.subtract(x, np.float32(mean), dtype=np.float32), np.float32(std), dtype=np.float32)


def load_image_f32(path, c: int, h: int, w: int, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """A [c, h, w] float32 array as ``ncc infer`` (and ncc's calibration) builds it (§E.3)."""
    _check_chw(path, c, h, w)
    img = _decode_bgr(path)
    f = np.multiply(img.astype(np.float32), _F32_INV255, dtype=np.float32)
    return normalize_f32(_planes(_resize(f, h, w), c), mean, std)


def load_raw(path, dtype, shape) -> np.ndarray:
    """A raw sample: exactly prod(shape) little-endian elements of ``dtype``, reshaped."""
    dt = np.dtype(dtype).newbyteorder("<")
    n = int(np.prod(shape))
    data = _read_bytes(path)
    if data.size != n * dt.itemsize:
        raise InputError(
            f"{path}: raw file has {data.size} bytes but the model input needs {n * dt.itemsize} "
            f"({'x'.join(map(str, shape))} {np.dtype(dtype).name}, CHW)"
        )
    return data.view(dt).astype(np.dtype(dtype).newbyteorder("=")).reshape(shape)


def load_input(path, fmt: str, dtype, chw, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """One sample for a model input of ``dtype`` (uint8 or float32) and shape ``chw``, the way
    ``ncc infer`` reads it for ``--dataset-format fmt``."""
    c, h, w = (int(d) for d in chw)
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.uint8), np.dtype(np.float32)):
        raise InputError(f"{path}: model input dtype {dt} cannot be fed (uint8 or float32 only)")
    if fmt == "raw":
        x = load_raw(path, dt, (c, h, w))
        return normalize_f32(x, mean, std) if dt == np.float32 else x
    if fmt != "image":
        raise InputError(f"--dataset-format {fmt!r}: use one of {', '.join(FORMATS)}")
    if dt == np.uint8:
        return load_image_u8(path, c, h, w)
    return load_image_f32(path, c, h, w, mean, std)


def load_pair(path, fmt: str, dtype, chw, mean: float = 0.0, std: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(float model input, kmodel input of ``dtype``) of one sample, for running a float model and its
    kmodel side by side: the float input is what ncc's calibration feeds (``v/255`` then ``(v − mean)/std``
    for a picture or a raw uint8 file, the normalised file itself for raw float32)."""
    dt = np.dtype(dtype)
    xk = load_input(path, fmt, dt, chw, mean, std)
    if dt == np.float32:
        return xk, xk
    if fmt == "raw":
        return normalize_f32(xk.astype(np.float32) * np.float32(1.0 / 255.0), mean, std), xk
    return load_input(path, fmt, np.float32, chw, mean, std), xk


def model_chw(input_shape) -> tuple[int, int, int]:
    """(C, H, W) of an NCHW input shape (lower ranks are padded with leading 1s)."""
    s = [int(d) for d in input_shape]
    s = [1] * (4 - len(s)) + s if len(s) < 4 else s
    return s[-3], s[-2], s[-1]
