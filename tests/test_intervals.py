import json
import math

import numpy as np
import pytest
import sacrebleu

from hybridcl.evaluation import registry
from hybridcl.report import wording
from hybridcl.stats import intervals as iv
from hybridcl.stats.cl_metrics import cl_metrics

PREDS = [
    "def add(a, b):\n    return a + b",
    "Parse a JSON file and return a dict",
    "",
    "x",
    "def mean(values):\n    return sum(values) / len(values",
    "Open the file at `path` and yield lines (stripped).",
    "return None",
]
REFS = [
    "def add(a,b): return a+b",
    "Parses a JSON file into a dictionary.",
    "Does nothing.",
    "x",
    "def mean(values):\n    return sum(values) / len(values)",
    "Yield stripped lines of the file at path.",
    "return None",
]


def _flags(pattern: str) -> np.ndarray:
    """Per-example exact-match rows from a string of 0/1 (1 = correct = 100)."""
    return iv.mean_stats([100.0 if c == "1" else 0.0 for c in pattern])


# ---- aggregates equal the metrics as hybridcl computes them ----------------------------------------


@pytest.mark.parametrize("direction", ["text-to-code", "code-to-text"])
def test_summed_stats_give_the_metric_score_computes(direction):
    expected = registry.score(PREDS, REFS, language="python", direction=direction)
    stats = iv.score_stats(PREDS, REFS, language="python", direction=direction)
    assert set(stats) == set(expected)
    assert stats["codebleu"] is None
    for name, st in stats.items():
        if st is None:
            continue
        assert st.shape == (len(PREDS), len(iv.metric_stats(name).columns))
        assert iv.value(name, st.sum(axis=0)) == pytest.approx(expected[name], abs=1e-9), name


@pytest.mark.parametrize("direction", ["text-to-code", "code-to-text"])
def test_scores_and_stats_in_one_pass(direction, monkeypatch):
    """The evaluator's cell: score's numbers and score_stats' rows, each metric computed once (score is
    not called: its sentence BLEUs, sacrebleu and syntax checks would run a second time)."""
    expected = registry.score(PREDS, REFS, language="python", direction=direction)
    expected_stats = iv.score_stats(PREDS, REFS, language="python", direction=direction)
    monkeypatch.setattr(registry, "score", None)
    scores, stats = iv.score_with_stats(PREDS, REFS, language="python", direction=direction)
    assert set(scores) == set(expected) and set(stats) == set(expected_stats)
    for name, value in expected.items():
        assert scores[name] == (None if value is None else pytest.approx(value, abs=1e-9)), name
    for name, rows in expected_stats.items():
        assert (rows is None and stats[name] is None) or np.array_equal(rows, stats[name]), name
    assert scores["exact_match"] == pytest.approx(200 / 7)


def test_exact_values_on_known_inputs():
    # exact match: examples 4 ("x") and 7 ("return None") only -> 2 of 7
    assert iv.value("exact_match", iv.example_stats("exact_match", PREDS, REFS).sum(0)) == pytest.approx(200 / 7)
    # syntax: code passes except the unclosed "len(values" (example 5); blank output fails; prose
    # such as "Parse a JSON file and return a dict" does not parse; "x" is a valid expression
    rows = iv.example_stats("syntax_pass_ast", PREDS, REFS)
    assert rows[:, 0].tolist() == [100.0, 0.0, 0.0, 100.0, 0.0, 0.0, 100.0]
    assert iv.example_stats("syntax_pass", PREDS, REFS, language="python").tolist() == rows.tolist()
    assert rows[:, 1].tolist() == [1.0] * 7


def test_bleu_sacre_equals_corpus_bleu_including_on_resamples():
    rng = np.random.default_rng(3)
    words = "the a function returns value list of file path open read write".split()
    preds = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(40)]
    refs = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(40)]
    stats = iv.example_stats("bleu_sacre", preds, refs)
    assert iv.value("bleu_sacre", stats.sum(0)) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-9)
    # a resample with counts is the corpus with each example repeated that many times
    counts = iv.bootstrap_counts(len(preds), n_resamples=5, seed=7)
    values = iv.resample_values("bleu_sacre", stats, counts)
    for b in range(5):
        rp = [p for p, c in zip(preds, counts[b], strict=True) for _ in range(c)]
        rr = [r for r, c in zip(refs, counts[b], strict=True) for _ in range(c)]
        assert values[b] == pytest.approx(sacrebleu.corpus_bleu(rp, [rr]).score, abs=1e-9)


