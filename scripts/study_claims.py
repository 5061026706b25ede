"""The seed's claims, checked against a finished sweep (the study of issue 14/23): one markdown table.

    python scripts/study_claims.py STUDY_DIR [MORE ...]   # sweep folders made by `hybridcl run --sweep strategy=...`
    python scripts/study_claims.py OUT/main OUT/more-seeds  # main's seeds pooled with those added later
    python scripts/study_claims.py --open-questions OUT/main OUT/rank OUT/position   # rank and block position

``--open-questions``: each ``rank``/``position`` run of scripts/study_at_scale.py against ``main``'s
task-specific hybrid, on the seeds both have (seed 0 on a CPU: the verdict then rests on the examples
alone), in a table and a Holm family of its own.

Run folders of one name (``main/lora_only`` and ``more-seeds/seed-3/lora_only``) are one run whose seeds
pool: they must hold the same strategy, tasks and config (apart from the seeds, the output folder, the row-0
cache and the precision asked for), have trained in the same precision and share no seed.

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

Three kinds of claims have no paired shares: "JavaScript passes syntax more often than Python" compares
two tasks' examples (unpaired: the bootstrap resamples each task independently, and a two-sample
permutation test replaces the sign flip); the first-epoch training loss (from ``train[k].losses``,
weighted by the steps each logged window covers) and the training time per step (seconds over steps,
all stages) are measured once per seed: the t interval over seeds alone decides them, outside Holm's
correction, and the time is only meaningful from an idle machine.

Runs that trained in different precisions (each stage's ``precision``), or, for the time per step, timed
a seed they share on different machines (``results.json``'s ``environment``), are not compared: the
claim says why.

A share per example exists for metrics that are a mean over examples or a ratio of sums whose
denominators (target tokens) are the same for both sides: BLEU (CodeXGLUE's sentence BLEU averaged over
examples), the loss, syntax pass. For the relative forgetting the test is of its numerator (the
per-example differences between a task's own row and the last row), its denominator held at its value.
"""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from hybridcl.constants import HEADLINE_METRIC
from hybridcl.errors import RunError
from hybridcl.records.io import load_tensors, read_json
from hybridcl.records.results import trained_precisions
from hybridcl.records.run_dir import SeedDir, load_run_config
from hybridcl.report.compare import INTERVAL_OF, expand_run_dirs
from hybridcl.stats.intervals import cl_intervals, metric_stats, percentile_interval, t_interval, value
from hybridcl.strategies import Scope, get_strategy

EXACT_MAX = 20  # examples up to which the sign-flip test enumerates every pattern
MC_DRAWS = 100_000  # random sign patterns beyond that
ALPHA = 0.05
# equivalence margins by metric (a "within noise" verdict says whether its intervals lie inside them)
MARGINS = {HEADLINE_METRIC: (1.0, "BLEU"), "loss": (0.01, "nats")}
FORGETTING_MARGIN = (1.0, "points")
SYNTAX_MARGIN = (5.0, "points")
SYNERGY = "synergy"  # the interaction contrast's pseudo-strategy B
# claim column -> (metric, CL metric or "own": the task's cell right after its own training)
COLUMNS = {**INTERVAL_OF, "own_loss": ("loss", "own"), "syntax_languages": ("syntax_pass", "final")}
# columns measured once per seed (no per-example statistics): the t interval over seeds only
SEED_COLUMNS = {"first_epoch_loss": (0.01, "nats"), "seconds_per_step": (None, "s")}


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
    task: str | None = None  # the task of a per-task column (own_loss, first_epoch_loss, syntax_languages)
    other_task: str | None = None  # syntax_languages: task minus other_task, one strategy


# the settings in which the folders of one pooled run may differ: which seeds, where they were written, where
# row 0 is cached, the precision asked for (the one each stage trained in must be the same: :func:`pooled`)
POOL_FREE = (("run", "seeds"), ("run", "output_dir"), ("eval", "base_cells"), ("train", "precision"))


@dataclass(frozen=True)
class Run:
    """One strategy's run: a run folder, or several of one config whose seeds pool (``main``'s seeds and
    the ones scripts/study_at_scale.py ``--more-seeds`` added later; each seed in one folder)."""

    folders: tuple[Path, ...]

    def __str__(self) -> str:
        return " + ".join(map(str, self.folders))

    @property
    def name(self) -> str:
        return self.folders[0].name

    @property
    def study(self) -> str:
        """The name of the folder holding it (``main``, ``rank``, ``position``)."""
        return self.folders[0].parent.name

    def results(self) -> dict:
        """The first folder's ``results.json`` (strategy, tasks and rows are the same in every folder)."""
        return read_json(self.folders[0] / "results.json")

    def config(self):
        return load_run_config(self.folders[0])

    def seed_dirs(self) -> dict[str, Path]:
        """Seed folder name -> the folder, in seed order."""
        dirs = [d for f in self.folders for d in f.glob("seed-*") if d.is_dir()]
        return {d.name: d for d in sorted(dirs, key=lambda d: int(d.name.removeprefix("seed-")))}


