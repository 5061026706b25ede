"""The matrix evaluator: scores every task with the components as they stand, one matrix row per call.

- :meth:`MatrixEvaluator.row` uses the task id: each task is scored with its own components: the
  teacher-forced loss on all its evaluation examples (``loss``: mean NLL per target token, nats;
  ``token_accuracy``: percent of target tokens the greedy prediction gets right), then generation
  metrics on ``eval.max_examples`` of them. Every cell keeps per-example statistics
  (:mod:`hybridcl.intervals`) for its bootstrap interval. For strategies that isolate tasks, a
  task whose parts cannot have changed since the previous row keeps that row's cell
  (``reused_from_row``) instead of being evaluated again.
- :meth:`MatrixEvaluator.routed_row` scores the same row without it: :mod:`hybridcl.routing` picks
  each prompt's components, and only misrouted prompts are generated again.
- :meth:`MatrixEvaluator.humaneval` measures HumanEval pass@k through the python task's components.

Predictions are returned, not written: the recipe keeps them and decides where they go.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hybridcl.config import ExperimentConfig
from hybridcl.constants import CODE_DIRECTIONS
from hybridcl.data.batching import collate, encode, encode_prompts
from hybridcl.data.tasks import Example, TaskData
from hybridcl.evaluate.efficiency import Meter
from hybridcl.evaluate.generate import GenerationSettings, code_language, cut_share, generate
from hybridcl.evaluate.metrics import score
from hybridcl.evaluate.postprocess import extract_code
from hybridcl.intervals import bootstrap_counts, cell_interval, mean_stats, ratio_stats, score_with_stats
from hybridcl.loss import token_scores
from hybridcl.model.components import ComponentSet
from hybridcl.model.loading import Base
from hybridcl.routing import METHOD, routable_tasks, route, routing_accuracy


@dataclass
class Row:
    """One matrix row: a cell per task (``None``: not evaluated), predictions and per-example statistics."""

    index: int
    cells: dict[str, dict | None]
    predictions: dict[str, list[str]]
    hit_limit: dict[str, list[bool]]  # task -> whether each generation ran into eval.max_new_tokens
    stats: dict[str, dict[str, np.ndarray]]  # task -> metric -> [examples, k] (hybridcl.intervals)


@dataclass
class RoutedRow:
    """A row scored without the task id (see :func:`hybridcl.routing.routed_results` for the fields)."""

    result: dict
    chosen: dict[str, list[str]]  # task -> the task chosen for each of its prompts
    predictions: dict[str, list[str]]


class MatrixEvaluator:
    """Generates on every task's evaluation examples and scores them."""

    def __init__(
        self,
        config: ExperimentConfig,
        base: Base,
        components: ComponentSet,
        data: dict[str, TaskData],
        *,
        cache_dir: Path | None = None,
        progress: bool = True,
    ):
        self.config, self.base, self.components, self.data, self.progress = config, base, components, data, progress
        self.cache_dir = cache_dir
        self.settings = GenerationSettings.from_config(config)
        self._previous: Row | None = None

    def examples(self, task: str) -> list[Example]:
        """The examples task ``task`` is scored on (``eval.max_examples`` of its validation split)."""
        return self.data[task].val[: self.config.eval.max_examples]

    def predict(self, language: str, sources: list[str], desc: str) -> tuple[list[str], list[bool]]:
        """Generate from ``sources`` with ``language``'s prompt, through the components as routed now;
        also whether each generation ran into ``eval.max_new_tokens`` before its function ended."""
        direction = self.config.data.direction
        prompts, _ = encode_prompts(
            self.base.tokenizer,
            sources,
            [language] * len(sources),
            direction,
            self.base.kind,
            self.config.data.max_source_len,
        )
        texts, hit_limit = generate(
            self.components.model,
            self.base.tokenizer,
            prompts,
            kind=self.base.kind,
            settings=self.settings,
            progress=self.progress,
            desc=desc,
            code_language=code_language(language, direction, self.config.data.completion_target),
            return_hit_limit=True,
        )
        return ([extract_code(t) for t in texts] if direction in CODE_DIRECTIONS else texts), hit_limit

    def ceilings(self, task: str) -> dict:
        """``syntax_ceiling``: percent of the task's scored references that parse (text-to-code), the
        highest syntax pass rate a model can be expected to reach on them; ``{}`` where undefined."""
        from hybridcl.evaluate import syntax

        language = syntax.canonical_language(task)
        if self.config.data.direction not in CODE_DIRECTIONS or language not in syntax.supported_languages():
            return {}
        targets = [ex.target for ex in self.examples(task)]
        return {"syntax_ceiling": syntax.syntax_ceiling(self._syntax_texts(task, targets) or targets, language)}

    def _syntax_texts(self, task: str, outputs: list[str]) -> list[str] | None:
        """The code the syntax checks read: the outputs, or (completion of the rest) the prompt's
        start of the function followed by each output; None where that is the outputs themselves."""
        data = self.config.data
        if data.direction != "completion" or data.completion_target != "rest":
            return None
        return [ex.source + out for ex, out in zip(self.examples(task), outputs)]

    def _metric_args(self, task: str, predictions: list[str]) -> dict:
        return {
            "language": task,
            "direction": self.config.data.direction,
            "seed_metrics": self.config.eval.seed_metrics,
            "tokenize": self.base.tokenizer.tokenize,
            "syntax_texts": self._syntax_texts(task, predictions),
        }

    def score(self, task: str, predictions: list[str]) -> dict:
        examples = self.examples(task)
        return score(predictions, [ex.target for ex in examples], **self._metric_args(task, predictions))

    @torch.no_grad()
    def loss(self, task: str) -> tuple[dict, dict[str, np.ndarray]]:
        """Teacher-forced ``loss`` (nats per target token) and ``token_accuracy`` (%) on all of ``task``'s
        evaluation examples, with their per-example statistics, through the components as routed now."""
        cfg, model = self.config, self.components.model
        encoded = encode(
            self.data[task].val,
            self.base.tokenizer,
            self.base.kind,
            cfg.data.max_source_len,
            cfg.data.max_target_len,
            cache_dir=self.cache_dir,
            progress=False,
            long_targets=cfg.data.long_targets,
        )
        features = [{"input_ids": i, "labels": l} for i, l in zip(encoded.input_ids, encoded.labels)]
        order = sorted(
            range(len(features)), key=lambda k: -(len(features[k]["input_ids"]) + len(features[k]["labels"]))
        )
        nll, tokens, correct = np.zeros(len(features)), np.zeros(len(features)), np.zeros(len(features))
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(order), cfg.eval.batch_size):
                idx = order[start : start + cfg.eval.batch_size]
                batch = collate([features[k] for k in idx], self.base.tokenizer.pad_token_id, self.base.kind)
                scores = token_scores(model, {k: v.to(device) for k, v in batch.items()}, self.base.kind, accuracy=True)
                nll[idx] = scores.nll.sum(1).double().cpu().numpy()
                tokens[idx] = scores.mask.sum(1).cpu().numpy()
                correct[idx] = scores.correct.sum(1).cpu().numpy()
        finally:
            model.train(was_training)
        stats = {"loss": ratio_stats(nll, tokens), "token_accuracy": ratio_stats(correct, tokens)}
        total = max(tokens.sum(), 1.0)
        return {"loss": float(nll.sum() / total), "token_accuracy": float(100.0 * correct.sum() / total)}, stats

    def row(self, i: int) -> Row:
        """Row ``i`` with the task id. Row 0 must be called with the components off (``base_only``)."""
        cells, predictions, hit_limit, stats = {}, {}, {}, {}
        previous = self._previous if self._reuses_cells(i) else None
        for j, task in enumerate(self.config.tasks):
            if i > 0 and not self.config.eval.forward_transfer and j >= i:
                cells[task] = None
                continue
            if previous is not None and j + 1 < i and previous.cells.get(task):
                # task j was trained at stage j + 1 < i and nothing of it has trained since row i - 1
                cells[task] = {"reused_from_row": i - 1, **previous.cells[task], "eval_seconds": 0.0}
                predictions[task], stats[task] = previous.predictions[task], previous.stats[task]
                hit_limit[task] = previous.hit_limit[task]
                continue
            if i > 0:
                self.components.route(task)
            examples = self.examples(task)
            with Meter(next(self.components.model.parameters()).device) as meter:
                predictions[task], hit_limit[task] = self.predict(
                    task, [ex.source for ex in examples], f"eval row {i} {task}"
                )
                scores, text_stats = score_with_stats(
                    predictions[task], [ex.target for ex in examples], **self._metric_args(task, predictions[task])
                )
                losses, stats[task] = self.loss(task)
            stats[task].update({m: s for m, s in text_stats.items() if s is not None})
            cells[task] = {
                **losses,
                **scores,
                "cut_share": cut_share(hit_limit[task]),
                "eval_seconds": meter.seconds,
                "n": len(examples),
                "n_loss": len(stats[task]["loss"]),
            }
        self._previous = Row(i, cells, predictions, hit_limit, stats)
        return self._previous

    def _reuses_cells(self, i: int) -> bool:
        previous = self._previous
        return (
            self.config.eval.reuse_unchanged
            and self.components.strategy.isolates_tasks
            and previous is not None
            and previous.index == i - 1
        )

    def routed_row(self, i: int, with_task_id: Row) -> RoutedRow | None:
        """Row ``i`` without the task id, or ``None`` when fewer than two tasks own per-task parts.

        Correctly routed prompts keep their prediction from ``with_task_id``; misrouted ones are
        generated again with the chosen task's parts and that task's language in the prompt.
        """
        tasks = [t for t in routable_tasks(self.components) if t in self.config.tasks]
        if len(tasks) < 2:
            return None
        active = self.components.active
        per_task_acc, confusion, cells, chosen_all, predictions_all = {}, {}, {}, {}, {}
        all_true, all_chosen = [], []
        try:
            for (
                task
            ) in with_task_id.predictions:  # the tasks this row scored (eval.forward_transfer=false skips later ones)
                examples = self.examples(task)
                chosen = route(
                    self.components,
                    self.base.tokenizer,
                    self.base.kind,
                    [ex.source for ex in examples],
                    tasks=tasks,
                    max_source_len=self.config.data.max_source_len,
                    batch_size=self.config.eval.batch_size,
                )
                all_true += [task] * len(examples)
                all_chosen += chosen
                per_task_acc[task] = routing_accuracy([task] * len(examples), chosen)
                confusion[task] = {t: sum(c == t for c in chosen) for t in tasks}
                predictions = list(with_task_id.predictions[task])
                for other in tasks:
                    idx = [k for k, c in enumerate(chosen) if c == other and other != task]
                    if not idx:
                        continue
                    self.components.route(other)
                    texts, _ = self.predict(
                        other,
                        [examples[k].source for k in idx],
                        f"row {i}: {task} prompts routed to {other}, generated again",
                    )
                    for k, text in zip(idx, texts):
                        predictions[k] = text
                cells[task] = self.score(task, predictions)
                chosen_all[task], predictions_all[task] = chosen, predictions
        finally:
            if active is not None:
                self.components.route(active)
        metrics = dict.fromkeys(m for cell in cells.values() for m in cell)
        right = mean_stats([100.0 if t == c else 0.0 for t, c in zip(all_true, all_chosen)])
        interval = cell_interval(
            "routing_accuracy", right, bootstrap_counts(len(right), self.config.eval.bootstrap_resamples)
        )
        result = {
            "method": METHOD,
            "tasks": tasks,
            "accuracy": routing_accuracy(all_true, all_chosen),
            "accuracy_interval": None if interval is None else list(interval),
            "per_task_accuracy": per_task_acc,
            "confusion": confusion,
            "n": len(all_true),
            # the layout of a row of results["matrix"]: metric -> one score per task
            "row": {m: [cells[t].get(m) if t in cells else None for t in self.config.tasks] for m in metrics},
        }
        return RoutedRow(result, chosen_all, predictions_all)

    def humaneval(self) -> dict:
        """HumanEval pass@k of the base model and of the final model routed to the python task."""
        from hybridcl.evaluate.functional import humaneval

        def run():
            return humaneval(
                self.components.model,
                self.base.tokenizer,
                self.base.kind,
                self.config.eval,
                self.settings,
                progress=self.progress,
            )

        with self.components.base_only():
            before = run()
        self.components.route("python")
        return {"base": before, "final": run()}
