import math

import pytest

from hybridcl.stats.cl_metrics import cl_metrics

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


def test_absolute_forgetting_ignores_rows_before_the_task_was_trained():
    # The example: task 2 scores 50 after task 1 (before its own training), 30 after its own
    # training and at the end. It has forgotten nothing; a max over rows 1..T-1 would say 20.
    m = cl_metrics([[0, 0, 0], [10, 50, 0], [10, 30, 0], [10, 30, 40]])
    assert m["forgetting_absolute_per_task"] == [0.0, 0.0]
    assert m["forgetting_absolute"] == 0.0


# Four tasks. Rows before a task's own training are high on purpose (R[1][2] = 55, R[1][3] = 12 but
# R[2][3] = 60): absolute forgetting must not look at them.
R4 = [
    [5.0, 40.0, 10.0, 20.0],
    [30.0, 55.0, 12.0, 22.0],
    [35.0, 50.0, 60.0, 25.0],
    [25.0, 35.0, 55.0, 30.0],
    [10.0, 42.0, 44.0, 70.0],
]


def test_hand_computed_four_tasks():
    m = cl_metrics(R4)
    assert m["T"] == 4
    assert m["final_per_task"] == [10.0, 42.0, 44.0, 70.0]
    assert m["average_final"] == pytest.approx(166 / 4)
    # relative: (30-10)/30, (50-42)/50, (55-44)/55
    assert m["forgetting_relative_per_task"] == pytest.approx([200 / 3, 16.0, 20.0])
    assert m["forgetting_relative"] == pytest.approx((200 / 3 + 16 + 20) / 3)
    # absolute: task1 max(R11, R21, R31) = max(30, 35, 25) = 35 -> 25; task2 max(R22, R32) = 50 -> 8
    # (not R12 = 55); task3 max(R33) = 55 -> 11 (not R23 = 60)
    assert m["forgetting_absolute_per_task"] == pytest.approx([25.0, 8.0, 11.0])
    assert m["forgetting_absolute"] == pytest.approx(44 / 3)
    assert m["bwt_per_task"] == pytest.approx([-20.0, -8.0, -11.0])
    assert m["bwt"] == pytest.approx(-13.0)
    # FWT: R12-R02 = 15, R23-R03 = 50, R34-R04 = 10
    assert m["fwt_per_task"] == pytest.approx([15.0, 50.0, 10.0])
    assert m["fwt"] == pytest.approx(25.0)
    assert m["n"] == {"average_final": 4, "forgetting_relative": 3, "forgetting_absolute": 3, "bwt": 3, "fwt": 3}
    assert m["n_skipped"] == dict.fromkeys(m["n"], 0)


# A loss matrix (lower is better), three tasks.
L = [
    [3.0, 4.0, 5.0],
    [1.0, 3.5, 4.8],
    [1.5, 1.2, 4.0],
    [2.0, 1.6, 0.9],
]


def test_lower_is_better_forgetting_is_a_rise():
    m = cl_metrics(L, higher_is_better=False)
    assert m["average_final"] == pytest.approx(1.5)
    # relative: 100 * (2.0 - 1.0) / 1.0, 100 * (1.6 - 1.2) / 1.2
    assert m["forgetting_relative_per_task"] == pytest.approx([100.0, 100 / 3])
    assert m["forgetting_relative"] == pytest.approx(200 / 3)
    # absolute: R[3][1] - min(R11, R21) = 2.0 - 1.0; R[3][2] - min(R22) = 1.6 - 1.2
    assert m["forgetting_absolute_per_task"] == pytest.approx([1.0, 0.4])
    assert m["forgetting_absolute"] == pytest.approx(0.7)
    # BWT keeps "negative = forgetting": R[j][j] - R[T][j]
    assert m["bwt_per_task"] == pytest.approx([-1.0, -0.4])
    assert m["bwt"] == pytest.approx(-0.7)
    # FWT keeps "positive = helped": b_j - R[j-1][j] = 4.0 - 3.5, 5.0 - 4.0
    assert m["fwt_per_task"] == pytest.approx([0.5, 1.0])
    assert m["fwt"] == pytest.approx(0.75)
    # the same matrix read as higher-is-better gives the opposite signs
    assert cl_metrics(L)["bwt"] == pytest.approx(0.7)


def test_lower_is_better_absolute_uses_the_minimum_since_training():
    # task 1's loss is lowest after task 2 (0.5), so it has forgotten 1.5, not 2.0 - R[1][1] = 1.0
    m = cl_metrics([[3, 3, 3], [1.0, 3, 3], [0.5, 1.0, 3], [2.0, 1.0, 1.0]], higher_is_better=False)
    assert m["forgetting_absolute_per_task"] == pytest.approx([1.5, 0.0])


def test_means_say_how_many_tasks_they_skipped():
    # three tasks; task 2 scored 0 after its own training (no relative forgetting) and task 3 was
    # not evaluated before its training (no FWT for it)
    m = cl_metrics([[1.0, 2.0, 3.0], [10.0, 4.0, None], [8.0, 0.0, None], [6.0, 1.0, 9.0]])
    assert m["forgetting_relative_per_task"] == pytest.approx([40.0, None])
    assert m["forgetting_relative"] == pytest.approx(40.0)
    assert m["fwt_per_task"] == [2.0, None]
    assert m["fwt"] == 2.0
    assert m["n"] == {"average_final": 3, "forgetting_relative": 1, "forgetting_absolute": 2, "bwt": 2, "fwt": 1}
    assert m["n_skipped"] == {
        "average_final": 0,
        "forgetting_relative": 1,
        "forgetting_absolute": 0,
        "bwt": 0,
        "fwt": 1,
    }
    assert m["forgetting_absolute_per_task"] == [4.0, -1.0]  # task 2 improved after its training
    assert m["bwt_per_task"] == [-4.0, 1.0]
