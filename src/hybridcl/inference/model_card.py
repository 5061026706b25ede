"""The model card (``README.md``) written with every export, and the upload to the Hugging Face Hub.

The card opens with the hub's metadata header (``huggingface_hub.ModelCardData``: base model,
licence, library, pipeline tag, tags) and says what the folder holds: the task and direction, the
strategy and which components were merged (or the adapter), the prompt template with an example,
the task's column of the run's matrix with its 95% intervals, how to load the folder, and where
the training data came from under which licences (the bundled corpus's manifest).
"""

from __future__ import annotations

import json
from pathlib import Path

from hybridcl.data.tasks import prompt_template
from hybridcl.errors import RunError

# Licences of the bases hybridcl names in its presets, for cards written offline; other hub models
# are looked up in the local hub cache (their own card's ``license``).
KNOWN_LICENSES = {
    "Salesforce/codet5-small": "apache-2.0",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0",
}
# Metrics shown in the card, by direction: the loss, the direction's BLEU, code checks.
CARD_METRICS = {
    "code-to-text": ("loss", "bleu_codexglue_code_to_text", "exact_match"),
    "text-to-code": ("loss", "bleu_codexglue_text_to_code", "syntax_pass", "codebleu", "exact_match"),
    "completion": ("loss", "bleu_codexglue_text_to_code", "syntax_pass", "codebleu", "exact_match"),
}
EXAMPLE_SOURCE = {
    "text-to-code": "Return the sum of two numbers.",
    "code-to-text": "def add(a, b):\n    return a + b",
    "completion": "def add(a, b):\n",
}


def is_hub_id(name: str) -> bool:
    """``owner/name`` that is not a local path: what the hub's ``base_model`` field accepts."""
    return name.count("/") == 1 and ":" not in name and not Path(name).exists() and not name.startswith((".", "/"))


def base_license(hub_id: str) -> str | None:
    """The base model's licence: known for the presets' bases, else from its card in the local hub cache."""
    if hub_id in KNOWN_LICENSES:
        return KNOWN_LICENSES[hub_id]
    if not is_hub_id(hub_id):
        return None
    from huggingface_hub import ModelCard, try_to_load_from_cache

    path = try_to_load_from_cache(hub_id, "README.md")
    if not isinstance(path, str):
        return None
    return ModelCard.load(path).data.license


def prompt_info(config, task: str, kind: str) -> dict:
    """The prompt template of ``task`` (``prefix`` + source + ``suffix``) and one example prompt."""
    record = config.task(task)
    prefix, suffix = prompt_template(record.language, record.direction, kind)
    example = EXAMPLE_SOURCE[record.direction]
    return {"prefix": prefix, "suffix": suffix, "example": f"{prefix}{example}{suffix}"}


def data_sources(config, task: str) -> list[dict]:
    """Where ``task``'s training data came from: the bundled corpus's sources (name, URL, licence), or
    the configured source."""
    from hybridcl.data.tasks import task_data_config

    data = task_data_config(config.data, config.task(task))
    if data.source == "bundled":
        from hybridcl.data.readers import bundled_dir

        manifest = json.loads((bundled_dir() / "manifest.json").read_text(encoding="utf-8"))
        sources = manifest["languages"].get(config.task(task).language, {}).get("sources", [])
        return [{k: s.get(k) for k in ("name", "version", "url", "license")} for s in sources]
    if data.source in ("codesearchnet", "hf"):
        return [
            {
                "name": "CodeSearchNet",
                "url": "https://github.com/github/CodeSearchNet",
                "license": "the licence of each source repository (CodeSearchNet lists them)",
            }
        ]
    return [{"name": f"{data.source} records", "url": str(data.path) if data.path else None, "license": "unknown"}]


def task_column(run_dir: Path, seed: int, task: str, direction: str) -> list[dict]:
    """``task``'s cells of the run's matrix (seed ``seed``): per metric, the base, right after the task's
    own training and after the last stage (this export), each with its 95% interval where it has one."""
    path = Path(run_dir) / f"seed-{seed}" / "results.json"
    if not path.is_file():
        raise RunError(f"{path} is missing: the run is not finished (`hybridcl run --resume {run_dir}`)")
    results = json.loads(path.read_text(encoding="utf-8"))
    j, rows = results["tasks"].index(task), results["rows"]
    picks = [("base", 0), ("after its own training", rows.index(task) if task in rows else None)]
    picks.append(("this model (after the last stage)", len(rows) - 1))
    out = []
    for metric in CARD_METRICS[direction]:
        cells = results["matrix"].get(metric)
        if not cells:
            continue
        intervals = (results.get("intervals", {}).get(metric) or {}).get("cell_intervals")
        values = {}
        for label, i in picks:
            if i is not None and cells[i][j] is not None:
                values[label] = {"value": cells[i][j], "interval": intervals[i][j] if intervals else None}
        out.append({"metric": metric, "cells": values})
    return out


def _cell(cell: dict | None) -> str:
    if cell is None:
        return "-"
    text = f"{cell['value']:.2f}"
    return text if cell["interval"] is None else f"{text} [{cell['interval'][0]:.2f}, {cell['interval'][1]:.2f}]"


