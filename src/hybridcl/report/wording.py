"""The words of the report for a difference and its interval: "above 0", "within noise", ...

The numbers come from :mod:`hybridcl.stats.intervals`; this module only says them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hybridcl.stats.intervals import LEVEL, percentile_interval


def signed(x: float, digits: int = 2) -> str:
    """``x`` with its sign: ``+3.20``, ``-0.50``."""
    return f"{x:+.{digits}f}"


@dataclass(frozen=True)
class Difference:
    """``a - b`` with its bootstrap interval; ``beyond_noise`` when the interval excludes 0."""

    difference: float
    low: float
    high: float
    level: float
    beyond_noise: bool
    text: str


def describe_interval(
    name: str, point: float, interval: tuple[float, float] | None, *, level: float = LEVEL, digits: int = 2
) -> str:
    """One quantity that is itself a paired difference (forgetting, BWT, FWT) against 0, in words:
    ``"forgetting +3.20 (95% CI [+1.10, +5.00]): above 0"``, ``"... : within noise (the interval
    contains 0)"`` or, when every resample gives exactly 0, ``"...: exactly 0 on every resample"``."""
    pct = f"{round(100 * level)}%"
    if interval is None:
        return f"{name}: undefined"
    low, high = interval
    head = f"{name} {signed(point, digits)} ({pct} CI [{signed(low, digits)}, {signed(high, digits)}])"
    if low == 0.0 and high == 0.0 and point == 0.0:
        return f"{name} 0 on every resample: no change at all"
    if low > 0:
        return f"{head}: above 0"
    if high < 0:
        return f"{head}: below 0"
    return f"{head}: within noise (the interval contains 0)"


def describe_difference(
    a_point: float,
    b_point: float,
    a_samples: np.ndarray,
    b_samples: np.ndarray,
    *,
    paired: bool = True,
    a_name: str = "A",
    b_name: str = "B",
    level: float = LEVEL,
    digits: int = 2,
    seed: int = 0,
) -> Difference:
    """Whether ``a`` and ``b`` differ beyond noise, from their ``[B]`` bootstrap values.

    ``paired=True``: the samples come from the same resample counts over the same examples (two
    rows of one task, or two runs scored on the same examples with the same counts); the interval
    is that of ``a_b - b_b``. ``paired=False`` (runs on different examples): ``b``'s samples are
    shuffled with ``seed`` so the difference is of independent resamples. Undefined resamples
    (NaN) are skipped.
    """
    a = np.asarray(a_samples, dtype=float)
    b = np.asarray(b_samples, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"samples must be equal 1-d arrays; got {a.shape} and {b.shape}")
    if not paired:
        b = np.random.default_rng(seed).permutation(b)
    interval = percentile_interval(a - b, level)
    diff = a_point - b_point
    pct = f"{round(100 * level)}%"
    if interval is None:
        return Difference(diff, math.nan, math.nan, level, False, f"{a_name} vs {b_name}: undefined")
    low, high = interval
    ci = f"{pct} CI of the difference [{signed(low, digits)}, {signed(high, digits)}]"
    if low == 0.0 and high == 0.0 and diff == 0.0:
        text = f"{a_name} equals {b_name} on every resample"
        beyond = False
    elif low > 0 or high < 0:
        word = "higher" if low > 0 else "lower"
        text = f"{a_name} is {word} than {b_name} by {signed(diff, digits)} ({ci})"
        beyond = True
    else:
        text = f"{a_name} and {b_name} differ by {signed(diff, digits)}, within noise ({ci})"
        beyond = False
    return Difference(diff, low, high, level, beyond, text)


def format_interval(point: float | None, interval: tuple[float, float] | None, digits: int = 2) -> str:
    """``"5.49 [4.10, 6.80]"`` (point, then the interval), ``"5.49"`` without one, ``"-"`` for None."""
    if point is None:
        return "-"
    if interval is None:
        return f"{point:.{digits}f}"
    return f"{point:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def format_mean_std(summary: dict, digits: int = 2) -> str:
    """``"5.49 ± 0.31 (n=3)"`` from :func:`mean_std_n`; ``"-"`` when no seed gave a value."""
    if summary.get("mean") is None:
        return "-"
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f} (n={summary['n']})"
