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
from hybridcl.config.experiment import build_config, load_config
from hybridcl.continual import run_experiment
from hybridcl.data.readers import bundled_dir
from hybridcl.errors import ConfigError

TINY = ["preset=smoke", "tasks=[python]", "data.max_train=8", "data.max_val=2", "eval.max_new_tokens=4"]


def private_mounts_or_skip() -> None:
    """The tests below make real full / read-only file systems, in a mount namespace of their own."""
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0
    ):
        pytest.skip("needs a private mount namespace (root, `unshare -m`) for a real small or read-only file system")


def real_cli(script: str) -> subprocess.CompletedProcess:
    """Run a shell ``script`` in a private mount namespace; ``$HYBRIDCL`` is the real console entry point."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
        "HYBRIDCL": f"{sys.executable} -m hybridcl.cli",
    }
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=600)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("hybridcl: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


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


@pytest.mark.parametrize(
    "overrides, expected",
    [
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
    ],
)
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
    rc, line, _ = run_cli(
        capsys,
        "run",
        "--no-progress",
        *TINY,
        "data.source=jsonl",
        f"data.path={empty}",
        f"run.output_dir={tmp_path / 'runs'}",
    )
    assert rc == 2
    assert f"{empty}: no python.train.jsonl.gz or python.train.jsonl; create it with `hybridcl data extract" in line


# mtime=0: the test ids hold the bytes, and pytest-xdist's workers must collect the same ids
@pytest.mark.parametrize(
    "content, expected",
    [
        (b"\x1f\x8b\x08\x00garbage", "python.train.jsonl.gz:1: corrupt gzip data"),
        (gzip.compress(b'{"repo": "r"}\n', mtime=0), "python.train.jsonl.gz:1: missing field 'path'"),
        (gzip.compress(b'{"repo": "r", \n', mtime=0), "python.train.jsonl.gz:1: malformed JSON"),
        (gzip.compress(b"\n\xff\xfe\n", mtime=0), "python.train.jsonl.gz:2: not UTF-8 text"),
    ],
)
def test_corrupt_data_file(capsys, tmp_path, content, expected):
    data = tmp_path / "data"
    data.mkdir()
    (data / "python.train.jsonl.gz").write_bytes(content)
    rc, line, _ = run_cli(
        capsys,
        "run",
        "--no-progress",
        *TINY,
        "data.source=jsonl",
        f"data.path={data}",
        f"run.output_dir={tmp_path / 'runs'}",
    )
    assert rc == 2 and expected in line and str(data) in line


def test_a_language_the_data_source_lacks(capsys, tmp_path):
    # the bundled corpus has all six CodeSearchNet languages: a jsonl folder with only Python lacks Go
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid"):
        shutil.copy(bundled_dir() / f"python.{split}.jsonl.gz", data / f"python.{split}.jsonl.gz")
    rc, line, _ = run_cli(
        capsys,
        "run",
        "--no-progress",
        *TINY,
        "tasks=[python,go]",
        "data.source=jsonl",
        f"data.path={data}",
        f"run.output_dir={tmp_path / 'runs'}",
    )
    assert (
        rc == 2
        and f"{data}: no go.train.jsonl.gz or go.train.jsonl" in line
        and "hybridcl data extract --language go" in line
    )


def test_model_not_available_offline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, line, _ = run_cli(
        capsys, "run", "--no-progress", *TINY, "model.name=nobody/no-such-model-xyz", f"run.output_dir={tmp_path}"
    )
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


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("state-not-json", "state.json: line 1: not valid JSON"),
        ("state-not-object", "state.json is not a hybridcl state file"),
        ("config-not-yaml", "config.yaml: line 2, column 1 is not valid YAML"),
        ("config-unknown-key", "config.yaml: unknown config key 'train.new_knob'"),
    ],
)
def test_resume_of_a_damaged_run_folder(capsys, tmp_path, finished_run, damage, expected):
    run = copy_run(finished_run, tmp_path)
    if damage == "state-not-json":
        (run / "seed-0" / "state.json").write_text('{"format": 1, ')
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


@pytest.mark.parametrize(
    "target, saved",
    [
        ("fsync", "config.yaml"),  # the first atomic write of a run
        ("cache", "encoded-"),  # a write that does not go through hybridcl.records.io (tokenised-data cache)
    ],
)
def test_disk_full_while_saving(capsys, tmp_path, monkeypatch, target, saved):
    import hybridcl.data.batching
    import hybridcl.records.io

    def enospc(*args, **kwargs):
        name = args[0] if args and isinstance(args[0], (str, os.PathLike)) else None
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)

    if target == "fsync":
        monkeypatch.setattr(hybridcl.records.io.os, "fsync", enospc)
    else:
        monkeypatch.setattr(
            hybridcl.data.batching.np,
            "savez",
            lambda handle, **kw: enospc(os.readlink(f"/proc/self/fd/{handle.fileno()}")),
        )
    run = tmp_path / "run"
    rc, line, _ = run_cli(capsys, "run", "--no-progress", *TINY, f"run.output_dir={tmp_path}", "run.name=run")
    assert rc == 2 and "disk full" in line and saved in line
    assert "free space" in line and "resume" in line
    leftovers = [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []  # no half-written temp file stays behind
    # both fail before any progress is saved (the first cache write comes with row 0's loss matrix):
    # no folder is left behind
    assert not run.exists()


def test_debug_shows_the_traceback():
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'"):
        main(["--debug", "run", "preset=smoke", "train.epoch=1"])


def test_real_process_exit_code_and_stderr(tmp_path):
    """The console entry point end to end: exit code 2, one error line, no traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "hybridcl.cli", "run", "preset=smoke", "train.epoch=1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("hybridcl: error: unknown config key 'train.epoch'")


