"""Task-agnostic inference: choose a prompt's task (and so its per-task components) without its id.

A router is fitted **as tasks arrive**, from statistics of each task's own training prompts only
(sums, counts and Gram matrices; no stored examples), and saved with that task's components
(``router.safetensors`` in the stage's checkpoint folder). Adding a task adds its statistics to
the earlier ones, so a router fitted task by task equals one fitted on every task at once, and a
resumed run, which loads the saved statistics, routes exactly as an uninterrupted one.

Methods (``routing.method`` routes; every method in ``routing.compare`` has its accuracy reported):

- ``feature_ridge`` (default; RanPAC's task-id predictor): features of the **frozen base** (the
  mean over the prompt's tokens of the last and the middle layer's hidden states, each scaled to
  unit length), a fixed random ReLU projection to ``routing.random_features`` dimensions, and a
  ridge regression onto the one-hot task, solved in closed form from the summed Gram matrix and
  per-task feature sums.
- ``mahalanobis`` (SimpleCIL/APER prototypes with a shared covariance): the same base features; the
  task whose mean is nearest in the Mahalanobis distance of the pooled within-task covariance.
- ``token_ngram``: multinomial naive Bayes over the prompt's token unigrams and bigrams (the base's
  own tokenizer, hashed into ``2**routing.ngram_hash_bits`` buckets): no forward pass at all.
- ``min_prompt_loss`` (the baseline): the task whose components give the prompt's tokens the
  lowest loss; one forward pass per task per prompt, and nothing to fit.

Cost per prompt: ``feature_ridge`` and ``mahalanobis`` share one forward pass of the frozen base
over the bare prompt (no generation, no components), ``token_ngram`` tokenisation only,
``min_prompt_loss`` one forward pass per task. The prompt is the bare source (the docstring, the
code, or the start of the function): the prompt *template* names the language, so it is left out.

Ties go to the earlier task.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

import torch

from hybridcl.config.experiment import RoutingConfig
from hybridcl.constants import LANGUAGE_NAMES, Kind
from hybridcl.data.batching import collate, pad_batch
from hybridcl.data.tasks import Example
from hybridcl.evaluation.generate import encode_texts
from hybridcl.records.results import Matrix
from hybridcl.training.loss import token_scores

METHODS = ("feature_ridge", "mahalanobis", "token_ngram", "min_prompt_loss")
STATS_FILE = "router.safetensors"


def routable_tasks(components) -> list[str]:
    """Tasks that own per-task parts (a routing choice exists only between these)."""
    return list(components.tasks) if components.strategy.routable else []


# -- what a router reads: the prompts, computed lazily and shared by every method -----------------


@dataclass
class Prompts:
    """A batch of bare prompts (source texts) and what the routers read of them, each computed once."""

    texts: Sequence[str]
    components: object  # a ComponentSet: its frozen base gives the features, its parts the losses
    tokenizer: object
    kind: Kind
    max_source_len: int = 512
    batch_size: int = 16
    _losses: dict[tuple[str, ...], torch.Tensor] = field(default_factory=dict, repr=False)

    @cached_property
    def token_ids(self) -> list[list[int]]:
        return encode_texts(self.tokenizer, self.texts, self.kind, self.max_source_len)

    @cached_property
    def features(self) -> torch.Tensor:
        """``[prompts, 2 * hidden]`` float64: frozen-base features (see the module docstring)."""
        return base_features(self.components, self.tokenizer, self.kind, self.token_ids, self.batch_size)

    def losses(self, tasks: Sequence[str]) -> torch.Tensor:
        """``[prompts, tasks]`` mean NLL per token (nats) of each prompt under each task's components."""
        key = tuple(tasks)
        if key not in self._losses:
            self._losses[key] = torch.tensor(
                prompt_losses(self.components, self.tokenizer, self.kind, self.token_ids, tasks, self.batch_size)
            ).reshape(len(self.texts), len(tasks))
        return self._losses[key]


