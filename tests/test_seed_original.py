"""issue 17: the seed as it actually ran (``preset=reference-original``) and each of its parts as a switch.

The seed: bitrifttech/llm_expansion_experiments at 9a2e462, hybrid_lora_full_layer_experiment/
hybrid_experiment.py. docs/reproduction.md lists each part and the key that switches it.
"""

import copy
import gzip
import json

import pytest
import torch
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from hybridcl.cli import main
from hybridcl.config.experiment import ComponentsConfig, DataConfig, FullLayerSpec, LoraSpec, ModelConfig, load_config
from hybridcl.data.batching import batch_indices, collate, encode
from hybridcl.data.records import Record
from hybridcl.data.tasks import format_prompt, load_task_data, make_examples
from hybridcl.errors import ConfigError, DataError
from hybridcl.evaluation import generate as generate_module
from hybridcl.evaluation.metrics import bleu_reference, bleu_reference_scores
from hybridcl.evaluation.registry import score
from hybridcl.evaluation.syntax import passes_seed, syntax_pass_rate_seed
from hybridcl.model.budget import build_components, params_table
from hybridcl.model.components import ComponentSet
from hybridcl.model.loading import load_base
from hybridcl.model.parameters import count_parameters
from hybridcl.stats.intervals import example_stats, value
from hybridcl.strategies import get_strategy

PY = Record("r", "a.py", "f", "python", 'def f(x):\n    """Double."""\n    return 2 * x', "Double.")


# ---- parameter counts ----------------------------------------------------------------------------


def test_seed_original_counts_are_the_write_ups():
    config = load_config("reference-original")
    c = count_parameters(build_components(config, "hybrid_task_specific", 1))
    assert (c.lora_per_adapter, c.full_layer_per_block, c.trainable) == (1_777_664, 3_146_752, 4_924_416)
    # the corrected preset adapts the base only
    assert (
        count_parameters(build_components(load_config("reference"), "hybrid_task_specific", 1)).lora_per_adapter
        == 1_671_168
    )


def test_a_shared_block_keeps_the_earlier_tasks_lora_frozen():
    # on_full_layer: javascript's adapter covers the shared block, python's LoRA in it must not train
    c = count_parameters(build_components(load_config("reference-original"), "hybrid_shared_layer", 2))
    assert (c.trainable, c.stored_total) == (4_924_416, 2 * 1_777_664 + 3_146_752)
    c = count_parameters(build_components(load_config("reference-original"), "hybrid_task_specific", 2))
    assert (c.trainable, c.stored_total) == (4_924_416, 2 * 4_924_416)


def test_params_cli_prints_the_seeds_numbers(capsys):
    assert main(["params", "preset=reference-original"]) == 0
    out = capsys.readouterr().out
    assert "1,777,664" in out and "4,924,416" in out
    assert out.count("hybrid_task_specific") == 1  # the config's strategy is listed once
    assert "1,777,664" in params_table(load_config("reference"))  # the alternatives line


def test_each_adapter_covers_its_own_block_only(codet5_tiny_dir):
    base = load_base(ModelConfig(name=str(codet5_tiny_dir)))
    cfg = ComponentsConfig(lora=LoraSpec(r=2, alpha=4, dropout=0.0, target_modules=["q", "wo"], on_full_layer=True))
    components = ComponentSet(base.model, base.kind, get_strategy("hybrid_task_specific"), cfg)
    for task in ("python", "javascript"):
        components.activate(task)
    names = [n for n, _ in components.model.named_parameters() if "lora_A" in n and ".full_layers." in n]
    assert sorted(
        {(n.split(".full_layers.")[1].split(".")[0], n.split("lora_A.")[1].split(".")[0]) for n in names}
    ) == [("javascript", "javascript"), ("python", "python")]
    trainable = {n for n, p in components.model.named_parameters() if p.requires_grad}
    assert trainable and all(".javascript." in n for n in trainable)


# ---- the extra block: x0.01 init and the seed's placement ------------------------------------------


