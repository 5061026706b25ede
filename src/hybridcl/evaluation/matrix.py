"""The matrix evaluator: scores every task with the components as they stand, one matrix row per call.

- :meth:`MatrixEvaluator.row` uses the task id: :func:`plan_row` (pure) says which cells are
  scored, reused or skipped, and :meth:`MatrixEvaluator.score_cell` scores a task with its own
  components into a :class:`Cell`: the teacher-forced loss on all its evaluation examples
  (``loss``: mean NLL per target token, nats; ``token_accuracy``: percent of target tokens the
  greedy prediction gets right), then generation metrics on ``eval.max_examples`` of them
  (:mod:`hybridcl.evaluation.registry`). Every cell keeps per-example statistics
  (:mod:`hybridcl.stats.example_stats`) for its bootstrap interval. For strategies that isolate
  tasks, a task whose parts cannot have changed since the previous row keeps that row's cell
  (``reused_from_row``) instead of being evaluated again.
- :meth:`MatrixEvaluator.routed_row` scores the same row without it: the run's router
  (:mod:`hybridcl.inference.routing`) picks each prompt's components, and only misrouted prompts are scored
  and generated again.
- :meth:`MatrixEvaluator.humaneval` measures HumanEval pass@k through the python task's components.

Predictions are returned, not written: the recipe keeps them and decides where they go.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from hybridcl.config.experiment import ExperimentConfig
from hybridcl.constants import CODE_DIRECTIONS
from hybridcl.data.batching import collate, encode, encode_prompts
from hybridcl.data.tasks import Example, TaskData
from hybridcl.evaluation.base_cells import BaseCells
from hybridcl.evaluation.efficiency import Meter
from hybridcl.evaluation.generate import GenerationSettings, code_language, cut_share, generate
from hybridcl.evaluation.postprocess import extract_code
from hybridcl.evaluation.registry import score, score_with_stats, value
from hybridcl.inference.routing import Prompts, Routers, accuracy_summary, routable_tasks
from hybridcl.model.components import ComponentSet
from hybridcl.model.loading import Base
from hybridcl.stats.example_stats import ratio_stats
from hybridcl.training.loss import token_scores


@dataclass
class Cell:
    """One scored cell: its numbers (a cell of ``results["matrix"]``), predictions and statistics."""

    values: dict
    predictions: list[str]
    hit_limit: list[bool]  # whether each generation ran into eval.max_new_tokens
    stats: dict[str, np.ndarray]  # metric -> [examples, k] (hybridcl.stats.example_stats)


@dataclass
class Row:
    """One matrix row: a cell per task (``None``: not evaluated), predictions and per-example statistics."""

    index: int
    cells: dict[str, dict | None]
    predictions: dict[str, list[str]]
    hit_limit: dict[str, list[bool]]  # task -> whether each generation ran into eval.max_new_tokens
    stats: dict[str, dict[str, np.ndarray]]  # task -> metric -> [examples, k] (hybridcl.stats.intervals)

    def add(self, task: str, cell: Cell) -> None:
        self.cells[task] = cell.values
        self.predictions[task], self.hit_limit[task], self.stats[task] = cell.predictions, cell.hit_limit, cell.stats

    def cell(self, task: str) -> Cell:
        """``task``'s cell of this row as it is (a row saved before and completed now keeps it)."""
        values = self.cells[task]
        if values is None:
            raise ValueError(f"row {self.index} did not evaluate {task}")
        return Cell(values, self.predictions[task], self.hit_limit[task], self.stats[task])

    def reused(self, task: str) -> Cell:
        """``task``'s cell of this row, as the next row keeps it (``reused_from_row``, no time spent)."""
        cell = self.cell(task)
        return replace(cell, values={"reused_from_row": self.index, **cell.values, "eval_seconds": 0.0})


class CellAction(enum.Enum):
    SKIP = "skip"  # not evaluated (a later task with eval.forward_transfer=false)
    REUSE = "reuse"  # the previous row's cell: nothing of the task has trained since
    SCORE = "score"


def plan_row(i: int, tasks: Sequence[str], previous: Row | None, *, forward_transfer: bool) -> dict[str, CellAction]:
    """What row ``i`` does with each task's cell.

    ``previous``: the row a strategy that isolates tasks may reuse cells from (None: reuse nothing).
    A cell is reused when ``previous`` is row ``i - 1`` and evaluated the task, and the task was
    trained at stage ``j + 1 < i``: with isolated parts, stage ``i`` trained nothing of it. Later
    tasks (``j >= i``) are skipped without ``forward_transfer``; row 0 scores every task.
    """
    chained = previous is not None and previous.index == i - 1
    plan = {}
    for j, task in enumerate(tasks):
        if i > 0 and not forward_transfer and j >= i:
            plan[task] = CellAction.SKIP
        elif chained and previous is not None and j + 1 < i and previous.cells.get(task):
            plan[task] = CellAction.REUSE
        else:
            plan[task] = CellAction.SCORE
    return plan