def pooled(folders: list[Path]) -> Run:
    """The folders of one name as one run; RunError where their seeds cannot pool (other strategy,
    tasks, config or trained precision; a seed in two of them)."""
    run = Run(tuple(folders))
    first, ref, seen = folders[0], run.results(), {}
    for folder in folders[1:]:
        results = read_json(folder / "results.json")
        differ = next((k for k in ("strategy", "tasks", "rows") if results.get(k) != ref.get(k)), None)
        differ = differ or _first_difference(_pool_config(first), _pool_config(folder))
        if differ:
            raise RunError(f"{first} and {folder} differ in {differ}: their seeds do not pool; pass them apart")
        if _precisions(Run((folder,))) != _precisions(Run((first,))):
            raise RunError(f"{first} and {folder} trained in different precisions: their seeds do not pool")
    for folder in folders:
        for seed in (d.name for d in folder.glob("seed-*")):
            if seed in seen:
                raise RunError(f"{seen[seed]} and {folder} both hold {seed}: a seed pools once")
            seen[seed] = folder
    return run


def _pool_config(folder: Path) -> dict:
    config = load_run_config(folder).to_dict()
    for section, key in POOL_FREE:
        config[section].pop(key, None)
    return config


def _first_difference(a: dict, b: dict, where: str = "") -> str | None:
    """The first setting (dotted) whose value differs between two configs, with both values; None if none."""
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
                return _first_difference(a[key], b[key], f"{where}{key}.")
            return f"{where}{key} ({a.get(key)!r} against {b.get(key)!r})"
    return None


HYB, SHARED, LORA, FULL = "hybrid_task_specific", "hybrid_shared_layer", "lora_only", "full_layer_only"
MATCHED = "lora_matched"  # the folder of the parameter-matched LoRA-only (scripts/study_at_scale.py)
CLAIMS = [
    Claim("hybrid task-specific beats LoRA-only on average BLEU", HYB, LORA, "average_bleu", +1),
    Claim("hybrid task-specific beats full-layer-only on average BLEU", HYB, FULL, "average_bleu", +1),
    Claim(
        "hybrid task-specific beats the parameter-matched LoRA-only on average BLEU", HYB, MATCHED, "average_bleu", +1
    ),
    Claim("hybrid task-specific beats LoRA-only on the loss after the last task", HYB, LORA, "average_loss", -1),
    Claim("hybrid task-specific beats full-layer-only on the loss after the last task", HYB, FULL, "average_loss", -1),
    Claim(
        "hybrid task-specific beats the parameter-matched LoRA-only on the loss after the last task",
        HYB,
        MATCHED,
        "average_loss",
        -1,
    ),
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
    Claim(
        "a shared layer makes JavaScript learn faster: its loss after its own training is lower",
        SHARED,
        HYB,
        "own_loss",
        -1,
        task="javascript",
    ),
    Claim(
        "a shared layer makes JavaScript learn faster: its first-epoch training loss is lower",
        SHARED,
        HYB,
        "first_epoch_loss",
        -1,
        task="javascript",
    ),
    Claim(
        "JavaScript passes syntax more often than Python (hybrid task-specific, after the last task)",
        HYB,
        None,
        "syntax_languages",
        +1,
        task="javascript",
        other_task="python",
    ),
    Claim("hybrid task-specific trains faster per step than LoRA-only (s/step)", HYB, LORA, "seconds_per_step", -1),
    Claim(
        "hybrid task-specific trains faster per step than full-layer-only (s/step)", HYB, FULL, "seconds_per_step", -1
    ),
]


