"""Strategies: which components a run trains, with which scope, plus an optional training rule.

A strategy is data. ``lora`` and ``full_layer`` are :class:`Scope` values; ``rule`` names the
baseline's hook on the training loop (see :mod:`hybridcl.strategies.rules`), which also says the
training stages (``joint``: one stage over every task). Code that branches on a strategy reads
these properties, never its name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hybridcl.errors import ConfigError, unknown_choice

SHARED_KEY = "shared"  # the name of the one copy of a shared component (adapter name, full-layer key)


class Scope(enum.StrEnum):
    """How a component is kept across tasks."""

    PER_TASK = "per_task"  # a fresh copy per task, frozen once its task ends
    SHARED = "shared"  # one copy, trained on every task in turn
    STACKED = "stacked"  # LoRA only: a fresh copy per task, every copy so far active together (O-LoRA)
    NONE = "none"  # the strategy has no such component

    @property
    def used(self) -> bool:
        return self is not Scope.NONE

    @property
    def per_task(self) -> bool:
        """Each task owns a copy, chosen by the task id (so task-agnostic inference has a choice)."""
        return self is Scope.PER_TASK

    def key(self, task: str) -> str:
        """The copy that serves ``task``: an adapter name or full-layer key."""
        return SHARED_KEY if self is Scope.SHARED else task

    def active_keys(self, task: str, created: list[str]) -> list[str]:
        """The copies active for ``task``, given the tasks ``created`` so far (stacked: all of them)."""
        return [self.key(t) for t in created] if self is Scope.STACKED else [self.key(task)]


@dataclass(frozen=True)
class Strategy:
    name: str
    lora: Scope
    full_layer: Scope
    train_base: bool = False  # unfreeze the whole base model (naive fine-tuning baselines)
    rule: str | None = None  # replay | ewc | o_lora | joint
    description: str = ""

    @property
    def isolates_tasks(self) -> bool:
        """With a task id, a trained task's parts never change again (per-task parts on a frozen base)."""
        scopes = (self.lora, self.full_layer)
        return (
            not self.train_base
            and any(s.used for s in scopes)
            and all(s in (Scope.PER_TASK, Scope.NONE) for s in scopes)
        )

    @property
    def sequential(self) -> bool:
        """Tasks are trained one stage after another, so a finished run can learn more (not ``joint``)."""
        return self.rule != "joint"

    @property
    def routable(self) -> bool:
        """Some component is per task, so a prompt's task can be chosen without the task id."""
        return self.lora.per_task or self.full_layer.per_task


def _strategy(name, lora, full_layer, **kwargs) -> Strategy:
    return Strategy(name, Scope(lora), Scope(full_layer), **kwargs)


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        _strategy("lora_only", lora="per_task", full_layer="none", description="a fresh LoRA adapter per task"),
        _strategy(
            "full_layer_only",
            lora="none",
            full_layer="per_task",
            description="a fresh extra transformer block per task",
        ),
        _strategy(
            "hybrid_task_specific",
            lora="per_task",
            full_layer="per_task",
            description="per-task LoRA + per-task extra block",
        ),
        _strategy(
            "hybrid_shared_layer",
            lora="per_task",
            full_layer="shared",
            description="per-task LoRA + one extra block trained on every task",
        ),
        _strategy(
            "full_finetune",
            lora="none",
            full_layer="none",
            train_base=True,
            description="naive sequential fine-tuning of the whole model (forgetting upper bound)",
        ),
        _strategy(
            "joint",
            lora="none",
            full_layer="none",
            train_base=True,
            rule="joint",
            description="multi-task fine-tuning on all tasks at once (quality upper bound)",
        ),
        _strategy(
            "replay",
            lora="shared",
            full_layer="shared",
            rule="replay",
            description="shared LoRA + shared block, earlier tasks' examples mixed into later tasks",
        ),
        _strategy(
            "ewc",
            lora="shared",
            full_layer="shared",
            rule="ewc",
            description="shared LoRA + shared block with an EWC penalty on their weights",
        ),
        _strategy(
            "o_lora",
            lora="stacked",
            full_layer="none",
            rule="o_lora",
            description="a new LoRA per task, all active together, kept orthogonal to earlier tasks'",
        ),
    )
}

# The seed's four strategies first, then the baselines: the order of `strategy=all` and comparisons.
SEED_STRATEGIES = ("lora_only", "full_layer_only", "hybrid_task_specific", "hybrid_shared_layer")
ALL_STRATEGIES = (*SEED_STRATEGIES, *(s for s in STRATEGIES if s not in SEED_STRATEGIES))


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ConfigError(unknown_choice("strategy", name, STRATEGIES))
    return STRATEGIES[name]
