"""The metric registry: each metric declared once, scoring and intervals read it."""

import numpy as np
import pytest

from hybridcl.evaluation import registry
from hybridcl.stats.example_stats import mean_metric, mean_stats
from hybridcl.stats.intervals import cl_intervals

PREDICTIONS = ["def add(a, b):\n    return a + b", "def f(:\n  pass", "x = 1", "def g():\n    return 2"]
REFERENCES = ["def add(a, b):\n    return a + b", "def f():\n    pass", "y = 2", "def g():\n    return 3"]


def test_every_text_metric_with_rows_scores_as_its_rows_sum():
    """score (each metric's own function) equals value(summed rows) for every declared text metric."""
    context = dict(language="python", direction="text-to-code", reference_metrics=True, tokenize=str.split)
    scores = registry.score(PREDICTIONS, REFERENCES, **context)
    with_stats, stats = registry.score_with_stats(PREDICTIONS, REFERENCES, **context)
    names = [m.name for m in registry.all_metrics() if m.applies is not None]
    assert list(scores) == names  # every text metric applies to Python text-to-code with the reference metrics
    for name, rows in stats.items():
        if rows is None:
            assert registry.get_metric(name).stats is None  # codebleu only
            continue
        assert with_stats[name] == pytest.approx(scores[name], abs=1e-9), name
    assert scores["exact_match"] == 25.0 and scores["syntax_pass_ast"] == 75.0


def test_code_to_text_leaves_the_code_metrics_out():
    scores = registry.score(["Return the sum."], ["Returns the sum."], language="python", direction="code-to-text")
    assert list(scores) == [
        "bleu_codexglue_code_to_text",
        "bleu_codexglue_text_to_code",
        "bleu_sacre",
        "codebleu",
        "exact_match",
    ]
    assert scores["codebleu"] is None


def test_directions_come_from_the_registry():
    assert registry.higher_is_better("loss") is False
    assert registry.higher_is_better("bleu_sacre") is True
    assert registry.higher_is_better("cut_share") is True  # not a metric: the default
    assert not registry.has_interval("codebleu") and registry.has_interval("loss")
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        registry.get_metric("nope")


def test_adding_a_metric_is_one_entry(monkeypatch):
    """A new metric declared once is scored, has per-example rows and CL intervals."""
    monkeypatch.setattr(registry, "_METRICS", dict(registry._METRICS))

    def lengths(batch):
        return mean_stats([100.0 * (len(p) < len(r)) for p, r in batch.pairs])

    registry.register_metric(
        registry.Metric(
            "shorter",
            True,
            "outputs shorter than their reference",
            "% of outputs",
            mean_metric("shorter"),
            lambda batch: True,
            lambda batch: float(lengths(batch)[:, 0].mean()),
            lengths,
        )
    )
    scores, stats = registry.score_with_stats(PREDICTIONS, REFERENCES, language="python", direction="code-to-text")
    assert scores["shorter"] == 25.0
    result = cl_intervals("shorter", [[stats["shorter"]], [stats["shorter"]]], n_resamples=50)
    assert result.cells == [[25.0], [25.0]]
    assert np.allclose(result.cell_samples[0][0], result.cell_samples[1][0])
