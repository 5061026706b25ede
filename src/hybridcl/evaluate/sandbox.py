"""Run untrusted (model-generated) Python in a separate, limited process. Never in this process.

Protections, each applied where this machine allows it and recorded in ``SandboxResult.protections``:

- ``process``: a child ``sys.executable -I -B`` (isolated mode: no PYTHON* variables, no user site),
  in its own session so every process it starts can be killed at the end, stdin closed.
- ``timeout``: wall-clock limit (the process group is killed); ``rlimit-cpu``: RLIMIT_CPU backup.
- ``rlimit-as`` (memory), ``rlimit-fsize`` (file size), ``rlimit-core`` (no core dumps),
  ``rlimit-nproc`` (process count; the kernel does not enforce it for root, so it is only listed when
  not running as root).
- ``cgroup-pids``: as root, a pids cgroup limits the process count (fork bombs) and lets the sandbox
  kill every process that escaped the session.
- ``tempdir``: a fresh working directory (also HOME and TMPDIR), deleted afterwards.
- ``env``: a stripped environment (PATH, LANG, HOME, TMPDIR only).
- ``no-network``: a new, empty network namespace (``unshare(CLONE_NEWNET)``; needs root or user
  namespaces); without it network access is NOT blocked.
- ``uid-nobody``: as root, the child drops to user ``nobody`` when that user can run the
  interpreter (not the case when the venv lives under /root).

The program runs under a small harness that turns exhaustion of a limit (MemoryError, EFBIG
"file too large", EAGAIN from fork) into exit code ``RESOURCE_EXIT`` so it is reported as
``status="error"``; other non-zero exits are ``"failed"``, exit 0 is ``"passed"``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field

RESOURCE_EXIT = 86
_CLONE_NEWNET = 0x40000000
_OUTPUT_LIMIT = 1 << 20  # characters of stdout/stderr kept

_HARNESS = f"""
import errno, os, runpy, sys
try:
    runpy.run_path("program.py", run_name="__main__")
except MemoryError:
    sys.stderr.write("sandbox: memory limit reached\\n"); os._exit({RESOURCE_EXIT})
except OSError as e:
    if e.errno in (errno.EFBIG, errno.EAGAIN, errno.ENOMEM, errno.EDQUOT, errno.ENOSPC):
        sys.stderr.write(f"sandbox: resource limit reached: {{e}}\\n"); os._exit({RESOURCE_EXIT})
    raise
"""


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run. ``seconds`` is wall time; ``returncode`` is None on timeout
    (negative = killed by that signal)."""

    status: str  # "passed" | "failed" | "timeout" | "error"
    stdout: str
    stderr: str
    returncode: int | None
    protections: list[str] = field(default_factory=list)
    seconds: float = 0.0


