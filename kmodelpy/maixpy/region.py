"""MaixPy v1's YOLOv2 region layer: what ``kpu.run_yolo2`` does with the KPU's output 0.

Follows sipeed/MaixPy-v1 @ d8901fd, ``components/kendryte_sdk/src/sipeed_yolo2.c`` (region_layer_init,
forward_region_layer, get_region_boxes, do_nms_sort, region_layer_output) and the Python list built by
``components/micropython/port/src/Maix/Maix_kpu.c`` (py_kpu_class_run_yolo2), as stated with line
numbers in the MaixPy spec (rules 3-8). Everything is float32 with newlib's ``expf`` and ``qsort``
(:mod:`kmodelpy.newlib`), each operation rounded on its own (the "plain float" reference build):

* activation: ``1.0f / (1.0f + expf(-v))`` on tx, ty and objectness; per-cell softmax over the class
  logits (largest first, then ``expf(v - largest)`` summed in class order, then ``e / sum``). The
  activations are written back into the buffer, IN PLACE (the fmap aliases it on the device).
* boxes: ``bx = (col + sig(tx)) / w``, ``bw = expf(tw) * anchor / w``; ``prob = sig(obj) * p`` kept only
  when ``prob > threshold`` (strict).
* NMS per class: newlib's unstable qsort of every box by that class's probability (the order carries
  over from class to class), then a box suppresses every later box whose IoU ``> nms`` (strict).
* output in scan order (anchor-major), class = first strict maximum; corners ``bx*W -/+ bw*W/2`` stored
  to uint32 like RISC-V's ``fcvt.wu.s`` (negative -> 0); MicroPython objects with int16 rects and an
  uint8 object count.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import InputError
from ..newlib import expf_plain, qsort

_F = np.float32
_ONE = _F(1.0)
_TWO = _F(2.0)
COORDS = 4
OBJ_INFO_SLOTS = 10  # sipeed_yolo2.h: obj_info_t.obj[10]


class RegionLayerError(InputError, ValueError):
    """A region-layer set-up the firmware would run with undefined behaviour (reads past output 0)."""


class Yolo2Object:
    """One object of ``kpu.run_yolo2``'s list (Maix_kpu.c py_kpu_class_yolo2_find_type, 799-875)."""

    __slots__ = ("_x", "_y", "_w", "_h", "_classid", "_value", "_index", "_objnum")

    def __init__(self, x, y, w, h, classid, value, index, objnum):
        self._x, self._y, self._w, self._h = int(x), int(y), int(w), int(h)
        self._classid = int(classid)
        self._value = float(np.float32(value))  # a MicroPython float is single precision
        self._index, self._objnum = int(index), int(objnum)

    def rect(self):
        return (self._x, self._y, self._w, self._h)

    def x(self):
        return self._x

    def y(self):
        return self._y

    def w(self):
        return self._w

    def h(self):
        return self._h

    def classid(self):
        return self._classid

    def value(self):
        return self._value

    def index(self):
        return self._index

    def objnum(self):
        return self._objnum

    def __repr__(self):
        return (f'{{"x":{self._x}, "y":{self._y}, "w":{self._w}, "h":{self._h}, "value":{self._value:f}, '
                f'"classid":{self._classid}, "index":{self._index}, "objnum":{self._objnum}}}')


# ----------------------------------------------------------------------------------------- public
def check_yolo2_args(threshold, nms_value, anchor_number, anchor):
    """init_yolo2's checks and conversions (Maix_kpu.c py_kpu_class_init_yolo2 696-793): threshold and
    nms_value as C floats in [0, 1], anchor_number > 0, exactly 2*anchor_number anchors, each a float.
    Returns (threshold, nms_value, anchors) as float32."""
    thr = _F(_as_float(threshold, "threshold"))
    if not (thr >= 0 and thr <= 1):
        raise ValueError("[MAIXPY]kpu: threshold only support 0 to 1")
    nms = _F(_as_float(nms_value, "nms_value"))
    if not (nms >= 0 and nms <= 1):
        raise ValueError("[MAIXPY]kpu: nms_value only support 0 to 1")
    if isinstance(anchor_number, bool) or not isinstance(anchor_number, (int, np.integer)):
        raise TypeError(f"can't convert {type(anchor_number).__name__} to int")
    if anchor_number <= 0:
        raise ValueError("[MAIXPY]kpu: anchor_number should > 0")
    try:
        items = list(anchor)
    except TypeError:
        raise TypeError(f"object '{type(anchor).__name__}' isn't a tuple or list") from None
    if len(items) != 2 * anchor_number:
        raise ValueError(f"requested length {2 * anchor_number} but object has length {len(items)}")
    anchors = np.array([_as_float(a, "anchor") for a in items], dtype=np.float32)
    return thr, nms, anchors


