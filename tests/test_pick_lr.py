"""scripts/pick_lr.py (issue 23): each strategy's learning rate chosen on the validation loss of a grid."""

import importlib.util
import sys
from pathlib import Path

import pytest

from hybridcl.config.experiment import load_config
from hybridcl.records.io import write_json
from hybridcl.records.run_dir import write_run_config

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pick_lr", ROOT / "scripts" / "pick_lr.py")
pick_lr = importlib.util.module_from_spec(_spec)
sys.modules["pick_lr"] = pick_lr
_spec.loader.exec_module(pick_lr)

# strategy -> lr -> validation loss after the last task on each seed (None: the run did not finish)
GRID = {
    "lora_only": {3e-4: [2.30, 2.32], 1e-3: [2.21, 2.23], 3e-3: [2.25, 2.27]},
    "full_finetune": {1e-5: [2.40, 2.40], 3e-5: [2.36, 2.34], 1e-4: None},
}


def _grid(tmp_path) -> Path:
    sweep = tmp_path / "lr-grid"
    points = []
    for strategy, lrs in GRID.items():
        for lr, losses in lrs.items():
            name = f"strategy={strategy}__lr={lr}"
            points.append({"name": name, "values": {"strategy": strategy, "train.lr": lr}})
            (sweep / name).mkdir(parents=True)
            write_run_config(sweep / name, load_config("smoke", [f"strategy={strategy}", f"train.lr={lr}"]))
            if losses is not None:
                per_seed = {"mean": sum(losses) / len(losses), "std": 0.01}
                write_json(
                    sweep / name / "results.json",
                    {"strategy": strategy, "cl_metrics": {"loss": {"average_final": per_seed}}},
                )
    axes = {"strategy": list(GRID), "train.lr": sorted({lr for lrs in GRID.values() for lr in lrs})}
    write_json(sweep / "sweep.json", {"format": 1, "axes": axes, "points": points})
    return sweep


def test_each_strategy_gets_the_lr_of_its_lowest_validation_loss(tmp_path, capsys):
    sweep = _grid(tmp_path)
    assert pick_lr.main([str(sweep), "--out", str(tmp_path / "chosen")]) == 0
    chosen = pick_lr.choose(pick_lr.grid_points(sweep))
    assert chosen["lora_only"]["lr"] == 1e-3 and chosen["lora_only"]["loss"] == pytest.approx(2.22)
    assert chosen["lora_only"]["at_edge"] is False
    # 1e-4 did not finish: the choice is among the finished ones; 3e-5 is not the grid's edge
    assert chosen["full_finetune"]["lr"] == 3e-5 and chosen["full_finetune"]["at_edge"] is False
    assert chosen["full_finetune"]["grid"]["0.0001"] is None
    assert load_config(file=tmp_path / "chosen" / "lora_only.yaml").train.lr == 1e-3
    assert load_config(file=tmp_path / "chosen" / "full_finetune.yaml").train.lr == 3e-5
    out = capsys.readouterr().out
    assert (
        "lora_only: train.lr=0.001 (loss 2.2200 on the scored split; grid 0.0003: 2.3100, 0.001: 2.2200, 0.003: 2.2600)"
        in out
    )


def test_a_choice_at_the_grids_edge_is_flagged(tmp_path):
    points = [
        {"run": tmp_path, "group": "g", "values": {}, "lr": lr, "loss": loss}
        for lr, loss in [(1, 3.0), (2, 2.0), (3, 1.0)]
    ]
    assert pick_lr.choose(points)["g"]["at_edge"] is True


def test_a_folder_without_an_lr_axis_is_refused(tmp_path):
    write_json(tmp_path / "sweep.json", {"format": 1, "axes": {"strategy": ["lora_only"]}, "points": []})
    with pytest.raises(SystemExit, match="no train.lr axis"):
        pick_lr.grid_points(tmp_path)


def test_the_rate_past_an_edge_is_half_a_decade_along_the_grids_ladder():
    assert pick_lr.half_decade(3e-3, 1) == 1e-2 and pick_lr.half_decade(1e-2, 1) == 3e-2
    assert pick_lr.half_decade(1e-5, -1) == 3e-6 and pick_lr.half_decade(3e-4, -1) == 1e-4
    lrs = [3e-4, 1e-3, 3e-3]
    assert pick_lr.beyond(lrs, 3e-3) == 1e-2 and pick_lr.beyond(lrs, 3e-4) == 1e-4
    assert pick_lr.beyond(lrs, 1e-3) is None and pick_lr.beyond([1e-3], 1e-3) is None


def test_a_diverged_run_loses_and_a_widening_folder_joins_the_grid(tmp_path, capsys):
    points = [
        {"run": tmp_path, "group": "g", "values": {}, "lr": lr, "loss": loss}
        for lr, loss in [(1, 3.0), (2, float("nan")), (3, 2.5)]
    ]
    assert pick_lr.choose(points)["g"]["lr"] == 3 and pick_lr.choose(points)["g"]["beyond"] is not None
    sweep = _grid(tmp_path)  # lora_only is best at 1e-3 inside the grid; a wider run at 1e-2 beats it
    wider = tmp_path / "lr-grid-wider"
    name = "strategy=lora_only__lr=0.01"
    (wider / name).mkdir(parents=True)
    write_run_config(wider / name, load_config("smoke", ["strategy=lora_only", "train.lr=0.01"]))
    write_json(wider / name / "results.json", {"cl_metrics": {"loss": {"average_final": {"mean": 2.1, "std": 0}}}})
    point = {"name": name, "values": {"strategy": "lora_only", "train.lr": 0.01}}
    write_json(
        wider / "sweep.json", {"format": 1, "axes": {"strategy": ["lora_only"], "train.lr": [0.01]}, "points": [point]}
    )
    assert pick_lr.main([str(sweep), str(wider), "--out", str(tmp_path / "chosen")]) == 0
    out = capsys.readouterr().out
    assert "lora_only: train.lr=0.01 (loss 2.1000 on the scored split;" in out and "widen it to 0.03)" in out
    chosen = pick_lr.choose([p for f in (sweep, wider) for p in pick_lr.grid_points(f)])
    assert chosen["lora_only"]["beyond"] == 3e-2 and chosen["lora_only"]["values"] == {"strategy": "lora_only"}
