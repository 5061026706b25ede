"""Typed run records: a seed's saved progress, its matrix, its results, and the run's aggregate.

Each record turns into the JSON documented in docs/results.md (``to_json``) and back
(``from_json``), with a format version: a file of another format is refused with a message that
says what to do.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from hybridcl import __version__
from hybridcl.constants import NOT_CL_METRICS
from hybridcl.errors import RunError
from hybridcl.evaluation.registry import higher_is_better
from hybridcl.stats.cl_metrics import cl_metrics
from hybridcl.stats.seeds import mean_std, mean_std_nested

FORMAT = 2
# Format 1 (hybridcl before the evaluation fixes) named the code-to-text CodeXGLUE BLEU `bleu_codexglue`,
# and had no loss matrix, intervals or evaluation precision. Its results still render (read_results);
# its seeds cannot be resumed (their rows were scored by the old evaluation).
RENAMED_IN_FORMAT_2 = {"bleu_codexglue": "bleu_codexglue_code_to_text"}
# The reference experiment's two metrics were named after "the seed" (the project reproduced), which a
# reader takes for the random seed; results written before the rename read under the new names.
RENAMED_METRICS = {"bleu_seed": "bleu_reference", "syntax_pass_seed": "syntax_pass_reference"}
# Keys of a matrix cell that describe the cell rather than score the model.
CELL_INFO = ("n", "n_loss", "eval_seconds", "generate_seconds", "loss_seconds", "reused_from_row", "base_cells")
TRAIN_AGGREGATED = ("seconds", "samples_per_s", "tokens_per_s", "peak_memory_gb", "final_loss", "trainable_params")


def _check_format(raw, what: str, where: Path | str, fix: str) -> None:
    if not isinstance(raw, dict):
        raise RunError(f"{where} is not a hybridcl {what} (a JSON object): {fix}")
    if raw.get("format") != FORMAT:
        raise RunError(
            f"{where} was written by hybridcl {raw.get('hybridcl', '?')} in format {raw.get('format')}; "
            f"this hybridcl ({__version__}) reads format {FORMAT}: start a new run"
        )


@dataclass
class SeedState:
    """A seed's progress, saved after every stage (``state.json``), enough to resume it."""

    rows: list[dict[str, dict | None]] = field(default_factory=list)
    """Matrix rows evaluated so far (row 0 = the base): task -> cell (metric -> value, ``n``,
    ``eval_seconds``), ``None`` where the task was not evaluated."""
    train: list[dict] = field(default_factory=list)
    """One record per finished stage: ``task`` (the stage), steps, samples, seconds, losses... (docs/results.md)."""
    routed: dict[int, dict] = field(default_factory=dict)
    """Row index -> that row evaluated without the task id (:mod:`hybridcl.inference.routing`)."""
    finished: bool = False
    """Every stage trained and evaluated, and ``results.json`` written."""
    wall_seconds: float = 0.0
    """Wall-clock seconds spent on the seed so far, every go of a resumed run added (from model loading
    on, to the last save: a go cut short loses its time since then)."""

    def finished_on(self, tasks: list[str]) -> bool:
        """Finished, and on these tasks: a run that learns more tasks goes on from a finished state
        (row 0 scores every task of the run, so its columns are the tasks the seed had)."""
        return self.finished and bool(self.rows) and list(self.rows[0]) == list(tasks)

    @property
    def stages_done(self) -> list[str]:
        return [t["task"] for t in self.train]

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "hybridcl": __version__,
            "rows": self.rows,
            "train": self.train,
            "routed": {str(i): r for i, r in sorted(self.routed.items())},
            "finished": self.finished,
            "wall_seconds": self.wall_seconds,
        }

    @classmethod
    def from_json(cls, raw, *, where: Path | str = "state.json", seed_dir: Path | str = "the seed folder") -> SeedState:
        _check_format(raw, "state file", where, f"delete {seed_dir} and resume to redo that seed")
        return cls(
            rows=raw["rows"],
            train=raw["train"],
            routed={int(i): r for i, r in raw.get("routed", {}).items()},
            finished=bool(raw.get("finished")),
            wall_seconds=float(raw.get("wall_seconds", 0.0)),
        )


