"""scripts/study_at_scale.py and scripts/cost_model.py (issue 23): the plan meets the study's scale, parts
resume and copy their small outputs, and the cost model predicts from units by hand."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from hybridcl.config.experiment import load_config
from hybridcl.records.run_dir import write_run_config

ROOT = Path(__file__).resolve().parents[1]
HYBRID = "hybrid_task_specific"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


sas = _load("study_at_scale")
cost = _load("cost_model")


@pytest.fixture(scope="module")
def cpu_plan():
    return sas.plan("cpu")


def test_the_plan_is_at_the_studys_scale(cpu_plan):
    reported = [p for p in cpu_plan if p.kind == "run" and not p.folder.startswith("lr-")]
    assert {p.folder for p in reported} >= {
        "main/lora_only",
        "main/full_layer_only",
        "main/hybrid_task_specific",
        "main/hybrid_shared_layer",
        "main/lora_matched",
        "main/full_finetune",
        "rank/r=4",
        "rank/r=16",
        "rank/r=64",
        "position/decoder-15",
        "third-language/hybrid_task_specific",
    }
    for part in reported:
        (config,) = cost.part_configs(part)
        assert config.model.name == "embedded:smollm2-135m-instruct" and config.data.source == "bundled"
        assert config.data.max_train >= 512 and config.train.epochs >= 2, part.folder
        assert config.eval.max_examples >= 100 and config.data.max_val >= 256, part.folder
        seeds = [0, 1, 2] if part.folder.startswith("main/") else [0]  # the open questions: one seed on a CPU
        assert config.run.seeds == seeds and config.data.train_subset == "per_seed", part.folder
        assert config.data.direction == "completion" and config.eval.split == "valid", part.folder
        assert config.task_names[:2] == ["python", "javascript"] and part.lr_from is not None
    (matched,) = cost.part_configs(next(p for p in cpu_plan if p.folder == "main/lora_matched"))
    assert (matched.strategy, matched.components.lora.r, matched.components.lora.alpha) == ("lora_only", 69, 138)
    grids = {p.folder: cost.part_configs(p) for p in cpu_plan if p.folder in sas.GRIDS}
    assert sorted(c.train.lr for c in grids["lr-full"]) == [1e-5, 3e-5, 1e-4]
    assert len(grids["lr-adapters"]) == 9 and all(c.eval.split == "test" for g in grids.values() for c in g)
    # the grids train the first task alone; the shared-layer hybrid runs at the task-specific one's rate
    assert all(c.task_names == ["python"] and not c.eval.routing for g in grids.values() for c in g)
    # one precision on every machine: where the CPU has native bf16, "auto" would train in bf16
    every = [c for p in cpu_plan if p.kind == "run" for c in cost.part_configs(p)]
    assert {c.train.precision for c in every} == {"fp32"}
    shared = next(p for p in cpu_plan if p.folder == "main/hybrid_shared_layer")
    assert shared.lr_from == ("lr-adapters", "hybrid_task_specific")


def test_the_open_questions_take_other_seeds_on_request():
    parts = {p.folder: p for p in sas.plan("cpu", open_question_seeds=[0, 1, 2])}
    (position,) = cost.part_configs(parts["position/decoder-15"])
    (hybrid,) = cost.part_configs(parts["main/hybrid_task_specific"])
    assert position.run.seeds == [0, 1, 2] and hybrid.run.seeds == [0, 1, 2]
    assert position.components.full_layer.position == "decoder:15"


def test_more_seeds_run_mains_strategies_within_noise_again_seed_by_seed():
    parts = {p.folder: p for p in sas.plan("cpu", more_seeds=[3, 4])}
    more = [f for f in parts if f.startswith("more-seeds/")]
    assert more == [f"more-seeds/seed-{s}/{name}" for s in (3, 4) for name in sas.MORE_SEEDS]
    for folder in more:
        main = parts["main/" + folder.rsplit("/", 1)[1]]
        seed = folder.split("/")[1].removeprefix("seed-")
        assert parts[folder].overrides == [*main.overrides, f"run.seeds=[{seed}]"]
        assert parts[folder].lr_from == main.lr_from
    assert not [f for f in {p.folder for p in sas.plan("cpu")} if f.startswith("more-seeds/")]


def test_a_part_starts_resumes_and_is_skipped_when_finished(tmp_path, cpu_plan):
    part = next(p for p in cpu_plan if p.folder == "main/hybrid_task_specific")
    with pytest.raises(SystemExit, match="chosen_lr.json is missing"):
        sas.command(part, tmp_path)
    (tmp_path / "chosen" / "lr-adapters").mkdir(parents=True)
    (tmp_path / "chosen" / "lr-adapters" / "chosen_lr.json").write_text(
        json.dumps({"hybrid_task_specific": {"lr": 3e-3}})
    )
    cmd = sas.command(part, tmp_path)
    assert (
        "train.lr=0.003" in cmd
        and f"run.output_dir={tmp_path / 'main'}" in cmd
        and "run.name=hybrid_task_specific" in cmd
    )
    folder = tmp_path / "main" / "hybrid_task_specific"
    folder.mkdir(parents=True)
    assert sas.command(part, tmp_path)[-2:] == ["--resume", str(folder)] and not sas.finished(folder)
    (folder / "results.json").write_text(json.dumps({"matrix": {}}))
    assert sas.finished(folder)


def test_only_small_outputs_are_copied(tmp_path):
    run = tmp_path / "run"
    for name in [
        "config.yaml",
        "results.json",
        "report.md",
        "loss.png",
        "seed-0/results.json",
        "seed-0/train_log.jsonl",
        "seed-0/stats/row0.safetensors",
        "seed-0/tasks/1-python/components.safetensors",
        "seed-0/tasks/1-python/state.json",
        "seed-0/predictions/row1-python.jsonl",
        "cache/encoded-causal-x.npz",
    ]:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    assert sas.copy_small(run, tmp_path / "docs") == 7
    copied = sorted(str(p.relative_to(tmp_path / "docs")) for p in (tmp_path / "docs").rglob("*") if p.is_file())
    assert copied == [
        "config.yaml",
        "loss.png",
        "report.md",
        "results.json",
        "seed-0/results.json",
        "seed-0/stats/row0.safetensors",
        "seed-0/train_log.jsonl",
    ]


# ---- the cost model -------------------------------------------------------------------------------


def test_computed_cells_leave_out_the_reused_ones():
    cfg = lambda *o: load_config("study", list(o))  # noqa: E731
    assert cost.computed_cells(cfg("strategy=hybrid_task_specific")) == 2 + 2 + 1  # row 2 reuses Python's
    assert cost.computed_cells(cfg("strategy=hybrid_shared_layer")) == 2 + 2 + 2
    assert cost.computed_cells(cfg("strategy=lora_only", "tasks=[python,javascript,go]")) == 3 + 3 + 2 + 1


UNITS = {
    "train_s_per_function_epoch": {"default": 0.25, "full_finetune": 1.0},
    "generate_s_per_function": 0.5,
    "loss_s_per_function": 0.02,
    "cell_s": 2.0,
    "fixed_s_per_run": 30.0,
    "routing_s_per_function": 0.1,
    "kept_share": {},
}


def test_a_seed_run_by_hand():
    config = load_config("study", ["strategy=hybrid_task_specific", "data.direction=completion"])
    # 512 x 2 tasks x 2 epochs x 0.25; 5 cells x (256 x 0.02 loss, 100 x 0.5 generation, 2 s); routing
    # 2 x 256 scored prompts x 0.1
    assert cost.seed_run_seconds(config, UNITS) == pytest.approx(
        {"train": 512.0, "loss": 5 * 5.12, "generate": 5 * 50.0, "cells": 10.0, "routing": 51.2, "fixed": 30.0}
    )
    full = load_config("study", ["strategy=full_finetune", "data.direction=completion"])
    assert cost.seed_run_seconds(full, UNITS)["train"] == 2048.0 and cost.computed_cells(full) == 6


def test_the_plans_prediction_adds_up(cpu_plan):
    rows = {r["part"]: r for r in cost.predict(UNITS, "cpu")}
    main = rows["main/hybrid_task_specific"]
    assert main["seed_runs"] == 3 and main["train"] == pytest.approx(3 * 512.0)
    grid = rows["lr-adapters"]  # 9 runs of one seed on Python, row 1's one cell, one generated function
    assert grid["seed_runs"] == 9 and grid["generate"] == pytest.approx(0.5 * 9)
    assert main["generate"] == pytest.approx(3 * 3 * 100 * 0.5)  # rows 1 and 2 only: row 0 is computed once
    # row 0 once per task and evaluation setting: the grids' (test, 1 generated) and the reports' (valid,
    # 100 generated) for Python and JavaScript, and Go's (third-language)
    once = rows["row 0 (once)"]
    assert once["generate"] == pytest.approx(0.5 * (1 + 100 + 100 + 100)) and once["cells"] == pytest.approx(4 * 2.0)
    assert "| **all** |" in cost.table(list(rows.values()))
    measured = {"lr-adapters": 4800.0, "lr-widen/lr-adapters/lora_only__lr=0.01": 600.0}
    lines = cost.table(list(rows.values()), measured).splitlines()
    predicted = sum(grid[k] for k in ("train", "loss", "generate", "cells", "fixed"))
    assert next(x for x in lines if x.startswith("| lr-adapters |")).endswith("| 80.0 min |")
    assert next(x for x in lines if x.startswith("| main/lora_only |")).endswith("| - |")
    assert "| lr-widen/lr-adapters/lora_only__lr=0.01 | not predicted" in "\n".join(lines)
    assert lines[-1].endswith(f" 1.33 h of the {predicted / 3600:.2f} h predicted for those parts |")
    # the seeds added later: in the plan predicted with them, one seed-run each; in another, not predicted
    more = {r["part"]: r for r in cost.predict(UNITS, "cpu", more_seeds=[3])}
    assert more["more-seeds/seed-3/lora_only"]["seed_runs"] == 1
    assert more["more-seeds/seed-3/hybrid_task_specific"]["train"] == pytest.approx(512.0)
    lines = cost.table(list(rows.values()), {"more-seeds/seed-3/lora_only": 60.0}).splitlines()
    assert "| more-seeds/seed-3/lora_only | not predicted (not in this plan) |" in "\n".join(lines)


def _fake_seed(run: Path, strategy: str, n_gen: int, n_loss: int, units: dict, train_s: float = 8.0):
    """A seed whose cells took exactly cell_s + gen x n_gen + loss x n_loss seconds (``train_s`` per task)."""
    write_run_config(run, load_config("smoke", [f"strategy={strategy}", f"eval.max_examples={n_gen}"]))
    s = units["cell_s"] + units["generate_s_per_function"] * n_gen + units["loss_s_per_function"] * n_loss
    data = {
        t: {"valid": {"kept": n_loss}, "train": {"long_targets_checked": 10, "long_targets": 4}}
        for t in ("python", "javascript")
    }
    result = {
        "strategy": strategy,
        "tasks": ["python", "javascript"],
        "data": data,
        "eval_seconds": [[s, s], [s, s], [0.0, s]],
        "train": [{"seconds": train_s, "samples": 32}, {"seconds": train_s, "samples": 32}],
    }
    (run / "seed-0").mkdir(parents=True)
    (run / "seed-0" / "results.json").write_text(json.dumps(result))
    return 2 * train_s + 5 * s


def test_units_are_fitted_from_the_measurement_runs(tmp_path):
    truth = {"cell_s": 1.5, "generate_s_per_function": 0.4, "loss_s_per_function": 0.03}
    spent = 0.0
    for name, (n_gen, n_loss) in {"a": (8, 48), "b": (24, 48), "c": (24, 144)}.items():
        spent += _fake_seed(tmp_path / "sweep" / name, "hybrid_task_specific", n_gen, n_loss, truth)
    units = cost.fit_units([(tmp_path / "sweep", spent + 3 * 20.0)])
    for key, value in truth.items():
        assert units[key] == pytest.approx(value)
    assert units["fixed_s_per_run"] == pytest.approx(20.0)
    assert units["train_s_per_function_epoch"]["hybrid_task_specific"] == pytest.approx(0.25)
    assert units["kept_share"] == {"python": pytest.approx(0.6), "javascript": pytest.approx(0.6)}


def test_units_are_refitted_from_the_seeds_measured_time_split(tmp_path):
    def seed(run, s, strategy, wall, train, generate, loss, routing):
        (run / f"seed-{s}").mkdir(parents=True)
        evaluation = {"wall_seconds": wall, "train_seconds": train, "generated": 300, "generate_seconds": generate}
        evaluation |= {"loss_scored": 768, "loss_seconds": loss, "routing_seconds": routing}
        result = {
            "strategy": strategy,
            "train": [{"seconds": train / 2, "samples": 1024}] * 2,
            "routing": {"n": 512},
            "evaluation": evaluation,
        }
        (run / f"seed-{s}" / "results.json").write_text(json.dumps(result))

    seed(tmp_path / "a", 0, "lora_only", 2000.0, 1000.0, 300.0, 200.0, 60.0)  # rest 440
    seed(tmp_path / "a", 1, "lora_only", 1700.0, 1100.0, 270.0, 184.0, 52.0)  # rest 94
    seed(tmp_path / "b", 0, "full_finetune", 3000.0, 2048.0, 330.0, 230.0, 92.0)  # rest 300
    (tmp_path / "c" / "seed-0").mkdir(parents=True)  # a seed still running: no results.json, left out
    units = cost.refit_units(UNITS, [tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert units["generate_s_per_function"] == pytest.approx(900.0 / 900)
    assert units["loss_s_per_function"] == pytest.approx(614.0 / (3 * 768))
    assert units["routing_s_per_function"] == pytest.approx(204.0 / (3 * 512))
    assert units["fixed_s_per_run"] == pytest.approx(300.0) and units["cell_s"] == 0.0
    assert units["train_s_per_function_epoch"] == {
        "default": 0.25,  # not measured again: kept
        "lora_only": pytest.approx((1000.0 + 1100.0) / 2 / 2 / 1024),
        "full_finetune": pytest.approx(1.0),
    }
    with pytest.raises(SystemExit, match="no finished seed"):
        cost.refit_units(UNITS, [tmp_path / "c"])


def test_the_gpu_plans_resolve():
    seed = {p.folder: p for p in sas.plan("gpu-reference")}
    (config,) = cost.part_configs(seed["main/hybrid_task_specific"])
    assert (config.model.name, config.data.source, config.data.max_train, config.data.max_val) == (
        "Salesforce/codet5-small",
        "hf",
        8000,
        2000,
    )
    assert config.eval.max_examples == 200 and config.data.train_subset == "per_seed" and config.run.seeds == [0, 1, 2]
    assert {"position/encoder-3", "position/decoder"} <= set(seed)
    (matched,) = cost.part_configs(seed["main/lora_matched"])
    assert (matched.components.lora.r, matched.components.lora.alpha) == (46, 92)  # codet5-small: 46 x 104,448
    (bundled,) = cost.part_configs({p.folder: p for p in sas.plan("gpu-bundled")}["main/lora_only"])
    assert bundled.data.max_train is None and bundled.data.max_val is None and bundled.eval.max_examples == 200
    # every bundled function, thinned by the measured share within max_target_len
    seconds = cost.seed_run_seconds(bundled, {**UNITS, "kept_share": {"python": 0.5, "javascript": 0.5}})
    assert seconds["train"] == pytest.approx(0.25 * 2 * round(0.5 * 3903) + 0.25 * 2 * round(0.5 * 2672))


def test_the_gpu_script_says_when_there_is_no_gpu():
    import subprocess

    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script would run the study")
    done = subprocess.run(
        [str(ROOT / "scripts" / "study_gpu.sh")],
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "no GPU here" in done.stderr and "nothing was run" in done.stderr


def test_measure_runs_the_tiny_runs_and_fits_units_from_real_results(tmp_path, monkeypatch):
    """The measurement end to end on the smoke model (seconds): real results.json files give every unit."""
    import os

    monkeypatch.setitem(
        sas.SCALES,
        "cpu",
        (["preset=smoke", "data.direction=completion", "eval.max_new_tokens=4", "run.device=cpu"], []),
    )
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(cost, "MEASURE_STRATEGIES", ["hybrid_shared_layer"])  # 3 runs: a minute or so idle
    sizes = {"train": 8, "generated": (2, 4), "scored": (4, 12)}
    units = cost.measure(tmp_path, "cpu", sizes)
    assert set(units["train_s_per_function_epoch"]) == {"default", "hybrid_shared_layer", HYBRID}
    assert all(v > 0 for v in units["train_s_per_function_epoch"].values())
    # (2 generated, 4 scored): the shared hybrid's 6 cells; (4, 4) and (4, 12): the task-specific one's 5 each
    assert units["cells_fitted"] == 6 + 5 + 5 and units["fixed_s_per_run"] > 0 and units["cell_s"] >= 0
    assert units["kept_share"] == {"python": 1.0, "javascript": 1.0}  # the smoke preset cuts long targets
    assert json.loads((tmp_path / "units.json").read_text()) == units
    again = cost.measure(tmp_path, "cpu", sizes)  # finished runs are read, not run again
    assert again["train_s_per_function_epoch"] == units["train_s_per_function_epoch"]


def test_collect_copies_the_finished_points_of_an_unfinished_sweep(tmp_path):
    out, docs = tmp_path / "out", tmp_path / "docs"
    sweep = out / "lr-adapters"
    for point, done in (("lr=0.001", True), ("lr=0.003", False)):
        (sweep / point / "seed-0").mkdir(parents=True)
        (sweep / point / "config.yaml").write_text("x")
        (sweep / point / "seed-0" / "results.json").write_text(json.dumps({"matrix": {}}))
        if done:
            (sweep / point / "results.json").write_text(json.dumps({"matrix": {}}))
    (sweep / "sweep.json").write_text(json.dumps({"points": [{"name": "lr=0.001"}, {"name": "lr=0.003"}]}))
    assert not sas.finished(sweep)
    # the finished point: config.yaml, results.json, seed-0/results.json; the unfinished one: its finished
    # seed (results.json) and the run's config.yaml, not its seed still training
    (sweep / "lr=0.003" / "seed-1").mkdir()
    (sweep / "lr=0.003" / "seed-1" / "train_log.jsonl").write_text("{}")
    assert sas.collect(out, docs) == 5
    assert (docs / "lr-adapters" / "lr=0.001" / "seed-0" / "results.json").is_file()
    going = docs / "lr-adapters" / "lr=0.003"
    assert sorted(str(p.relative_to(going)) for p in going.rglob("*") if p.is_file()) == [
        "config.yaml",
        "seed-0/results.json",
    ]


def _sweep(folder: Path, points: dict[tuple[str | None, float], float | None]) -> None:
    """A sweep folder whose points ``(strategy or None, lr) -> loss`` (None: not finished) pick_lr reads."""
    entries = []
    for (strategy, lr), loss in points.items():
        values = {"strategy": strategy, "train.lr": lr} if strategy else {"train.lr": lr}
        name = "__".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values.items())
        (folder / name).mkdir(parents=True)
        if loss is not None:
            stats = {"loss": {"average_final": {"mean": loss, "std": 0.0}}}
            (folder / name / "results.json").write_text(json.dumps({"matrix": {}, "cl_metrics": stats}))
        entries.append({"name": name, "values": values})
    axes = {k: sorted({e["values"][k] for e in entries}) for k in entries[0]["values"]}
    (folder / "sweep.json").write_text(json.dumps({"axes": axes, "points": entries}))


def test_a_grid_whose_best_rate_is_at_its_end_is_widened_at_most_twice(tmp_path, cpu_plan, monkeypatch):
    out = tmp_path / "out"
    _sweep(out / "lr-adapters", {("lora_only", 3e-4): 1.14, ("lora_only", 1e-3): 1.10, ("lora_only", 3e-3): 1.09})
    _sweep(out / "lr-matched", {(None, 3e-4): 1.2, (None, 1e-3): 1.1, (None, 3e-3): 1.3})
    _sweep(out / "lr-full", {(None, 1e-5): 1.0, (None, 3e-5): 1.1, (None, 1e-4): 1.2})
    # an interrupted widening of the full fine-tuning grid, below its end
    _sweep(out / "lr-widen" / "lr-full" / "grid__lr=3e-06", {(None, 3e-6): None})
    ran = []

    def fake_run(part, out_, docs, dry_run):  # hybridcl run: the loss keeps falling with the rate
        ran.append((part.folder, part.sweeps, part.overrides))
        lr = float(part.folder.rsplit("=", 1)[1])
        strategy = next((s.split("=")[1] for s in part.sweeps if s.startswith("strategy=")), None)
        folder = out_ / part.folder
        if folder.exists():
            shutil.rmtree(folder)
        _sweep(folder, {(strategy, lr): 1.0 - lr if strategy else 0.9})

    monkeypatch.setattr(sas, "run_part", fake_run)
    sas.widen(cpu_plan, out, tmp_path / "docs", dry_run=False)
    adapters, full = (next(p.overrides for p in cpu_plan if p.folder == g) for g in ("lr-adapters", "lr-full"))
    assert ran == [
        ("lr-widen/lr-adapters/lora_only__lr=0.01", ["strategy=lora_only", "train.lr=0.01"], adapters),
        ("lr-widen/lr-adapters/lora_only__lr=0.03", ["strategy=lora_only", "train.lr=0.03"], adapters),
        ("lr-widen/lr-full/grid__lr=3e-06", [], full),  # the interrupted one resumes first
        ("lr-widen/lr-full/grid__lr=1e-06", ["train.lr=1e-06"], full),  # 3e-6 won: past it; then twice widened
    ]
    assert [str(f.relative_to(out)) for f in sas.grid_folders(out, "lr-full")] == [
        "lr-full",
        "lr-widen/lr-full/grid__lr=1e-06",
        "lr-widen/lr-full/grid__lr=3e-06",
    ]


def test_units_fit_from_the_grids_cells_with_the_generation_unit_given(tmp_path):
    truth = {"cell_s": 1.5, "generate_s_per_function": 0.4, "loss_s_per_function": 0.03}
    spent = sum(
        _fake_seed(tmp_path / "grid" / name, "lora_only", 1, n_loss, truth)
        for name, n_loss in {"a": 48, "b": 144}.items()
    )
    units = cost.fit_units([(tmp_path / "grid", spent)], generate_s=0.4)
    assert [units[k] for k in truth] == pytest.approx([1.5, 0.4, 0.03])
    # every cell the same size (the study's grids): the time is the loss unit's, no cost per cell
    (tmp_path / "same").mkdir()
    _fake_seed(tmp_path / "same" / "a", "lora_only", 1, 256, truth)
    units = cost.fit_units([(tmp_path / "same", 100.0)], generate_s=0.4)
    assert units["cell_s"] == 0.0 and units["loss_s_per_function"] == pytest.approx((1.5 + 0.03 * 256) / 256)


def test_no_unit_is_negative_where_the_sizes_do_not_move_its_cost(tmp_path):
    """On a GPU 8 and 24 generated functions are one batch each and cost the same: the H200's measurement fit
    -0.024 s per generated function. The fit keeps every unit >= 0 and refits the others without it."""
    cells = {"a": (8, 48, 6.0), "b": (24, 48, 5.5), "c": (24, 144, 6.3)}  # (generated, scored, seconds)
    for name, (n_gen, n_loss, s) in cells.items():
        _fake_seed(
            tmp_path / "sweep" / name,
            "hybrid_task_specific",
            n_gen,
            n_loss,
            {"cell_s": s, "generate_s_per_function": 0.0, "loss_s_per_function": 0.0},
        )
    units = cost.fit_units([(tmp_path / "sweep", 200.0)])
    assert units["generate_s_per_function"] == 0.0
    # without the generation unit: seconds = cell + loss x scored over the 15 cells (5 per seed): a line
    # through (48, mean of a's and b's seconds = 5.75) and (144, 6.3)
    assert units["loss_s_per_function"] == pytest.approx((6.3 - 5.75) / 96)
    assert units["cell_s"] == pytest.approx(5.75 - 48 * (6.3 - 5.75) / 96)


def test_a_sweeps_first_point_pays_the_warm_up_and_is_left_out_of_the_training_unit(tmp_path):
    units = {"cell_s": 1.0, "generate_s_per_function": 0.1, "loss_s_per_function": 0.01}

    def sweep(folder: Path, order: list[tuple[str, str, float]]) -> tuple[Path, float]:
        for name, strategy, train_s in order:
            _fake_seed(folder / name, strategy, 8, 48, units, train_s=train_s)
        points = [{"name": name, "values": {}} for name, _, _ in order]  # the order they ran, not by name
        (folder / "sweep.json").write_text(json.dumps({"points": points}))
        return folder, 500.0

    fitted = cost.fit_units(
        [
            sweep(tmp_path / "strategies", [("z", HYBRID, 30.0), ("a", "lora_only", 12.0), ("b", HYBRID, 8.0)]),
            sweep(tmp_path / "cells", [("y", "full_finetune", 5.0), ("x", HYBRID, 6.0)]),
        ]
    )["train_s_per_function_epoch"]
    assert fitted[HYBRID] == pytest.approx((8.0 + 6.0) / 2 / 32)  # its first, warming point left out
    assert fitted["lora_only"] == pytest.approx(12.0 / 32)
    assert fitted["full_finetune"] == pytest.approx(5.0 / 32)  # measured first alone: kept, warm-up and all


def test_on_a_gpu_the_measurement_generates_whole_batches():
    parts = dict(cost.measurement_parts("gpu-bundled"))
    assert "data.max_train=128" in parts["strategies"] and "eval.max_examples=32" in parts["strategies"]
    assert "eval.max_examples=96" in parts["cells"]
    assert cost.MEASURE_STRATEGIES[0] == "hybrid_task_specific"  # the warm-up falls on one measured again
    assert "eval.max_examples=8" in dict(cost.measurement_parts("cpu"))["strategies"]
