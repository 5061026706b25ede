"""Atomic file writes: a temp file in the same folder, fsync, then rename.

A crash never leaves a half-written file under the final name, so a resumed run only ever reads
complete results and checkpoints.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from hybridcl.errors import HybridclError, RunError, describe_os_error


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
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
    except OSError as exc:  # name the final path, not the temp file, and say what to do
        raise HybridclError(
            "cannot save " + describe_os_error(exc, exc.filename if _outside(exc.filename, path) else path)
        ) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _outside(filename, path: Path) -> bool:
    """True when the error is about another path than ``path`` or its temp file (e.g. a parent folder)."""
    return filename is not None and Path(filename).parent != path.parent


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
    """The JSON document at ``path``; a missing, truncated or non-UTF-8 file is a ``RunError`` that
    says how to get it back (for a run's ``state.json`` and ``results.json``)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise RunError(f"{path}: byte {exc.start} is not UTF-8 text (the file is damaged){_recovery(path)}") from None
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}){_recovery(path)}") from None
    except OSError as exc:
        raise RunError("cannot read " + describe_os_error(exc, path)) from None


def _recovery(path: Path) -> str:
    """How to rebuild a damaged file of a run folder (seed-N/state.json, seed-N/results.json, results.json)."""
    seed_dir = path.parent if path.parent.name.startswith("seed-") else None
    run_dir = seed_dir.parent if seed_dir else path.parent
    if path.name == "state.json" and seed_dir:
        return (
            f": delete it and run `hybridcl run --resume {run_dir}` to train {seed_dir.name} again "
            "from its first task (the other seeds are kept)"
        )
    if path.name == "results.json":
        return f": rebuild it from the run's checkpoints with `hybridcl eval {run_dir}`"
    return ""


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as a safetensors file, atomically; the same tensors and metadata give the
    same bytes (safetensors itself writes the metadata in hash-map order, different every process)."""
    data = _sorted_metadata(save(tensors, metadata=metadata))
    # Written by Python rather than safetensors' save_file: a full disk is then an OSError with an
    # errno (safetensors raises its own SafetensorError), so it gets the same one-line message.
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def _sorted_metadata(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its header's ``__metadata__`` keys in sorted order.

    The header is 8 bytes of little-endian length, then JSON padded with spaces to a multiple of 8;
    tensor offsets count from the end of the header, so a header of another length stays valid.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    if "__metadata__" not in header:
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise RunError(f"{path}: hybridcl reads weights as safetensors only")
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except OSError as exc:
        raise RunError("cannot read " + describe_os_error(exc, path)) from None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise RunError(f"{path} is not a readable safetensors file ({exc}){_checkpoint_recovery(path)}") from None


def _checkpoint_recovery(path: Path) -> str:
    """For a checkpoint of a run (RUN/seed-N/tasks/I-TASK/*.safetensors): resuming trains that task again."""
    if path.parent.parent.name == "tasks" and path.parent.parent.parent.name.startswith("seed-"):
        run_dir = path.parent.parent.parent.parent
        return (
            f": run `hybridcl run --resume {run_dir}` to train that task again from the previous "
            "task's checkpoint (same config and seed, the same result on the same machine)"
        )
    return ": delete it and write it again"


class FolderLock:
    """An exclusive advisory lock (``fcntl.flock``) on ``path``, holding this process's pid.

    The kernel releases the lock when its holder exits, however it exits (kill -9 included), so a
    lock file left behind by a dead process is taken over by the next one. ``acquire`` returns
    ``None`` on success, else the holder's pid as written in the file (``0`` if unreadable).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self) -> int | None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            return int(holder) if holder.isdigit() else 0
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None