def open_claims(runs: dict[str, Run]) -> list[Claim]:
    """The seed's open questions as claims against ``main``'s task-specific hybrid (LoRA r = 8, its block
    where the preset puts it): average BLEU and loss for every run found under a ``rank`` or
    ``position`` folder of scripts/study_at_scale.py (keyed by its folder name, ``r=16``, ``decoder-15``)."""
    names = {run.name for run in runs.values() if run.study in ("rank", "position")}
    out = []
    for name in sorted(names, key=lambda n: (0, int(n[2:])) if n.startswith("r=") else (1, n)):
        if name.startswith("r="):
            what = f"LoRA rank {name[2:]} beats rank 8"
        else:
            what = f"the block at position {name.replace('-', ':')} beats it where main puts it"
        for column, sign, on in (
            ("average_bleu", +1, "average BLEU"),
            ("average_loss", -1, "the loss after the last task"),
        ):
            out.append(Claim(f"{what} on {on} (task-specific hybrid)", name, HYB, column, sign))
    return out


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


def key_shares(
    cells: list[list[np.ndarray]], key: str, higher_is_better: bool, task_index: int | None = None
) -> list[np.ndarray]:
    """Per task column, each example's share of the CL metric ``key`` (``average_final``, ``bwt``,
    ``fwt``, ``forgetting_relative``, ``base_average``: the base row's mean over the trained tasks, or
    ``own``: task ``task_index``'s cell right after its own training) of a matrix of cell shares
    ``cells[i][j]`` (rows: base, then one per task in order). Their total is the metric as
    ``hybridcl.stats.cl_metrics`` computes it."""
    T = len(cells) - 1
    sign = 1.0 if higher_is_better else -1.0
    out = []
    for j in range(len(cells[0])):
        v = np.zeros_like(cells[0][j])
        if key == "average_final" and j < T:
            v = v + cells[T][j] / T
        elif key == "base_average" and j < T:
            v = v + cells[0][j] / T
        elif key == "own" and j == task_index:
            v = v + cells[j + 1][j]
        elif key == "bwt" and j < T - 1:
            v = v + sign * (cells[T][j] - cells[j + 1][j]) / (T - 1)
        elif key == "fwt" and 1 <= j < T:
            v = v + sign * (cells[j][j] - cells[0][j]) / (T - 1)
        elif key == "forgetting_relative" and j < T - 1:
            diag = cells[j + 1][j]
            v = v + 100.0 * sign * (diag - cells[T][j]) / diag.sum() / (T - 1)
        elif key not in ("average_final", "base_average", "own", "bwt", "fwt", "forgetting_relative"):
            raise ValueError(f"no per-example shares for the CL metric {key!r}")
        out.append(v)
    return out


def _task_index(run: Run, task: str | None) -> int | None:
    tasks = run.results()["tasks"]
    if task is not None and task not in tasks:
        raise ValueError(f"{run} has no task {task!r} (its tasks: {', '.join(tasks)})")
    return None if task is None else tasks.index(task)


def row_files(seed_dir: Path, routed: bool = False) -> list[Path]:
    """A seed's per-row statistics files in row order; ``routed``: row i scored without the task id
    (``stats/routed-row<i>``) where the run routed it. A row not routed is the same in both settings:
    row 0 (the base), a row with one task's parts trained, every row of a strategy without per-task parts."""
    seed = SeedDir(seed_dir.parent, int(seed_dir.name.removeprefix("seed-")))
    rows = sorted(int(p.stem.removeprefix("row")) for p in seed_dir.glob("stats/row*.safetensors"))
    return [
        seed.routed_stats_file(i) if routed and seed.routed_stats_file(i).is_file() else seed.stats_file(i)
        for i in rows
    ]


def seed_stats(run: Run, metric: str, routed: bool = False) -> dict[str, list[list[np.ndarray]]]:
    """Seed folder name -> ``stats[i][j]``, the per-example statistics of ``metric`` of each cell
    (rows: base, then one per task; the run's rows must be exactly that; ``routed``: :func:`row_files`)."""
    results = run.results()
    tasks = results["tasks"]
    if results.get("rows") not in (None, ["base", *tasks]):
        raise ValueError(f"{run}: rows {results['rows']} are not [base, *tasks]: no per-example shares")
    out = {}
    for seed_dir in run.seed_dirs().values():
        rows = [load_tensors(p) for p in row_files(seed_dir, routed)]
        missing = [(i, t) for i, row in enumerate(rows) for t in tasks if f"{t}/{metric}" not in row]
        if missing:
            raise ValueError(f"{seed_dir}: no {metric} statistics for (row, task) {missing[:3]}")
        out[seed_dir.name] = [[row[f"{t}/{metric}"].numpy().astype(float) for t in tasks] for row in rows]
    return out


