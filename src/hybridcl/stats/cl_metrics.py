"""Continual-learning metrics computed from one metric's matrix ``R``.

Notation (1-based tasks, as in the papers): ``R[i][j]`` is the score on task ``j`` after training
tasks ``1..i``; row ``0`` is the base model before any training. In Python,
``matrix[i][j - 1]`` holds ``R[i][j]``: rows are indexed from 0 (= base), columns from 0 (= task 1).
``T = len(matrix) - 1`` is the number of tasks trained so far. A matrix may have more columns than
``T`` (later tasks evaluated for forward transfer) and ``None`` entries (not evaluated).

Formulas (each per task and as a mean over the tasks where it is defined):

- ``average_final`` = mean_{j=1..T} R[T][j]
- ``forgetting_relative`` (the seed's, percent) = 100 * (R[j][j] - R[T][j]) / R[j][j], j = 1..T-1;
  undefined (None) where R[j][j] == 0.
- ``forgetting_absolute`` (Chaudhry et al. 2018, "Riemannian Walk")
  = max_{l=j..T-1} R[l][j] - R[T][j], j = 1..T-1 (in the metric's own units): the best score the
  task had from its own training on (row j, the stage that trained it) up to the row before the
  last, minus its final score. Rows before j are not used: a task cannot forget what it has not
  yet learnt, so a high score there (e.g. a strong base model) is not forgetting.
- ``bwt`` (GEM, Lopez-Paz & Ranzato 2017) = mean_{j=1..T-1} R[T][j] - R[j][j]. Negative = forgetting.
- ``fwt`` (GEM) = mean_{j=2..T} R[j-1][j] - b_j, where b_j = R[0][j], the frozen base model's score
  (GEM uses a randomly initialised model; here the reference is the base before any training).

Direction: the formulas above are for a score where higher is better (BLEU, exact match). For a
metric where lower is better (a loss), ``higher_is_better=False`` flips every difference so the
signs keep their meaning: forgetting is a *rise* of the metric (relative: 100 * (R[T][j] - R[j][j])
/ R[j][j]; absolute: R[T][j] - min_{l=j..T-1} R[l][j]), BWT = R[j][j] - R[T][j] (still negative =
forgetting) and FWT = b_j - R[j-1][j] (still positive = the earlier tasks helped).

Every metric is ``None`` where it is undefined (T = 1 for forgetting/BWT/FWT, zero denominators,
missing entries) -- never NaN. Means are over the tasks where the metric is defined; ``n`` and
``n_skipped`` say, per mean, over how many tasks it was taken and how many undefined ones it left
out. Scores are whatever the matrix holds (e.g. BLEU 0-100).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# One metric's matrix as rows of values (row i = after stage i, None = not evaluated);
# hybridcl.records.results.Matrix holds every metric's and builds these.
MetricRows = Sequence[Sequence[float | None]]


def _value(matrix: MetricRows, i: int, j: int) -> float | None:
    """R[i][j] with 1-based task j; None when missing or NaN."""
    row = matrix[i]
    if j - 1 >= len(row):
        return None
    v = row[j - 1]
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


MEANS = ("average_final", "forgetting_relative", "forgetting_absolute", "bwt", "fwt")


def _tasks_trained(matrix: MetricRows) -> int:
    """T, the rows after row 0; raises ValueError for a matrix a row of which misses a trained task."""
    if len(matrix) == 0:
        raise ValueError("matrix has no rows: row 0 (the base model) is required")
    for i, row in enumerate(matrix[1:], start=1):
        if len(row) < i:
            raise ValueError(f"matrix row {i} has {len(row)} columns; it needs at least {i} (tasks 1..{i})")
    return len(matrix) - 1


def cl_metrics(matrix: MetricRows, higher_is_better: bool = True) -> dict:
    """Continual-learning metrics of one metric's matrix (see the module docstring for formulas).

    ``higher_is_better``: False for a metric where lower is better (a loss); forgetting is then a
    rise of the metric and BWT/FWT keep their signs' meaning (negative BWT = forgetting).

    Returns a dict with ``T`` (tasks trained), the means ``average_final``, ``forgetting_relative``
    (percent), ``forgetting_absolute`` (the metric's units), ``bwt``, ``fwt``; per-task lists
    ``final_per_task`` (length T), ``forgetting_relative_per_task``,
    ``forgetting_absolute_per_task``, ``bwt_per_task`` (length T-1, task j at index j-1) and
    ``fwt_per_task`` (length T-1, task j = 2..T at index j-2); and ``n`` / ``n_skipped``: for each
    mean, the number of tasks it averages and the number of tasks left out as undefined (None).
    A mean is None when no task defines it.
    """
    T = _tasks_trained(matrix)
    sign = 1.0 if higher_is_better else -1.0

    def gain(a: float | None, b: float | None) -> float | None:
        """How much better ``a`` is than ``b`` in the metric's direction."""
        d = _diff(a, b)
        return None if d is None else sign * d

    final = [_value(matrix, T, j) for j in range(1, T + 1)] if T >= 1 else []
    diag = [_value(matrix, j, j) for j in range(1, T)]
    last_on_old = final[:-1] if T >= 1 else []

    relative: list[float | None] = []
    for d, f in zip(diag, last_on_old, strict=True):
        lost = gain(d, f)
        relative.append(None if lost is None or not d else 100.0 * lost / d)

    absolute: list[float | None] = []
    for j in range(1, T):
        # from the task's own row j (the stage that trained it) to the row before the last
        since_trained = [v for v in (_value(matrix, row, j) for row in range(j, T)) if v is not None]
        best = (max if higher_is_better else min)(since_trained) if since_trained else None
        absolute.append(gain(best, final[j - 1]))

    bwt = [gain(f, d) for f, d in zip(last_on_old, diag, strict=True)]
    fwt = [gain(_value(matrix, j - 1, j), _value(matrix, 0, j)) for j in range(2, T + 1)]

    per_task = {
        "average_final": final,
        "forgetting_relative": relative,
        "forgetting_absolute": absolute,
        "bwt": bwt,
        "fwt": fwt,
    }
    return {
        "T": T,
        **{name: _mean(values) for name, values in per_task.items()},
        "final_per_task": final,
        "forgetting_relative_per_task": relative,
        "forgetting_absolute_per_task": absolute,
        "bwt_per_task": bwt,
        "fwt_per_task": fwt,
        "n": {name: sum(v is not None for v in values) for name, values in per_task.items()},
        "n_skipped": {name: sum(v is None for v in values) for name, values in per_task.items()},
    }
