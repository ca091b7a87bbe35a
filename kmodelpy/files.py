"""Writing the files users get (kmodels, ``.bin`` outputs): whole or not at all, with normal permissions.

:func:`write_atomic` writes a temporary file in the target folder and renames it into place, so a reader
never sees half a file and an error leaves no output. The temporary file is created with mode 0666 by
``os.open``, so the user's umask applies exactly as for any other file they create (0644 under umask 022);
``tempfile.mkstemp`` would give 0600.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import InputError


def write_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + rename; one-line InputErrors for unwritable places."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{path}: output folder {folder} does not exist")
    while True:
        tmp = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise InputError(f"{folder}: cannot write the output there: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise InputError(f"{path}: cannot write the output: {e.strerror or e}") from None
        raise
