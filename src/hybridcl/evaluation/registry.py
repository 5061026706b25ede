"""The metric registry: every metric hybridcl reports, declared once.

A :class:`Metric` says its name, its direction (higher or lower is better), what it measures, how
its per-example statistics aggregate (:class:`~hybridcl.stats.example_stats.MetricStats`, None
for CodeBLEU, which has none), and, for text metrics, when it applies to a batch of outputs, how
to score the batch and how to build the batch's per-example rows. Scoring (:func:`score`), the
intervals (:mod:`hybridcl.stats.intervals`), the CL metrics' direction and the report all read it from
here. Adding a metric is one :func:`register_metric` call (and a test that its rows sum to its
score).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hybridcl.constants import CODE_DIRECTIONS, DIRECTIONS
from hybridcl.evaluation import metrics as text
from hybridcl.stats.example_stats import (
    MetricStats,
    corpus_bleu_example_stats,
    corpus_bleu_metric,
    mean_aggregate,
    mean_metric,
    mean_stats,
    percent_aggregate,
)


@dataclass(frozen=True)
class TextBatch:
    """One task's outputs and references, with what the text metrics need to score them.

    ``syntax_texts`` (one per prediction) is the code the syntax checks read instead of the
    predictions: for the completion of a function's rest, the function's start followed by the
    prediction. ``reference_metrics`` adds the reference experiment's metrics (``bleu_reference``,
    which needs ``tokenize``, the model tokenizer's ``tokenize``, and ``syntax_pass_reference``).
    """

    predictions: Sequence[str]
    references: Sequence[str]
    language: str
    direction: str
    reference_metrics: bool = False
    tokenize: Callable[[str], list[str]] | None = None
    syntax_texts: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction {self.direction!r}: expected one of {DIRECTIONS}")
        text.check_pair(self.predictions, self.references)
        text.check_pair(self.code, self.predictions)
        if self.reference_metrics and self.tokenize is None:
            raise ValueError(
                "reference_metrics needs tokenize= (the model tokenizer's tokenize): bleu_reference counts its tokens"
            )

    @property
    def code(self) -> Sequence[str]:
        """What the syntax checks read."""
        return self.syntax_texts if self.syntax_texts is not None else self.predictions

    @property
    def is_code(self) -> bool:
        return self.direction in CODE_DIRECTIONS

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.predictions, self.references, strict=True))


Applies = Callable[[TextBatch], bool]
Scorer = Callable[[TextBatch], float | None]
RowBuilder = Callable[[TextBatch], np.ndarray | None]


@dataclass(frozen=True)
class Metric:
    """One metric: name, direction, description, per-example statistics and (text metrics) scoring.

    ``stats`` is None for a metric with no per-example statistics (no interval). ``applies``,
    ``score`` and ``rows`` are None for metrics not scored from text (``loss``, ``token_accuracy``:
    from the model; ``routing_accuracy``: from the router).
    """

    name: str
    higher_is_better: bool
    description: str  # what the report says it is
    unit: str  # the report's axis label
    stats: MetricStats | None
    applies: Applies | None = None
    score: Scorer | None = None
    rows: RowBuilder | None = None


_METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric | MetricStats, description: str = "") -> None:
    """Declare a metric (a :class:`Metric`, or a bare :class:`MetricStats` for a metric whose rows
    the caller builds, e.g. pass@k over problems)."""
    if isinstance(metric, MetricStats):
        metric = Metric(metric.name, metric.higher_is_better, description or metric.name, metric.name, metric)
    _METRICS[metric.name] = metric


def get_metric(name: str) -> Metric:
    """The declared metric ``name``; ValueError naming the known ones otherwise."""
    try:
        return _METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(_METRICS)}") from None


def all_metrics() -> list[Metric]:
    """Every declared metric, in declaration order (the order of a cell's keys and of the report)."""
    return list(_METRICS.values())


def higher_is_better(name: str) -> bool:
    """The direction of ``name``; a value that is not a declared metric (``cut_share``) counts as higher."""
    metric = _METRICS.get(name)
    return metric.higher_is_better if metric is not None else True


def metric_stats(metric: str | MetricStats) -> MetricStats:
    """The :class:`MetricStats` of ``metric`` (a declared name, or a spec, returned as is);
    ValueError naming the metrics that have statistics otherwise."""
    if isinstance(metric, MetricStats):
        return metric
    declared = _METRICS.get(metric)
    if declared is None or declared.stats is None:
        known = sorted(m.name for m in _METRICS.values() if m.stats is not None)
        raise ValueError(
            f"no per-example statistics for metric {metric!r}; known: {known} (codebleu has none: see "
            "hybridcl.evaluation.registry)"
        )
    return declared.stats


def has_interval(metric: str) -> bool:
    """Whether ``metric`` decomposes over examples, i.e. can carry a bootstrap interval."""
    declared = _METRICS.get(metric)
    return declared is not None and declared.stats is not None


def value(metric: str | MetricStats, summed_stats: Sequence[float] | np.ndarray) -> float | None:
    """The metric (its own units: BLEU 0-100, loss in nats per token) from statistics summed over
    examples; None where undefined (no tokens)."""
    spec = metric_stats(metric)
    summed = np.asarray(summed_stats, dtype=float)
    if summed.shape != (len(spec.columns),):
        raise ValueError(f"{spec.name}: summed statistics have shape {summed.shape}; expected ({len(spec.columns)},)")
    v = float(spec.aggregate(summed))
    return None if math.isnan(v) else v


# ---- scoring a batch of outputs ---------------------------------------------------------------------


def text_metrics(batch: TextBatch) -> list[Metric]:
    """The text metrics that apply to ``batch``, in declaration order."""
    return [m for m in _METRICS.values() if m.applies is not None and m.applies(batch)]


def score(predictions: Sequence[str], references: Sequence[str], **context) -> dict[str, float | None]:
    """Every text metric that applies (0-100 each, None where undefined), each scored by its own
    function (corpus BLEU over the corpus, not from rows). ``context``: the other
    :class:`TextBatch` fields (``language``, ``direction``, ``reference_metrics``, ``tokenize``,
    ``syntax_texts``).
    """
    batch = _batch(predictions, references, context)
    return {m.name: m.score(batch) for m in text_metrics(batch) if m.score is not None}


def score_stats(predictions: Sequence[str], references: Sequence[str], **context) -> dict[str, np.ndarray | None]:
    """Per-example rows ``[n_examples, k]`` of every text metric :func:`score` returns (same arguments);
    None for a metric without rows (CodeBLEU) or undefined here (no grammar for ``syntax_pass``)."""
    batch = _batch(predictions, references, context)
    return {m.name: m.rows(batch) if m.rows is not None else None for m in text_metrics(batch)}


def score_with_stats(
    predictions: Sequence[str], references: Sequence[str], **context
) -> tuple[dict[str, float | None], dict[str, np.ndarray | None]]:
    """:func:`score` and :func:`score_stats` of the same predictions, each metric computed once: a score
    is :func:`value` of its summed rows (equal to :func:`score`'s within 1e-9); a metric without rows
    (CodeBLEU) is scored by its own function."""
    batch = _batch(predictions, references, context)
    scores: dict[str, float | None] = {}
    stats: dict[str, np.ndarray | None] = {}
    for m in text_metrics(batch):
        rows = m.rows(batch) if m.rows is not None else None
        stats[m.name] = rows
        if rows is not None:
            scores[m.name] = value(m.name, rows.sum(axis=0))
        else:
            scores[m.name] = m.score(batch) if m.score is not None and m.stats is None else None
    return scores, stats


def example_stats(metric: str, predictions: Sequence[str], references: Sequence[str], **context) -> np.ndarray | None:
    """Per-example rows of one text metric (``context`` as for :func:`score`; ``language`` and
    ``direction`` default to ``python`` / ``text-to-code``, which every text metric accepts)."""
    declared = get_metric(metric)
    if declared.rows is None:
        if declared.stats is None:
            return None
        raise ValueError(
            f"metric {metric!r} has no text path here: build its rows with ratio_stats (loss, token_accuracy) "
            "or corpus_bleu_example_stats (a corpus BLEU made by corpus_bleu_metric)"
        )
    context.setdefault("language", "python")
    context.setdefault("direction", "text-to-code")
    return declared.rows(_batch(predictions, references, context))


def _batch(predictions: Sequence[str], references: Sequence[str], context: dict) -> TextBatch:
    return TextBatch(predictions, references, **context)


# ---- the declarations ------------------------------------------------------------------------------


def _always(batch: TextBatch) -> bool:
    return True


def _code(batch: TextBatch) -> bool:
    return batch.is_code


def _python_code(batch: TextBatch) -> bool:
    from hybridcl.evaluation import syntax

    return batch.is_code and syntax.canonical_language(batch.language) == "python"


def _reference(batch: TextBatch) -> bool:
    return batch.reference_metrics


def _reference_code(batch: TextBatch) -> bool:
    return batch.reference_metrics and batch.is_code


def _percent_flags(flags: Sequence[bool]) -> np.ndarray:
    return mean_stats([100.0 if f else 0.0 for f in flags])


def _syntax_language(batch: TextBatch) -> str | None:
    """The tree-sitter grammar of ``batch.language``, None when it is not installed."""
    from hybridcl.evaluation import syntax

    language = syntax.canonical_language(batch.language)
    return language if language in syntax.supported_languages() else None


def _syntax_pass_score(batch: TextBatch) -> float | None:
    from hybridcl.evaluation import syntax

    language = _syntax_language(batch)
    return None if language is None else syntax.syntax_pass_rate(batch.code, language)


def _syntax_pass_rows(batch: TextBatch) -> np.ndarray | None:
    from hybridcl.evaluation import syntax

    language = _syntax_language(batch)
    return None if language is None else _percent_flags([syntax.parses(p, language) for p in batch.code])


def _syntax_pass_reference_rows(batch: TextBatch) -> np.ndarray:
    from hybridcl.evaluation import syntax

    code = zip(batch.code, batch.references, strict=True)
    return _percent_flags([syntax.passes_seed(p, r, batch.language) for p, r in code])


def _bleu_sacre_rows(batch: TextBatch) -> np.ndarray:
    from sacrebleu.metrics.bleu import BLEU

    # effective_order only silences sacrebleu's sentence-level warning: it changes no count
    bleu = BLEU(effective_order=True)
    rows = []
    for p, r in batch.pairs:
        s = bleu.sentence_score(p, [r])
        rows.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
    return np.array(rows, dtype=float)


def _sacrebleu_score(correct: list[int], total: list[int], hyp_len: int, ref_len: int) -> float:
    from sacrebleu.metrics.bleu import BLEU

    # sacrebleu.corpus_bleu's defaults: exp smoothing, no effective order
    return float(BLEU.compute_bleu(correct, total, hyp_len, ref_len, smooth_method="exp").score)


def _tokenize(batch: TextBatch) -> Callable[[str], list[str]]:
    if batch.tokenize is None:
        raise ValueError("bleu_reference needs tokenize= (the model tokenizer's tokenize)")
    return batch.tokenize


def _declare_text_metrics() -> None:
    """Register the text metrics. One long table on purpose: each entry declares one metric whole
    (name, direction, description, unit, formula, statistics), and this is the one place they are listed."""
    from hybridcl.evaluation import syntax

    for metric in (
        Metric(
            "bleu_codexglue_code_to_text",
            True,
            "CodeXGLUE's code-to-text BLEU-4: smoothed sentence BLEU, lower-cased, averaged over examples",
            "BLEU (0-100)",
            mean_metric("bleu_codexglue_code_to_text"),
            _always,
            lambda b: text.bleu_codexglue_code_to_text(b.predictions, b.references),
            lambda b: mean_stats([text.bleu_codexglue_code_to_text([p], [r]) for p, r in b.pairs]),
        ),
        Metric(
            "bleu_codexglue_text_to_code",
            True,
            "CodeXGLUE's text-to-code BLEU-4: one corpus BLEU over whitespace tokens, case kept, add-one smoothed",
            "BLEU (0-100)",
            corpus_bleu_metric("bleu_codexglue_text_to_code", text.codexglue_text_to_code_bleu_from_counts),
            _always,
            lambda b: text.bleu_codexglue_text_to_code(b.predictions, b.references),
            lambda b: np.array([corpus_bleu_example_stats(p.split(), r.split()) for p, r in b.pairs]).reshape(
                len(b.pairs), -1
            ),
        ),
        Metric(
            "bleu_sacre",
            True,
            "sacreBLEU corpus BLEU",
            "BLEU (0-100)",
            corpus_bleu_metric("bleu_sacre", _sacrebleu_score),
            _always,
            lambda b: text.bleu_sacre(b.predictions, b.references),
            _bleu_sacre_rows,
        ),
        Metric(
            "codebleu",
            True,
            "CodeBLEU",
            "CodeBLEU (0-100)",
            None,
            _always,
            lambda b: text.codebleu(b.predictions, b.references, b.language) if b.is_code else None,
        ),
        Metric(
            "exact_match",
            True,
            "exact match after whitespace normalisation",
            "% of examples",
            mean_metric("exact_match"),
            _always,
            lambda b: text.exact_match(b.predictions, b.references),
            lambda b: mean_stats([text.exact_match([p], [r]) for p, r in b.pairs]),
        ),
        Metric(
            "syntax_pass",
            True,
            "outputs that parse (tree-sitter)",
            "% of outputs",
            mean_metric("syntax_pass"),
            _code,
            _syntax_pass_score,
            _syntax_pass_rows,
        ),
        Metric(
            "syntax_pass_ast",
            True,
            "Python outputs that parse with `ast`",
            "% of outputs",
            mean_metric("syntax_pass_ast"),
            _python_code,
            lambda b: syntax.syntax_pass_rate_ast(b.code),
            lambda b: _percent_flags([syntax.parses_ast(p) for p in b.code]),
        ),
        Metric(
            "syntax_agreement",
            True,
            "outputs on which tree-sitter and `ast` agree",
            "% of outputs",
            mean_metric("syntax_agreement"),
            _python_code,
            lambda b: syntax.ast_agreement(b.code),
            lambda b: _percent_flags([syntax.parses(p, "python") == syntax.parses_ast(p) for p in b.code]),
        ),
        Metric(
            "bleu_reference",
            True,
            "the seed's BLEU: nltk sentence BLEU-4, method1 smoothing, on the model tokenizer's tokens, case kept, "
            "averaged over examples (eval.reference_metrics)",
            "BLEU (0-100)",
            mean_metric("bleu_reference"),
            _reference,
            lambda b: text.bleu_reference(b.predictions, b.references, _tokenize(b)),
            lambda b: mean_stats(text.bleu_reference_scores(b.predictions, b.references, _tokenize(b))),
        ),
        Metric(
            "syntax_pass_reference",
            True,
            "the seed's pass check: Python compile(), JavaScript `{` and `}` present, routed by keywords of "
            "the reference (eval.reference_metrics; not a parse)",
            "% of outputs",
            mean_metric("syntax_pass_reference"),
            _reference_code,
            lambda b: syntax.syntax_pass_rate_seed(b.code, b.references, b.language),
            _syntax_pass_reference_rows,
        ),
    ):
        register_metric(metric)


register_metric(
    Metric(
        "loss",
        False,
        "teacher-forced loss: mean negative log-likelihood per target token on every evaluation example "
        "(lower is better)",
        "nats per token",
        MetricStats("loss", ("nll_sum", "n_tokens"), mean_aggregate, higher_is_better=False),
    )
)
register_metric(
    Metric(
        "token_accuracy",
        True,
        "target tokens the greedy prediction gets right, teacher-forced",
        "% of target tokens",
        MetricStats("token_accuracy", ("correct_tokens", "n_tokens"), percent_aggregate),
    )
)
_declare_text_metrics()
register_metric(
    Metric(
        "routing_accuracy",
        True,
        "prompts the router sends to their own task",
        "% of prompts",
        mean_metric("routing_accuracy"),
    )
)
