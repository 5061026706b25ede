"""A run folder: its layout, its resolved config, each seed's saved state and logs.

```
runs/<name>/config.yaml, results.json, report.md, cache/
runs/<name>/seed-<s>/state.json, results.json, train_log.jsonl, tensorboard/, metrics.csv, wandb/,
                     tasks/<i>-<stage>/{components,rule}.safetensors, predictions/*.jsonl
```
Every file is written through :mod:`hybridcl.records.io` (atomically). The layout is documented in
docs/results.md.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path

from hybridcl import __version__
from hybridcl.config.experiment import ExperimentConfig, dump_yaml, load_config_file
from hybridcl.errors import ConfigError, RunError
from hybridcl.records.io import FolderLock, load_tensors, read_json, write_atomic, write_json, write_text
from hybridcl.records.results import SeedState


def new_run_dir(config: ExperimentConfig) -> Path:
    """``run.output_dir/run.name``, or a dated name ``<preset>-<strategy>-<YYYYmmdd-HHMMSS>``."""
    name = config.run.name or f"{config.preset}-{config.strategy}-{datetime.now():%Y%m%d-%H%M%S}"
    return Path(config.run.output_dir) / name


LOCK_FILE = ".lock"


class RunLocked(RunError):
    """Another live process writes into this run folder."""


class RunLock:
    """One writer per run folder: ``run``, ``run --resume`` and ``eval`` hold ``RUN_DIR/.lock`` (an
    ``fcntl`` advisory lock) for their whole life; a second one raises :class:`RunLocked` naming the
    holder's pid. The kernel drops the lock of a process that dies (kill -9 too), so a stale lock file
    is taken over. With several processes (``accelerate launch``) only the main one locks.
    """

    def __init__(self, run_dir: Path, *, enabled: bool = True):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.lock = FolderLock(self.run_dir / LOCK_FILE)

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        holder = self.lock.acquire()
        if holder is not None:
            who = f"process {holder}" if holder else "another process"
            raise RunLocked(
                f"{self.run_dir} is in use by hybridcl {who} (lock {self.run_dir / LOCK_FILE}): "
                "wait for it to finish or stop it, or choose another run.name"
            )
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


def load_run_config(run_dir: Path) -> ExperimentConfig:
    """The resolved config a run was started with (its ``config.yaml``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir} is not a hybridcl run folder: it has no config.yaml")
    try:
        return load_config_file(path)
    except ConfigError as exc:  # written by another hybridcl version, or edited by hand
        raise RunError(f"{path}: {exc}; this hybridcl ({__version__}) cannot use this run: start a new one") from None


def write_run_config(run_dir: Path, config: ExperimentConfig, *, overwrite: bool = False) -> None:
    """Write ``config.yaml``; a folder that already holds another config is refused unless ``overwrite``."""
    path = Path(run_dir) / "config.yaml"
    if path.exists() and not overwrite:
        if load_run_config(run_dir).to_dict() != config.to_dict():
            raise RunError(
                f"{run_dir} holds a run with another config: resume it with `hybridcl run --resume {run_dir}` "
                "or choose a new run.name"
            )
        return
    write_text(path, dump_yaml(config))


