"""The task sequence: train each task in turn, evaluate every task after each, fill the matrix.

``R[i][j]`` is a metric on task j's validation set after training task i; row 0 is the base model
before any training. Every cell of every row is evaluated (tasks not trained yet too, for forward
transfer), so each run ends with the full matrix.

A run folder holds, per seed, ``state.json`` (completed tasks, matrix rows, timings), the
components after each task (``tasks/<i>-<task>/components.safetensors``) and the predictions.
State and checkpoints are written atomically after each task, so ``--resume`` continues an
interrupted run and ends with the same results as an uninterrupted one (CPU, same seed).
"""
from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import torch
from accelerate import PartialState

from hybridcl import __version__
from hybridcl.cl_metrics import cl_metrics
from hybridcl.config import ExperimentConfig, _apply_override, dump_yaml, from_dict, validate
from hybridcl.data.batching import encode
from hybridcl.data.tasks import Example, TaskData, format_prompt, load_task_data
from hybridcl.errors import ConfigError, RunError
from hybridcl.evaluate.efficiency import Meter
from hybridcl.evaluate.generate import generate
from hybridcl.evaluate.metrics import score
from hybridcl.evaluate.postprocess import extract_code
from hybridcl.io import load_tensors, read_json, save_tensors, write_json, write_text
from hybridcl.model.components import ComponentSet
from hybridcl.model.loading import load_base
from hybridcl.stats import mean_std, mean_std_nested
from hybridcl.strategies import SEED_STRATEGIES, STRATEGIES, get_strategy
from hybridcl.strategies.rules import make_rule
from hybridcl.train import make_accelerator, train_task

STATE_FORMAT = 1
ALL_STRATEGIES = (*SEED_STRATEGIES, *(s for s in STRATEGIES if s not in SEED_STRATEGIES))


def new_run_dir(config: ExperimentConfig) -> Path:
    name = config.run.name or f"{config.preset}-{config.strategy}-{datetime.now():%Y%m%d-%H%M%S}"
    return Path(config.run.output_dir) / name


def run_experiment(config: ExperimentConfig, run_dir: Path | None = None, *, progress: bool = True) -> Path:
    """Run (or resume, if ``run_dir`` holds a started run) the experiment; return the run folder."""
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config)
    if config.strategy == "all":
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", dump_yaml(config))
        for name in ALL_STRATEGIES:
            run_experiment(replace(config, strategy=name), run_dir / name, progress=progress)
        from hybridcl.report.compare import compare_runs

        compare_runs([run_dir / name for name in ALL_STRATEGIES], run_dir)
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_config(run_dir, config)
    for seed in config.run.seeds:
        run_seed(config, seed, run_dir / f"seed-{seed}", progress=progress)
    if PartialState().is_main_process:
        _write_run_results(run_dir, config)
    return run_dir


def _write_run_results(run_dir: Path, config: ExperimentConfig) -> None:
    from hybridcl.report.markdown import write_report
    from hybridcl.routing import aggregate_routing

    results = aggregate([read_json(run_dir / f"seed-{s}" / "results.json") for s in config.run.seeds])
    results["routing"] = aggregate_routing(results["per_seed"])
    write_json(run_dir / "results.json", results)
    write_report(run_dir)


