"""Stand-in for MaixPy v1's ``KPU`` module (``import KPU as kpu``), emulated with kmodelpy's bit-exact
kmodel runtime.

Follows sipeed/MaixPy-v1 @ d8901fd ``components/micropython/port/src/Maix/Maix_kpu.c`` (function names
below) and the MaixPy spec: ``load`` (py_kpu_class_load: a path containing ``.kmodel``, or a flash
address), ``set_outputs`` (py_kpu_class_set_outputs -> sipeed_kpu_set_outputs_shape: kmodel v4 only, the
one check ``w*h*ch*4 == output bytes``), ``init_yolo2`` / ``run_yolo2`` (py_kpu_class_init_yolo2,
py_kpu_class_run_yolo2 + sipeed_yolo2.c, see :mod:`.region`), ``forward`` / ``get_output``
(py_kpu_forward, py_kpu_get_output: the fmap ALIASES the output buffer: the next run overwrites it and
run_yolo2 rewrites output 0 in place), ``deinit``, ``memtest``. Errors carry MaixPy's own text.
"""
from __future__ import annotations

import numpy as np

from ..errors import KmodelpyError, UnsupportedError
from . import session
from .region import RegionLayer, check_yolo2_args, python_list

_ERR_TEXT = {
    2001: "ERR_PARAM: please check param, load address or kmodel file name",
    2002: "ERR_KMODEL_VERSION: only support kmodel V3/V4 now",
    2003: "ERR_KMODEL_FORMAT: layer_header.body_size <=0",
    2005: "ERR_READ_FILE: read file failed",
}
_OUTPUTS_NOT_SET = "ERR_OUTPUTS_SET: need kpu.set_outputs() to set shape"
_SLOTS = 16
_K210_CONV = 10240


def output_sizes(model) -> list[int]:
    """Byte size of each output buffer of a loaded kmodel (what sipeed_kpu_get_output reports)."""
    outs = getattr(getattr(model, "kmodel", None), "outputs", None)
    if outs is not None:  # v4: MemoryRange objects; v3: (address, size) pairs
        return [int(mr.size) if hasattr(mr, "size") else int(mr[1]) for mr in outs]
    return [int(np.prod(s, dtype=np.int64)) * 4 for s in model.output_shapes()]


def _load_error(code: int, hint: str = "") -> ValueError:
    msg = f"[MAIXPY]kpu: load error:{code}, {_ERR_TEXT[code]}"
    return ValueError(msg + (f" ({hint})" if hint else ""))


def _is_int(v) -> bool:  # MicroPython: mp_obj_get_type(v) == &mp_type_int (a bool is not an int)
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _say(text: str) -> None:
    """mp_printf(&mp_plat_print, ...): MaixPy prints these diagnostics on the console."""
    print(text, flush=True)


