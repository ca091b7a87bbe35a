"""kmodelpy's error types.

Every problem caused by the user's input (a bad file, a wrong option, a model that cannot be
compiled) is raised as a :class:`KmodelpyError`. The CLI prints ``str(error)`` as one line on stderr
and exits with status 2; nothing else ever reaches the user as a traceback.
"""


class KmodelpyError(Exception):
    """Base class: a user-facing problem. The message is one line naming the file/layer/tensor
    and saying what to do."""

    exit_code = 2


class FormatError(KmodelpyError):
    """A model file (kmodel or tflite) that cannot be read."""


class InputError(KmodelpyError):
    """Bad input data: image, raw file, dataset folder, array shape or dtype."""


class UnsupportedError(KmodelpyError):
    """Something valid but not supported (an operator, a layer configuration)."""


class CompileError(KmodelpyError):
    """The compiler cannot produce a kmodel (e.g. the KPU RAM overflows)."""


class KernelError(KmodelpyError):
    """An exception raised by a runtime kernel where ``ncc infer`` throws (it writes no output)."""


def read_user_file(path, kind: str) -> bytes:
    """The bytes of a file the user named, with a missing file, a folder or an unreadable file
    turned into one-line InputErrors (``kind`` says what was expected, e.g. "a .kmodel file")."""
    from pathlib import Path

    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory, not {kind}") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read: {e.strerror or e}") from None
