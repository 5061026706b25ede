"""Run untrusted (model-generated) Python in a separate, isolated process. Never in this process.

Isolation (``hybridcl.evaluation.jail``; Linux namespaces, the steps bubblewrap takes):

- ``uid-nobody`` (caller is root): the code runs as ``nobody`` with no supplementary groups;
  ``user-namespace`` (ordinary user): the code runs in a new user namespace as a non-root uid, so it
  has no capability; outside, it is still the caller's uid (an ordinary user cannot give it
  another), but the namespaces below leave it nothing of the caller's to reach.
- ``private-filesystem``: a new mount namespace whose root is an empty read-only tmpfs holding
  read-only views of the system folders (``/usr``, ``/bin``, ``/lib*``) and of the interpreter's
  prefix, ``/dev/{null,zero,full,random,urandom}``, a one-line ``/etc/passwd``, and its temporary
  folder as ``/tmp`` (also its cwd, HOME and TMPDIR): the only place it can write. The caller's
  files, home, run folders, ``/etc/shadow`` and the host's ``/tmp`` are not there at all.
- ``pid-namespace``: its own pid namespace, so it can neither see nor signal any other process;
  when the sandbox's init exits, the kernel kills every process left. ``private-proc``: ``/proc`` of
  that namespace only (where the kernel refuses to mount one, there is no ``/proc`` at all).
- ``no-network``: a new, empty network namespace. ``ipc-namespace``: its own System V IPC.
- ``no-new-privs``: setuid binaries do not raise its privileges.

Where this cannot be set up (not Linux, no user namespaces for an ordinary user),
:func:`run_untrusted` raises :class:`SandboxUnavailable` unless ``allow_unsandboxed=True``
(``eval.allow_unsandboxed=true``); then only the limits below apply, with the caller's file system.

Limits, always:

- ``process``: a child ``python -I -B`` (isolated mode: no PYTHON* variables, no user site),
  in its own session so every process it starts can be killed at the end, stdin closed.
- ``timeout``: wall-clock limit (the process group is killed); ``rlimit-cpu``: RLIMIT_CPU backup.
- ``rlimit-as`` (memory), ``rlimit-fsize`` (file size), ``rlimit-core`` (no core dumps),
  ``rlimit-nproc`` (process count; not enforced for root, so listed only when the code is not root).
- ``cgroup-pids``: as root, a pids cgroup limits the process count (fork bombs) and lets the sandbox
  kill every process that escaped the session.
- ``tempdir``: a fresh working directory, deleted afterwards. ``env``: a stripped environment
  (PATH, LANG, HOME, TMPDIR only).

The program runs under a small harness that turns exhaustion of a limit (MemoryError, EFBIG
"file too large", EAGAIN from fork) into exit code ``RESOURCE_EXIT`` so it is reported as
``status="error"``; other non-zero exits are ``"failed"``, exit 0 is ``"passed"``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
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

from hybridcl.errors import HybridclError
from hybridcl.evaluation.jail import SETUP_EXIT

RESOURCE_EXIT = 86
_CLONE_NEWNET = 0x40000000
_OUTPUT_LIMIT = 1 << 20  # characters of stdout/stderr kept
_JAIL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jail.py")
_NOBODY = (65534, 65534)
# Read-only in the jail: what the interpreter and the C library need (missing ones are skipped).
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache", "/etc/localtime")
_BASE_PROTECTIONS = ["process", "timeout", "rlimit-cpu", "rlimit-as", "rlimit-fsize", "rlimit-core", "tempdir", "env"]

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
    return _interpreter_starts(_unshare_net)


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

    return ids if _interpreter_starts(drop) else None


def _interpreter_starts(preexec_fn) -> bool:
    """Whether ``python -I -c pass`` starts with ``preexec_fn`` run in the child first (from ``/``)."""
    try:
        subprocess.run(
            [sys.executable, "-I", "-c", "pass"],
            preexec_fn=preexec_fn,
            cwd="/",
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


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


def _cgroup_for_run(max_processes: int, protections: list[str]) -> tuple[str | None, str | None]:
    """A pids cgroup for one program and the file a child joins it through (``cgroup.procs``);
    ``(None, None)``, and "cgroup-pids" dropped from ``protections``, where none can be made."""
    cgroup = _make_cgroup(max_processes)
    if "cgroup-pids" in protections and not cgroup:
        protections.remove("cgroup-pids")
    return cgroup, os.path.join(cgroup, "cgroup.procs") if cgroup else None


def _join_cgroup(cgroup_procs: str | None) -> None:
    """Move the calling process into the cgroup (in a child, between fork and exec)."""
    if cgroup_procs:
        with open(cgroup_procs, "w") as f:
            f.write(str(os.getpid()))


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
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=retry)
        else:
            shutil.rmtree(path, onerror=retry)


def _read(f) -> str:
    f.seek(0)
    return f.read(_OUTPUT_LIMIT).decode("utf-8", errors="replace")


class SandboxUnavailable(HybridclError):
    """Untrusted code would run without isolation from the caller, and the user did not allow that."""


@functools.cache
def _interpreter_paths() -> tuple[str, list[str]]:
    """The real interpreter (not a venv's symlink) and the folders it needs, read-only in the jail."""
    exe = os.path.realpath(sys.executable)
    folders = [os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(exe))]
    return exe, folders


