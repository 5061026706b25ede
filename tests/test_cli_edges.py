"""The rough edges a new user meets at the command line (issue 25): --version, help, config show,
overrides after options, the end-of-run summary, progress in logs, resume of a finished run,
compare with one run, generate's layout and --json, the base name of a PEFT export."""

import json
import re
import shutil

import pytest
import yaml

from hybridcl.cli import main
from hybridcl.config.experiment import load_config
from hybridcl.continual import run_experiment

SMALL = ["preset=smoke", "data.max_train=8", "data.max_val=4", "eval.max_new_tokens=4"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A two-task smoke run made by the command line: (run folder, its stderr, its stdout)."""
    capture = pytest.MonkeyPatch()
    import io
    import sys

    err, out = io.StringIO(), io.StringIO()
    capture.setattr(sys, "stderr", err)
    capture.setattr(sys, "stdout", out)
    folder = tmp_path_factory.mktemp("cli") / "runs"
    try:
        rc = main(["run", *SMALL, f"run.output_dir={folder}", "run.name=a"])
    finally:
        capture.undo()
    assert rc == 0, err.getvalue()
    return folder / "a", err.getvalue(), out.getvalue()


def test_version(capsys):
    from hybridcl import __version__

    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"hybridcl {__version__}"


def test_run_help_lists_the_presets_and_config_show(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Presets: default, reference, reference-original, smoke" in text and "hybridcl config show" in text


def test_config_show_prints_the_resolved_config(capsys):
    assert main(["config", "show", "preset=smoke", "train.epochs=3", "components.lora.r=2"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    expected = load_config(overrides=["preset=smoke", "train.epochs=3", "components.lora.r=2"]).to_dict()
    assert shown == expected and shown["train"]["epochs"] == 3 and shown["components"]["lora"]["r"] == 2


def test_overrides_after_options(cli_run, tmp_path):
    run = cli_run[0]
    assert main(["eval", str(run), "--out", str(tmp_path / "e"), "--no-progress", "eval.max_examples=2"]) == 0
    assert yaml.safe_load((tmp_path / "e" / "config.yaml").read_text())["eval"]["max_examples"] == 2
    with pytest.raises(SystemExit):  # an unknown option is still an error
        main(["eval", str(run), "--bogus", "eval.max_examples=2"])


def test_summary_labels_metrics_and_uses_the_directions_bleu(cli_run):
    run, err, _ = cli_run
    results = json.loads((run / "results.json").read_text())
    lines = err[err.index("metric ") :].splitlines()
    assert lines[0].split() == ["metric", "task", "base", "after", "its", "task", "at", "the", "end"]
    bleu = results["matrix"]["bleu_codexglue_text_to_code"]  # the smoke run is text-to-code
    assert lines[3].split() == ["BLEU", "text-to-code", "python", f"{bleu[0][0]['mean']:.2f}"] + [
        f"{bleu[1][0]['mean']:.2f}",
        f"{bleu[2][0]['mean']:.2f}",
    ]
    assert not any("code-to-text" in line for line in lines)
    # the tiny model's BLEU after each task is ~1e-5: relative forgetting divides by it
    assert max(c["mean"] for row in bleu for c in row) < 0.01
    assert "forgetting (relative) undefined" in err
    # every output of the untrained tiny model is empty, and CodeBLEU still gives 25
    codebleu = [line for line in lines if line.startswith("CodeBLEU")]
    assert codebleu and all(line.split()[-1] == "25.00" for line in codebleu)
    assert "note: 8 of 8 outputs at the end are empty; CodeBLEU gives an empty output about 25" in err


def test_progress_in_a_log_has_no_carriage_returns_and_names_what_it_does(cli_run):
    _, err, _ = cli_run
    assert "\r" not in err
    assert re.search(r"^train python: 1/1 step in [\d.]+ s, loss=", err, re.M)
    assert re.search(r"^hybridcl: stage 2/2 javascript: 1 steps in [\d.]+ s, loss [\d.]+$", err, re.M)
    run = cli_run[0]
    routed = [
        (task, json.loads(line)["routed_to"])
        for task in ("python", "javascript")
        for line in (run / "seed-0" / "predictions" / f"routed-row2-{task}.jsonl").read_text().splitlines()
    ]
    for task, other in {(t, c) for t, c in routed if t != c}:  # a generated prompt sent to another task's parts
        assert re.search(rf"^row 2: {task} prompts routed to {other}, scored and generated again", err, re.M)
    assert "->" not in err


def test_no_progress_still_prints_progress_lines(capsys, tmp_path):
    capsys.readouterr()
    argv = ["run", *SMALL, "tasks=[python]", f"run.output_dir={tmp_path}", "run.name=b", "--no-progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "train python:" not in err and "\r" not in err
    assert [line.split(":")[1].strip() for line in err.splitlines() if line.startswith("hybridcl: ")][1:4] == [
        "row 0 of the matrix evaluated (base model)",
        "stage 1/1 python",
        "row 1 of the matrix evaluated (after python)",
    ]


def test_resume_of_a_finished_run_says_so_and_rewrites_nothing(cli_run, capsys, tmp_path):
    run = shutil.copytree(cli_run[0], tmp_path / "a")
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    capsys.readouterr()
    assert main(["run", "--resume", str(run)]) == 0
    assert (
        capsys.readouterr().out.strip() == f"hybridcl: run {run} is finished: nothing to do (report: {run}/report.md)"
    )
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_compare_with_one_run(cli_run, capsys, tmp_path, monkeypatch):
    run = shutil.copytree(cli_run[0], tmp_path / "runs" / "a")
    inside = sorted(p.name for p in run.iterdir())
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["compare", "runs/a"]) == 0
    assert capsys.readouterr().out.strip() == "runs/comparison.md"
    assert sorted(p.name for p in run.iterdir()) == inside
    text = (tmp_path / "runs" / "comparison.md").read_text()
    assert "Best strategy" not in text and "no interval for every run" not in text
    assert "| hybrid_shared_layer |" in text


def test_generate_layout_empty_output_sampling_and_json(cli_run, capsys):
    run = str(cli_run[0])
    capsys.readouterr()
    assert main(["generate", "--run", run, "--task", "python", "Add two numbers."]) == 0
    # the tiny untrained model ends at once: the empty output is said, not a blank line
    assert capsys.readouterr().out.splitlines() == ["### prompt 1 of 1: task python", "(empty output)"]
    argv = ["generate", "--run", run, "--task", "python", "--json", "--do-sample", "--temperature", "0.7"]
    assert main([*argv, "--top-p", "0.9", "Add two numbers.", "Sort a list."]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(o["prompt"], o["task"]) for o in objects] == [("Add two numbers.", "python"), ("Sort a list.", "python")]
    assert all(isinstance(o["output"], str) for o in objects)
    assert main(["generate", "--run", run, "--task", "python", "--temperature", "0", "x"]) == 2
    assert "--temperature = 0.0: must be greater than 0" in capsys.readouterr().err


def test_peft_export_of_a_tiny_base_records_its_name(tmp_path):
    from hybridcl.inference.export import export_peft

    config = load_config(overrides=[*SMALL, "tasks=[python]", "strategy=lora_only"])
    run = run_experiment(config, tmp_path / "run", progress=False)
    out = export_peft(run, "python", tmp_path / "adapter")
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny:t5"


def test_embedded_and_local_bases_have_names_that_work_from_any_folder(tmp_path, monkeypatch):
    from hybridcl.model.loading import base_model_id

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-model").mkdir()
    assert base_model_id("embedded:smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model_id("Salesforce/codet5-small") == "Salesforce/codet5-small"
    assert base_model_id("my-model") == str(tmp_path / "my-model")
