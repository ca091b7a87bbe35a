"""Where the stand-ins find the board's outside world: the SD card, the flash, the camera, the LCD.

One :class:`Session` is current at a time (``kmodelpy maixpy`` makes one from its options; library
users get a default one: paths as given, no camera, LCD frames kept in memory). Paths follow MaixPy:
``/sd/...`` is the SD card (``--sd DIR``), ``/flash/...`` the script's folder, and a relative path is
relative to the working folder MaixPy boots in (``/sd`` when a card is present, else ``/flash``).
"""
from __future__ import annotations

import contextlib
import json
import sys
import warnings
import zipfile
from pathlib import Path

from ..errors import InputError


class Session:
    def __init__(self, sd: str | Path | None = None, flash_dir: str | Path | None = None,
                 flash: dict[int, Path] | None = None, camera=None, lcd_dir: str | Path | None = None,
                 sensor_flips: bool = False):
        self.sd = Path(sd) if sd is not None else None
        self.flash_dir = Path(flash_dir) if flash_dir is not None else None
        self.flash = dict(flash or {})  # address -> file holding the bytes flashed there
        self.camera = camera  # a sensor.FrameSource, or None
        self.lcd_dir = Path(lcd_dir) if lcd_dir is not None else None
        self.sensor_flips = sensor_flips  # apply set_hmirror / set_vflip to the camera pictures
        self.hard_stop = None  # called when a script keeps asking for frames after the camera ended

    def resolve(self, path: str) -> Path:
        """The PC file behind a MaixPy path."""
        p = str(path)
        if p.startswith("/sd/") or p == "/sd":
            if self.sd is None:
                raise OSError(2, f"ENOENT: {p} is on the SD card: run with --sd DIR", p)
            return self.sd / p[4:]
        if p.startswith("/flash/") or p == "/flash":
            return (self.flash_dir or Path.cwd()) / p[7:]
        if p.startswith("/"):
            return Path(p)
        base = self.sd if self.sd is not None else self.flash_dir
        return (base / p) if base is not None else Path(p)

    def flash_file(self, addr: int) -> Path | None:
        return self.flash.get(int(addr))


_current = Session()


def current() -> Session:
    return _current


def activate(session: Session) -> Session:
    """Make ``session`` current; returns the previous one."""
    global _current
    prev, _current = _current, session
    return prev


@contextlib.contextmanager
def warning_lines():
    """Warnings as one ``warning: ...`` line on stderr each (the CLI commands)."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


# ----------------------------------------------------------------------------------------- --flash
def parse_flash(specs, workdir: Path) -> dict[int, Path]:
    """``--flash ADDR=FILE`` (a kmodel written at ADDR) or ``--flash FILE.kfpkg`` (every file of the
    package at the address its flash-list.json gives, as kflash writes it)."""
    out: dict[int, Path] = {}
    for spec in specs or []:
        addr_text, sep, file = spec.partition("=")
        if sep:
            try:
                addr = int(addr_text, 0)
            except ValueError:
                raise InputError(f"--flash {spec}: {addr_text!r} is not an address (use e.g. 0x300000=model.kmodel)") from None
            p = Path(file)
            if not p.is_file():
                raise InputError(f"--flash {spec}: {p}: no such file")
            if p.suffix.lower() == ".kfpkg":
                members = _kfpkg_members(p, workdir)
                if addr not in members:
                    have = ", ".join(f"0x{a:x}" for a in sorted(members)) or "none"
                    raise InputError(f"--flash {spec}: {p} has nothing at 0x{addr:x} (its files are at {have})")
                out[addr] = members[addr]
            else:
                out[addr] = p
        else:
            p = Path(spec)
            if p.suffix.lower() != ".kfpkg":
                raise InputError(f"--flash {spec}: give ADDR=FILE (e.g. 0x300000=model.kmodel) or a .kfpkg package")
            if not p.is_file():
                raise InputError(f"--flash {spec}: no such file")
            out.update(_kfpkg_members(p, workdir))
    return out


def _kfpkg_members(path: Path, workdir: Path) -> dict[int, Path]:
    """A .kfpkg is a zip with flash-list.json: {"files": [{"address": N, "bin": "name", ...}]}."""
    try:
        with zipfile.ZipFile(path) as z:
            listing = json.loads(z.read("flash-list.json"))
            out = {}
            for entry in listing.get("files", []):
                addr = entry["address"]
                addr = int(addr, 0) if isinstance(addr, str) else int(addr)
                name = entry["bin"]
                dest = workdir / f"{path.stem}_0x{addr:x}_{Path(name).name}"
                dest.write_bytes(z.read(name))
                out[addr] = dest
            return out
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a kflash package (a zip with flash-list.json): {e}") from None