def _readonly_paths() -> list[str]:
    paths = list(_SYSTEM_PATHS) + _interpreter_paths()[1]
    kept: list[str] = []
    for p in paths:  # a folder inside another one is already there
        if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(p)
    return kept


def _jail_spec(mode: str, proc: bool, base: str, argv: list[str], rlimits: dict) -> dict:
    uid, gid = _nobody_ids() if mode == "root" else _NOBODY
    return {
        "mode": mode,
        "uid": uid,
        "gid": gid,
        "proc": proc,
        "root": os.path.join(base, "root"),
        "workdir": os.path.join(base, "work"),
        "readonly": _readonly_paths(),
        "argv": argv,
        "env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp"},
        "rlimits": rlimits,
    }


def _launcher_argv(spec: dict) -> list[str]:
    return [sys.executable, "-I", "-S", "-B", _JAIL, json.dumps(spec)]


def _make_base(uid: int | None) -> str:
    base = tempfile.mkdtemp(prefix="hybridcl-sandbox-")
    os.mkdir(os.path.join(base, "root"))
    os.mkdir(os.path.join(base, "work"))
    if uid is not None:
        os.chown(os.path.join(base, "work"), uid, -1)
    return base


@functools.cache
def _isolation() -> tuple[str, bool] | str:
    """How this machine can isolate code: ``(mode, proc)``, or the reason it cannot (a string).

    Tried once per process by running a tiny program in the jail: as root ("root" mode: drop to
    nobody), otherwise in a user namespace ("user" mode); with a fresh ``/proc`` if the kernel lets
    us mount one, else with no ``/proc`` at all.
    """
    if not sys.platform.startswith("linux"):
        return f"namespaces are Linux only (this is {sys.platform})"
    mode = "root" if os.geteuid() == 0 else "user"
    reason = ""
    for proc in (True, False):
        base = _make_base(_nobody_ids()[0] if mode == "root" else None)
        try:
            exe = _interpreter_paths()[0]
            spec = _jail_spec(mode, proc, base, [exe, "-I", "-S", "-c", "import os; assert os.getuid() != 0"], {})
            r = subprocess.run(
                _launcher_argv(spec),
                cwd=base,
                env={"PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=60,
            )
            if r.returncode == 0:
                return mode, proc
            reason = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        except (OSError, subprocess.SubprocessError) as e:
            reason = str(e)
        finally:
            _rmtree(base)
    return reason


def _nobody_ids() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return _NOBODY


def isolation_protections(allow_unsandboxed: bool = False) -> list[str]:
    """The protections ``run_untrusted`` will apply here, sorted (see the module docstring).

    Raises :class:`SandboxUnavailable` when the code cannot be isolated from the caller (its own
    user id or user namespace, a private read-only file system, its own pid and network namespaces)
    and ``allow_unsandboxed`` is false.
    """
    iso = _isolation()
    if isinstance(iso, str):
        if not allow_unsandboxed:
            raise SandboxUnavailable(
                f"the sandbox cannot isolate generated code on this machine ({iso}): it would see your files "
                "and run as you; run as root or enable user namespaces (sysctl kernel.unprivileged_userns_clone=1 / "
                "user.max_user_namespaces), or set eval.allow_unsandboxed=true to run it anyway with weaker protections"
            )
        return sorted(_BASE_PROTECTIONS + _fallback_extras())
    mode, proc = iso
    extra = [
        "uid-nobody" if mode == "root" else "user-namespace",
        "private-filesystem",
        "pid-namespace",
        "no-network",
        "ipc-namespace",
        "no-new-privs",
        "rlimit-nproc",
    ]
    if proc:
        extra.append("private-proc")
    if _pids_cgroup_root():
        extra.append("cgroup-pids")
    return sorted(_BASE_PROTECTIONS + extra)


def _fallback_extras() -> list[str]:
    extra = []
    if os.geteuid() != 0:
        extra.append("rlimit-nproc")
    if _can_unshare_net():
        extra.append("no-network")
    if _nobody():
        extra.append("uid-nobody")
    if _pids_cgroup_root():
        extra.append("cgroup-pids")
    return extra


def run_untrusted(
    code: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    file_size_mb: int = 16,
    max_processes: int = 64,
    allow_unsandboxed: bool = False,
) -> SandboxResult:
    """Run the Python program ``code`` in a sandbox (see the module docstring) and report how it ended.

    ``timeout_s`` is wall-clock seconds; ``memory_mb`` the address-space limit (MB); ``file_size_mb``
    the largest file it may write (MB); ``max_processes`` the process-count limit. Raises
    :class:`SandboxUnavailable` where the code cannot be isolated and ``allow_unsandboxed`` is false.
    """
    protections = isolation_protections(allow_unsandboxed)
    iso = _isolation()
    cpu_s = int(math.ceil(timeout_s)) + 1
    rlimits = {
        "RLIMIT_CPU": (cpu_s, cpu_s + 1),
        "RLIMIT_AS": (memory_mb << 20, memory_mb << 20),
        "RLIMIT_FSIZE": (file_size_mb << 20, file_size_mb << 20),
        "RLIMIT_CORE": (0, 0),
        "RLIMIT_NPROC": (max_processes, max_processes),
    }
    if isinstance(iso, str):
        return _run_unisolated(code, timeout_s, rlimits, max_processes, protections)

    mode, proc = iso
    base = _make_base(_nobody_ids()[0] if mode == "root" else None)
    cgroup, cgroup_procs = _cgroup_for_run(max_processes, protections)

    def preexec() -> None:  # runs in the launcher between fork and exec
        _join_cgroup(cgroup_procs)

    spec = _jail_spec(mode, proc, base, [_interpreter_paths()[0], "-I", "-B", "harness.py"], rlimits)
    try:
        _write_program(os.path.join(base, "work"), code)
        return _supervise(
            _launcher_argv(spec),
            base,
            {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            preexec,
            timeout_s,
            protections,
            cgroup,
        )
    finally:
        if cgroup:
            _remove_cgroup(cgroup)
        _rmtree(base)


def _write_program(folder: str, code: str) -> None:
    with open(os.path.join(folder, "program.py"), "w", encoding="utf-8") as f:
        f.write(code)
    with open(os.path.join(folder, "harness.py"), "w", encoding="utf-8") as f:
        f.write(_HARNESS)


def _supervise(argv, cwd, env, preexec, timeout_s, protections, cgroup) -> SandboxResult:
    """Start ``argv``, wait up to ``timeout_s`` seconds, kill whatever is left, classify the ending."""
    start = time.monotonic()
    proc = None
    try:
        # Output goes to files outside the work dir: RLIMIT_FSIZE bounds them, a pipe would not.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    preexec_fn=preexec,
                    start_new_session=True,
                    close_fds=True,
                )
            except (OSError, subprocess.SubprocessError) as e:
                return SandboxResult(
                    "error", "", f"sandbox: could not start: {e}", None, protections, time.monotonic() - start
                )
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                rc = None
            seconds = time.monotonic() - start
            _kill_group(proc.pid)
            if cgroup:
                _remove_cgroup(cgroup)
            if rc is None:
                proc.wait()
            stdout, stderr = _read(out), _read(err)
    finally:
        if proc is not None:
            _kill_group(proc.pid)

    if rc is None or (rc in (-signal.SIGXCPU, -signal.SIGKILL) and seconds >= timeout_s * 0.5):  # CPU limit
        status = "timeout"
    elif rc == 0:
        status = "passed"
    elif rc == RESOURCE_EXIT or rc < 0 or (rc == SETUP_EXIT and "sandbox: setup failed" in stderr):
        status = "error"
    else:
        status = "failed"
    return SandboxResult(status, stdout, stderr, rc, protections, seconds)


def _run_unisolated(code, timeout_s, rlimits, max_processes, protections) -> SandboxResult:
    """The weaker sandbox used only with ``allow_unsandboxed``: limits, but the caller's file system."""
    net = "no-network" in protections
    nobody = _nobody()
    workdir = tempfile.mkdtemp(prefix="hybridcl-sandbox-")
    cgroup, cgroup_procs = _cgroup_for_run(max_processes, protections)

    def preexec() -> None:  # runs in the child between fork and exec
        _join_cgroup(cgroup_procs)
        if net:
            _unshare_net()
        for name, limits in rlimits.items():
            try:
                resource.setrlimit(getattr(resource, name), limits)
            except (ValueError, OSError):
                pass
        if nobody:
            os.setgroups([])
            os.setgid(nobody[1])
            os.setuid(nobody[0])

    try:
        _write_program(workdir, code)
        if nobody:
            os.chown(workdir, *nobody)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
        return _supervise(
            [sys.executable, "-I", "-B", "harness.py"], workdir, env, preexec, timeout_s, protections, cgroup
        )
    finally:
        if cgroup:
            _remove_cgroup(cgroup)
        _rmtree(workdir)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