def evaluate_run(run_dir: Path, overrides: list[str] | tuple[str, ...] = (), *, progress: bool = True) -> Path:
    """Re-evaluate every saved checkpoint of a run, optionally with other ``eval.*`` settings.

    The matrices, CL metrics, routing and report are recomputed; the run's ``config.yaml`` records
    the evaluation settings used. Training results are kept.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if config.strategy == "all":
        for name in ALL_STRATEGIES:
            evaluate_run(run_dir / name, overrides, progress=progress)
        from hybridcl.report.compare import compare_runs

        compare_runs([run_dir / name for name in ALL_STRATEGIES], run_dir)
        return run_dir
    bad = [o for o in overrides if not o.startswith("eval.")]
    if bad:
        raise ConfigError(f"hybridcl eval takes eval.* settings only, not {bad[0]!r}: training is not repeated")
    raw = config.to_dict()
    for item in overrides:
        _apply_override(raw, item)
    config = from_dict(ExperimentConfig, raw)
    validate(config)
    for seed in config.run.seeds:
        seed_dir = run_dir / f"seed-{seed}"
        state = _load_state(seed_dir)
        if not state.get("finished"):
            raise RunError(f"{seed_dir} is not finished: complete it with `hybridcl run --resume {run_dir}` first")
        base = load_base(config.model)
        strategy = get_strategy(config.strategy)
        components = ComponentSet(base.model, base.kind, strategy, config.components)
        components.model.to(make_accelerator(config.train, config.run.device).device)
        data = {t: load_task_data(config.data, t) for t in config.tasks}
        evaluate = _Evaluator(config, base, components, data, seed_dir, progress)
        with components.base_only():
            rows = [evaluate.row(0)]
        state["routed"] = {}
        for i, (stage, _) in enumerate(_stages(config, strategy)[: len(state["train"])], start=1):
            torch.manual_seed(seed * 1000 + i)
            components.activate(stage)
            components.load_component_state(load_tensors(seed_dir / "tasks" / f"{i}-{stage}" / "components.safetensors"))
            rows.append(evaluate.row(i))
            evaluate.routed(i, state)
        state["rows"] = rows
        _save_state(seed_dir, state)
        _finish_seed(config, state, base, components, data, seed_dir, progress)
    write_text(run_dir / "config.yaml", dump_yaml(config))
    _write_run_results(run_dir, config)
    return run_dir


def _stages(config: ExperimentConfig, strategy) -> list[tuple[str, list[str]]]:
    """The training stages: one per task, or one ``joint`` stage over every task."""
    if strategy.rule == "joint":
        return [("joint", list(config.tasks))]
    return [(t, [t]) for t in config.tasks]


def load_run_config(run_dir: Path) -> ExperimentConfig:
    """The resolved config a run was started with."""
    from hybridcl.config import _parse_yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir} is not a hybridcl run folder: it has no config.yaml")
    raw = _parse_yaml(path.read_text(encoding="utf-8", errors="replace"), str(path))
    try:
        config = from_dict(ExperimentConfig, raw)
        validate(config)
    except ConfigError as exc:  # written by another hybridcl version, or edited by hand
        raise RunError(f"{path}: {exc}; this hybridcl ({__version__}) cannot use this run: start a new one") from None
    return config


def _check_config(run_dir: Path, config: ExperimentConfig) -> None:
    path = run_dir / "config.yaml"
    if path.exists():
        saved = load_run_config(run_dir)
        if saved.to_dict() != config.to_dict():
            raise RunError(f"{run_dir} holds a run with another config: resume it with `hybridcl run --resume {run_dir}` "
                           "or choose a new run.name")
    else:
        write_text(path, dump_yaml(config))


# ---------------------------------------------------------------------------------------------
# One seed


def run_seed(config: ExperimentConfig, seed: int, seed_dir: Path, *, progress: bool = True) -> dict:
    """Train every task in order for one seed and write ``seed_dir/results.json``."""
    seed_dir.mkdir(parents=True, exist_ok=True)
    state = _load_state(seed_dir)
    if state.get("finished"):
        return read_json(seed_dir / "results.json")
    _set_seed(seed)
    strategy = get_strategy(config.strategy)
    tasks = config.tasks
    base = load_base(config.model)
    components = ComponentSet(base.model, base.kind, strategy, config.components)
    accelerator = make_accelerator(config.train, config.run.device)
    main = accelerator.is_main_process  # with several processes, only the first evaluates and writes
    if main:
        _drop_unfinished_log(seed_dir / "train_log.jsonl", [t["task"] for t in state["train"]])
    components.model.to(accelerator.device)
    data = {t: load_task_data(config.data, t) for t in tasks}  # the same examples for every seed
    cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else seed_dir.parent / "cache"
    rule = make_rule(strategy, config, data)
    evaluate = _Evaluator(config, base, components, data, seed_dir, progress)
    with _tensorboard(seed_dir, main) as tb:
        if not state["rows"] and main:
            with components.base_only():
                state["rows"].append(evaluate.row(0))
            _save_state(seed_dir, state)
        stages = _stages(config, strategy)
        done = len(state["train"])
        for i, (stage, stage_tasks) in enumerate(stages, start=1):
            stage_dir = seed_dir / "tasks" / f"{i}-{stage}"
            torch.manual_seed(seed * 1000 + i)  # new parts get the same random init on resume
            components.activate(stage)
            if i <= done:  # finished before an interruption: restore the parts as they were after it
                if i == done:
                    components.load_component_state(load_tensors(stage_dir / "components.safetensors"))
                    rule.load_state_dict(load_tensors(stage_dir / "rule.safetensors"))
                continue
            examples = rule.training_examples(stage_tasks, seed=seed + i)
            encoded = encode(examples, base.tokenizer, base.kind, config.data.max_source_len, config.data.max_target_len,
                             cache_dir=cache_dir, progress=progress and main)
            with Meter(accelerator.device) as meter:
                result = train_task(
                    components.model, encoded, config.train, accelerator=accelerator, kind=base.kind,
                    pad_token_id=base.tokenizer.pad_token_id, seed=seed * 1000 + i, task=stage,
                    log_path=seed_dir / "train_log.jsonl", tensorboard=tb, penalty=rule.penalty, progress=progress,
                )
            rule.after_task(components, stage_tasks, encoded, base)
            counts = components.counts()
            if not main:
                accelerator.wait_for_everyone()
                continue
            meta = {"task": stage, "hybridcl": __version__}
            save_tensors(stage_dir / "rule.safetensors", rule.state_dict(), metadata=meta)
            save_tensors(stage_dir / "components.safetensors", components.component_state(), metadata=meta)
            state["train"].append({
                "task": stage, **result.__dict__, "peak_memory_gb": meter.peak_memory_gb,
                "n_truncated_source": encoded.n_truncated_source, "n_truncated_target": encoded.n_truncated_target,
                "n_examples": len(examples), "trainable_params": counts.trainable,
            })
            state["rows"].append(evaluate.row(i))
            evaluate.routed(i, state)
            _save_state(seed_dir, state)
            accelerator.wait_for_everyone()
    if not main:
        return {}
    return _finish_seed(config, state, base, components, data, seed_dir, progress)


def _finish_seed(config, state: dict, base, components: ComponentSet, data, seed_dir: Path, progress: bool) -> dict:
    """Results of a seed whose tasks are all trained and evaluated: CL metrics, routing, HumanEval."""
    from hybridcl.routing import routed_results

    results = _seed_results(config, state, components, data)
    results["routing"] = routed_results(results["matrix"], {int(i): r for i, r in state.get("routed", {}).items()})
    if config.eval.humaneval and "python" in config.tasks and config.data.direction == "text-to-code":
        results["humaneval"] = _humaneval(config, base, components, progress)
    write_json(seed_dir / "results.json", results)
    state["finished"] = True
    _save_state(seed_dir, state)
    return results


def _humaneval(config: ExperimentConfig, base, components: ComponentSet, progress: bool) -> dict:
    """HumanEval pass@k of the base model and of the final model routed to the python task."""
    from hybridcl.evaluate.functional import humaneval

    run = lambda: humaneval(components.model, base.tokenizer, base.kind, config.eval,
                            max_source_len=config.data.max_source_len, progress=progress)
    with components.base_only():
        before = run()
    components.route("python")
    return {"base": before, "final": run()}


def _drop_unfinished_log(path: Path, finished: list[str]) -> None:
    """On resume, forget the log lines of a task whose training was interrupted: it starts over."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("task") in finished]
    if len(kept) != len(lines):
        write_text(path, "".join(line + "\n" for line in kept))