class SeedDir:
    """The folder of one seed of a run, and the files in it."""

    def __init__(self, run_dir: Path, seed: int):
        self.seed = seed
        self.path = Path(run_dir) / f"seed-{seed}"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def results_file(self) -> Path:
        return self.path / "results.json"

    @property
    def train_log(self) -> Path:
        return self.path / "train_log.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def stage_dir(self, i: int, stage: str) -> Path:
        """Checkpoints after stage ``i`` (1-based): ``components.safetensors`` and ``rule.safetensors``."""
        return self.path / "tasks" / f"{i}-{stage}"

    def stats_file(self, i: int) -> Path:
        """Per-example statistics of matrix row ``i`` (``<task>/<metric>`` -> [examples, k]), for intervals."""
        return self.path / "stats" / f"row{i}.safetensors"

    def routed_stats_file(self, i: int) -> Path:
        """As :meth:`stats_file`, for row ``i`` scored without the task id (:mod:`hybridcl.inference.routing`)."""
        return self.path / "stats" / f"routed-row{i}.safetensors"

    def progress_file(self, i: int, stage: str) -> Path:
        """The mid-task checkpoint of stage ``i`` while it trains (:mod:`hybridcl.training.state`)."""
        return self.path / "progress" / f"{i}-{stage}.safetensors"

    def drop_progress(self, i: int, stage: str) -> None:
        """Stage ``i`` is trained and its checkpoint saved: its mid-task checkpoint is no longer needed."""
        self.progress_file(i, stage).unlink(missing_ok=True)

    def predictions_file(self, name: str) -> Path:
        return self.path / "predictions" / f"{name}.jsonl"

    def load_state(self) -> SeedState:
        """The saved progress, or a new state if the seed has not started."""
        if not self.state_file.exists():
            return SeedState()
        return SeedState.from_json(read_json(self.state_file), where=self.state_file, seed_dir=self.path)

    def first_unreadable_stage(self, state: SeedState) -> int | None:
        """The first finished stage (1-based) whose checkpoint is missing or damaged, if any."""
        for i, stage in enumerate(state.stages_done, start=1):
            for name in ("components.safetensors", "rule.safetensors"):
                try:
                    load_tensors(self.stage_dir(i, stage) / name)
                except RunError:
                    return i
        return None

    def save_state(self, state: SeedState) -> None:
        write_json(self.state_file, state.to_json())

    def write_predictions(self, name: str, lines: list[dict]) -> None:
        write_text(self.predictions_file(name), "".join(json.dumps(line) + "\n" for line in lines))

    def read_predictions(self, name: str) -> list[dict]:
        """The lines :meth:`write_predictions` wrote under ``name``."""
        return [json.loads(line) for line in self.predictions_file(name).read_text().splitlines()]

    def drop_unfinished_log(self, finished: list[str], resumed: tuple[str, int] | None = None) -> None:
        """On resume, forget the log lines of a stage whose training was interrupted: it starts over,
        or (``resumed``: its name and the step of its mid-task checkpoint) continues after that step."""
        path = self.train_log
        if not path.exists():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and _kept(json.loads(line), finished, resumed)]
        if len(kept) != len(lines):
            write_text(path, "".join(line + "\n" for line in kept))


def _kept(line: dict, finished: list[str], resumed: tuple[str, int] | None) -> bool:
    if line.get("task") in finished:
        return True
    return resumed is not None and line.get("task") == resumed[0] and line.get("step", 0) <= resumed[1]


class Undo:
    """Put a run folder back as it was when a change fails before ``kept()`` says it has taken hold.

    On entering, every file of the folder but the stage checkpoints (``tasks/``: never rewritten, only
    added) and the token cache (named by content) is copied aside; if the block raises while
    ``kept()`` is false, the copies are put back and every file and folder created since is removed,
    so the folder holds the same files, byte for byte, as before.
    """

    def __init__(self, run_dir: Path, kept: Callable[[], bool]):
        self.run_dir, self.kept = Path(run_dir), kept

    def _owned(self, path: Path) -> bool:
        """Files the block may change or add: all but the lock."""
        return path.relative_to(self.run_dir).parts[0] != LOCK_FILE

    def __enter__(self) -> Undo:
        self.before = {p for p in self.run_dir.rglob("*") if self._owned(p)}
        self.copies = Path(tempfile.mkdtemp(prefix=f".{self.run_dir.name}-undo-", dir=self.run_dir.parent))
        for path in self.before:
            parts = path.relative_to(self.run_dir).parts
            if path.is_file() and "tasks" not in parts and parts[0] != "cache":
                target = self.copies / path.relative_to(self.run_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        try:
            if kind is not None and not self.kept():
                for path in sorted(self.run_dir.rglob("*"), reverse=True):  # a folder's files before it
                    if self._owned(path) and path not in self.before:
                        path.rmdir() if path.is_dir() else path.unlink()
                for copy in self.copies.rglob("*"):
                    if copy.is_file():
                        write_atomic(self.run_dir / copy.relative_to(self.copies), partial(shutil.copy2, copy))
        finally:
            shutil.rmtree(self.copies, ignore_errors=True)