@dataclass
class Matrix:
    """Every metric's task-by-task matrix of one seed."""

    tasks: list[str]
    """Columns: the tasks, in training order."""
    rows: list[str]
    """Row labels: ``base``, then the stage trained before each row."""
    values: dict[str, list[list[float | None]]]
    """``values[metric][i][j]``: the metric on task j after row i; ``None`` where not evaluated or undefined."""

    @classmethod
    def from_cells(cls, tasks: list[str], rows: list[str], cells: list[dict[str, dict | None]]) -> Matrix:
        names = sorted({m for row in cells for cell in row.values() if cell for m in cell if m not in CELL_INFO})
        return cls(tasks, rows, {m: [[(row.get(t) or {}).get(m) for t in tasks] for row in cells] for m in names})

    @property
    def one_stage_per_task(self) -> bool:
        """Row i was trained on task i alone, so forgetting and transfer are defined (not ``joint``)."""
        return self.rows[1:] == self.tasks[: len(self.rows) - 1]

    def cl_metrics(self) -> dict[str, dict]:
        """:func:`~hybridcl.stats.cl_metrics.cl_metrics` of every metric; only the final average without one
        stage per task."""
        values = {m: rows for m, rows in self.values.items() if m not in NOT_CL_METRICS}
        if self.one_stage_per_task:
            return {m: cl_metrics(rows, higher_is_better=higher_is_better(m)) for m, rows in values.items()}
        return {m: _final_only(rows[-1]) for m, rows in values.items()}

    def with_rows(self, replaced: dict[int, dict[str, list]]) -> Matrix:
        """The same matrix with rows ``i`` replaced by ``replaced[i]`` (metric -> one value per task)."""
        values = {
            m: [replaced[i].get(m, row) if i in replaced else row for i, row in enumerate(rows)]
            for m, rows in self.values.items()
        }
        return Matrix(self.tasks, self.rows, values)


def _final_only(final: list[float | None]) -> dict:
    present = [v for v in final if v is not None]
    return {
        "average_final": sum(present) / len(present) if present else None,
        "n": {"average_final": len(present)},
        "n_skipped": {"average_final": len(final) - len(present)},
    }


@dataclass
class SeedResults:
    """One seed's results (``seed-<s>/results.json``); the keys are documented in docs/results.md."""

    strategy: str
    tasks: list[str]
    rows: list[str]
    matrix: dict[str, list[list[float | None]]]
    cl_metrics: dict[str, dict]
    eval_seconds: list[list[float | None]]
    """Wall seconds to generate and score cell (i, j)."""
    eval_precision: str
    """The precision every cell was evaluated in (``eval.precision``: fp32 or bf16)."""
    train: list[dict]
    params: dict[str, int | str | None]  # counts, and full_layer_position (e.g. "encoder:6", None without a block)
    data: dict[str, dict]
    intervals: dict[str, dict] = field(default_factory=dict)
    """metric -> 95% bootstrap intervals (paired between rows) of every cell and CL metric
    (:meth:`hybridcl.stats.intervals.CLIntervals.to_json`); metrics that do not decompose over examples have none."""
    routing: dict | None = None
    humaneval: dict | None = None
    evaluation: dict | None = None
    """Where evaluation time went (:func:`evaluation_time`); absent in results of hybridcl before it."""

    @classmethod
    def build(
        cls,
        strategy: str,
        tasks: list[str],
        state: SeedState,
        params: dict,
        data: dict,
        routing: dict | None,
        humaneval: dict | None,
        intervals: dict[str, dict],
        eval_precision: str,
    ) -> SeedResults:
        rows = ["base", *state.stages_done]
        matrix = Matrix.from_cells(tasks, rows, state.rows)
        return cls(
            strategy=strategy,
            tasks=tasks,
            rows=rows,
            matrix=matrix.values,
            cl_metrics=matrix.cl_metrics(),
            eval_seconds=[[(row.get(t) or {}).get("eval_seconds") for t in tasks] for row in state.rows],
            eval_precision=eval_precision,
            train=state.train,
            params=params,
            data=data,
            intervals=intervals,
            routing=routing,
            humaneval=humaneval,
            evaluation=evaluation_time(state),
        )

    def to_json(self) -> dict:
        out = {"format": FORMAT, "hybridcl": __version__, **self.__dict__}
        if out["humaneval"] is None:
            del out["humaneval"]
        return out

    @classmethod
    def from_json(cls, raw, *, where: Path | str = "results.json") -> SeedResults:
        _check_format(raw, "results file", where, "rewrite it with `hybridcl eval RUN_DIR`")
        fields = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**fields)


