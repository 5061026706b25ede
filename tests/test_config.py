import pytest

from hybridcl.config.experiment import load_config, preset_names
from hybridcl.errors import ConfigError


def test_presets_load_and_validate():
    assert {"default", "reference", "smoke"} <= set(preset_names())
    seed = load_config("reference")
    assert seed.model.name == "Salesforce/codet5-small"
    assert (seed.components.lora.r, seed.components.lora.alpha, seed.components.lora.dropout) == (16, 32, 0.1)
    assert (seed.train.epochs, seed.train.batch_size, seed.train.lr, seed.train.grad_clip) == (2, 8, 5e-4, 1.0)
    assert (seed.data.max_train, seed.data.max_val, seed.data.max_source_len) == (8000, 2000, 512)
    assert load_config("default").model.name == "embedded:smollm2-135m-instruct"
    assert load_config("smoke").model.name == "tiny:t5"
    study = load_config("study")  # issue 23's scale: at least 512 x 2 epochs, 100 generated, 256 loss-scored
    assert (study.model.name, study.data.train_subset, study.run.seeds) == (
        "embedded:smollm2-135m-instruct",
        "per_seed",
        [0, 1, 2],
    )
    assert (study.data.max_train, study.train.epochs, study.eval.max_examples, study.data.max_val) == (512, 2, 100, 256)


def test_overrides_are_typed():
    c = load_config(
        overrides=[
            "preset=reference",
            "train.epochs=1",
            "strategy=lora_only",
            "tasks=[python]",
            "components.lora.target_modules=[q,v]",
            "data.max_train=null",
        ]
    )
    assert c.preset == "reference" and c.train.epochs == 1.0 and isinstance(c.train.epochs, float)
    assert c.strategy == "lora_only" and c.task_names == ["python"]
    assert c.components.lora.target_modules == ["q", "v"] and c.data.max_train is None
    assert c.eval.split == "valid" and load_config(overrides=["preset=smoke", "eval.split=test"]).eval.split == "test"
    positions = [
        load_config(overrides=["preset=smoke", f"components.full_layer.position={p}"]).components.full_layer.position
        for p in ("encoder", "decoder:5", "auto")
    ]
    assert (
        positions == ["encoder", "decoder:5", "auto"]
        and load_config("reference").components.full_layer.position == "auto"
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=1", "unknown config key 'train.epoch' (did you mean train.epochs?)"),
        ("trian.epochs=1", "unknown config key 'trian' (did you mean train?)"),
        ("train.epochs=abc", "train.epochs = 'abc' must be a number"),
        ("train.batch_size=2.5", "train.batch_size = 2.5 must be an integer"),
        ("train.lr=-1", "train.lr = -1.0: must be greater than 0"),
        ("train.precision=fp16", "train.precision = 'fp16' is not allowed: choose one of auto, fp32, bf16"),
        ("eval.split=validation", "eval.split = 'validation' is not allowed: choose one of valid, test"),
        ("strategy=lora", "unknown strategy 'lora'"),
        ("tasks=[python,cobol]", "unknown tasks 'cobol'"),
        ("tasks=[python,python]", "the name 'python' is given twice"),
        ("components.lora.dropout=1.5", "components.lora.dropout = 1.5: must be in [0, 1)"),
        ("run.seeds=[]", "run.seeds is empty"),
        ("data.source=codesearchnet", "data.path is required when data.source = codesearchnet"),
        ("preset=refrence", "unknown preset 'refrence' (did you mean reference?)"),
        ("noequals", "is not of the form key=value"),
        (
            "components.full_layer.position=middle",
            "components.full_layer.position = 'middle' is not allowed: choose one "
            "of auto, encoder, decoder, encoder:K, decoder:K (K: the number of the block it follows, from 1)",
        ),
        ("components.full_layer.position=encoder:0", "components.full_layer.position = 'encoder:0' is not allowed"),
        ("components.full_layer.position=decoder:+2", "components.full_layer.position = 'decoder:+2' is not allowed"),
        (
            "components.full_layer.position=decoder:",
            "components.full_layer.position = {'decoder': None} must be a string: "
            "choose one of auto, encoder, decoder, encoder:K, decoder:K",
        ),
        ("components.full_layer.position=Encoder", "components.full_layer.position = 'Encoder' is not allowed"),
        ("data.train_subset=random", "data.train_subset = 'random' is not allowed: choose one of fixed, per_seed"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(
            overrides=[override] if override.startswith(("preset", "data.source")) else ["preset=smoke", override]
        )
    assert message in str(info.value)


def test_yaml_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 1\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+ is not valid YAML"):
        load_config(file=bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_config(file=scalar)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(file=tmp_path / "missing.yaml")


def test_yaml_file_extends_a_preset(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("extends: reference\ntrain:\n  epochs: 3\n")
    c = load_config(file=f)
    assert c.train.epochs == 3 and c.train.lr == 5e-4 and c.model.name == "Salesforce/codet5-small"


def test_the_old_name_of_reference_metrics_still_reads_with_a_notice(capsys, monkeypatch):
    """eval.seed_metrics (the reference experiment's metrics, not a random seed) is now
    eval.reference_metrics; committed runs' config.yaml files still load."""
    from pathlib import Path

    from hybridcl.config import experiment as config
    from hybridcl.records.run_dir import load_run_config

    monkeypatch.setattr(config, "_noticed", set())
    assert load_config(overrides=["preset=smoke", "eval.seed_metrics=true"]).eval.reference_metrics is True
    committed = Path(__file__).parents[1] / "docs/results/2026-11-27-seed-flaws/seed-original"
    assert load_run_config(committed).eval.reference_metrics is True
    assert load_config("reference-original").eval.reference_metrics is True
    err = capsys.readouterr().err
    assert "config key eval.seed_metrics is now eval.reference_metrics" in err
    assert err.count("eval.seed_metrics") == 1  # once per process


def test_per_seed_training_subsets_need_a_drawn_selection():
    with pytest.raises(ConfigError, match="data.train_subset = per_seed draws each seed's training examples"):
        load_config(overrides=["preset=reference-original", "data.train_subset=per_seed"])
    assert load_config(overrides=["preset=smoke", "data.train_subset=per_seed"]).data.train_subset == "per_seed"


def test_the_old_names_of_the_reference_experiment_still_read_with_a_notice(capsys, tmp_path):
    import json

    from hybridcl.config import experiment as config_module
    from hybridcl.records.results import read_results

    config_module._noticed.discard("seed-original")
    assert load_config("seed-original") == load_config("reference-original")
    assert "preset seed-original is now reference-original" in capsys.readouterr().err
    old = {"format": 2, "matrix": {"bleu_seed": [[1.0]], "syntax_pass_seed": [[50.0]]}, "per_seed": [{"bleu_seed": 2}]}
    (tmp_path / "results.json").write_text(json.dumps(old))
    read = read_results(tmp_path / "results.json")
    assert read["matrix"] == {"bleu_reference": [[1.0]], "syntax_pass_reference": [[50.0]]}
    assert read["per_seed"] == [{"bleu_reference": 2}]
    assert "names bleu_seed / syntax_pass_seed" in capsys.readouterr().err
