import math

import pytest

from hybridcl.cl_metrics import cl_metrics

# Row 0 = base model, rows 1..3 = after tasks 1..3; columns = tasks 1..3.
R = [
    [10.0, 20.0, 30.0],
    [50.0, 25.0, 35.0],
    [40.0, 60.0, 32.0],
    [30.0, 45.0, 70.0],
]


def test_hand_computed_three_tasks():
    m = cl_metrics(R)
    assert m["T"] == 3
    assert m["final_per_task"] == [30.0, 45.0, 70.0]
    assert m["average_final"] == pytest.approx((30 + 45 + 70) / 3)
    # relative: task1 (50-30)/50 = 40 %, task2 (60-45)/60 = 25 %
    assert m["forgetting_relative_per_task"] == pytest.approx([40.0, 25.0])
    assert m["forgetting_relative"] == pytest.approx(32.5)
    # absolute: task1 max(50, 40) - 30 = 20; task2 max(25, 60) - 45 = 15
    assert m["forgetting_absolute_per_task"] == pytest.approx([20.0, 15.0])
    assert m["forgetting_absolute"] == pytest.approx(17.5)
    # BWT: (30-50) + (45-60) = -35 -> -17.5
    assert m["bwt_per_task"] == pytest.approx([-20.0, -15.0])
    assert m["bwt"] == pytest.approx(-17.5)
    # FWT: task2 R[1][2]-R0[2] = 25-20 = 5; task3 R[2][3]-R0[3] = 32-30 = 2 -> 3.5
    assert m["fwt_per_task"] == pytest.approx([5.0, 2.0])
    assert m["fwt"] == pytest.approx(3.5)


def test_absolute_uses_the_max_not_the_diagonal():
    # task 1 peaks after task 2 (row 2), so absolute forgetting differs from -BWT
    m = cl_metrics([[0, 0, 0], [10, 0, 0], [20, 30, 0], [5, 30, 40]])
    assert m["forgetting_absolute_per_task"] == [15.0, 0.0]
    assert m["bwt_per_task"] == [-5.0, 0.0]


def test_single_task_has_no_forgetting_or_transfer():
    m = cl_metrics([[5.0, 1.0], [40.0, 2.0]])
    assert m["average_final"] == 40.0
    for key in ("forgetting_relative", "forgetting_absolute", "bwt", "fwt"):
        assert m[key] is None
    assert m["bwt_per_task"] == [] and m["fwt_per_task"] == []


def test_zero_denominator_and_missing_entries_give_none_not_nan():
    m = cl_metrics([[1.0, None], [0.0, None], [0.0, 3.0]])
    assert m["forgetting_relative_per_task"] == [None]
    assert m["forgetting_relative"] is None
    assert m["forgetting_absolute"] == 0.0
    assert m["bwt"] == 0.0
    assert m["fwt"] is None  # R[1][2] was not evaluated
    m = cl_metrics([[1.0, float("nan")], [2.0, 1.0], [1.0, 3.0]])
    assert m["fwt"] is None
    for v in m.values():
        assert not (isinstance(v, float) and math.isnan(v))


def test_base_only_and_bad_shapes():
    assert cl_metrics([[1.0, 2.0]])["average_final"] is None
    with pytest.raises(ValueError):
        cl_metrics([])
    with pytest.raises(ValueError):
        cl_metrics([[1.0], [1.0], [1.0]])  # row 2 needs a column for task 2

