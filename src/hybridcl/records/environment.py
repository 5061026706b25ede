"""What a run ran on: library versions, the hybridcl commit, the processor, GPUs and threads.

:func:`environment_record` is stored as ``environment`` in a run's ``results.json`` and shown in its
report, so that a number can be traced to the software and hardware that produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# Libraries whose version changes what a run computes (or how fast).
LIBRARIES = ("hybridcl", "torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers")
# Processor flags that decide the training precision and speed on a CPU (/proc/cpuinfo names).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit(folder: Path | None = None) -> dict | None:
    """``{"commit", "dirty"}`` of the git checkout hybridcl runs from (``None`` when installed from a wheel
    or git is missing); ``dirty``: the checkout has uncommitted changes to tracked files."""
    folder = folder or Path(__file__).resolve().parent
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The processor's model name and which of :data:`CPU_FLAGS` it has (Linux; elsewhere the model
    from :mod:`platform` and no flags)."""
    model, flags = None, None
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and flags is None:
            present = set(value.split())
            flags = {flag: flag in present for flag in CPU_FLAGS}
    model = model or platform.processor() or None
    return {"model": model, "flags": flags, "logical_cores": os.cpu_count(), "torch_capability": _torch_capability()}


def _torch_capability() -> str | None:
    """The vector instruction set torch's CPU kernels dispatch to (e.g. ``AVX512``), as torch sees it."""
    import torch

    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return None


def gpu_info() -> dict:
    """CUDA GPUs visible to torch: their count and names."""
    import torch

    if not torch.cuda.is_available():
        return {"count": 0, "names": []}
    count = torch.cuda.device_count()
    return {"count": count, "names": [torch.cuda.get_device_name(i) for i in range(count)]}


def environment_record() -> dict:
    """Python, the :data:`LIBRARIES`' versions, the hybridcl git commit, the processor, GPUs and threads."""
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in LIBRARIES},
        "git": git_commit(),
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "threads": {
            "torch": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "argv": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else [],
    }


def environment_lines(env: dict | None) -> list[str]:
    """The record in a few Markdown bullet lines (the report's "Environment" section)."""
    if not env:
        return ["The results predate the environment record.", ""]
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    git = env.get("git")
    cpu, gpu, threads = env.get("cpu") or {}, env.get("gpu") or {}, env.get("threads") or {}
    flags = cpu.get("flags")
    lines = [
        f"- Python {env.get('python')} on {env.get('platform')}",
        f"- versions: {versions}",
        "- hybridcl commit: "
        + (f"`{git['commit'][:12]}`" + (" with uncommitted changes" if git.get("dirty") else "") if git else "none"),
        f"- processor: {cpu.get('model')}, {cpu.get('logical_cores')} logical cores, torch kernels "
        f"{cpu.get('torch_capability')}; flags: "
        + (", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items()) if flags else "unknown"),
        f"- GPUs: {gpu.get('count', 0)}" + (f" ({', '.join(gpu['names'])})" if gpu.get("names") else ""),
        f"- threads: torch {threads.get('torch')}, OMP_NUM_THREADS {threads.get('OMP_NUM_THREADS') or 'unset'}",
    ]
    return lines + [""]
