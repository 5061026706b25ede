"""The run report: ``report.md`` with PNG plots beside it, from a run folder's files alone.

Sections: what the run shows (each task's own-training effect and forgetting on the loss, in
words), the architecture and parameter table, the per-task results, the matrix of every metric
(table and heatmap, the loss first), the continual-learning metrics, task-agnostic inference
(routing), the training loss curves and the efficiency table. With one seed every number carries
its 95% bootstrap interval over examples, ``value [low, high]``; with several seeds it is the mean
± the sample standard deviation over seeds, with n.
"""

from __future__ import annotations

import json
from pathlib import Path

from hybridcl.config.experiment import parse_position
from hybridcl.constants import HEADLINE_METRIC as HEADLINE
from hybridcl.errors import RunError
from hybridcl.evaluation.registry import all_metrics, get_metric, higher_is_better
from hybridcl.records.environment import environment_lines
from hybridcl.records.io import write_text
from hybridcl.records.results import read_results, trained_precisions
from hybridcl.report import plots
from hybridcl.report.wording import describe_interval
from hybridcl.stats.seeds import mean, mean_std
from hybridcl.strategies import STRATEGIES

# Cell values that are not metrics: what they are and their unit (the metrics' are in the registry).
CELL_VALUES = {
    "cut_share": ("generations cut by eval.max_new_tokens before their function (or text) ended", "% of generations"),
}


def _what_and_unit(name: str) -> tuple[str, str]:
    if name in CELL_VALUES:
        return CELL_VALUES[name]
    try:
        metric = get_metric(name)
    except ValueError:
        return name, name
    return metric.description, metric.unit


BLEU_NAME = (
    "CodeXGLUE's code-to-text BLEU-4 (`bleu_codexglue_code_to_text`: smoothed sentence BLEU, lower-cased, "
    "averaged over examples; 0-100)"
)
CL_COLUMNS = (
    ("average_final", "average after last task"),
    ("forgetting_relative", "forgetting (relative, %)"),
    ("forgetting_absolute", "forgetting (absolute)"),
    ("bwt", "BWT"),
    ("fwt", "FWT"),
)


def std(value):
    return value.get("std") if isinstance(value, dict) else None


def fmt(value, digits: int = 2, with_std: bool = True) -> str:
    """``12.34 ± 0.56`` (aggregated, std shown when non-zero or several seeds), ``12.34`` or ``n/a``."""
    m, s = mean(value), std(value)
    if m is None:
        return "n/a"
    text = f"{m:,.{digits}f}"
    if with_std and s is not None:
        text += f" ± {s:,.{digits}f}"
    return text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _row_labels(results: dict) -> list[str]:
    return ["base" if r == "base" else f"after {r}" for r in results["rows"]]


