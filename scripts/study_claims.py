"""The seed's claims, checked against a finished sweep (the study of issue 14): one markdown table.

    python scripts/study_claims.py STUDY_DIR [MORE ...]   # sweep folders made by `hybridcl run --sweep strategy=...`

Each claim is a paired difference between two strategies of the sweep (seed by seed: the same data,
initialisation and evaluation examples, then the 95% t interval of the mean difference over seeds) or
one strategy's CL metric (mean over seeds and its t interval). The verdict: "holds" or "does not hold"
when the interval excludes 0 (on the claimed side or the other), "within noise" when it contains 0.
"""
from __future__ import annotations

import sys
from pathlib import Path

from hybridcl.report.compare import comparison_rows, expand_run_dirs, paired_by_seed

# (claim, strategy A, strategy B or None, column, the sign the claim predicts for A - B, or for A alone)
CLAIMS = [
    ("hybrid task-specific beats LoRA-only on average BLEU", "hybrid_task_specific", "lora_only", "average_bleu", +1),
    ("hybrid task-specific beats full-layer-only on average BLEU", "hybrid_task_specific", "full_layer_only",
     "average_bleu", +1),
    ("hybrid task-specific beats LoRA-only on the loss after the last task", "hybrid_task_specific", "lora_only",
     "average_loss", -1),
    ("hybrid task-specific beats full-layer-only on the loss after the last task", "hybrid_task_specific",
     "full_layer_only", "average_loss", -1),
    ("full-layer-only shows negative forgetting (seed: -6.20%)", "full_layer_only", None, "forgetting_relative", -1),
    ("hybrid task-specific forgets (seed: +4.38%)", "hybrid_task_specific", None, "forgetting_relative", +1),
    ("a shared layer transfers knowledge backwards (BLEU BWT above the task-specific hybrid's)",
     "hybrid_shared_layer", "hybrid_task_specific", "bwt", +1),
    ("a shared layer transfers knowledge backwards (loss BWT above the task-specific hybrid's)",
     "hybrid_shared_layer", "hybrid_task_specific", "bwt_loss", +1),
    ("a shared layer helps later tasks before their training (FWT above the task-specific hybrid's)",
     "hybrid_shared_layer", "hybrid_task_specific", "fwt", +1),
    ("the shared hybrid beats the task-specific one on average BLEU", "hybrid_shared_layer",
     "hybrid_task_specific", "average_bleu", +1),
]


def verdict(low: float, high: float, sign: int) -> str:
    if low == high == 0.0:
        return "does not hold: exactly 0 on every seed"
    if low > 0 or high < 0:
        return "holds" if (low > 0) == (sign > 0) else "does not hold: the opposite, beyond noise"
    return "within noise (the interval contains 0)"


def claims_table(studies: list[Path]) -> str:
    rows = {row["strategy"]: row for row in comparison_rows(expand_run_dirs(studies))}
    lines = ["| claim | measured | 95% t interval over seeds | seeds | verdict |", "|---|---|---|---|---|"]
    for claim, a, b, column, sign in CLAIMS:
        if a not in rows or (b is not None and b not in rows):
            lines.append(f"| {claim} | not in this study | | | |")
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
        if not interval:
            lines.append(f"| {claim} | {measured} | needs two seeds | {seeds} | |")
            continue
        low, high = interval
        lines.append(f"| {claim} | {measured} | [{low:+.2f}, {high:+.2f}] | {seeds} | {verdict(low, high, sign)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(claims_table([Path(a) for a in sys.argv[1:]]))