@torch.no_grad()
def base_features(components, tokenizer, kind: Kind, token_ids: list[list[int]], batch_size: int) -> torch.Tensor:
    """Mean-pooled hidden states of the frozen base's last and middle layers, each scaled to unit length.

    The encoder's for seq2seq models, the decoder's for causal ones; components are off, so every task
    sees the same features and a task's statistics never change once computed."""
    model = components.model
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    out = []
    try:
        with components.base_only():
            for start in range(0, len(token_ids), batch_size):
                seqs = token_ids[start : start + batch_size]
                ids, mask = pad_batch(seqs, pad_id, device=device)
                # the body only: the output head's logits are not needed (a fifth of a small model's cost)
                net = components.base.get_encoder() if kind == "seq2seq" else components.base.base_model
                hidden = net(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
                weights = (mask / mask.sum(1, keepdim=True)).unsqueeze(-1).float()
                pooled = [(hidden[k].float() * weights).sum(1) for k in (len(hidden) // 2, -1)]
                out.append(torch.cat([torch.nn.functional.normalize(p, dim=1) for p in pooled], 1).double().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0, dtype=torch.float64)


@torch.no_grad()
def prompt_losses(
    components, tokenizer, kind: Kind, token_ids: list[list[int]], tasks: Sequence[str], batch_size: int
) -> list[list[float]]:
    """Mean NLL per token (nats) of each prompt under each task's components: ``[prompt][task]``.

    Causal models: the language-model loss of the prompt's tokens. Seq2seq models: the loss of
    reconstructing the prompt (the encoder reads it, the decoder is scored on reproducing it), which
    uses every component on the path. Leaves the components routed as they were."""
    model = components.model
    device = next(model.parameters()).device
    was_training, active = model.training, components.active
    model.eval()
    columns = []
    try:
        for task in tasks:
            components.route(task)
            column = []
            for start in range(0, len(token_ids), batch_size):
                features = [{"input_ids": s, "labels": s} for s in token_ids[start : start + batch_size]]
                batch = {k: v.to(device) for k, v in collate(features, tokenizer.pad_token_id, kind).items()}
                scores = token_scores(model, batch, kind)
                column.extend((scores.nll.sum(1) / scores.mask.sum(1).clamp(min=1)).tolist())
            columns.append(column)
    finally:
        model.train(was_training)
        if active is not None:
            components.route(active)
    return [list(row) for row in zip(*columns, strict=True)] if columns else [[] for _ in token_ids]


# -- the routers --------------------------------------------------------------------------------


class Router:
    """Fitted task by task from each task's own statistics; chooses a task per prompt.

    Subclasses give :meth:`statistics` (of one task's training prompts: tensors that add up over
    prompts) and :meth:`scores` (``[prompts, tasks]``, higher is better)."""

    method: ClassVar[str]

    def __init__(self, cfg: RoutingConfig):
        self.cfg = cfg
        self.tasks: list[str] = []
        # a task is one class, or one class per kind of request it was fitted on (routing.fit_on):
        # a task's code starts and its docstrings are apart in feature space, so each has its own
        self.classes: dict[str, list[str]] = {}
        self.stats: dict[str, dict[str, torch.Tensor]] = {}  # class -> its statistics

    def statistics(self, prompts: Prompts) -> dict[str, torch.Tensor]:
        return {}

    def add_task(self, task: str, stats: dict[str, torch.Tensor], kind: str | None = None) -> None:
        """Add (or replace) ``task``'s statistics (of one ``kind`` of request, where it has several);
        no other task's data is needed."""
        if task not in self.tasks:
            self.tasks.append(task)
            self.classes[task] = []
        key = task if kind is None else f"{task}@{kind}"
        if key not in self.classes[task]:
            self.classes[task].append(key)
        self.stats[key] = stats

    def scores(self, prompts: Prompts, tasks: Sequence[str]) -> torch.Tensor:
        """``[prompts, classes]``, higher is better, for the given classes."""
        raise NotImplementedError

    def choose(self, prompts: Prompts, tasks: Sequence[str] | None = None) -> list[str]:
        """The chosen task of each prompt among ``tasks`` (default: every task added so far)."""
        tasks = list(tasks if tasks is not None else self.tasks)
        if len(tasks) == 1 or not prompts.texts:
            return [tasks[0]] * len(prompts.texts) if tasks else []
        # a task never fitted (min_prompt_loss needs no statistics) is a class of its own
        keys = [k for t in tasks for k in self.classes.get(t, [t])]
        owner = [t for t in tasks for _ in self.classes.get(t, [t])]
        scores = self.scores(prompts, keys)
        # argmax keeps the first of equal maxima: ties go to the earlier task
        return [owner[k] for k in scores.argmax(1).tolist()]

    def _summed(self, name: str, tasks: Sequence[str]) -> torch.Tensor:
        return sum((self.stats[t][name] for t in tasks[1:]), self.stats[tasks[0]][name].clone())


class FeatureRidge(Router):
    """Random ReLU features of the frozen base's pooled states, ridge regression onto the one-hot task."""

    method = "feature_ridge"

    def __init__(self, cfg: RoutingConfig):
        super().__init__(cfg)
        self.projection: dict[int, torch.Tensor] = {}  # input width -> a fixed random matrix (routing.seed)

    def _features(self, prompts: Prompts) -> torch.Tensor:
        x = prompts.features
        width = x.shape[1]
        if width not in self.projection:
            generator = torch.Generator().manual_seed(self.cfg.seed)
            weights = torch.randn(width, self.cfg.random_features, generator=generator, dtype=torch.float64)
            self.projection[width] = weights / width**0.5
        return torch.relu(x @ self.projection[width])

    def statistics(self, prompts: Prompts) -> dict[str, torch.Tensor]:
        h = self._features(prompts)
        return {"gram": h.T @ h, "sum": h.sum(0), "count": torch.tensor(float(len(h)), dtype=torch.float64)}

    def scores(self, prompts: Prompts, tasks: Sequence[str]) -> torch.Tensor:
        gram = self._summed("gram", tasks)
        ridge = self.cfg.ridge * gram.diagonal().mean().clamp(min=1e-12)
        targets = torch.stack([self.stats[t]["sum"] for t in tasks], 1)  # H^T Y for the one-hot Y
        weights = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype), targets)
        return self._features(prompts) @ weights


class Mahalanobis(Router):
    """Nearest task mean under the pooled within-task covariance (shrunk towards its mean variance)."""

    method = "mahalanobis"

    def statistics(self, prompts: Prompts) -> dict[str, torch.Tensor]:
        x = prompts.features
        return {"gram": x.T @ x, "sum": x.sum(0), "count": torch.tensor(float(len(x)), dtype=torch.float64)}

    def scores(self, prompts: Prompts, tasks: Sequence[str]) -> torch.Tensor:
        means = torch.stack([self.stats[t]["sum"] / self.stats[t]["count"] for t in tasks])
        n = float(self._summed("count", tasks))
        scatter = self._summed("gram", tasks) - sum(
            self.stats[t]["count"] * torch.outer(m, m) for t, m in zip(tasks, means, strict=True)
        )
        cov = scatter / max(n - len(tasks), 1.0)
        shrink = self.cfg.shrinkage
        cov = (1 - shrink) * cov + shrink * cov.diagonal().mean() * torch.eye(len(cov), dtype=cov.dtype)
        precision = torch.linalg.inv(cov)
        diff = prompts.features[:, None, :] - means[None, :, :]  # [prompts, tasks, d]
        return -torch.einsum("ptd,de,pte->pt", diff, precision, diff)


class TokenNgram(Router):
    """Multinomial naive Bayes over hashed token unigrams and bigrams (Laplace smoothing)."""

    method = "token_ngram"

    def _counts(self, prompts: Prompts) -> torch.Tensor:
        buckets = 1 << self.cfg.ngram_hash_bits
        counts = torch.zeros(len(prompts.texts), buckets, dtype=torch.float64)
        for row, ids in enumerate(prompts.token_ids):
            ids_t = torch.tensor(ids, dtype=torch.long)
            # unigrams keep their id; a bigram (a, b) hashes to a * 1000003 + b (odd multiplier)
            grams = torch.cat([ids_t, ids_t[:-1] * 1_000_003 + ids_t[1:] + buckets])
            counts[row].index_add_(0, grams % buckets, torch.ones(len(grams), dtype=torch.float64))
        return counts

    def statistics(self, prompts: Prompts) -> dict[str, torch.Tensor]:
        return {"counts": self._counts(prompts).sum(0)}

    def scores(self, prompts: Prompts, tasks: Sequence[str]) -> torch.Tensor:
        counts = torch.stack([self.stats[t]["counts"] for t in tasks]) + self.cfg.ngram_smoothing
        log_probs = counts.log() - counts.sum(1, keepdim=True).log()
        return self._counts(prompts) @ log_probs.T


class MinPromptLoss(Router):
    """The baseline: the task whose components give the prompt the lowest loss (nothing to fit)."""

    method = "min_prompt_loss"

    def scores(self, prompts: Prompts, tasks: Sequence[str]) -> torch.Tensor:
        return -prompts.losses(tasks)


ROUTERS: dict[str, type[Router]] = {r.method: r for r in (FeatureRidge, Mahalanobis, TokenNgram, MinPromptLoss)}


class Routers:
    """The routers of a run: ``routing.method`` and every method in ``routing.compare``, fitted together."""

    def __init__(self, cfg: RoutingConfig):
        self.cfg = cfg
        self.by_method = {m: ROUTERS[m](cfg) for m in dict.fromkeys([cfg.method, *cfg.compare])}

    @property
    def main(self) -> Router:
        return self.by_method[self.cfg.method]

    def fit_task(self, task: str, prompts: Prompts | dict[str, Prompts]) -> dict[str, torch.Tensor]:
        """Add ``task`` from its training prompts, or from each kind of request made of them (one class
        per kind); returns its statistics, flat, for saving (``method/name``, or ``method@kind/name``)."""
        by_kind = prompts if isinstance(prompts, dict) else {"prompts": prompts}
        one = list(by_kind) == ["prompts"]  # as runs fitted before routing.fit_on: one class, as saved then
        flat = {}
        for method, router in self.by_method.items():
            if type(router).statistics is Router.statistics:  # nothing to fit (min_prompt_loss)
                router.add_task(task, {})
                continue
            for kind, kind_prompts in by_kind.items():
                stats = router.statistics(kind_prompts)
                router.add_task(task, stats, None if one else kind)
                prefix = method if one else f"{method}@{kind}"
                flat.update({f"{prefix}/{name}": value for name, value in stats.items()})
        return flat

    def load_task(self, task: str, flat: dict[str, torch.Tensor]) -> None:
        """Add ``task`` from statistics saved by :meth:`fit_task` (a method saved without any: none needed)."""
        for method, router in self.by_method.items():
            by_kind: dict[str | None, dict[str, torch.Tensor]] = {}
            for key, value in flat.items():
                head, _, name = key.partition("/")
                if head.partition("@")[0] == method:
                    by_kind.setdefault(head.partition("@")[2] or None, {})[name] = value
            if type(router).statistics is Router.statistics:
                router.add_task(task, {})
                continue
            if not by_kind:
                raise ValueError(
                    f"the saved router statistics of task {task!r} lack method {method!r}: they were fitted "
                    f"with another routing config; re-run the stage or drop {method} from routing.compare"
                )
            for kind, stats in by_kind.items():
                router.add_task(task, stats, kind)


def request_texts(example: Example, kind: str) -> list[str]:
    """What a client sends for the function of ``example``, as ``kind`` (``routing.fit_on``): ``prompts``
    the run's own source; ``code_start`` the first half of the function; ``docstring`` its summary;
    ``chat`` a request in words, with the language named and without. Empty where the example does
    not hold that text (a completion task's examples carry no summary)."""
    code = {"text-to-code": example.target, "code-to-text": example.source}.get(example.direction, example.target)
    summary = {"text-to-code": example.source, "code-to-text": example.target}.get(example.direction)
    if kind == "prompts":
        return [example.source]
    if kind == "code_start":
        return [code[: max(1, len(code) // 2)]]
    if summary is None or not summary.strip():
        return []
    if kind == "docstring":
        return [summary]
    task = summary[0].lower() + summary[1:]
    return [
        f"Write a {LANGUAGE_NAMES.get(example.language, example.language)} function that {task}",
        f"Write a function that {task}",
    ]


def fitting_texts(examples: Sequence[Example], kinds: Sequence[str]) -> list[str]:
    """Every text a task's router statistics are fitted on: each kind of ``kinds`` for every example."""
    return [text for kind in kinds for ex in examples for text in request_texts(ex, kind)]


def named_language(prompt: str) -> str | None:
    """The language a request names in words ("a JavaScript function", "in Go"), if exactly one."""
    found = {lang for lang, pattern in _NAMED.items() if pattern.search(prompt)}
    return found.pop() if len(found) == 1 else None


# a language named as a client names it: Go only capitalised and next to a code word ("go" is a verb)
_NAMED = {
    lang: re.compile(rf"\b{re.escape(name)}\b", 0 if lang == "go" else re.IGNORECASE)
    for lang, name in LANGUAGE_NAMES.items()
}
_NAMED["go"] = re.compile(r"\b(?:Go (?:function|code|program|method)|in Go\b|Golang\b)|\bgolang\b")


def split_language_tag(prompt: str, tasks: Sequence[str]) -> tuple[str | None, str]:
    """``("python", "Sum a and b.")`` for ``"[python] Sum a and b."`` when python is one of ``tasks``;
    ``(None, prompt)`` for an untagged prompt."""
    match = re.match(r"\s*\[([\w.-]+)\]\s*", prompt)
    if match:
        for name in (match.group(1), match.group(1).lower()):
            if name in tasks:
                return name, prompt[match.end() :]
    return None, prompt


def routing_accuracy(true_tasks: Sequence[str], chosen: Sequence[str]) -> float | None:
    """Percent (0-100) of prompts routed to their own task; None for no prompts."""
    if len(true_tasks) != len(chosen):
        raise ValueError(f"{len(true_tasks)} true tasks but {len(chosen)} choices")
    if not true_tasks:
        return None
    return 100.0 * sum(t == c for t, c in zip(true_tasks, chosen, strict=True)) / len(true_tasks)


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion, in percent.

    A routing accuracy is a binomial proportion, often at or near 100%, where the percentile bootstrap
    collapses to a point ([100, 100]) and the normal interval leaves [0, 100]; Wilson's holds there."""
    if n < 1:
        raise ValueError("an interval needs at least one prompt")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # rounded before clipping: at p = 1 the upper bound is exactly 1 (float sums give 0.9999999999999999)
    return 100 * max(round(centre - half, 12), 0.0), 100 * min(round(centre + half, 12), 1.0)


def accuracy_summary(chosen: dict[str, list[str]], tasks: Sequence[str]) -> dict:
    """Accuracy (%) with its Wilson interval, per-task accuracy and the confusion counts of the choices
    ``chosen[true task] = [chosen task per prompt]``."""
    true = [t for t, c in chosen.items() for _ in c]
    flat = [c for cs in chosen.values() for c in cs]
    correct = sum(t == c for t, c in zip(true, flat, strict=True))
    return {
        "accuracy": routing_accuracy(true, flat),
        "accuracy_interval": list(wilson_interval(correct, len(true))) if true else None,
        "per_task_accuracy": {t: routing_accuracy([t] * len(c), c) for t, c in chosen.items()},
        "confusion": {t: {u: c.count(u) for u in tasks} for t, c in chosen.items()},
        "n": len(true),
    }


def routed_results(matrix: Matrix, routed_rows: dict[int, dict], intervals: dict | None = None) -> dict | None:
    """A seed's ``routing`` results: the last routed row's accuracy and confusion (of ``routing.method``),
    every compared method's accuracy, and the whole matrix under routing with its CL metrics and their
    ``intervals`` (as results.json's ``intervals``: metric -> cells and CL metrics).

    Rows that were not routed (the base row, and rows with a single task's parts, where there is
    nothing to choose) are the same as with the task id.
    """
    if not routed_rows:
        return None
    last = routed_rows[max(routed_rows)]
    routed = matrix.with_rows({i: r["row"] for i, r in routed_rows.items()})
    keys = ("method", "tasks", "accuracy", "accuracy_interval", "per_task_accuracy", "confusion", "n", "methods")
    return {
        **{k: last.get(k) for k in keys},
        "accuracy_per_row": {str(i): routed_rows[i]["accuracy"] for i in sorted(routed_rows)},
        "matrix": routed.values,
        "matrix_last_row": {m: rows[-1] for m, rows in routed.values.items()},
        "cl_metrics": routed.cl_metrics(),
        "intervals": intervals or {},
    }
