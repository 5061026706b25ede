"""End-to-end runs of the task sequence on a tiny T5 and the bundled corpus (seconds each)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hybridcl.config.experiment import load_config
from hybridcl.continual import run_experiment
from hybridcl.report.markdown import write_report
from hybridcl.strategies.rules import EWC, Replay

SMALL = ["preset=smoke", "data.max_train=16", "data.max_val=4", "eval.max_new_tokens=8", "train.log_every=2"]


def config(*overrides):
    return load_config(overrides=[*SMALL, *overrides])


def read(run_dir, name="results.json"):
    return json.loads((run_dir / name).read_text())


def test_a_run_fills_the_whole_matrix(tmp_path):
    run_dir = run_experiment(config("strategy=hybrid_task_specific"), tmp_path / "run", progress=False)
    results = read(run_dir)
    assert results["rows"] == ["base", "python", "javascript"]
    for metric in ("bleu_codexglue_code_to_text", "bleu_sacre", "exact_match", "syntax_pass"):
        matrix = results["matrix"][metric]
        assert len(matrix) == 3 and all(len(row) == 2 for row in matrix)
        assert all(cell["mean"] is not None for row in matrix for cell in row)
    assert set(results["cl_metrics"]["bleu_codexglue_code_to_text"]) >= {
        "average_final",
        "forgetting_relative",
        "bwt",
        "fwt",
    }
    assert [t["task"] for t in results["train"]] == ["python", "javascript"]
    seed_dir = run_dir / "seed-0"
    assert (run_dir / "config.yaml").is_file()
    for i, task in enumerate(["python", "javascript"], start=1):
        state = load_file(seed_dir / "tasks" / f"{i}-{task}" / "components.safetensors")
        assert any(".python." in k for k in state)
    log = [json.loads(line) for line in (seed_dir / "train_log.jsonl").read_text().splitlines()]
    assert {e["task"] for e in log} == {"python", "javascript"} and all(e["loss"] > 0 for e in log)

    # Per-task parts with a task id: training javascript leaves python's predictions identical.
    def preds(row):
        return (seed_dir / "predictions" / f"row{row}-python.jsonl").read_text()

    assert preds(1) == preds(2)


def test_same_seed_same_numbers(tmp_path):
    a = run_experiment(config("strategy=hybrid_shared_layer"), tmp_path / "a", progress=False)
    b = run_experiment(config("strategy=hybrid_shared_layer"), tmp_path / "b", progress=False)

    def losses(d):
        lines = (d / "seed-0" / "train_log.jsonl").read_text().splitlines()
        return [(e["step"], e["loss"]) for e in map(json.loads, lines)]

    assert losses(a) == losses(b)
    ta = load_file(a / "seed-0" / "tasks" / "2-javascript" / "components.safetensors")
    tb = load_file(b / "seed-0" / "tasks" / "2-javascript" / "components.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert read(a)["matrix"] == read(b)["matrix"]


def interrupted_and_resumed(tmp_path, monkeypatch, overrides):
    """``(uninterrupted, resumed)`` run folders: the same run once straight through and once stopped when
    JavaScript's training starts (after Python's stage was saved), then resumed."""
    uninterrupted = run_experiment(config(*overrides), tmp_path / "full", progress=False)

    import hybridcl.continual as continual

    real_train = continual.train_task

    def crash_on_javascript(*args, task, **kwargs):
        if task == "javascript":
            raise KeyboardInterrupt
        return real_train(*args, task=task, **kwargs)

    monkeypatch.setattr(continual, "train_task", crash_on_javascript)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config(*overrides), tmp_path / "cut", progress=False)
    state = read(tmp_path / "cut" / "seed-0", "state.json")
    assert [t["task"] for t in state["train"]] == ["python"] and not state["finished"]
    monkeypatch.setattr(continual, "train_task", real_train)
    return uninterrupted, run_experiment(config(*overrides), tmp_path / "cut", progress=False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_interrupted_run_resumes_to_the_same_results(tmp_path, monkeypatch, precision):
    """bit-identical in bf16 too (issue 15: the uninterrupted run's second task trained in float32)"""
    overrides = ("strategy=hybrid_shared_layer", f"train.precision={precision}")
    uninterrupted, resumed = interrupted_and_resumed(tmp_path, monkeypatch, overrides)
    assert read(resumed)["matrix"] == read(uninterrupted)["matrix"]
    a = load_file(uninterrupted / "seed-0" / "tasks" / "2-javascript" / "components.safetensors")
    b = load_file(resumed / "seed-0" / "tasks" / "2-javascript" / "components.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_run_reuses_the_cells_an_uninterrupted_one_reuses(tmp_path, monkeypatch):
    """Row 2 keeps Python's row-1 cell (isolated parts: nothing of Python trained since) after a resume
    too, read from the saved row instead of scored again (it was: the same values, the time spent twice)."""
    uninterrupted, resumed = interrupted_and_resumed(tmp_path, monkeypatch, ("strategy=lora_only",))
    for run in (uninterrupted, resumed):
        state = read(run / "seed-0", "state.json")
        assert state["rows"][2]["python"]["reused_from_row"] == 1 and state["rows"][2]["python"]["eval_seconds"] == 0
    assert read(resumed)["matrix"] == read(uninterrupted)["matrix"]
    a, b = (load_file(run / "seed-0" / "stats" / "row2.safetensors") for run in (uninterrupted, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [(run / "seed-0" / "predictions" / "row2-python.jsonl").read_text() for run in (uninterrupted, resumed)]
    assert rows[0] == rows[1]


def test_a_resumed_run_routes_exactly_as_an_uninterrupted_one(tmp_path, monkeypatch):
    """Python's router statistics are loaded from its checkpoint on resume, never recomputed from other data."""
    overrides = ("strategy=hybrid_task_specific",)
    uninterrupted, resumed = interrupted_and_resumed(tmp_path, monkeypatch, overrides)
    for i, task in enumerate(["python", "javascript"], start=1):
        a = load_file(uninterrupted / "seed-0" / "tasks" / f"{i}-{task}" / "router.safetensors")
        b = load_file(resumed / "seed-0" / "tasks" / f"{i}-{task}" / "router.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert {k.split("/")[0] for k in a} == {"feature_ridge", "mahalanobis", "token_ngram"}
    routing = read(resumed)["per_seed"][0]["routing"]
    assert routing == read(uninterrupted)["per_seed"][0]["routing"]
    assert set(routing["methods"]) == {"feature_ridge", "mahalanobis", "token_ngram", "min_prompt_loss"}
    assert routing["intervals"]["loss"]["cl"]["forgetting_relative"] is not None


def test_a_run_with_the_block_inside_the_decoder_resumes_to_the_same_results(tmp_path, monkeypatch):
    at = ("strategy=hybrid_shared_layer", "components.full_layer.position=decoder:1", "data.max_train=8")
    uninterrupted, resumed = interrupted_and_resumed(tmp_path, monkeypatch, at)
    assert read(resumed)["matrix"] == read(uninterrupted)["matrix"]
    assert read(resumed)["params"]["full_layer_position"] == "decoder:1"
    a = load_file(uninterrupted / "seed-0" / "tasks" / "2-javascript" / "components.safetensors")
    b = load_file(resumed / "seed-0" / "tasks" / "2-javascript" / "components.safetensors")
    blocks = [k for k in a if ".full_layers." in k]
    assert blocks and all("decoder.block.1.full_layers.shared." in k for k in blocks)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    write_report(resumed)
    report = (resumed / "report.md").read_text()
    assert "| full layer (each block, at decoder:1) | 49,344 |" in report  # a T5 decoder block: cross-attention too
    assert "the full layer is one extra decoder block, after its block 1." in report


def test_several_seeds_give_mean_and_std(tmp_path):
    results = read(run_experiment(config("strategy=lora_only", "run.seeds=[0,1]"), tmp_path / "run", progress=False))
    assert results["seeds"] == 2 and len(results["per_seed"]) == 2
    loss = results["train"][0]["final_loss"]
    seed_losses = [r["train"][0]["final_loss"] for r in results["per_seed"]]
    assert loss["mean"] == pytest.approx(sum(seed_losses) / 2) and loss["std"] > 0


def test_joint_trains_one_stage_on_every_task(tmp_path):
    results = read(run_experiment(config("strategy=joint"), tmp_path / "run", progress=False))
    assert results["rows"] == ["base", "joint"]
    assert results["per_seed"][0]["train"][0]["n_examples"] == 32  # 16 python + 16 javascript
    assert set(results["cl_metrics"]["bleu_codexglue_code_to_text"]) == {"average_final", "n", "n_skipped"}


def test_replay_mixes_earlier_examples_in():
    cfg = config("strategy=replay", "baselines.replay_ratio=0.2")
    from hybridcl.data.tasks import load_task_data

    data = {t: load_task_data(cfg.data, t) for t in cfg.task_names}
    rule = Replay(cfg, data)
    assert rule.training_examples(["python"], seed=0) == data["python"].train
    mixed = rule.training_examples(["javascript"], seed=0)
    languages = [ex.language for ex in mixed]
    assert languages.count("javascript") == 16 and languages.count("python") == 4  # 4 / 20 = 0.2


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_away_from_it():
    cfg = config("strategy=ewc", "baselines.ewc_lambda=2.0")
    rule = EWC(cfg, {})
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    rule.fisher = {"weight": torch.tensor([[3.0, 0.5]])}
    rule.anchor = {"weight": torch.tensor([[1.0, 2.0]])}
    assert rule.penalty(model).item() == 0.0
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 0.0]]))
    # lambda/2 * (3 * 1^2 + 0.5 * 2^2) = 1 * 5
    assert rule.penalty(model).item() == pytest.approx(5.0)


def test_o_lora_penalty_is_the_overlap_of_the_lora_subspaces():
    from hybridcl.config.experiment import ComponentsConfig, LoraSpec, ModelConfig
    from hybridcl.model.components import ComponentSet
    from hybridcl.model.loading import load_base
    from hybridcl.strategies import STRATEGIES
    from hybridcl.strategies.rules import OLoRA

    cfg = config("strategy=o_lora", "baselines.o_lora_lambda=0.5")
    base = load_base(ModelConfig(name="tiny:t5"))
    components = ComponentSet(
        base.model, base.kind, STRATEGIES["o_lora"], ComponentsConfig(lora=LoraSpec(r=2, alpha=4))
    )
    rule = OLoRA(cfg, {"python": None, "javascript": None})
    rule.current = "python"
    components.activate("python")
    assert rule.penalty(components.model) is None  # nothing earlier to stay orthogonal to
    components.activate("javascript")
    rule.current = "javascript"
    expected = 0.0
    for module in components.model.modules():
        if isinstance(getattr(module, "lora_A", None), torch.nn.ModuleDict) and "javascript" in module.lora_A:
            old, new = module.lora_A["python"].weight, module.lora_A["javascript"].weight
            expected += sum(abs(float(old[i].detach() @ new[j].detach())) for i in range(2) for j in range(2))
    penalty = rule.penalty(components.model)
    assert penalty.item() == pytest.approx(0.5 * expected, rel=1e-5) and penalty.requires_grad


def test_humaneval_runs_on_the_base_and_the_final_model(tmp_path):
    from hybridcl.report.compare import compare_runs
    from hybridcl.report.markdown import write_report

    cfg = config("strategy=lora_only", "eval.humaneval=true", "eval.humaneval_problems=2", "eval.humaneval_samples=1")
    run_dir = run_experiment(cfg, tmp_path / "run", progress=False)
    # carried into the run's results, its report and the comparison (mean and std over seeds)
    assert read(run_dir)["humaneval"]["final"]["pass@1"] == {"mean": 0.0, "std": 0.0}
    assert "## HumanEval" in write_report(run_dir).read_text()
    compare_runs([run_dir], tmp_path / "cmp")
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())[0]["humaneval_pass@1"] == 0.0
    results = read(run_dir / "seed-0")
    for when in ("base", "final"):
        he = results["humaneval"][when]
        assert he["problems"] == 2 and he["pass@1"] == 0.0  # a random tiny model solves nothing
        assert [p["task_id"] for p in he["per_problem"]] == ["HumanEval/0", "HumanEval/1"]
        assert all(len(p["statuses"]) == 1 for p in he["per_problem"])