def test_corpus_bleu_rows_from_any_tokenisation_match_sacrebleu():
    hyps = [["def", "f", "(", "x", ")", ":"], ["return", "x", "+", "1"], ["a"]]
    refs = [["def", "g", "(", "x", ")", ":"], ["return", "x", "+", "2"], ["b", "c"]]
    rows = np.array([iv.corpus_bleu_example_stats(h, r) for h, r in zip(hyps, refs, strict=True)])
    # hand count for the first pair: 6 tokens; 1-grams def ( x ) : match (5), 2-grams "( x" "x )" ") :"
    # (3), 3-grams "( x )" "x ) :" (2), 4-grams "( x ) :" (1)
    assert rows[0].tolist() == [6, 6, 5, 3, 2, 1, 6, 5, 4, 3]
    spec = iv.corpus_bleu_metric(
        "bleu_test_tokens",
        lambda c, t, h, r: sacrebleu.BLEU.compute_bleu(c, t, h, r, smooth_method="exp").score,
    )
    expected = sacrebleu.corpus_bleu([" ".join(h) for h in hyps], [[" ".join(r) for r in refs]], tokenize="none")
    assert iv.value(spec, rows.sum(0)) == pytest.approx(expected.score, abs=1e-9)
    assert not iv.has_interval("bleu_test_tokens")  # a spec is used as is, not registered
    res = iv.cl_intervals(spec, [[rows], [rows]], n_resamples=20)
    assert res.metric == "bleu_test_tokens" and res.intervals["final_per_task"][0][0] <= expected.score
    with pytest.raises(ValueError, match="whitespace"):
        iv.corpus_bleu_example_stats(["a b"], ["a"])


def test_loss_and_token_accuracy_are_ratios_of_sums():
    loss = iv.ratio_stats([2.0, 4.0, 6.0], [1, 2, 3])
    assert iv.value("loss", loss.sum(0)) == 2.0  # 12 nats / 6 tokens, not the mean of per-example means
    acc = iv.ratio_stats([1, 2, 3], [2, 2, 4])
    assert iv.value("token_accuracy", acc.sum(0)) == 75.0
    assert iv.value("loss", [0.0, 0.0]) is None
    assert iv.metric_stats("loss").higher_is_better is False


def test_mean_type_rows():
    rows = iv.mean_stats([100.0, 0.0, 100.0, 100.0])  # e.g. the router right on 3 of 4 examples
    assert rows.tolist() == [[100.0, 1.0], [0.0, 1.0], [100.0, 1.0], [100.0, 1.0]]
    assert iv.value("routing_accuracy", rows.sum(0)) == 75.0
    spec = iv.mean_metric("pass@1")
    assert iv.value(spec, iv.mean_stats([20.0, 50.0]).sum(0)) == 35.0


def test_codebleu_and_unknown_metrics():
    assert iv.example_stats("codebleu", PREDS, REFS) is None
    assert not iv.has_interval("codebleu")
    with pytest.raises(ValueError, match="no per-example statistics for metric 'nope'"):
        iv.value("nope", [1.0, 1.0])
    with pytest.raises(ValueError, match="ratio_stats"):
        iv.example_stats("loss", PREDS, REFS)
    with pytest.raises(ValueError, match="expected \\(n_examples, 2\\)"):
        iv.cell_interval("exact_match", np.ones((3, 3)), iv.bootstrap_counts(3))


# ---- bootstrap and cell intervals ------------------------------------------------------------------


def test_bootstrap_counts_are_seeded_multinomial_draws():
    c = iv.bootstrap_counts(10, n_resamples=200, seed=0)
    assert c.shape == (200, 10)
    assert (c.sum(axis=1) == 10).all()
    assert (c == iv.bootstrap_counts(10, n_resamples=200, seed=0)).all()
    assert not (c == iv.bootstrap_counts(10, n_resamples=200, seed=1)).all()
    # every example is drawn once per resample on average
    assert c.mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one example"):
        iv.bootstrap_counts(0)


