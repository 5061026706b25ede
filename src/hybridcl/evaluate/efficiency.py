"""Efficiency numbers: parameter counts, wall time, throughput and peak memory (GB = 10^9 bytes)."""

from __future__ import annotations

import resource
import sys
import time
from typing import Sequence

import torch


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor counted once); only ``requires_grad`` ones if asked."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def trainable_parameters(model: torch.nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (what the optimiser updates)."""
    return count_parameters(model, trainable_only=True)


def parameter_storage(per_task: Sequence[int], shared: int = 0, base: int = 0) -> dict[str, int | float]:
    """Parameters stored by a run: ``per_task[i]`` added for task i, ``shared`` once for all tasks,
    ``base`` for the frozen model. Returns per-task mean, added total and the share of the base."""
    added = sum(per_task) + shared
    return {
        "per_task_mean": (sum(per_task) / len(per_task)) if per_task else 0.0,
        "shared": shared,
        "added_total": added,
        "total_with_base": added + base,
        "added_percent_of_base": (100.0 * added / base) if base else None,
    }


def throughput(seconds: float, samples: int = 0, tokens: int = 0) -> dict[str, float | None]:
    """Samples and tokens per second (None when ``seconds`` is 0)."""
    if seconds <= 0:
        return {"samples_per_s": None, "tokens_per_s": None}
    return {"samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds}


def _peak_rss_gb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024) / 1e9  # bytes on macOS, KiB on Linux


class Meter:
    """Context manager measuring wall seconds and peak memory of a block.

    ``with Meter("cuda") as m: ...`` then ``m.seconds``, ``m.peak_memory_gb``, ``m.device``.
    CUDA: ``torch.cuda.max_memory_allocated`` since the block started (peak stats are reset on
    entry). CPU: the process's peak resident set size (``ru_maxrss``), which the OS cannot reset,
    so it is the peak since the process started, not only during the block. Call ``add(samples,
    tokens)`` inside the block for ``samples_per_s`` and ``tokens_per_s``.
    """

    def __init__(self, device: str | torch.device | None = None):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.seconds = 0.0
        self.peak_memory_gb = 0.0
        self.samples = 0
        self.tokens = 0
        self._start = 0.0

    def add(self, samples: int = 0, tokens: int = 0) -> None:
        self.samples += samples
        self.tokens += tokens

    def __enter__(self) -> "Meter":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_memory_gb = torch.cuda.max_memory_allocated(self.device) / 1e9
        else:
            self.peak_memory_gb = _peak_rss_gb()
        self.seconds = time.perf_counter() - self._start

    @property
    def samples_per_s(self) -> float | None:
        return throughput(self.seconds, self.samples, self.tokens)["samples_per_s"]

    @property
    def tokens_per_s(self) -> float | None:
        return throughput(self.seconds, self.samples, self.tokens)["tokens_per_s"]

    def as_dict(self) -> dict:
        return {"seconds": self.seconds, "peak_memory_gb": self.peak_memory_gb, "device": str(self.device),
                "samples": self.samples, "tokens": self.tokens,
                "samples_per_s": self.samples_per_s, "tokens_per_s": self.tokens_per_s}