def test_eval_recomputes_the_matrix_from_the_checkpoints(tmp_path):
    from hybridcl.continual import evaluate_run
    from hybridcl.errors import ConfigError

    run_dir = run_experiment(config("strategy=hybrid_task_specific"), tmp_path / "run", progress=False)
    before = read(run_dir)
    assert read(evaluate_run(run_dir, progress=False))["matrix"] == before["matrix"]  # same checkpoints, same numbers
    after = read(evaluate_run(run_dir, ["eval.max_examples=2"], progress=False))
    assert after["per_seed"][0]["matrix"]["bleu_codexglue_code_to_text"] and all(
        cell["n"] == 2 for row in read(run_dir / "seed-0", "state.json")["rows"] for cell in row.values()
    )
    assert "max_examples: 2" in (run_dir / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="eval.\\* settings only"):
        evaluate_run(run_dir, ["train.lr=1"], progress=False)


def test_resume_drops_the_log_of_the_interrupted_task(tmp_path):
    from hybridcl.records.run_dir import SeedDir

    seed_dir = SeedDir(tmp_path, 0)
    seed_dir.path.mkdir()
    seed_dir.train_log.write_text('{"task": "python", "step": 1}\n{"task": "javascript", "step": 1}\n')
    seed_dir.drop_unfinished_log(["python"])
    assert seed_dir.train_log.read_text() == '{"task": "python", "step": 1}\n'


