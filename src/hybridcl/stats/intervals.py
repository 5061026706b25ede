"""Paired percentile bootstrap intervals for matrix cells and CL metrics.

A bootstrap resample is a vector of counts (how often each example is drawn), and the resampled
statistics of ``B`` resamples are one matrix product ``counts [B, n] @ stats [n, k]`` of the
per-example statistics (:mod:`hybridcl.stats.example_stats`; which metric has which is declared
in :mod:`hybridcl.evaluation.registry`, and the names scripts use are re-exported here): 1,000
resamples cost about as much as one score.

Pairing: rows of the matrix (base, after task 1, ...) are scored on the same examples of task ``j``
in the same order, so one counts matrix per task, drawn once with a fixed seed, resamples the same
examples in every row. Differences between rows (forgetting, BWT, FWT) are then paired: the noise
of which examples were drawn cancels, and identical rows give a difference of exactly 0.

Intervals are percentile intervals of the bootstrap distribution (Efron & Tibshirani 1993, ch. 13),
at ``level`` (0.95 = the 2.5th and 97.5th percentiles, numpy's linear interpolation). The t interval
over seeds is :func:`hybridcl.stats.seeds.t_interval`; the words the report puts on an interval are in
:mod:`hybridcl.report.wording`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hybridcl.evaluation.registry import (  # noqa: F401
    example_stats,
    has_interval,
    metric_stats,
    register_metric,
    score_stats,
    score_with_stats,
    value,
)
from hybridcl.stats.cl_metrics import cl_metrics
from hybridcl.stats.example_stats import (  # noqa: F401  (re-exported for scripts and tests)
    MetricStats,
    corpus_bleu_example_stats,
    corpus_bleu_metric,
    mean_metric,
    mean_stats,
    ratio_stats,
)
from hybridcl.stats.seeds import mean_std_n, t_interval  # noqa: F401

N_RESAMPLES = 1000
LEVEL = 0.95


def bootstrap_counts(n: int, n_resamples: int = N_RESAMPLES, seed: int | Sequence[int] = 0) -> np.ndarray:
    """Resample counts ``[n_resamples, n]``: row ``b`` says how often each of the ``n`` examples is
    drawn in resample ``b`` (a multinomial over ``n`` draws with replacement; each row sums to ``n``).

    The same ``seed`` gives the same counts; use one counts matrix for every row of a task's column
    so that differences between rows are paired.
    """
    if n < 1:
        raise ValueError(f"bootstrap needs at least one example; got n={n}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1; got {n_resamples}")
    draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    # counts of uniform draws = a multinomial sample; one bincount over all rows is O(B n), where
    # rng.multinomial draws n conditional binomials per row (0.3 s for 1,000 x 1,000)
    offsets = np.arange(n_resamples, dtype=np.int64)[:, None] * n
    return np.bincount((draws + offsets).ravel(), minlength=n_resamples * n).reshape(n_resamples, n)


def _as_stats(metric: str | MetricStats, stats) -> np.ndarray:
    spec = metric_stats(metric)
    arr = np.asarray(stats, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != len(spec.columns):
        raise ValueError(
            f"{spec.name}: per-example statistics have shape {arr.shape}; expected (n_examples, {len(spec.columns)})"
        )
    return arr


def resample_values(metric: str | MetricStats, stats, counts: np.ndarray) -> np.ndarray:
    """The metric on every resample: ``[B]`` values (NaN where undefined)."""
    arr = _as_stats(metric, stats)
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != arr.shape[0]:
        raise ValueError(f"{metric_stats(metric).name}: counts {counts.shape} do not match {arr.shape[0]} examples")
    return metric_stats(metric).aggregate(counts @ arr)


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """``(low, high)`` percentiles of ``samples`` at ``level``, NaN ignored; None if all are NaN."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]  # undefined resamples; np.percentile is 5x faster than nanpercentile
    if samples.size == 0:
        return None
    # rounded so that level=0.9 asks for the 5th percentile, not the 4.999999999999999th
    tail = round(50.0 * (1.0 - level), 9)
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def cell_interval(
    metric: str | MetricStats, stats, counts: np.ndarray, level: float = LEVEL
) -> tuple[float, float] | None:
    """Percentile bootstrap interval ``(low, high)`` of one cell, in the metric's units."""
    return percentile_interval(resample_values(metric, stats, counts), level)