class KpuNet:
    """MaixPy's ``kpu_net`` (py_kpu_net_obj_type)."""

    def __init__(self, model, data: bytes, path, addr):
        self._model = model
        self._path, self._addr = path, addr
        self._size = len(data)
        self._version = 4 if data[:4] == b"LDMK" else 3
        self._slots = [(0, 0, 0)] * _SLOTS
        self._yolo = None
        self._alive = True
        self._outs: list[np.ndarray] | None = None
        if self._version == 3:
            self._layers, self._v3_last_type, self._v3_out_shape = _v3_info(data)
        else:
            self._layers = len(getattr(getattr(model, "kmodel", None), "ops", None) or [])
            self._v3_last_type, self._v3_out_shape = None, None

    # MaixPy's kpu_net methods
    def model_addr(self):
        return self._addr

    def model_size(self):
        return self._size

    def model_path(self):
        return self._path

    def net_arg(self):
        return self._yolo

    def __repr__(self):
        args = repr(self._yolo) if self._yolo is not None else '"(null)"'
        return (f'{{"model_addr": {self._addr or 0}, "model_size": {self._size}, '
                f'"model_path": "{self._path}", "net_args": {args}}}')

    # ------------------------------------------------------------------ helpers
    def _live(self):
        if not self._alive:
            raise ValueError("[MAIXPY]kpu: the model was released by kpu.deinit(task); load it again")
        return self

    def _input_whc(self):
        shape = list(self._model.input_shape)
        if len(shape) != 4:
            raise UnsupportedError(f"{self._path or self._addr}: input shape {shape} is not NCHW")
        return shape[3], shape[2], shape[1]

    def _output_sizes(self) -> list[int]:
        return output_sizes(self._model)

    def _check_outputs_set(self):
        """sipeed_kpu_model_run -> _check_outputs_setting (v4): every output needs its slot."""
        if self._version != 4:
            return
        filled = sum(1 for w, h, ch in self._slots if w and h and ch)
        if filled != len(self._output_sizes()):
            raise OSError(_OUTPUTS_NOT_SET)

    def _run(self, x: np.ndarray) -> None:
        self._check_outputs_set()
        self._model.run(x)
        err = getattr(self._model, "last_error", None)
        if err:
            print(f"Fatal: {err}", flush=True)
        raw = self._model.output_bytes()
        sizes = self._output_sizes()
        if self._outs is None:
            self._outs = [np.zeros(n, dtype=np.uint8) for n in sizes]
        at = 0
        for buf, n in zip(self._outs, sizes):  # refilled in place: fmaps alias these buffers
            buf[:] = np.frombuffer(raw, dtype=np.uint8, count=n, offset=at)
            at += n

    def _feed_image(self, img):
        """check_img_format (Maix_kpu.c 62-94) and the pix_ai bytes the KPU reads."""
        w0, h0, ch0 = self._input_whc()
        pix_ai = img._pix_ai
        if pix_ai is None:
            _say("[MAIXPY]kpu: pix_ai is NULL!")
            raise ValueError("[MAIXPY]kpu: check img format err!")
        if img.width() != w0 or img.height() != h0:
            _say(f"[MAIXPY]kpu: img w={img.width()},h={img.height()}, but model w={w0},h={h0}")
            raise ValueError("[MAIXPY]kpu: check img format err!")
        if img._bpp == 1 and ch0 != 1:
            _say(f"[MAIXPY]kpu: grayscale img, but model channel={ch0}")
            raise ValueError("[MAIXPY]kpu: check img format err!")
        if img._bpp == 2 and ch0 != 3:
            _say(f"[MAIXPY]kpu: RGB img, but model channel={ch0}")
            raise ValueError("[MAIXPY]kpu: check img format err!")
        return self._input_array(np.asarray(pix_ai, dtype=np.uint8).reshape(-1))

    def _input_array(self, data: np.ndarray) -> np.ndarray:
        """The model input read from the bytes the KPU is given."""
        shape = [int(d) for d in self._model.input_shape]
        dtype = np.dtype(self._model.input_dtype)
        need = int(np.prod(shape[1:])) * dtype.itemsize
        raw = data.view(np.uint8)
        if raw.size < need:
            raise ValueError(f"[MAIXPY]kpu: the input has {raw.size} bytes but the model reads {need}")
        return np.frombuffer(raw[:need].tobytes(), dtype=dtype).reshape(shape[1:])

    def _region_layer_shape(self):
        """region_layer_init's layer w, h, ch: set_outputs slot 0 (v4) or the last KPU conv (v3)."""
        if self._version == 4:
            return self._slots[0]
        if self._v3_out_shape is None:
            raise UnsupportedError(f"{self._path or self._addr}: kmodel v3 without a KPU conv layer: no output shape for run_yolo2")
        return self._v3_out_shape


class Yolo2Args:
    """MaixPy's ``kpu_yolo2`` (py_kpu_class_yolo_args_obj_type): what init_yolo2 stores."""

    def __init__(self, thr, nms, anchors):
        self._thr, self._nms, self._anchors = thr, nms, anchors

    def threshold(self):
        return float(self._thr)

    def nms_value(self):
        return float(self._nms)

    def anchor_number(self):
        return len(self._anchors) // 2

    def anchor(self):
        return tuple(float(a) for a in self._anchors)

    def __repr__(self):
        a = ", ".join(f"{float(v):f}" for v in self._anchors)
        return (f'{{"threshold":{float(self._thr):f}, "nms_value":{float(self._nms):f}, '
                f'"anchor_number":{len(self._anchors) // 2}, "anchor":"({a})"}}')