def test_scaled_block_is_the_seeds_extra_layer(codet5_tiny_dir):
    """The seed rebuilds T5 with num_layers + 1, copies the base in and multiplies block N by 0.01;
    hybridcl's slot with init=scale holds the same block at the same place (before the final layer
    norm, reusing block 0's position bias): the same weights give the same logits."""
    from transformers import T5ForConditionalGeneration

    base = load_base(ModelConfig(name=str(codet5_tiny_dir)))
    model = base.model
    n = model.config.num_layers
    seed_config = copy.deepcopy(model.config)
    seed_config.num_layers = n + 1
    seed_model = T5ForConditionalGeneration(seed_config).eval()
    missing, unexpected = seed_model.load_state_dict(model.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith(f"encoder.block.{n}.") for k in missing)

    components = ComponentSet(
        model,
        base.kind,
        get_strategy("full_layer_only"),
        ComponentsConfig(full_layer=FullLayerSpec(init="scale", init_scale=0.01)),
    )
    components.activate("python")
    block = components.slot.full_layers["python"]
    assert torch.all(block.layer[0].layer_norm.weight == 0.01)  # layer norms too: every parameter x 0.01
    assert block.layer[0].SelfAttention.o.weight.abs().sum() > 0  # not the zero init
    # T5's _init_weights gives q std (d_model * d_kv)^-0.5 before the x0.01
    expected_std = 0.01 * (model.config.d_model * model.config.d_kv) ** -0.5
    assert abs(block.layer[0].SelfAttention.q.weight.std().item() / expected_std - 1) < 0.1
    assert set(seed_model.encoder.block[n].state_dict()) == set(block.state_dict())  # no position table of its own
    seed_model.encoder.block[n].load_state_dict(block.state_dict())
    batch = base.tokenizer(
        ["Complete Python: def f(x):", "Complete JavaScript: function g"], return_tensors="pt", padding=True
    )
    decoder = torch.tensor([[0, 1, 5, 9], [0, 1, 7, 3]])
    model.eval()
    with torch.no_grad():
        ours = components.model(**batch, decoder_input_ids=decoder).logits
        theirs = seed_model(**batch, decoder_input_ids=decoder).logits
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)


# ---- metrics ---------------------------------------------------------------------------------------


def test_bleu_reference_is_nltk_method1_on_the_tokenizers_tokens():
    preds = ["def f ( x ) : return y", "a b x y", "", "a b"]
    refs = ["def f ( x ) : return x", "a b c d", "a b", "A b"]
    method1 = SmoothingFunction().method1
    by_nltk = [
        100 * sentence_bleu([r.split()], p.split(), smoothing_function=method1) if p else 0.0
        for p, r in zip(preds, refs, strict=True)
    ]
    scores = bleu_reference_scores(preds, refs, str.split)
    assert scores == pytest.approx(by_nltk, abs=1e-12)
    assert scores == pytest.approx(
        [84.08964152537145, 16.990442448471224, 0.0, 14.95348781221221], abs=1e-9
    )  # case kept
    assert bleu_reference(preds, refs, str.split) == pytest.approx(sum(by_nltk) / 4, abs=1e-12)
    stats = example_stats("bleu_reference", preds, refs, tokenize=str.split)
    assert value("bleu_reference", stats.sum(0)) == pytest.approx(sum(by_nltk) / 4, abs=1e-12)
    with pytest.raises(ValueError, match="tokenize"):
        score(preds, refs, language="python", direction="completion", reference_metrics=True)
    out = score(preds, refs, language="python", direction="completion", reference_metrics=True, tokenize=str.split)
    assert out["bleu_reference"] == pytest.approx(sum(by_nltk) / 4, abs=1e-12) and "syntax_pass_reference" in out
    assert "bleu_reference" not in score(preds, refs, language="python", direction="completion")  # default unchanged


def test_syntax_pass_reference_is_the_seeds_check_misrouting_included():
    assert passes_seed("def f():\n    return 1", "def f(): pass", "python")
    assert not passes_seed("def f(:\n", "def f(): pass", "python")
    assert not passes_seed("   ", "x", "python")
    assert passes_seed("function g() {", "function g() {}", "javascript") is False  # one brace only
    assert passes_seed("{ not JavaScript at all }", "function g() {}", "javascript")  # braces are enough
    # a JavaScript reference that mentions `class ` (or import, def, print() is checked as Python
    assert not passes_seed("function g() { return 1; }", "class A { m() {} }", "javascript")
    assert passes_seed("anything", "no cue here", "go")
    assert syntax_pass_rate_seed(["def f(): pass", "def f(:"], ["", ""], "python") == 50.0
    preds, refs = ["function g() { return 1; }", "function h() {}"], ["function g() {}", "import x from 'y'"]
    stats = example_stats("syntax_pass_reference", preds, refs, language="javascript")
    assert stats[:, 0].tolist() == [100.0, 0.0]