class _Evaluator:
    """Generates on every task's validation set and scores it: one matrix row per call."""

    def __init__(self, config, base, components, data: dict[str, TaskData], seed_dir: Path, progress: bool):
        self.config, self.base, self.components, self.data = config, base, components, data
        self.seed_dir, self.progress = seed_dir, progress

    def routed(self, i: int, state: dict) -> None:
        """Row ``i`` again without the task id (task-agnostic routing), kept in ``state["routed"]``."""
        from hybridcl.routing import evaluate_routing

        result = evaluate_routing(self.config, self.base, self.components, self.data, self.seed_dir, row=i,
                                  progress=self.progress)
        if result is not None:
            state.setdefault("routed", {})[str(i)] = result

    def row(self, i: int) -> dict:
        cfg = self.config.eval
        row = {}
        for task in self.config.tasks:
            if i > 0 and not cfg.forward_transfer and self.config.tasks.index(task) >= i:
                row[task] = None
                continue
            if i > 0:
                self.components.route(task)
            examples = self.data[task].val[: cfg.max_examples]
            prompts = [format_prompt(ex.source, ex.language, ex.direction, self.base.kind) for ex in examples]
            with Meter(next(self.components.model.parameters()).device) as meter:
                predictions = generate(
                    self.components.model, self.base.tokenizer, prompts, kind=self.base.kind,
                    max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, num_beams=cfg.num_beams,
                    do_sample=cfg.do_sample, temperature=cfg.temperature, top_p=cfg.top_p,
                    max_source_len=self.config.data.max_source_len, progress=self.progress,
                    desc=f"eval row {i} {task}",
                )
            if self.config.data.direction == "text-to-code":
                predictions = [extract_code(p) for p in predictions]
            scores = score(predictions, [ex.target for ex in examples], language=task, direction=self.config.data.direction)
            row[task] = {**scores, "eval_seconds": meter.seconds, "n": len(examples)}
            _write_predictions(self.seed_dir / "predictions" / f"row{i}-{task}.jsonl", examples, predictions)
        return row


