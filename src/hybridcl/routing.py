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
somewhere else; routing without a task id is the usual suspect, and :func:`evaluate_routing`
measures it (routing accuracy and the matrix under routing, row by row).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

METHOD = "min_prompt_loss"


def routable_tasks(components) -> list[str]:
    """Tasks that own per-task parts (a routing choice exists only between these)."""
    strategy = components.strategy
    if "per_task" not in (strategy.lora, strategy.full_layer):
        return []
    return list(components.tasks)


@torch.no_grad()
def _losses_one_task(model, tokenizer, kind: str, encoded: list[list[int]], batch_size: int) -> list[float]:
    from hybridcl.evaluate.generate import _batch_tensors, _pad_id

    device = next(model.parameters()).device
    pad = _pad_id(tokenizer)
    out: list[float] = []
    for start in range(0, len(encoded), batch_size):
        seqs = encoded[start:start + batch_size]
        ids, mask = _batch_tensors(seqs, pad, left=False, device=device)
        if kind == "causal":
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            targets, weight = ids[:, 1:], mask[:, 1:]
        else:  # decoder inputs from the labels, as training builds them; no labels: the model computes no loss
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            decoder_ids = base.prepare_decoder_input_ids_from_labels(ids.masked_fill(mask == 0, -100))
            logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
            targets, weight = ids, mask
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
        per_seq = (nll * weight).sum(1) / weight.sum(1).clamp(min=1)
        out.extend(per_seq.tolist())
    return out


def prompt_losses(components, tokenizer, kind: str, sources: Sequence[str], tasks: Sequence[str], *,
                  max_source_len: int = 512, batch_size: int = 16) -> list[list[float]]:
    """Mean NLL per token (nats) of each source under each task's components: ``[prompt][task]``.

    Leaves the components routed as they were.
    """
    from hybridcl.evaluate.generate import _encode

    encoded = _encode(tokenizer, sources, kind, max_source_len)
    model = components.model
    was_training, active = model.training, components.active
    model.eval()
    try:
        columns = []
        for task in tasks:
            components.route(task)
            columns.append(_losses_one_task(model, tokenizer, kind, encoded, batch_size))
    finally:
        model.train(was_training)
        if active is not None:
            components.route(active)
    return [list(row) for row in zip(*columns)] if columns else [[] for _ in sources]


def choose(losses: Sequence[Sequence[float]], tasks: Sequence[str]) -> list[str]:
    """For each row of ``losses`` (one loss per task), the task with the lowest loss (ties: earlier task)."""
    return [tasks[min(range(len(row)), key=lambda k: (row[k], k))] for row in losses]


def route(components, tokenizer, kind: str, sources: Sequence[str], *, tasks: Sequence[str] | None = None,
          max_source_len: int = 512, batch_size: int = 16) -> list[str]:
    """The task chosen for each source text by :data:`METHOD` (see the module docstring)."""
    tasks = list(tasks) if tasks is not None else routable_tasks(components) or list(components.tasks)
    if len(tasks) == 1:
        return [tasks[0]] * len(sources)
    losses = prompt_losses(components, tokenizer, kind, sources, tasks, max_source_len=max_source_len,
                           batch_size=batch_size)
    return choose(losses, tasks)


def routing_accuracy(true_tasks: Sequence[str], chosen: Sequence[str]) -> float | None:
    """Percent (0-100) of prompts routed to their own task; None for no prompts."""
    if len(true_tasks) != len(chosen):
        raise ValueError(f"{len(true_tasks)} true tasks but {len(chosen)} choices")
    if not true_tasks:
        return None
    return 100.0 * sum(t == c for t, c in zip(true_tasks, chosen)) / len(true_tasks)


