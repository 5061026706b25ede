"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable

QUOTE_LIMIT = 200  # characters of a value an error message quotes
PATH_LIMIT = 4096  # characters of a path (Linux's PATH_MAX: no longer path can be opened)
# reprlib stops at these sizes and depths, so a value of any size (a YAML alias bomb expands to
# hundreds of millions of items) costs microseconds to quote.
_REPR = reprlib.Repr()
_REPR.maxlevel = 4
_REPR.maxtuple = _REPR.maxlist = _REPR.maxarray = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 8
_REPR.maxdeque = 8
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = QUOTE_LIMIT + 10


class HybridclError(Exception):
    """Base class: the message says what is wrong, where, and how to fix it."""


class ConfigError(HybridclError):
    """A config key, value or file is wrong."""


class DataError(HybridclError):
    """A data file or record is missing, corrupt or unusable."""


class ModelError(HybridclError):
    """A base model cannot be found, loaded or adapted."""


class RunError(HybridclError):
    """A run folder is missing, incompatible or inconsistent."""


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters (longer ones end in ``...``
    and say how long the value was when it has a length)."""
    text = _REPR.repr(value)
    if len(text) <= limit:
        return text
    size = (
        f" ({len(value):,} {'characters' if isinstance(value, str) else 'items'})" if hasattr(value, "__len__") else ""
    )
    return text[: limit - 3] + "..." + size


def unknown_choice(what: str, value: object, allowed: Iterable[str]) -> str:
    """The message for a value that is not one of ``allowed``, with the closest match as a hint."""
    allowed = list(allowed)
    text = str(value)
    close = difflib.get_close_matches(text, allowed, n=1) if len(text) <= QUOTE_LIMIT else []
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown {what} {quote(value)}{hint}: allowed are {', '.join(allowed)}"


def describe_os_error(exc: OSError, path: object = None) -> str:
    """One line for a failed file operation: the path, the cause and what to do about it.

    ``path`` names the file the user knows (e.g. the final name rather than a temporary one);
    without it the exception's own file name is used.
    """
    import errno

    where = str(path if path is not None else exc.filename or "a file")
    if len(where) > PATH_LIMIT:  # a path is quoted whole up to the kernel's PATH_MAX, to be acted on
        where = where[: PATH_LIMIT - 3] + f"... ({len(where):,} characters)"
    cause = exc.strerror or str(exc)
    advice = {
        errno.ENOSPC: "free space there and run the command again (a run continues with `hybridcl run --resume`)",
        errno.EDQUOT: "free space there and run the command again (a run continues with `hybridcl run --resume`)",
        errno.EROFS: "copy the folder somewhere writable or mount it read-write",
        errno.EACCES: "you may not write there: choose another folder or change its permissions",
        errno.EPERM: "you may not write there: choose another folder or change its permissions (or `chattr -i`)",
        errno.ENAMETOOLONG: "choose a shorter name (run.name, the output folder or file name)",
        errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
        errno.EISDIR: "that path is a folder: name a file",
        errno.ENOENT: "check the path",
    }.get(exc.errno or 0, "check the path and the file system")
    what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else cause
    return f"{where}: {what}: {advice}"
