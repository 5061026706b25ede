"""The few numbers printed at the end of ``hybridcl run``; the rest is in ``report.md``."""

from __future__ import annotations

import json
from pathlib import Path

from hybridcl.constants import HEADLINE_METRIC
from hybridcl.records.results import read_results
from hybridcl.stats.seeds import mean

# The BLEU that fits each direction's outputs: CodeXGLUE's code-to-text BLEU (sentence BLEU,
# lower-cased) for docstrings, its text-to-code BLEU (corpus BLEU) for code.
BLEU_OF_DIRECTION = {
    "code-to-text": ("bleu_codexglue_code_to_text", "BLEU code-to-text"),
    "text-to-code": ("bleu_codexglue_text_to_code", "BLEU text-to-code"),
    "completion": ("bleu_codexglue_text_to_code", "BLEU text-to-code"),
}
# Relative forgetting divides by each task's score after its own training: below this (0-100 scale)
# the ratio says nothing and the summary calls it undefined.
RELATIVE_FLOOR = 0.01


def _fmt(value, signed: bool = False) -> str:
    value = mean(value)
    if value is None:
        return "n/a"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _direction(run_dir: Path) -> str | None:
    from hybridcl.errors import HybridclError
    from hybridcl.records.run_dir import load_run_config

    if not (run_dir / "config.yaml").is_file():
        return None
    try:
        directions = {t.direction for t in load_run_config(run_dir).tasks}
    except HybridclError:
        return None
    return directions.pop() if len(directions) == 1 else None  # mixed: the default metrics


def _metrics(direction: str | None) -> list[tuple[str, str]]:
    bleu = BLEU_OF_DIRECTION.get(direction or "", (HEADLINE_METRIC, "BLEU code-to-text"))
    code = direction != "code-to-text"
    return [("loss", "loss/token"), bleu, *([("syntax_pass", "syntax %"), ("codebleu", "CodeBLEU")] if code else [])]


def _empty_outputs(run_dir: Path, row: int, tasks: list[str]) -> tuple[int, int]:
    """(empty predictions, predictions) of matrix row ``row`` over every seed's saved predictions."""
    empty = total = 0
    for task in tasks:
        for path in run_dir.glob(f"seed-*/predictions/row{row}-{task}.jsonl"):
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    total += 1
                    empty += not json.loads(line).get("prediction", "").strip()
    return empty, total


def _forgetting(cl: dict, matrix: list, rows: list, tasks: list) -> str:
    own = [mean(matrix[rows.index(t)][j]) for j, t in enumerate(tasks[:-1]) if t in rows]
    if own and all(v is not None and abs(v) < RELATIVE_FLOOR for v in own):
        return "undefined (every task's score after its own training is about 0)"
    value = _fmt(cl.get("forgetting_relative"))
    return value if value == "n/a" else value + "%"


def run_summary(run_dir: Path) -> str:
    """A short table: per metric and task the value before training, after the task's own training and
    after the last task, then the CL metrics of the direction's BLEU; the report (path on the last
    line) has the intervals."""
    run_dir = Path(run_dir)
    results = read_results(run_dir / "results.json")
    tasks, rows = results["tasks"], results["rows"]
    own_row = lambda task: rows.index(task) if task in rows else None  # noqa: E731
    lines = [f"{'metric':<19}{'task':<12}{'base':>8}{'after its task':>16}{'at the end':>12}"]
    metrics = [(m, label) for m, label in _metrics(_direction(run_dir)) if results["matrix"].get(m)]
    for metric, label in metrics:
        matrix = results["matrix"][metric]
        for j, task in enumerate(tasks):
            i = own_row(task)
            lines.append(
                f"{label:<19}{task:<12}{_fmt(matrix[0][j]):>8}{_fmt(matrix[i][j] if i else None):>16}"
                f"{_fmt(matrix[-1][j]):>12}"
            )
    if any(m == "codebleu" for m, _ in metrics):
        empty, total = _empty_outputs(run_dir, len(rows) - 1, tasks)
        if empty:
            lines.append(
                f"note: {empty} of {total} outputs at the end are empty; CodeBLEU gives an empty output about 25 "
                "(its syntax and data-flow parts), so read it beside syntax %"
            )
    bleu, label = next(((m, lab) for m, lab in metrics if m.startswith("bleu")), (HEADLINE_METRIC, "BLEU"))
    cl = results["cl_metrics"].get(bleu, {})
    forgetting = _forgetting(cl, results["matrix"].get(bleu, []), rows, tasks) if bleu in results["matrix"] else "n/a"
    lines.append(
        f"{label}: average at the end {_fmt(cl.get('average_final'))}; forgetting (relative) {forgetting}; "
        f"BWT {_fmt(cl.get('bwt'), True)}; FWT {_fmt(cl.get('fwt'), True)}"
    )
    lines.append(f"report: {run_dir / 'report.md'}")
    return "\n".join(lines)
