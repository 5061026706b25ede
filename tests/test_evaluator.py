"""Units of the matrix evaluator and the results that need no model: which cells a row reuses,
a reused cell, and the aggregation of seeds' results."""

import numpy as np
import pytest

from hybridcl.evaluation.matrix import Cell, CellAction, Row, plan_row
from hybridcl.records.results import SeedResults, SeedState, aggregate

TASKS = ["python", "javascript", "go"]
SKIP, REUSE, SCORE = CellAction.SKIP, CellAction.REUSE, CellAction.SCORE


def _row(index: int, cells: dict) -> Row:
    row = Row(index, {}, {}, {}, {})
    for task, values in cells.items():
        if values is None:
            row.cells[task] = None
        else:
            row.add(task, Cell(values, [f"out-{task}"], [False], {"loss": np.ones((1, 2))}))
    return row


def test_row_0_scores_every_task_and_reuses_nothing():
    assert plan_row(0, TASKS, None, forward_transfer=False) == dict.fromkeys(TASKS, SCORE)


def test_later_tasks_are_skipped_without_forward_transfer():
    assert plan_row(1, TASKS, None, forward_transfer=False) == {"python": SCORE, "javascript": SKIP, "go": SKIP}
    assert plan_row(1, TASKS, None, forward_transfer=True) == dict.fromkeys(TASKS, SCORE)


def test_a_task_trained_before_the_previous_row_is_reused():
    """Row 3 after row 2: python (stage 1) and javascript (stage 2) trained nothing since row 2;
    go (stage 3) trained just now and is scored."""
    previous = _row(2, {"python": {"loss": 1.0}, "javascript": {"loss": 2.0}, "go": None})
    assert plan_row(3, TASKS, previous, forward_transfer=False) == {
        "python": REUSE,
        "javascript": REUSE,
        "go": SCORE,
    }
    # row 2 after row 1: only python (stage 1 < 2) is unchanged; javascript trained at stage 2
    previous = _row(1, {"python": {"loss": 1.0}, "javascript": None, "go": None})
    assert plan_row(2, TASKS, previous, forward_transfer=False) == {"python": REUSE, "javascript": SCORE, "go": SKIP}


def test_no_reuse_from_a_row_that_is_not_the_previous_one_or_did_not_evaluate():
    stale = _row(1, {"python": {"loss": 1.0}, "javascript": {"loss": 2.0}, "go": None})
    assert plan_row(3, TASKS, stale, forward_transfer=False)["python"] is SCORE  # a row was skipped (resume)
    empty = _row(2, {"python": None, "javascript": {"loss": 2.0}, "go": None})
    assert plan_row(3, TASKS, empty, forward_transfer=False) == {"python": SCORE, "javascript": REUSE, "go": SCORE}


def test_a_reused_cell_keeps_the_numbers_and_says_where_from():
    row = _row(2, {"python": {"loss": 1.5, "eval_seconds": 3.0, "n": 1}})
    kept = row.reused("python")
    assert kept.values == {"reused_from_row": 2, "loss": 1.5, "eval_seconds": 0.0, "n": 1}
    assert kept.predictions == ["out-python"] and kept.stats is row.stats["python"]
    with pytest.raises(ValueError, match="row 2 did not evaluate go"):
        _row(2, {"go": None}).reused("go")


def _seed(loss_rows: list[list[float]], seconds: float) -> SeedResults:
    tasks = ["python", "javascript"]
    cells = [{t: {"loss": v, "n": 4} for t, v in zip(tasks, row, strict=True)} for row in loss_rows]
    record = {"seconds": seconds, "samples_per_s": 8.0, "tokens_per_s": 800.0, "peak_memory_gb": 1.0}
    record |= {"final_loss": 0.5, "trainable_params": 10}
    state = SeedState(rows=cells, train=[{"task": t, **record} for t in tasks])
    return SeedResults.build("lora_only", tasks, state, {"trainable": 10}, {}, None, None, {}, "fp32")


def test_aggregate_takes_mean_and_std_over_seeds():
    a = _seed([[3.0, 3.0], [1.0, 3.0], [2.0, 1.0]], seconds=10.0)
    b = _seed([[3.0, 3.0], [1.0, 3.0], [4.0, 1.0]], seconds=20.0)
    out = aggregate([a, b])
    assert out["seeds"] == 2 and out["tasks"] == ["python", "javascript"] and out["rows"] == ["base", *out["tasks"]]
    assert out["matrix"]["loss"][2][0] == {"mean": 3.0, "std": pytest.approx(np.std([2.0, 4.0], ddof=1))}
    assert out["matrix"]["loss"][0][1] == {"mean": 3.0, "std": 0.0}
    # a loss forgets when it rises: python went 1.0 -> 2.0 (seed a) and 1.0 -> 4.0 (seed b)
    assert out["cl_metrics"]["loss"]["forgetting_absolute_per_task"][0]["mean"] == pytest.approx(2.0)
    assert out["cl_metrics"]["loss"]["bwt"]["mean"] == pytest.approx(-2.0)
    assert out["train"][0]["seconds"]["mean"] == 15.0 and out["train"][0]["task"] == "python"
    assert out["routing"] is None and "humaneval" not in out and len(out["per_seed"]) == 2
