"""Bad input at the command line: one line naming what, where and how to fix it, exit code 2, no
traceback (``--debug`` shows it). Most cases call ``hybridcl.cli.main`` in-process (fast); one
runs the real console entry point in a subprocess to check the exit code and stderr end to end.
"""
import errno
import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest

from hybridcl.cli import main
from hybridcl.config import load_config
from hybridcl.continual import run_experiment
from hybridcl.data.readers import bundled_dir
from hybridcl.errors import ConfigError

TINY = ["preset=smoke", "tasks=[python]", "data.max_train=8", "data.max_val=2", "eval.max_new_tokens=4"]




def run_cli(capsys, *argv):
    """``hybridcl ARGV`` in-process: (exit code, the error line, all of stderr)."""
    capsys.readouterr()
    rc = main([*argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("hybridcl: error:")]
    assert "Traceback" not in err
    assert len(errors) == 1, err
    return rc, errors[0], err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A complete one-task run (a few seconds), copied by the tests that damage it."""
    return run_experiment(load_config(overrides=TINY), tmp_path_factory.mktemp("done") / "run", progress=False)


def copy_run(finished_run, tmp_path):
    return shutil.copytree(finished_run, tmp_path / "run")


@pytest.mark.parametrize("overrides, expected", [
    (["train.epoch=1"], "unknown config key 'train.epoch' (did you mean train.epochs?)"),
    (["trian.epochs=1"], "unknown config key 'trian' (did you mean train?)"),
    (["train.epochs=abc"], "train.epochs = 'abc' must be a number"),
    (["train.batch_size=2.5"], "train.batch_size = 2.5 must be an integer"),
    (["train.epochs=.nan"], "train.epochs = nan must be a finite number"),
    (["strategy=lora"], "unknown strategy 'lora'"),
    (["tasks=[python,cobol]"], "unknown tasks 'cobol'"),
    (["preset=smok"], "unknown preset 'smok' (did you mean smoke?)"),
    (["justaword"], "override 'justaword' is not of the form key=value"),
    (["preset"], "override 'preset' is not of the form key=value"),  # was silently the default preset
])
def test_bad_overrides(capsys, overrides, expected):
    rc, line, _ = run_cli(capsys, "run", "--no-progress", "preset=smoke", *overrides)
    assert rc == 2 and expected in line


def test_malformed_yaml_names_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: smoke\ntrain:\n  epochs: 1\n  lr: [1, 2\n")
    rc, line, _ = run_cli(capsys, "run", f"config={bad}")
    assert rc == 2 and f"{bad}: line 5, column 1 is not valid YAML" in line


def test_yaml_that_is_not_utf8(capsys, tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("run:\n  name: caf\xe9\n".encode("latin-1"))
    rc, line, _ = run_cli(capsys, "run", f"config={bad}")
    assert rc == 2 and f"{bad}: byte 17 is not UTF-8 text: save the file as UTF-8" in line


def test_missing_config_file(capsys, tmp_path):
    rc, line, _ = run_cli(capsys, "run", f"config={tmp_path / 'nope.yaml'}")
    assert rc == 2 and "nope.yaml does not exist" in line


def test_missing_data_file(capsys, tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    rc, line, _ = run_cli(capsys, "run", "--no-progress", *TINY, "data.source=jsonl", f"data.path={empty}",
                          f"run.output_dir={tmp_path / 'runs'}")
    assert rc == 2
    assert f"{empty}: no python.train.jsonl.gz or python.train.jsonl; create it with `hybridcl data extract" in line


@pytest.mark.parametrize("content, expected", [
    (b"\x1f\x8b\x08\x00garbage", "python.train.jsonl.gz:1: corrupt gzip data"),
    (gzip.compress(b'{"repo": "r"}\n'), "python.train.jsonl.gz:1: missing field 'path'"),
    (gzip.compress(b'{"repo": "r", \n'), "python.train.jsonl.gz:1: malformed JSON"),
    (gzip.compress(b"\n\xff\xfe\n"), "python.train.jsonl.gz:2: not UTF-8 text"),
])
def test_corrupt_data_file(capsys, tmp_path, content, expected):
    data = tmp_path / "data"
    data.mkdir()
    (data / "python.train.jsonl.gz").write_bytes(content)
    rc, line, _ = run_cli(capsys, "run", "--no-progress", *TINY, "data.source=jsonl", f"data.path={data}",
                          f"run.output_dir={tmp_path / 'runs'}")
    assert rc == 2 and expected in line and str(data) in line


def test_a_language_the_data_source_lacks(capsys, tmp_path):
    # the bundled corpus has all six CodeSearchNet languages: a jsonl folder with only Python lacks Go
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid"):
        shutil.copy(bundled_dir() / f"python.{split}.jsonl.gz", data / f"python.{split}.jsonl.gz")
    rc, line, _ = run_cli(capsys, "run", "--no-progress", *TINY, "tasks=[python,go]", "data.source=jsonl", f"data.path={data}",
                          f"run.output_dir={tmp_path / 'runs'}")
    assert rc == 2 and f"{data}: no go.train.jsonl.gz or go.train.jsonl" in line and "hybridcl data extract --language go" in line


def test_model_not_available_offline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, line, _ = run_cli(capsys, "run", "--no-progress", *TINY, "model.name=nobody/no-such-model-xyz",
                          f"run.output_dir={tmp_path}")
    assert rc == 2
    assert "model 'nobody/no-such-model-xyz' is not a local folder and is not in the Hugging Face cache" in line
    assert "point model.name at a local folder" in line


def test_unknown_tiny_model(capsys, tmp_path):
    rc, line, _ = run_cli(capsys, "run", "--no-progress", *TINY, "model.name=tiny:bert", f"run.output_dir={tmp_path}")
    assert rc == 2 and "unknown tiny model 'tiny:bert': choose one of tiny:t5" in line


def test_resume_of_a_folder_that_is_not_a_run(capsys, tmp_path):
    rc, line, _ = run_cli(capsys, "run", "--resume", str(tmp_path))
    assert rc == 2 and f"{tmp_path} is not a hybridcl run folder: it has no config.yaml" in line
    rc, line, _ = run_cli(capsys, "run", "--resume", str(tmp_path / "missing"))
    assert rc == 2 and "is not a hybridcl run folder" in line


def test_resume_takes_no_overrides(capsys, tmp_path):
    rc, line, _ = run_cli(capsys, "run", "--resume", str(tmp_path), "train.epochs=3")
    assert rc == 2 and "--resume takes no overrides" in line


def test_resume_of_an_incompatible_state_format(capsys, tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path)
    state_path = run / "seed-0" / "state.json"
    state = json.loads(state_path.read_text())
    state.update(format=99, hybridcl="9.9.9")
    state_path.write_text(json.dumps(state))
    rc, line, _ = run_cli(capsys, "run", "--resume", str(run), "--no-progress")
    assert rc == 2
    assert f"{state_path} was written by hybridcl 9.9.9 in format 99" in line and "start a new run" in line


@pytest.mark.parametrize("damage, expected", [
    ("state-not-json", "state.json: line 1: not valid JSON"),
    ("state-not-object", "state.json is not a hybridcl state file"),
    ("config-not-yaml", "config.yaml: line 2, column 1 is not valid YAML"),
    ("config-unknown-key", "config.yaml: unknown config key 'train.new_knob'"),
])
def test_resume_of_a_damaged_run_folder(capsys, tmp_path, finished_run, damage, expected):
    run = copy_run(finished_run, tmp_path)
    if damage == "state-not-json":
        (run / "seed-0" / "state.json").write_text("{\"format\": 1, ")
    elif damage == "state-not-object":
        (run / "seed-0" / "state.json").write_text("[1, 2]")
    elif damage == "config-not-yaml":
        (run / "config.yaml").write_text("train: [1,\n")
    else:
        text = (run / "config.yaml").read_text().replace("train:\n", "train:\n  new_knob: 1\n")
        (run / "config.yaml").write_text(text)
    rc, line, _ = run_cli(capsys, "run", "--resume", str(run), "--no-progress")
    assert rc == 2 and expected in line


def test_resume_of_a_finished_run_is_a_no_op(capsys, tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path)
    before = (run / "results.json").read_text()
    capsys.readouterr()
    assert main(["run", "--resume", str(run), "--no-progress"]) == 0
    assert (run / "results.json").read_text() == before


@pytest.mark.parametrize("target, saved", [
    ("checkpoint", "stats/row0.safetensors"),  # the first safetensors file of a run (row 0's statistics)
    ("fsync", "config.yaml"),  # the first atomic write of a run
    ("cache", "encoded-"),  # a write that does not go through hybridcl.io (tokenised-data cache)
])
def test_disk_full_while_saving(capsys, tmp_path, monkeypatch, target, saved):
    import hybridcl.data.batching
    import hybridcl.io

    def enospc(*args, **kwargs):
        name = args[0] if args and isinstance(args[0], (str, os.PathLike)) else None
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)

    if target == "checkpoint":
        monkeypatch.setattr(hybridcl.io, "save_file", lambda tensors, path, metadata=None: enospc(path))
    elif target == "fsync":
        monkeypatch.setattr(hybridcl.io.os, "fsync", enospc)
    else:
        monkeypatch.setattr(hybridcl.data.batching.np, "savez", lambda handle, **kw: enospc(os.readlink(f"/proc/self/fd/{handle.fileno()}")))
    run = tmp_path / "run"
    rc, line, _ = run_cli(capsys, "run", "--no-progress", *TINY, f"run.output_dir={tmp_path}", "run.name=run")
    assert rc == 2 and "disk full" in line and saved in line
    assert "free space" in line and "resume" in line
    leftovers = [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []  # no half-written temp file stays behind
    if target == "checkpoint":
        # The run folder is intact: after freeing space, --resume finishes it.
        monkeypatch.undo()
        assert main(["run", "--resume", str(run), "--no-progress"]) == 0
        assert json.loads((run / "seed-0" / "state.json").read_text())["finished"]


def test_debug_shows_the_traceback():
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'"):
        main(["--debug", "run", "preset=smoke", "train.epoch=1"])


def test_real_process_exit_code_and_stderr(tmp_path):
    """The console entry point end to end: exit code 2, one error line, no traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "hybridcl.cli", "run", "preset=smoke", "train.epoch=1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("hybridcl: error: unknown config key 'train.epoch'")

