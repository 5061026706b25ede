"""The seed's claims, checked against a finished sweep (the study of issue 14/23): one markdown table.

    python scripts/study_claims.py STUDY_DIR [MORE ...]   # sweep folders made by `hybridcl run --sweep strategy=...`

Each claim is a paired difference between two strategies of the sweep, one strategy's CL metric, or the
interaction contrast of synergy (the hybrid's gain over the base minus LoRA-only's minus full-layer-only's),
read from each seed's ``stats/row<i>.safetensors`` (the per-example statistics of every matrix cell):

- measured: the mean over seeds;
- over seeds: the 95% t interval of the per-seed values (what training with another seed could give);
- over evaluation examples: a paired bootstrap of the examples (1,000 resamples, the same resampled
  examples in every row, seed and strategy), the seed-mean recomputed per resample;
- a paired sign-flip test over examples: each evaluation example (of every task) contributes its share
  of the claim's value (averaged over seeds; the evaluation set is the same on every seed); under "no
  difference" each share's sign is a coin flip. Exact (all 2^n sign patterns) for n <= 20 examples,
  else Monte Carlo with 100,000 random patterns, p = (1 + hits) / (1 + draws). Two-sided;
- Holm's step-down correction of those p-values over the claims of one table.

The verdict: "holds" / "does not hold: the opposite" when the Holm-adjusted p is below 0.05 and both
intervals exclude 0 on the same side; otherwise "within noise", with the margin the intervals rule out
(the largest distance of either interval's ends from 0) and whether that lies inside the equivalence
margin (±1 BLEU, ±0.01 nats, ±1 point of forgetting).

A share per example exists for metrics that are a mean over examples or a ratio of sums whose
denominators (target tokens) are the same for both sides: BLEU (CodeXGLUE's sentence BLEU averaged over
examples), the loss, syntax pass. For the relative forgetting the test is of its numerator (the
per-example differences between a task's own row and the last row), its denominator held at its value.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridcl.constants import HEADLINE_METRIC
from hybridcl.intervals import cl_intervals, metric_stats, percentile_interval, t_interval
from hybridcl.io import load_tensors, read_json
from hybridcl.report.compare import INTERVAL_OF, expand_run_dirs

EXACT_MAX = 20  # examples up to which the sign-flip test enumerates every pattern
MC_DRAWS = 100_000  # random sign patterns beyond that
ALPHA = 0.05
# equivalence margins by metric (a "within noise" verdict says whether its intervals lie inside them)
MARGINS = {HEADLINE_METRIC: (1.0, "BLEU"), "loss": (0.01, "nats")}
FORGETTING_MARGIN = (1.0, "points")
SYNERGY = "synergy"  # the interaction contrast's pseudo-strategy B


@dataclass(frozen=True)
class Claim:
    """``a`` (minus ``b``) in ``column`` is predicted to have ``sign``; ``b = SYNERGY``: the interaction
    contrast of ``a`` against ``parts`` (gains over each run's own base row, in the metric's direction)."""

    text: str
    a: str
    b: str | None
    column: str
    sign: int
    parts: tuple[str, ...] = ()


HYB, SHARED, LORA, FULL = "hybrid_task_specific", "hybrid_shared_layer", "lora_only", "full_layer_only"
CLAIMS = [
    Claim("hybrid task-specific beats LoRA-only on average BLEU", HYB, LORA, "average_bleu", +1),
    Claim("hybrid task-specific beats full-layer-only on average BLEU", HYB, FULL, "average_bleu", +1),
    Claim("hybrid task-specific beats LoRA-only on the loss after the last task", HYB, LORA, "average_loss", -1),
    Claim("hybrid task-specific beats full-layer-only on the loss after the last task", HYB, FULL, "average_loss", -1),
    Claim(
        "the whole is greater than the sum of its parts (average BLEU gain: hybrid - LoRA-only - full-layer-only)",
        HYB,
        SYNERGY,
        "average_bleu",
        +1,
        (LORA, FULL),
    ),
    Claim(
        "the whole is greater than the sum of its parts (loss gain: hybrid - LoRA-only - full-layer-only)",
        HYB,
        SYNERGY,
        "average_loss",
        +1,
        (LORA, FULL),
    ),
    Claim("full-layer-only shows negative forgetting (seed: -6.20%)", FULL, None, "forgetting_relative", -1),
    Claim("hybrid task-specific forgets (seed: +4.38%)", HYB, None, "forgetting_relative", +1),
    Claim(
        "a shared layer transfers knowledge backwards (BLEU BWT above the task-specific hybrid's)",
        SHARED,
        HYB,
        "bwt",
        +1,
    ),
    Claim(
        "a shared layer transfers knowledge backwards (loss BWT above the task-specific hybrid's)",
        SHARED,
        HYB,
        "bwt_loss",
        +1,
    ),
    Claim(
        "a shared layer helps later tasks before their training (FWT above the task-specific hybrid's)",
        SHARED,
        HYB,
        "fwt",
        +1,
    ),
    Claim("the shared hybrid beats the task-specific one on average BLEU", SHARED, HYB, "average_bleu", +1),
]


# ---- the tests ------------------------------------------------------------------------------------


def sign_flip_test(shares, *, exact_max: int = EXACT_MAX, draws: int = MC_DRAWS, seed: int = 0) -> tuple[float, str]:
    """Two-sided paired sign-flip test of ``sum(shares) == 0``: ``(p, method)``.

    ``shares``: one number per example whose sum is the statistic (e.g. the per-example differences
    between two strategies); examples whose share is 0 are left out (n counts the others). Exact for
    n <= ``exact_max``: p is the fraction of the 2^n sign patterns (the observed one included) whose
    |sum| reaches the observed |sum|. Beyond, ``draws`` random patterns and p = (1 + hits) / (1 + draws)
    (Phipson & Smyth 2010). All shares 0: p = 1.
    """
    d = np.asarray(shares, dtype=float).ravel()
    if d.size == 0:
        raise ValueError("sign_flip_test needs at least one example")
    if not np.any(d):
        return 1.0, f"all {d.size} differences are 0"
    d = d[d != 0]  # a zero's sign changes no sum: dropping it leaves p as is and keeps more tests exact
    n = d.size
    observed = abs(d.sum())
    tol = 1e-9 * max(1.0, np.abs(d).sum())
    if n <= exact_max:
        hits = 0
        bits = np.arange(n)
        for start in range(0, 2**n, 1 << 16):
            codes = np.arange(start, min(start + (1 << 16), 2**n))[:, None]
            signs = 1.0 - 2.0 * ((codes >> bits) & 1)
            hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
        return hits / 2**n, f"exact, n={n}"
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, draws, 10_000):
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(min(10_000, draws - start), n))
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    return (1 + hits) / (1 + draws), f"Monte Carlo, n={n}, {draws:,} draws"


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None entries skipped and kept): the k-th smallest of m is
    multiplied by m - k + 1, made non-decreasing in that order, capped at 1."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


# ---- per-example shares of a CL metric ------------------------------------------------------------


def cell_shares(metric: str, stats: np.ndarray) -> np.ndarray:
    """Each example's share of one cell's value (they sum to it): ``scale * numerator / sum(denominators)``
    for a metric that is a mean over examples or a ratio of sums; ValueError for any other (corpus BLEU)."""
    spec = metric_stats(metric)
    if len(spec.columns) != 2:
        raise ValueError(f"{spec.name} is not a mean or ratio over examples: no per-example shares")
    stats = np.asarray(stats, dtype=float)
    scale = float(spec.aggregate(np.array([1.0, 1.0])))
    return scale * stats[:, 0] / stats[:, 1].sum()


def key_shares(cells: list[list[np.ndarray]], key: str, higher_is_better: bool) -> list[np.ndarray]:
    """Per task column, each example's share of the CL metric ``key`` (``average_final``, ``bwt``,
    ``fwt``, ``forgetting_relative``, or ``base_average``: the base row's mean over the trained tasks) of
    a matrix of cell shares ``cells[i][j]`` (rows: base, then one per task in order). Their total is the
    metric as ``hybridcl.cl_metrics`` computes it."""
    T = len(cells) - 1
    sign = 1.0 if higher_is_better else -1.0
    out = []
    for j in range(len(cells[0])):
        v = np.zeros_like(cells[0][j])
        if key == "average_final" and j < T:
            v = v + cells[T][j] / T
        elif key == "base_average" and j < T:
            v = v + cells[0][j] / T
        elif key == "bwt" and j < T - 1:
            v = v + sign * (cells[T][j] - cells[j + 1][j]) / (T - 1)
        elif key == "fwt" and 1 <= j < T:
            v = v + sign * (cells[j][j] - cells[0][j]) / (T - 1)
        elif key == "forgetting_relative" and j < T - 1:
            diag = cells[j + 1][j]
            v = v + 100.0 * sign * (diag - cells[T][j]) / diag.sum() / (T - 1)
        elif key not in ("average_final", "base_average", "bwt", "fwt", "forgetting_relative"):
            raise ValueError(f"no per-example shares for the CL metric {key!r}")
        out.append(v)
    return out


def seed_stats(run_dir: Path, metric: str) -> dict[str, list[list[np.ndarray]]]:
    """Seed folder name -> ``stats[i][j]``, the per-example statistics of ``metric`` of each cell
    (rows: base, then one per task; the run's rows must be exactly that)."""
    results = read_json(run_dir / "results.json")
    tasks = results["tasks"]
    if results.get("rows") not in (None, ["base", *tasks]):
        raise ValueError(f"{run_dir}: rows {results['rows']} are not [base, *tasks]: no per-example shares")
    out = {}
    for seed_dir in sorted(run_dir.glob("seed-*")):
        paths = sorted(seed_dir.glob("stats/row*.safetensors"), key=lambda p: int(p.stem.removeprefix("row")))
        rows = [load_tensors(p) for p in paths]
        missing = [(i, t) for i, row in enumerate(rows) for t in tasks if f"{t}/{metric}" not in row]
        if missing:
            raise ValueError(f"{seed_dir}: no {metric} statistics for (row, task) {missing[:3]}")
        out[seed_dir.name] = [[row[f"{t}/{metric}"].numpy().astype(float) for t in tasks] for row in rows]
    return out


def seed_shares(run_dir: Path, column: str, key: str | None = None) -> dict[str, np.ndarray]:
    """Seed -> the per-example shares (all task columns concatenated) of ``column``'s CL metric."""
    metric, cl_key = INTERVAL_OF[column]
    hib = metric_stats(metric).higher_is_better
    out = {}
    for seed, stats in seed_stats(run_dir, metric).items():
        cells = [[cell_shares(metric, st) for st in row] for row in stats]
        out[seed] = np.concatenate(key_shares(cells, key or cl_key, hib))
    return out


def _denominators(run_dir: Path, metric: str) -> dict[str, list[np.ndarray]]:
    return {s: [st[:, 1] for row in rows for st in row] for s, rows in seed_stats(run_dir, metric).items()}


def check_same_examples(runs: list[Path], metric: str) -> None:
    """The runs' cells have the same per-example denominators (target tokens; 1 per generated example)
    on every seed: the same evaluation examples, so per-example shares pair."""
    ref = _denominators(runs[0], metric)
    for run in runs[1:]:
        other = _denominators(run, metric)
        for seed in set(ref) & set(other):
            if len(ref[seed]) != len(other[seed]) or any(
                a.shape != b.shape or not np.allclose(a, b) for a, b in zip(ref[seed], other[seed], strict=True)
            ):
                raise ValueError(
                    f"{runs[0]} and {run} ({seed}) were not scored on the same evaluation examples for {metric}: "
                    "their per-example shares do not pair"
                )


def claim_shares(claim: Claim, runs: dict[str, Path]) -> dict[str, np.ndarray]:
    """Seed -> the per-example shares of the claim's value (their sum is the value on that seed)."""
    a = runs[claim.a]
    if claim.b == SYNERGY:
        metric = INTERVAL_OF[claim.column][0]
        direction = 1.0 if metric_stats(metric).higher_is_better else -1.0
        members = [claim.a, *claim.parts]
        check_same_examples([runs[m] for m in members], metric)
        gains = []
        for m in members:
            final, base = seed_shares(runs[m], claim.column), seed_shares(runs[m], claim.column, "base_average")
            gains.append({s: direction * (final[s] - base[s]) for s in final})
        seeds = sorted(set.intersection(*(set(g) for g in gains)))
        return {s: gains[0][s] - sum(g[s] for g in gains[1:]) for s in seeds}
    sa = seed_shares(a, claim.column)
    if claim.b is None:
        return sa
    check_same_examples([a, runs[claim.b]], INTERVAL_OF[claim.column][0])
    sb = seed_shares(runs[claim.b], claim.column)
    return {s: sa[s] - sb[s] for s in sorted(set(sa) & set(sb))}


# ---- the interval over examples -------------------------------------------------------------------


def example_samples(run_dir: Path, column: str, key: str | None = None) -> dict[str, np.ndarray]:
    """Seed folder name -> the column's value on each of 1,000 bootstrap resamples of the evaluation
    examples (``key="base_average"``: the base row's mean over the tasks). The resample counts depend
    only on the number of examples per task (seeded), so runs on the same examples pair."""
    metric, cl_key = INTERVAL_OF[column]
    out = {}
    for seed, stats in seed_stats(run_dir, metric).items():
        result = cl_intervals(metric, stats)
        if key == "base_average":
            T = len(stats) - 1
            out[seed] = np.mean([result.cell_samples[0][j] for j in range(T)], axis=0)
        else:
            out[seed] = result.samples[key or cl_key]
    return out


def claim_samples(claim: Claim, runs: dict[str, Path]) -> dict[str, np.ndarray]:
    """Seed -> the claim's value on each bootstrap resample of the examples."""
    if claim.b == SYNERGY:
        metric = INTERVAL_OF[claim.column][0]
        direction = 1.0 if metric_stats(metric).higher_is_better else -1.0
        gains = []
        for m in (claim.a, *claim.parts):
            final, base = example_samples(runs[m], claim.column), example_samples(runs[m], claim.column, "base_average")
            gains.append({s: direction * (final[s] - base[s]) for s in final})
        seeds = sorted(set.intersection(*(set(g) for g in gains)))
        return {s: gains[0][s] - sum(g[s] for g in gains[1:]) for s in seeds}
    sa = example_samples(runs[claim.a], claim.column)
    if claim.b is None:
        return sa
    sb = example_samples(runs[claim.b], claim.column)
    return {s: sa[s] - sb[s] for s in sorted(set(sa) & set(sb))}


# ---- one claim, one table -------------------------------------------------------------------------


@dataclass
class ClaimResult:
    claim: Claim
    value: float  # mean over seeds
    per_seed: list[float]
    seed_interval: tuple[float, float] | None
    example_interval: tuple[float, float] | None
    p: float
    method: str
    p_holm: float | None = None

    def exactly_zero(self) -> bool:
        ivs = [self.seed_interval, self.example_interval]
        return self.value == 0.0 and all(iv is not None and iv[0] == iv[1] == 0.0 for iv in ivs) and self.p == 1.0


def evaluate_claim(claim: Claim, runs: dict[str, Path]) -> ClaimResult:
    """The claim's value per seed, its two intervals and its sign-flip p-value (Holm's comes later)."""
    shares = claim_shares(claim, runs)
    per_seed = [float(v.sum()) for v in shares.values()]
    samples = claim_samples(claim, runs)
    by_examples = percentile_interval(np.mean(list(samples.values()), axis=0)) if samples else None
    p, method = sign_flip_test(np.mean(list(shares.values()), axis=0))
    return ClaimResult(claim, float(np.mean(per_seed)), per_seed, t_interval(per_seed), by_examples, p, method)


def margin_of(column: str) -> tuple[float, str]:
    if column == "forgetting_relative":
        return FORGETTING_MARGIN
    return MARGINS.get(INTERVAL_OF[column][0], (0.0, ""))


def verdict(r: ClaimResult) -> str:
    """Holds / does not hold (Holm-adjusted p < 0.05 and both intervals on one side of 0), else within
    noise with the margin its intervals rule out."""
    if r.exactly_zero():
        return "does not hold: exactly 0 on every seed and example"
    ivs = [iv for iv in (r.seed_interval, r.example_interval) if iv is not None]
    above, below = all(lo > 0 for lo, _ in ivs), all(hi < 0 for _, hi in ivs)
    if len(ivs) == 2 and r.p_holm is not None and r.p_holm < ALPHA and (above or below):
        return "holds" if above == (r.claim.sign > 0) else "does not hold: the opposite, beyond noise"
    bound = max(abs(x) for iv in ivs for x in iv) if ivs else float("nan")
    margin, unit = margin_of(r.claim.column)
    inside = "inside" if bound <= margin else "not inside"
    return f"within noise: rules out effects beyond ±{bound:.3f} ({inside} ±{margin:g} {unit})"


def _label(claim: Claim) -> str:
    if claim.b == SYNERGY:
        return f"{claim.a} - {' - '.join(claim.parts)} (gains)"
    return claim.a if claim.b is None else f"{claim.a} - {claim.b}"


def _iv(iv) -> str:
    return "n/a" if iv is None else f"[{iv[0]:+.3f}, {iv[1]:+.3f}]"


def strategy_runs(studies: list[Path]) -> dict[str, Path]:
    """Strategy name -> its run folder (the first where two runs have one strategy)."""
    runs: dict[str, Path] = {}
    for run in expand_run_dirs(studies):
        runs.setdefault(read_json(run / "results.json")["strategy"], Path(run))
    return runs


@dataclass(frozen=True)
class Untested:
    """A claim the study cannot test, and why."""

    claim: Claim
    reason: str


def claims_results(studies: list[Path], claims: list[Claim] = CLAIMS) -> list[ClaimResult | Untested]:
    """Every claim's result (:class:`Untested` where the study lacks a strategy or the metric's per-example
    statistics), the tested ones' p-values Holm-adjusted together."""
    runs = strategy_runs(studies)
    out: list[ClaimResult | Untested] = []
    for claim in claims:
        needed = [claim.a, *([claim.b] if claim.b not in (None, SYNERGY) else []), *claim.parts]
        missing = [n for n in needed if n not in runs]
        if missing:
            out.append(Untested(claim, f"not in this study ({', '.join(missing)})"))
            continue
        try:
            out.append(evaluate_claim(claim, runs))
        except ValueError as e:  # no per-example statistics of its metric, or other evaluation examples
            out.append(Untested(claim, f"not testable here: {e}"))
    results = [r for r in out if isinstance(r, ClaimResult)]
    for r, adjusted in zip(results, holm([r.p for r in results]), strict=True):
        r.p_holm = adjusted
    return out


def claims_table(studies: list[Path], claims: list[Claim] = CLAIMS) -> str:
    lines = [
        "| claim | measured (mean over seeds) | 95% interval over seeds (t) | 95% interval over examples "
        "(bootstrap) | sign-flip p (over examples) | Holm-adjusted p | seeds | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in claims_results(studies, claims):
        if isinstance(r, Untested):
            lines.append(f"| {r.claim.text} | {r.reason} | | | | | | |")
            continue
        lines.append(
            f"| {r.claim.text} | {_label(r.claim)}: {r.value:+.3f} | {_iv(r.seed_interval)} | "
            f"{_iv(r.example_interval)} | {r.p:.2g} ({r.method}) | {r.p_holm:.2g} | {len(r.per_seed)} | {verdict(r)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(claims_table([Path(a) for a in sys.argv[1:]]))
