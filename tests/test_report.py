"""Run reports (report.md + PNG plots), the cross-run comparison and routing accuracy."""

import json
import struct

import pytest
import torch

from hybridcl.config.experiment import RoutingConfig, load_config
from hybridcl.continual import run_experiment
from hybridcl.inference.routing import MinPromptLoss, Prompts, routing_accuracy
from hybridcl.report.compare import compare_runs
from hybridcl.report.markdown import write_report
from hybridcl.training.loop import cpu_has_native_bf16

SMALL = ["preset=smoke", "data.max_train=16", "data.max_val=4", "eval.max_new_tokens=8"]


def png_size(path):
    """(width, height) of a PNG, after checking its signature and IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def two_seed_run(tmp_path_factory):
    config = load_config(overrides=[*SMALL, "strategy=hybrid_task_specific", "run.seeds=[0,1]"])
    run_dir = run_experiment(config, tmp_path_factory.mktemp("report") / "run", progress=False)
    write_report(run_dir)
    return run_dir


def test_report_has_every_section_and_readable_plots(two_seed_run):
    report = (two_seed_run / "report.md").read_text()
    results = json.loads((two_seed_run / "results.json").read_text())
    for heading in (
        "## Architecture and parameters",
        "## Results per task",
        "## Matrices",
        "### bleu_codexglue_code_to_text",
        "## Continual-learning metrics",
        "## Task-agnostic inference (routing)",
        "## Training and validation loss",
        "## Efficiency",
    ):
        assert heading in report
    p = results["params"]
    assert f"| LoRA adapter (each) | {p['lora_per_adapter']:,} |" in report
    assert f"| full layer (each block, at encoder:2) | {p['full_layer_per_block']:,} |" in report
    assert "the full layer is one extra encoder block, after its last block." in report
    assert f"({p['adapters']} adapters, {p['blocks']} blocks) | {p['stored_total']:,} |" in report
    assert "- seeds: 2 (numbers are mean ± standard deviation over seeds)" in report
    # the BLEU matrix table: one line per row, mean ± std in every cell
    cell = results["matrix"]["bleu_codexglue_code_to_text"][2][1]
    assert "| after javascript | " in report and f"{cell['mean']:,.2f} ± {cell['std']:,.2f} |" in report
    t = results["train"][0]
    assert f"| python | {t['seconds']['mean']:,.2f} ± {t['seconds']['std']:,.2f} |" in report
    assert "4.38%" in report  # the explanation of where per-task forgetting must come from
    # issue 11 #3, #4, #5: the precision, the long targets and the cut generations are stated
    assert "- evaluation: every cell in fp32; at most 8 new tokens, a generated function stopping at its end" in report
    # issue 15: train.precision auto resolves per machine; what training ran in is recorded and stated
    trained_in = "bf16" if cpu_has_native_bf16() else "fp32"
    assert [t["precision"] for s in results["per_seed"] for t in s["train"]] == [trained_in] * 4
    assert f"- training: 1.0 epochs, batch 8, lr 0.001, {trained_in}\n" in report
    data = results["per_seed"][0]["data"]
    long = ", ".join(
        f"{t} {data[t]['train']['long_targets']}/{data[t]['valid']['long_targets']}" for t in ("python", "javascript")
    )
    assert (
        f"- targets longer than 64 tokens (train/validation, among the examples looked at): {long}; cut (no end "
        "token) in training" in report
    )
    assert "### cut_share: generations cut by eval.max_new_tokens" in report and "](matrix-cut_share.png)" in report
    for name in ("matrix-bleu_codexglue_code_to_text.png", "matrix-syntax_pass.png", "loss.png", "efficiency.png"):
        assert f"]({name})" in report
        width, height = png_size(two_seed_run / name)
        assert 300 <= width <= 2000 and 200 <= height <= 2000, (name, width, height)


def test_routing_results_are_stored_and_consistent(two_seed_run):
    results = json.loads((two_seed_run / "results.json").read_text())
    for seed, per_seed in enumerate(results["per_seed"]):
        routing = per_seed["routing"]
        routed = [
            json.loads(line)
            for task in ("python", "javascript")
            for line in (two_seed_run / f"seed-{seed}" / "predictions" / f"routed-row2-{task}.jsonl")
            .read_text()
            .splitlines()
        ]
        truth = [r["id"].split("/")[0] for r in routed]  # example ids start with the language
        correct = sum(t == r["routed_to"] for t, r in zip(truth, routed, strict=True))
        assert routing["n"] == len(routed) == 8
        assert 0 <= routing["accuracy"] <= 100 and routing["accuracy"] == pytest.approx(100 * correct / 8)
        assert sum(routing["confusion"][t][t] for t in ("python", "javascript")) == correct
        assert set(routing["matrix_last_row"]) >= {"bleu_codexglue_code_to_text", "syntax_pass"}
        assert len(routing["matrix_last_row"]["bleu_codexglue_code_to_text"]) == 2
    accuracies = [r["routing"]["accuracy"] for r in results["per_seed"]]
    assert results["routing"]["accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)


def test_routing_picks_the_lowest_loss_and_counts_by_hand():
    tasks = ["python", "javascript"]
    losses = [[1.0, 2.0], [3.0, 0.5], [0.7, 0.7], [2.0, 1.9], [0.1, 4.0]]  # a tie goes to the earlier task
    prompts = Prompts([str(k) for k in range(len(losses))], components=None, tokenizer=None, kind="causal")
    prompts._losses[tuple(tasks)] = torch.tensor(losses)
    chosen = MinPromptLoss(RoutingConfig()).choose(prompts, tasks)
    assert chosen == ["python", "javascript", "python", "javascript", "python"]
    truth = ["python", "python", "javascript", "javascript", "python"]
    assert routing_accuracy(truth, chosen) == 60.0  # prompts 0, 3 and 4 are right: 3 of 5
    assert routing_accuracy([], []) is None


def _fake_run(path, strategy, python, javascript, forgetting, params, seconds, syntax):
    path.mkdir(parents=True)
    m = lambda v: {"mean": v, "std": 0.0}  # noqa: E731
    results = {
        "strategy": strategy,
        "tasks": ["python", "javascript"],
        "rows": ["base", "python", "javascript"],
        "seeds": 1,
        "matrix": {
            "bleu_codexglue_code_to_text": [[m(1.0), m(1.0)], [m(python + 1), m(2.0)], [m(python), m(javascript)]],
            "syntax_pass": [[m(0.0), m(0.0)], [m(syntax), m(0.0)], [m(syntax), m(syntax / 2)]],
        },
        "cl_metrics": {
            "bleu_codexglue_code_to_text": {
                "average_final": m((python + javascript) / 2),
                "forgetting_relative": m(forgetting),
                "bwt": m(-1.0),
                "fwt": m(1.0),
            }
        },
        "train": [
            {"task": "python", "seconds": m(seconds / 2), "trainable_params": m(params)},
            {"task": "javascript", "seconds": m(seconds / 2), "trainable_params": m(params)},
        ],
        "routing": None,
    }
    (path / "results.json").write_text(json.dumps(results))
    return path


def test_compare_writes_the_seed_table_and_names_the_best(tmp_path):
    a = _fake_run(tmp_path / "a", "lora_only", 20.0, 10.0, 0.0, 1000, 30.0, 50.0)
    b = _fake_run(tmp_path / "b", "hybrid_shared_layer", 25.0, 12.0, 4.0, 5000, 60.0, 80.0)
    md = compare_runs([a, b], tmp_path / "out").read_text()
    assert (
        "| strategy | Python BLEU after its training | JavaScript BLEU after its training | Python BLEU after the "
        "last task | JavaScript BLEU after the last task | average BLEU | forgetting (%) | trainable params | "
        "training time (s) |"
    ) in md
    # the seed's column: python right after its own training (row 1), then after the last task (row 2)
    assert "| lora_only | 21.00 | 10.00 | 20.00 | 10.00 | 15.00 | 0.00 | 1,000 | 30.00 |" in md
    assert "| hybrid_shared_layer | 26.00 | 12.00 | 25.00 | 12.00 | 18.50 | 4.00 | 5,000 | 60.00 |" in md
    assert "- Python BLEU after the last task: **hybrid_shared_layer** (25.00, higher is better)" in md
    assert "- forgetting (%): **lora_only** (0.00, lower is better)" in md
    assert "- trainable params: **lora_only** (1,000, lower is better)" in md
    assert "- Python syntax pass (%): **hybrid_shared_layer** (80.00, higher is better)" in md
    assert "- BWT: tie (-1.00 for all)" in md
    rows = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert [r["javascript_syntax_pass"] for r in rows] == [25.0, 40.0]
    width, height = png_size(tmp_path / "out" / "comparison.png")
    assert width >= 800 and height >= 600


def test_three_tasks_give_a_whole_matrix_under_routing(tmp_path):
    from dataclasses import replace

    from hybridcl.data.readers import bundled_dir
    from hybridcl.data.records import read_records, write_records

    data = tmp_path / "data"
    for split in ("train", "valid"):
        for language in ("python", "javascript"):
            write_records(
                read_records(bundled_dir() / f"{language}.{split}.jsonl.gz")[:40], data / f"{language}.{split}.jsonl.gz"
            )
        go = [replace(r, language="go") for r in read_records(bundled_dir() / f"python.{split}.jsonl.gz")[40:80]]
        write_records(go, data / f"go.{split}.jsonl.gz")
    cfg = load_config(
        overrides=[
            "preset=smoke",
            "strategy=hybrid_task_specific",
            "tasks=[python,javascript,go]",
            "data.source=jsonl",
            f"data.path={data}",
            "data.max_train=8",
            "data.max_val=4",
            "eval.max_new_tokens=4",
        ]
    )
    run_dir = run_experiment(cfg, tmp_path / "run", progress=False)
    write_report(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    routing, with_id = results["routing"], results["matrix"]["bleu_codexglue_code_to_text"]
    routed = routing["matrix"]["bleu_codexglue_code_to_text"]
    assert len(routed) == 4 and routed[:2] == with_id[:2]  # base and one task's parts: nothing to choose
    assert set(routing["accuracy_per_row"]) == {"2", "3"} and routing["tasks"] == ["python", "javascript", "go"]
    assert routing["matrix_last_row"]["bleu_codexglue_code_to_text"] == routed[-1]
    assert set(routing["cl_metrics"]["bleu_codexglue_code_to_text"]) >= {"forgetting_relative", "bwt", "fwt"}
    report = (tmp_path / "run" / "report.md").read_text()
    assert (
        "The bleu_codexglue_code_to_text matrix under routing:" in report
        and "Under routing: average after last task" in report
    )
    # one seed: the findings, every cell's interval, and forward transfer read as zero-shot transfer
    assert "## What this run shows" in report and "- python: its own training changed the loss by" in report
    assert "## Zero-shot transfer to languages not trained yet" in report
    assert "- javascript after python, before its own training: FWT" in report and "- go after javascript" in report


def test_run_summary_prints_the_headline_numbers(tmp_path):
    from hybridcl.report.summary import run_summary

    cell = lambda v: {"mean": v, "std": 0.0}  # noqa: E731
    results = {
        "tasks": ["python", "javascript"],
        "rows": ["base", "python", "javascript"],
        "matrix": {
            "bleu_codexglue_code_to_text": [[cell(1.0), cell(2.0)], [cell(10.0), cell(3.0)], [cell(8.0), cell(12.5)]],
            "syntax_pass": [[cell(0.0), cell(0.0)], [cell(50.0), cell(0.0)], [cell(40.0), cell(75.0)]],
        },
        "cl_metrics": {
            "bleu_codexglue_code_to_text": {
                "average_final": cell(10.25),
                "forgetting_relative": cell(20.0),
                "bwt": cell(-2.0),
                "fwt": cell(1.0),
            }
        },
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    # no config.yaml: the direction is unknown, so the headline BLEU and the code metrics it has
    assert run_summary(tmp_path).splitlines() == [
        "metric             task            base  after its task  at the end",
        "BLEU code-to-text  python          1.00           10.00        8.00",
        "BLEU code-to-text  javascript      2.00           12.50       12.50",
        "syntax %           python          0.00           50.00       40.00",
        "syntax %           javascript      0.00           75.00       75.00",
        "BLEU code-to-text: average at the end 10.25; forgetting (relative) 20.00%; BWT -2.00; FWT +1.00",
        f"report: {tmp_path / 'report.md'}",
    ]


def test_report_says_how_many_tasks_a_cl_mean_skipped(tmp_path):
    from hybridcl.report.markdown import write_report
    from hybridcl.stats.cl_metrics import cl_metrics
    from hybridcl.stats.seeds import mean_std_nested

    # task 2 scored 0 after its own training (no relative forgetting); task 3 was not evaluated before it
    matrix = [[1.0, 2.0, 3.0], [10.0, 4.0, None], [8.0, 0.0, None], [6.0, 1.0, 9.0]]
    results = {
        "strategy": "lora_only",
        "tasks": ["a", "b", "c"],
        "rows": ["base", "a", "b", "c"],
        "seeds": 1,
        "params": {
            "base": 100,
            "lora_per_adapter": 1,
            "full_layer_per_block": 0,
            "adapters": 3,
            "blocks": 0,
            "stored_total": 3,
            "trainable_last_task": 1,
        },
        "matrix": {"bleu_sacre": mean_std_nested([matrix])},
        "cl_metrics": {"bleu_sacre": mean_std_nested([cl_metrics(matrix)])},
        "train": [],
        "routing": None,
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    report = write_report(tmp_path).read_text()
    assert "| bleu_sacre | 5.33 | 40.00 | 1.50 | -1.50 | 2.00 |" in report
    assert (
        "tasks left out as undefined (zero denominator or a cell not evaluated): bleu_sacre forgetting "
        "(relative, %): 1 of 2 tasks; bleu_sacre FWT: 1 of 2 tasks."
    ) in report


def test_a_format_1_run_still_renders_and_cannot_be_resumed(tmp_path, capsys):
    from hybridcl.cli import main
    from hybridcl.report.summary import run_summary

    m = lambda v: {"mean": v, "std": 0.0}  # noqa: E731
    old = {
        "format": 1,
        "strategy": "lora_only",
        "tasks": ["python", "javascript"],
        "rows": ["base", "python", "javascript"],
        "seeds": 1,
        "matrix": {"bleu_codexglue": [[m(1.0), m(1.0)], [m(9.0), m(2.0)], [m(8.0), m(7.0)]]},
        "cl_metrics": {
            "bleu_codexglue": {
                "average_final": m(7.5),
                "forgetting_relative": m(100 / 9),
                "bwt": m(-1.0),
                "fwt": m(1.0),
            }
        },
        "params": {
            "base": 100,
            "lora_per_adapter": 1,
            "full_layer_per_block": 0,
            "adapters": 2,
            "blocks": 0,
            "stored_total": 2,
            "trainable_last_task": 1,
        },
        "train": [],
        "routing": None,
    }
    (tmp_path / "results.json").write_text(json.dumps(old))
    assert "BLEU code-to-text  python          1.00            9.00        8.00" in run_summary(tmp_path)
    assert "| python | 9.00 | 8.00 |" in write_report(tmp_path).read_text()
    (tmp_path / "seed-0").mkdir()
    (tmp_path / "seed-0" / "state.json").write_text(json.dumps({"format": 1, "rows": [], "train": []}))
    (tmp_path / "config.yaml").write_text("preset: smoke\n")
    assert main(["run", "--resume", str(tmp_path), "--no-progress"]) == 2
    assert "in format 1; this hybridcl" in capsys.readouterr().err


def test_compare_says_when_the_best_is_within_noise(tmp_path):
    def run(name, average, interval, forgetting, forgetting_interval):
        path = _fake_run(tmp_path / name, name, average, average, forgetting, 1000, 10.0, 50.0)
        results = json.loads((path / "results.json").read_text())
        results["per_seed"] = [
            {
                "intervals": {
                    "bleu_codexglue_code_to_text": {
                        "intervals": {"average_final": interval, "forgetting_relative": forgetting_interval}
                    }
                },
                "cl_metrics": {},
            }
        ]
        (path / "results.json").write_text(json.dumps(results))
        return path

    a = run("lora_only", 20.0, [18.0, 22.0], 5.0, [4.0, 6.0])
    b = run("hybrid_shared_layer", 21.0, [19.5, 22.5], 1.0, [0.5, 1.5])
    md = compare_runs([a, b], tmp_path / "out").read_text()
    assert (
        "- average BLEU: **hybrid_shared_layer** (21.00, higher is better); within noise of lora_only "
        "(their 95% intervals overlap)"
    ) in md
    assert (
        "- forgetting (%): **hybrid_shared_layer** (1.00, lower is better); beyond noise (no other run's 95% "
        "interval overlaps)"
    ) in md
    assert "| hybrid_shared_layer | 22.00 | 21.00 | 21.00 | 21.00 | 21.00 [19.50, 22.50] | 1.00 [0.50, 1.50] |" in md


def test_compare_pairs_runs_seed_by_seed(tmp_path):
    """What a seed does to both runs cancels in the paired difference: B beats A by exactly 1.0 on each
    of three seeds, beyond noise, though the t intervals of their means overlap widely."""

    def run(name, averages):
        mean = sum(averages) / len(averages)
        path = _fake_run(tmp_path / name, name, mean, mean, 0.0, 1000, 10.0, 50.0)
        for seed, average in enumerate(averages):
            (path / f"seed-{seed}").mkdir()
            (path / f"seed-{seed}" / "results.json").write_text(
                json.dumps({"cl_metrics": {"bleu_codexglue_code_to_text": {"average_final": average}}})
            )
        return path

    a = run("lora_only", [10.0, 20.0, 30.0])
    b = run("hybrid_task_specific", [11.0, 21.0, 31.0])
    c = run("o_lora", [10.5, 19.0, 31.0])
    md = compare_runs([a, b, c], tmp_path / "out").read_text()
    assert (
        "- average BLEU: hybrid_task_specific - lora_only = +1.00 (95% t interval over 3 seeds [+1.00, +1.00]): "
        "beyond noise"
    ) in md
    # differences 0.5, 2.0, 0.0: mean 0.833, sd 1.0408, t(2) = 4.303, half-width 4.303 * 1.0408 / sqrt(3) = 2.586
    assert (
        "- average BLEU: hybrid_task_specific - o_lora = +0.83 (95% t interval over 3 seeds [-1.75, +3.42]): "
        "within noise (the interval contains 0)"
    ) in md
    rows = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert [p["vs"] for p in rows[1]["paired"]["average_bleu"]] == ["lora_only", "o_lora"]


def test_paired_by_seed_uses_common_seeds_only_and_the_t_quantile():
    from hybridcl.report.compare import paired_by_seed

    best = {"strategy": "b", "per_seed": {"seed-0": {"x": 3.0}, "seed-1": {"x": 5.0}, "seed-7": {"x": 9.0}}}
    other = {"strategy": "a", "per_seed": {"seed-0": {"x": 1.0}, "seed-1": {"x": 2.0}}}
    paired = paired_by_seed(best, other, "x")
    # differences 2 and 3: mean 2.5, sd 0.7071, t(1) = 12.706, half-width 12.706 * 0.7071 / sqrt(2) = 6.353
    assert paired["seeds"] == 2 and paired["difference"] == 2.5
    assert paired["interval"] == pytest.approx([2.5 - 6.353, 2.5 + 6.353], abs=1e-3)
    assert paired_by_seed(best, {"strategy": "c", "per_seed": {"seed-0": {"x": 1.0}}}, "x") is None


def test_routing_can_be_switched_off_and_the_task_id_matrix_stays_the_same(two_seed_run, tmp_path):
    config = load_config(overrides=[*SMALL, "strategy=hybrid_task_specific", "run.seeds=[0,1]", "eval.routing=false"])
    run_dir = run_experiment(config, tmp_path / "run", progress=False)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["routing"] is None and all(s["routing"] is None for s in results["per_seed"])
    assert not list((run_dir / "seed-0" / "predictions").glob("routed-*"))
    assert results["matrix"] == json.loads((two_seed_run / "results.json").read_text())["matrix"]
    assert "## Task-agnostic inference (routing)" not in write_report(run_dir).read_text()
    assert "## Task-agnostic inference (routing)" in write_report(two_seed_run).read_text()


def test_routing_with_three_tasks_and_no_forward_transfer_scores_the_trained_tasks_only(tmp_path):
    config = load_config(
        overrides=[
            *SMALL,
            "strategy=lora_only",
            "tasks=[python,javascript,go]",
            "data.max_train=4",
            "data.max_val=2",
            "eval.forward_transfer=false",
        ]
    )
    results = json.loads((run_experiment(config, tmp_path / "run", progress=False) / "results.json").read_text())
    routing = results["per_seed"][0]["routing"]
    assert routing["n"] == 6  # 2 prompts of each of the 3 tasks in the last row
    rows = routing["matrix"]["bleu_codexglue_code_to_text"]
    assert rows[1][2] is None and rows[2][2] is None and rows[3][2] is not None  # go is scored from its own row on


def test_compare_of_one_run_says_so_instead_of_reading_intervals_against_others(tmp_path):
    a = _fake_run(tmp_path / "a", "lora_only", 20.0, 10.0, 0.0, 1000, 30.0, 50.0)
    md = compare_runs([a], tmp_path / "out").read_text()
    assert "One run: add others to `hybridcl compare`" in md
    assert "overlaps another run's" not in md and "## Best strategy per column" not in md
    two = compare_runs(
        [a, _fake_run(tmp_path / "b", "hybrid_shared_layer", 25.0, 12.0, 4.0, 5000, 60.0, 80.0)], tmp_path
    )
    assert "overlaps another run's is within noise of it" in two.read_text()
