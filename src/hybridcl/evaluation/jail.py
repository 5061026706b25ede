"""The sandbox's launcher: puts one untrusted program in its own namespaces, then runs it.

Run as a script (``python -I -S -B jail.py SPEC_JSON``) by :mod:`hybridcl.evaluation.sandbox`; it uses the
standard library only, so it can run before anything of hybridcl is importable. Hand-written with
``ctypes`` rather than calling ``bwrap``/``unshare``: those tools are not installed everywhere, and
the steps are few (the same ones bubblewrap takes).

Three processes:

1. this launcher, in the caller's namespaces: ``unshare`` of the mount, pid, network, IPC and UTS
   namespaces (plus a user namespace when not root), then ``fork``;
2. ``init``, pid 1 of the new pid namespace: builds a new root file system (an empty tmpfs with
   read-only bind mounts of the system folders and the interpreter's prefix, a few device files,
   ``/proc`` of the new pid namespace, the work folder as the only writable ``/tmp``),
   ``pivot_root`` into it and detaches the old root, then forks the program and reaps until it
   exits. When init exits the kernel kills every process left in the namespace;
3. the program: drops to the unprivileged uid/gid (as root: ``nobody`` in the caller's user
   namespace; otherwise a non-root uid of the new user namespace, so ``exec`` clears every
   capability), sets ``no_new_privs`` and the resource limits, and ``exec``\\ s the interpreter.

The launcher ends the way the program ended (same exit code, or killed by the same signal), so the
caller cannot tell it apart from running the program directly. A failed setup step prints
``sandbox: setup failed: ...`` and exits with ``SETUP_EXIT``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import resource
import signal
import sys

SETUP_EXIT = 125

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}

# statvfs flag -> mount flag: a read-only re-mount inside a user namespace must keep the flags the
# original mount has (the kernel refuses to clear them there).
_KEEP_FLAGS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)
# Devices the program may open: the harmless ones.
DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class SetupError(Exception):
    pass


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def _encoded(s: str | None) -> bytes | None:
    return None if s is None else s.encode()


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(_encoded(source), _encoded(target), _encoded(fstype), ctypes.c_ulong(flags), _encoded(data)),
        f"mount {source or ''} on {target}",
    )


def _bind_readonly(source: str, target: str) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    keep = sum(ms for st, ms in _KEEP_FLAGS if os.statvfs(source).f_flag & st)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | keep)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _build_root(spec: dict) -> None:
    """Make ``spec["root"]`` the root file system of this (new) mount namespace."""
    new = spec["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches the caller's namespace
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    for path in spec["readonly"]:
        if not os.path.lexists(path):
            continue
        inside = new + path
        os.makedirs(os.path.dirname(inside), mode=0o755, exist_ok=True)
        if os.path.islink(path):  # /bin -> usr/bin on merged-/usr systems
            os.symlink(os.readlink(path), inside)
        elif os.path.isdir(path):
            os.makedirs(inside, mode=0o755, exist_ok=True)
            _bind_readonly(path, inside)
        else:
            open(inside, "w").close()
            _bind_readonly(path, inside)
    os.makedirs(new + "/dev", mode=0o755)
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            open(f"{new}/dev/{name}", "w").close()
            _mount("/dev/" + name, f"{new}/dev/{name}", None, MS_BIND)
    os.makedirs(new + "/tmp")
    _mount(spec["workdir"], new + "/tmp", None, MS_BIND)
    _mount(None, new + "/tmp", None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)
    os.makedirs(new + "/etc", exist_ok=True)
    _write(new + "/etc/passwd", f"nobody:x:{spec['uid']}:{spec['gid']}:nobody:/tmp:/nonexistent\n")
    _write(new + "/etc/group", f"nogroup:x:{spec['gid']}:\n")
    if spec["proc"]:
        os.makedirs(new + "/proc")
        # A proc of this pid namespace: it lists only the sandbox's own processes.
        _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(new)
    nr = _SYS_PIVOT_ROOT.get(platform.machine())
    if nr is None:
        raise SetupError(f"pivot_root: unknown system call number on {platform.machine()}")
    # pivot_root(".", ".") stacks the old root under the new one; detaching it leaves no way back.
    _check(_libc.syscall(nr, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir("/tmp")


def _exec_program(spec: dict) -> None:
    """In the forked program process: give up privileges and limits, then exec (never returns)."""
    try:
        if spec["mode"] == "root":
            os.setgroups([])
            os.setgid(spec["gid"])
            os.setuid(spec["uid"])
        else:  # the only uid mapped is already the non-root spec["uid"]: exec drops the capabilities
            os.setresgid(spec["gid"], spec["gid"], spec["gid"])
            os.setresuid(spec["uid"], spec["uid"], spec["uid"])
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        for name, (soft, hard) in spec["rlimits"].items():
            try:
                resource.setrlimit(getattr(resource, name), (soft, hard))
            except (ValueError, OSError):
                if name != "RLIMIT_NPROC":
                    raise
        os.execve(spec["argv"][0], spec["argv"], spec["env"])
    except BaseException as e:  # noqa: BLE001 - report any failure, never fall through
        os.write(2, f"sandbox: setup failed: {e}\n".encode())
    os._exit(SETUP_EXIT)


def _init(spec: dict, status_w: int) -> None:
    """pid 1 of the new pid namespace (never returns)."""
    code = SETUP_EXIT
    try:
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "parent-death signal")
        _build_root(spec)
        child = os.fork()
        if child == 0:
            _exec_program(spec)
        while True:  # reap everything (orphans are re-parented to us) until the program ends
            pid, status = os.wait()
            if pid == child:
                break
        os.write(status_w, f"{status}\n".encode())
        code = 0
    except BaseException as e:  # noqa: BLE001
        os.write(2, f"sandbox: setup failed: {e}\n".encode())
    os._exit(code)


def _enter_user_namespace(spec: dict) -> None:
    """Not root: a new user namespace where only our own uid/gid exist, as spec's uid/gid."""
    uid, gid = os.geteuid(), os.getegid()  # read before unshare: inside, they read as the overflow id
    _check(_libc.unshare(CLONE_NEWUSER), "unshare a user namespace")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{spec['uid']} {uid} 1\n")
    _write("/proc/self/gid_map", f"{spec['gid']} {gid} 1\n")


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if spec["mode"] == "user":
            _enter_user_namespace(spec)  # first, so the other namespaces belong to it
        _check(_libc.unshare(flags), "unshare")
        status_r, status_w = os.pipe()
        init = os.fork()
    except (OSError, SetupError) as e:
        sys.stderr.write(f"sandbox: setup failed: {e}\n")
        return SETUP_EXIT
    if init == 0:
        os.close(status_r)
        _init(spec, status_w)
    os.close(status_w)
    with os.fdopen(status_r) as f:
        reported = f.read().strip()
    os.waitpid(init, 0)
    if not reported:
        return SETUP_EXIT  # init said why on stderr
    status = int(reported)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
