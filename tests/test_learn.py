"""A finished run learns more tasks (``hybridcl learn``): the same files and numbers as a run that had
them from the start, for every sequential strategy; bad requests leave the run as it was."""

import json

import pytest

from hybridcl.config.experiment import load_config
from hybridcl.continual import learn_tasks, run_experiment
from hybridcl.strategies import STRATEGIES, get_strategy

SMALL = ["preset=smoke", "data.max_train=8", "data.max_val=4", "eval.max_new_tokens=4", "train.log_every=2"]
SEQUENTIAL = [s for s in STRATEGIES if get_strategy(s).sequential]
# what differs between two runs of the same numbers: the time things took
TIMES = {"eval_seconds", "generate_seconds", "loss_seconds", "seconds", "wall_seconds", "samples_per_s"}


def config(*overrides):
    return load_config(overrides=[*SMALL, *overrides])


def untimed(node):
    if isinstance(node, dict):
        return {k: untimed(v) for k, v in node.items() if k not in TIMES and not k.endswith("_per_s")}
    if isinstance(node, list):
        return [untimed(v) for v in node]
    return node


def comparable(run_dir):
    """The seed's results.json without what measures time or memory."""
    seed = json.loads((run_dir / "seed-0" / "results.json").read_text())
    drop = {"eval_seconds", "evaluation", "train"}
    return {k: untimed(v) for k, v in seed.items() if k not in drop}


def files(run_dir, *patterns):
    seed = run_dir / "seed-0"
    return {str(p.relative_to(seed)): p.read_bytes() for pattern in patterns for p in sorted(seed.glob(pattern))}


def grown_and_whole(tmp_path, *overrides):
    whole = run_experiment(config(*overrides, "tasks=[python,javascript,go]"), tmp_path / "whole", progress=False)
    grown = run_experiment(config(*overrides, "tasks=[python,javascript]"), tmp_path / "grown", progress=False)
    learn_tasks(grown, ["go"], progress=False)
    return grown, whole


@pytest.mark.parametrize("strategy", SEQUENTIAL)
def test_a_run_that_learns_a_task_equals_one_started_with_it(tmp_path, strategy):
    grown, whole = grown_and_whole(tmp_path, f"strategy={strategy}")
    # checkpoints (components, the rule's state: replay, EWC's Fisher, O-LoRA's subspaces), router files,
    # per-example statistics of every row with and without the task id, predictions: byte for byte
    patterns = ("tasks/*/*.safetensors", "stats/*.safetensors", "predictions/*.jsonl")
    a, b = files(grown, *patterns), files(whole, *patterns)
    assert sorted(a) == sorted(b) and [k for k in a if a[k] != b[k]] == []
    assert any(k.startswith("tasks/3-go/") for k in a)
    ra, rb = (comparable(d) for d in (grown, whole))
    assert ra.keys() == rb.keys() >= {"matrix", "cl_metrics", "intervals", "data", "params"}
    assert [k for k in ra if ra[k] != rb[k]] == []
    assert ra["rows"] == ["base", "python", "javascript", "go"]
    assert (ra["routing"] is not None) == get_strategy(strategy).routable
    sa, sb = (json.loads((d / "seed-0" / "state.json").read_text()) for d in (grown, whole))
    assert untimed(sa["rows"]) == untimed(sb["rows"]) and untimed(sa["routed"]) == untimed(sb["routed"])
    assert [t["task"] for t in sa["train"]] == ["python", "javascript", "go"] and sa["finished"]


def snapshot(run_dir):
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-task run with per-task parts and routing, copied by the tests that change it."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    return run_experiment(config("strategy=hybrid_task_specific", "tasks=[python,javascript]"), folder, progress=False)


@pytest.fixture
def run(finished, tmp_path):
    import shutil

    return shutil.copytree(finished, tmp_path / "run")


def error_of(capsys, *argv):
    from hybridcl.cli import main

    capsys.readouterr()
    rc = main(["learn", *argv, "--no-progress"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("hybridcl: error:")]
    assert rc == 2 and len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        (["javascript"], "has a task 'javascript' already"),
        (["cobol"], "unknown tasks 'cobol'"),
        (["strategy=lora_only"], "takes tasks, not settings (strategy=lora_only)"),
        (["go", "go"], "the name 'go' is given twice"),
    ],
)
def test_a_request_the_run_cannot_take_is_one_line_and_changes_nothing(run, capsys, tasks, expected):
    before = snapshot(run)
    assert expected in error_of(capsys, str(run), *tasks)
    assert snapshot(run) == before


def test_an_unfinished_run_is_refused_with_the_resume_command(run, capsys):
    state_file = run / "seed-0" / "state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "finished": False}))
    line = error_of(capsys, str(run), "go")
    assert "is not finished" in line and f"hybridcl run --resume {run}" in line


