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
  = max_{l=1..T-1} R[l][j] - R[T][j], j = 1..T-1 (in the metric's own units).
- ``bwt`` (GEM, Lopez-Paz & Ranzato 2017) = mean_{j=1..T-1} R[T][j] - R[j][j]. Negative = forgetting.
- ``fwt`` (GEM) = mean_{j=2..T} R[j-1][j] - b_j, where b_j = R[0][j], the frozen base model's score
  (GEM uses a randomly initialised model; here the reference is the base before any training).

Every metric is ``None`` where it is undefined (T = 1 for forgetting/BWT/FWT, zero denominators,
missing entries) -- never NaN. Scores are whatever the matrix holds (e.g. BLEU 0-100).
"""

from __future__ import annotations

import math
from typing import Sequence

Matrix = Sequence[Sequence[float | None]]


def _value(matrix: Matrix, i: int, j: int) -> float | None:
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


def cl_metrics(matrix: Matrix) -> dict:
    """Continual-learning metrics of one score matrix (see the module docstring for formulas).

    Returns a dict with ``T`` (tasks trained), ``average_final``, ``forgetting_relative`` (percent),
    ``forgetting_absolute``, ``bwt``, ``fwt`` and per-task lists: ``final_per_task`` (length T),
    ``forgetting_relative_per_task``, ``forgetting_absolute_per_task``, ``bwt_per_task`` (length T-1,
    task j at index j-1) and ``fwt_per_task`` (length T-1, task j = 2..T at index j-2).
    Means skip None entries and are None when nothing is defined.
    """
    if len(matrix) == 0:
        raise ValueError("matrix has no rows: row 0 (the base model) is required")
    T = len(matrix) - 1
    for i, row in enumerate(matrix[1:], start=1):
        if len(row) < i:
            raise ValueError(f"matrix row {i} has {len(row)} columns; it needs at least {i} (tasks 1..{i})")

    final = [_value(matrix, T, j) for j in range(1, T + 1)] if T >= 1 else []
    diag = [_value(matrix, j, j) for j in range(1, T)]
    last_on_old = final[:-1] if T >= 1 else []

    relative: list[float | None] = []
    for d, f in zip(diag, last_on_old):
        relative.append(None if d is None or f is None or d == 0 else 100.0 * (d - f) / d)

    absolute: list[float | None] = []
    for j in range(1, T):
        earlier = [_value(matrix, l, j) for l in range(1, T)]
        earlier = [v for v in earlier if v is not None]
        absolute.append(_diff(max(earlier), final[j - 1]) if earlier else None)

    bwt = [_diff(f, d) for f, d in zip(last_on_old, diag)]
    fwt = [_diff(_value(matrix, j - 1, j), _value(matrix, 0, j)) for j in range(2, T + 1)]

    return {
        "T": T,
        "average_final": _mean(final),
        "forgetting_relative": _mean(relative),
        "forgetting_absolute": _mean(absolute),
        "bwt": _mean(bwt),
        "fwt": _mean(fwt),
        "final_per_task": final,
        "forgetting_relative_per_task": relative,
        "forgetting_absolute_per_task": absolute,
        "bwt_per_task": bwt,
        "fwt_per_task": fwt,
    }