def test_strategy_all_runs_every_strategy_on_the_same_data_and_compares(tmp_path, capsys):
    from hybridcl.cli import main
    from hybridcl.strategies import ALL_STRATEGIES, STRATEGIES

    assert (
        main(
            [
                "run",
                "--no-progress",
                *SMALL,
                "strategy=all",
                "data.max_train=8",
                "data.max_val=2",
                "eval.max_new_tokens=4",
                f"run.output_dir={tmp_path}",
                "run.name=all",
            ]
        )
        == 0
    )
    run_dir = tmp_path / "all"
    assert capsys.readouterr().out.strip() == str(run_dir)
    assert set(ALL_STRATEGIES) == set(STRATEGIES)
    rows = json.loads((run_dir / "comparison.json").read_text())
    assert [r["strategy"] for r in rows] == list(ALL_STRATEGIES)
    for name in ALL_STRATEGIES:
        sub = read(run_dir / name)
        assert sub["strategy"] == name
        assert sub["per_seed"][0]["data"] == read(run_dir / "lora_only")["per_seed"][0]["data"]  # same examples
    table = (run_dir / "comparison.md").read_text()
    assert all(f"| {name} |" in table for name in ALL_STRATEGIES) and "## Best strategy per column" in table
    replay = read(run_dir / "replay")["per_seed"][0]["train"]
    assert (replay[0]["n_replayed"], replay[0]["replay_share"]) == (0, 0.0)
    assert (replay[1]["n_examples"], replay[1]["n_replayed"], replay[1]["replay_share"]) == (10, 2, 0.2)  # 8 + 2
    o_lora = read(run_dir / "o_lora")["params"]
    assert o_lora["adapters"] == 2 and o_lora["trainable_last_task"] == o_lora["lora_per_adapter"]