@dataclass
class RoutedRow:
    """A row scored without the task id (see :func:`hybridcl.inference.routing.routed_results` for the fields)."""

    result: dict
    chosen: dict[str, list[str]]  # task -> the task chosen for each of its loss-scored prompts
    predictions: dict[str, list[str]]  # task -> the generated prompts' outputs (the first of them)
    stats: dict[str, dict[str, np.ndarray]]  # as Row.stats, under routing


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
        routers: Routers | None = None,
    ):
        self.config, self.base, self.components, self.data, self.progress = config, base, components, data, progress
        self.cache_dir, self.routers = cache_dir, routers
        self.settings = GenerationSettings.from_config(config)
        self._previous: Row | None = None
        self._prompts: dict[str, Prompts] = {}  # task -> its routing prompts (features kept between rows)
        folder = config.eval.base_cells
        self.base_cells = BaseCells(folder, config, components.model) if folder else None

    def examples(self, task: str) -> list[Example]:
        """The examples task ``task`` is scored on (``eval.max_examples`` of its validation split)."""
        return self.data[task].val[: self.config.eval.max_examples]

    def predict(self, task: str, sources: list[str], desc: str) -> tuple[list[str], list[bool]]:
        """Generate from ``sources`` with ``task``'s prompt (its language and direction), through the
        components as routed now; also whether each generation ran into ``eval.max_new_tokens``
        before its function ended."""
        record = self.config.task(task)
        language, direction = record.language, record.direction
        assert language is not None and direction is not None  # resolved by the config
        prompts, _ = encode_prompts(
            self.base.tokenizer,
            sources,
            [language] * len(sources),
            direction,
            self.base.kind,
            self.config.data.max_source_len,
            prompt=self.config.data.prompt,
        )
        generated = generate(
            self.components.model,
            self.base.tokenizer,
            prompts,
            kind=self.base.kind,
            settings=self.settings,
            progress=self.progress,
            desc=desc,
            code_language=code_language(language, direction, self.config.data.completion_target),
        )
        texts = generated.texts
        return ([extract_code(t) for t in texts] if direction in CODE_DIRECTIONS else texts), generated.hit_limit

    def ceilings(self, task: str) -> dict:
        """``syntax_ceiling``: percent of the task's scored references that parse (text-to-code), the
        highest syntax pass rate a model can be expected to reach on them; ``{}`` where undefined."""
        from hybridcl.evaluation import syntax

        record = self.config.task(task)
        language = syntax.canonical_language(record.language or task)
        if record.direction not in CODE_DIRECTIONS or language not in syntax.supported_languages():
            return {}
        targets = [ex.target for ex in self.examples(task)]
        return {"syntax_ceiling": syntax.syntax_ceiling(self._syntax_texts(task, targets) or targets, language)}

    def _syntax_texts(self, task: str, outputs: list[str]) -> list[str] | None:
        """The code the syntax checks read: the outputs, or (completion of the rest) the prompt's
        start of the function followed by each output; None where that is the outputs themselves."""
        if self.config.task(task).direction != "completion" or self.config.data.completion_target != "rest":
            return None
        return [ex.source + out for ex, out in zip(self.examples(task), outputs, strict=True)]

    def _metric_args(self, task: str, predictions: list[str]) -> dict:
        return {
            "language": self.config.task(task).language,
            "direction": self.config.task(task).direction,
            "reference_metrics": self.config.eval.reference_metrics,
            "tokenize": self.base.tokenizer.tokenize,
            "syntax_texts": self._syntax_texts(task, predictions),
        }

    def score(self, task: str, predictions: list[str]) -> dict:
        examples = self.examples(task)
        return score(predictions, [ex.target for ex in examples], **self._metric_args(task, predictions))

    @torch.no_grad()
    def loss(self, task: str, indices: list[int] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
        """Teacher-forced ``loss`` (nats per target token) and ``token_accuracy`` (%) on all of ``task``'s
        evaluation examples (or those at ``indices``), with their per-example statistics, through the
        components as routed now."""
        cfg, model = self.config, self.components.model
        val = self.data[task].val
        encoded = encode(
            val if indices is None else [val[k] for k in indices],
            self.base.tokenizer,
            self.base.kind,
            cfg.data.max_source_len,
            cfg.data.max_target_len,
            cache_dir=self.cache_dir,
            progress=False,
            long_targets=cfg.data.long_targets,
            prompt=cfg.data.prompt,
        )
        features = [{"input_ids": i, "labels": t} for i, t in zip(encoded.input_ids, encoded.labels, strict=True)]
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
                assert scores.mask is not None and scores.correct is not None  # accuracy=True fills them
                tokens[idx] = scores.mask.sum(1).cpu().numpy()
                correct[idx] = scores.correct.sum(1).cpu().numpy()
        finally:
            model.train(was_training)
        stats = {"loss": ratio_stats(nll, tokens), "token_accuracy": ratio_stats(correct, tokens)}
        total = max(tokens.sum(), 1.0)
        return {"loss": float(nll.sum() / total), "token_accuracy": float(100.0 * correct.sum() / total)}, stats

    @property
    def reuses_cells(self) -> bool:
        """Whether a row keeps the previous row's cells of tasks untrained since (isolated parts only)."""
        return self.config.eval.reuse_unchanged and self.components.strategy.isolates_tasks

    @property
    def previous_index(self) -> int | None:
        """The index of the row later rows may reuse cells from (the last one made or remembered)."""
        return None if self._previous is None else self._previous.index

    def missing(self, i: int, cells: dict[str, dict | None]) -> list[str]:
        """The tasks whose cell row ``i`` should hold and ``cells`` (the row as saved) lacks: the
        columns of tasks a finished run learned after it made the row."""
        plan = plan_row(i, self.config.task_names, None, forward_transfer=self.config.eval.forward_transfer)
        return [t for t, action in plan.items() if action is not CellAction.SKIP and not cells.get(t)]

    def remember(self, row: Row) -> None:
        """Take ``row`` (saved by an earlier process) as the last row made: a resumed run reuses its
        unchanged cells as an uninterrupted one does, instead of scoring them again."""
        self._previous = row

    def row(self, i: int, known: Row | None = None) -> Row:
        """Row ``i`` with the task id. Row 0 must be called with the components off (``base_only``).

        ``known``: row ``i`` as saved before the run learned more tasks; its cells are kept and only
        the cells it lacks are scored (the new tasks' columns)."""
        cfg = self.config.eval
        previous = self._previous if self.reuses_cells else None
        plan = plan_row(i, self.config.task_names, previous, forward_transfer=cfg.forward_transfer)
        row = Row(i, {}, {}, {}, {})
        for task, action in plan.items():
            if action is CellAction.SKIP:
                row.cells[task] = None
                continue
            if known is not None and known.cells.get(task) is not None:
                row.add(task, known.cell(task))
                continue
            if action is CellAction.REUSE:
                assert self._previous is not None  # plan_row reuses only from a previous row
                row.add(task, self._previous.reused(task))
                continue
            if i > 0:
                self.components.route(task)
            row.add(task, self._base_cell(task) if i == 0 and self.base_cells else self.score_cell(i, task))
        self._previous = row
        return row

    def _base_cell(self, task: str) -> Cell:
        """Row 0's cell of ``task`` from ``eval.base_cells``, scored and stored there if absent."""
        assert self.base_cells is not None
        key = self.base_cells.key(task, self.data[task].val)  # the loss scores them all
        stored = self.base_cells.get(key)
        if stored is not None:
            return Cell(**stored)
        cell = self.score_cell(0, task)
        self.base_cells.put(key, cell.values, cell.predictions, cell.hit_limit, cell.stats)
        return cell

    def score_cell(self, i: int, task: str) -> Cell:
        """Score ``task`` through the components as routed now: its predictions, the text metrics on
        them, the teacher-forced loss, the per-example statistics of each, and the time it took."""
        examples = self.examples(task)
        device = next(self.components.model.parameters()).device
        with Meter(device) as meter:
            with Meter(device) as generating:
                predictions, hit_limit = self.predict(task, [ex.source for ex in examples], f"eval row {i} {task}")
            scores, text_stats = score_with_stats(
                predictions, [ex.target for ex in examples], **self._metric_args(task, predictions)
            )
            with Meter(device) as scoring:
                losses, stats = self.loss(task)
        stats.update({m: s for m, s in text_stats.items() if s is not None})
        cell = {
            **losses,
            **scores,
            "cut_share": cut_share(hit_limit),
            "eval_seconds": meter.seconds,
            "generate_seconds": generating.seconds,
            "loss_seconds": scoring.seconds,
            "n": len(examples),
            "n_loss": len(stats["loss"]),
        }
        return Cell(cell, predictions, hit_limit, stats)

    def routed_row(self, i: int, with_task_id: Row) -> RoutedRow | None:
        """Row ``i`` without the task id, or ``None`` when fewer than two tasks own per-task parts.

        Every loss-scored prompt is routed by ``routing.method`` (and by each method of
        ``routing.compare``, for their accuracies). Correctly routed prompts keep their loss and
        prediction from ``with_task_id``; misrouted ones are scored again with the chosen task's parts
        (and, for generation, that task's language in the prompt)."""
        tasks = [t for t in routable_tasks(self.components) if t in self.config.task_names]
        if len(tasks) < 2 or self.routers is None:
            return None
        active, method = self.components.active, self.routers.cfg.method
        choices: dict[str, dict[str, list[str]]] = {}  # routing method -> task -> choice per prompt
        cells, predictions, stats = {}, {}, {}
        start = time.perf_counter()
        try:
            for task in with_task_id.predictions:  # the tasks this row scored (forward_transfer=false skips some)
                prompts = self._routing_prompts(task)
                for name, router in self.routers.by_method.items():
                    choices.setdefault(name, {})[task] = router.choose(prompts, tasks)
                chosen = choices[method][task]
                predictions[task], stats[task] = self._rescore_misrouted(i, task, chosen, with_task_id)
                cells[task] = self._routed_cell(task, predictions[task], stats[task])
        finally:
            if active is not None:
                self.components.route(active)
        result = {
            "method": method,
            "tasks": tasks,
            "seconds": time.perf_counter() - start,  # routing every prompt, and scoring the misrouted again
            **accuracy_summary(choices[method], tasks),
            "methods": {name: accuracy_summary(by_task, tasks) for name, by_task in choices.items()},
            # the layout of a row of results["matrix"]: metric -> one score per task
            "row": {
                m: [cells[t].get(m) if t in cells else None for t in self.config.task_names]
                for m in dict.fromkeys(m for cell in cells.values() for m in cell)
            },
        }
        return RoutedRow(result, choices[method], predictions, stats)

    def _routing_prompts(self, task: str) -> Prompts:
        """``task``'s evaluation prompts for the routers. Their token ids and frozen-base features are
        the same in every row and computed once per run; their losses under the parts are not."""
        prompts = Prompts(
            [ex.source for ex in self.data[task].val],
            self.components,
            self.base.tokenizer,
            self.base.kind,
            self.config.data.max_source_len,
            self.config.eval.batch_size,
        )
        earlier = self._prompts.get(task)
        if earlier is not None:  # cached_property values live in the instance's __dict__
            prompts.__dict__.update({k: v for k, v in vars(earlier).items() if k in ("token_ids", "features")})
        self._prompts[task] = prompts
        return prompts

    def _rescore_misrouted(
        self, i: int, task: str, chosen: list[str], with_task_id: Row
    ) -> tuple[list[str], dict[str, np.ndarray]]:
        """``task``'s predictions and per-example statistics when each prompt uses its chosen task's parts."""
        n_gen = len(self.examples(task))
        predictions = list(with_task_id.predictions[task])
        stats = {m: np.array(v, copy=True) for m, v in with_task_id.stats[task].items()}
        generated = [m for m in stats if m not in ("loss", "token_accuracy")]
        for other in dict.fromkeys(c for c in chosen if c != task):
            idx = [k for k, c in enumerate(chosen) if c == other]
            self.components.route(other)
            _, loss_stats = self.loss(task, idx)
            for m, values in loss_stats.items():
                stats[m][idx] = values
            gen_idx = [k for k in idx if k < n_gen]
            if not gen_idx:
                continue
            examples = self.examples(task)
            texts, _ = self.predict(
                other,
                [examples[k].source for k in gen_idx],
                f"row {i}: {task} prompts routed to {other}, scored and generated again",
            )
            for k, text in zip(gen_idx, texts, strict=True):
                predictions[k] = text
        if generated:
            _, text_stats = score_with_stats(
                predictions, [ex.target for ex in self.examples(task)], **self._metric_args(task, predictions)
            )
            stats.update({m: s for m, s in text_stats.items() if s is not None and m in stats})
        return predictions, stats

    def _routed_cell(self, task: str, predictions: list[str], stats: dict[str, np.ndarray]) -> dict:
        """The cell of ``task`` under routing: the generation scores and the loss from the routed statistics."""
        cell = self.score(task, predictions)
        for m in ("loss", "token_accuracy"):
            cell[m] = value(m, stats[m].sum(axis=0))
        return cell

    def humaneval(self, task: str) -> dict:
        """HumanEval pass@k of the base model and of the final model routed to ``task`` (Python, text-to-code)."""
        from hybridcl.evaluation.humaneval import run_humaneval

        def run():
            return run_humaneval(
                self.components.model,
                self.base.tokenizer,
                self.base.kind,
                self.config.eval,
                self.settings,
                progress=self.progress,
            )

        with self.components.base_only():
            before = run()
        self.components.route(task)
        return {"base": before, "final": run()}
