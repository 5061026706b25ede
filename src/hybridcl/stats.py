"""Mean and standard deviation over seeds, and reading such aggregated values back."""

from __future__ import annotations

import math
import statistics


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
