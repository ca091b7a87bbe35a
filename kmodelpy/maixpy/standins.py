"""The small MaixPy modules KPU scripts touch, as harmless stand-ins: ``time``/``utime`` (MicroPython's
ticks and OpenMV's ``clock``), ``gc``, ``sys`` (with ``print_exception``), ``uio``, ``Maix``
(``utils.gc_heap_size`` ...), ``fpioa_manager``, ``board``, and the table of every module name a script
can import (:func:`module`). ``KPU``, ``image``, ``sensor`` and ``lcd`` are their own modules.
"""
from __future__ import annotations

import io
import sys as _sys
import time as _time
import traceback
import types

# ----------------------------------------------------------------------------------------- time
_slept = 0.0  # sleep() does not wait: it moves the clock the script sees


def _now() -> float:
    return _time.perf_counter() + _slept


_T0 = _time.perf_counter()


class clock:  # noqa: N801 - MaixPy's name (OpenMV py_clock.c)
    def __init__(self):
        self._t = _now()
        self._ms = 0.0

    def tick(self):
        self._t = _now()

    def time(self):
        self._ms = (_now() - self._t) * 1000.0
        return self._ms

    def avg(self):
        return (_now() - self._t) * 1000.0

    def fps(self):
        dt = _now() - self._t
        return 1.0 / dt if dt > 0 else 0.0

    def reset(self):
        self._t = _now()

    def __repr__(self):
        return f"{{\"ticks\":{int((self._t - _T0) * 1000)}, \"fps\":{self.fps():f}}}"


def sleep(s):
    global _slept
    _slept += max(float(s), 0.0)


def sleep_ms(ms):
    sleep(float(ms) / 1000.0)


def sleep_us(us):
    sleep(float(us) / 1e6)


def ticks_ms():
    return int((_now() - _T0) * 1000) & 0x3FFFFFFF


def ticks_us():
    return int((_now() - _T0) * 1e6) & 0x3FFFFFFF


def ticks_cpu():
    return ticks_us()


def ticks_diff(a, b):
    return ((int(a) - int(b) + 0x20000000) & 0x3FFFFFFF) - 0x20000000


def ticks_add(a, b):
    return (int(a) + int(b)) & 0x3FFFFFFF


def _time_module(name: str) -> types.ModuleType:
    m = types.ModuleType(name, "MaixPy's time/utime (kmodelpy stand-in): ticks, sleep, clock()")
    for f in (clock, sleep, sleep_ms, sleep_us, ticks_ms, ticks_us, ticks_cpu, ticks_diff, ticks_add):
        setattr(m, f.__name__, f)
    m.time = lambda: int(_time.time() + _slept)
    m.localtime = lambda secs=None: _time.localtime(secs)[:8]
    m.mktime = lambda t: int(_time.mktime(tuple(t)[:8] + (-1,)))
    return m


# ----------------------------------------------------------------------------------------- gc, sys
def _gc_module() -> types.ModuleType:
    import gc as _gc

    m = types.ModuleType("gc", "MicroPython's gc (kmodelpy stand-in)")
    m.collect = lambda: (_gc.collect(), None)[1]
    m.mem_free = lambda: 2 * 1024 * 1024
    m.mem_alloc = lambda: 128 * 1024
    m.enable = lambda: None
    m.disable = lambda: None
    m.isenabled = lambda: True
    m.threshold = lambda *a: -1 if not a else None
    return m


def print_exception(exc, file=None):
    """MicroPython's sys.print_exception(exc, file=sys.stdout)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    (file if file is not None else _sys.stdout).write(text)


class _SysProxy(types.ModuleType):
    """``sys`` for the script: the real one plus MicroPython's print_exception."""

    def __getattr__(self, name):
        return getattr(_sys, name)


def _sys_module() -> types.ModuleType:
    m = _SysProxy("sys", "MicroPython's sys (kmodelpy stand-in: CPython's sys + print_exception)")
    m.print_exception = print_exception
    m.implementation = types.SimpleNamespace(name="micropython", version=(1, 11, 0))
    return m


def _uio_module() -> types.ModuleType:
    m = types.ModuleType("uio", "MicroPython's uio")
    m.StringIO, m.BytesIO, m.open = io.StringIO, io.BytesIO, None
    return m


# ----------------------------------------------------------------------------------------- Maix, board
def _maix_module() -> types.ModuleType:
    m = types.ModuleType("Maix", "MaixPy's Maix package (kmodelpy stand-in: utils only)")
    utils = types.ModuleType("Maix.utils")
    utils.gc_heap_size = lambda size=None: 0x80000 if size is None else None
    utils.heap_free = lambda: 2 * 1024 * 1024
    m.utils = utils
    m.__path__ = []
    return m


class _Pins:
    def __getattr__(self, name):
        if name.isupper():
            return 0
        raise AttributeError(name)


def _fpioa_manager_module() -> types.ModuleType:
    m = types.ModuleType("fpioa_manager", "MaixPy's fpioa_manager (kmodelpy stand-in: pins are not wired)")

    class _FM:
        fpioa = _Pins()

        def register(self, *a, **k):
            return None

        def unregister(self, *a, **k):
            return None

        def get_pin_by_function(self, *a, **k):
            return None

        def get_gpio_used(self, *a, **k):
            return None

    m.fm = _FM()
    m.fpioa = m.fm.fpioa
    return m


def _board_module() -> types.ModuleType:
    m = types.ModuleType("board", "MaixPy's board (kmodelpy stand-in)")
    m.board_info = _Pins()
    return m


# ----------------------------------------------------------------------------------------- table
_FACTORIES = {
    "time": lambda: _time_module("time"),
    "utime": lambda: _time_module("utime"),
    "gc": _gc_module,
    "sys": _sys_module,
    "usys": _sys_module,
    "uio": _uio_module,
    "Maix": _maix_module,
    "fpioa_manager": _fpioa_manager_module,
    "board": _board_module,
}
_OWN = {"KPU": "kpu", "kpu": "kpu", "image": "image", "sensor": "sensor", "lcd": "lcd"}
ALIASES = {"ujson": "json", "ustruct": "struct", "urandom": "random", "ucollections": "collections",
           "ure": "re", "uerrno": "errno", "ubinascii": "binascii", "uhashlib": "hashlib", "math": "math",
           "os": "os", "uos": "os"}
# MaixPy modules a KPU script may name that have no stand-in: the script stops with one line saying so
MAIXPY_ONLY = {"machine", "network", "audio", "video", "lvgl", "nes", "touchscreen", "speech_recognizer",
               "maix_asr", "socket", "usocket", "ucryptolib", "modules", "_thread", "utils", "Maix.GPIO",
               "Maix.FPIOA", "Maix.I2S", "Maix.FFT", "Maix.freq", "Maix.KPU"}


def provided() -> list[str]:
    return sorted(set(_FACTORIES) | set(_OWN))


def module(name: str, cache: dict) -> types.ModuleType | None:
    """The stand-in for the top-level MaixPy module ``name`` (one per script run, kept in ``cache``),
    or None when MaixPy's name is CPython's module (json, math...) or unknown."""
    if name in cache:
        return cache[name]
    if name in _OWN:
        import importlib

        mod = importlib.import_module(f"kmodelpy.maixpy.{_OWN[name]}")
    elif name in _FACTORIES:
        mod = _FACTORIES[name]()
    else:
        return None
    cache[name] = mod
    return mod