def test_cell_interval_contains_the_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = _flags("".join(rng.choice(["0", "1"], 50)))
    large = _flags("".join(rng.choice(["0", "1"], 800)))
    widths = []
    for st in (small, large):
        point = iv.value("exact_match", st.sum(0))
        low, high = iv.cell_interval("exact_match", st, iv.bootstrap_counts(len(st)))
        assert low < point < high
        widths.append(high - low)
    # the standard error falls as 1/sqrt(n): 16x the examples, about 1/4 of the width
    assert widths[1] < widths[0] / 3
    assert iv.cell_interval("exact_match", small, iv.bootstrap_counts(50, seed=4)) == iv.cell_interval(
        "exact_match", small, iv.bootstrap_counts(50, seed=4)
    )


def test_constant_examples_give_a_point_interval():
    assert iv.cell_interval("exact_match", _flags("1111"), iv.bootstrap_counts(4)) == (100.0, 100.0)


def test_percentile_interval_exact():
    samples = np.arange(101, dtype=float)  # percentiles equal their rank
    assert iv.percentile_interval(samples, 0.9) == (5.0, 95.0)
    assert iv.percentile_interval(np.array([np.nan, np.nan])) is None


# ---- CL metrics with paired intervals --------------------------------------------------------------


def test_identical_rows_give_exactly_zero_forgetting():
    rng = np.random.default_rng(1)
    t1 = _flags("".join(rng.choice(["0", "1"], 60)))
    t2 = _flags("".join(rng.choice(["0", "1"], 40)))
    base2 = _flags("".join(rng.choice(["0", "1"], 40)))
    # task 1's cells after task 1 and after task 2 are the same examples with the same scores
    res = iv.cl_intervals("exact_match", [[t1, base2], [t1, base2], [t1, t2]])
    assert res.intervals["bwt"] == (0.0, 0.0)
    assert res.intervals["forgetting_absolute_per_task"] == [(0.0, 0.0)]
    assert (
        wording.describe_interval("BWT", res.cl["bwt"], res.intervals["bwt"])
        == "BWT 0 on every resample: no change at all"
    )
    d = wording.describe_difference(res.cells[2][0], res.cells[1][0], res.cell_samples[2][0], res.cell_samples[1][0])
    assert (d.low, d.high, d.beyond_noise) == (0.0, 0.0, False)
    assert d.text == "A equals B on every resample"


def test_clear_forgetting_excludes_zero_and_noise_contains_it():
    n = 100
    before = _flags("1" * 90 + "0" * 10)
    after = _flags("1" * 50 + "0" * 50)  # 40 examples that were right are now wrong
    other = _flags("1" * 50 + "0" * 50)
    res = iv.cl_intervals("exact_match", [[before, other], [before, other], [after, other]])
    assert res.cl["bwt"] == pytest.approx(-40.0)
    low, high = res.intervals["bwt"]
    # 40 of 100 examples lose 100 points: the standard error is 100 * sqrt(0.4 * 0.6 / 100) = 4.9, so
    # the normal approximation gives -40 -+ 9.6; the bootstrap's 1-point steps allow 2 points either way
    assert low == pytest.approx(-49.6, abs=2) and high == pytest.approx(-30.4, abs=2)
    assert res.intervals["forgetting_absolute"][0] > 0
    text = wording.describe_interval("forgetting", res.cl["forgetting_absolute"], res.intervals["forgetting_absolute"])
    assert text.startswith("forgetting +40.00 (95% CI [+") and text.endswith("]): above 0")

    # noise: the same accuracy, different examples right -> the paired difference straddles 0
    rng = np.random.default_rng(5)
    a = rng.random(n) < 0.5
    b = a.copy()
    flip = rng.choice(n, 20, replace=False)
    b[flip] = ~b[flip]
    noisy = iv.cl_intervals(
        "exact_match",
        [[_flags("".join("1" if x else "0" for x in a)), other]] * 2
        + [[_flags("".join("1" if x else "0" for x in b)), other]],
    )
    low, high = noisy.intervals["bwt"]
    assert low < 0 < high
    assert "within noise" in wording.describe_interval("BWT", noisy.cl["bwt"], noisy.intervals["bwt"])


