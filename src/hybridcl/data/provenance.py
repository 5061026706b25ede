"""Which data files a run read, recorded so that another machine can check them.

``results.json`` records each file a task read as ``{"root", "path", "sha256"}``: ``root`` is
``bundled`` (the corpus shipped with hybridcl) or ``data.path`` (the config's data folder), and
``path`` is relative to it, never an absolute path of the machine the run used. A run folder moved
or copied elsewhere is checked against the files found under the same root there
(:func:`check_data_files`); older ``results.json`` files, whose ``files`` are plain path strings,
still read (they are reported as unchecked).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from hybridcl.data.readers import bundled_dir, records_stem


def data_root(source: str, path: str | None) -> tuple[str, Path | None]:
    """The name and folder of the root a source's files are recorded against."""
    if source == "bundled":
        return "bundled", bundled_dir()
    return "data.path", records_stem(Path(path), "")[0] if path else None


def file_records(files: list[str], source: str, path: str | None) -> list[dict]:
    """``[{"root", "path", "sha256"}]`` of the files a split was read from."""
    name, root = data_root(source, path)
    out = []
    for name_of_file in files:
        file = Path(name_of_file)
        try:
            relative = file.resolve().relative_to(root.resolve()).as_posix() if root is not None else file.name
        except ValueError:  # not under the root (a symlink out of it): its name is all that travels
            relative = file.name
        out.append({"root": name, "path": relative, "sha256": sha256_of(file)})
    return out


def sha256_of(file: Path) -> str:
    stat = file.stat()
    return _sha256(str(file.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_data_files(results: dict, sources: dict[str, tuple[str, str | None]]) -> list[str]:
    """One line per recorded data file that is missing here or whose sha256 differs, from a run's
    ``results.json`` (or a seed's) and each task's data source now (task -> ``(source, path)``:
    :func:`hybridcl.data.tasks.data_sources`)."""
    seeds = results.get("per_seed") or [results]
    notes, seen, unchecked = [], set(), 0
    for task, task_data in (seeds[0].get("data") or {}).items():
        if task not in sources:
            notes.append(f"task {task} is not in the run's config: its data files are not checked")
            continue
        name, root = data_root(*sources[task])
        for split in task_data.values():
            for entry in split.get("files", []) if isinstance(split, dict) else []:
                if not isinstance(entry, dict):  # an older results.json: an absolute path, no hash
                    unchecked += 1
                    continue
                key = (entry["root"], root, entry["path"])
                if key in seen:
                    continue
                seen.add(key)
                notes += _check_one(entry, name, root)
    if unchecked:
        plural = "s were" if unchecked != 1 else " was"
        notes.append(f"{unchecked} data file{plural} recorded without a hash (an older hybridcl): not checked")
    return notes


def _check_one(entry: dict, name: str, root: Path | None) -> list[str]:
    where = f"{entry['path']} (under {entry['root']})"
    if entry["root"] != name or root is None:
        return [f"data file {where}: the run's data source now has no {entry['root']} root: not checked"]
    file = root / entry["path"]
    if not file.is_file():
        return [f"data file {where} is missing here ({file}): the run's data cannot be checked"]
    now = sha256_of(file)
    if now != entry["sha256"]:
        return [
            f"data file {where} has changed since the run: sha256 {now[:12]}... here, {entry['sha256'][:12]}... "
            "when the run read it; results of this run and of a new evaluation may differ"
        ]
    return []