# ---- the completion direction -----------------------------------------------------------------------


def test_completion_examples_prompts_and_copy():
    code = PY.code
    (whole,) = make_examples([PY], "completion")
    assert (whole.source, whole.target) == (code[: len(code) // 2], code)  # docstring kept, as CodeSearchNet's code
    (rest,) = make_examples([PY], "completion", completion_prefix=0.25, completion_target="rest")
    cut = int(len(code) * 0.25)
    assert (rest.source, rest.target) == (code[:cut], code[cut:])
    (copy_,) = make_examples([PY], "completion", copy=True)
    assert copy_.source == copy_.target == code and copy_.id == whole.id
    assert make_examples([Record("r", "b.py", "g", "python", "  \n", "Doc.")], "completion") == []
    with pytest.raises(DataError, match="completion"):
        make_examples([PY], "text-to-code", copy=True)
    assert format_prompt("def f(", "python", "completion", "seq2seq") == "Complete Python: def f("
    assert format_prompt("function g(", "javascript", "completion", "causal") == (
        "Complete this JavaScript function.\nStart:\nfunction g(\nCompletion:\n"
    )


def test_completion_encodes_for_both_kinds():
    from hybridcl.model.loading import load_base as load

    (ex,) = make_examples([PY], "completion")
    for name in ("tiny:t5", "tiny:llama"):
        base = load(ModelConfig(name=name))
        enc = encode([ex], base.tokenizer, base.kind, 256, 256, progress=False)
        labels = [t for t in enc.labels[0] if t != -100]
        text = base.tokenizer.decode(labels, skip_special_tokens=True)
        assert text == PY.code, name


def test_the_seeds_prompt_is_the_code_prefix_alone():
    """issue 23: the seed prompted its completions with the raw code prefix; `Complete Python: ` was hybridcl's."""
    from hybridcl.data.batching import encode_prompts
    from hybridcl.model.loading import load_base as load

    assert load_config("reference-original").data.prompt == "raw" and load_config("reference").data.prompt == "named"
    assert format_prompt("def f(", "python", "completion", "seq2seq", "raw") == "def f("
    assert format_prompt("function g(", "javascript", "completion", "causal", "raw") == "function g("
    (ex,) = make_examples([PY], "completion")
    for name in ("tiny:t5", "tiny:llama"):
        base = load(ModelConfig(name=name))
        (ids,), _ = encode_prompts(base.tokenizer, [ex.source], ["python"], "completion", base.kind, 256, prompt="raw")
        assert base.tokenizer.decode(ids, skip_special_tokens=True) == ex.source, name
        # training sees the same prompt: the labels follow the prompt's tokens
        enc = encode([ex], base.tokenizer, base.kind, 256, 256, progress=False, prompt="raw")
        source = enc.input_ids[0] if base.kind == "seq2seq" else enc.input_ids[0][: len(ids)]
        assert source == ids, name
        # a prompt longer than max_source_len keeps its start, as the seed's truncation=True did
        (cut,), (was_cut,) = encode_prompts(
            base.tokenizer, [ex.source], ["python"], "completion", base.kind, 8, prompt="raw"
        )
        assert was_cut and len(cut) == 8 and cut[:7] == ids[:7], name
    with pytest.raises(ConfigError, match="data.prompt = raw needs data.direction = completion"):
        load_config(overrides=["data.prompt=raw"])


def test_copy_objective_and_completion_config_checks():
    with pytest.raises(ConfigError, match="data.train_objective = copy needs data.direction = completion"):
        load_config(overrides=["data.train_objective=copy"])
    with pytest.raises(ConfigError, match="completion_prefix"):
        load_config(overrides=["data.direction=completion", "data.completion_prefix=1.0"])
    with pytest.raises(ConfigError, match="first_rows needs data.max_train and data.max_val"):
        load_config(overrides=["data.selection=first_rows", "data.max_val=null"])


def _rows(folder, language):
    out = []
    for file in sorted((folder / language).glob("train-*.jsonl.gz")):
        with gzip.open(file, "rt", encoding="utf-8") as handle:
            out += [json.loads(line)["func_code_string"] for line in handle]
    return out


def test_first_rows_selection_is_the_seeds_rows(hf_code_search_net_dir):
    cfg = DataConfig(
        source="hf",
        path=str(hf_code_search_net_dir),
        direction="completion",
        train_objective="copy",
        selection="first_rows",
        max_train=8,
        max_val=4,
    )
    data = load_task_data(cfg, "javascript", seed=123)
    rows = _rows(hf_code_search_net_dir, "javascript")
    assert [e.target for e in data.train] == rows[:8] and all(e.source == e.target for e in data.train)  # copy
    assert [e.target for e in data.val] == rows[8:12]  # "validation" = the next rows of the train split
    assert [e.source for e in data.val] == [r[: len(r) // 2] for r in rows[8:12]]
    assert data.report["valid"]["files"] == data.report["train"]["files"]
    assert load_task_data(cfg, "javascript", seed=7).val == data.val  # nothing drawn: the seed does not matter
    with pytest.raises(DataError, match="eval.split=valid"):
        load_task_data(cfg, "javascript", eval_split="test")


# ---- training switches --------------------------------------------------------------------------------


def test_unmasked_padding_pads_labels_with_the_pad_token():
    features = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    masked = collate(features, 0, "seq2seq")
    unmasked = collate(features, 0, "seq2seq", mask_padding=False)
    assert masked["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]
    assert unmasked["labels"].tolist() == [[5, 6, 7], [8, 0, 0]]
    causal = collate(
        [{"input_ids": [1, 2], "labels": [-100, 2]}, {"input_ids": [3], "labels": [3]}], 0, "causal", mask_padding=False
    )
    assert causal["labels"].tolist() == [[-100, 2], [3, 0]]  # the prompt stays masked, padding becomes a target


def test_unshuffled_batches_are_file_order():
    assert batch_indices([3, 9, 1, 7, 5], 2, shuffle=False, seed=0, group_by_length=False) == [[0, 1], [2, 3], [4]]


def _train_log(tmp_path, extra):
    from accelerate.state import AcceleratorState

    from hybridcl.training.loop import make_accelerator, train_task

    AcceleratorState._reset_state(reset_partial_state=True)
    config = load_config(overrides=["preset=smoke", "data.max_train=16", *extra])
    base = load_base(config.model)
    base.model.requires_grad_(True)
    encoded = encode(
        load_task_data(config.data, "python").train,
        base.tokenizer,
        base.kind,
        64,
        64,
        progress=False,
        long_targets="cut",
    )
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "log.jsonl"
    train_task(
        base.model,
        encoded,
        config.train,
        accelerator=make_accelerator(config.train, "cpu"),
        kind=base.kind,
        pad_token_id=base.tokenizer.pad_token_id,
        seed=0,
        task="python",
        log_path=log,
        progress=False,
    )
    AcceleratorState._reset_state(reset_partial_state=True)
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_constant_learning_rate_unshuffled_order_and_unmasked_loss(tmp_path):
    steps = ["train.max_steps=3", "train.batch_size=4", "train.lr=1.0e-3"]
    constant = _train_log(tmp_path / "c", ["train.lr_schedule=constant", *steps])
    assert [e["lr"] for e in constant] == [1e-3, 1e-3, 1e-3]
    linear = _train_log(tmp_path / "l", steps)
    assert [e["lr"] for e in linear] == pytest.approx([2e-3 / 3, 1e-3 / 3, 0.0])
    # the first batch's loss (before any update) depends on which examples it holds and on padding
    in_order = _train_log(tmp_path / "o", ["train.shuffle=false", "train.group_by_length=false", *steps])
    unmasked = _train_log(
        tmp_path / "u",
        ["train.shuffle=false", "train.group_by_length=false", "train.mask_padding_in_loss=false", *steps],
    )
    assert in_order[0]["loss"] != linear[0]["loss"] and unmasked[0]["loss"] != in_order[0]["loss"]


def test_no_repeat_ngram_size_reaches_generate(monkeypatch):
    base = load_base(ModelConfig(name="tiny:t5"))
    seen = []
    original = base.model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("no_repeat_ngram_size"))
        return original(*args, **kwargs)

    monkeypatch.setattr(base.model, "generate", spy)
    for size in (0, 2):
        generate_module.generate(
            base.model,
            base.tokenizer,
            ["x"],
            kind="seq2seq",
            settings=generate_module.GenerationSettings(max_new_tokens=3, no_repeat_ngram_size=size),
            progress=False,
        )
    # size 0: plain greedy, hybridcl's own loop (hybridcl.evaluation.greedy); the seed's 2 needs generate's
    # logits processor and reaches it
    assert seen == [2]
    assert generate_module.code_language("python", "completion") == "python"
    assert generate_module.code_language("python", "completion", "rest") is None


# ---- the preset end to end ---------------------------------------------------------------------------


def test_preset_seed_original_runs_end_to_end(codet5_tiny_dir, hf_code_search_net_dir, tmp_path, capsys):
    rc = main(
        [
            "run",
            "preset=reference-original",
            f"model.name={codet5_tiny_dir}",
            f"data.path={hf_code_search_net_dir}",
            "data.max_train=8",
            "data.max_val=4",
            "train.epochs=1",
            "eval.max_examples=3",
            "eval.max_new_tokens=24",
            "eval.bootstrap_resamples=50",
            "run.device=cpu",
            f"run.output_dir={tmp_path}",
            "run.name=so",
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    run = tmp_path / "so"
    results = json.loads((run / "results.json").read_text())
    config = results["config"] if "config" in results else None
    assert results["strategy"] == "hybrid_task_specific" and results["rows"] == ["base", "python", "javascript"]
    data = results["per_seed"][0]["data"]["python"]
    assert (data["direction"], data["selection"], data["train"]["kept"], data["valid"]["kept"]) == (
        "completion",
        "first_rows",
        8,
        4,
    )
    assert all("/train-" in f["path"] for f in data["valid"]["files"])
    for stage in results["per_seed"][0]["train"]:
        assert stage["n_examples"] == 8
    base = load_base(ModelConfig(name=str(codet5_tiny_dir)))
    method1 = SmoothingFunction().method1
    for row in range(3):
        for j, task in enumerate(("python", "javascript")):
            lines = [
                json.loads(line)
                for line in (run / "seed-42" / "predictions" / f"row{row}-{task}.jsonl").read_text().splitlines()
            ]
            assert len(lines) == 3
            expected = [
                100
                * sentence_bleu(
                    [base.tokenizer.tokenize(e["reference"])],
                    base.tokenizer.tokenize(e["prediction"]),
                    smoothing_function=method1,
                )
                if e["prediction"].strip()
                else 0.0
                for e in lines
            ]
            assert results["matrix"]["bleu_reference"][row][j]["mean"] == pytest.approx(sum(expected) / 3, abs=1e-9)
            passed = [passes_seed(e["prediction"], e["reference"], task) for e in lines]
            assert results["matrix"]["syntax_pass_reference"][row][j]["mean"] == pytest.approx(100 * sum(passed) / 3)
    report = (run / "report.md").read_text()
    assert "bleu_reference" in report and "syntax_pass_reference" in report
    assert config is None or config["data"]["direction"] == "completion"


def test_seed_original_runs_on_a_causal_model(tmp_path, capsys):
    """The flaw-by-flaw commands of docs/reproduction.md use a causal model: a Llama block with LoRA in it,
    the copy objective and unmasked padding on prompt + target sequences."""
    rc = main(
        [
            "run",
            "preset=reference-original",
            "model.name=tiny:llama",
            "data.source=bundled",
            "data.path=null",
            "components.lora.target_modules=[q_proj,k_proj,v_proj,o_proj,down_proj]",
            "data.max_train=8",
            "data.max_val=4",
            "data.max_source_len=64",
            "data.max_target_len=64",
            "train.epochs=1",
            "eval.max_examples=2",
            "eval.max_new_tokens=8",
            "eval.bootstrap_resamples=20",
            "run.device=cpu",
            f"run.output_dir={tmp_path}",
            "run.name=causal",
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "causal" / "results.json").read_text())
    assert results["params"]["lora_per_adapter"] > 0 and "bleu_reference" in results["matrix"]
    # task isolation with the task id: python's cells after javascript are python's own
    assert results["matrix"]["loss"][2][0] == results["matrix"]["loss"][1][0]
