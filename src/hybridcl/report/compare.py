"""Cross-strategy comparison: the table the seed ends with, from finished runs' ``results.json``."""
from __future__ import annotations

from pathlib import Path

from hybridcl.io import read_json, write_json, write_text

HEADLINE = "bleu_codexglue"


def _mean(value):
    """A number, or the mean of an aggregated ``{"mean", "std"}`` value."""
    return value.get("mean") if isinstance(value, dict) else value


def _fmt(value, digits: int = 2) -> str:
    value = _mean(value)
    return "n/a" if value is None else f"{value:,.{digits}f}"


def comparison_rows(run_dirs: list[Path]) -> list[dict]:
    rows = []
    for run_dir in run_dirs:
        results = read_json(Path(run_dir) / "results.json")
        tasks = results["tasks"]
        final = [_mean(v) for v in results["matrix"][HEADLINE][-1]]
        metrics = results["cl_metrics"][HEADLINE]
        syntax = results["matrix"].get("syntax_pass")
        rows.append({
            "strategy": results["strategy"],
            **{f"{t}_bleu": final[i] for i, t in enumerate(tasks)},
            "average_bleu": _mean(metrics.get("average_final")),
            "forgetting_relative": _mean(metrics.get("forgetting_relative")),
            "bwt": _mean(metrics.get("bwt")),
            "fwt": _mean(metrics.get("fwt")),
            "syntax_pass_final": (sum(_mean(v) for v in syntax[-1]) / len(syntax[-1])) if syntax else None,
            "trainable_params": _mean(results["train"][-1]["trainable_params"]),
            "train_seconds": sum(_mean(t["seconds"]) for t in results["train"]),
            "tasks": tasks,
        })
    return rows


def compare_runs(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write ``comparison.md`` and ``comparison.json`` for ``run_dirs`` into ``out_dir``."""
    rows = comparison_rows(run_dirs)
    tasks = rows[0]["tasks"]
    columns = [f"{t}_bleu" for t in tasks] + ["average_bleu", "forgetting_relative", "bwt", "fwt", "syntax_pass_final",
                                              "trainable_params", "train_seconds"]
    lower_is_better = {"forgetting_relative", "trainable_params", "train_seconds"}
    lines = ["# Strategy comparison", "",
             f"BLEU is the CodeXGLUE smoothed BLEU-4 (0-100) after the last task; forgetting is the seed's relative "
             f"forgetting in percent; BWT/FWT as in GEM; syntax pass in percent.", "",
             "| strategy | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        lines.append(f"| {row['strategy']} | " + " | ".join(
            _fmt(row[c], 0) if c == "trainable_params" else _fmt(row[c]) for c in columns) + " |")
    best = []
    for c in columns:
        values = [(row[c], row["strategy"]) for row in rows if row[c] is not None]
        if values:
            pick = min(values) if c in lower_is_better else max(values)
            best.append(f"- {c}: **{pick[1]}** ({_fmt(pick[0])})")
    lines += ["", "Best per column:", *best, ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "comparison.json", rows)
    write_text(out_dir / "comparison.md", "\n".join(lines))
    return out_dir / "comparison.md"