# ---------------------------------------------------------------------------------------------
# Issue 16: faults that printed a traceback, advice that did not work, a run folder left behind


def test_disk_full_on_a_real_small_file_system(tmp_path):
    """A 100 KB tmpfs: the 160 KB checkpoint does not fit. safetensors used to raise SafetensorError
    (not an OSError) here, a traceback; after freeing space --resume finishes the run."""
    private_mounts_or_skip()
    full = tmp_path / "full"
    full.mkdir()
    # a small router (feature_ridge keeps a random_features^2 Gram matrix per task) so the run fits 10 MB
    args = " ".join(
        ["run", "--no-progress", *TINY, "routing.random_features=64", f"run.output_dir={full}", "run.name=r"]
    )
    proc = real_cli(
        f"mount -t tmpfs -o size=100k tmpfs {full} && $HYBRIDCL {args}; echo rc=$?; "
        f"ls -a {full}/r/seed-0/tasks/1-python; "
        f"mount -o remount,size=10m {full} && $HYBRIDCL run --resume {full}/r --no-progress >/dev/null; echo rc=$?; "
        f"cat {full}/r/seed-0/state.json"
    )
    assert proc.returncode == 0, proc.stderr
    line = one_error_line(proc.stderr)
    assert line == (
        f"hybridcl: error: cannot save {full}/r/seed-0/tasks/1-python/components.safetensors: disk full: "
        "free space there and run the command again (a run continues with `hybridcl run --resume`)"
    )
    out = proc.stdout.splitlines()
    assert out[0] == "rc=2"
    assert out[1:4] == [".", "..", "rule.safetensors"]  # no half-written checkpoint, no temp file
    assert out[4] == "rc=0" and json.loads("\n".join(out[5:]))["finished"]


def test_a_read_only_run_folder(tmp_path, finished_run):
    """report, eval and compare on a run folder mounted read-only (EROFS): one line each. (`run --resume`
    of this finished run writes nothing: test_resume_of_a_finished_run_says_so_and_rewrites_nothing.)"""
    private_mounts_or_skip()
    run = copy_run(finished_run, tmp_path)
    commands = [
        f"report {run}",
        f"eval {run} --no-progress",
        f"compare {run} --out {run}/cmp",
    ]
    script = f"mount --bind {run} {run} && mount -o remount,bind,ro {run} && " + " ; ".join(
        f"$HYBRIDCL {c} 2>&1 >/dev/null | grep -v '^hybridcl: run folder' ; echo rc=$?" for c in commands
    )
    proc = real_cli(script)
    blocks = proc.stdout.split("rc=")
    assert len(blocks) == 4, proc.stdout + proc.stderr
    for command, block in zip(commands, blocks[:-1], strict=True):
        lines = [x for x in block.splitlines() if x and not x[0].isdigit()]
        assert len(lines) == 1 and "Traceback" not in block, (command, block)
        assert lines[0].startswith("hybridcl: error: ") and f"{run}/" in lines[0], (command, lines)
        assert "Read-only file system: copy the folder somewhere writable or mount it read-write" in lines[0]