class Fmap:
    """MaixPy's ``kpu_fmap`` (py_kpu_fmap_obj_type): a view of an output buffer. Reading it later sees
    whatever the KPU and run_yolo2 wrote there since."""

    def __init__(self, buf: np.ndarray, index: int, whc, typecode: str = "f"):
        self._buf, self._index, self._whc, self._typecode = buf, index, whc, typecode

    def _items(self) -> np.ndarray:
        if self._typecode == "B":
            return self._buf
        if self._typecode != "f":
            raise OSError("typecode don't support read!")
        return self._buf[: self._buf.size // 4 * 4].view("<f4")

    def buffer_f32(self) -> np.ndarray:
        return self._buf[: self._buf.size // 4 * 4].view("<f4")

    def __getitem__(self, index):
        items = self._items()
        if isinstance(index, slice):
            start, stop, step = index.indices(items.size)
            if step != 1:
                raise OSError("only slices with step=1 (aka None) are supported")
            return tuple(items[start:max(stop, start)].tolist())
        i = int(index)
        if i < 0:
            i += items.size
        if not 0 <= i < items.size:
            raise IndexError("kpu_fmap index out of range")
        return items[i].item()

    def __setitem__(self, index, value):
        items = self._items()
        if isinstance(index, slice):
            start, stop, step = index.indices(items.size)
            if step != 1:
                raise OSError("only slices with step=1 (aka None) are supported")
            n = max(stop - start, 0)
            if isinstance(value, list):
                if len(value) != n:
                    raise ValueError("cannot grow or shrink image")
                items[start:start + n] = value
            else:
                items[start:start + n] = value
            return
        i = int(index)
        if i < 0:
            i += items.size
        if not 0 <= i < items.size:
            raise IndexError("kpu_fmap index out of range")
        items[i] = value

    def size(self):
        return int(self._buf.size)

    def index(self):
        return self._index

    def w(self):
        return self._whc[0]

    def h(self):
        return self._whc[1]

    def ch(self):
        return self._whc[2]

    def typecode(self):
        return self._typecode

    def __repr__(self):
        w, h, ch = self._whc
        return (f'{{"fmap": "data"=0x{id(self._buf) & 0xFFFFFFFF:x}, "size"={self._buf.size}, "index": {self._index}, '
                f'"w": {w}, "h": {h}, "ch": {ch}, "typecode": {self._typecode}}}')


# ----------------------------------------------------------------------------------------- load
def _read_model(data: bytes, origin: str, file):
    """sipeed_kpu_model_load: kmodel v4 ('KMDL', stored 'LDMK') or v3 (version 3); the model through kmodelpy."""
    from .. import load

    if not (data[:4] == b"LDMK" or data[:4] == b"\x03\x00\x00\x00"):
        raise _load_error(2002, f"{origin} is not a kmodel v3/v4")
    try:
        return load(file)
    except KmodelpyError as e:
        raise _load_error(2003 if data[:4] == b"LDMK" else 2002, f"kmodelpy: {' '.join(str(e).split())}") from None


def load(model):
    """kpu.load(path_or_flash_address) (py_kpu_class_load)."""
    s = session.current()
    if _is_int(model):
        addr = int(model)
        if addr <= 0:
            raise ValueError("[MAIXPY]kpu: model_addr must > 0 ")
        file = s.flash_file(addr)
        if file is None:
            raise _load_error(2002, f"nothing is flashed at 0x{addr:x}: run with --flash 0x{addr:x}=FILE.kmodel")
        data = _read(file)
        return KpuNet(_read_model(data, f"the file flashed at 0x{addr:x} ({file})", file), data, None, addr)
    if isinstance(model, str):
        if not any(ext in model for ext in (".kmodel", ".smodel", ".emodel")):
            raise ValueError("[MAIXPY]kpu: model format don't match, only supply .kmodel ")
        if ".kmodel" not in model:
            raise _load_error(2001, f"{model}: encrypted models (.smodel/.emodel) need the board's key")
        try:
            file = s.resolve(model)
        except OSError:
            raise _load_error(2005, f"{model}: run with --sd DIR to map /sd/") from None
        if not file.is_file():
            raise _load_error(2005, f"{model}: no such file ({file})")
        data = _read(file)
        return KpuNet(_read_model(data, model, file), data, model, None)
    raise TypeError("[MAIXPY]kpu: only accept int or string")


def load_flash(model_addr, is_dual_buf, batch_size, spi_speed):
    """kpu.load_flash(addr, is_dual_buf, batch_size, spi_speed): the model streamed from flash; the
    numbers are the same as kpu.load(addr)'s."""
    if not all(_is_int(v) for v in (model_addr, is_dual_buf, batch_size, spi_speed)):
        raise ValueError("[MAIXPY]kpu: load_flash arg format error: task=kpu.load_flash(flash_addr, is_dual_buf, batch_size, spi_speed)")
    return load(int(model_addr))


def _read(file) -> bytes:
    try:
        with open(file, "rb") as f:
            return f.read()
    except OSError as e:
        raise _load_error(2005, f"{file}: {e.strerror or e}") from None


# lib_sipeed_kpu.a layer_type_dtype0/1 (sipeed_kpu_model_getdtype_from_type): the fmap typecode of a v3
# model's last layer, by layer type (0 = none: "typecode don't support read!")
_V3_TYPECODE = dict(enumerate("\0fB\0\0f\0\0BfBBfBffffBfBfBfBff"))
_V3_TYPECODE.update({10240: "B", 10241: "B", 10242: "B", 10243: "B"})


def _v3_info(data: bytes):
    """What lib_sipeed_kpu.a reads from a kmodel v3 header (kmodel v3 spec 1.1, 1.5): the layer count,
    the last layer's type, and sipeed_kpu_model_get_output_shape = o_row_wid+1, o_col_high+1, o_ch_num+1
    of the LAST K210_CONV layer's kpu_layer_argument_t (None without one)."""
    try:
        hdr = np.frombuffer(data, dtype="<u4", count=7)
        n_layers, n_outputs = int(hdr[3]), int(hdr[6])
        at = 28 + 8 * n_outputs
        heads = np.frombuffer(data, dtype="<u4", count=2 * n_layers, offset=at).reshape(n_layers, 2)
        body = at + 8 * n_layers
        shape = None
        for kind, size in heads:
            if kind == _K210_CONV:
                layer_offset = int(np.frombuffer(data, dtype="<u4", count=1, offset=body + 8)[0])
                words = np.frombuffer(data, dtype="<u8", count=4, offset=layer_offset)
                ch_word, size_word = int(words[2]), int(words[3])
                shape = (((size_word >> 32) & 0x3FF) + 1, ((size_word >> 42) & 0x1FF) + 1, ((ch_word >> 32) & 0x3FF) + 1)
            body += int(size)
        last = int(heads[-1][0]) if n_layers else 0
        return n_layers, last, shape
    except (ValueError, IndexError):
        return 0, 0, None


# ----------------------------------------------------------------------------------------- outputs
def set_outputs(task, idx, w, h, ch):
    """kpu.set_outputs(task, idx, w, h, ch) (py_kpu_class_set_outputs 494-536)."""
    if not (isinstance(task, KpuNet) and all(_is_int(v) for v in (idx, w, h, ch))):
        raise ValueError("[MAIXPY]kpu: set_outputs arg format error: set_outputs(task, int idx, int w, int h, int ch)")
    task._live()
    idx, w, h, ch = (int(v) & 0xFFFF for v in (idx, w, h, ch))
    if task._version != 4:
        _say("[MAIXPY]kpu: set_outputs ctx error, maybe init err:2002")
        return False
    sizes = task._output_sizes()
    if idx >= len(sizes) or idx >= _SLOTS:
        _say(f"[MAIXPY]kpu: set_outputs arg value error:kmodel output idx {idx} out of range")
        return False
    if ((w * h * ch) << 2) & 0xFFFFFFFF != sizes[idx]:
        _say("[MAIXPY]kpu: set_outputs arg value error: w,c,ch size not match output size")
        return False
    task._slots[idx] = (w, h, ch)
    return True


def _fmap(task: KpuNet, out_index: int) -> Fmap:
    """py_kpu_forward's fmap (1390-1446): v4: typecode 'f', w/h/ch of set_outputs' slot; v3: the last
    layer's typecode, the conv's w/h/ch for a K210_CONV, else w = the byte count (get_typecode_size
    lacks its breaks: every typecode counts 1 byte), h = ch = 1."""
    if task._outs is None or not 0 <= out_index < len(task._outs):
        raise OSError("sipeed_kpu_get_output err")
    buf = task._outs[out_index]
    index = max(task._layers - 1, 0)
    if task._version == 4:
        return Fmap(buf, index, task._slots[out_index] if out_index < _SLOTS else (0, 0, 0), "f")
    if task._v3_last_type == _K210_CONV and task._v3_out_shape is not None:
        return Fmap(buf, index, task._v3_out_shape, "B")
    return Fmap(buf, index, (buf.size & 0xFFFF, 1, 1), _V3_TYPECODE.get(task._v3_last_type, "\0"))


def forward(kpu_net_obj, img, out_index=0, dma=-1):
    """kpu.forward(task, img_or_list, out_index=0) (py_kpu_forward 1294-1450): runs the model on the
    image's pix_ai (or a list of floats, fed raw as float32) and returns output ``out_index``."""
    from .image import Image

    task = _task(kpu_net_obj)
    if isinstance(img, Image):
        x = task._feed_image(img)
    elif isinstance(img, list):
        if not img:
            raise ValueError("[MAIXPY]kpu: check input list format err!")
        x = task._input_array(np.array([float(v) for v in img], dtype="<f4").view(np.uint8))
    else:
        raise ValueError("input not support")
    task._run(x)
    return _fmap(task, int(out_index))


def get_output(task, idx):
    """kpu.get_output(task, idx) (py_kpu_get_output 1455-1540)."""
    if not isinstance(task, KpuNet) or not _is_int(idx):
        raise ValueError("[MAIXPY]kpu: get_output arg format error: get_output(task, int idx)")
    task._live()
    if task._outs is None or not 0 <= int(idx) < len(task._outs):
        raise OSError("get_output err")
    return _fmap(task, int(idx))


def fmap(fmap_obj, ch):
    """kpu.fmap(fmap, ch): channel ``ch`` of a uint8 (v3 conv) fmap as a grayscale image."""
    from .image import Image

    w, h, nch = fmap_obj._whc
    ch = int(ch)
    if ch < 0 or ch >= nch:
        raise ValueError(f"[MAIXPY]kpu: ch err,input 0~{nch}")
    if fmap_obj._typecode != "B":
        raise ValueError("[MAIXPY]kpu: can't convet float fmap yet")
    plane = fmap_obj._buf[w * h * ch: w * h * (ch + 1)]
    return Image._from_gray(plane.reshape(h, w))


def fmap_free(fmap_obj):
    return None


# ----------------------------------------------------------------------------------------- yolo2
def init_yolo2(kpu_net, threshold, nms_value, anchor_number, anchor, dma=-1):
    """kpu.init_yolo2(task, threshold, nms_value, anchor_number, anchor) (py_kpu_class_init_yolo2)."""
    if not isinstance(kpu_net, KpuNet):
        raise TypeError("[MAIXPY]kpu: kpu_net type error")
    kpu_net._live()
    thr, nms, anchors = check_yolo2_args(threshold, nms_value, anchor_number, anchor)
    kpu_net._yolo = Yolo2Args(thr, nms, anchors)
    return True


def run_yolo2(kpu_net, img, dma=-1):
    """kpu.run_yolo2(task, img) (py_kpu_class_run_yolo2 884-985): the model on ``img``, then MaixPy's
    region layer on output 0, in place. A list of objects, or None."""
    from .image import Image

    if not isinstance(kpu_net, KpuNet):
        raise TypeError("[MAIXPY]kpu: kpu_net type error")
    task = kpu_net._live()
    if not isinstance(img, Image):
        raise TypeError(f"Can't convert {type(img).__name__} to Image")
    x = task._feed_image(img)
    if task._yolo is None:  # the firmware dereferences the missing arguments (a crash on the board)
        raise ValueError("[MAIXPY]kpu: run_yolo2 needs kpu.init_yolo2(task, threshold, nms_value, anchor_num, anchor) first")
    y = task._yolo
    w, h, ch = task._region_layer_shape()
    w_in, h_in, _ = task._input_whc()
    task._check_outputs_set()
    out0 = task._output_sizes()[0]
    layer = RegionLayer(w, h, ch, len(y._anchors) // 2, None, out0 // 4)
    task._run(x)
    buf = task._outs[0][: out0 // 4 * 4].view("<f4")
    return python_list(layer.run(buf, y._anchors, y._thr, y._nms, w_in, h_in))


def deinit(kpu_net):
    """kpu.deinit(task): releases the model."""
    if not isinstance(kpu_net, KpuNet):
        raise TypeError("[MAIXPY]kpu: kpu_net type error")
    kpu_net._alive = False
    kpu_net._yolo = None
    return True


def memtest():
    """kpu.memtest(): MaixPy prints the free GC and system heaps; here two fixed figures (no K210 heap)."""
    _say("###free gc heap memory : 309 KB")
    _say("###free sys heap memory: 2867 KB")


def _task(obj) -> KpuNet:
    if not isinstance(obj, KpuNet):
        raise TypeError("[MAIXPY]kpu: kpu_net type error")
    return obj._live()


def __getattr__(name):
    raise AttributeError(f"KPU.{name} is not provided by kmodelpy's MaixPy stand-ins")
