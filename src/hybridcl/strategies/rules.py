"""Training rules of the baseline strategies: small hooks on the one training loop.

- ``replay``: a share of each later task's training examples is drawn from earlier tasks' buffers.
- ``joint``: one stage, trained on every task's examples.
- ``ewc``: Elastic Weight Consolidation (Kirkpatrick et al. 2017): after each task the diagonal
  empirical Fisher information of the trainable weights is estimated from per-example gradients
  of the training loss; later tasks pay
  ``lambda/2 * sum F * (theta - theta*)^2``.
- ``o_lora``: orthogonal subspaces for each task's LoRA (see :class:`OLoRA`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from hybridcl.config.experiment import ExperimentConfig
from hybridcl.data.batching import Encoded, collate
from hybridcl.data.tasks import Example, TaskData
from hybridcl.errors import ConfigError
from hybridcl.strategies import Strategy
from hybridcl.training.loss import token_scores


@dataclass(frozen=True)
class Stage:
    """One training stage: its name (a row label of the matrix, a checkpoint's name) and the tasks it trains on."""

    name: str
    tasks: list[str]


class Rule:
    """The plain rule: one stage per task, trained on the stage's own examples, no penalty."""

    def __init__(self, config: ExperimentConfig, data: dict[str, TaskData]):
        self.config = config
        self.data = data

    def stages(self, tasks: list[str]) -> list[Stage]:
        return [Stage(t, [t]) for t in tasks]

    def training_examples(self, stage_tasks: list[str], seed: int) -> list[Example]:
        return [ex for t in stage_tasks for ex in self.data[t].train]

    def penalty(self, model: torch.nn.Module) -> torch.Tensor | None:
        return None

    def train_record(self) -> dict:
        """What the rule did for the last stage, for that stage's train record (empty by default)."""
        return {}

    def after_task(self, components, stage_tasks: list[str], encoded: Encoded, base) -> None:
        pass

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


class Joint(Rule):
    """Multi-task training: one stage, ``joint``, over every task's examples."""

    def stages(self, tasks: list[str]) -> list[Stage]:
        return [Stage("joint", list(tasks))]


class Replay(Rule):
    """Mix earlier tasks' examples into later tasks: ``replay_ratio`` of each stage's examples.

    A later task with ``n`` own examples trains on ``n`` + ``round(n * ratio / (1 - ratio))``
    examples, the added ones drawn without repetition from a buffer of ``replay_buffer`` random
    training examples per earlier task (all of them when ``replay_buffer`` is None). A buffer that
    cannot hold the share is a :class:`ConfigError` raised when the rule is made, before any
    training: the configured share is replayed or the run does not start. ``last_stats`` holds what
    the last call of :meth:`training_examples` replayed, for the task's train record.
    """

    def __init__(self, config: ExperimentConfig, data: dict[str, TaskData]):
        super().__init__(config, data)
        self.last_stats: dict[str, float | int] = {}
        order = [t for t in config.task_names if t in data]
        for k, task in enumerate(order[1:], start=1):
            self._check_buffer(task, order[:k])

    def _n_replay(self, task: str) -> int:
        ratio = self.config.baselines.replay_ratio
        return round(len(self.data[task].train) * ratio / (1 - ratio))

    def _buffer_size(self, task: str) -> int:
        cap = self.config.baselines.replay_buffer
        n = len(self.data[task].train)
        return n if cap is None else min(cap, n)

    def _check_buffer(self, task: str, earlier: list[str]) -> None:
        need = self._n_replay(task)
        held = sum(self._buffer_size(t) for t in earlier)
        if need <= held:
            return
        opts = self.config.baselines
        available = sum(len(self.data[t].train) for t in earlier)
        asked = (
            f"baselines.replay_ratio = {opts.replay_ratio} asks task {task} ({len(self.data[task].train)} training "
            f"examples) to replay {need} examples from {', '.join(earlier)}"
        )
        if need > available:
            raise ConfigError(
                f"{asked}, which have only {available} training examples: lower baselines.replay_ratio "
                f"or give the earlier tasks more data (data.max_train)"
            )
        cap = next(
            c
            for c in range(opts.replay_buffer or 0, need + 1)
            if sum(min(c, len(self.data[t].train)) for t in earlier) >= need
        )
        raise ConfigError(
            f"{asked}, but baselines.replay_buffer = {opts.replay_buffer} keeps only {held}: set "
            f"baselines.replay_buffer to at least {cap} (or null: as many as the share needs) or lower "
            f"baselines.replay_ratio"
        )

    def training_examples(self, stage_tasks: list[str], seed: int) -> list[Example]:
        own = super().training_examples(stage_tasks, seed)
        order = self.config.task_names
        earlier = order[: order.index(stage_tasks[0])]
        replayed: list[Example] = []
        if earlier:
            rng = random.Random(seed)
            buffer = [ex for t in earlier for ex in rng.sample(self.data[t].train, self._buffer_size(t))]
            n_replay = self._n_replay(stage_tasks[0])
            if n_replay > len(buffer):  # the data changed since the rule was made
                self._check_buffer(stage_tasks[0], earlier)
            replayed = rng.sample(buffer, n_replay)
        total = len(own) + len(replayed)
        self.last_stats = {"n_replayed": len(replayed), "replay_share": len(replayed) / total if total else 0.0}
        return own + replayed

    def train_record(self) -> dict:
        return dict(self.last_stats)


class EWC(Rule):
    def __init__(self, config: ExperimentConfig, data: dict[str, TaskData]):
        super().__init__(config, data)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self, model: torch.nn.Module) -> torch.Tensor | None:
        if not self.fisher:
            return None
        total = None
        for name, p in model.named_parameters():
            if name in self.fisher:
                if self.fisher[name].device != p.device:  # loaded on the CPU by a resumed run
                    self.fisher[name], self.anchor[name] = (
                        self.fisher[name].to(p.device),
                        self.anchor[name].to(p.device),
                    )
                term = (self.fisher[name] * (p - self.anchor[name]) ** 2).sum()
                total = term if total is None else total + term
        return None if total is None else self.config.baselines.ewc_lambda / 2 * total

    def after_task(self, components, stage_tasks, encoded: Encoded, base) -> None:
        """Add this task's diagonal empirical Fisher to the running sum and anchor the weights here.

        F = (1/n) * sum_i (d loss_i / d theta)^2 over the first ``ewc_samples`` training examples,
        where loss_i is example i's training loss (:func:`hybridcl.training.loss.token_scores`, the mean
        cross-entropy over its target tokens, in nats). Each example gets its own backward pass:
        squaring a batch's mean gradient instead lets the examples' gradients cancel and
        underestimates F up to batch-size times on noisy coordinates.
        """
        model = components.model
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        n = min(self.config.baselines.ewc_samples, len(encoded.input_ids))
        fisher = {name: torch.zeros_like(p) for name, p in params.items()}
        device = next(model.parameters()).device
        model.eval()
        for i in range(n):
            features = [{"input_ids": encoded.input_ids[i], "labels": encoded.labels[i]}]
            batch = {k: v.to(device) for k, v in collate(features, base.tokenizer.pad_token_id, base.kind).items()}
            model.zero_grad(set_to_none=True)
            scores = token_scores(model, batch, base.kind)
            (scores.nll.sum() / scores.mask.sum().clamp(min=1)).backward()
            for name, p in params.items():
                if p.grad is not None:
                    fisher[name] += p.grad.detach() ** 2 / n
        model.zero_grad(set_to_none=True)
        for name, f in fisher.items():
            self.fisher[name] = self.fisher.get(name, torch.zeros_like(f)) + f
            self.anchor[name] = params[name].detach().clone()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"fisher/{k}": v.cpu() for k, v in self.fisher.items()} | {
            f"anchor/{k}": v.cpu() for k, v in self.anchor.items()
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            kind, _, name = key.partition("/")
            (self.fisher if kind == "fisher" else self.anchor)[name] = value


class OLoRA(Rule):
    """O-LoRA (Wang et al. 2023): each task's LoRA subspace is kept orthogonal to earlier tasks'.

    The penalty is ``o_lora_lambda * sum over adapted layers and earlier tasks of
    |A_earlier A_new^T|`` (sum of absolute entries), where the rows of ``A`` (LoRA's down
    projection, r x d_in) span the adapter's input subspace. Earlier adapters are frozen.
    """

    def __init__(self, config: ExperimentConfig, data: dict[str, TaskData]):
        super().__init__(config, data)
        self.current: str | None = None

    def training_examples(self, stage_tasks: list[str], seed: int) -> list[Example]:
        self.current = stage_tasks[0]
        return super().training_examples(stage_tasks, seed)

    def penalty(self, model: torch.nn.Module) -> torch.Tensor | None:
        if self.current is None:
            return None
        earlier = self.config.task_names[: self.config.task_names.index(self.current)]
        if not earlier:
            return None
        total = None
        for module in model.modules():
            lora_a = getattr(module, "lora_A", None)
            if not isinstance(lora_a, torch.nn.ModuleDict) or self.current not in lora_a:
                continue
            new = lora_a[self.current].weight
            for task in earlier:
                term = (lora_a[task].weight.detach() @ new.T).abs().sum()
                total = term if total is None else total + term
        return None if total is None else self.config.baselines.o_lora_lambda * total


RULES = {None: Rule, "joint": Joint, "replay": Replay, "ewc": EWC, "o_lora": OLoRA}


def make_rule(strategy: Strategy, config: ExperimentConfig, data: dict[str, TaskData]) -> Rule:
    return RULES[strategy.rule](config, data)
