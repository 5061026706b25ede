"""Export one task's model from a run, for use without hybridcl.

- :func:`export_merged` writes a plain Hugging Face model folder (config, safetensors weights,
  tokenizer) that ``transformers`` loads on its own: the task's LoRA adapter merged into the base
  weights (PEFT ``merge_and_unload``) and the task's full layer turned into a real extra layer of
  the architecture at its position (seq2seq/T5: the stack that holds it gets one more block,
  ``num_layers`` and ``num_decoder_layers`` both written explicitly; causal: ``num_hidden_layers +
  1`` decoder layers), the block's weights stored under its index in the stack and the blocks
  after it one index up.
- :func:`export_peft` writes the task's LoRA adapter in PEFT's own format
  (``PeftModel.from_pretrained(base, folder)``), for LoRA-only strategies.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import torch

from hybridcl.errors import RunError, describe_os_error


def _empty_target(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{out} exists and is not an empty folder: choose another output folder or delete it")
    return out


def _check_task(run, task: str) -> str:
    if task == "auto":
        names = ", ".join(run.config.task_names)
        raise RunError(f"export needs one task's components: pass --task with one of {names}")
    return run.check_task(task)


def export_merged(run_dir: str | Path, task: str, out: str | Path, *, seed: int | None = None) -> Path:
    """Write ``task``'s model of ``run_dir`` as a plain transformers folder at ``out``; return ``out``."""
    from peft import PeftModel

    from hybridcl.inference.load import load_run
    from hybridcl.model.full_layer import family_of, find_slot

    out = _empty_target(out)
    run = load_run(run_dir, seed=seed)
    task = _check_task(run, task)
    components = run.components
    components.route(task)
    model = components.model
    merged = {
        "lora_adapters": components.adapter_keys(task) if isinstance(model, PeftModel) else [],
        "full_layer": components.layer_key(task) if components.slot is not None else None,
    }
    if isinstance(model, PeftModel):
        dtype = next(model.parameters()).dtype
        # Merge in float64 and round once: W + scale * B @ A lands on the nearest representable weight.
        model.to(torch.float64)
        # stacked (O-LoRA): every adapter trained so far is active for every task, so all are merged
        model = model.merge_and_unload(adapter_names=components.adapter_keys(task))
        model.to(dtype)
    if components.slot is not None:
        family = family_of(model)
        slot = find_slot(model)
        blocks = family.stacks(model)[slot.placement.stack] if slot is not None else None
        if slot is None or blocks[slot.placement.after] is not slot:
            raise RunError(
                f"run {run.run_dir}: the full-layer slot is not where its position puts it; this run cannot be exported"
            )
        # the block takes the slot's index: its weights are saved under it, the blocks after it one index up
        blocks[slot.placement.after] = slot.full_layers[components.layer_key(task)]
        if family.name == "t5":
            model.config.num_layers = len(model.get_encoder().block)
            model.get_encoder().config.num_layers = model.config.num_layers
            model.config.num_decoder_layers = len(model.get_decoder().block)
        # causal stacks and a T5 decoder: attach_slot already counted the slot in the config.
    model.config.use_cache = True
    with _writing(out), tempfile.TemporaryDirectory(dir=_parent(out), prefix=f".{out.name}.") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        run.tokenizer.save_pretrained(tmp)
        _write_provenance(Path(tmp), run, task, "merged", merged)
        _move_into(Path(tmp), out)
    return out


def export_peft(run_dir: str | Path, task: str, out: str | Path, *, seed: int | None = None) -> Path:
    """Write ``task``'s LoRA adapter of ``run_dir`` in PEFT's format at ``out``; return ``out``.

    Only for strategies whose components are LoRA adapters alone: a full layer or trained base
    weights have no place in a PEFT adapter (export those with :func:`export_merged`).
    """
    from peft import PeftModel

    from hybridcl.inference.load import load_run
    from hybridcl.model.loading import base_model_id

    out = _empty_target(out)
    run = load_run(run_dir, seed=seed)
    task = _check_task(run, task)
    strategy = run.components.strategy
    if not strategy.lora.used or not isinstance(run.model, PeftModel):
        raise RunError(f"run {run.run_dir} ({strategy.name}) has no LoRA adapter: export it with --merged")
    if strategy.full_layer.used or strategy.train_base:
        raise RunError(
            f"run {run.run_dir} ({strategy.name}) has a full layer or trained base weights, which a PEFT "
            "adapter cannot hold: export it with --merged"
        )
    keys = run.components.adapter_keys(task)
    if len(keys) > 1:
        raise RunError(
            f"run {run.run_dir} ({strategy.name}) uses all its adapters together, which one PEFT adapter "
            "cannot hold: export it with --merged"
        )
    (key,) = keys
    name = run.config.model.name
    with _writing(out), tempfile.TemporaryDirectory(dir=_parent(out), prefix=f".{out.name}.") as tmp:
        run.model.save_pretrained(tmp, selected_adapters=[key], safe_serialization=True)
        folder = Path(tmp) if key == "default" else Path(tmp) / key  # PEFT puts named adapters in a subfolder
        config_file = folder / "adapter_config.json"
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = base_model_id(name)  # never null, never relative to the cwd
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        _write_provenance(folder, run, task, "peft", {"lora_adapters": [key], "full_layer": None})
        _move_into(folder, out)
    return out


@contextlib.contextmanager
def _writing(out: Path):
    """A failed write (disk full, read-only, no permission, name too long) is one ``RunError`` naming
    ``out``, not the temporary folder; safetensors reports its own I/O errors as ``SafetensorError``."""
    from safetensors import SafetensorError

    try:
        yield
    except OSError as exc:
        raise RunError("cannot export to " + describe_os_error(exc, out)) from exc
    except SafetensorError as exc:
        raise RunError(
            f"cannot export to {out}: {str(exc).splitlines()[0]}: check free space and permissions there"
        ) from exc


def _parent(out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    return str(out.parent)


def _move_into(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        shutil.move(str(item), str(out / item.name))


def _write_provenance(folder: Path, run, task: str, form: str, merged: dict) -> None:
    """``hybridcl_export.json`` (what was exported from where, by name and absolute path only) and the
    model card ``README.md``."""
    from hybridcl import __version__
    from hybridcl.inference.model_card import base_license, card_text, data_sources, prompt_info, task_column
    from hybridcl.model.loading import base_model_id

    base = base_model_id(run.config.model.name)
    info = {
        "hybridcl": __version__,
        "run": str(Path(run.run_dir).resolve()),
        "seed": run.seed,
        "task": task,
        "tasks": run.config.task_names,
        "form": form,
        "strategy": run.config.strategy,
        "base_model": base,
        "base_model_config": run.config.model.name,
        "base_license": base_license(base),
        "merged_components": merged,
        "components": str(Path(run.stage_dir).resolve() / "components.safetensors"),
        "direction": run.config.task(task).direction,
        "prompt": prompt_info(run.config, task, run.kind),
        "data": data_sources(run.config, task),
    }
    (folder / "hybridcl_export.json").write_text(json.dumps(info, indent=2) + "\n")
    column = task_column(run.run_dir, run.seed, task, run.config.task(task).direction)
    (folder / "README.md").write_text(card_text(info, column, run.kind), encoding="utf-8")
