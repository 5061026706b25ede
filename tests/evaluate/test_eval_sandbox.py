import glob
import os
import resource
import socket
import tempfile
import time

import psutil
import pytest

from hybridcl.evaluate.sandbox import run_untrusted


@pytest.fixture(autouse=True)
def parent_unharmed():
    limits = {r: resource.getrlimit(r) for r in (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE)}
    cwd = os.getcwd()
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "hybridcl-sandbox-*")))
    yield
    assert {r: resource.getrlimit(r) for r in limits} == limits
    assert os.getcwd() == cwd
    assert {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"} == env
    after = set(glob.glob(os.path.join(tempfile.gettempdir(), "hybridcl-sandbox-*")))
    assert after <= before  # the temporary working directory is gone


def test_passed_and_failed():
    ok = run_untrusted("import os\nprint(sorted(os.environ))\nprint(os.getcwd())")
    assert ok.status == "passed" and ok.returncode == 0
    assert "PYTHONPATH" not in ok.stdout and "hybridcl-sandbox-" in ok.stdout
    assert not os.path.exists(ok.stdout.splitlines()[1])
    bad = run_untrusted("assert 1 == 2")
    assert bad.status == "failed" and "AssertionError" in bad.stderr
    assert {"process", "timeout", "rlimit-as", "rlimit-fsize", "tempdir", "env"} <= set(ok.protections)


def test_infinite_loop_times_out():
    r = run_untrusted("while True:\n    pass\n", timeout_s=1.0)
    assert r.status == "timeout" and r.returncode is None
    assert 1.0 <= r.seconds < 5.0


def test_unbounded_allocation_is_contained():
    r = run_untrusted("x = []\nwhile True:\n    x.append(bytearray(10**7))\n", memory_mb=256, timeout_s=10)
    assert r.status == "error" and "memory limit" in r.stderr


def test_large_file_is_contained():
    code = "with open('big', 'wb') as f:\n    f.write(b'0' * (8 * 2**20))\nprint('wrote')\n"
    r = run_untrusted(code, file_size_mb=1)
    assert r.status == "error" and "wrote" not in r.stdout


def test_bounded_fork_bomb_is_contained():
    # Bounded on purpose (100 forks) so a machine without process limits is not harmed.
    code = (
        "import os, time\n"
        "for i in range(100):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    print(pid, flush=True)\n"
    )
    r = run_untrusted(code, max_processes=16, timeout_s=10)
    pids = [int(x) for x in r.stdout.split()]
    if {"cgroup-pids", "rlimit-nproc"} & set(r.protections):
        assert r.status == "error" and len(pids) < 16
    time.sleep(0.2)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []  # every forked child was killed


def test_network_is_blocked():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    code = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        "print('connected')\n"
    )
    try:
        r = run_untrusted(code, timeout_s=10)
    finally:
        server.close()
    if "no-network" not in r.protections:
        pytest.skip("no network namespace on this machine (needs root or user namespaces): not contained")
    assert r.status == "failed" and "connected" not in r.stdout
    assert "unreachable" in r.stderr or "refused" in r.stderr