def test_an_unwritable_export_target(capsys, tmp_path, finished_run):
    target = tmp_path / "locked"
    target.mkdir()
    if subprocess.run(["chattr", "+i", str(target)], capture_output=True).returncode != 0:
        pytest.skip("needs chattr +i (root on ext4) for a folder that even root cannot write")
    try:
        rc, line, _ = run_cli(
            capsys, "export", "--run", str(finished_run), "--task", "python", "--merged", str(target / "out")
        )
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)
    assert rc == 2
    assert line == (
        f"hybridcl: error: cannot export to {target / 'out'}: Operation not permitted: you may not write there: "
        "choose another folder or change its permissions (or `chattr -i`)"
    )
    assert list(target.iterdir()) == []


def test_a_run_name_too_long_and_an_output_dir_that_is_a_file(capsys, tmp_path):
    rc, line, _ = run_cli(capsys, "run", "--no-progress", *TINY, f"run.output_dir={tmp_path}", f"run.name={'a' * 300}")
    assert rc == 2 and line == (
        f"hybridcl: error: {tmp_path / ('a' * 300)}: File name too long: "
        "choose a shorter name (run.name, the output folder or file name)"
    )
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc, line, _ = run_cli(capsys, "run", "--no-progress", *TINY, f"run.output_dir={afile}", "run.name=r")
    assert rc == 2 and line == (
        f"hybridcl: error: {afile / 'r'}: Not a directory: "
        "a part of that path is a file, not a folder: choose another path"
    )


def test_results_json_that_is_not_utf8(capsys, tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path)
    (run / "results.json").write_bytes(b'{"matrix": "\xff\xfe"}')
    for argv in (["report", str(run)], ["compare", str(run), "--out", str(tmp_path)]):
        rc, line, _ = run_cli(capsys, *argv)
        assert rc == 2 and line == (
            f"hybridcl: error: {run / 'results.json'}: byte 12 is not UTF-8 text (the file is damaged): "
            f"rebuild it from the run's checkpoints with `hybridcl eval {run}`"
        )


def test_truncated_state_and_results_say_how_to_recover_and_the_advice_works(capsys, tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path)
    results = run / "results.json"
    results.write_text(results.read_text()[:100])
    rc, line, _ = run_cli(capsys, "report", str(run))
    assert rc == 2 and line.startswith(f"hybridcl: error: {results}: line ") and ": not valid JSON (" in line
    assert line.endswith(f": rebuild it from the run's checkpoints with `hybridcl eval {run}`")
    assert main(["eval", str(run), "--no-progress"]) == 0  # the advice works
    assert (
        json.loads(results.read_text())["matrix"] == json.loads((finished_run / "results.json").read_text())["matrix"]
    )

    state = run / "seed-0" / "state.json"
    state.write_text(state.read_text()[:50])
    rc, line, _ = run_cli(capsys, "run", "--resume", str(run), "--no-progress")
    assert rc == 2 and line.endswith(
        f": delete it and run `hybridcl run --resume {run}` to train seed-0 again from its "
        "first task (the other seeds are kept)"
    )
    state.unlink()
    assert main(["run", "--resume", str(run), "--no-progress"]) == 0  # the advice works
    assert (
        json.loads(results.read_text())["matrix"] == json.loads((finished_run / "results.json").read_text())["matrix"]
    )


@pytest.mark.parametrize(
    "content, cause",
    [
        (b"garbage", "ValueError: GGUF magic invalid"),
        # the GGUF magic and version, then a metadata key whose bytes are not UTF-8
        (
            b"GGUF"
            + (3).to_bytes(4, "little")
            + (1).to_bytes(8, "little")
            + (2).to_bytes(8, "little")
            + (5).to_bytes(8, "little")
            + b"\xff\xfe\xfa\xfb\xfc"
            + bytes(64),
            "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
        ),
    ],
)
def test_a_damaged_gguf_file(capsys, tmp_path, content, cause):
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    for command in (["params"], ["run", "--no-progress", *TINY, f"run.output_dir={tmp_path}"]):
        rc, line, _ = run_cli(capsys, *command, f"model.name={path}")
        assert rc == 2 and line == (
            f"hybridcl: error: GGUF file {path} is damaged or not a GGUF model ({cause}): "
            "download it again or set model.name to another .gguf file"
        )


