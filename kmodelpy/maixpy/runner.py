"""``kmodelpy maixpy script.py --camera FOLDER_OR_VIDEO``: an unmodified MaixPy v1 script on the PC.

The script runs in this Python with MaixPy's module names resolved to kmodelpy's stand-ins first: its
``import sensor, image, lcd, time``, ``import KPU as kpu``, ``import gc, sys`` get the stand-ins (CPython's
own ``time``, ``gc`` and ``sys`` stay untouched for everything else), and so do the imports made by the
script's own modules (files next to it or on the SD folder, imported with the script's builtins). ``open()`` maps ``/sd/`` and ``/flash/`` like the board.
The script stops cleanly when the camera runs out of pictures. A module or function the stand-ins lack
stops it with one line naming it and the script line; so does any other uncaught exception.
"""
from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from ..errors import InputError, KmodelpyError
from . import lcd, sensor, session, standins

_REAL_IMPORT = builtins.__import__
_PKG = str(Path(__file__).resolve().parent.parent)  # kmodelpy/


class ScriptError(KmodelpyError):
    """The script stopped on an exception it did not catch (one line: file:line: type: message)."""


class _ScriptEnv:
    """The builtins the script and its own modules (files next to it or on the SD folder) see."""

    def __init__(self, script: Path, s: session.Session):
        self.script = script
        self.session = s
        self.roots = [str(script.parent.resolve())] + ([str(s.sd.resolve())] if s.sd is not None else [])
        self.cache: dict = {}
        self.own: dict = {}  # the script's own modules, loaded with these builtins
        self.builtins = dict(builtins.__dict__)
        self.builtins["__import__"] = self.import_
        self.builtins["open"] = self.open_

    def import_(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0:
            top = name.partition(".")[0]
            if name in standins.MAIXPY_ONLY or top in standins.MAIXPY_ONLY:
                raise ModuleNotFoundError(f"MaixPy module '{name}' is not provided by kmodelpy's stand-ins "
                                          f"(provided: {', '.join(standins.provided())})", name=name)
            mod = standins.module(top, self.cache)
            if mod is not None:
                if name != top and getattr(mod, name.partition(".")[2], None) is None:  # import Maix.utils
                    raise ModuleNotFoundError(f"MaixPy module '{name}' is not provided by kmodelpy's stand-ins",
                                              name=name)
                return mod
            own = self._own_module(top)
            if own is not None and name == top:
                return own
            name = standins.ALIASES.get(name, name)
        return _REAL_IMPORT(name, globals, locals, fromlist, level)

    def _own_module(self, name):
        """A module file of the script's folder or the SD folder, run with the script's builtins."""
        if name in self.own:
            return self.own[name]
        spec = importlib.machinery.PathFinder.find_spec(name, self.roots)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None
        module = importlib.util.module_from_spec(spec)
        module.__dict__["__builtins__"] = self.builtins
        self.own[name] = sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del self.own[name], sys.modules[name]
            raise
        return module

    def open_(self, file, mode="r", *args, **kw):
        if isinstance(file, str):
            file = self.session.resolve(file)
        return open(file, mode, *args, **kw)

    def forget(self) -> None:
        for name, mod in self.own.items():
            if sys.modules.get(name) is mod:
                del sys.modules[name]
        self.own.clear()


def run_script(script, s: session.Session) -> int:
    """Run ``script`` under the session ``s``; returns the number of camera frames it used."""
    script = Path(script)
    try:
        source = script.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{script}: no such file") from None
    except OSError as e:
        raise InputError(f"{script}: cannot read: {e.strerror or e}") from None
    try:
        code = compile(source, str(script), "exec")
    except SyntaxError as e:
        where = f"{script}:{e.lineno}" if e.lineno else str(script)
        raise InputError(f"{where}: not a Python script: SyntaxError: {e.msg}") from None
    except ValueError as e:  # null bytes: a binary file
        raise InputError(f"{script}: not a Python script ({e})") from None
    env = _ScriptEnv(script, s)
    prev = session.activate(s)
    sensor.reset()  # a board fresh from power-up
    sensor._state.reset = False
    lcd.reset_screen()
    g = {"__name__": "__main__", "__file__": str(script), "__builtins__": env.builtins}
    try:
        with session.warning_lines():
            exec(code, g)
    except sensor.CameraFinished:
        pass
    except SystemExit as e:
        if e.code not in (None, 0):
            raise ScriptError(f"{script}: the script called sys.exit({e.code!r})") from None
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - one line for whatever the script did not catch
        raise _script_error(script, e, env) from None
    finally:
        lcd.flush()
        env.forget()  # the script's own modules: the next run imports them afresh
        session.activate(prev)
    cam = s.camera
    return cam.count if cam is not None else 0


_MAIXPY_ERRORS = (ValueError, TypeError, OSError, RuntimeError, AttributeError, ImportError, IndexError, KeyError)


def _script_error(script: Path, e: BaseException, env: _ScriptEnv) -> Exception:
    """One line: where in the script's own files it happened, the type and the message. An exception of
    another kind raised inside kmodelpy (not one of the errors MaixPy raises) is a kmodelpy bug: it is
    passed on (the CLI reports an internal error)."""
    frames = traceback.extract_tb(e.__traceback__)
    own = [f for f in frames if f.filename == str(script)
           or any(str(Path(f.filename).resolve()).startswith(r) for r in env.roots)]
    where = f"{own[-1].filename}:{own[-1].lineno}" if own else str(script)
    msg = " ".join(str(e).split())
    if isinstance(e, KmodelpyError):
        return ScriptError(f"{where}: {msg}")
    if frames and frames[-1].filename.startswith(_PKG) and not isinstance(e, _MAIXPY_ERRORS):
        return e
    return ScriptError(f"{where}: {type(e).__name__}: {msg}" if msg else f"{where}: {type(e).__name__}")


def _hard_stop_factory():
    def stop():
        lcd.flush()
        print("kmodelpy maixpy: the camera has no more pictures but the script keeps asking for them; stopping it",
              file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    return stop


def configure_parser(p) -> None:
    p.add_argument("script", help="the MaixPy script (.py), unchanged")
    p.add_argument("--camera", metavar="FOLDER_OR_VIDEO",
                   help="what sensor.snapshot() sees: a folder of pictures (sorted), one picture, or a video")
    p.add_argument("--lcd", metavar="OUTDIR", help="save every lcd.display() frame there as PNG")
    p.add_argument("--flash", metavar="ADDR=FILE", action="append", default=[],
                   help="a kmodel at a flash address for kpu.load(ADDR) (repeatable), or a .kfpkg package")
    p.add_argument("--sd", metavar="DIR", help="the SD card: /sd/... paths (and relative paths) are in DIR")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N camera frames")
    p.add_argument("--sensor-flips", action="store_true",
                   help="apply set_hmirror/set_vflip to the pictures (default: the pictures are the scene as "
                        "the script means to see it, whatever way the board's sensor is mounted)")


def main(args) -> int:
    import tempfile

    script = Path(args.script)
    if not script.is_file():
        raise InputError(f"{script}: no such file" if not script.exists() else f"{script}: not a file")
    if args.sd is not None and not Path(args.sd).is_dir():
        raise InputError(f"--sd {args.sd}: no such folder")
    if args.max_frames is not None and args.max_frames < 0:
        raise InputError("--max-frames must be >= 0")
    camera = sensor.FrameSource(args.camera, args.max_frames) if args.camera else None
    lcd_dir = None
    if args.lcd:
        lcd_dir = Path(args.lcd)
        if lcd_dir.exists() and not lcd_dir.is_dir():
            raise InputError(f"--lcd {lcd_dir}: exists and is not a folder")
    with tempfile.TemporaryDirectory(prefix="kmodelpy-flash-") as tmp:
        flash = session.parse_flash(args.flash, Path(tmp))
        s = session.Session(sd=args.sd, flash_dir=script.parent, flash=flash, camera=camera, lcd_dir=lcd_dir,
                            sensor_flips=args.sensor_flips)
        s.hard_stop = _hard_stop_factory()
        frames = run_script(script, s)
    sys.stdout.flush()
    shown = lcd.frames_shown()
    lcd_note = f"; {shown} LCD frame(s) -> {lcd_dir}" if lcd_dir is not None else (f"; {shown} LCD frame(s) (not saved: --lcd OUTDIR)" if shown else "")
    print(f"kmodelpy maixpy: {script.name}: {frames} camera frame(s){lcd_note}", file=sys.stderr)
    return 0