def test_the_loss_matrix_falls_on_the_trained_task_beyond_noise(tmp_path):
    results = read(
        run_experiment(
            config("strategy=lora_only", "train.lr=5e-3", "train.epochs=4", "tasks=[python]"),
            tmp_path / "run",
            progress=False,
        )
        / "seed-0"
    )
    loss = results["matrix"]["loss"]
    assert loss[1][0] < loss[0][0]  # nats per target token, after training python < base
    cells = results["intervals"]["loss"]["cell_intervals"]
    assert cells[1][0][1] < cells[0][0][0]  # the whole interval after training lies below the base's
    assert results["intervals"]["loss"]["cells"][1][0] == pytest.approx(loss[1][0], rel=1e-12)
    assert 0 <= results["matrix"]["token_accuracy"][1][0] <= 100


def test_reused_cells_equal_recomputed_ones_and_per_task_parts_lose_exactly_nothing(tmp_path):
    reused = read(
        run_experiment(config("strategy=hybrid_task_specific"), tmp_path / "reused", progress=False) / "seed-0"
    )
    again = read(
        run_experiment(
            config("strategy=hybrid_task_specific", "eval.reuse_unchanged=false"), tmp_path / "again", progress=False
        )
        / "seed-0"
    )
    assert reused["matrix"] == again["matrix"]
    assert reused["intervals"] == again["intervals"]
    state = read(tmp_path / "reused" / "seed-0", "state.json")
    assert (
        state["rows"][2]["python"]["reused_from_row"] == 1 and "reused_from_row" not in state["rows"][2]["javascript"]
    )
    assert "reused_from_row" not in read(tmp_path / "again" / "seed-0", "state.json")["rows"][2]["python"]
    # python's parts never change after its own stage: forgetting is 0 on every bootstrap resample
    assert reused["intervals"]["loss"]["intervals"]["bwt"] == [0.0, 0.0]
    assert reused["cl_metrics"]["loss"]["bwt"] == 0.0