# ---- CL metrics with intervals --------------------------------------------------------------------


@dataclass
class CLIntervals:
    """A metric's matrix and CL metrics with their bootstrap intervals.

    ``cells[i][j]`` / ``cell_intervals[i][j]``: the value and ``(low, high)`` of R[i][j+1] (None where
    not evaluated). ``cl``: ``cl_metrics`` of the point matrix; ``intervals``: the same keys, each
    number replaced by ``(low, high)`` (None where undefined), per-task lists entry by entry.
    ``cell_samples`` and ``samples`` hold the ``[B]`` resampled values, for :func:`describe_difference`.
    """

    metric: str
    cells: list[list[float | None]]
    cell_intervals: list[list[tuple[float, float] | None]]
    cl: dict
    intervals: dict
    level: float
    n_resamples: int
    cell_samples: list[list[np.ndarray | None]] = field(repr=False, default_factory=list)
    samples: dict = field(repr=False, default_factory=dict)

    def to_json(self) -> dict:
        """Values and intervals as plain lists (no samples), for results.json."""
        pair = lambda iv: None if iv is None else [iv[0], iv[1]]  # noqa: E731
        return {
            "metric": self.metric,
            "level": self.level,
            "n_resamples": self.n_resamples,
            "cells": self.cells,
            "cell_intervals": [[pair(iv) for iv in row] for row in self.cell_intervals],
            "cl": self.cl,
            "intervals": {
                k: [pair(iv) for iv in v] if isinstance(v, list) else pair(v) for k, v in self.intervals.items()
            },
        }


def task_counts(stats_matrix, n_resamples: int = N_RESAMPLES, seed: int = 0) -> list[np.ndarray | None]:
    """One counts matrix per task column of ``stats_matrix`` (seeded by ``(seed, column)``), None for
    a column with no evaluated cell. Every evaluated cell of a column must have the same examples."""
    n_cols = max((len(row) for row in stats_matrix), default=0)
    out: list[np.ndarray | None] = []
    for j in range(n_cols):
        sizes = {np.shape(row[j])[0] for row in stats_matrix if j < len(row) and row[j] is not None}
        if len(sizes) > 1:
            raise ValueError(
                f"task column {j}: rows were scored on different numbers of examples {sorted(sizes)}; "
                "paired intervals need the same examples in every row"
            )
        out.append(bootstrap_counts(sizes.pop(), n_resamples, seed=(seed, j)) if sizes else None)
    return out


def _cl_kwargs(metric: str | MetricStats, cl_kwargs: dict) -> dict:
    return {"higher_is_better": metric_stats(metric).higher_is_better, **cl_kwargs}


def _numeric(v) -> bool:
    """A CL metric (a number or None) or a per-task list of them; not flags such as a bool."""
    one = lambda x: x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))  # noqa: E731
    return all(one(x) for x in v) if isinstance(v, list) else one(v)


def cl_intervals(
    metric: str | MetricStats,
    stats_matrix: Sequence[Sequence[np.ndarray | None]],
    counts: Sequence[np.ndarray | None] | None = None,
    *,
    level: float = LEVEL,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    **cl_kwargs,
) -> CLIntervals:
    """Cells and ``cl_metrics`` of one metric with paired bootstrap intervals.

    ``stats_matrix[i][j]``: per-example statistics ``[n_j, k]`` of task ``j+1`` after stage ``i``
    (row 0 = base; None where not evaluated). ``counts[j]``: task ``j``'s ``[B, n_j]`` resample
    counts, shared by every row (default: :func:`task_counts` with ``n_resamples`` and ``seed``).
    For each resample the value matrix is rebuilt and ``cl_metrics`` applied to it, so the
    intervals follow whatever formulas ``cl_metrics`` has; ``cl_kwargs`` go to it, and its
    ``higher_is_better`` (when it has one) defaults to the metric's direction.
    """
    if counts is None:
        counts = task_counts(stats_matrix, n_resamples, seed)
    kwargs = _cl_kwargs(metric, cl_kwargs)
    n_b = {np.shape(c)[0] for c in counts if c is not None}
    if len(n_b) > 1:
        raise ValueError(f"counts have different numbers of resamples {sorted(n_b)}")
    B = n_b.pop() if n_b else 0

    cells, cell_iv, cell_samples = _cells(metric, stats_matrix, counts, level)
    point = cl_metrics(cells, **kwargs)
    samples, intervals = _cl_samples(point, cell_samples, B, level, kwargs)
    return CLIntervals(metric_stats(metric).name, cells, cell_iv, point, intervals, level, B, cell_samples, samples)


