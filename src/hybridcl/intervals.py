"""Bootstrap confidence intervals for matrix cells and CL metrics, and words for "within noise".

Every metric is computed from **sufficient statistics per example**: a row of ``k`` numbers per
evaluation example whose column sums determine the metric. A bootstrap resample is then a vector of
counts (how often each example is drawn), and the resampled statistics of ``B`` resamples are one
matrix product ``counts [B, n] @ stats [n, k]``: 1,000 resamples cost about as much as one score.

Statistics per metric (``value(metric, stats.sum(0))`` equals the metric as ``hybridcl.evaluate.metrics``
computes it on the same examples):

- mean type, ``[value, 1]``, aggregate ``sum / count``: ``bleu_codexglue_code_to_text`` (CodeXGLUE's smoothed
  sentence BLEU averaged over examples), ``exact_match``, ``syntax_pass``, ``syntax_pass_ast``,
  ``syntax_agreement``, ``routing_accuracy``, ``bleu_seed`` (nltk sentence BLEU averaged over
  examples), ``syntax_pass_seed`` (0-100 each; rows from :func:`mean_stats`).
- corpus BLEU, ``[hyp_len, ref_len, correct_1..N, total_1..N]``: ``bleu_sacre`` (sacrebleu's corpus
  BLEU, 13a, exp smoothing; the aggregate is sacrebleu's own ``BLEU.compute_bleu``, the route its
  paired bootstrap test takes). Any other corpus BLEU over any tokenisation registers with
  :func:`corpus_bleu_metric` and builds its rows with :func:`corpus_bleu_example_stats`.
- ratio type, ``[numerator, denominator]``: ``loss`` (sum of the negative log-likelihood over an
  example's target tokens in nats, number of target tokens; aggregate = mean NLL per token) and
  ``token_accuracy`` (correctly predicted target tokens, target tokens; aggregate in percent).
- ``codebleu``: no interval (None). Its syntax and data-flow matches are corpus sums computed
  inside the ``codebleu`` package with no public per-example statistics.

Pairing: rows of the matrix (base, after task 1, ...) are scored on the same examples of task ``j``
in the same order, so one counts matrix per task, drawn once with a fixed seed, resamples the same
examples in every row. Differences between rows (forgetting, BWT, FWT) are then paired: the noise
of which examples were drawn cancels, and identical rows give a difference of exactly 0.

Intervals are percentile intervals of the bootstrap distribution (Efron & Tibshirani 1993, ch. 13),
at ``level`` (0.95 = the 2.5th and 97.5th percentiles, numpy's linear interpolation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hybridcl.cl_metrics import cl_metrics
from hybridcl.constants import CODE_DIRECTIONS, LOWER_IS_BETTER
from hybridcl.evaluate import metrics as text_metrics
from hybridcl.stats import mean_std

N_RESAMPLES = 1000
LEVEL = 0.95

# ---- metrics as sufficient statistics ------------------------------------------------------------


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


def _mean_aggregate(summed: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(summed[..., 1] > 0, summed[..., 0] / summed[..., 1], np.nan)


def _percent_aggregate(summed: np.ndarray) -> np.ndarray:
    return 100.0 * _mean_aggregate(summed)


_REGISTRY: dict[str, MetricStats] = {}


def register_metric(spec: MetricStats) -> None:
    """Make ``spec.name`` known to :func:`value`, :func:`cell_interval` and :func:`cl_intervals`."""
    _REGISTRY[spec.name] = spec


def metric_stats(metric: str | MetricStats) -> MetricStats:
    """The :class:`MetricStats` of ``metric`` (a registered name, or a spec, returned as is);
    ValueError naming the known metrics otherwise. Every function here takes either."""
    if isinstance(metric, MetricStats):
        return metric
    try:
        return _REGISTRY[metric]
    except KeyError:
        raise ValueError(
            f"no per-example statistics for metric {metric!r}; known: {sorted(_REGISTRY)} "
            "(codebleu has none: see hybridcl.intervals)"
        ) from None


def has_interval(metric: str) -> bool:
    """Whether ``metric`` decomposes over examples, i.e. can carry a bootstrap interval."""
    return metric in _REGISTRY


def mean_metric(name: str, higher_is_better: bool = True) -> MetricStats:
    """A metric that is the mean of one value per example (rows from :func:`mean_stats`), e.g. pass@k
    over problems; pass it to :func:`register_metric` to use it by name."""
    return MetricStats(name, ("value", "count"), _mean_aggregate, higher_is_better)


for _name in (
    "bleu_codexglue_code_to_text",
    "exact_match",
    "syntax_pass",
    "syntax_pass_ast",
    "syntax_agreement",
    "routing_accuracy",
    "bleu_seed",
    "syntax_pass_seed",
):
    register_metric(mean_metric(_name))
register_metric(
    MetricStats("loss", ("nll_sum", "n_tokens"), _mean_aggregate, higher_is_better="loss" not in LOWER_IS_BETTER)
)
register_metric(MetricStats("token_accuracy", ("correct_tokens", "n_tokens"), _percent_aggregate))


def corpus_bleu_metric(
    name: str,
    score_from_stats: Callable[[list[int], list[int], int, int], float],
    max_order: int = 4,
) -> MetricStats:
    """A corpus BLEU ``name`` whose per-example rows come from :func:`corpus_bleu_example_stats`;
    pass it to :func:`register_metric` to use it by name.

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