def test_shared_parts_are_evaluated_again(tmp_path):
    run_experiment(config("strategy=hybrid_shared_layer"), tmp_path / "run", progress=False)
    state = read(tmp_path / "run" / "seed-0", "state.json")
    assert all("reused_from_row" not in cell for row in state["rows"] for cell in row.values())


def test_each_task_reports_its_references_syntax_pass_rate(tmp_path):
    from hybridcl.evaluation.syntax import syntax_pass_rate

    results = read(run_experiment(config("strategy=lora_only"), tmp_path / "run", progress=False) / "seed-0")
    from hybridcl.data.tasks import load_task_data

    cfg = config("strategy=lora_only")
    for task in cfg.task_names:
        references = [ex.target for ex in load_task_data(cfg.data, task).val]
        assert results["data"][task]["syntax_ceiling"] == syntax_pass_rate(references, task) == 100.0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_cell_is_generated_under_eval_precision_and_results_say_which(tmp_path, monkeypatch, precision):
    import hybridcl.evaluation.matrix as evaluator

    seen = []
    real_generate = evaluator.generate

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(evaluator, "generate", spy)
    run_dir = run_experiment(
        config("strategy=full_finetune", "data.max_train=8", f"eval.precision={precision}"),
        tmp_path / "run",
        progress=False,
    )
    assert seen == [precision == "bf16"] * 6  # 3 rows x 2 tasks
    results = read(run_dir)
    assert results["eval_precision"] == results["per_seed"][0]["eval_precision"] == precision
    # issue 11 #5: every cell says which share of its generations eval.max_new_tokens cut
    cut = results["per_seed"][0]["matrix"]["cut_share"]
    for i in range(3):
        for j, task in enumerate(("python", "javascript")):
            flags = [
                json.loads(line)["hit_limit"]
                for line in (run_dir / "seed-0" / "predictions" / f"row{i}-{task}.jsonl").read_text().splitlines()
            ]
            assert len(flags) == 4 and cut[i][j] == 100 * sum(flags) / 4
    assert "cut_share" not in results["cl_metrics"]


