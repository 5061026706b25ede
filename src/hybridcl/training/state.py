"""Checkpoints within a task, so that a task cut short (preemption, SIGTERM, Ctrl-C) continues where
it stopped instead of from its start.

One file per task being trained, ``seed-<s>/progress/<i>-<task>.safetensors``, rewritten (atomically)
every ``train.checkpoint_every`` optimizer steps and when SIGTERM or SIGINT arrives. It holds what
the rest of the task depends on: the trainable parameters, AdamW's state, the scheduler's state,
the random generators (torch CPU and CUDA, Python, NumPy), the data position (epoch and batch;
batches are a function of the seed and the epoch, so the position is two integers), the accumulation
counter and the loss window of the log. Training from it ends bit-identical to a task never
interrupted (same machine kind, libraries and thread count). Tensors are safetensors, the rest JSON
in the file's metadata; nothing is pickled.
"""

from __future__ import annotations

import json
import random
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from hybridcl.records.io import load_tensors, save_tensors

FORMAT = 1


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT stopped training at the end of an optimizer step (after a checkpoint)."""

    def __init__(self, signum: int, task: str, step: int, *, saved: bool):
        super().__init__(f"task {task}: stopped by signal {signum} at step {step}")
        self.signum, self.task, self.step, self.saved = signum, task, step, saved


@dataclass
class LossWindow:
    """The batch losses since the last log line: their sum and count (the log's state)."""

    total: float = 0.0
    batches: int = 0

    def add(self, value: float) -> None:
        self.total += value
        self.batches += 1

    @property
    def mean(self) -> float:
        return self.total / self.batches

    def reset(self) -> None:
        self.total, self.batches = 0.0, 0


@dataclass
class Position:
    """Where training stands: the epoch, the next batch within it, the log's loss window, seconds so far."""

    epoch: int = 0
    batch: int = 0
    window: LossWindow = field(default_factory=LossWindow)
    seconds: float = 0.0
    # the generators' saved states, set by the loop at the moment they were saved (set_rng): after the
    # epoch's loader drew its base seed from torch's generator when resuming mid-epoch
    rng: tuple[dict, dict] | None = None


@dataclass
class TrainState:
    """The mid-task checkpoint of one task's training (``path`` None: none is kept)."""

    path: Path | None
    task: str
    total_steps: int
    model: torch.nn.Module  # unwrapped: its trainable parameters are saved
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch LR scheduler
    accelerator: Accelerator

    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def save(self, result, position: Position) -> None:
        """Write the checkpoint (main process only; every process holds the same state)."""
        if self.path is None or not self.accelerator.is_main_process:
            return
        tensors = {f"model/{n}": p.detach() for n, p in self._trainable().items()}
        optimizer = self.optimizer.state_dict()
        for index, by_key in optimizer["state"].items():
            for key, value in by_key.items():
                tensors[f"optimizer/{index}/{key}"] = value
        tensors["rng/torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for k, state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng/cuda/{k}"] = state
        numpy_state: Any = np.random.get_state()
        tensors["rng/numpy"] = torch.from_numpy(numpy_state[1].astype(np.int64))
        progress = {
            "format": FORMAT,
            "task": self.task,
            "total_steps": self.total_steps,
            "steps": result.steps,
            "samples": result.samples,
            "tokens": result.tokens,
            "losses": result.losses,
            "epoch": position.epoch,
            "batch": position.batch,
            "window": [position.window.total, position.window.batches],
            "seconds": position.seconds,
            "accumulation_step": self.accelerator.step,
            "optimizer_groups": optimizer["param_groups"],
            "scheduler": self.scheduler.state_dict(),
            "python_rng": random.getstate(),
            "numpy_rng": [numpy_state[0], *numpy_state[2:]],
        }
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_tensors(self.path, tensors, metadata={"progress": json.dumps(progress)})

    def restore(self, result) -> Position:
        """Load the checkpoint into the model, optimizer, scheduler and generators; fill ``result``'s
        counters; return the position to continue from (the start when there is no usable checkpoint)."""
        progress, tensors = self.read()
        if progress is None:
            return Position()
        trainable = self._trainable()
        with torch.no_grad():
            for name, param in trainable.items():
                param.copy_(tensors[f"model/{name}"])
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": progress["optimizer_groups"]})
        self.scheduler.load_state_dict(progress["scheduler"])
        self.accelerator.step = progress["accumulation_step"]
        result.steps, result.samples, result.tokens = progress["steps"], progress["samples"], progress["tokens"]
        result.losses[:] = [tuple(x) for x in progress["losses"]]
        window = LossWindow(*progress["window"])
        rng = (progress, {k: v for k, v in tensors.items() if k.startswith("rng/")})
        return Position(progress["epoch"], progress["batch"], window, progress["seconds"], rng)

    def read(self) -> tuple[dict | None, dict[str, torch.Tensor]]:
        """The checkpoint's progress record and tensors; ``(None, {})`` when there is none for this
        task (absent, damaged, written for another task or another number of steps)."""
        if self.path is None or not Path(self.path).is_file():
            return None, {}
        progress = read_progress(self.path)
        if progress is None or progress.get("task") != self.task or progress.get("total_steps") != self.total_steps:
            return None, {}
        return progress, load_tensors(self.path)


def read_progress(path: Path) -> dict | None:
    """The progress record of a checkpoint file, or ``None`` if it is missing or damaged."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            progress = json.loads((f.metadata() or {})["progress"])
    except Exception:  # noqa: BLE001 - a damaged checkpoint means: start the task over
        return None
    return progress if isinstance(progress, dict) and progress.get("format") == FORMAT else None


def set_rng(saved: tuple[dict, dict[str, torch.Tensor]]) -> None:
    """Set every generator to the states a checkpoint saved (:attr:`Position.rng`)."""
    progress, tensors = saved
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = progress["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = progress["numpy_rng"]
    np.random.set_state((name, tensors["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))


class StopSignals:
    """While training: SIGTERM and SIGINT set ``signum`` (training then stops at the end of the
    step, after a checkpoint); a second one acts at once (SIGINT: KeyboardInterrupt). Only in the
    main thread (Python delivers signals there); elsewhere nothing changes."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second one: act now
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
