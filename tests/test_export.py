"""`hybridcl export`: a merged plain-transformers folder and a PEFT adapter give hybridcl's logits."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

import hybridcl
from hybridcl.cli import main
from hybridcl.config.experiment import load_config
from hybridcl.continual import run_experiment
from hybridcl.errors import RunError
from hybridcl.inference.export import export_merged, export_peft
from hybridcl.model.loading import load_base

SMALL = ["preset=smoke", "data.max_train=16", "data.max_val=4", "eval.max_new_tokens=8"]
TEXTS = ["def add(a, b):\n    return a + b", "Sort the list in place and return it."]


def make_run(tmp_path_factory, model, strategy):
    config = load_config(overrides=[*SMALL, f"model.name={model}", f"strategy={strategy}"])
    return run_experiment(config, tmp_path_factory.mktemp(strategy) / "run", progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {
        ("tiny:t5", "hybrid_task_specific"): make_run(tmp_path_factory, "tiny:t5", "hybrid_task_specific"),
        ("tiny:llama", "hybrid_shared_layer"): make_run(tmp_path_factory, "tiny:llama", "hybrid_shared_layer"),
        ("tiny:t5", "lora_only"): make_run(tmp_path_factory, "tiny:t5", "lora_only"),
        ("tiny:llama", "o_lora"): make_run(tmp_path_factory, "tiny:llama", "o_lora"),
    }


def inputs(tokenizer, kind):
    batch = dict(tokenizer(TEXTS, return_tensors="pt", padding=True))
    if kind == "seq2seq":
        batch["decoder_input_ids"] = torch.tensor([[0, 104, 105, 50, 7], [0, 120, 33, 9, 1]])
    return batch


def hybridcl_logits(run_dir, task):
    run = hybridcl.load_run(run_dir)
    run.route(task)
    with torch.no_grad():
        return run.model(**inputs(run.tokenizer, run.kind)).logits, run


@pytest.mark.parametrize("key", [("tiny:t5", "hybrid_task_specific"), ("tiny:llama", "hybrid_shared_layer")])
@pytest.mark.parametrize("task", ["python", "javascript"])
def test_merged_export_loads_in_plain_transformers_with_the_same_logits(runs, key, task, tmp_path):
    out = export_merged(runs[key], task, tmp_path / "merged")
    files = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    config = json.loads((out / "config.json").read_text())
    expected, run = hybridcl_logits(runs[key], task)
    if run.kind == "seq2seq":  # the encoder gets the extra block; the decoder keeps its count, written explicitly
        assert (config["num_layers"], config["num_decoder_layers"]) == (3, 2)
        model = AutoModelForSeq2SeqLM.from_pretrained(out)
        assert len(model.encoder.block) == 3 and len(model.decoder.block) == 2
    else:
        assert config["num_hidden_layers"] == 3
        model = AutoModelForCausalLM.from_pretrained(out)
        assert len(model.model.layers) == 3
    tokenizer = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        got = model.eval()(**inputs(tokenizer, run.kind)).logits
    # Merging W + s*B@A rounds differently from W x + s*B(A x) (a few float32 ulps, compounded over the
    # layers): equal to within 1e-6 of the logits' scale.
    scale = max(1.0, expected.abs().max().item())
    assert (got - expected).abs().max().item() <= 1e-6 * scale
    assert not torch.equal(got, load_logits_of_base(run, tokenizer))  # the components did change the model


def load_logits_of_base(run, tokenizer):
    base = load_base(run.config.model)
    with torch.no_grad():
        return base.model(**inputs(tokenizer, run.kind)).logits


def test_peft_export_loads_with_peft_on_a_fresh_base(runs, tmp_path):
    run_dir = runs[("tiny:t5", "lora_only")]
    for task in ("python", "javascript"):
        out = export_peft(run_dir, task, tmp_path / task)
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
        expected, run = hybridcl_logits(run_dir, task)
        fresh = load_base(run.config.model)
        model = PeftModel.from_pretrained(fresh.model, out).eval()
        with torch.no_grad():
            got = model(**inputs(fresh.tokenizer, run.kind)).logits
        assert torch.equal(got, expected)


def test_export_errors_and_command(runs, tmp_path, capsys):
    with pytest.raises(RunError, match="cannot hold"):
        export_peft(runs[("tiny:t5", "hybrid_task_specific")], "python", tmp_path / "p")
    with pytest.raises(RunError, match="one task's components"):
        export_merged(runs[("tiny:t5", "lora_only")], "auto", tmp_path / "a")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert (
        main(
            [
                "export",
                "--run",
                str(runs[("tiny:t5", "lora_only")]),
                "--task",
                "python",
                "--merged",
                str(tmp_path / "full"),
            ]
        )
        == 2
    )
    assert "is not an empty folder" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                "--run",
                str(runs[("tiny:t5", "lora_only")]),
                "--task",
                "python",
                "--merged",
                str(tmp_path / "m"),
            ]
        )
        == 0
    )
    assert (tmp_path / "m" / "config.json").is_file()


def test_stacked_adapters_are_all_merged_and_refused_as_one_peft_adapter(runs, tmp_path):
    out = export_merged(runs[("tiny:llama", "o_lora")], "python", tmp_path / "merged")
    expected, run = hybridcl_logits(runs[("tiny:llama", "o_lora")], "python")
    assert sorted(run.model.base_model.active_adapters) == ["javascript", "python"]
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        got = model(**inputs(AutoTokenizer.from_pretrained(out), "causal")).logits
    assert (got - expected).abs().max().item() <= 1e-6 * max(1.0, expected.abs().max().item())
    with pytest.raises(RunError, match="uses all its adapters together"):
        export_peft(runs[("tiny:llama", "o_lora")], "python", tmp_path / "peft")


@pytest.mark.parametrize(
    "model, position, stack, index",
    [
        ("tiny:t5", "encoder:1", "encoder.block", 1),
        ("tiny:t5", "decoder", "decoder.block", 2),
        ("tiny:t5", "decoder:1", "decoder.block", 1),
        ("tiny:llama", "decoder:1", "model.layers", 1),
    ],
)
def test_merged_export_puts_the_block_at_its_position(tmp_path, model, position, stack, index):
    config = load_config(
        overrides=[
            *SMALL,
            f"model.name={model}",
            "strategy=hybrid_task_specific",
            "tasks=[python]",
            f"components.full_layer.position={position}",
            "eval.bootstrap_resamples=50",
        ]
    )
    run_dir = run_experiment(config, tmp_path / "run", progress=False)
    out = export_merged(run_dir, "python", tmp_path / "merged")
    expected, run = hybridcl_logits(run_dir, "python")
    config = json.loads((out / "config.json").read_text())
    loader = AutoModelForSeq2SeqLM if run.kind == "seq2seq" else AutoModelForCausalLM
    exported = loader.from_pretrained(out).eval()
    if run.kind == "seq2seq":
        on_encoder = stack.startswith("encoder")
        assert (config["num_layers"], config["num_decoder_layers"]) == ((3, 2) if on_encoder else (2, 3))
        assert (len(exported.encoder.block), len(exported.decoder.block)) == ((3, 2) if on_encoder else (2, 3))
    else:
        assert config["num_hidden_layers"] == 3 and len(exported.model.layers) == 3
    # the trained block sits at its index, the base blocks after it one index up
    state = exported.state_dict()
    block = run.components.slot.full_layers["python"].state_dict()
    assert all(
        torch.equal(state[f"{stack}.{index}.{k}"], v)
        for k, v in block.items()
        if "lora_" not in k and "base_layer" not in k
    )
    base = load_base(run.config.model).model.state_dict()
    lora_targets = {"q", "v", "q_proj", "v_proj"}  # these carry the merged LoRA update
    moved = [k for k in base if k.startswith(f"{stack}.{index}.") and k.rsplit(".", 2)[-2] not in lora_targets]
    assert bool(moved) == (index < 2) and all(
        torch.equal(state[k.replace(f"{stack}.{index}.", f"{stack}.{index + 1}.")], base[k]) for k in moved
    )
    tokenizer = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        got = exported(**inputs(tokenizer, run.kind)).logits
    assert (got - expected).abs().max().item() <= 1e-6 * max(1.0, expected.abs().max().item())
    # plain transformers generates with its KV cache through the extra block (a T5 decoder one too)
    ids = torch.tensor([[5, 6, 7, 8]])
    greedy = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert torch.equal(
        exported.generate(input_ids=ids, **greedy), exported.generate(input_ids=ids, use_cache=False, **greedy)
    )
    assert torch.equal(exported.generate(input_ids=ids, **greedy), run.model.generate(input_ids=ids, **greedy))
