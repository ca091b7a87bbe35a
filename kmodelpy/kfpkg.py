"""``.kfpkg``: the package MaixPy users flash with kflash (a zip of ``flash-list.json`` and the files
it names). ``flash-list.json`` is ``{"version": ..., "files": [{"address": N, "bin": "name",
"sha256Prefix": bool}, ...]}``: each file goes to flash address N (MaixPy's ``kpu.load(0x300000)``
reads a kmodel from there). ``sha256Prefix`` only tells kflash to prepend its header when writing:
the member itself is the raw file.

:func:`read_kfpkg` lists the members, :func:`load` runs the kmodel in one (``member`` = its name or
its flash address; not needed when the package holds one kmodel), :func:`describe_kfpkg` is what
``kmodelpy inspect x.kfpkg`` prints.
"""
from __future__ import annotations

import io
import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import FormatError, InputError, read_user_file

SUFFIX = ".kfpkg"
FLASH_LIST = "flash-list.json"


@dataclass
class KfpkgEntry:
    name: str
    address: int
    sha256_prefix: bool
    data: bytes

    @property
    def kind(self) -> str:
        """"kmodel v3", "kmodel v4", "kmodel v5", "firmware" (a .bin) or "data"."""
        d = self.data
        if len(d) >= 8 and d[:4] == b"LDMK":
            return f"kmodel v{struct.unpack_from('<I', d, 4)[0]}"
        if len(d) >= 4 and struct.unpack_from("<I", d, 0)[0] == 3:
            return "kmodel v3"
        if self.name.lower().endswith(".bin"):
            return "firmware"
        return "data"

    @property
    def is_kmodel(self) -> bool:
        return self.kind in ("kmodel v3", "kmodel v4")


def is_kfpkg(path) -> bool:
    """A .kfpkg by its name, or any zip holding a flash-list.json."""
    p = Path(path)
    if p.suffix.lower() == SUFFIX:
        return True
    try:
        with open(p, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return False
        with zipfile.ZipFile(p) as z:
            return FLASH_LIST in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def read_kfpkg(path) -> list[KfpkgEntry]:
    """The files of a .kfpkg in flash-list order, with their flash addresses."""
    p = str(path)
    raw = read_user_file(path, "a .kfpkg file")
    try:
        z = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        raise FormatError(f"{p}: not a .kfpkg (a kfpkg is a zip file holding {FLASH_LIST} and the files it names)") from None
    with z:
        try:
            listing = json.loads(z.read(FLASH_LIST).decode("utf-8"))
            files = listing["files"]
            rows = [(str(f["bin"]), int(f["address"]), bool(f.get("sha256Prefix", False))) for f in files]
        except KeyError:
            raise FormatError(f"{p}: the .kfpkg has no {FLASH_LIST} (or it lacks files/bin/address)") from None
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            raise FormatError(f"{p}: {FLASH_LIST} in the .kfpkg cannot be read ({' '.join(str(e).split())})") from None
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise FormatError(f"{p}: the .kfpkg zip is damaged ({' '.join(str(e).split())})") from None
        entries = []
        for name, address, prefix in rows:
            try:
                data = z.read(name)
            except KeyError:
                raise FormatError(f"{p}: {FLASH_LIST} names {name!r}, which the .kfpkg does not contain") from None
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as e:
                raise FormatError(f"{p}: member {name!r} of the .kfpkg cannot be read ({' '.join(str(e).split())})") from None
            entries.append(KfpkgEntry(name, address, prefix, data))
    return entries


def _parse_address(member) -> int | None:
    if isinstance(member, int):
        return member
    try:
        return int(member, 0)
    except ValueError:
        return None


def select(entries: list[KfpkgEntry], member: str | int | None, path) -> KfpkgEntry:
    """The kmodel ``member`` names (a member name, or a flash address: "0x300000" or 0x300000);
    without ``member``, the only kmodel of the package."""
    kmodels = [e for e in entries if e.is_kmodel]
    listing = ", ".join(f"{e.name} at 0x{e.address:X}" for e in kmodels) or "none"
    if member is None:
        if len(kmodels) == 1:
            return kmodels[0]
        if not kmodels:
            raise InputError(f"{path}: the .kfpkg holds no kmodel v3/v4 ({len(entries)} files: "
                             f"{', '.join(e.name for e in entries)})")
        raise InputError(f"{path}: the .kfpkg holds {len(kmodels)} kmodels ({listing}): pick one with --member NAME")
    address = _parse_address(member)
    for e in entries:
        if e.name == member or (address is not None and e.address == address):
            if not e.is_kmodel:
                raise InputError(f"{path}: member {e.name} is {e.kind}, not a kmodel v3/v4")
            return e
    raise InputError(f"{path}: the .kfpkg has no member {member!r} (kmodels: {listing})")


def load(path, member: str | int | None = None):
    """The runnable model of a kmodel in a .kfpkg (see :func:`select`)."""
    from .runtime import model_from_bytes

    e = select(read_kfpkg(path), member, path)
    return model_from_bytes(e.data, f"{path}:{e.name}")


def describe_kfpkg(path, member: str | None = None) -> str:
    """``kmodelpy inspect x.kfpkg``: its files with flash addresses and, for each kmodel, a one-line
    summary; with ``member``, that kmodel's full description."""
    entries = read_kfpkg(path)
    if member is not None:
        from .inspect_kmodel import describe_bytes

        e = select(entries, member, path)
        return describe_bytes(e.data, f"{path}:{e.name}")
    lines = [f"{path}: .kfpkg with {len(entries)} file(s) for kflash"]
    for e in entries:
        lines.append(f"  0x{e.address:06X}  {e.name:<28} {len(e.data):>9} B  {e.kind}"
                     + ("  (sha256Prefix)" if e.sha256_prefix else ""))
        if e.is_kmodel:
            lines.append(f"            {_one_line_summary(e, path)}")
    if any(e.is_kmodel for e in entries):
        lines.append(f"(kmodelpy inspect {path} --member NAME describes one; run/infer take --member NAME when there "
                     "are several; MaixPy: kpu.load(0xADDRESS))")
    return "\n".join(lines)


def _one_line_summary(e: KfpkgEntry, path) -> str:
    from .errors import KmodelpyError
    from .runtime import model_from_bytes

    try:
        m = model_from_bytes(e.data, f"{path}:{e.name}")
    except KmodelpyError as err:
        return f"cannot be loaded: {' '.join(str(err).split())}"
    n = len(m.kmodel.layers) if getattr(m, "version", 4) == 3 else len(m.kmodel.nodes)
    outs = ", ".join("x".join(map(str, s)) for s in m.output_shapes())
    return (f"input {m.input_dtype} {'x'.join(map(str, m.input_shape))}, {n} layers, outputs {outs}; "
            f"MaixPy: kpu.load(0x{e.address:X})")
