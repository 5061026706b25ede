"""The architecture and parameter table (``hybridcl params``).

Counts come from building the model and its components for real, on PyTorch's meta device (shapes
without memory or weights), so they need only the architecture config.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from hybridcl.config.experiment import ExperimentConfig
from hybridcl.model.components import ComponentSet
from hybridcl.model.full_layer import SLOT_ATTR, family_of
from hybridcl.model.loading import base_config, model_class
from hybridcl.model.parameters import count_parameters, is_lora_param
from hybridcl.strategies import SEED_STRATEGIES, get_strategy

T5_TARGET_OPTIONS = (("q", "v"), ("q", "k", "v", "o"), ("q", "k", "v", "o", "wi"), ("q", "k", "v", "o", "wi", "wo"))
LLAMA_TARGET_OPTIONS = (
    ("q_proj", "v_proj"),
    ("q_proj", "k_proj", "v_proj", "o_proj"),
    ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
)


def build_components(config: ExperimentConfig, strategy: str, n_tasks: int) -> ComponentSet:
    """The model and ``strategy``'s components after ``n_tasks`` tasks, on the meta device."""
    arch = base_config(config.model)
    with torch.device("meta"):
        model = model_class(arch).from_config(arch)
        model.requires_grad_(False)
        components = ComponentSet(
            model, "seq2seq" if arch.is_encoder_decoder else "causal", get_strategy(strategy), config.components
        )
        for task in config.task_names[:n_tasks]:
            components.activate(task)
    return components


def check_architecture(config: ExperimentConfig) -> None:
    """Raise, before anything trains, the error the run would raise when it builds its components
    (e.g. a ``components.full_layer.position`` the model does not have). Builds the architecture on
    the meta device, from its config alone; with the default position there is nothing to check."""
    if config.components.full_layer.position != "auto":
        build_components(config, config.strategy, 0)


def lora_count(model: nn.Module, targets: tuple[str, ...], r: int, include_full_layer: bool = False) -> int:
    """LoRA parameters r*(in+out) over the linear layers named in ``targets``."""
    total = 0
    for name, module in model.named_modules():
        if name.split(".")[-1] not in targets or (f".{SLOT_ATTR}." in name and not include_full_layer):
            continue
        if is_lora_param(name) or not hasattr(module, "weight") or module.weight.dim() != 2:
            continue
        total += r * sum(module.weight.shape)
    return total


def matched_lora_rank(config: ExperimentConfig, target: str = "hybrid_task_specific") -> tuple[int, int, int]:
    """``(r, lora_count_at_r, target_count)``: the LoRA rank (on the config's LoRA targets) whose adapter
    has the trainable count nearest ``target``'s per task, for a parameter-matched LoRA-only. A LoRA count
    is linear in r (r * (in + out) per adapted matrix), so r = round(target / count at r = 1), at least 1.
    Keep ``components.lora.alpha / r`` as configured to keep LoRA's scaling."""
    reference = build_components(config, target, 1)
    wanted = count_parameters(reference).trainable
    targets = tuple(config.components.lora.target_modules or family_of(reference.base).lora_targets)
    per_rank = lora_count(reference.model, targets, 1, include_full_layer=config.components.lora.on_full_layer)
    r = max(1, round(wanted / per_rank))
    return r, r * per_rank, wanted


def params_table(config: ExperimentConfig) -> str:
    r = config.components.lora.r
    T = len(config.task_names)
    reference = build_components(config, "hybrid_task_specific", 1)
    counts = count_parameters(reference)
    family = family_of(reference.base)
    base = counts.base
    targets = tuple(config.components.lora.target_modules or family.lora_targets)

    def pct(n: int) -> str:
        return f"{100 * n / base:.2f}%"

    on_block = config.components.lora.on_full_layer
    lora_label = f"LoRA adapter r={r} on {','.join(targets)}" + (" (+ the extra block)" if on_block else "")
    block_label = f"full layer (one {type(reference.slot.full_layers[config.task_names[0]]).__name__})"
    placement = reference.slot.placement
    lines = [
        f"model {config.model.name}  ({reference.base.config.model_type}, {reference.kind}); tasks: "
        f"{', '.join(config.task_names)}",
        f"full layer at components.full_layer.position={config.components.full_layer.position}: "
        f"{placement.describe()} ({placement.position})",
        "",
        f"{'component':<60}{'params':>14}{'% of base':>11}",
        f"{'base model (frozen)':<60}{base:>14,}{'':>11}",
        f"{lora_label:<60}{counts.lora_per_adapter:>14,}{pct(counts.lora_per_adapter):>11}",
        f"{block_label:<60}{counts.full_layer_per_block:>14,}{pct(counts.full_layer_per_block):>11}",
        "",
        f"LoRA r={r} by target modules:",
    ]
    options = (
        T5_TARGET_OPTIONS if family.name == "t5" else LLAMA_TARGET_OPTIONS if family.name == "llama" else (targets,)
    )
    for option in options:
        lines.append(f"  {','.join(option):<58}{lora_count(reference.model, option, r):>14,}")
        if family.name == "t5" and option == ("q", "k", "v", "o", "wi"):
            n = lora_count(reference.model, option, r, include_full_layer=True)
            lines.append(f"  {','.join(option) + ' + the extra block':<58}{n:>14,}")
    if family.name == "t5":
        lines.append(
            "  (the seed reports 1.78M: its LoRA targets q,k,v,o,wi_0,wi_1,wo, of which codet5-small has\n"
            "   q,k,v,o,wo (wo: the same size as wi), on the base and on its extra block: 1,777,664;\n"
            "   components.lora.on_full_layer=true does the same, preset=reference-original sets it)"
        )
    lines += ["", f"{'strategy':<24}{'trainable per task':>20}{'% of base':>11}{f'stored after {T} tasks':>24}"]
    for name in dict.fromkeys((*SEED_STRATEGIES, config.strategy)):
        if name not in SEED_STRATEGIES and (name == "all" or get_strategy(name).train_base):
            continue
        components = build_components(replace(config, strategy=name), name, T)
        c = count_parameters(components)
        marker = "  <- config" if name == config.strategy else ""
        lines.append(f"{name:<24}{c.trainable:>20,}{pct(c.trainable):>11}{c.stored_total:>24,}{marker}")
    matched_r, matched, hybrid = matched_lora_rank(config)
    lines.append(
        f"parameter-matched LoRA-only: components.lora.r={matched_r} ({matched:,} trainable per task, "
        f"the task-specific hybrid {hybrid:,})"
    )
    return "\n".join(lines)