def _cells(
    metric: str | MetricStats,
    stats_matrix: Sequence[Sequence[np.ndarray | None]],
    counts: Sequence[np.ndarray | None],
    level: float,
) -> tuple[list[list[float | None]], list[list[tuple[float, float] | None]], list[list[np.ndarray | None]]]:
    """Each cell's value, interval and ``[B]`` resampled values (None where not evaluated)."""
    cells: list[list[float | None]] = []
    cell_iv: list[list[tuple[float, float] | None]] = []
    cell_samples: list[list[np.ndarray | None]] = []
    for i, row in enumerate(stats_matrix):
        cells.append([])
        cell_iv.append([])
        cell_samples.append([])
        for j, st in enumerate(row):
            if st is None:
                cells[i].append(None)
                cell_iv[i].append(None)
                cell_samples[i].append(None)
                continue
            column_counts = counts[j] if j < len(counts) else None
            if column_counts is None:
                raise ValueError(f"no resample counts for task column {j} (row {i} has statistics)")
            arr = _as_stats(metric, st)
            cells[i].append(value(metric, arr.sum(axis=0)))
            s = resample_values(metric, arr, column_counts)
            cell_samples[i].append(s)
            cell_iv[i].append(percentile_interval(s, level))
    return cells, cell_iv, cell_samples


def _cl_samples(
    point: dict, cell_samples: list[list[np.ndarray | None]], B: int, level: float, kwargs: dict
) -> tuple[dict, dict]:
    """``cl_metrics`` of every resample's value matrix: per CL metric its ``[B]`` values and interval."""
    # one list per cell, indexed by resample: Python floats, so the loop below does no numpy indexing
    lists = [[None if s is None else s.tolist() for s in row] for row in cell_samples]
    per_resample = []
    for b in range(B):
        rb = [[None if s is None or s[b] != s[b] else s[b] for s in row] for row in lists]  # NaN -> None
        per_resample.append(cl_metrics(rb, **kwargs))

    samples: dict = {}
    intervals: dict = {}
    for key, v in point.items():
        if key == "T" or not _numeric(v):
            continue
        if isinstance(v, list):
            samples[key] = [
                np.array([np.nan if r[key][t] is None else r[key][t] for r in per_resample], dtype=float)
                for t in range(len(v))
            ]
            intervals[key] = [percentile_interval(s, level) if B else None for s in samples[key]]
        else:
            samples[key] = np.array([np.nan if r[key] is None else r[key] for r in per_resample], dtype=float)
            intervals[key] = percentile_interval(samples[key], level) if B else None
    return samples, intervals


def own_training_effect(result: CLIntervals) -> list[dict | None]:
    """Per task j: R[j][j] - R[0][j], what its own training changed against the base, with the paired
    interval (the same resampled examples in both rows); None where a cell is missing.

    ``[{"difference", "interval"}]`` in the metric's units (for a loss, negative = it fell)."""
    out: list[dict | None] = []
    for j in range(len(result.cells[0]) if result.cells else 0):
        i = j + 1
        after, before = (result.cells[i][j], result.cells[0][j]) if i < len(result.cells) else (None, None)
        if after is None or before is None:
            out.append(None)
            continue
        samples = np.asarray(result.cell_samples[i][j]) - np.asarray(result.cell_samples[0][j])
        interval = percentile_interval(samples, result.level)
        out.append(
            {
                "difference": after - before,
                "interval": None if interval is None else [interval[0], interval[1]],
            }
        )
    return out
