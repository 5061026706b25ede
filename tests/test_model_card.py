"""The model card and provenance written with every export, and --push-to-hub's upload."""

import json

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from peft import PeftModel
from transformers import AutoModelForSeq2SeqLM

from hybridcl.cli import main
from hybridcl.config.experiment import load_config
from hybridcl.continual import run_experiment
from hybridcl.data.tasks import prompt_template
from hybridcl.inference.model_card import base_license, is_hub_id
from hybridcl.model.loading import load_base

SMALL = ["preset=smoke", "data.max_train=8", "data.max_val=4", "eval.max_new_tokens=4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    made = {}
    for strategy in ("hybrid_task_specific", "lora_only"):
        config = load_config(overrides=[*SMALL, f"strategy={strategy}"])
        made[strategy] = run_experiment(config, tmp_path_factory.mktemp(strategy) / "run", progress=False)
    return made


def export(capsys, run, form, out, *extra):
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--task", "python", f"--{form}", str(out), *extra]) == 0, (
        capsys.readouterr().err
    )
    return out


def test_merged_card_parses_names_everything_and_the_folder_loads(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(runs["hybrid_task_specific"].parent)  # a relative --run: the records stay absolute
    out = export(capsys, "run", "merged", tmp_path / "merged")
    card = ModelCard.load(out / "README.md")
    assert (card.data.library_name, card.data.pipeline_tag) == ("transformers", "text2text-generation")
    assert {"hybridcl", "python", "text-to-code", "hybrid_task_specific", "lora"} <= set(card.data.tags)
    info = json.loads((out / "hybridcl_export.json").read_text())
    assert info["run"] == str(runs["hybrid_task_specific"]) and info["base_model"] == "tiny:t5"
    assert info["merged_components"] == {"lora_adapters": ["python"], "full_layer": "python"}
    prefix, suffix = prompt_template("python", "text-to-code", "seq2seq")
    assert (info["prompt"]["prefix"], info["prompt"]["suffix"]) == (prefix, suffix) == ("Generate Python: ", "")
    assert info["data"] == [
        {
            "name": "cpython-stdlib",
            "version": "3.11.7",
            "url": "https://github.com/python/cpython/tree/v3.11.7/Lib",
            "license": "PSF-2.0",
        }
    ]
    seed = json.loads((runs["hybrid_task_specific"] / "seed-0" / "results.json").read_text())
    loss, (lo, hi) = seed["matrix"]["loss"][-1][0], seed["intervals"]["loss"]["cell_intervals"][-1][0]
    row = next(line for line in card.text.splitlines() if line.startswith("| loss |"))
    assert row.endswith(f"| {loss:.2f} [{lo:.2f}, {hi:.2f}] |")
    assert "Generate Python: Return the sum of two numbers." in card.text and "PSF-2.0" in card.text
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert model.config.num_layers == 3  # the full layer is a real encoder block


def test_peft_card_and_the_adapter_loads_with_peft(runs, tmp_path, capsys):
    out = export(capsys, runs["lora_only"], "peft", tmp_path / "adapter")
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft" and "PeftModel.from_pretrained" in card.text
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny:t5"
    base = load_base(load_config(overrides=SMALL).model)
    model = PeftModel.from_pretrained(base.model, out)
    lora = [n for n, _ in model.named_parameters() if "lora_A" in n]
    assert lora and all(torch.isfinite(p).all() for p in model.parameters())


def test_push_to_hub_uploads_the_export_folder(runs, tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(
        HfApi,
        "create_repo",
        lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)) or f"https://huggingface.co/{repo_id}",
    )
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)))
    out = export(capsys, runs["lora_only"], "peft", tmp_path / "adapter", "--push-to-hub", "me/cl-python", "--private")
    assert calls[0] == ("create", "me/cl-python", {"private": True, "exist_ok": True})
    upload = calls[1][1]
    assert upload["repo_id"] == "me/cl-python" and upload["folder_path"] == str(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "hybridcl_export.json",
    ]


def test_a_failed_upload_is_one_line_that_keeps_the_export(runs, tmp_path, capsys, monkeypatch):
    def refuse(self, repo_id, **kw):
        raise OSError("Invalid user token.")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    argv = ["export", "--run", str(runs["lora_only"]), "--task", "python", "--peft", str(tmp_path / "a")]
    assert main([*argv, "--push-to-hub", "me/x"]) == 2
    assert "--push-to-hub me/x: Invalid user token.; the export is in" in capsys.readouterr().err
    assert (tmp_path / "a" / "README.md").is_file()


def test_hub_bases_get_their_licence():
    assert is_hub_id("Salesforce/codet5-small") and not is_hub_id("tiny:t5") and not is_hub_id("/abs/model")
    assert base_license("Salesforce/codet5-small") == "apache-2.0"
    assert base_license("HuggingFaceTB/SmolLM2-135M-Instruct") == "apache-2.0"
    assert base_license("tiny:t5") is None


def test_an_embedded_base_is_named_by_its_hub_source_with_a_note():
    from huggingface_hub import ModelCard

    from hybridcl.inference.model_card import card_text

    info = {
        "form": "peft",
        "task": "python",
        "tasks": ["python"],
        "seed": 0,
        "hybridcl": "0",
        "strategy": "lora_only",
        "direction": "text-to-code",
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "base_model_config": "embedded:smollm2-135m-instruct",
        "base_license": "apache-2.0",
        "merged_components": {"lora_adapters": ["python"], "full_layer": None},
        "prompt": {"prefix": "p ", "suffix": " s", "example": "p x s"},
        "data": [],
    }
    card = ModelCard(card_text(info, [], "causal"))
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.license == "apache-2.0"
    assert "dequantised from a GGUF quantisation" in card.text and card.data.pipeline_tag == "text-generation"
