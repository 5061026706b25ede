"""Statistics over seeds: mean and standard deviation, the count of defined values, the Student t
interval of the mean, and reading such aggregated values back."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def mean_std(values: list) -> dict:
    """``{"mean", "std"}`` of the numbers in ``values`` (None and NaN skipped; sample std, 0 for one)."""
    nums = [v for v in values if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))]
    if not nums:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(nums), "std": statistics.stdev(nums) if len(nums) > 1 else 0.0}


def mean_std_nested(values: list):
    """:func:`mean_std` at every leaf of equally shaped dicts and lists."""
    head = values[0]
    if isinstance(head, dict):
        return {k: mean_std_nested([v[k] for v in values]) for k in head}
    if isinstance(head, list):
        return [mean_std_nested([v[i] for v in values]) for i in range(len(head))]
    return mean_std(values)


def mean(value):
    """A number, or the mean of an aggregated ``{"mean", "std"}`` value."""
    return value.get("mean") if isinstance(value, dict) else value


LEVEL = 0.95


def mean_std_n(values: Sequence[float | None]) -> dict:
    """``{"mean", "std", "n"}`` over seeds: :func:`mean_std` plus how many values were
    defined (None and NaN are skipped and not counted)."""
    n = sum(1 for v in values if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)))
    return {**mean_std(list(values)), "n": n}


# Student's t 0.975 quantiles by degrees of freedom (a table: scipy for a handful of quantiles is a large
# dependency); a df between two entries takes the smaller df's quantile, the wider interval.
T_975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    15: 2.131,
    20: 2.086,
    30: 2.042,
    60: 2.000,
    120: 1.980,
}


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The 95% Student t interval of the mean of ``values`` (seeds); None for fewer than two values."""
    if level != 0.95:
        raise ValueError(f"t_interval has the 0.975 quantiles only (level 0.95), not {level}")
    values = [float(v) for v in values]
    if len(values) < 2:
        return None
    df = len(values) - 1
    t = T_975[max(k for k in T_975 if k <= df)]
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / df)
    half = t * s / math.sqrt(len(values))
    return (m - half, m + half)
