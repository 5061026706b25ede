"""The seed's claims, checked against a finished sweep (the study of issue 14): one markdown table.

    python scripts/study_claims.py STUDY_DIR [MORE ...]   # sweep folders made by `hybridcl run --sweep strategy=...`

Each claim is a paired difference between two strategies of the sweep, or one strategy's CL metric,
with two 95% intervals of its mean over seeds:

- over seeds: the t interval of the per-seed differences (what training with another seed could give);
- over evaluation examples: a paired bootstrap of the examples (1,000 resamples, the same resampled
  examples in every row, seed and strategy, from each seed's ``stats/row<i>.safetensors``), the
  seed-mean recomputed per resample (what other evaluation examples could give).

The verdict: "holds" / "does not hold" when both intervals exclude 0 on the claimed side / the other,
"within noise" when either contains 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hybridcl.intervals import cl_intervals, percentile_interval
from hybridcl.io import load_tensors, read_json
from hybridcl.report.compare import INTERVAL_OF, comparison_rows, expand_run_dirs, paired_by_seed

# (claim, strategy A, strategy B or None, column, the sign the claim predicts for A - B, or for A alone)
CLAIMS = [
    ("hybrid task-specific beats LoRA-only on average BLEU", "hybrid_task_specific", "lora_only", "average_bleu", +1),
    (
        "hybrid task-specific beats full-layer-only on average BLEU",
        "hybrid_task_specific",
        "full_layer_only",
        "average_bleu",
        +1,
    ),
    (
        "hybrid task-specific beats LoRA-only on the loss after the last task",
        "hybrid_task_specific",
        "lora_only",
        "average_loss",
        -1,
    ),
    (
        "hybrid task-specific beats full-layer-only on the loss after the last task",
        "hybrid_task_specific",
        "full_layer_only",
        "average_loss",
        -1,
    ),
    ("full-layer-only shows negative forgetting (seed: -6.20%)", "full_layer_only", None, "forgetting_relative", -1),
    ("hybrid task-specific forgets (seed: +4.38%)", "hybrid_task_specific", None, "forgetting_relative", +1),
    (
        "a shared layer transfers knowledge backwards (BLEU BWT above the task-specific hybrid's)",
        "hybrid_shared_layer",
        "hybrid_task_specific",
        "bwt",
        +1,
    ),
    (
        "a shared layer transfers knowledge backwards (loss BWT above the task-specific hybrid's)",
        "hybrid_shared_layer",
        "hybrid_task_specific",
        "bwt_loss",
        +1,
    ),
    (
        "a shared layer helps later tasks before their training (FWT above the task-specific hybrid's)",
        "hybrid_shared_layer",
        "hybrid_task_specific",
        "fwt",
        +1,
    ),
    (
        "the shared hybrid beats the task-specific one on average BLEU",
        "hybrid_shared_layer",
        "hybrid_task_specific",
        "average_bleu",
        +1,
    ),
]


def verdict(intervals: list[tuple[float, float]], sign: int) -> str:
    if all(low == high == 0.0 for low, high in intervals):
        return "does not hold: exactly 0 on every seed and resample"
    if all(low > 0 for low, _ in intervals) or all(high < 0 for _, high in intervals):
        return "holds" if (intervals[0][0] > 0) == (sign > 0) else "does not hold: the opposite, beyond noise"
    return "within noise (an interval contains 0)"


def example_samples(run_dir: Path, column: str) -> dict[str, np.ndarray]:
    """Seed folder name -> the column's value on each of 1,000 bootstrap resamples of the evaluation
    examples. The resample counts depend only on the number of examples per task (seeded), so two runs
    on the same examples are resampled alike: their samples pair."""
    metric, key = INTERVAL_OF[column]
    tasks = read_json(run_dir / "results.json")["tasks"]
    out = {}
    for seed_dir in sorted(run_dir.glob("seed-*")):
        rows = sorted(seed_dir.glob("stats/row*.safetensors"), key=lambda p: int(p.stem.removeprefix("row")))
        stats = [load_tensors(p) for p in rows]
        cells = [[None if (st := row.get(f"{t}/{metric}")) is None else st.numpy() for t in tasks] for row in stats]
        out[seed_dir.name] = cl_intervals(metric, cells).samples[key]
    return out


def example_interval(a: Path, b: Path | None, column: str) -> tuple[float, float] | None:
    """The 95% bootstrap interval over evaluation examples of the seed-mean of ``a - b`` (or of ``a``)."""
    sa = example_samples(a, column)
    sb = example_samples(b, column) if b is not None else {}
    seeds = sorted(set(sa) & set(sb)) if b is not None else sorted(sa)
    if not seeds:
        return None
    per_seed = [sa[s] - sb[s] if b is not None else sa[s] for s in seeds]
    return percentile_interval(np.mean(per_seed, axis=0))


def claims_table(studies: list[Path]) -> str:
    rows = {row["strategy"]: row for row in comparison_rows(expand_run_dirs(studies))}
    lines = [
        "| claim | measured (mean over seeds) | 95% interval over seeds (t) | 95% interval over examples "
        "(bootstrap) | seeds | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for claim, a, b, column, sign in CLAIMS:
        if a not in rows or (b is not None and b not in rows):
            lines.append(f"| {claim} | not in this study | | | | |")
            continue
        if b is None:
            values = [v[column] for v in rows[a]["per_seed"].values() if v[column] is not None]
            interval = rows[a]["intervals"].get(column)
            measured, seeds = f"{a}: {rows[a][column]:+.2f}", len(values)
        else:
            paired = paired_by_seed(rows[a], rows[b], column)
            interval = paired and paired["interval"]
            measured = f"{a} - {b}: {paired['difference']:+.2f}" if paired else "n/a"
            seeds = paired["seeds"] if paired else 0
        by_examples = example_interval(Path(rows[a]["run"]), Path(rows[b]["run"]) if b else None, column)
        if not interval or not by_examples:
            lines.append(f"| {claim} | {measured} | needs two seeds | | {seeds} | |")
            continue
        (low, high), (elow, ehigh) = interval, by_examples
        lines.append(
            f"| {claim} | {measured} | [{low:+.2f}, {high:+.2f}] | [{elow:+.2f}, {ehigh:+.2f}] | {seeds} | "
            f"{verdict([interval, by_examples], sign)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(claims_table([Path(a) for a in sys.argv[1:]]))