def test_long_targets_are_dropped_from_training_and_the_matrix_and_counted(tmp_path):
    from hybridcl.data.batching import target_lengths
    from hybridcl.data.tasks import Example
    from hybridcl.model.loading import load_base

    run_dir = run_experiment(
        config("strategy=lora_only", "data.max_train=8", "data.long_targets=drop", "data.max_target_len=150"),
        tmp_path / "run",
        progress=False,
    )
    seed = read(run_dir)["per_seed"][0]
    tokenizer = load_base(load_config(overrides=["preset=smoke"]).model).tokenizer
    for task in ("python", "javascript"):
        report = seed["data"][task]
        assert report["long_targets"] == {"mode": "drop", "max_target_len": 150}
        assert (
            report["valid"]["kept"] == 4 and report["valid"]["long_targets"] >= 1
        )  # the bundled corpus has long functions
        assert report["valid"]["long_targets_checked"] == 4 + report["valid"]["long_targets"]
        references = [
            json.loads(line)["reference"]
            for line in (run_dir / "seed-0" / "predictions" / f"row2-{task}.jsonl").read_text().splitlines()
        ]
        lengths = target_lengths([Example("x", task, "text-to-code", "", r) for r in references], tokenizer, "seq2seq")
        assert len(lengths) == 4 and max(lengths) <= 150
    assert [t["n_truncated_target"] for t in seed["train"]] == [0, 0]