def seed_shares(
    run: Run, column: str, key: str | None = None, task: str | None = None, *, routed: bool = False
) -> dict[str, np.ndarray]:
    """Seed -> the per-example shares (all task columns concatenated) of ``column``'s CL metric."""
    metric, cl_key = COLUMNS[column]
    hib = metric_stats(metric).higher_is_better
    j = _task_index(run, task)
    out = {}
    for seed, stats in seed_stats(run, metric, routed).items():
        cells = [[cell_shares(metric, st) for st in row] for row in stats]
        out[seed] = np.concatenate(key_shares(cells, key or cl_key, hib, j))
    return out


def _denominators(run: Run, metric: str, routed: bool) -> dict[str, list[np.ndarray]]:
    return {s: [st[:, 1] for row in rows for st in row] for s, rows in seed_stats(run, metric, routed).items()}


def check_same_examples(runs: list[Run], metric: str, routed: bool = False) -> None:
    """The runs' cells have the same per-example denominators (target tokens; 1 per generated example)
    on every seed: the same evaluation examples, so per-example shares pair."""
    ref = _denominators(runs[0], metric, routed)
    for run in runs[1:]:
        other = _denominators(run, metric, routed)
        for seed in set(ref) & set(other):
            if len(ref[seed]) != len(other[seed]) or any(
                a.shape != b.shape or not np.allclose(a, b) for a, b in zip(ref[seed], other[seed], strict=True)
            ):
                raise ValueError(
                    f"{runs[0]} and {run} ({seed}) were not scored on the same evaluation examples for {metric}: "
                    "their per-example shares do not pair"
                )


def _synergy(claim: Claim, runs: dict[str, Run], of) -> dict[str, np.ndarray]:
    """Seed -> the interaction contrast of ``of(run, column, key)`` (shares or bootstrap samples):
    the claim's strategy's gain over its base row minus each part's, in the metric's direction."""
    direction = 1.0 if metric_stats(COLUMNS[claim.column][0]).higher_is_better else -1.0
    gains = []
    for m in (claim.a, *claim.parts):
        final, base = of(runs[m], claim.column), of(runs[m], claim.column, "base_average")
        gains.append({s: direction * (final[s] - base[s]) for s in final})
    seeds = [s for s in gains[0] if all(s in g for g in gains[1:])]
    return {s: gains[0][s] - sum(g[s] for g in gains[1:]) for s in seeds}


def _paired(claim: Claim, runs: dict[str, Run], of) -> dict[str, np.ndarray]:
    sa = of(runs[claim.a], claim.column, task=claim.task)
    if claim.b is None:
        return sa
    sb = of(runs[claim.b], claim.column, task=claim.task)
    return {s: sa[s] - sb[s] for s in sa if s in sb}


def claim_shares(claim: Claim, runs: dict[str, Run], routed: bool = False) -> dict[str, np.ndarray]:
    """Seed -> the per-example shares of the claim's value (their sum is the value on that seed)."""
    members = [claim.a, *claim.parts, *([claim.b] if claim.b not in (None, SYNERGY) else [])]
    check_same_examples([runs[m] for m in members], COLUMNS[claim.column][0], routed)
    of = partial(seed_shares, routed=routed)
    return _synergy(claim, runs, of) if claim.b == SYNERGY else _paired(claim, runs, of)


# ---- the interval over examples -------------------------------------------------------------------


def example_samples(
    run: Run, column: str, key: str | None = None, task: str | None = None, *, routed: bool = False
) -> dict[str, np.ndarray]:
    """Seed folder name -> the column's value on each of 1,000 bootstrap resamples of the evaluation
    examples (``key="base_average"``: the base row's mean over the tasks). The resample counts depend
    only on the number of examples per task (seeded), so runs on the same examples pair."""
    metric, cl_key = COLUMNS[column]
    key = key or cl_key
    j = _task_index(run, task)
    out = {}
    for seed, stats in seed_stats(run, metric, routed).items():
        result = cl_intervals(metric, stats)
        if key == "base_average":
            out[seed] = np.mean([result.cell_samples[0][i] for i in range(len(stats) - 1)], axis=0)
        elif key == "own":
            out[seed] = np.asarray(result.cell_samples[j + 1][j])
        elif key == "final":
            out[seed] = np.asarray(result.cell_samples[-1][j])
        else:
            out[seed] = result.samples[key]
    return out


def claim_samples(claim: Claim, runs: dict[str, Run], routed: bool = False) -> dict[str, np.ndarray]:
    """Seed -> the claim's value on each bootstrap resample of the examples."""
    of = partial(example_samples, routed=routed)
    return _synergy(claim, runs, of) if claim.b == SYNERGY else _paired(claim, runs, of)