def _load_snippet(info: dict, kind: str, form: str) -> list[str]:
    auto = "AutoModelForSeq2SeqLM" if kind == "seq2seq" else "AutoModelForCausalLM"
    example = json.dumps(info["prompt"]["example"])
    if form == "merged":
        load = [
            f"from transformers import AutoTokenizer, {auto}",
            "",
            'folder = "path/to/this/folder"  # or the hub repo id it was pushed to',
            f"model = {auto}.from_pretrained(folder)",
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
        ]
    else:
        base = info["base_model"]
        load = [
            "from peft import PeftModel",
            f"from transformers import AutoTokenizer, {auto}",
            "",
            f"base = {auto}.from_pretrained({json.dumps(base)})",
            'model = PeftModel.from_pretrained(base, "path/to/this/folder")  # or the hub repo id',
            f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(base)})",
        ]
        if not is_hub_id(base):
            load.insert(0, f"# {base} is not on the hub: build it as hybridcl does (hybridcl.model.loading.load_base)")
    return [
        "```python",
        *load,
        f"inputs = tokenizer({example}, return_tensors='pt')",
        "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0], skip_special_tokens=True))",
        "```",
    ]


def _base_note(info: dict) -> str:
    """What differs between the base trained on and the named one (an embedded model's quantisation)."""
    configured = info.get("base_model_config", "")
    if configured.startswith("embedded:") and configured != info["base_model"]:
        return (
            f"; trained on `{configured}`, hybridcl's copy of it dequantised from a GGUF quantisation, "
            "so its weights differ slightly from the hub's"
        )
    return ""


def card_text(info: dict, column: list[dict], kind: str) -> str:
    """The card: the hub metadata header, then the sections the module docstring lists."""
    from huggingface_hub import ModelCard

    form, task = info["form"], info["task"]
    base = info["base_model"]
    merged = info["merged_components"]
    parts = [f"LoRA adapters {', '.join(merged['lora_adapters'])}"] if merged["lora_adapters"] else []
    parts += [f"the full layer `{merged['full_layer']}` as a real block"] if merged["full_layer"] else []
    what = "merged into the base weights: " if form == "merged" else "the PEFT adapter: "
    labels = ["base", "after its own training", "this model (after the last stage)"]
    prompt = info["prompt"]
    lines = [
        f"# {info['base_model']} + hybridcl `{info['strategy']}`: {task} ({info['direction']})",
        "",
        f"Trained with hybridcl {info['hybridcl']}, continual learning of code models "
        f"with hybrid parameter-efficient components, on the tasks {', '.join(info['tasks'])} in that order "
        f"(seed {info['seed']}). This folder is the model for the task **{task}**.",
        "",
        f"- base model: `{base}` (licence: {info['base_license'] or 'unknown'})" + _base_note(info),
        f"- strategy: `{info['strategy']}`; components {what}{'; '.join(parts) or 'none'}",
        f"- direction: {info['direction']}",
        "",
        "## Prompt",
        "",
        f"The source text between the prefix {json.dumps(prompt['prefix'])} and the suffix "
        f"{json.dumps(prompt['suffix'])}, as in training. Example:",
        "",
        "```text",
        prompt["example"],
        "```",
        "",
        f"## Scores on {task}'s evaluation examples",
        "",
        "Cells of the run's matrix for this task, with 95% bootstrap intervals over the examples.",
        "",
        "| metric | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
        *(f"| {c['metric']} | " + " | ".join(_cell(c["cells"].get(label)) for label in labels) + " |" for c in column),
        "",
        "## How to load it",
        "",
        *_load_snippet(info, kind, form),
        "",
        "## Training data",
        "",
        *(
            f"- {s['name']} {s.get('version') or ''}: {s.get('url') or '-'} (licence: {s['license']})"
            for s in info["data"]
        ),
        "",
    ]
    return ModelCard(f"---\n{_card_data(info, kind).to_yaml()}\n---\n\n" + "\n".join(lines)).content


def _card_data(info: dict, kind: str):
    """The card's hub metadata (``huggingface_hub.ModelCardData``)."""
    from huggingface_hub import ModelCardData

    base = info["base_model"]
    return ModelCardData(
        base_model=base if is_hub_id(base) else None,
        license=info["base_license"] or "other",
        license_name=None if info["base_license"] else "unknown",
        library_name="peft" if info["form"] == "peft" else "transformers",
        pipeline_tag="text2text-generation" if kind == "seq2seq" else "text-generation",
        tags=["hybridcl", "continual-learning", "code", info["task"], info["direction"], info["strategy"]]
        + (["lora"] if info["merged_components"]["lora_adapters"] else []),
    )


def push_to_hub(folder: Path, repo_id: str, *, private: bool = False) -> str:
    """Upload ``folder`` (an export) to the hub repository ``repo_id`` (created if missing); return its URL.

    Uses the token of ``huggingface-cli login`` / ``HF_TOKEN``."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload hybridcl export")
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise RunError(
            f"--push-to-hub {repo_id}: {str(exc).splitlines()[0]}; the export is in {folder}: log in with "
            "`huggingface-cli login` (or set HF_TOKEN) and upload it with `huggingface-cli upload`"
        ) from None
    return str(url)
