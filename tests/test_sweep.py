"""Sweeps: the product of several keys' values, one run per point, then the comparison."""

import json

import pytest

from hybridcl.cli import main
from hybridcl.config.experiment import raw_config
from hybridcl.config.sweep import load_sweep, parse_axis, sweep_axes, sweep_points
from hybridcl.errors import ConfigError
from hybridcl.strategies import ALL_STRATEGIES

TINY = ["preset=smoke", "data.max_train=8", "data.max_val=2", "eval.max_new_tokens=4", "tasks=[python]"]


def test_axis_values_are_yaml():
    assert parse_axis("components.lora.r=4,8,16") == ("components.lora.r", [4, 8, 16])
    assert parse_axis("tasks=[python,javascript],[javascript,python]") == (
        "tasks",
        [["python", "javascript"], ["javascript", "python"]],
    )
    with pytest.raises(ConfigError, match="not of the form key=value1,value2"):
        parse_axis("components.lora.r")


def test_points_are_the_product_of_the_axes_named_by_their_values():
    raw = raw_config(overrides=["preset=smoke"])
    axes = sweep_axes(raw, ["strategy=lora_only,hybrid_task_specific", "components.lora.r=2,4"])
    points = sweep_points(raw, axes)
    assert [p.name for p in points] == [
        "strategy=lora_only__r=2",
        "strategy=lora_only__r=4",
        "strategy=hybrid_task_specific__r=2",
        "strategy=hybrid_task_specific__r=4",
    ]
    assert [(p.config.strategy, p.config.components.lora.r) for p in points] == [
        ("lora_only", 2),
        ("lora_only", 4),
        ("hybrid_task_specific", 2),
        ("hybrid_task_specific", 4),
    ]
    assert raw["components"] == raw_config(overrides=["preset=smoke"]).get("components")  # raw left unchanged


def test_strategy_all_and_a_yaml_sweep_section(tmp_path):
    raw = raw_config(overrides=["preset=smoke", "strategy=all"])
    assert sweep_axes(raw) == {"strategy": list(ALL_STRATEGIES)}
    file = tmp_path / "sweep.yaml"
    file.write_text("extends: smoke\nsweep:\n  tasks: [[python, javascript], [javascript, python]]\n")
    raw = raw_config(overrides=[f"config={file}"])
    points = sweep_points(raw, sweep_axes(raw))
    assert [p.name for p in points] == ["python+javascript", "javascript+python"]
    assert "sweep" not in raw


def test_a_bad_value_fails_before_any_training(tmp_path, capsys):
    assert main(["run", *TINY, "--sweep", "components.lora.r=4,-1", f"run.output_dir={tmp_path}"]) == 2
    assert (
        "sweep point {'components.lora.r': -1}: components.lora.r = -1: must be greater than 0"
        in capsys.readouterr().err
    )
    assert not any(tmp_path.iterdir())


def test_a_sweep_runs_every_point_compares_them_and_resumes(tmp_path, capsys):
    sweep = tmp_path / "ranks"
    args = [
        "run",
        "--no-progress",
        *TINY,
        "strategy=lora_only",
        "--sweep",
        "components.lora.r=2,4",
        f"run.output_dir={tmp_path}",
        "run.name=ranks",
    ]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(sweep)
    info = json.loads((sweep / "sweep.json").read_text())
    assert info["axes"] == {"components.lora.r": [2, 4]} and [p["name"] for p in info["points"]] == ["2", "4"]
    params = [
        json.loads((sweep / name / "results.json").read_text())["params"]["lora_per_adapter"] for name in ("2", "4")
    ]
    assert params[1] == 2 * params[0]  # LoRA parameters grow linearly with the rank
    rows = json.loads((sweep / "comparison.json").read_text())
    assert [r["run"] for r in rows] == [str(sweep / "2"), str(sweep / "4")]
    assert (sweep / "2" / "report.md").is_file()
    # resuming a finished sweep changes nothing and still prints its folder
    before = (sweep / "4" / "results.json").read_text()
    assert main(["run", "--resume", str(sweep), "--no-progress"]) == 0
    assert (sweep / "4" / "results.json").read_text() == before
    assert [p.config.components.lora.r for p in load_sweep(sweep)] == [2, 4]


def test_a_sweep_over_task_orders_runs_each_order(tmp_path, capsys):
    # the sweep: list-valued points (the YAML flow lists of parse_axis), three tasks each
    sweep = tmp_path / "orders"
    assert (
        main(
            [
                "run",
                "--no-progress",
                *TINY,
                "strategy=lora_only",
                "data.max_train=4",
                "eval.bootstrap_resamples=50",
                "--sweep",
                "tasks=[python,javascript,go],[go,javascript,python]",
                f"run.output_dir={tmp_path}",
                "run.name=orders",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == str(sweep)
    info = json.loads((sweep / "sweep.json").read_text())
    assert info["axes"] == {"tasks": [["python", "javascript", "go"], ["go", "javascript", "python"]]}
    for name, order in [
        ("python+javascript+go", ["python", "javascript", "go"]),
        ("go+javascript+python", ["go", "javascript", "python"]),
    ]:
        results = json.loads((sweep / name / "results.json").read_text())
        assert results["tasks"] == order and results["rows"] == ["base", *order]
        assert [t["task"] for t in results["train"]] == order
    assert [r["run"] for r in json.loads((sweep / "comparison.json").read_text())] == [
        str(sweep / "python+javascript+go"),
        str(sweep / "go+javascript+python"),
    ]


def test_a_sweep_over_ranks_4_8_16_and_one_over_positions():
    raw = raw_config(overrides=["preset=smoke"])
    axes = sweep_axes(raw, ["components.lora.r=4,8,16", "components.full_layer.position=encoder,decoder:1"])
    assert axes == {"components.lora.r": [4, 8, 16], "components.full_layer.position": ["encoder", "decoder:1"]}
    points = sweep_points(raw, axes)
    assert [p.name for p in points] == [f"r={r}__position={p}" for r in (4, 8, 16) for p in ("encoder", "decoder_1")]
    assert [(p.config.components.lora.r, p.config.components.full_layer.position) for p in points] == [
        (r, p) for r in (4, 8, 16) for p in ("encoder", "decoder:1")
    ]


def test_a_position_the_model_lacks_fails_before_any_training(tmp_path, capsys):
    assert (
        main(
            ["run", *TINY, "--sweep", "components.full_layer.position=encoder,encoder:3", f"run.output_dir={tmp_path}"]
        )
        == 2
    )
    assert (
        "sweep point {'components.full_layer.position': 'encoder:3'}: components.full_layer.position = 'encoder:3': "
        "the encoder of t5 has 2 blocks: choose one of auto, encoder, encoder:K (K from 1 to 2)"
    ) in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    assert main(["run", *TINY, "components.full_layer.position=decoder:3", f"run.output_dir={tmp_path}"]) == 2
    assert "the decoder of t5 has 2 blocks" in capsys.readouterr().err and not any(tmp_path.iterdir())