# ---- claims measured once per seed, and one across two tasks --------------------------------------


def permutation_test(x, y, *, exact_max: int = 1 << 20, draws: int = MC_DRAWS, seed: int = 0) -> tuple[float, str]:
    """Two-sided two-sample permutation test of mean(x) == mean(y) over unpaired examples: ``(p, method)``.
    Exact (every split of the pooled values into groups of len(x) and len(y)) when there are at most
    ``exact_max`` splits, else ``draws`` random splits and p = (1 + hits) / (1 + draws)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    pooled, nx = np.concatenate([x, y]), len(x)
    observed = abs(x.mean() - y.mean())
    tol = 1e-9 * max(1.0, np.abs(pooled).max())
    total = pooled.sum()

    def diffs(groups: np.ndarray) -> np.ndarray:  # [k, nx] indices of x's group
        sx = pooled[groups].sum(axis=1)
        return np.abs(sx / nx - (total - sx) / (len(pooled) - nx))

    if math.comb(len(pooled), nx) <= exact_max:
        groups = np.array(list(itertools.combinations(range(len(pooled)), nx)))
        return float(np.mean(diffs(groups) >= observed - tol)), f"exact permutation, {len(x)} + {len(y)}"
    rng = np.random.default_rng(seed)
    hits = sum(
        int(
            np.count_nonzero(
                diffs(rng.permuted(np.tile(np.arange(len(pooled)), (k, 1)), axis=1)[:, :nx]) >= observed - tol
            )
        )
        for k in [min(10_000, draws - start) for start in range(0, draws, 10_000)]
    )
    return (1 + hits) / (1 + draws), f"Monte Carlo permutation, {len(x)} + {len(y)}, {draws:,} draws"


def language_claim(
    claim: Claim, runs: dict[str, Run], routed: bool = False
) -> tuple[list[float], tuple | None, float, str]:
    """``claim.task`` minus ``claim.other_task`` in one strategy's last row (different examples:
    unpaired): per-seed values, the bootstrap interval (independent resamples of each task) and the
    permutation test of the examples' values averaged over seeds."""
    run = runs[claim.a]
    metric = COLUMNS[claim.column][0]
    a, b = _task_index(run, claim.task), _task_index(run, claim.other_task)
    stats = seed_stats(run, metric, routed)
    values = {s: [[value(metric, st.sum(0)) for st in row] for row in rows] for s, rows in stats.items()}
    per_seed = [v[-1][a] - v[-1][b] for v in values.values()]
    ta, tb = (
        example_samples(run, claim.column, task=claim.task, routed=routed),
        example_samples(run, claim.column, task=claim.other_task, routed=routed),
    )
    interval = percentile_interval(np.mean([ta[s] - tb[s] for s in ta], axis=0))
    scale = float(metric_stats(metric).aggregate(np.array([1.0, 1.0])))
    per_example = [
        np.mean([scale * rows[-1][j][:, 0] / rows[-1][j][:, 1] for rows in stats.values()], axis=0) for j in (a, b)
    ]
    p, method = permutation_test(*per_example)
    return per_seed, interval, p, method


def seed_value(run: Run, seed: str, column: str, task: str | None) -> float:
    """A per-seed training measurement from ``seed-<s>/results.json``'s ``train`` records:
    ``seconds_per_step`` (all stages' seconds over their steps) or ``first_epoch_loss`` (``task``'s
    logged training losses over its first epoch, weighted by the steps each logged window covers)."""
    records = read_json(run.seed_dirs()[seed] / "results.json")["train"]
    if column == "seconds_per_step":
        return sum(r["seconds"] for r in records) / sum(r["steps"] for r in records)
    (record,) = [r for r in records if r["task"] == task]
    per_epoch = record["steps"] / run.config().train.epochs
    total = weight = 0.0
    previous = 0
    for step, loss in record["losses"]:
        if step > per_epoch + 1e-9:
            break
        total, weight, previous = total + loss * (step - previous), weight + (step - previous), step
    if not weight:
        raise ValueError(f"{run.seed_dirs()[seed]}: no training loss logged in {task}'s first epoch")
    return total / weight


def seed_claim(claim: Claim, runs: dict[str, Run]) -> list[float]:
    """Per seed (the seeds both runs have): ``a`` minus ``b`` of a once-per-seed measurement."""
    a, b = runs[claim.a], runs[claim.b]
    seeds = [s for s in a.seed_dirs() if s in b.seed_dirs()]
    return [seed_value(a, s, claim.column, claim.task) - seed_value(b, s, claim.column, claim.task) for s in seeds]


