"""Wall time and peak memory of a block of work (GB = 10^9 bytes)."""

from __future__ import annotations

import resource
import sys
import time

import torch


def _peak_rss_gb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024) / 1e9  # bytes on macOS, KiB on Linux


class Meter:
    """Context manager measuring wall seconds and peak memory of a block.

    ``with Meter("cuda") as m: ...`` then ``m.seconds``, ``m.peak_memory_gb``, ``m.device``.
    CUDA: ``torch.cuda.max_memory_allocated`` since the block started (peak stats are reset on
    entry). CPU: the process's peak resident set size (``ru_maxrss``), which the OS cannot reset,
    so it is the peak since the process started, not only during the block.
    """

    def __init__(self, device: str | torch.device | None = None):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.seconds = 0.0
        self.peak_memory_gb = 0.0
        self._start = 0.0

    def __enter__(self) -> Meter:
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
