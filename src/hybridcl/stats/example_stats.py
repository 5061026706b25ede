"""Per-example sufficient statistics: how a metric is rebuilt from rows of numbers per example.

Every metric with an interval is computed from a row of ``k`` numbers per evaluation example whose
column sums determine it (:class:`MetricStats`). Three shapes cover the metrics hybridcl scores:

- mean type, ``[value, 1]`` (rows from :func:`mean_stats`), aggregate ``sum / count``;
- ratio type, ``[numerator, denominator]`` (rows from :func:`ratio_stats`), e.g. ``loss``: NLL sum
  in nats and target tokens, aggregate = mean NLL per token;
- corpus BLEU, ``[hyp_len, ref_len, correct_1..N, total_1..N]`` (rows from
  :func:`corpus_bleu_example_stats`), aggregate = the corpus score of the summed counts.

Which metric has which shape is declared once, in :mod:`hybridcl.evaluation.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MetricStats:
    """How one metric is computed from summed per-example statistics.

    ``aggregate`` maps summed statistics ``[..., k]`` to values ``[...]`` (NaN where undefined),
    vectorised over any leading axes (one row per bootstrap resample). ``higher_is_better`` is
    False for ``loss``: there forgetting is a rise.
    """

    name: str
    columns: tuple[str, ...]
    aggregate: Callable[[np.ndarray], np.ndarray]
    higher_is_better: bool = True


def mean_aggregate(summed: np.ndarray) -> np.ndarray:
    """``sum / count`` of ``[value, count]`` (or ``[numerator, denominator]``) sums; NaN for a zero count."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(summed[..., 1] > 0, summed[..., 0] / summed[..., 1], np.nan)


def percent_aggregate(summed: np.ndarray) -> np.ndarray:
    """:func:`mean_aggregate` in percent (``token_accuracy``)."""
    return 100.0 * mean_aggregate(summed)


def mean_metric(name: str, higher_is_better: bool = True) -> MetricStats:
    """A metric that is the mean of one value per example (rows from :func:`mean_stats`), e.g. pass@k
    over problems; pass it to :func:`hybridcl.evaluation.registry.register_metric` to use it by name."""
    return MetricStats(name, ("value", "count"), mean_aggregate, higher_is_better)


def corpus_bleu_metric(
    name: str,
    score_from_stats: Callable[[list[int], list[int], int, int], float],
    max_order: int = 4,
) -> MetricStats:
    """A corpus BLEU ``name`` whose per-example rows come from :func:`corpus_bleu_example_stats`.

    ``score_from_stats(correct, total, hyp_len, ref_len)`` returns the corpus score (0-100) from
    summed counts: ``correct`` and ``total`` are lists of ``max_order`` n-gram counts, lengths in
    tokens. It is called once per bootstrap resample (about 10 us each for sacrebleu's).
    """

    def aggregate(summed: np.ndarray) -> np.ndarray:
        flat = np.rint(np.asarray(summed, dtype=float)).astype(np.int64).reshape(-1, 2 + 2 * max_order)
        out = np.empty(len(flat))
        for b, ints in enumerate(flat.tolist()):
            out[b] = score_from_stats(ints[2 : 2 + max_order], ints[2 + max_order :], ints[0], ints[1])
        return out.reshape(np.shape(summed)[:-1])

    columns = ("hyp_len", "ref_len") + tuple(f"correct_{n}" for n in range(1, max_order + 1))
    columns += tuple(f"total_{n}" for n in range(1, max_order + 1))
    return MetricStats(name, columns, aggregate)


def corpus_bleu_example_stats(
    hypothesis_tokens: Sequence[str], reference_tokens: Sequence[str], max_order: int = 4
) -> np.ndarray:
    """One example's corpus-BLEU row ``[hyp_len, ref_len, correct_1..N, total_1..N]`` from tokens.

    Counts as sacrebleu does (clipped n-gram matches against one reference), for any tokenisation.
    Tokens must not contain whitespace (sacrebleu's n-gram extractor splits on it).
    """
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    for tok in (*hypothesis_tokens, *reference_tokens):
        if not tok or any(c.isspace() for c in tok):
            raise ValueError(f"token {tok!r} is empty or contains whitespace; split it before counting n-grams")
    hyp_ngrams, hyp_len = extract_all_word_ngrams(" ".join(hypothesis_tokens), 1, max_order)
    ref_ngrams, ref_len = extract_all_word_ngrams(" ".join(reference_tokens), 1, max_order)
    correct = [0] * max_order
    total = [0] * max_order
    for ngram, count in hyp_ngrams.items():
        total[len(ngram) - 1] += count
        correct[len(ngram) - 1] += min(count, ref_ngrams.get(ngram, 0))
    return np.array([hyp_len, ref_len, *correct, *total], dtype=float)


def mean_stats(values: Sequence[float]) -> np.ndarray:
    """Rows ``[value, 1]`` for a mean-type metric from one value per example (e.g. routing accuracy:
    100 where the router chose the right task, else 0)."""
    return np.column_stack([np.asarray(values, dtype=float), np.ones(len(values))])


def ratio_stats(numerators: Sequence[float] | np.ndarray, denominators: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rows ``[numerator, denominator]`` per example, e.g. ``loss``: (NLL sum in nats, target tokens)
    or ``token_accuracy``: (correct tokens, target tokens)."""
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"numerators {num.shape} and denominators {den.shape} must be equal 1-d lists")
    if (den < 0).any():
        raise ValueError("denominators (token counts) must be >= 0")
    return np.column_stack([num, den])