# ---- one claim, one table -------------------------------------------------------------------------


@dataclass
class ClaimResult:
    claim: Claim
    value: float  # mean over seeds
    per_seed: list[float]
    seed_interval: tuple[float, float] | None
    example_interval: tuple[float, float] | None
    p: float | None  # None: measured once per seed, no test over examples
    method: str
    p_holm: float | None = None
    by_construction: str | None = None  # why the value cannot be anything but what it is, where it cannot

    def exactly_zero(self) -> bool:
        """0 on every seed and every example (one seed has no interval over seeds: its examples decide)."""
        ivs = [self.example_interval] + ([self.seed_interval] if len(self.per_seed) > 1 else [])
        return (
            all(v == 0.0 for v in self.per_seed)
            and all(iv is not None and iv[0] == iv[1] == 0.0 for iv in ivs)
            and self.p == 1.0
        )


def evaluate_claim(claim: Claim, runs: dict[str, Run], routed: bool = False) -> ClaimResult:
    """The claim's value per seed, its two intervals and its p-value over examples (Holm's comes later);
    ``routed``: from the rows scored without the task id (:func:`row_files`)."""
    if claim.column in SEED_COLUMNS:
        per_seed = seed_claim(claim, runs)
        return ClaimResult(
            claim, float(np.mean(per_seed)), per_seed, t_interval(per_seed), None, None, "once per seed: no test"
        )
    if claim.column == "syntax_languages":
        per_seed, by_examples, p, method = language_claim(claim, runs, routed)
    else:
        shares = claim_shares(claim, runs, routed)
        per_seed = [float(v.sum()) for v in shares.values()]
        samples = claim_samples(claim, runs, routed)
        by_examples = percentile_interval(np.mean(list(samples.values()), axis=0)) if samples else None
        p, method = sign_flip_test(np.mean(list(shares.values()), axis=0))
    return ClaimResult(claim, float(np.mean(per_seed)), per_seed, t_interval(per_seed), by_examples, p, method)


def margin_of(column: str) -> tuple[float | None, str]:
    """The equivalence margin of a claim's column (None: none stated) and its unit."""
    if column == "forgetting_relative":
        return FORGETTING_MARGIN
    if column in SEED_COLUMNS:
        return SEED_COLUMNS[column]
    if column == "syntax_languages":
        return SYNTAX_MARGIN
    return MARGINS.get(COLUMNS[column][0], (None, ""))


def verdict(r: ClaimResult) -> str:
    """Holds / does not hold (Holm-adjusted p < 0.05 and both intervals on one side of 0), else within
    noise with the margin its intervals rule out."""
    if r.exactly_zero() and r.by_construction:
        return f"does not hold: 0 by construction ({r.by_construction})"
    if r.exactly_zero():
        return "does not hold: exactly 0 on every seed and example"
    ivs = [iv for iv in (r.seed_interval, r.example_interval) if iv is not None]
    if not ivs:  # measured once per seed, on one seed
        return "not decided: one seed and no test over examples"
    above, below = all(lo > 0 for lo, _ in ivs), all(hi < 0 for _, hi in ivs)
    one_seed = len(r.per_seed) == 1  # no interval over seeds: the examples' test and interval decide
    if (len(ivs) == 2 or one_seed) and r.p_holm is not None and r.p_holm < ALPHA and (above or below):
        word = "holds" if above == (r.claim.sign > 0) else "does not hold: the opposite, beyond noise"
        return f"{word} (one seed: over examples alone)" if one_seed else word
    if r.p is None and len(ivs) == 1 and (above or below):  # measured once per seed: the t interval alone
        word = "holds" if above == (r.claim.sign > 0) else "does not hold: the opposite"
        return f"{word} over seeds (no test over examples, not in Holm's correction)"
    bound = max(abs(x) for iv in ivs for x in iv) if ivs else float("nan")
    margin, unit = margin_of(r.claim.column)
    if margin is None:
        return f"within noise: rules out effects beyond ±{bound:.3f} {unit}"
    inside = "inside" if bound <= margin else "not inside"
    return f"within noise: rules out effects beyond ±{bound:.3f} ({inside} ±{margin:g} {unit})"


def _label(claim: Claim) -> str:
    if claim.b == SYNERGY:
        return f"{claim.a} - {' - '.join(claim.parts)} (gains)"
    if claim.other_task:
        return f"{claim.a}: {claim.task} - {claim.other_task}"
    return claim.a if claim.b is None else f"{claim.a} - {claim.b}"


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}"