def _sacrebleu_score(correct: list[int], total: list[int], hyp_len: int, ref_len: int) -> float:
    from sacrebleu.metrics.bleu import BLEU

    # sacrebleu.corpus_bleu's defaults: exp smoothing, no effective order
    return float(BLEU.compute_bleu(correct, total, hyp_len, ref_len, smooth_method="exp").score)


register_metric(corpus_bleu_metric("bleu_sacre", _sacrebleu_score))
register_metric(
    corpus_bleu_metric(
        "bleu_codexglue_text_to_code",
        lambda correct, total, hyp_len, ref_len: text_metrics.codexglue_text_to_code_bleu_from_counts(
            correct, total, hyp_len, ref_len
        ),
    )
)


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


def _check_pair(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def mean_stats(values: Sequence[float]) -> np.ndarray:
    """Rows ``[value, 1]`` for a mean-type metric from one value per example (e.g. routing accuracy:
    100 where the router chose the right task, else 0)."""
    return np.column_stack([np.asarray(values, dtype=float), np.ones(len(values))])


def example_stats(
    metric: str,
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    language: str | None = None,
    tokenize: Callable[[str], list[str]] | None = None,
    syntax_texts: Sequence[str] | None = None,
) -> np.ndarray | None:
    """Per-example statistics ``[n_examples, k]`` of a text metric (see the module docstring).

    ``language`` is needed for ``syntax_pass`` (tree-sitter grammar name); returns None for
    ``codebleu`` and for ``syntax_pass`` when no grammar is installed (as ``score`` does).
    ``bleu_seed`` needs ``tokenize`` (the model tokenizer's ``tokenize``), ``syntax_pass_seed``
    ``language``; the syntax metrics read ``syntax_texts`` instead of the predictions when given
    (as ``score`` does). ``loss`` and ``token_accuracy`` come from the model, not from text: use :func:`ratio_stats`.
    """
    _check_pair(predictions, references)
    pairs = list(zip(predictions, references))
    if metric == "codebleu":
        return None
    if metric == "bleu_codexglue_code_to_text":
        # the metric itself on one example is that example's sentence BLEU (0-100)
        return mean_stats([text_metrics.bleu_codexglue_code_to_text([p], [r]) for p, r in pairs])
    if metric == "bleu_codexglue_text_to_code":  # whitespace tokens, case kept, as the evaluator splits
        return np.array([corpus_bleu_example_stats(p.split(), r.split()) for p, r in pairs]).reshape(len(pairs), -1)
    if metric == "exact_match":
        return mean_stats([text_metrics.exact_match([p], [r]) for p, r in pairs])
    if metric == "bleu_seed":
        if tokenize is None:
            raise ValueError("bleu_seed needs tokenize= (the model tokenizer's tokenize)")
        return mean_stats(text_metrics.bleu_seed_scores(predictions, references, tokenize))
    if metric == "syntax_pass_seed":
        from hybridcl.evaluate import syntax

        if language is None:
            raise ValueError("syntax_pass_seed needs language= (e.g. 'python')")
        code = syntax_texts if syntax_texts is not None else predictions
        return mean_stats([100.0 if syntax.passes_seed(p, r, language) else 0.0 for p, r in zip(code, references)])
    if metric == "bleu_sacre":
        from sacrebleu.metrics.bleu import BLEU

        # effective_order only silences sacrebleu's sentence-level warning: it changes no count
        bleu = BLEU(effective_order=True)
        rows = []
        for p, r in pairs:
            s = bleu.sentence_score(p, [r])
            rows.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
        return np.array(rows, dtype=float)
    if metric in ("syntax_pass", "syntax_pass_ast", "syntax_agreement"):
        from hybridcl.evaluate import syntax

        predictions = syntax_texts if syntax_texts is not None else predictions

        if metric == "syntax_pass_ast":
            flags = [syntax.parses_ast(p) for p in predictions]
        elif metric == "syntax_agreement":
            flags = [syntax.parses(p, "python") == syntax.parses_ast(p) for p in predictions]
        else:
            if language is None:
                raise ValueError("syntax_pass needs language= (e.g. 'python')")
            lang = syntax.canonical_language(language)
            if lang not in syntax.supported_languages():
                return None
            flags = [syntax.parses(p, lang) for p in predictions]
        return mean_stats([100.0 if f else 0.0 for f in flags])
    metric_stats(metric)  # raises for unknown names
    raise ValueError(
        f"metric {metric!r} has no text path here: build its rows with ratio_stats (loss, token_accuracy) "
        "or corpus_bleu_example_stats (a corpus BLEU made by corpus_bleu_metric)"
    )


def score_stats(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    language: str,
    direction: str,
    seed_metrics: bool = False,
    tokenize: Callable[[str], list[str]] | None = None,
    syntax_texts: Sequence[str] | None = None,
) -> dict[str, np.ndarray | None]:
    """:func:`example_stats` for every key that ``hybridcl.evaluate.metrics.score`` returns (same arguments)."""
    if direction not in text_metrics.DIRECTIONS:
        raise ValueError(f"direction {direction!r}: expected one of {text_metrics.DIRECTIONS}")
    names = ["bleu_codexglue_code_to_text", "bleu_codexglue_text_to_code", "bleu_sacre", "exact_match", "codebleu"]
    if seed_metrics:
        names.append("bleu_seed")
        if direction in CODE_DIRECTIONS:
            names.append("syntax_pass_seed")
    if direction in CODE_DIRECTIONS:
        names.append("syntax_pass")
        from hybridcl.evaluate import syntax

        if syntax.canonical_language(language) == "python":
            names += ["syntax_pass_ast", "syntax_agreement"]
    return {
        m: example_stats(m, predictions, references, language=language, tokenize=tokenize, syntax_texts=syntax_texts)
        for m in names
    }


def score_with_stats(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    language: str,
    direction: str,
    seed_metrics: bool = False,
    tokenize: Callable[[str], list[str]] | None = None,
    syntax_texts: Sequence[str] | None = None,
) -> tuple[dict[str, float | None], dict[str, np.ndarray | None]]:
    """``hybridcl.evaluate.metrics.score`` and :func:`score_stats` of the same predictions (same arguments),
    each metric computed once: a score is :func:`value` of its summed statistics (equal to ``score``'s
    within 1e-9), CodeBLEU, which has none, comes from its package as ``score`` computes it."""
    stats = score_stats(
        predictions,
        references,
        language=language,
        direction=direction,
        seed_metrics=seed_metrics,
        tokenize=tokenize,
        syntax_texts=syntax_texts,
    )
    scores: dict[str, float | None] = {}
    for name, rows in stats.items():
        if rows is not None:
            scores[name] = value(name, rows.sum(axis=0))
        elif name == "codebleu" and direction in CODE_DIRECTIONS:
            scores[name] = text_metrics.codebleu(predictions, references, language)
        else:  # CodeBLEU of docstrings, a syntax pass rate without an installed grammar: undefined, as in score
            scores[name] = None
    return scores, stats


def ratio_stats(numerators: Sequence[float], denominators: Sequence[float]) -> np.ndarray:
    """Rows ``[numerator, denominator]`` per example, e.g. ``loss``: (NLL sum in nats, target tokens)
    or ``token_accuracy``: (correct tokens, target tokens)."""
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"numerators {num.shape} and denominators {den.shape} must be equal 1-d lists")
    if (den < 0).any():
        raise ValueError("denominators (token counts) must be >= 0")
    return np.column_stack([num, den])