def test_joint_has_no_sequence_to_extend(tmp_path, capsys):
    joint = run_experiment(config("strategy=joint", "tasks=[python]"), tmp_path / "joint", progress=False)
    line = error_of(capsys, str(joint), "go")
    assert "has no sequence to extend" in line and "tasks=[python,go]" in line


def test_a_failure_before_the_new_stage_is_saved_leaves_every_file_as_it_was(run, monkeypatch):
    import hybridcl.continual as continual

    before = snapshot(run)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(continual, "train_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        learn_tasks(run, ["go"], progress=False)  # after row 0..2 gained go's column, before go trained
    assert snapshot(run) == before
    assert not list(run.parent.glob(".run-undo-*"))


def test_a_failure_after_a_new_stage_is_saved_is_finished_by_resume(tmp_path, monkeypatch):
    import hybridcl.continual as continual
    from hybridcl.records.run_dir import load_run_config

    overrides = ("strategy=hybrid_shared_layer",)
    whole = run_experiment(config(*overrides, "tasks=[python,javascript,go]"), tmp_path / "whole", progress=False)
    grown = run_experiment(config(*overrides, "tasks=[python]"), tmp_path / "grown", progress=False)
    real = continual.train_task

    def stop_at_go(*args, task, **kwargs):
        if task == "go":
            raise KeyboardInterrupt
        return real(*args, task=task, **kwargs)

    monkeypatch.setattr(continual, "train_task", stop_at_go)
    with pytest.raises(KeyboardInterrupt):
        learn_tasks(grown, ["javascript", "go"], progress=False)
    assert load_run_config(grown).task_names == ["python", "javascript", "go"]  # kept: javascript's stage is saved
    monkeypatch.setattr(continual, "train_task", real)
    run_experiment(load_run_config(grown), grown, progress=False)  # what `hybridcl run --resume` does
    a, b = (files(d, "tasks/*/*.safetensors", "stats/*.safetensors") for d in (grown, whole))
    assert a == b
    assert comparable(grown) == comparable(whole)


def test_changed_data_of_an_earlier_task_is_refused(tmp_path, capsys):
    import gzip
    import shutil

    from hybridcl.data.readers import bundled_dir

    data = tmp_path / "data"
    data.mkdir()
    for language in ("python", "go"):
        for split in ("train", "valid"):
            shutil.copy(bundled_dir() / f"{language}.{split}.jsonl.gz", data)
    done = run_experiment(
        config("tasks=[python]", "data.source=jsonl", f"data.path={data}"), tmp_path / "run", progress=False
    )
    valid = data / "python.valid.jsonl.gz"
    lines = gzip.decompress(valid.read_bytes()).splitlines(keepends=True)
    valid.write_bytes(gzip.compress(b"".join(lines[1:])))  # one function fewer
    before = snapshot(done)
    line = error_of(capsys, str(done), "go")
    assert "python.valid.jsonl.gz (under data.path) has changed since the run" in line
    assert snapshot(done) == before


def test_a_sweep_learns_the_task_in_every_point_and_compares_again(tmp_path, capsys):
    from hybridcl.cli import main

    argv = ["run", *SMALL, "tasks=[python]", "run.name=sw", f"run.output_dir={tmp_path}", "--no-progress"]
    assert main([*argv, "--sweep", "strategy=lora_only,hybrid_task_specific"]) == 0
    sweep = tmp_path / "sw"
    assert main(["learn", str(sweep), "go", "--no-progress"]) == 0
    for point in ("lora_only", "hybrid_task_specific"):
        results = json.loads((sweep / point / "results.json").read_text())
        assert results["rows"] == ["base", "python", "go"]
    assert "go" in (sweep / "comparison.md").read_text()


# ---------------------------------------------------------------------------------------------
# Tasks as records


def test_a_task_record_fills_its_defaults_and_the_shorthand_stays_a_name():
    c = config(
        "data.direction=completion",
        "tasks=[python,{name: py-doc, language: python, direction: code-to-text, max_train: 4}]",
    )
    assert c.task_names == ["python", "py-doc"]
    assert [(t.language, t.direction) for t in c.tasks] == [("python", "completion"), ("python", "code-to-text")]
    assert c.to_dict()["tasks"] == [
        "python",
        {"name": "py-doc", "language": "python", "direction": "code-to-text", "max_train": 4},
    ]
    assert config("tasks=[python,javascript]").to_dict()["tasks"] == ["python", "javascript"]


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        ("[billing]", "unknown tasks 'billing'"),
        ("[billing]", "needs its language, e.g. {name: billing, language: python, data: billing.jsonl.gz}"),
        ("[{name: billing, language: cobol}]", "unknown tasks[0].language 'cobol'"),
        ("[{name: a, language: python, direction: sideways}]", "tasks[0].direction = 'sideways' is not allowed"),
        ("[{name: a, language: python, colour: red}]", "unknown config key 'tasks[0].colour'"),
        ("[{name: a, language: python, max_val: 0}]", "tasks[0].max_val = 0: must be greater than 0"),
    ],
)
def test_a_bad_task_record_names_its_field(tasks, expected):
    from hybridcl.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        config(f"tasks={tasks}")
    assert expected in str(caught.value)


