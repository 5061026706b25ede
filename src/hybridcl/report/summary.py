"""The few numbers printed at the end of ``hybridcl run``; the rest is in ``report.md``."""
from __future__ import annotations

from pathlib import Path

from hybridcl.constants import HEADLINE_METRIC as HEADLINE
from hybridcl.io import read_json
from hybridcl.stats import mean


def _fmt(value, signed: bool = False) -> str:
    value = mean(value)
    if value is None:
        return "n/a"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def run_summary(run_dir: Path) -> str:
    """A short table: per task its BLEU after its own training and after the last task, and the CL metrics."""
    run_dir = Path(run_dir)
    if (run_dir / "comparison.md").is_file():
        return f"comparison of every strategy: {run_dir / 'comparison.md'}"
    results = read_json(run_dir / "results.json")
    tasks, rows = results["tasks"], results["rows"]
    matrix = results["matrix"][HEADLINE]
    syntax = results["matrix"].get("syntax_pass")
    lines = [f"{'task':<12}{'BLEU after its task':>20}{'BLEU at the end':>17}{'syntax pass at the end (%)':>28}"]
    for j, task in enumerate(tasks):
        own = matrix[rows.index(task)][j] if task in rows else None
        lines.append(f"{task:<12}{_fmt(own):>20}{_fmt(matrix[-1][j]):>17}{_fmt(syntax[-1][j] if syntax else None):>28}")
    cl = results["cl_metrics"][HEADLINE]
    lines.append(f"average BLEU at the end {_fmt(cl.get('average_final'))}; forgetting (relative) "
                 f"{_fmt(cl.get('forgetting_relative'))}%; BWT {_fmt(cl.get('bwt'), True)}; FWT {_fmt(cl.get('fwt'), True)}")
    lines.append(f"report: {run_dir / 'report.md'}")
    return "\n".join(lines)