def value(metric: str | MetricStats, summed_stats: Sequence[float] | np.ndarray) -> float | None:
    """The metric (its own units: BLEU 0-100, loss in nats per token) from statistics summed over
    examples; None where undefined (no tokens)."""
    spec = metric_stats(metric)
    summed = np.asarray(summed_stats, dtype=float)
    if summed.shape != (len(spec.columns),):
        raise ValueError(f"{spec.name}: summed statistics have shape {summed.shape}; expected ({len(spec.columns)},)")
    v = float(spec.aggregate(summed))
    return None if math.isnan(v) else v


# ---- bootstrap ------------------------------------------------------------------------------------


def bootstrap_counts(n: int, n_resamples: int = N_RESAMPLES, seed: int | Sequence[int] = 0) -> np.ndarray:
    """Resample counts ``[n_resamples, n]``: row ``b`` says how often each of the ``n`` examples is
    drawn in resample ``b`` (a multinomial over ``n`` draws with replacement; each row sums to ``n``).

    The same ``seed`` gives the same counts; use one counts matrix for every row of a task's column
    so that differences between rows are paired.
    """
    if n < 1:
        raise ValueError(f"bootstrap needs at least one example; got n={n}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1; got {n_resamples}")
    draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    # counts of uniform draws = a multinomial sample; one bincount over all rows is O(B n), where
    # rng.multinomial draws n conditional binomials per row (0.3 s for 1,000 x 1,000)
    offsets = np.arange(n_resamples, dtype=np.int64)[:, None] * n
    return np.bincount((draws + offsets).ravel(), minlength=n_resamples * n).reshape(n_resamples, n)


