"""Cross-strategy comparison: the table the seed ends with, from finished runs' ``results.json``.

``comparison.md`` (table, best strategy per column, bar charts), ``comparison.json`` (the rows)
and ``comparison.png``. Columns: final BLEU per task, average, relative forgetting, trainable
parameters, training time (the seed's table), then pass rates (syntax, and HumanEval pass@k where
a run has it), BWT, FWT, routing accuracy and the forgetting under routing; then, for runs with
several seeds in common (a sweep), the best run against each other one paired by seed.
"""

from __future__ import annotations

from pathlib import Path

from hybridcl.constants import HEADLINE_METRIC as HEADLINE
from hybridcl.constants import LANGUAGE_NAMES
from hybridcl.errors import RunError
from hybridcl.records.io import read_json, write_json, write_text
from hybridcl.records.results import read_results
from hybridcl.report import plots
from hybridcl.stats.seeds import mean, t_interval

LOWER_IS_BETTER = {"forgetting_relative", "forgetting_routed", "trainable_params", "train_seconds", "average_loss"}


def _fmt(value, digits: int = 2) -> str:
    value = mean(value)
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _avg(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _language(task: str) -> str:
    return LANGUAGE_NAMES.get(task, task)


def _forgetting_routed(results: dict) -> float | None:
    """The seed's relative forgetting with the last row evaluated under routing (percent)."""
    routing = results.get("routing")
    if not routing:
        return None
    routed = [mean(v) for v in routing["matrix_last_row"].get(HEADLINE, [])]
    matrix = [[mean(c) for c in row] for row in results["matrix"][HEADLINE]]
    rows = results["rows"]
    values = []
    for j, task in enumerate(results["tasks"][:-1]):
        if task not in rows:
            continue
        own = matrix[rows.index(task)][j]
        if own and j < len(routed) and routed[j] is not None:
            values.append(100.0 * (own - routed[j]) / own)
    return _avg(values)


def expand_run_dirs(run_dirs: list[Path]) -> list[Path]:
    """Run folders, with a sweep folder, or any other, replaced by the runs found anywhere inside it."""
    from hybridcl.config.sweep import is_sweep, sweep_run_dirs

    out = []
    for run_dir in map(Path, run_dirs):
        if is_sweep(run_dir):
            out += sweep_run_dirs(run_dir)
            continue
        if (run_dir / "results.json").is_file() and "matrix" in read_json(run_dir / "results.json"):
            out.append(run_dir)
            continue
        inner = sorted(p.parent for p in run_dir.rglob("results.json") if not p.parent.name.startswith("seed-"))
        if not inner:
            raise RunError(f"{run_dir} has no results.json: pass finished run folders (made by `hybridcl run`)")
        out += inner
    return out


def comparison_rows(run_dirs: list[Path]) -> list[dict]:
    rows = []
    for run_dir in run_dirs:
        results = read_results(Path(run_dir) / "results.json")
        tasks = results["tasks"]
        final = [mean(v) for v in results["matrix"][HEADLINE][-1]]
        # the seed reports each task's score right after its own training: row i of task i
        own = [
            mean(results["matrix"][HEADLINE][results["rows"].index(t)][i]) if t in results["rows"] else None
            for i, t in enumerate(tasks)
        ]
        metrics = results["cl_metrics"][HEADLINE]
        syntax = results["matrix"].get("syntax_pass")
        final_humaneval = (results.get("humaneval") or {}).get("final") or {}
        passes = {f"humaneval_{k}": mean(v) for k, v in final_humaneval.items() if k.startswith("pass@")}
        routing = results.get("routing") or {}
        loss = results["cl_metrics"].get("loss") or {}
        rows.append(
            {
                "strategy": results["strategy"],
                "run": str(run_dir),
                **{f"{t}_bleu_own": own[i] for i, t in enumerate(tasks)},
                **{f"{t}_bleu": final[i] for i, t in enumerate(tasks)},
                "average_bleu": mean(metrics.get("average_final")),
                "forgetting_relative": mean(metrics.get("forgetting_relative")),
                "bwt": mean(metrics.get("bwt")),
                "fwt": mean(metrics.get("fwt")),
                "average_loss": mean(loss.get("average_final")),
                "bwt_loss": mean(loss.get("bwt")),
                **{f"{t}_syntax_pass": (mean(syntax[-1][i]) if syntax else None) for i, t in enumerate(tasks)},
                "syntax_pass_final": _avg(mean(v) for v in syntax[-1]) if syntax else None,
                **passes,
                "routing_accuracy": mean(routing.get("accuracy")),
                "forgetting_routed": _forgetting_routed(results),
                "trainable_params": mean(results["train"][-1]["trainable_params"]),
                "train_seconds": sum(mean(t["seconds"]) for t in results["train"]),
                "seeds": results.get("seeds", 1),
                "tasks": tasks,
                "intervals": _intervals(results),
                "per_seed": _seed_values(Path(run_dir)),
            }
        )
    return rows


# comparison column -> (metric, CL metric) whose interval it carries
INTERVAL_OF = {
    "average_bleu": (HEADLINE, "average_final"),
    "forgetting_relative": (HEADLINE, "forgetting_relative"),
    "bwt": (HEADLINE, "bwt"),
    "fwt": (HEADLINE, "fwt"),
    "average_loss": ("loss", "average_final"),
    "bwt_loss": ("loss", "bwt"),
}


def _intervals(results: dict) -> dict[str, list[float] | None]:
    """95% intervals of the columns that have one: the bootstrap interval over examples (one seed), or
    the t interval of the mean over seeds (several)."""
    per_seed = results.get("per_seed") or []
    out = {}
    for column, (metric, key) in INTERVAL_OF.items():
        if len(per_seed) == 1:
            out[column] = ((per_seed[0].get("intervals") or {}).get(metric) or {}).get("intervals", {}).get(key)
        else:
            values = [r["cl_metrics"].get(metric, {}).get(key) for r in per_seed]
            interval = t_interval([v for v in values if v is not None])
            out[column] = list(interval) if interval else None
    return out


def _seed_values(run_dir: Path) -> dict[str, dict[str, float | None]]:
    """Seed (its folder name, ``seed-<s>``) -> the value of each column that has an interval, from
    ``seed-<s>/results.json``: what pairs two runs seed by seed."""
    out = {}
    for path in sorted(run_dir.glob("seed-*/results.json")):
        cl = read_json(path).get("cl_metrics") or {}
        out[path.parent.name] = {
            column: (cl.get(metric) or {}).get(key) for column, (metric, key) in INTERVAL_OF.items()
        }
    return out


def paired_by_seed(best: dict, other: dict, column: str) -> dict | None:
    """``best`` minus ``other`` in ``column``, seed by seed over the seeds both ran: the mean difference,
    the 95% t interval of that mean and the seeds; None with fewer than two common seeds.

    Runs of one sweep share each seed's data, initialisation and evaluation examples, so the difference
    per seed removes what the seed does to both and leaves what the strategies do."""
    seeds = sorted(set(best["per_seed"]) & set(other["per_seed"]))
    pairs = [(best["per_seed"][s][column], other["per_seed"][s][column]) for s in seeds]
    differences = [a - b for a, b in pairs if a is not None and b is not None]
    interval = t_interval(differences)
    if interval is None:
        return None
    return {
        "vs": other["strategy"],
        "difference": sum(differences) / len(differences),
        "interval": list(interval),
        "seeds": len(differences),
    }


def _paired_lines(rows: list[dict], labels: dict[str, str]) -> list[str]:
    """Per column with an interval: the best run against every other, paired by seed, in words."""
    lines = []
    for column in INTERVAL_OF:
        values = [row for row in rows if row[column] is not None]
        if len(values) < 2:
            continue
        pick = (min if column in LOWER_IS_BETTER else max)(values, key=lambda row: row[column])
        for row in values:
            if row is pick:
                continue
            paired = paired_by_seed(pick, row, column)
            if paired is None:
                continue
            low, high = paired["interval"]
            verdict = (
                "beyond noise"
                if low > 0 or high < 0
                else "equal on every seed"
                if low == high == 0
                else "within noise (the interval contains 0)"
            )
            pick.setdefault("paired", {}).setdefault(column, []).append(paired)
            lines.append(
                f"- {labels[column]}: {pick['strategy']} - {row['strategy']} = {paired['difference']:+.2f} "
                f"(95% t interval over {paired['seeds']} seeds [{low:+.2f}, {high:+.2f}]): {verdict}"
            )
    return lines


def _labels(tasks: list[str], extra: list[str]) -> dict[str, str]:
    labels = {f"{t}_bleu_own": f"{_language(t)} BLEU after its training" for t in tasks}
    labels.update({f"{t}_bleu": f"{_language(t)} BLEU after the last task" for t in tasks})
    labels.update(
        {
            "average_bleu": "average BLEU",
            "forgetting_relative": "forgetting (%)",
            "trainable_params": "trainable params",
            "train_seconds": "training time (s)",
        }
    )
    labels.update({f"{t}_syntax_pass": f"{_language(t)} syntax pass (%)" for t in tasks})
    labels.update({m: f"HumanEval {m.removeprefix('humaneval_')} (%)" for m in extra})
    labels.update(
        {
            "bwt": "BWT",
            "fwt": "FWT",
            "average_loss": "loss after the last task (nats/token)",
            "bwt_loss": "loss BWT (negative = forgetting)",
            "routing_accuracy": "routing accuracy (%)",
            "forgetting_routed": "forgetting, routed (%)",
        }
    )
    return labels


def compare_runs(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write ``comparison.md``, ``comparison.json`` and ``comparison.png`` for ``run_dirs`` into ``out_dir``."""
    rows = _named_rows(expand_run_dirs(run_dirs))
    out_dir = Path(out_dir)
    tasks = rows[0]["tasks"]
    extra = sorted({k for row in rows for k in row if k.startswith("humaneval_pass@")})
    for row in rows:
        for k in extra:
            row.setdefault(k, None)
    seed_columns = (
        [f"{t}_bleu_own" for t in tasks]
        + [f"{t}_bleu" for t in tasks]
        + ["average_bleu", "forgetting_relative", "trainable_params", "train_seconds"]
    )
    more_columns = (
        [f"{t}_syntax_pass" for t in tasks]
        + extra
        + ["bwt", "fwt", "average_loss", "bwt_loss", "routing_accuracy", "forgetting_routed"]
    )
    labels = _labels(tasks, extra)
    lines = ["# Strategy comparison", "", _intro(len(rows)), ""]
    for title, columns in (("The seed's table", seed_columns), ("Pass rates, transfer and routing", more_columns)):
        lines += [
            f"## {title}",
            "",
            "| strategy | " + " | ".join(labels[c] for c in columns) + " |",
            "|---" * (len(columns) + 1) + "|",
        ]
        for row in rows:
            lines.append(f"| {row['strategy']} | " + " | ".join(_cell(row, c) for c in columns) + " |")
        lines.append("")
    if len(rows) > 1:  # one run has no best, and nothing to pair with
        lines += ["## Best strategy per column", "", *_best_lines(rows, seed_columns + more_columns, labels), ""]
        paired = _paired_lines(rows, labels)
        if paired:
            lines += ["## The best against each other run, paired by seed", "", PAIRED_INTRO, "", *paired, ""]
    lines += [ROUTING_NOTE, "", "![comparison](comparison.png)", ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    _chart(rows, tasks, labels, out_dir / "comparison.png")
    write_json(out_dir / "comparison.json", rows)
    write_text(out_dir / "comparison.md", "\n".join(lines))
    return out_dir / "comparison.md"


PAIRED_INTRO = (
    "The difference in each seed (same data, initialisation and evaluation examples), then the 95% t "
    "interval of its mean over the seeds both runs have: sharper than overlapping intervals, since "
    "what a seed does to both runs cancels."
)
ROUTING_NOTE = (
    "Routing: each prompt goes to the components of the task its run's router chooses, without the task "
    "id (`routing.method`; see a run's report.md); per-task components forget only through misrouting."
)


def _intro(n_runs: int) -> str:
    """What the tables hold; with several runs, how to read their intervals against each other."""
    text = (
        "BLEU is CodeXGLUE's code-to-text BLEU-4 (`bleu_codexglue_code_to_text`: smoothed sentence BLEU, "
        "lower-cased, averaged over examples; 0-100), right after each task's own training (the seed's table) "
        "and after the last task; forgetting is the seed's relative forgetting in percent (with the task id); "
        "trainable parameters while training the last task; training time in seconds summed over tasks. Runs "
        "with several seeds show means. Brackets: 95% intervals (one seed: bootstrap over the evaluation "
        "examples; several: the t interval of the mean over seeds)"
    )
    if n_runs == 1:
        return text + ". One run: add others to `hybridcl compare` to set strategies against each other."
    return text + "; a best value whose interval overlaps another run's is within noise of it."


def _named_rows(run_dirs: list[Path]) -> list[dict]:
    """The comparison row of each run; two runs of one strategy (other data, model or seeds) are
    named by their folder too."""
    rows = comparison_rows(run_dirs)
    names = [row["strategy"] for row in rows]
    for row in rows:
        if names.count(row["strategy"]) > 1:
            row["strategy"] = f"{row['strategy']} ({Path(row['run']).name})"
    return rows


def _best_lines(rows: list[dict], columns: list[str], labels: dict[str, str]) -> list[str]:
    """Per column, the best run (or a tie), and whether it is within noise of another."""
    best = []
    for c in columns:
        values = [(row[c], row["strategy"]) for row in rows if row[c] is not None]
        digits = 0 if c == "trainable_params" else 2
        if values and len({v for v, _ in values}) == 1 and len(values) > 1:
            best.append(f"- {labels[c]}: tie ({_fmt(values[0][0], digits)} for all)")
        elif values:
            pick = min(values, key=lambda v: v[0]) if c in LOWER_IS_BETTER else max(values, key=lambda v: v[0])
            best.append(
                f"- {labels[c]}: **{pick[1]}** ({_fmt(pick[0], digits)}, "
                f"{'lower' if c in LOWER_IS_BETTER else 'higher'} is better){_noise(rows, c, pick[1])}"
            )
    return best


def _cell(row: dict, column: str) -> str:
    if column == "trainable_params":
        return _fmt(row[column], 0)
    interval = row["intervals"].get(column)
    text = _fmt(row[column])
    return text if interval is None or row[column] is None else f"{text} [{interval[0]:,.2f}, {interval[1]:,.2f}]"


def _noise(rows: list[dict], column: str, best: str) -> str:
    """Whether the best value in ``column`` is beyond noise: no other run's 95% interval overlaps its own."""
    if column not in INTERVAL_OF:
        return ""
    intervals = {row["strategy"]: row["intervals"].get(column) for row in rows if row[column] is not None}
    missing = [name for name, iv in intervals.items() if iv is None]
    if len(intervals) < 2:
        return ""
    if missing:
        return f"; no interval for {', '.join(missing)}, so no statement about noise"
    lo, hi = intervals[best]
    close = [name for name, (a, b) in intervals.items() if name != best and a <= hi and lo <= b]
    if close:
        return f"; within noise of {', '.join(close)} (their 95% intervals overlap)"
    return "; beyond noise (no other run's 95% interval overlaps)"


def _chart(rows, tasks, labels, path: Path) -> Path:
    groups = [row["strategy"] for row in rows]
    col = lambda c: [row.get(c) for row in rows]  # noqa: E731
    panels = [
        {
            "title": "BLEU after the last task",
            "ylabel": "BLEU (0-100)",
            "series": {**{_language(t): col(f"{t}_bleu") for t in tasks}, "average": col("average_bleu")},
        },
        {
            "title": "forgetting (relative)",
            "ylabel": "% of own score lost",
            "series": {"task id": col("forgetting_relative"), "routed": col("forgetting_routed")},
        },
        {
            "title": "backward and forward transfer (BLEU)",
            "ylabel": "BLEU points",
            "series": {"BWT": col("bwt"), "FWT": col("fwt")},
        },
        {
            "title": "syntax pass rate after the last task",
            "ylabel": "% of outputs",
            "series": {_language(t): col(f"{t}_syntax_pass") for t in tasks},
        },
        {
            "title": "trainable parameters (last task)",
            "ylabel": "parameters",
            "series": {"trainable": col("trainable_params")},
        },
        {"title": "training time, all tasks", "ylabel": "seconds", "series": {"time": col("train_seconds")}},
    ]
    return plots.bar_panels(groups, panels, path)