@functools.cache
def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _unshare_net() -> None:
    if _libc().unshare(_CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")


@functools.cache
def _can_unshare_net() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    _libc()  # load in the parent: dlopen in a forked child is not safe
    try:
        subprocess.run([sys.executable, "-I", "-c", "pass"], preexec_fn=_unshare_net, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@functools.cache
def _nobody() -> tuple[int, int] | None:
    """(uid, gid) of ``nobody`` when we are root and ``nobody`` can start the interpreter."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        return None
    ids = (pw.pw_uid, pw.pw_gid)

    def drop() -> None:
        os.setgroups([])
        os.setgid(ids[1])
        os.setuid(ids[0])

    try:
        subprocess.run([sys.executable, "-I", "-c", "pass"], preexec_fn=drop, cwd="/", check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return ids


@functools.cache
def _pids_cgroup_root() -> str | None:
    """A writable pids-controller directory (cgroup v1 ``/sys/fs/cgroup/pids`` or the v2 root)."""
    if os.geteuid() != 0:
        return None
    v1 = "/sys/fs/cgroup/pids"
    if os.path.isfile(os.path.join(v1, "cgroup.procs")) and os.access(v1, os.W_OK):
        return v1
    v2 = "/sys/fs/cgroup"
    try:
        with open(os.path.join(v2, "cgroup.subtree_control")) as f:
            if "pids" in f.read().split() and os.access(v2, os.W_OK):
                return v2
    except OSError:
        pass
    return None


def _make_cgroup(max_processes: int) -> str | None:
    root = _pids_cgroup_root()
    if root is None:
        return None
    path = os.path.join(root, f"hybridcl-sandbox-{uuid.uuid4().hex[:12]}")
    try:
        os.mkdir(path)
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write(str(max_processes))
    except OSError:
        _remove_cgroup(path)
        return None
    return path


def _cgroup_pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _remove_cgroup(path: str) -> None:
    deadline = time.monotonic() + 5.0
    while os.path.isdir(path) and time.monotonic() < deadline:
        for pid in _cgroup_pids(path):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.rmdir(path)
        except OSError:
            time.sleep(0.02)


def _rmtree(path: str) -> None:
    def retry(func, p, _exc):  # code may have made files or folders read-only
        os.chmod(os.path.dirname(p), 0o700)
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, 0o700)
        func(p)

    if os.path.exists(path):
        shutil.rmtree(path, onexc=retry) if sys.version_info >= (3, 12) else shutil.rmtree(path, onerror=retry)


def _read(f) -> str:
    f.seek(0)
    return f.read(_OUTPUT_LIMIT).decode("utf-8", errors="replace")


def run_untrusted(
    code: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    file_size_mb: int = 16,
    max_processes: int = 64,
) -> SandboxResult:
    """Run the Python program ``code`` in a sandbox (see the module docstring) and report how it ended.

    ``timeout_s`` is wall-clock seconds; ``memory_mb`` the address-space limit (MB); ``file_size_mb``
    the largest file it may write (MB); ``max_processes`` the process-count limit.
    """
    protections = ["process", "timeout", "rlimit-cpu", "rlimit-as", "rlimit-fsize", "rlimit-core",
                   "tempdir", "env"]
    is_root = os.geteuid() == 0
    if not is_root:
        protections.append("rlimit-nproc")
    net = _can_unshare_net()
    nobody = _nobody()
    if net:
        protections.append("no-network")
    if nobody:
        protections.append("uid-nobody")

    workdir = tempfile.mkdtemp(prefix="hybridcl-sandbox-")
    cgroup = _make_cgroup(max_processes)
    if cgroup:
        protections.append("cgroup-pids")
    cgroup_procs = os.path.join(cgroup, "cgroup.procs") if cgroup else None
    cpu_s = int(math.ceil(timeout_s)) + 1
    mem = memory_mb * 1024 * 1024
    fsize = file_size_mb * 1024 * 1024

    def preexec() -> None:  # runs in the child between fork and exec
        if cgroup_procs:
            with open(cgroup_procs, "w") as f:
                f.write(str(os.getpid()))
        if net:
            _unshare_net()
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
        except (ValueError, OSError):
            pass
        if nobody:
            os.setgroups([])
            os.setgid(nobody[1])
            os.setuid(nobody[0])

    start = time.monotonic()
    proc = None
    try:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(code)
        with open(os.path.join(workdir, "harness.py"), "w", encoding="utf-8") as f:
            f.write(_HARNESS)
        if nobody:
            os.chown(workdir, *nobody)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
        # Output goes to files outside the work dir: RLIMIT_FSIZE bounds them, a pipe would not.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-B", "harness.py"], cwd=workdir, env=env,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    preexec_fn=preexec, start_new_session=True, close_fds=True,
                )
            except (OSError, subprocess.SubprocessError) as e:
                return SandboxResult("error", "", f"sandbox: could not start: {e}", None, protections,
                                     time.monotonic() - start)
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                rc = None
            seconds = time.monotonic() - start
            _kill_group(proc.pid)
            if rc is None:
                proc.wait()
            stdout, stderr = _read(out), _read(err)
    finally:
        if proc is not None:
            _kill_group(proc.pid)
        if cgroup:
            _remove_cgroup(cgroup)
        _rmtree(workdir)

    if rc is None or (rc in (-signal.SIGXCPU, -signal.SIGKILL) and seconds >= timeout_s * 0.5):  # CPU limit
        status = "timeout"
    elif rc == 0:
        status = "passed"
    elif rc == RESOURCE_EXIT or rc < 0:
        status = "error"
    else:
        status = "failed"
    return SandboxResult(status, stdout, stderr, rc, protections, seconds)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