def _as_stats(metric: str | MetricStats, stats) -> np.ndarray:
    spec = metric_stats(metric)
    arr = np.asarray(stats, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != len(spec.columns):
        raise ValueError(
            f"{spec.name}: per-example statistics have shape {arr.shape}; expected (n_examples, {len(spec.columns)})"
        )
    return arr


def resample_values(metric: str | MetricStats, stats, counts: np.ndarray) -> np.ndarray:
    """The metric on every resample: ``[B]`` values (NaN where undefined)."""
    arr = _as_stats(metric, stats)
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != arr.shape[0]:
        raise ValueError(f"{metric_stats(metric).name}: counts {counts.shape} do not match {arr.shape[0]} examples")
    return metric_stats(metric).aggregate(counts @ arr)


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """``(low, high)`` percentiles of ``samples`` at ``level``, NaN ignored; None if all are NaN."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]  # undefined resamples; np.percentile is 5x faster than nanpercentile
    if samples.size == 0:
        return None
    # rounded so that level=0.9 asks for the 5th percentile, not the 4.999999999999999th
    tail = round(50.0 * (1.0 - level), 9)
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def cell_interval(
    metric: str | MetricStats, stats, counts: np.ndarray, level: float = LEVEL
) -> tuple[float, float] | None:
    """Percentile bootstrap interval ``(low, high)`` of one cell, in the metric's units."""
    return percentile_interval(resample_values(metric, stats, counts), level)


# ---- CL metrics with intervals --------------------------------------------------------------------


@dataclass
class CLIntervals:
    """A metric's matrix and CL metrics with their bootstrap intervals.

    ``cells[i][j]`` / ``cell_intervals[i][j]``: the value and ``(low, high)`` of R[i][j+1] (None where
    not evaluated). ``cl``: ``cl_metrics`` of the point matrix; ``intervals``: the same keys, each
    number replaced by ``(low, high)`` (None where undefined), per-task lists entry by entry.
    ``cell_samples`` and ``samples`` hold the ``[B]`` resampled values, for :func:`describe_difference`.
    """

    metric: str
    cells: list[list[float | None]]
    cell_intervals: list[list[tuple[float, float] | None]]
    cl: dict
    intervals: dict
    level: float
    n_resamples: int
    cell_samples: list[list[np.ndarray | None]] = field(repr=False, default_factory=list)
    samples: dict = field(repr=False, default_factory=dict)

    def to_json(self) -> dict:
        """Values and intervals as plain lists (no samples), for results.json."""
        pair = lambda iv: None if iv is None else [iv[0], iv[1]]  # noqa: E731
        return {
            "metric": self.metric,
            "level": self.level,
            "n_resamples": self.n_resamples,
            "cells": self.cells,
            "cell_intervals": [[pair(iv) for iv in row] for row in self.cell_intervals],
            "cl": self.cl,
            "intervals": {
                k: [pair(iv) for iv in v] if isinstance(v, list) else pair(v) for k, v in self.intervals.items()
            },
        }


def task_counts(stats_matrix, n_resamples: int = N_RESAMPLES, seed: int = 0) -> list[np.ndarray | None]:
    """One counts matrix per task column of ``stats_matrix`` (seeded by ``(seed, column)``), None for
    a column with no evaluated cell. Every evaluated cell of a column must have the same examples."""
    n_cols = max((len(row) for row in stats_matrix), default=0)
    out: list[np.ndarray | None] = []
    for j in range(n_cols):
        sizes = {np.shape(row[j])[0] for row in stats_matrix if j < len(row) and row[j] is not None}
        if len(sizes) > 1:
            raise ValueError(
                f"task column {j}: rows were scored on different numbers of examples {sorted(sizes)}; "
                "paired intervals need the same examples in every row"
            )
        out.append(bootstrap_counts(sizes.pop(), n_resamples, seed=(seed, j)) if sizes else None)
    return out


def _cl_kwargs(metric: str | MetricStats, cl_kwargs: dict) -> dict:
    return {"higher_is_better": metric_stats(metric).higher_is_better, **cl_kwargs}


def _numeric(v) -> bool:
    """A CL metric (a number or None) or a per-task list of them; not flags such as a bool."""
    one = lambda x: x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))  # noqa: E731
    return all(one(x) for x in v) if isinstance(v, list) else one(v)