def test_a_malicious_pickle_with_allow_pickle_is_refused_in_one_line(capsys, tmp_path, malicious_pickle_model):
    folder, marker = malicious_pickle_model
    rc, line, _ = run_cli(
        capsys,
        "run",
        "--no-progress",
        *TINY,
        f"model.name={folder}",
        "model.allow_pickle=true",
        f"run.output_dir={tmp_path / 'runs'}",
    )
    assert rc == 2 and line.startswith(
        f"hybridcl: error: model {folder}: the pickle checkpoint holds objects other than "
        "tensors and was refused by torch's safe loader, even with model.allow_pickle=true"
    )
    assert line.endswith("get a safetensors checkpoint of this model; it may be malicious")
    assert not marker.exists() and list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize("flag, value", [("--max-new-tokens", "-5"), ("--num-beams", "0")])
def test_generate_flags_are_validated(capsys, finished_run, flag, value):
    rc, line, _ = run_cli(
        capsys, "generate", "--run", str(finished_run), "--task", "python", flag, value, "add two numbers"
    )
    assert rc == 2 and line == f"hybridcl: error: {flag} = {value}: must be greater than 0"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["preset="],
            "override 'preset=' is empty: give a preset name "
            "(one of default, reference, reference-original, smoke, study)",
        ),
        (["config="], "override 'config=' is empty"),
        (["preset=../presets/smoke"], "unknown preset '../presets/smoke'"),
        (
            ["eval.humaneval_problems=-5"],
            "eval.humaneval_problems = -5: must be 1-164 (HumanEval has 164 problems), or null",
        ),
        (["eval.humaneval_problems=0"], "eval.humaneval_problems = 0: must be 1-164"),
        (["data.max_record_bytes=0"], "data.max_record_bytes = 0: must be greater than 0"),
    ],
)
def test_more_bad_overrides(capsys, overrides, expected):
    rc, line, _ = run_cli(capsys, "run", "--no-progress", *overrides)
    assert rc == 2 and expected in line


def test_config_that_is_a_folder(capsys, tmp_path, finished_run):
    rc, line, _ = run_cli(capsys, "run", f"config={tmp_path}")
    assert rc == 2 and line == (
        f"hybridcl: error: config file {tmp_path} is a folder, not a YAML file: name a .yaml file, "
        f"e.g. config={tmp_path}/config.yaml"
    )
    rc, line, _ = run_cli(capsys, "run", f"config={finished_run}")
    assert rc == 2 and "is a folder, not a YAML file (a run folder: continue it with `hybridcl run --resume`)" in line


