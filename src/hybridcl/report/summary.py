"""The few numbers printed at the end of ``hybridcl run``; the rest is in ``report.md``."""

from __future__ import annotations

from pathlib import Path

from hybridcl.constants import HEADLINE_METRIC as HEADLINE
from hybridcl.results import read_results
from hybridcl.stats import mean


def _fmt(value, signed: bool = False) -> str:
    value = mean(value)
    if value is None:
        return "n/a"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def run_summary(run_dir: Path) -> str:
    """A short table: per task its loss and BLEU before training, after its own training and after the
    last task, and the CL metrics; the report (path on the last line) has the intervals."""
    run_dir = Path(run_dir)
    results = read_results(run_dir / "results.json")
    tasks, rows = results["tasks"], results["rows"]
    own_row = lambda task: rows.index(task) if task in rows else None  # noqa: E731
    lines = [f"{'task':<12}{'':>3}{'base':>8}{'after its task':>16}{'at the end':>12}"]
    for metric, label in (("loss", "loss"), (HEADLINE, "BLEU"), ("syntax_pass", "syntax %")):
        matrix = results["matrix"].get(metric)
        if not matrix:
            continue
        for j, task in enumerate(tasks):
            i = own_row(task)
            lines.append(
                f"{task:<12}{'':>3}{_fmt(matrix[0][j]):>8}{_fmt(matrix[i][j] if i else None):>16}"
                f"{_fmt(matrix[-1][j]):>12}   {label}"
            )
    cl = results["cl_metrics"][HEADLINE]
    lines.append(
        f"average BLEU at the end {_fmt(cl.get('average_final'))}; forgetting (relative) "
        f"{_fmt(cl.get('forgetting_relative'))}%; BWT {_fmt(cl.get('bwt'), True)}; FWT {_fmt(cl.get('fwt'), True)}"
    )
    lines.append(f"report: {run_dir / 'report.md'}")
    return "\n".join(lines)