def yolo2_region(fmap, w, h, ch, anchors, threshold, nms, net_w, net_h, classes=None):
    """What ``kpu.run_yolo2`` returns for the KPU output ``fmap`` (the flat float32 output-0 buffer:
    a numpy array, bytes, a sequence of floats or a ``kpu.forward`` fmap; it is not modified).

    ``w, h, ch``: the grid and channels of ``kpu.set_outputs(task, 0, w, h, ch)``; ``anchors``: the flat
    anchor tuple of ``kpu.init_yolo2`` (its length / 2 is the anchor count); ``threshold``, ``nms``: as
    given to init_yolo2; ``net_w, net_h``: the model's input size (boxes are scaled to it).
    ``classes=None`` is MaixPy v1 (``ch / 5 - 5``, which assumes five anchors); an int decodes with that
    many classes (canmv's API, and models made for another anchor count).

    Returns a list of objects with ``x() y() w() h() rect() classid() value() index() objnum()``, or
    None. Raises MaixPy's errors for bad arguments and :class:`RegionLayerError` where the firmware
    would read outside the buffer."""
    anchors = list(np.asarray(anchors, dtype=np.float64).reshape(-1)) if not isinstance(anchors, (list, tuple)) else list(anchors)
    if len(anchors) % 2:
        raise ValueError(f"anchors: {len(anchors)} values; need pairs (w, h) for each anchor")
    thr, nms_f, anc = check_yolo2_args(threshold, nms, len(anchors) // 2, anchors)
    buf = _as_f32_buffer(fmap).copy()
    return run_region_layer(buf, int(w), int(h), int(ch), anc, thr, nms_f, int(net_w), int(net_h), classes)


def run_region_layer(buf, w, h, ch, anchors, threshold, nms, net_w, net_h, classes=None):
    """The region layer on ``buf`` (a writable flat float32 array: output 0), modified in place as on
    the device. ``anchors``, ``threshold``, ``nms`` already float32 (see :func:`check_yolo2_args`)."""
    layer = RegionLayer(w, h, ch, len(anchors) // 2, classes, buf.size)
    raw = layer.run(buf, anchors, threshold, nms, net_w, net_h)
    return python_list(raw)


# ----------------------------------------------------------------------------------------- layer
class RegionLayer:
    """region_layer_init (sipeed_yolo2.c 27-125): the layout the firmware assumes, checked against
    the buffer so nothing is read outside it."""

    def __init__(self, w, h, ch, anchor_number, classes, buffer_floats):
        w, h, ch = w & 0xFFFF, h & 0xFFFF, ch & 0xFFFF  # set_outputs keeps uint16_t
        self.w, self.h, self.anchors = w, h, anchor_number
        if classes is None:
            classes = ch // 5 - 5  # line 52: assumes 5 anchors
            origin = f"classes = ch/5 - 5 = {ch}/5 - 5 = {classes} (MaixPy v1 assumes 5 anchors)"
        else:
            classes = int(classes)
            origin = f"classes = {classes}"
        self.classes = classes
        need = w * h * anchor_number * (COORDS + 1 + classes)
        hint = ("check set_outputs' w, h, ch and the anchor count, or give the class count explicitly "
                "(classes= / --classes)")
        if classes < 0 or w == 0 or h == 0:
            raise RegionLayerError(f"region layer: {origin} on a {w}x{h} grid: not a YOLOv2 output of "
                                   f"{anchor_number} anchors (undefined on the device): {hint}")
        if need > buffer_floats:
            raise RegionLayerError(
                f"region layer: {anchor_number} anchors x (5 + {classes} classes) x {w}x{h} cells need {need} floats "
                f"but output 0 has {buffer_floats} ({origin}); the firmware would read outside the buffer "
                f"(undefined on the device): {hint}"
            )

    def run(self, buf, anchors, threshold, nms, net_w, net_h):
        """region_layer_run: returns the raw obj_info entries [(x1, y1, x2, y2, classid, prob)] (uint32
        coordinates), all of them (the device's array holds 10)."""
        wh = self.w * self.h
        A, C = self.anchors, self.classes
        per_anchor = wh * (COORDS + 1 + C)
        with np.errstate(all="ignore"):
            self._activate(buf, wh, A, C, per_anchor)
            if C == 0:  # max_index reads the spare slot (max = 0): never above the threshold
                return []
            boxes, probs = self._boxes(buf, wh, A, C, per_anchor, anchors, threshold)
            _nms(boxes, probs, nms)
            return _output(boxes, probs, threshold, net_w, net_h)

    def _activate(self, buf, wh, A, C, per_anchor):
        """forward_region_layer 191-211: sigmoid on entries 0, 1 and 4, softmax over the classes."""
        for n in range(A):
            base = n * per_anchor
            for lo, hi in ((base, base + 2 * wh), (base + 4 * wh, base + 5 * wh)):
                v = buf[lo:hi]
                buf[lo:hi] = _ONE / (_ONE + expf_plain(-v))
            if C:
                cls = buf[base + 5 * wh: base + (5 + C) * wh].reshape(C, wh)
                largest = cls[0].copy()
                for i in range(C):
                    largest = np.where(cls[i] > largest, cls[i], largest)
                e = expf_plain(cls - largest)
                total = np.zeros(wh, dtype=np.float32)
                for i in range(C):
                    total = total + e[i]
                cls[:] = e / total

    def _boxes(self, buf, wh, A, C, per_anchor, anchors, threshold):
        """get_region_boxes 259-301 (correct_region_boxes is the identity: image size = net size).
        Returns boxes [B, 4] (x, y, w, h) and probs [B, C] in box order n*w*h + row*w + col."""
        fw, fh = _F(self.w), _F(self.h)
        cell = np.arange(wh)
        col = (cell % self.w).astype(np.float32)
        row = (cell // self.w).astype(np.float32)
        boxes = np.empty((A * wh, 4), dtype=np.float32)
        probs = np.empty((A * wh, C), dtype=np.float32)
        for n in range(A):
            base = n * per_anchor
            at = slice(n * wh, (n + 1) * wh)
            boxes[at, 0] = (col + buf[base: base + wh]) / fw
            boxes[at, 1] = (row + buf[base + wh: base + 2 * wh]) / fh
            boxes[at, 2] = expf_plain(buf[base + 2 * wh: base + 3 * wh]) * anchors[2 * n] / fw
            boxes[at, 3] = expf_plain(buf[base + 3 * wh: base + 4 * wh]) * anchors[2 * n + 1] / fh
            scale = buf[base + 4 * wh: base + 5 * wh]
            p = scale[None, :] * buf[base + 5 * wh: base + (5 + C) * wh].reshape(C, wh)
            probs[at] = np.where(p > threshold, p, _F(0)).T
        return boxes, probs


def _iou_many(a, b):
    """box_iou (sipeed_yolo2.c 316-349) of box ``a`` against each row of ``b``, float32 throughout."""

    def overlap(x1, w1, x2, w2):
        l1 = x1 - w1 / _TWO
        l2 = x2 - w2 / _TWO
        left = np.where(l1 > l2, l1, l2)
        r1 = x1 + w1 / _TWO
        r2 = x2 + w2 / _TWO
        right = np.where(r1 < r2, r1, r2)
        return right - left

    ow = overlap(a[0], a[2], b[:, 0], b[:, 2])
    oh = overlap(a[1], a[3], b[:, 1], b[:, 3])
    inter = np.where((ow < 0) | (oh < 0), _F(0), ow * oh)
    union = a[2] * a[3] + b[:, 2] * b[:, 3] - inter
    return inter / union


def _nms(boxes, probs, nms):
    """do_nms_sort 351-386: for each class, newlib's qsort of all boxes by that class's probability,
    descending (nms_comparator: the sign of the float difference), keeping the order left by the
    previous class; then each surviving box zeroes that class in every later box overlapping it by
    more than ``nms``."""
    B, C = probs.shape
    order = list(range(B))
    for k in range(C):
        key = probs[:, k].tolist()

        def cmp(a, b, key=key):
            d = key[a] - key[b]  # the sign of the float32 difference, NaN -> 0
            return 1 if d < 0 else (-1 if d > 0 else 0)

        qsort(order, cmp)
        idx = np.array(order)
        for i in range(B):
            a = idx[i]
            if probs[a, k] == 0:
                continue
            rest = idx[i + 1:]
            if rest.size:
                hit = rest[_iou_many(boxes[a], boxes[rest]) > nms]
                probs[hit, k] = 0


def _output(boxes, probs, threshold, net_w, net_h):
    """region_layer_output 404-430: scan order, first strict maximum, prob > threshold, corners as
    uint32 (RISC-V fcvt.wu.s: truncation, negative -> 0, NaN and >= 2**32 -> 0xFFFFFFFF)."""
    cls = np.argmax(probs, axis=1)  # first index of the maximum (no NaN: probs are > threshold or 0)
    best = probs[np.arange(len(probs)), cls]
    W, H = _F(net_w), _F(net_h)
    objs = []
    for i in np.flatnonzero(best > threshold):
        x, y, w, h = boxes[i]
        hw = (w * W) / _TWO
        hh = (h * H) / _TWO
        x1 = _fcvt_wu(x * W - hw)
        y1 = _fcvt_wu(y * H - hh)
        x2 = _fcvt_wu(x * W + hw)
        y2 = _fcvt_wu(y * H + hh)
        objs.append((x1, y1, x2, y2, int(cls[i]), best[i]))
    return objs


def _fcvt_wu(v) -> int:
    v = float(v)
    if v != v or v >= 4294967296.0:
        return 0xFFFFFFFF
    if v <= 0:
        return 0
    return int(v)


def _int16(v: int) -> int:
    v &= 0xFFFF
    return v - 0x10000 if v & 0x8000 else v


_warned_overflow = False


def python_list(raw):
    """Maix_kpu.c 930-985: ``uint8_t obj_num = obj_number`` (0 -> None), rect_t fields int16:
    x = (int16)x1, w = (int16)(x2 - x1) with uint32 arithmetic."""
    global _warned_overflow
    n = len(raw)
    if n > OBJ_INFO_SLOTS and not _warned_overflow:
        _warned_overflow = True
        warnings.warn(
            f"kpu.run_yolo2: {n} objects; MaixPy's obj_info_t holds {OBJ_INFO_SLOTS} and the firmware "
            "writes the rest past its end (undefined on the device); kmodelpy returns them as written",
            RuntimeWarning, stacklevel=3,
        )
    count = n & 0xFF
    if count == 0:
        return None
    out = []
    for i in range(count):
        x1, y1, x2, y2, cid, prob = raw[i]
        out.append(Yolo2Object(_int16(x1), _int16(y1), _int16((x2 - x1) & 0xFFFFFFFF),
                               _int16((y2 - y1) & 0xFFFFFFFF), cid, prob, i, count))
    return out


# ----------------------------------------------------------------------------------------- helpers
def _as_float(v, what):
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    raise TypeError(f"can't convert {type(v).__name__} to float")


def _as_f32_buffer(fmap) -> np.ndarray:
    if hasattr(fmap, "buffer_f32"):
        return fmap.buffer_f32()
    if isinstance(fmap, (bytes, bytearray, memoryview)):
        b = bytes(fmap)
        return np.frombuffer(b[: len(b) // 4 * 4], dtype="<f4").astype(np.float32)
    a = np.asarray(fmap)
    if a.dtype != np.float32:
        a = a.astype(np.float32)
    return a.reshape(-1)