def cl_intervals(
    metric: str | MetricStats,
    stats_matrix: Sequence[Sequence[np.ndarray | None]],
    counts: Sequence[np.ndarray | None] | None = None,
    *,
    level: float = LEVEL,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    **cl_kwargs,
) -> CLIntervals:
    """Cells and ``cl_metrics`` of one metric with paired bootstrap intervals.

    ``stats_matrix[i][j]``: per-example statistics ``[n_j, k]`` of task ``j+1`` after stage ``i``
    (row 0 = base; None where not evaluated). ``counts[j]``: task ``j``'s ``[B, n_j]`` resample
    counts, shared by every row (default: :func:`task_counts` with ``n_resamples`` and ``seed``).
    For each resample the value matrix is rebuilt and ``cl_metrics`` applied to it, so the
    intervals follow whatever formulas ``cl_metrics`` has; ``cl_kwargs`` go to it, and its
    ``higher_is_better`` (when it has one) defaults to the metric's direction.
    """
    if counts is None:
        counts = task_counts(stats_matrix, n_resamples, seed)
    kwargs = _cl_kwargs(metric, cl_kwargs)
    n_b = {np.shape(c)[0] for c in counts if c is not None}
    if len(n_b) > 1:
        raise ValueError(f"counts have different numbers of resamples {sorted(n_b)}")
    B = n_b.pop() if n_b else 0

    cells: list[list[float | None]] = []
    cell_iv: list[list[tuple[float, float] | None]] = []
    cell_samples: list[list[np.ndarray | None]] = []
    for i, row in enumerate(stats_matrix):
        cells.append([])
        cell_iv.append([])
        cell_samples.append([])
        for j, st in enumerate(row):
            if st is None:
                cells[i].append(None)
                cell_iv[i].append(None)
                cell_samples[i].append(None)
                continue
            if j >= len(counts) or counts[j] is None:
                raise ValueError(f"no resample counts for task column {j} (row {i} has statistics)")
            arr = _as_stats(metric, st)
            cells[i].append(value(metric, arr.sum(axis=0)))
            s = resample_values(metric, arr, counts[j])
            cell_samples[i].append(s)
            cell_iv[i].append(percentile_interval(s, level))

    point = cl_metrics(cells, **kwargs)
    # one list per cell, indexed by resample: Python floats, so the loop below does no numpy indexing
    lists = [[None if s is None else s.tolist() for s in row] for row in cell_samples]
    per_resample = []
    for b in range(B):
        rb = [[None if s is None or s[b] != s[b] else s[b] for s in row] for row in lists]  # NaN -> None
        per_resample.append(cl_metrics(rb, **kwargs))

    samples: dict = {}
    intervals: dict = {}
    for key, v in point.items():
        if key == "T" or not _numeric(v):
            continue
        if isinstance(v, list):
            samples[key] = [
                np.array([np.nan if r[key][t] is None else r[key][t] for r in per_resample], dtype=float)
                for t in range(len(v))
            ]
            intervals[key] = [percentile_interval(s, level) if B else None for s in samples[key]]
        else:
            samples[key] = np.array([np.nan if r[key] is None else r[key] for r in per_resample], dtype=float)
            intervals[key] = percentile_interval(samples[key], level) if B else None
    return CLIntervals(metric_stats(metric).name, cells, cell_iv, point, intervals, level, B, cell_samples, samples)