def evaluation_time(state: SeedState) -> dict:
    """The seed's time by kind: generation and loss scoring summed over the cells computed here (not
    reused from an earlier row or read from ``eval.base_cells``) with the functions each handled,
    routing (every row scored without the task id), training, and the seed's wall time (what they
    leave is the rest: loading the model and data, fitting routers, metrics, writing)."""
    cells = [c for row in state.rows for c in row.values() if c and "generate_seconds" in c and c["eval_seconds"] > 0]
    return {
        "wall_seconds": state.wall_seconds,
        "train_seconds": sum(t["seconds"] for t in state.train),
        "cells": len(cells),
        "generated": sum(c["n"] for c in cells),
        "generate_seconds": sum(c["generate_seconds"] for c in cells),
        "loss_scored": sum(c["n_loss"] for c in cells),
        "loss_seconds": sum(c["loss_seconds"] for c in cells),
        "routing_seconds": sum(r.get("seconds", 0.0) for r in state.routed.values()),
    }


def trained_precisions(results: dict) -> list[str]:
    """The precisions a run's stages trained in, over every seed (``per_seed[s].train[k].precision`` of its
    aggregated ``results.json``; stages that predate the record are left out), sorted."""
    stages = [t for seed in results.get("per_seed") or [] for t in seed.get("train", [])]
    return sorted({t["precision"] for t in stages if "precision" in t})


def read_results(path: Path) -> dict:
    """A run's ``results.json`` for reports and comparisons, format 1 upgraded in memory (metric names)."""
    from hybridcl.records.io import read_json

    raw = read_json(path)
    if isinstance(raw, dict) and raw.get("format") == 1:
        raw = _rename_metrics(raw, RENAMED_IN_FORMAT_2)
        raw["format"] = FORMAT
    if isinstance(raw, dict) and any(old in raw.get("matrix", {}) for old in RENAMED_METRICS):
        print(
            f"hybridcl: note: {path} names bleu_seed / syntax_pass_seed: read as {', '.join(RENAMED_METRICS.values())}",
            file=sys.stderr,
        )
        raw = _rename_metrics(raw, RENAMED_METRICS)
    return raw


def _rename_metrics(node, renamed: dict[str, str]):
    if isinstance(node, dict):
        return {renamed.get(k, k): _rename_metrics(v, renamed) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename_metrics(v, renamed) for v in node]
    return node


def aggregate(seed_results: list[SeedResults]) -> dict:
    """The run's ``results.json``: every number as ``{"mean", "std"}`` over seeds, plus every seed's results."""
    first = seed_results[0]
    out = {
        "format": FORMAT,
        "hybridcl": __version__,
        "seeds": len(seed_results),
        "strategy": first.strategy,
        "eval_precision": first.eval_precision,
        "tasks": first.tasks,
        "rows": first.rows,
        "params": first.params,
        "per_seed": [r.to_json() for r in seed_results],
        "matrix": {m: mean_std_nested([r.matrix[m] for r in seed_results]) for m in first.matrix},
        "cl_metrics": {m: mean_std_nested([r.cl_metrics[m] for r in seed_results]) for m in first.cl_metrics},
        "train": [
            {k: mean_std([r.train[i][k] for r in seed_results]) for k in TRAIN_AGGREGATED}
            | {"task": first.train[i]["task"]}
            for i in range(len(first.train))
        ],
        "routing": _aggregate_routing([r.routing for r in seed_results]),
    }
    humaneval = _aggregate_humaneval([r.humaneval for r in seed_results])
    if humaneval is not None:
        out["humaneval"] = humaneval
    return out


def _aggregate_routing(runs: list[dict | None]) -> dict | None:
    done = [r for r in runs if r is not None]
    if not runs or len(done) < len(runs):
        return None
    first = done[0]
    methods = {
        m: {k: mean_std_nested([r["methods"][m][k] for r in done]) for k in ("accuracy", "per_task_accuracy")}
        for m in first.get("methods") or {}
    }
    return {
        "method": first["method"],
        "tasks": first["tasks"],
        "n": first["n"],
        **({"methods": methods} if methods else {}),
        **{
            k: mean_std_nested([r[k] for r in done])
            for k in (
                "accuracy",
                "per_task_accuracy",
                "confusion",
                "accuracy_per_row",
                "matrix",
                "matrix_last_row",
                "cl_metrics",
            )
        },
    }


def _aggregate_humaneval(runs: list[dict | None]) -> dict | None:
    """``{"base"|"final": {"pass@k": {"mean", "std"}, "problems", "samples"}}`` over seeds."""
    done = [r for r in runs if r is not None]
    if not runs or len(done) < len(runs):
        return None
    out = {}
    for when in done[0]:
        keys = [k for k in done[0][when] if k.startswith("pass@")]
        out[when] = {k: mean_std([r[when][k] for r in done]) for k in keys}
        out[when] |= {k: done[0][when].get(k) for k in ("problems", "samples", "protections")}
    return out