def test_eval_scores_other_data_into_a_new_folder_and_leaves_the_run_alone(tmp_path, capsys):
    from hybridcl.cli import main
    from hybridcl.data.readers import bundled_dir
    from hybridcl.data.records import read_records, write_records

    run_dir = run_experiment(config("strategy=lora_only"), tmp_path / "run", progress=False)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    data = tmp_path / "held-out"
    data.mkdir()
    for language in ("python", "javascript"):  # 6 functions per language from the bundled test split
        write_records(
            read_records(bundled_dir() / f"{language}.test.jsonl.gz")[:6], data / f"{language}.valid.jsonl.gz"
        )
    assert main(["eval", str(run_dir), "--data", str(data), "--no-progress"]) == 2
    assert "--data needs --out" in capsys.readouterr().err
    out = tmp_path / "scored"
    assert main(["eval", str(run_dir), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # the run is untouched
    scored = read(out)
    assert [cell["n"] for cell in read(out / "seed-0", "state.json")["rows"][2].values()] == [6, 6]
    assert len(scored["matrix"]["loss"]) == 3 and (out / "report.md").is_file()
    assert scored["per_seed"][0]["train"] == read(run_dir)["per_seed"][0]["train"]  # training records kept
    ids = [
        json.loads(line)["id"]
        for line in (out / "seed-0" / "predictions" / "row1-python.jsonl").read_text().splitlines()
    ]
    assert len(ids) == 6 and all(i.startswith("python/") for i in ids)
    assert main(["eval", str(run_dir), "--data", str(data), "--out", str(out), "--no-progress"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


@pytest.mark.parametrize("subset", ["per_seed", "fixed"])
def test_each_seed_draws_its_own_training_subset_and_every_seed_the_same_eval_set(tmp_path, subset):
    """issue 23: data.train_subset = per_seed makes seeds replicates over training data; evaluation stays paired."""
    from hybridcl.continual import ContinualRecipe
    from hybridcl.records.results import SeedState
    from hybridcl.records.run_dir import SeedDir

    cfg = config(f"data.train_subset={subset}", "data.max_train=8", "data.max_val=6")
    ids = {}
    for seed in (0, 1):
        recipe = ContinualRecipe(cfg, SeedDir(tmp_path, seed), progress=False)
        recipe.setup(SeedState())
        ids[seed] = {t: ([e.id for e in d.train], [e.id for e in d.val]) for t, d in recipe.data.items()}
    for task in cfg.task_names:
        (train0, val0), (train1, val1) = ids[0][task], ids[1][task]
        assert len(train0) == len(train1) == 8 and len(val0) == 6
        assert val0 == val1  # the same evaluation examples, in the same order
        assert (set(train0) != set(train1)) == (subset == "per_seed")


def test_row_0_from_base_cells_equals_the_computed_one_across_strategies(tmp_path):
    cells = f"eval.base_cells={tmp_path / 'base-cells'}"
    run_experiment(config("strategy=lora_only", cells), tmp_path / "first", progress=False)
    assert len(list((tmp_path / "base-cells").glob("*.json"))) == 2  # one cell per task
    shared = run_experiment(config("strategy=hybrid_task_specific", cells), tmp_path / "shared", progress=False)
    alone = run_experiment(config("strategy=hybrid_task_specific"), tmp_path / "alone", progress=False)
    state = read(shared / "seed-0", "state.json")
    assert all(cell["base_cells"] and cell["eval_seconds"] == 0.0 for cell in state["rows"][0].values())
    assert not any("base_cells" in cell for row in state["rows"][1:] for cell in row.values())
    assert not any("base_cells" in cell for cell in read(alone / "seed-0", "state.json")["rows"][0].values())
    for metric, rows in read(alone / "seed-0")["matrix"].items():
        assert read(shared / "seed-0")["matrix"][metric] == rows, metric
    # the evaluation's time counts the cells computed: row 0 came from base-cells, row 2 reused Python's
    shared_time, alone_time = (read(r / "seed-0")["evaluation"] for r in (shared, alone))
    assert (shared_time["cells"], alone_time["cells"]) == (3, 5)
    assert alone_time["generated"] == 5 * 4 and alone_time["loss_scored"] == 5 * 4  # 4 functions per cell
    assert shared_time["generate_seconds"] > 0 and shared_time["routing_seconds"] > 0
    # the wall time holds them all, training too, and the report splits it
    parts = ("train_seconds", "generate_seconds", "loss_seconds", "routing_seconds")
    assert shared_time["train_seconds"] == sum(t["seconds"] for t in read(shared / "seed-0")["train"]) > 0
    assert shared_time["wall_seconds"] > sum(shared_time[k] for k in parts)
    assert read(shared / "seed-0", "state.json")["wall_seconds"] >= shared_time["wall_seconds"]
    from hybridcl.report.markdown import write_report

    assert "Wall time per seed: " in write_report(shared).read_text()
    row0 = "stats/row0.safetensors"
    assert (shared / "seed-0" / row0).read_bytes() == (alone / "seed-0" / row0).read_bytes()
    for task in ("python", "javascript"):
        name = f"predictions/row0-{task}.jsonl"
        assert (shared / "seed-0" / name).read_text() == (alone / "seed-0" / name).read_text()
    # more loss-scored functions with the same generated ones: another row 0, not the stored one
    more = run_experiment(
        config("strategy=lora_only", "data.max_val=6", "eval.max_examples=4", cells), tmp_path / "more", progress=False
    )
    row0 = read(more / "seed-0", "state.json")["rows"][0]
    assert all("base_cells" not in cell and cell["n_loss"] == 6 for cell in row0.values())


def test_routed_rows_compute_the_frozen_base_features_of_the_evaluation_prompts_once(tmp_path, monkeypatch):
    from hybridcl.inference import routing

    sizes = []
    features = routing.base_features

    def counted(components, tokenizer, kind, token_ids, batch_size):
        sizes.append(len(token_ids))
        return features(components, tokenizer, kind, token_ids, batch_size)

    monkeypatch.setattr(routing, "base_features", counted)
    run_experiment(
        config("strategy=hybrid_task_specific", "tasks=[python,javascript,go]"), tmp_path / "run", progress=False
    )
    # the 16 training prompts of each task once (the router's fit), the 4 evaluation prompts of each
    # task once, though rows 2 and 3 are both routed
    state = read(tmp_path / "run" / "seed-0", "state.json")
    assert sorted(state["routed"]) == ["2", "3"]
    assert sorted(sizes) == [4, 4, 4, 16, 16, 16]
