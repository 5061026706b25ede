"""Strategies: which components a run trains, with which scope, plus an optional training rule.

A strategy is data. ``lora`` and ``full_layer`` are scopes: ``per_task`` (a fresh copy per task,
frozen once its task ends), ``shared`` (one copy trained on every task in turn), ``stacked`` (LoRA
only: a fresh copy per task, all copies so far active together, as in O-LoRA) or ``none``.
``rule`` names the baseline's hook on the training loop (see ``hybridcl.strategies.rules``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["per_task", "shared", "stacked", "none"]


@dataclass(frozen=True)
class Strategy:
    name: str
    lora: Scope
    full_layer: Scope
    train_base: bool = False  # unfreeze the whole base model (naive fine-tuning baselines)
    rule: str | None = None  # replay | ewc | o_lora | joint
    description: str = ""


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("lora_only", lora="per_task", full_layer="none",
                 description="a fresh LoRA adapter per task"),
        Strategy("full_layer_only", lora="none", full_layer="per_task",
                 description="a fresh extra transformer block per task"),
        Strategy("hybrid_task_specific", lora="per_task", full_layer="per_task",
                 description="per-task LoRA + per-task extra block"),
        Strategy("hybrid_shared_layer", lora="per_task", full_layer="shared",
                 description="per-task LoRA + one extra block trained on every task"),
        Strategy("full_finetune", lora="none", full_layer="none", train_base=True,
                 description="naive sequential fine-tuning of the whole model (forgetting upper bound)"),
        Strategy("joint", lora="none", full_layer="none", train_base=True, rule="joint",
                 description="multi-task fine-tuning on all tasks at once (quality upper bound)"),
        Strategy("replay", lora="shared", full_layer="shared", rule="replay",
                 description="shared LoRA + shared block, earlier tasks' examples mixed into later tasks"),
        Strategy("ewc", lora="shared", full_layer="shared", rule="ewc",
                 description="shared LoRA + shared block with an EWC penalty on their weights"),
        Strategy("o_lora", lora="stacked", full_layer="none", rule="o_lora",
                 description="a new LoRA per task, all active together, kept orthogonal to earlier tasks'"),
    )
}

SEED_STRATEGIES = ("lora_only", "full_layer_only", "hybrid_task_specific", "hybrid_shared_layer")


def get_strategy(name: str) -> Strategy:
    from hybridcl.config import _unknown
    from hybridcl.errors import ConfigError

    if name not in STRATEGIES:
        raise ConfigError(_unknown("strategy", name, STRATEGIES))
    return STRATEGIES[name]