def test_a_duplicate_yaml_key_is_an_error(capsys, tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("extends: smoke\ntrain:\n  epochs: 1\n  lr: 0.1\n  epochs: 3\n")
    rc, line, _ = run_cli(capsys, "run", f"config={path}")
    assert rc == 2 and line == (
        f"hybridcl: error: {path}: line 5, column 3 is not valid YAML: "
        "key 'epochs' appears twice (first on line 3): keep one"
    )


def test_extends_names_a_preset_only(capsys, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("train:\n  epochs: 7\n")
    (tmp_path / "sub").mkdir()
    for parent in ("../other", str(other), "../../../../etc/hostname"):
        path = tmp_path / "sub" / "my.yaml"
        path.write_text(f"extends: {parent}\n")
        rc, line, _ = run_cli(capsys, "run", f"config={path}")
        assert rc == 2 and line == (
            f"hybridcl: error: {path}: extends: {parent!r} is not a preset: extends names one of "
            "default, reference, reference-original, smoke, study; put the keys of another file in this one"
        )


def test_a_run_that_fails_on_bad_input_leaves_no_folder(capsys, tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    runs = tmp_path / "runs"
    rc, _, err = run_cli(
        capsys,
        "run",
        "--no-progress",
        *TINY,
        "data.source=jsonl",
        f"data.path={empty}",
        f"run.output_dir={runs}",
        "run.name=r",
    )
    assert rc == 2 and f"hybridcl: run folder {runs / 'r'}" in err
    assert not (runs / "r").exists()


def test_ctrl_c_names_the_run_folder(capsys, tmp_path, monkeypatch):
    import hybridcl.continual

    def interrupted(config, run_dir, progress=True):
        raise KeyboardInterrupt

    monkeypatch.setattr(hybridcl.continual, "run_experiment", interrupted)
    capsys.readouterr()
    assert main(["run", "--no-progress", *TINY, f"run.output_dir={tmp_path}", "run.name=r"]) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"hybridcl: interrupted; finished tasks are saved: continue with `hybridcl run --resume {tmp_path / 'r'}`"
    )


def test_humaneval_without_isolation_is_refused_before_training(capsys, tmp_path, monkeypatch):
    from hybridcl.evaluation import sandbox

    monkeypatch.setattr(sandbox, "_isolation", lambda: "user namespaces are disabled")
    rc, line, _ = run_cli(capsys, "run", "--no-progress", *TINY, "eval.humaneval=true", f"run.output_dir={tmp_path}")
    assert rc == 2 and line.startswith(
        "hybridcl: error: the sandbox cannot isolate generated code on this machine (user namespaces are disabled)"
    )
    assert line.endswith("or set eval.allow_unsandboxed=true to run it anyway with weaker protections")
    assert list(tmp_path.iterdir()) == []  # refused before a run folder was made


# ---------------------------------------------------------------------------------------------
# Bounded errors: a message quotes at most ~200 characters of a value; YAML is capped before validation


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """``components.lora.target_modules`` as a list nesting ``levels`` levels of ``width`` aliases:
    a few hundred bytes of YAML that expand to width**levels strings."""

    def level(k: int) -> str:
        if k == 0:
            return "&a0 q_proj"
        return f"&a{k} [{level(k - 1)}, " + ", ".join([f"*a{k - 1}"] * (width - 1)) + "]"

    return f"preset: smoke\ncomponents:\n  lora:\n    target_modules: {level(levels)}\n"


def test_a_yaml_alias_bomb_is_refused_before_validation(capsys, tmp_path):
    """Was: the one-line error quoted the whole expanded value (226 MB of output, 27 s, 1.05 GB)."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    assert len(bomb.read_bytes()) < 1000
    rc, line, err = run_cli(capsys, "run", "--no-progress", f"config={bomb}")
    assert rc == 2 and len(err) < 1000
    assert line == (
        f"hybridcl: error: {bomb}: the YAML expands to more than 100,000 values through its aliases (*name): "
        "write the values out instead of nesting aliases"
    )
    rc, line, err = run_cli(capsys, "params", "components.lora.target_modules=" + alias_bomb().split(": ", 3)[-1])
    assert rc == 2 and "expands to more than 100,000 values" in line and len(err) < 1000


def test_an_error_quotes_at_most_200_characters_of_a_value():
    """The same bomb built in Python (no YAML cap on the way) and a 10 MB string: the messages that
    quote them stay short."""
    value = "q_proj"
    for _ in range(9):
        value = [value] * 9
    raw = load_config(overrides=["preset=smoke"]).to_dict()
    raw["components"]["lora"]["target_modules"] = value
    with pytest.raises(ConfigError) as info:
        build_config(raw)
    message = str(info.value)
    assert message.startswith("components.lora.target_modules[0] = [[[[") and message.endswith("must be a string")
    assert len(message) < 300 and "(9 items)" in message
    raw["components"]["lora"]["target_modules"] = None
    raw["train"]["precision"] = "x" * 10_000_000
    with pytest.raises(ConfigError) as info:
        build_config(raw)
    assert len(str(info.value)) < 400 and "(10,000,000 characters)" in str(info.value)


def test_a_10_mb_config_is_refused_unread(capsys, tmp_path):
    """Was: read, parsed and validated whole; its 10 MB run.name reached the error message."""
    big = tmp_path / "big.yaml"
    big.write_text("preset: smoke\nrun:\n  name: " + "x" * 10_000_000 + "\n")
    rc, line, err = run_cli(capsys, "run", "--no-progress", f"config={big}")
    assert rc == 2 and len(err) < 1000
    assert line == (
        f"hybridcl: error: {big}: 10,000,028 bytes, more than the 1,048,576 a config file may have: "
        "a config holds settings, not data; shorten it"
    )