def evaluate_routing(config, base, components, data, seed_dir: Path, *, row: int, progress: bool = False) -> dict | None:
    """Route every task's validation prompts without the task id and score matrix row ``row``.

    Call it right after row ``row`` was evaluated with the task id, with the components as they
    are then. Returns ``None`` when fewer than two tasks have per-task parts (nothing to choose:
    the row is the same as with the task id). Otherwise ``{"method", "tasks", "accuracy"
    (percent), "per_task_accuracy", "confusion" ({true: {chosen: count}}), "n", "row" ({metric:
    [score per task]})}``.

    Only prompts routed to another task are generated again (with that task's parts and its
    language's prompt template); correctly routed prompts keep the prediction already made with
    the task id (``predictions/row{row}-{task}.jsonl``), so the extra cost is one forward pass per
    prompt and task plus the misrouted prompts' generation.
    """
    from hybridcl.data.tasks import format_prompt
    from hybridcl.evaluate.generate import generate
    from hybridcl.evaluate.metrics import score
    from hybridcl.evaluate.postprocess import extract_code
    from hybridcl.io import write_text

    tasks = [t for t in routable_tasks(components) if t in config.tasks]
    if len(tasks) < 2:
        return None
    cfg = config.eval
    text_to_code = config.data.direction == "text-to-code"
    active = components.active
    per_task_acc, confusion, scores_row = {}, {}, {}
    all_true, all_chosen = [], []
    try:
        for task in config.tasks:
            examples = data[task].val[: cfg.max_examples]
            chosen = route(components, base.tokenizer, base.kind, [ex.source for ex in examples], tasks=tasks,
                           max_source_len=config.data.max_source_len, batch_size=cfg.batch_size)
            all_true += [task] * len(examples)
            all_chosen += chosen
            per_task_acc[task] = routing_accuracy([task] * len(examples), chosen)
            confusion[task] = {t: sum(c == t for c in chosen) for t in tasks}
            task_id_file = seed_dir / "predictions" / f"row{row}-{task}.jsonl"
            predictions = [json.loads(line)["prediction"] for line in task_id_file.read_text().splitlines() if line]
            for other in tasks:
                idx = [k for k, c in enumerate(chosen) if c == other and other != task]
                if not idx:
                    continue
                components.route(other)
                prompts = [format_prompt(examples[k].source, other, config.data.direction, base.kind) for k in idx]
                texts = generate(components.model, base.tokenizer, prompts, kind=base.kind,
                                 max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                 num_beams=cfg.num_beams, do_sample=cfg.do_sample, temperature=cfg.temperature,
                                 top_p=cfg.top_p, max_source_len=config.data.max_source_len, progress=progress,
                                 desc=f"row {row} routed {task} -> {other}")
                for k, text in zip(idx, texts):
                    predictions[k] = extract_code(text) if text_to_code else text
            scores_row[task] = score(predictions, [ex.target for ex in examples], language=task,
                                     direction=config.data.direction)
            lines = [json.dumps({"id": ex.id, "routed_to": c, "prediction": p, "reference": ex.target})
                     for ex, c, p in zip(examples, chosen, predictions)]
            write_text(seed_dir / "predictions" / f"routed-row{row}-{task}.jsonl", "\n".join(lines) + "\n")
    finally:
        if active is not None:
            components.route(active)
    return {
        "method": METHOD,
        "tasks": tasks,
        "accuracy": routing_accuracy(all_true, all_chosen),
        "per_task_accuracy": per_task_acc,
        "confusion": confusion,
        "n": len(all_true),
        # the same layout as a row of results["matrix"]: metric -> one score per task (None where undefined)
        "row": {m: [scores_row[t].get(m) for t in config.tasks]
                for m in dict.fromkeys(m for scores in scores_row.values() for m in scores)},
    }


def routed_results(task_id_matrix: dict[str, list[list]], routed_rows: dict[int, dict]) -> dict | None:
    """A seed's ``routing`` results: the last routed row's accuracy and confusion, and the whole
    matrix under routing with its CL metrics.

    Rows that were not routed (the base row, and rows with a single task's parts, where there is
    nothing to choose) are the same as with the task id.
    """
    from hybridcl.cl_metrics import cl_metrics

    if not routed_rows:
        return None
    last = routed_rows[max(routed_rows)]
    n_rows = len(next(iter(task_id_matrix.values())))
    matrix = {m: [routed_rows[i]["row"].get(m, rows[i]) if i in routed_rows else rows[i] for i in range(n_rows)]
              for m, rows in task_id_matrix.items()}
    return {
        **{k: last[k] for k in ("method", "tasks", "accuracy", "per_task_accuracy", "confusion", "n")},
        "accuracy_per_row": {str(i): routed_rows[i]["accuracy"] for i in sorted(routed_rows)},
        "matrix": matrix,
        "matrix_last_row": {m: rows[-1] for m, rows in matrix.items()},
        "cl_metrics": {m: cl_metrics(rows) for m, rows in matrix.items()},
    }


def aggregate_routing(seed_results: list[dict]) -> dict | None:
    """Mean and standard deviation over seeds of the routing results (None if no seed has any)."""
    from hybridcl.stats import mean_std, mean_std_nested

    runs = [r.get("routing") for r in seed_results]
    if not runs or any(r is None for r in runs):
        return None
    first = runs[0]
    return {
        "method": first["method"],
        "tasks": first["tasks"],
        "n": first["n"],
        "accuracy": mean_std([r["accuracy"] for r in runs]),
        "per_task_accuracy": mean_std_nested([r["per_task_accuracy"] for r in runs]),
        "confusion": mean_std_nested([r["confusion"] for r in runs]),
        "accuracy_per_row": mean_std_nested([r["accuracy_per_row"] for r in runs]),
        "matrix": mean_std_nested([r["matrix"] for r in runs]),
        "matrix_last_row": mean_std_nested([r["matrix_last_row"] for r in runs]),
        "cl_metrics": mean_std_nested([r["cl_metrics"] for r in runs]),
    }