def read_train_logs(run_dir: Path) -> dict[int, list[dict]]:
    """seed -> entries of ``seed-<n>/train_log.jsonl`` (empty dict when there are none)."""
    logs = {}
    for path in sorted(run_dir.glob("seed-*/train_log.jsonl")):
        try:
            seed = int(path.parent.name.split("-", 1)[1])
        except ValueError:
            continue
        logs[seed] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return logs


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` and its PNG plots into ``run_dir`` (a finished run); return the report's path."""
    run_dir = Path(run_dir)
    results = read_results(run_dir / "results.json")
    if "matrix" not in results:
        raise RunError(
            f"{run_dir} holds no single run's results: report one of its run folders, "
            f"or use `hybridcl compare {run_dir}`"
        )
    config = _config(run_dir)
    seeds = results.get("seeds", 1)
    show_std = seeds > 1
    f = lambda v, d=2: fmt(v, d, with_std=show_std)  # noqa: E731
    intervals = _seed_intervals(results)
    lines = [f"# Run report: {run_dir.name}", ""]
    lines += _summary(results, config, seeds)
    lines += _findings(results, intervals)
    lines += _architecture(results, config, f)
    lines += _per_task(results, f)
    lines += _matrices(run_dir, results, f, show_std, intervals)
    lines += _cl_table(results, f, intervals)
    lines += _zero_shot(results, intervals)
    lines += (
        _routing(results, f)
        if config is None or config.eval.routing
        else ["Routing (rows without the task id) was not evaluated: `eval.routing=false`.", ""]
    )
    lines += _humaneval(results, f)
    lines += _losses(run_dir, results, intervals)
    lines += _efficiency(run_dir, results, f)
    lines += ["## Environment", "", *environment_lines(results.get("environment"))]
    path = run_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _config(run_dir: Path):
    from hybridcl.records.run_dir import load_run_config

    try:
        return load_run_config(run_dir)
    except RunError:  # a report of copied results without a valid config still renders
        return None


def _summary(results, config, seeds) -> list[str]:
    lines = [
        f"- strategy: `{results['strategy']}`",
        f"- tasks, in training order: {', '.join(results['tasks'])}",
        f"- seeds: {seeds}" + (" (numbers are mean ± standard deviation over seeds)" if seeds > 1 else ""),
    ]
    per_seed = results.get("per_seed") or []
    trained_in = trained_precisions(results)
    if config is not None:
        lines += [
            f"- base model: `{config.model.name}`",
            f"- direction: {config.data.direction}; data: "
            f"{config.data.source}, at most {config.data.max_train or 'all'} train / {config.data.max_val or 'all'} "
            f"validation examples per task; evaluated on {config.eval.max_examples or 'all'} per task",
            *_task_records(config),
            f"- training: {config.train.epochs} epochs, batch {config.train.batch_size}, lr {config.train.lr}"
            + (f", {' and '.join(trained_in)}" if trained_in else ""),
            f"- evaluation: every cell in {results.get('eval_precision', 'an unrecorded precision')}; at most "
            f"{config.eval.max_new_tokens} new tokens, a generated function stopping at its end "
            "(`cut_share`: the share the limit cut)",
        ]
    data = per_seed[0].get("data") if per_seed else None
    if data:
        counts, long = [], []
        scored = "validation"
        for t in results["tasks"]:
            rep = data.get(t) or {}
            split = rep.get("eval_split", "valid")
            scored = "test" if split == "test" else "validation"
            train, evaluated = rep.get("train") or {}, rep.get(split) or {}
            if train.get("kept") is not None or evaluated.get("kept") is not None:
                counts.append(f"{t} {train.get('kept', '-')}/{evaluated.get('kept')}")
            if "long_targets" in rep:
                long.append(f"{t} {train.get('long_targets', '-')}/{evaluated.get('long_targets')}")
        if counts:
            lines.append(f"- examples (train/{scored}; `-`: not read, an evaluation only): " + ", ".join(counts))
        if long:
            mode = data[results["tasks"][0]]["long_targets"]
            what = (
                "dropped, the samples filled with shorter ones"
                if mode["mode"] == "drop"
                else "cut (no end token) in training"
            )
            lines.append(
                f"- targets longer than {mode['max_target_len']} tokens (train/{scored}, among the examples "
                f"looked at): {', '.join(long)}; {what}"
            )
    return lines + [""]


def _architecture(results, config, f) -> list[str]:
    p = results["params"]
    base = p["base"] or 1
    pct = lambda n: f"{100 * n / base:.2f}%"  # noqa: E731
    lines = ["## Architecture and parameters", ""]
    if config is not None:
        lines += _arch_lines(config)
    strategy = STRATEGIES.get(results["strategy"])
    rows = [
        ["base model (trained)" if strategy and strategy.train_base else "base model (frozen)", f"{p['base']:,}", ""],
        ["LoRA adapter (each)", f"{p['lora_per_adapter']:,}", pct(p["lora_per_adapter"])],
        [
            f"full layer (each block{', at ' + p['full_layer_position'] if p.get('full_layer_position') else ''})",
            f"{p['full_layer_per_block']:,}",
            pct(p["full_layer_per_block"]),
        ],
        [
            f"stored components after the last task ({_count(p['adapters'], 'adapter')}, "
            f"{_count(p['blocks'], 'block')})",
            f"{p['stored_total']:,}",
            pct(p["stored_total"]),
        ],
        ["trainable while training the last task", f"{p['trainable_last_task']:,}", pct(p["trainable_last_task"])],
    ]
    lines += _table(["component", "parameters", "% of base"], rows) + [""]
    return lines


def _arch_lines(config) -> list[str]:
    try:
        from hybridcl.model.loading import base_config

        arch = base_config(config.model)
    except Exception:
        return []
    get = lambda *names: next((getattr(arch, n) for n in names if getattr(arch, n, None) is not None), None)  # noqa: E731
    kind = "seq2seq" if arch.is_encoder_decoder else "causal"
    layers = get("num_layers", "num_hidden_layers", "n_layer")
    where = "encoder" if kind == "seq2seq" else "decoder"
    stack, after = parse_position(config.components.full_layer.position)
    place = f"after its block {after}" if after else "after its last block"
    text = (
        f"`{config.model.name}`: {arch.model_type} ({kind}), {layers} {where} layers, hidden size "
        f"{get('d_model', 'hidden_size', 'n_embd')}, vocabulary {get('vocab_size')}. LoRA "
        f"r={config.components.lora.r}, "
        f"alpha={config.components.lora.alpha} on "
        f"{', '.join(config.components.lora.target_modules or ['the default targets'])}; "
        f"the full layer is one extra {stack or where} block, {place}."
    )
    return [text, ""]


def _per_task(results, f) -> list[str]:
    tasks, matrix = results["tasks"], results["matrix"]
    bleu = matrix.get(HEADLINE)
    cl = results["cl_metrics"].get(HEADLINE, {})
    train = {t["task"]: t for t in results["train"]}
    stage_of = {r: i for i, r in enumerate(results["rows"])}
    forgetting = cl.get("forgetting_relative_per_task") or []
    header = [
        "task",
        "BLEU after its own training",
        "BLEU after the last task",
        "forgetting (relative, %)",
        "syntax pass after last (%)",
        "references' syntax pass (%)",
        "exact match after last (%)",
        "final train loss",
        "train time (s)",
    ]
    data = (results.get("per_seed") or [{}])[0].get("data") or {}
    rows = []
    for j, task in enumerate(tasks):
        i = stage_of.get(task)
        after_own = bleu[i][j] if bleu and i is not None else None
        syntax = matrix.get("syntax_pass")
        em = matrix.get("exact_match")
        t = train.get(task, {})
        rows.append(
            [
                task,
                f(after_own),
                f(bleu[-1][j]) if bleu else "n/a",
                f(forgetting[j]) if j < len(forgetting) else "-",
                f(syntax[-1][j]) if syntax else "n/a",
                f((data.get(task) or {}).get("syntax_ceiling")),
                f(em[-1][j]) if em else "n/a",
                f(t.get("final_loss"), 3),
                f(t.get("seconds")),
            ]
        )
    lines = [
        "## Results per task",
        "",
        f"BLEU is {BLEU_NAME}; forgetting is the seed's "
        "relative forgetting, 100 * (R[j][j] - R[T][j]) / R[j][j] (the last task has none). The references' "
        "syntax pass rate is the ceiling for the models' (the share of the scored reference functions that "
        "parse).",
        "",
    ]
    return lines + _table(header, rows) + [""]


def _seed_intervals(results) -> dict:
    """metric -> bootstrap intervals of the one seed (none with several seeds: those show mean ± std)."""
    per_seed = results.get("per_seed") or []
    return (per_seed[0].get("intervals") or {}) if results.get("seeds", 1) == 1 and per_seed else {}


def _with_interval(value, interval, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.{digits}f}"
    return text if interval is None else f"{text} [{interval[0]:,.{digits}f}, {interval[1]:,.{digits}f}]"


def _findings(results, intervals) -> list[str]:
    """The run's claims in words, each with its interval: own training against the base, and forgetting."""
    tasks = results["tasks"]
    loss = intervals.get("loss")
    if not loss or not loss.get("own_training"):
        return []
    lines = [
        "## What this run shows",
        "",
        "On the teacher-forced loss (nats per target token, lower is better), with 95% bootstrap intervals over "
        "the evaluation examples, paired between rows (the same resampled examples before and after):",
        "",
    ]
    for j, effect in enumerate(loss["own_training"]):
        if effect is not None:
            interval = tuple(effect["interval"]) if effect["interval"] else None
            lines.append(
                "- "
                + describe_interval(f"{tasks[j]}: its own training changed the loss by", effect["difference"], interval)
            )
    bwt = loss["cl"].get("bwt_per_task") or []
    bwt_iv = loss["intervals"].get("bwt_per_task") or []
    for j, value in enumerate(bwt):
        if value is not None and j < len(bwt_iv):
            # BWT keeps "negative = forgetting" for a loss too: R[j][j] - R[T][j]
            interval = tuple(bwt_iv[j]) if bwt_iv[j] else None
            label = f"{tasks[j]}: backward transfer (BWT, negative = forgetting)"
            lines.append("- " + describe_interval(label, value, interval))
    return lines + [""]


def _matrices(run_dir, results, f, show_std, intervals) -> list[str]:
    tasks, labels = results["tasks"], _row_labels(results)
    lines = [
        "## Matrices",
        "",
        "`R[i][j]`: the metric on task j's evaluation examples (columns) after training the "
        "task of row i (row `base` = the frozen base before any training). "
        + (
            "Each cell: the value [95% bootstrap interval over examples]. "
            if intervals
            else "Each cell: mean ± standard deviation over seeds. "
        )
        + "Heatmap colours span the metric's whole range (0-100, or 0 to the largest loss), so that small "
        "differences do not look like contrast.",
        "",
    ]
    known = [m.name for m in all_metrics()] + list(CELL_VALUES)
    order = [m for m in known if m in results["matrix"]] + [m for m in results["matrix"] if m not in known]
    for metric in order:
        matrix = results["matrix"][metric]
        values = [[mean(c) for c in row] for row in matrix]
        what, unit = _what_and_unit(metric)
        lines += [f"### {metric}: {what}", ""]
        if all(v is None for row in values for v in row):
            lines += ["Not computed in this run (n/a in every cell).", ""]
            continue
        cell_iv = (intervals.get(metric) or {}).get("cell_intervals")
        if cell_iv:
            rows = [
                [labels[i]] + [_with_interval(v, cell_iv[i][j]) for j, v in enumerate(row)]
                for i, row in enumerate(values)
            ]
        else:
            rows = [[labels[i]] + [f(c) for c in row] for i, row in enumerate(matrix)]
        lines += _table(["after training \\ evaluated on", *tasks], rows) + [""]
        name = f"matrix-{metric}.png"
        finite = [v for row in values for v in row if v is not None]
        scale = (0.0, max(finite) * 1.05 or 1.0) if not higher_is_better(metric) else (0.0, 100.0)
        plots.heatmap(
            values,
            labels,
            tasks,
            title=f"{metric} ({results['strategy']})",
            colorbar_label=unit,
            path=run_dir / name,
            std=[[std(c) for c in row] for row in matrix] if show_std else None,
            intervals=cell_iv,
            scale=scale,
        )
        lines += [f"![{metric} matrix]({name})", ""]
    return lines


def _cl_table(results, f, intervals) -> list[str]:
    rows = []
    for metric, values in results["cl_metrics"].items():
        if all(mean(values.get(k)) is None for k, _ in CL_COLUMNS):
            continue
        cl_iv = (intervals.get(metric) or {}).get("intervals") or {}
        if cl_iv:
            rows.append([metric] + [_with_interval(mean(values.get(k)), cl_iv.get(k)) for k, _ in CL_COLUMNS])
        else:
            rows.append([metric] + [f(values.get(k)) for k, _ in CL_COLUMNS])
    lines = [
        "## Continual-learning metrics",
        "",
        "Forgetting (relative) is the seed's: percent of a task's score lost by the end; forgetting (absolute) is "
        "Chaudhry et al.'s, in the metric's units (best score from the task's own training on, minus the final "
        "one); BWT and FWT are GEM's (negative BWT = forgetting; FWT against the frozen base). For the loss "
        "(lower is better) forgetting is a rise and the signs keep their meaning. "
        + (
            "Brackets: 95% bootstrap intervals, paired between rows; an interval that contains 0 means the "
            "difference is within noise."
            if intervals
            else "Values: mean ± standard deviation over seeds."
        ),
        "",
    ]
    skipped = []
    for metric, values in results["cl_metrics"].items():
        for key, label in CL_COLUMNS:
            n_skipped = mean(values.get("n_skipped", {}).get(key))
            if n_skipped:  # a mean over seeds when aggregated
                skipped.append(
                    f"{metric} {label}: {n_skipped:g} of {n_skipped + (mean(values['n'].get(key)) or 0):g} tasks"
                )
    notes = (
        [
            f"Means over the tasks where a metric is defined; tasks left out as undefined (zero denominator or "
            f"a cell not evaluated): {'; '.join(skipped)}.",
            "",
        ]
        if skipped
        else []
    )
    return lines + _table(["metric", *(label for _, label in CL_COLUMNS)], rows) + [""] + notes


def _zero_shot(results, intervals) -> list[str]:
    """Forward transfer read as zero-shot transfer: each task scored before its own training, against the base."""
    tasks = results["tasks"]
    loss = intervals.get("loss") or {}
    fwt, fwt_iv = loss.get("cl", {}).get("fwt_per_task") or [], loss.get("intervals", {}).get("fwt_per_task") or []
    if not fwt:
        return []
    lines = [
        "## Zero-shot transfer to languages not trained yet",
        "",
        "Each task scored right before its own training (after the tasks before it) against the frozen base, on "
        "the loss: FWT per task, positive = the earlier tasks helped a language the model has not been trained on "
        "yet (for a per-task strategy, the latest task's parts serve the new language).",
        "",
    ]
    for j, value in enumerate(fwt, start=1):
        if value is not None and j - 1 < len(fwt_iv):
            interval = tuple(fwt_iv[j - 1]) if fwt_iv[j - 1] else None
            label = f"{tasks[j]} after {tasks[j - 1]}, before its own training: FWT"
            lines.append("- " + describe_interval(label, value, interval))
    return lines + [""]


ROUTING_METHODS_IN_WORDS = {
    "feature_ridge": "ridge regression on random ReLU features of the frozen base's pooled states",
    "mahalanobis": "nearest task mean of the frozen base's pooled states, shared covariance",
    "token_ngram": "naive Bayes over the prompt's token unigrams and bigrams",
    "min_prompt_loss": "the task whose components give the prompt the lowest loss",
}


def _routing(results, f) -> list[str]:
    lines = [
        "## Task-agnostic inference (routing)",
        "",
        "The matrices above use the task id: each task is evaluated with its own components. **With the task "
        "id, per-task components cannot forget, by construction**: training a later task never changes an "
        "earlier task's parts, so the row after the last task repeats each task's own row exactly. (The seed's "
        "4.38% forgetting for the task-specific hybrid came from re-evaluating Python after reloading only its "
        "LoRA weights onto the plain base in fp16, the trained extra block gone, with unseeded sampling.) Without "
        "the task id, forgetting comes back through choosing the wrong components. Here a router, fitted task "
        "by task from statistics of each task's own training prompts (saved with its components; no stored "
        "examples), picks each evaluation prompt's task from its bare source text (the template, which names "
        "the language, is left out), and every row with two tasks' parts or more is scored again under that "
        "choice: misrouted prompts are scored and generated with the chosen task's parts.",
        "",
    ]
    routing = results.get("routing")
    if not routing:
        return lines + [
            "Not applicable to this run: its strategy has fewer than two tasks with per-task components, "
            "so every prompt uses the same weights with or without a task id.",
            "",
        ]
    tasks = routing["tasks"]
    per_seed = results.get("per_seed") or []
    one = (per_seed[0].get("routing") or {}) if len(per_seed) == 1 else {}
    chance = 100.0 / len(tasks)
    lines += _routing_methods(routing, one, chance, f)
    confusion_rows = [
        [t, f(routing["per_task_accuracy"].get(t))] + [f(routing["confusion"][t].get(c), 1) for c in tasks]
        for t in routing["confusion"]
    ]
    lines += [f"Where `{routing['method']}` (the run's `routing.method`) sent each task's prompts:", ""]
    lines += _table(["prompts of task", "routed correctly (%)", *(f"routed to {c}" for c in tasks)], confusion_rows)
    lines += ["", *_routed_matrix(results, routing, one, f)]
    return lines


def _routing_methods(routing, one_seed, chance, f) -> list[str]:
    """The accuracy of every fitted method, with its 95% Wilson interval (one seed) and a verdict against chance."""
    methods = routing.get("methods") or {routing["method"]: routing}
    rows = []
    for method, summary in methods.items():
        interval = ((one_seed.get("methods") or {}).get(method) or {}).get("accuracy_interval")
        accuracy = _with_interval(mean(summary["accuracy"]), interval) if interval else f(summary["accuracy"])
        verdict = "n/a"
        if interval:
            verdict = "above chance" if interval[0] > chance else "within noise of chance"
        used = " (routes)" if method == routing["method"] else ""
        rows.append([f"`{method}`{used}", ROUTING_METHODS_IN_WORDS.get(method, ""), accuracy, verdict])
    return [
        f"Routing accuracy on {routing['n']} evaluation prompts (the loss-scored ones; chance "
        f"{chance:.1f}%; 95% Wilson interval). A prompt tagged `[task]` is never routed: "
        '`hybridcl generate --task auto "[python] ..."`.',
        "",
        *_table(["method", "how it chooses", "accuracy (%)", "against chance"], rows),
        "",
    ]


def _routed_matrix(results, routing, one_seed, f) -> list[str]:
    last = results["matrix"]
    rows = []
    for metric, routed in routing["matrix_last_row"].items():
        if metric not in last or all(mean(v) is None for v in routed):
            continue
        rows.append([metric, "task id"] + [f(v) for v in last[metric][-1]])
        rows.append([metric, "routed"] + [f(v) for v in routed])
    lines = ["The last matrix row with the task id and under routing:", ""]
    lines += _table(["metric", "components chosen by", *results["tasks"]], rows) + [""]
    labels = ["base" if r == "base" else f"after {r}" for r in results["rows"]]
    for metric in dict.fromkeys(["loss", HEADLINE]):
        if metric not in routing.get("matrix", {}):
            continue
        lines += [f"The {metric} matrix under routing:", ""]
        lines += _table(
            ["after training \\ evaluated on", *results["tasks"]],
            [[label, *(f(v) for v in row)] for label, row in zip(labels, routing["matrix"][metric], strict=True)],
        ) + [""]
        cl = routing["cl_metrics"][metric]
        lines += [f"Under routing: {', '.join(f'{label} {f(cl.get(key))}' for key, label in CL_COLUMNS)}.", ""]
    lines += _routed_forgetting(results, one_seed)
    return lines


def _routed_forgetting(results, one_seed) -> list[str]:
    """Each earlier task's forgetting (BWT) on the loss under routing, against 0 (= the task id's, for
    per-task components), with its paired bootstrap interval."""
    loss = (one_seed.get("intervals") or {}).get("loss")
    if not loss:
        return []
    tasks = results["tasks"]
    bwt, bwt_iv = loss["cl"].get("bwt_per_task") or [], loss["intervals"].get("bwt_per_task") or []
    lines = [
        "On the loss under routing (with the task id, per-task parts give BWT 0 exactly; a BWT whose interval "
        "contains 0 is forgetting within noise of the task id's):",
        "",
    ]
    for j, value in enumerate(bwt):
        if value is not None and j < len(bwt_iv):
            interval = tuple(bwt_iv[j]) if bwt_iv[j] else None
            lines.append(
                f"- {describe_interval(f'{tasks[j]}: BWT under routing (negative = forgetting)', value, interval)}"
            )
    return lines + [""]


def _humaneval(results, f) -> list[str]:
    humaneval = results.get("humaneval")
    if not humaneval:
        return []
    keys = [k for k in humaneval["final"] if k.startswith("pass@")]
    rows = [[when, *(f(humaneval[when].get(k)) for k in keys)] for when in ("base", "final")]
    final = humaneval["final"]
    lines = [
        "## HumanEval",
        "",
        f"Functional correctness on {final.get('problems')} HumanEval problems, "
        f"{final.get('samples')} samples each, run in the sandbox; `final` is the model after the last task "
        "routed to the python task's components (pass@k in percent).",
        "",
    ]
    protections = final.get("protections")
    if protections:
        lines += [f"Sandbox protections in force: {', '.join(protections)}.", ""]
    return lines + _table(["model", *keys], rows) + [""]


def _losses(run_dir, results, intervals) -> list[str]:
    tasks = results["tasks"]
    logs = read_train_logs(run_dir)
    lines = ["## Training and validation loss", ""]
    if any(logs.values()):
        plots.loss_curves(logs, tasks, run_dir / "loss.png")
        lines += [
            "Training loss (nats per target token) at every logged optimizer step (dots) and its moving average "
            "(line), tasks in training order; dotted grey lines mark where a new task starts; with several seeds, "
            "one line style per seed.",
            "",
            "![training loss](loss.png)",
            "",
        ]
    else:
        lines += ["No training log (`seed-*/train_log.jsonl`) in this run.", ""]
    loss = results["matrix"].get("loss")
    if loss:
        cell_iv = (intervals.get("loss") or {}).get("cell_intervals")
        plots.stage_curves(
            [[mean(c) for c in row] for row in loss],
            cell_iv,
            _row_labels(results),
            tasks,
            run_dir / "validation-loss.png",
            ylabel="loss (nats per target token)",
            title="Validation loss of each task after each stage",
        )
        lines += [
            "Each task's teacher-forced validation loss after each stage (the rows of the loss matrix)"
            + (", with 95% bootstrap intervals." if cell_iv else "."),
            "",
            "![validation loss](validation-loss.png)",
            "",
        ]
    return lines


def _efficiency(run_dir, results, f) -> list[str]:
    per_seed = results.get("per_seed") or []
    tasks = results["tasks"]
    header = [
        "stage",
        "train time (s)",
        "samples/s",
        "tokens/s",
        "peak memory (GB)",
        "trainable params",
        "eval time of its row (s)",
    ]
    rows = []
    eval_rows = []
    for i, t in enumerate(results["train"], start=1):
        eval_s = mean_std([_row_sum(r.get("eval_seconds"), i) for r in per_seed]) if per_seed else None
        eval_rows.append(eval_s)
        rows.append(
            [
                t["task"],
                f(t.get("seconds")),
                f(t.get("samples_per_s"), 1),
                f(t.get("tokens_per_s"), 0),
                f(t.get("peak_memory_gb"), 3),
                f(t.get("trainable_params"), 0),
                f(eval_s),
            ]
        )
    base_eval = mean_std([_row_sum(r.get("eval_seconds"), 0) for r in per_seed]) if per_seed else None
    total = mean_std([sum(t["seconds"] for t in r["train"]) for r in per_seed]) if per_seed else None
    rows.append(["**total**", f(total), "", "", "", "", f(mean_std([_total_eval(r) for r in per_seed]))])
    lines = [
        "## Efficiency",
        "",
        "Training time is wall-clock seconds of the training loop; peak memory is the peak "
        "GPU memory on a GPU and the peak resident memory of the process on a CPU (GB); evaluation time is the "
        f"generation and scoring of one matrix row (the base row took {f(base_eval)} s).",
        "",
    ]
    lines += _table(header, rows) + [""]
    lines += _evaluation_throughput(per_seed, f)
    if results["train"]:
        plots.bar_panels(
            [t["task"] for t in results["train"]], _efficiency_panels(results, eval_rows), run_dir / "efficiency.png"
        )
        lines += ["![efficiency](efficiency.png)", ""]
    del tasks
    return lines


def _efficiency_panels(results: dict, eval_rows: list) -> list[dict]:
    """The efficiency figure's panels: training time, throughput and memory per task, and the
    evaluation time of the row after each."""
    train = results["train"]
    return [
        {
            "title": "training time per task",
            "ylabel": "seconds",
            "series": {"train": [mean(t.get("seconds")) for t in train]},
            "errors": {"train": [std(t.get("seconds")) for t in train]},
        },
        {
            "title": "training throughput",
            "ylabel": "samples per second",
            "series": {"throughput": [mean(t.get("samples_per_s")) for t in train]},
            "errors": {"throughput": [std(t.get("samples_per_s")) for t in train]},
        },
        {
            "title": "peak memory while training",
            "ylabel": "GB",
            "series": {"memory": [mean(t.get("peak_memory_gb")) for t in train]},
        },
        {
            "title": "evaluation time of the row after each task",
            "ylabel": "seconds",
            "series": {"eval": [mean(e) for e in eval_rows]},
            "errors": {"eval": [std(e) for e in eval_rows]},
        },
    ]


def _evaluation_throughput(per_seed: list[dict], f) -> list[str]:
    """One line: the evaluation's generation and loss-scoring throughput and its routing time (mean
    over seeds), from each seed's ``evaluation`` record; nothing for results written before it."""
    records = [r["evaluation"] for r in per_seed if r.get("evaluation")]
    if not records:
        return []

    def rate(count: str, seconds: str) -> str:
        total = sum(r[seconds] for r in records)
        return f(sum(r[count] for r in records) / total, 2) if total else "-"

    m = {k: sum(r[k] for r in records) / len(records) for k in records[0]}
    lines = [
        f"Evaluation per seed: {f(m['cells'], 0)} cells computed; generation of {f(m['generated'], 0)} functions "
        f"took {f(m['generate_seconds'])} s ({rate('generated', 'generate_seconds')} functions/s), the loss of "
        f"{f(m['loss_scored'], 0)} functions {f(m['loss_seconds'])} s ({rate('loss_scored', 'loss_seconds')} "
        f"functions/s), routing without the task id {f(m['routing_seconds'])} s.",
        "",
    ]
    if m.get("wall_seconds"):  # results written before the wall time was recorded have none
        parts = ("train_seconds", "generate_seconds", "loss_seconds", "routing_seconds")
        rest = m["wall_seconds"] - sum(m[k] for k in parts)
        lines[-1:-1] = [
            "",
            f"Wall time per seed: {f(m['wall_seconds'])} s = training {f(m['train_seconds'])} + generation "
            f"{f(m['generate_seconds'])} + loss scoring {f(m['loss_seconds'])} + routing {f(m['routing_seconds'])} "
            f"+ the rest {f(rest)} (loading the model and data, fitting routers, metrics, writing).",
        ]
    return lines


def _row_sum(eval_seconds, i):
    if not eval_seconds or i >= len(eval_seconds):
        return None
    cells = [v for v in eval_seconds[i] if v is not None]
    return sum(cells) if cells else None


def _total_eval(seed_results):
    rows = seed_results.get("eval_seconds") or []
    sums = [_row_sum(rows, i) for i in range(len(rows))]
    sums = [s for s in sums if s is not None]
    return sum(sums) if sums else None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _task_records(config) -> list[str]:
    """A line per task that says more than its name (a language of its own, a direction, data, sizes)."""
    return [
        f"- task {t.name}: {t.language}, {t.direction}"
        + (f", data {t.data}" if t.data else "")
        + "".join(f", {s} {getattr(t, s)}" for s in ("max_train", "max_val") if getattr(t, s) is not None)
        for t in config.tasks
        if not (t.shorthand and t.direction == config.data.direction)
    ]