def _write_predictions(path: Path, examples: list[Example], predictions: list[str]) -> None:
    lines = [json.dumps({"id": ex.id, "prediction": p, "reference": ex.target}) for ex, p in zip(examples, predictions)]
    write_text(path, "\n".join(lines) + "\n")


def _seed_results(config: ExperimentConfig, state: dict, components: ComponentSet, data) -> dict:
    tasks = config.tasks
    rows = state["rows"]
    metric_names = sorted({m for row in rows for cell in row.values() if cell for m in cell if m not in ("n", "eval_seconds")})
    matrices = {m: [[(row[t] or {}).get(m) for t in tasks] for row in rows] for m in metric_names}
    counts = components.counts()
    joint = get_strategy(config.strategy).rule == "joint"
    return {
        "format": STATE_FORMAT,
        "hybridcl": __version__,
        "strategy": config.strategy,
        "tasks": tasks,
        "rows": ["base"] + [t["task"] for t in state["train"]],
        "matrix": matrices,
        # Joint training has one stage: only the final scores mean something.
        "cl_metrics": {m: _final_only(mat) if joint else cl_metrics(mat) for m, mat in matrices.items()},
        "eval_seconds": [[(row[t] or {}).get("eval_seconds") for t in tasks] for row in rows],
        "train": state["train"],
        "params": {
            "base": counts.base,
            "lora_per_adapter": counts.lora_per_adapter,
            "full_layer_per_block": counts.full_layer_per_block,
            "adapters": counts.n_adapters,
            "blocks": counts.n_blocks,
            "stored_total": counts.stored_total,
            "trainable_last_task": counts.trainable,
        },
        "data": {t: data[t].report for t in tasks},
    }


def _final_only(matrix):
    final = [v for v in matrix[-1] if v is not None]
    return {"average_final": sum(final) / len(final) if final else None}


def aggregate(seed_results: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every matrix cell and CL metric."""
    first = seed_results[0]
    out = {"format": STATE_FORMAT, "hybridcl": __version__, "seeds": len(seed_results), "strategy": first["strategy"], "tasks": first["tasks"], "rows": first["rows"],
           "params": first["params"], "per_seed": seed_results}
    out["matrix"] = {m: mean_std_nested([r["matrix"][m] for r in seed_results]) for m in first["matrix"]}
    out["cl_metrics"] = {m: mean_std_nested([r["cl_metrics"][m] for r in seed_results]) for m in first["cl_metrics"]}
    out["train"] = [
        {k: mean_std([r["train"][i][k] for r in seed_results]) for k in ("seconds", "samples_per_s", "tokens_per_s",
                                                                             "peak_memory_gb", "final_loss", "trainable_params")}
        | {"task": first["train"][i]["task"]}
        for i in range(len(first["train"]))
    ]
    return out


# ---------------------------------------------------------------------------------------------
# State


def _load_state(seed_dir: Path) -> dict:
    path = seed_dir / "state.json"
    if not path.exists():
        return {"format": STATE_FORMAT, "hybridcl": __version__, "rows": [], "train": [], "finished": False}
    state = read_json(path)
    if not isinstance(state, dict):
        raise RunError(f"{path} is not a hybridcl state file (a JSON object): delete {seed_dir} and resume to redo that seed")
    if state.get("format") != STATE_FORMAT:
        raise RunError(f"{path} was written by hybridcl {state.get('hybridcl', '?')} in format {state.get('format')}; "
                       f"this hybridcl ({__version__}) reads format {STATE_FORMAT}: start a new run")
    return state


def _save_state(seed_dir: Path, state: dict) -> None:
    write_json(seed_dir / "state.json", state)


def _set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class _tensorboard:
    def __init__(self, seed_dir: Path, main: bool):
        self.path = seed_dir / "tensorboard"
        self.writer = None
        self.main = main

    def __enter__(self):
        if self.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.path))
        return self.writer

    def __exit__(self, *exc):
        if self.writer is not None:
            self.writer.close()