# ---- differences in words -------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """``a - b`` with its bootstrap interval; ``beyond_noise`` when the interval excludes 0."""

    difference: float
    low: float
    high: float
    level: float
    beyond_noise: bool
    text: str


def _fmt(x: float, digits: int) -> str:
    return f"{x:+.{digits}f}"


def describe_interval(
    name: str, point: float, interval: tuple[float, float] | None, *, level: float = LEVEL, digits: int = 2
) -> str:
    """One quantity that is itself a paired difference (forgetting, BWT, FWT) against 0, in words:
    ``"forgetting +3.20 (95% CI [+1.10, +5.00]): above 0"``, ``"... : within noise (the interval
    contains 0)"`` or, when every resample gives exactly 0, ``"...: exactly 0 on every resample"``."""
    pct = f"{round(100 * level)}%"
    if interval is None:
        return f"{name}: undefined"
    low, high = interval
    head = f"{name} {_fmt(point, digits)} ({pct} CI [{_fmt(low, digits)}, {_fmt(high, digits)}])"
    if low == 0.0 and high == 0.0 and point == 0.0:
        return f"{name} 0 on every resample: no change at all"
    if low > 0:
        return f"{head}: above 0"
    if high < 0:
        return f"{head}: below 0"
    return f"{head}: within noise (the interval contains 0)"


