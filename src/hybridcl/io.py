"""Atomic file writes: a temp file in the same folder, fsync, then rename.

A crash never leaves a half-written file under the final name, so a resumed run only ever reads
complete results and checkpoints.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from hybridcl.errors import HybridclError, RunError


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and rename the result to ``path`` (permissions as the umask allows)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a power loss
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise HybridclError(f"disk full while saving {path}: free space on {path.parent} and resume the run") from exc
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise RunError(f"{path}: hybridcl reads weights as safetensors only")
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise RunError(f"{path} is not a readable safetensors file ({exc}); delete it and resume") from None