def _iv(iv) -> str:
    return "n/a" if iv is None else f"[{iv[0]:+.3f}, {iv[1]:+.3f}]"


def strategy_runs(studies: list[Path]) -> dict[str, Run]:
    """Strategy name and folder name -> the run (the folders of one name pooled: :func:`pooled`). Where two
    runs have one strategy (``lora_only`` and ``lora_matched``, the parameter-matched one), the strategy's
    name goes to the folder named after it, else to the first; the other is reached by its folder name."""
    found = [(read_json(run / "results.json")["strategy"], Path(run)) for run in expand_run_dirs(studies)]
    folders: dict[str, list[Path]] = {}
    for _, run in found:
        folders.setdefault(run.name, []).append(run)
    runs = {name: pooled(same) for name, same in folders.items()}
    for strategy, run in found:
        if run.name == strategy or strategy not in runs:
            runs[strategy] = runs[run.name]
    return runs


@dataclass(frozen=True)
class Untested:
    """A claim the study cannot test, and why."""

    claim: Claim
    reason: str


def _by_construction(claim: Claim, runs: dict[str, Run], routed: bool) -> str | None:
    """Why the claim's value is 0 whatever the data, or None: with the task id, a strategy whose parts
    are all per task never changes a trained task's parts, so its forgetting and BWT are 0; over two
    tasks, two runs that train the first task alike have the same forward transfer (in both settings:
    the row FWT reads holds one task's parts, never routed)."""
    if claim.column == "fwt" and claim.b not in (None, SYNERGY) and _same_first_task(runs[claim.a], runs[claim.b]):
        return (
            "over two tasks FWT reads only the model after the first task, and both runs train that task "
            "alike: a part shared across tasks is, on the first task, a fresh per-task one"
        )
    if routed or claim.b is not None or claim.column not in ("forgetting_relative", "bwt", "bwt_loss"):
        return None
    if not get_strategy(runs[claim.a].results()["strategy"]).isolates_tasks:
        return None
    return "with the task id each task keeps its own parts, which later tasks never change"


def _same_first_task(a: Run, b: Run) -> bool:
    """Runs ``a`` and ``b`` hold two tasks and train the first one alike: their strategies differ only in
    which parts are shared, and their configs only in the strategy, the run's name and the precision
    asked for, where every stage trained in the same one."""
    ra, rb = a.results(), b.results()
    if len(ra["tasks"]) != 2 or ra["tasks"] != rb["tasks"] or _precisions(a) != _precisions(b):
        return False

    def unshared(strategy: str) -> tuple:
        s = get_strategy(strategy)
        scope = [Scope.PER_TASK if x is Scope.SHARED else x for x in (s.lora, s.full_layer)]
        return (*scope, s.train_base, s.rule)

    def rest(run: Run) -> dict:
        config = run.config().to_dict()
        del config["strategy"], config["run"]["name"], config["train"]["precision"]
        return config

    try:
        return unshared(ra["strategy"]) == unshared(rb["strategy"]) and rest(a) == rest(b)
    except RunError:  # no config.yaml: nothing to show they train alike
        return False


def _precisions(run: Run) -> set[str]:
    """The training precisions its seeds' stages ran in (none where unrecorded)."""
    return {p for folder in run.folders for p in trained_precisions(read_json(folder / "results.json"))}


def _machine(folder: Path) -> str:
    """The processors and GPUs a run folder's ``results.json`` records (of its last go: a run resumed on
    another machine records that one)."""
    env = read_json(folder / "results.json").get("environment") or {}
    cpu, gpu = env.get("cpu") or {}, env.get("gpu") or {}
    what = (cpu.get("model"), cpu.get("torch_capability"), *gpu.get("names", []))
    return ", ".join(str(x) for x in what if x)


def incomparable(claim: Claim, runs: dict[str, Run], names: list[str]) -> str | None:
    """Why the runs ``names`` cannot be compared, or None: they trained in different precisions (every
    claim), or, for the time per step, a seed they share was timed on different machines (pooled runs
    may hold seeds of several machines: each seed's pair must share one)."""
    precisions = {name: _precisions(runs[name]) for name in names}
    if len(set().union(*precisions.values())) > 1:
        return (
            "trained in different precisions ("
            + "; ".join(f"{n}: {', '.join(sorted(p)) or 'unrecorded'}" for n, p in precisions.items())
            + ")"
        )
    if claim.column != "seconds_per_step":
        return None
    seed_dirs = {name: runs[name].seed_dirs() for name in names}
    for seed in [s for s in seed_dirs[names[0]] if all(s in d for d in seed_dirs.values())]:
        machines = {name: _machine(dirs[seed].parent) for name, dirs in seed_dirs.items()}
        if len(set(machines.values())) > 1:
            return (
                f"{seed} timed on different machines ("
                + "; ".join(f"{n}: {m or 'unrecorded'}" for n, m in machines.items())
                + ")"
            )
    return None