MIXED = (
    "tasks=[{name: python, direction: completion},{name: python-doc, language: python, direction: code-to-text},"
    "{name: javascript, direction: completion}]"
)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_mixed_type_stream_runs_with_every_strategy(tmp_path, strategy):
    """Python completion -> Python code-to-text -> JavaScript completion: one language, two tasks."""
    run = run_experiment(config(f"strategy={strategy}", MIXED), tmp_path / "run", progress=False)
    results = json.loads((run / "results.json").read_text())
    assert results["tasks"] == ["python", "python-doc", "javascript"]
    assert results["rows"] == (["base", "joint"] if strategy == "joint" else ["base", *results["tasks"]])
    seed = run / "seed-0"
    doc = [json.loads(line) for line in (seed / "predictions" / "row0-python-doc.jsonl").read_text().splitlines()]
    code = [json.loads(line) for line in (seed / "predictions" / "row0-python.jsonl").read_text().splitlines()]
    # the two Python tasks: the same functions' docstrings as targets on one, the functions on the other
    assert {d["reference"] for d in doc}.isdisjoint({c["reference"] for c in code})
    assert all("def " in c["reference"] for c in code) and not any("def " in d["reference"] for d in doc)
    data = json.loads((seed / "results.json").read_text())["data"]
    assert [data[t]["direction"] for t in results["tasks"]] == ["completion", "code-to-text", "completion"]


def own_records(folder, name="mine", language="go"):
    """``folder/NAME.{train,valid}.jsonl.gz``, as `hybridcl data extract --out folder/NAME.jsonl.gz` writes."""
    import shutil

    from hybridcl.data.readers import bundled_dir

    folder.mkdir(exist_ok=True)
    for split in ("train", "valid"):
        shutil.copy(bundled_dir() / f"{language}.{split}.jsonl.gz", folder / f"{name}.{split}.jsonl.gz")
    return folder / f"{name}.jsonl.gz"


def test_a_run_learns_a_task_of_its_own_data_from_a_record_file(run, tmp_path, capsys):
    from hybridcl.cli import main

    data = own_records(tmp_path / "data")
    record = tmp_path / "mine.yaml"
    record.write_text(f"name: mine\nlanguage: go\ndata: {data}\nmax_train: 4\n")
    assert main(["learn", str(run), str(record), "--no-progress"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["tasks"] == ["python", "javascript", "mine"] and results["rows"][-1] == "mine"
    seed = json.loads((run / "seed-0" / "results.json").read_text())
    report = seed["data"]["mine"]
    assert report["train"]["kept"] == 4 and report["language"] == "go"
    assert [f["path"] for f in report["train"]["files"]] == ["mine.train.jsonl.gz"]
    assert "- task mine: go, text-to-code, data " in (run / "report.md").read_text()
    # its files are checked against its own data, not the run's data.* source: the run learns on
    learn_tasks(run, ["ruby"], progress=False)
    assert json.loads((run / "results.json").read_text())["tasks"][-1] == "ruby"


def test_a_records_file_with_a_bad_line_is_named_with_the_line(run, tmp_path, capsys):
    import gzip

    data = own_records(tmp_path / "data")
    valid = data.parent / "mine.valid.jsonl.gz"
    valid.write_bytes(gzip.compress(b'{"repo": "x"\n'))
    record = tmp_path / "mine.yaml"
    record.write_text(f"name: mine\nlanguage: go\ndata: {data}\n")
    before = snapshot(run)
    line = error_of(capsys, str(run), str(record))
    assert "mine.valid.jsonl.gz:1: malformed JSON" in line
    assert snapshot(run) == before


def test_a_run_another_writer_holds_is_refused_with_the_locks_message(run, capsys):
    import os

    from hybridcl.records.io import FolderLock

    holder = FolderLock(run / ".lock")
    assert holder.acquire() is None
    try:
        before = snapshot(run)
        line = error_of(capsys, str(run), "go")
    finally:
        holder.release()
    assert line == (
        f"hybridcl: error: {run} is in use by hybridcl process {os.getpid()} (lock {run}/.lock): "
        "wait for it to finish or stop it, or choose another run.name"
    )
    assert snapshot(run) == before
