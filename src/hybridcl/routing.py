"""Task-agnostic inference: choose a task's components for a prompt without being told the task.

Rule (``min_prompt_loss``): run the prompt's source text through every task's components and pick
the task whose components model it best, i.e. the lowest mean negative log-likelihood per token
(nats):

- causal models: the language-model loss of the source tokens (the docstring for text-to-code,
  the code for code-to-text). The prompt *template* is left out on purpose: it names the
  language ("Python function."), so scoring it would leak the task id.
- seq2seq models: the loss of reconstructing the source: the encoder reads the source and the
  decoder is scored on reproducing it token by token (teacher forcing). It is the closest
  seq2seq analogue of a prompt's LM loss that uses every component on the path (encoder LoRA,
  the extra encoder block, decoder LoRA), and it needs no generated text.

Each prompt costs one forward pass per task (no generation), so routing a validation set costs a
fraction of evaluating it. Ties go to the earlier task.

Why it matters: with a task id, per-task components cannot forget (training a later task never
touches an earlier task's parts), so any forgetting a per-task strategy shows must come from
somewhere else; routing without a task id is the usual suspect, and
:class:`hybridcl.evaluator.MatrixEvaluator` measures it (routing accuracy and the matrix under
routing, row by row).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from hybridcl.constants import Kind
from hybridcl.data.batching import collate
from hybridcl.evaluate.generate import encode_texts
from hybridcl.loss import token_scores
from hybridcl.results import Matrix

METHOD = "min_prompt_loss"


def routable_tasks(components) -> list[str]:
    """Tasks that own per-task parts (a routing choice exists only between these)."""
    return list(components.tasks) if components.strategy.routable else []


@torch.no_grad()
def _losses_one_task(model, pad_id: int, kind: Kind, encoded: list[list[int]], batch_size: int) -> list[float]:
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(encoded), batch_size):
        # the source is its own target: causal, its LM loss; seq2seq, the loss of reconstructing it
        features = [{"input_ids": seq, "labels": seq} for seq in encoded[start : start + batch_size]]
        batch = {k: v.to(device) for k, v in collate(features, pad_id, kind).items()}
        scores = token_scores(model, batch, kind)
        out.extend((scores.nll.sum(1) / scores.mask.sum(1).clamp(min=1)).tolist())
    return out


def prompt_losses(
    components,
    tokenizer,
    kind: Kind,
    sources: Sequence[str],
    tasks: Sequence[str],
    *,
    max_source_len: int = 512,
    batch_size: int = 16,
) -> list[list[float]]:
    """Mean NLL per token (nats) of each source under each task's components: ``[prompt][task]``.

    Leaves the components routed as they were.
    """
    encoded = encode_texts(tokenizer, sources, kind, max_source_len)
    model = components.model
    was_training, active = model.training, components.active
    model.eval()
    try:
        columns = []
        for task in tasks:
            components.route(task)
            columns.append(_losses_one_task(model, tokenizer.pad_token_id, kind, encoded, batch_size))
    finally:
        model.train(was_training)
        if active is not None:
            components.route(active)
    return [list(row) for row in zip(*columns, strict=True)] if columns else [[] for _ in sources]


def split_language_tag(prompt: str, tasks: Sequence[str]) -> tuple[str | None, str]:
    """``("python", "Sum a and b.")`` for ``"[python] Sum a and b."`` when python is one of ``tasks``;
    ``(None, prompt)`` for an untagged prompt."""
    match = re.match(r"\s*\[([A-Za-z]+)\]\s*", prompt)
    if match and match.group(1).lower() in tasks:
        return match.group(1).lower(), prompt[match.end() :]
    return None, prompt


def choose(losses: Sequence[Sequence[float]], tasks: Sequence[str]) -> list[str]:
    """For each row of ``losses`` (one loss per task), the task with the lowest loss (ties: earlier task)."""
    return [tasks[min(range(len(row)), key=lambda k: (row[k], k))] for row in losses]


def route(
    components,
    tokenizer,
    kind: Kind,
    sources: Sequence[str],
    *,
    tasks: Sequence[str] | None = None,
    max_source_len: int = 512,
    batch_size: int = 16,
) -> list[str]:
    """The task chosen for each source text by :data:`METHOD` (see the module docstring)."""
    tasks = list(tasks) if tasks is not None else routable_tasks(components) or list(components.tasks)
    if len(tasks) == 1:
        return [tasks[0]] * len(sources)
    losses = prompt_losses(
        components, tokenizer, kind, sources, tasks, max_source_len=max_source_len, batch_size=batch_size
    )
    return choose(losses, tasks)


def routing_accuracy(true_tasks: Sequence[str], chosen: Sequence[str]) -> float | None:
    """Percent (0-100) of prompts routed to their own task; None for no prompts."""
    if len(true_tasks) != len(chosen):
        raise ValueError(f"{len(true_tasks)} true tasks but {len(chosen)} choices")
    if not true_tasks:
        return None
    return 100.0 * sum(t == c for t, c in zip(true_tasks, chosen, strict=True)) / len(true_tasks)


def routed_results(matrix: Matrix, routed_rows: dict[int, dict]) -> dict | None:
    """A seed's ``routing`` results: the last routed row's accuracy and confusion, and the whole
    matrix under routing with its CL metrics.

    Rows that were not routed (the base row, and rows with a single task's parts, where there is
    nothing to choose) are the same as with the task id.
    """
    if not routed_rows:
        return None
    last = routed_rows[max(routed_rows)]
    routed = matrix.with_rows({i: r["row"] for i, r in routed_rows.items()})
    return {
        **{
            k: last.get(k)
            for k in ("method", "tasks", "accuracy", "accuracy_interval", "per_task_accuracy", "confusion", "n")
        },
        "accuracy_per_row": {str(i): routed_rows[i]["accuracy"] for i in sorted(routed_rows)},
        "matrix": routed.values,
        "matrix_last_row": {m: rows[-1] for m, rows in routed.values.items()},
        "cl_metrics": routed.cl_metrics(),
    }