def setting_results(
    studies: list[Path], claims: list[Claim] = CLAIMS, routed: bool = False
) -> list[ClaimResult | Untested]:
    """Every claim's result in one setting (:class:`Untested` where the study lacks a strategy or the
    metric's per-example statistics), before Holm's correction; ``routed``: from the rows scored without
    the task id (claims measured once per seed, of training alone, are left out there: the same)."""
    runs = strategy_runs(studies)
    out: list[ClaimResult | Untested] = []
    for claim in [c for c in claims if not (routed and c.column in SEED_COLUMNS)]:
        needed = [claim.a, *([claim.b] if claim.b not in (None, SYNERGY) else []), *claim.parts]
        missing = [n for n in needed if n not in runs]
        if missing:
            out.append(Untested(claim, f"not in this study ({', '.join(missing)})"))
            continue
        reason = incomparable(claim, runs, needed)
        if reason:
            out.append(Untested(claim, f"not comparable: {reason}"))
            continue
        try:
            out.append(evaluate_claim(claim, runs, routed))
            out[-1].by_construction = _by_construction(claim, runs, routed)
        except (ValueError, RunError) as e:  # no statistics of its metric or no seed results; other examples
            out.append(Untested(claim, f"not testable here: {e}"))
    return out


def claims_results(
    studies: list[Path], claims: list[Claim] = CLAIMS, settings: tuple[bool, ...] = (False,)
) -> dict[bool, list[ClaimResult | Untested]]:
    """Routed or not -> :func:`setting_results`, the p-values of every tested claim of every setting
    Holm-adjusted together (one family: every claim the study states)."""
    out = {routed: setting_results(studies, claims, routed) for routed in settings}
    tested = [r for results in out.values() for r in results if isinstance(r, ClaimResult)]
    for r, adjusted in zip(tested, holm([r.p for r in tested]), strict=True):
        r.p_holm = adjusted
    return out


def claims_table(results: list[ClaimResult | Untested]) -> str:
    lines = [
        "| claim | measured (mean over seeds) | 95% interval over seeds (t) | 95% interval over examples "
        "(bootstrap) | p over examples (sign-flip; permutation) | Holm-adjusted p | seeds | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if isinstance(r, Untested):
            lines.append(f"| {r.claim.text} | {r.reason} | | | | | | |")
            continue
        lines.append(
            f"| {r.claim.text} | {_label(r.claim)}: {r.value:+.3f} | {_iv(r.seed_interval)} | "
            f"{_iv(r.example_interval)} | {_p(r.p)} ({r.method}) | {_p(r.p_holm)} | {len(r.per_seed)} | {verdict(r)} |"
        )
    return "\n".join(lines)


def routed_anywhere(studies: list[Path]) -> bool:
    """Some run of the study scored a row without the task id."""
    return any(next(run.glob("seed-*/stats/routed-row*.safetensors"), None) for run in expand_run_dirs(studies))


def report(studies: list[Path], claims: list[Claim] = CLAIMS) -> str:
    """The claims table with the task id and, where the study routed its rows, the one without it; Holm's
    correction runs over both tables together."""
    results = claims_results(studies, claims, (False, True) if routed_anywhere(studies) else (False,))
    parts = ["## With the task id", "", claims_table(results[False])]
    if True in results:
        parts += [
            "",
            "## Without the task id (each prompt's parts chosen by the run's router)",
            "",
            "Rows the run did not route are the same as with the task id: row 0 (the base), a row with one "
            "task's parts, every row of a strategy without per-task parts (full fine-tuning). Claims of "
            "training alone (the first-epoch loss, the time per step) do not depend on the setting and are "
            "in the table above only. Holm's correction runs over the claims of both tables.",
            "",
            claims_table(results[True]),
        ]
    return "\n".join(parts)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not [a for a in args if a != "--open-questions"]:
        sys.exit(__doc__)
    studies = [Path(a) for a in args if a != "--open-questions"]
    print(report(studies, open_claims(strategy_runs(studies)) if "--open-questions" in args else CLAIMS))