def describe_difference(
    a_point: float,
    b_point: float,
    a_samples: np.ndarray,
    b_samples: np.ndarray,
    *,
    paired: bool = True,
    a_name: str = "A",
    b_name: str = "B",
    level: float = LEVEL,
    digits: int = 2,
    seed: int = 0,
) -> Difference:
    """Whether ``a`` and ``b`` differ beyond noise, from their ``[B]`` bootstrap values.

    ``paired=True``: the samples come from the same resample counts over the same examples (two
    rows of one task, or two runs scored on the same examples with the same counts); the interval
    is that of ``a_b - b_b``. ``paired=False`` (runs on different examples): ``b``'s samples are
    shuffled with ``seed`` so the difference is of independent resamples. Undefined resamples
    (NaN) are skipped.
    """
    a = np.asarray(a_samples, dtype=float)
    b = np.asarray(b_samples, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"samples must be equal 1-d arrays; got {a.shape} and {b.shape}")
    if not paired:
        b = np.random.default_rng(seed).permutation(b)
    interval = percentile_interval(a - b, level)
    diff = a_point - b_point
    pct = f"{round(100 * level)}%"
    if interval is None:
        return Difference(diff, math.nan, math.nan, level, False, f"{a_name} vs {b_name}: undefined")
    low, high = interval
    ci = f"{pct} CI of the difference [{_fmt(low, digits)}, {_fmt(high, digits)}]"
    if low == 0.0 and high == 0.0 and diff == 0.0:
        text = f"{a_name} equals {b_name} on every resample"
        beyond = False
    elif low > 0 or high < 0:
        word = "higher" if low > 0 else "lower"
        text = f"{a_name} is {word} than {b_name} by {_fmt(diff, digits)} ({ci})"
        beyond = True
    else:
        text = f"{a_name} and {b_name} differ by {_fmt(diff, digits)}, within noise ({ci})"
        beyond = False
    return Difference(diff, low, high, level, beyond, text)


def format_interval(point: float | None, interval: tuple[float, float] | None, digits: int = 2) -> str:
    """``"5.49 [4.10, 6.80]"`` (point, then the interval), ``"5.49"`` without one, ``"-"`` for None."""
    if point is None:
        return "-"
    if interval is None:
        return f"{point:.{digits}f}"
    return f"{point:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


# ---- seeds ----------------------------------------------------------------------------------------


def mean_std_n(values: Sequence[float | None]) -> dict:
    """``{"mean", "std", "n"}`` over seeds: :func:`hybridcl.stats.mean_std` plus how many values were
    defined (None and NaN are skipped and not counted)."""
    n = sum(1 for v in values if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)))
    return {**mean_std(list(values)), "n": n}


# Student's t 0.975 quantiles by degrees of freedom (a table: scipy for a handful of quantiles is a large
# dependency); a df between two entries takes the smaller df's quantile, the wider interval.
T_975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    15: 2.131,
    20: 2.086,
    30: 2.042,
    60: 2.000,
    120: 1.980,
}


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The 95% Student t interval of the mean of ``values`` (seeds); None for fewer than two values."""
    if level != 0.95:
        raise ValueError(f"t_interval has the 0.975 quantiles only (level 0.95), not {level}")
    values = [float(v) for v in values]
    if len(values) < 2:
        return None
    df = len(values) - 1
    t = T_975[max(k for k in T_975 if k <= df)]
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / df)
    half = t * s / math.sqrt(len(values))
    return (m - half, m + half)


def format_mean_std(summary: dict, digits: int = 2) -> str:
    """``"5.49 ± 0.31 (n=3)"`` from :func:`mean_std_n`; ``"-"`` when no seed gave a value."""
    if summary.get("mean") is None:
        return "-"
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f} (n={summary['n']})"


def own_training_effect(result: CLIntervals) -> list[dict | None]:
    """Per task j: R[j][j] - R[0][j], what its own training changed against the base, with the paired
    interval (the same resampled examples in both rows); None where a cell is missing.

    ``[{"difference", "interval"}]`` in the metric's units (for a loss, negative = it fell)."""
    out = []
    for j in range(len(result.cells[0]) if result.cells else 0):
        i = j + 1
        if i >= len(result.cells) or result.cells[i][j] is None or result.cells[0][j] is None:
            out.append(None)
            continue
        samples = np.asarray(result.cell_samples[i][j]) - np.asarray(result.cell_samples[0][j])
        interval = percentile_interval(samples, result.level)
        out.append(
            {
                "difference": result.cells[i][j] - result.cells[0][j],
                "interval": None if interval is None else [interval[0], interval[1]],
            }
        )
    return out