def test_point_values_are_the_plain_cells_and_cl_metrics():
    rng = np.random.default_rng(2)
    S = [
        [iv.ratio_stats(rng.random(30) * 60, np.full(30, 20.0)) for _ in range(2)],
        [iv.ratio_stats(rng.random(30) * 40, np.full(30, 20.0)), None],
        [iv.ratio_stats(rng.random(30) * 50, np.full(30, 20.0)) for _ in range(2)],
    ]
    res = iv.cl_intervals("loss", S, n_resamples=200)
    for i, row in enumerate(S):
        for j, st in enumerate(row):
            assert res.cells[i][j] == (None if st is None else iv.value("loss", st.sum(0)))
    assert res.cells[1][1] is None and res.cell_intervals[1][1] is None
    assert res.cl == cl_metrics(res.cells, higher_is_better=False)  # a loss: lower is better
    assert res.n_resamples == 200
    assert len(res.samples["bwt"]) == 200
    for i, row in enumerate(res.cell_intervals):
        for j, c in enumerate(row):
            if c is not None:
                assert c[0] <= res.cells[i][j] <= c[1]
    json.dumps(res.to_json())  # plain numbers and lists only
    # the same seed, the same intervals
    assert iv.cl_intervals("loss", S, n_resamples=200).intervals == res.intervals


def test_rows_on_different_examples_are_refused():
    with pytest.raises(ValueError, match="task column 0: rows were scored on different numbers of examples"):
        iv.cl_intervals("exact_match", [[_flags("10")], [_flags("101")]])


def test_direction_is_passed_to_cl_metrics_that_takes_it(monkeypatch):
    seen = []

    def fake_cl_metrics(matrix, higher_is_better=True):
        seen.append(higher_is_better)
        return {"T": len(matrix) - 1, "bwt": 0.0, "higher_is_better": higher_is_better}

    monkeypatch.setattr(iv, "cl_metrics", fake_cl_metrics)
    loss = iv.ratio_stats([1.0, 2.0], [1, 1])
    res = iv.cl_intervals("loss", [[loss], [loss]], n_resamples=3)
    assert set(seen) == {False}
    assert res.intervals == {"bwt": (0.0, 0.0)}  # a flag gets no interval
    seen.clear()
    iv.cl_intervals("exact_match", [[_flags("10")], [_flags("10")]], n_resamples=3)
    assert set(seen) == {True}


# ---- differences in words --------------------------------------------------------------------------


def test_describe_difference_paired_and_independent():
    a = np.array([5.0, 6.0, 7.0, 8.0, 9.0])
    d = wording.describe_difference(7.0, 2.0, a, a - 5.0, a_name="after", b_name="base", level=0.5)
    assert (d.difference, d.low, d.high, d.beyond_noise) == (5.0, 5.0, 5.0, True)
    assert d.text == "after is higher than base by +5.00 (50% CI of the difference [+5.00, +5.00])"
    # paired, the shift is exact; independent, the spread of each adds up and the difference is noise
    d = wording.describe_difference(7.0, 6.5, a, a - 0.5, paired=False, level=0.9)
    assert d.low < 0 < d.high and not d.beyond_noise
    assert d.text.startswith("A and B differ by +0.50, within noise (90% CI of the difference [")
    assert wording.describe_difference(7.0, 6.5, a, a - 0.5, paired=True).beyond_noise


def test_formatting_and_seeds():
    assert wording.format_interval(5.4912, (4.1, 6.8)) == "5.49 [4.10, 6.80]"
    assert wording.format_interval(5.4912, None) == "5.49"
    assert wording.format_interval(None, None) == "-"
    s = iv.mean_std_n([1.0, 2.0, None, 3.0, math.nan])
    assert s == {"mean": 2.0, "std": 1.0, "n": 3}
    assert wording.format_mean_std(s) == "2.00 ± 1.00 (n=3)"
    assert wording.format_mean_std(iv.mean_std_n([])) == "-"


def test_own_training_effect_is_the_paired_difference_from_the_base():
    before = iv.ratio_stats(np.full(40, 60.0), np.full(40, 20.0))  # loss 3.0 on every example
    after = iv.ratio_stats(np.concatenate([np.full(20, 20.0), np.full(20, 60.0)]), np.full(40, 20.0))  # 1.0 or 3.0
    res = iv.cl_intervals("loss", [[before], [after]], n_resamples=300)
    (effect,) = iv.own_training_effect(res)
    assert effect["difference"] == pytest.approx(2.0 - 3.0)
    low, high = effect["interval"]
    assert low < -1.0 < high < 0  # the loss fell by 1 nat, beyond noise
    assert iv.own_training_effect(iv.cl_intervals("loss", [[before], [before]], n_resamples=50)) == [
        {"difference": 0.0, "interval": [0.0, 0.0]}
    ]
