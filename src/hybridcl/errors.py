"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""
from __future__ import annotations

import difflib
from typing import Iterable


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


def unknown_choice(what: str, value: object, allowed: Iterable[str]) -> str:
    """The message for a value that is not one of ``allowed``, with the closest match as a hint."""
    allowed = list(allowed)
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown {what} {value!r}{hint}: allowed are {', '.join(allowed)}"
