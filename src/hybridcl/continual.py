"""The recipe: one seed of a continual-learning run, top to bottom.

``R[i][j]`` is a metric on task j's evaluation examples after stage i; row 0 is the base model
before any training. After each stage every task is evaluated (tasks not trained yet too, for
forward transfer), so each run ends with the full matrix.

::

    recipe.setup()                       # base model, components, data, the strategy's rule
    recipe.evaluate(0)                   # row 0: the frozen base
    for each stage i:
        recipe.train_stage(i)            # or recipe.restore_stage(i): its saved checkpoint
        recipe.evaluate(i)               # row i, with and without the task id
    recipe.finish()                      # CL metrics, routing, HumanEval -> seed-<s>/results.json

``hybridcl run`` trains; ``--resume`` restores the stages an interrupted run finished and trains
the rest; ``hybridcl eval`` restores every stage and evaluates again. All three go through
:func:`run_seed`'s one loop. Checkpoints and state are written atomically after each stage, so a
resumed run ends with the same results as an uninterrupted one (CPU, same seed).
"""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path

import torch
from accelerate import PartialState

from hybridcl import __version__
from hybridcl.config.experiment import ExperimentConfig, TaskConfig, apply_override, build_config
from hybridcl.data.batching import encode, target_length_counter
from hybridcl.data.provenance import check_data_files
from hybridcl.data.tasks import TaskData, data_sources, load_task_data, task_data_config
from hybridcl.errors import ConfigError, RunError, quote
from hybridcl.evaluation.efficiency import Meter
from hybridcl.evaluation.matrix import MatrixEvaluator, Row
from hybridcl.evaluation.precision import evaluation_precision
from hybridcl.inference.routing import STATS_FILE, Prompts, Routers, fitting_texts, routed_results
from hybridcl.model.components import ComponentSet
from hybridcl.model.loading import load_base
from hybridcl.model.parameters import component_state, count_parameters, load_component_state
from hybridcl.progress import note
from hybridcl.records.environment import environment_record
from hybridcl.records.io import load_tensors, read_json, save_tensors, write_json
from hybridcl.records.results import Matrix, SeedResults, SeedState, aggregate
from hybridcl.records.run_dir import RunLock, SeedDir, Undo, load_run_config, new_run_dir, write_run_config
from hybridcl.records.trackers import Trackers
from hybridcl.stats.intervals import cl_intervals, has_interval, own_training_effect
from hybridcl.strategies import get_strategy
from hybridcl.strategies.rules import make_rule
from hybridcl.training.loop import make_accelerator, train_task
from hybridcl.training.state import read_progress


class ContinualRecipe:
    """One seed of one run: the stages of its strategy, trained (or restored) and evaluated in order."""

    def __init__(
        self, config: ExperimentConfig, seed_dir: SeedDir, *, checkpoints: SeedDir | None = None, progress: bool = True
    ):
        self.config, self.seed_dir, self.seed, self.progress = config, seed_dir, seed_dir.seed, progress
        self.checkpoints = checkpoints or seed_dir  # where stages are restored from (`hybridcl eval --out`)

    def setup(self, state: SeedState, *, with_train: bool = True) -> None:
        self._clock = time.perf_counter()  # the seed's wall time counts from here (SeedState.wall_seconds)
        random.seed(self.seed)
        torch.manual_seed(self.seed)
        config = self.config
        self.state = state
        self.strategy = get_strategy(config.strategy)
        self.base = load_base(config.model)
        self.components = ComponentSet(self.base.model, self.base.kind, self.strategy, config.components)
        self.accelerator = make_accelerator(config.train, config.run.device)
        # with several processes, every one trains; only the first evaluates and writes
        self.main = self.accelerator.is_main_process
        self.components.model.to(self.accelerator.device)
        self.target_lengths = target_length_counter(self.base.tokenizer, self.base.kind)
        # the evaluation set is the same for every seed; the training set too unless data.train_subset = per_seed
        self.train_seed = self.seed if config.data.train_subset == "per_seed" else 0
        self.data = {t.name: self._load_data(t, with_train=with_train) for t in config.tasks}
        self.rule = make_rule(self.strategy, config, self.data)
        self.stages = self.rule.stages(config.task_names)
        self.cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else self.seed_dir.path.parent / "cache"
        # fitted task by task from each task's own training prompts, saved with its components
        self.routers = Routers(config.routing) if self.strategy.routable and config.eval.routing else None
        self.evaluator = MatrixEvaluator(
            config,
            self.base,
            self.components,
            self.data,
            cache_dir=self.cache_dir,
            progress=self.progress,
            routers=self.routers,
        )

    def _load_data(self, task: TaskConfig, *, with_train: bool) -> TaskData:
        config = self.config
        assert task.language is not None  # resolved by the config
        return load_task_data(
            task_data_config(config.data, task),
            task.language,
            eval_split=config.eval.split,
            train_seed=self.train_seed,
            target_lengths=self.target_lengths,
            with_train=with_train,
        )

    def _activate(self, i: int) -> str:
        stage = self.stages[i - 1].name
        torch.manual_seed(self.seed * 1000 + i)  # new parts get the same random init on resume
        self.components.activate(stage)
        return stage

    def resumed_at(self, i: int) -> tuple[str, int] | None:
        """Stage ``i``'s name and the step its mid-task checkpoint holds, if it has one."""
        if i > len(self.stages):
            return None
        stage = self.stages[i - 1].name
        progress = read_progress(self.seed_dir.progress_file(i, stage))
        return (stage, progress["steps"]) if progress is not None and progress.get("task") == stage else None

    def restore_stage(self, i: int) -> None:
        """Create stage ``i``'s parts and load their weights (and the rule's state) as saved after it."""
        stage = self._activate(i)
        stage_dir = self.checkpoints.stage_dir(i, stage)
        load_component_state(self.components, load_tensors(stage_dir / "components.safetensors"))
        self.rule.load_state_dict(load_tensors(stage_dir / "rule.safetensors"))
        if self.routers is not None and self.main:
            saved = stage_dir / STATS_FILE
            try:
                self.routers.load_task(stage, load_tensors(saved) if saved.is_file() else {})
            except ValueError:  # saved before routers were fitted, or with other methods: fit them now
                self._fit_router(stage)

    def _fit_router(self, task: str) -> dict[str, torch.Tensor]:
        """Add ``task`` to the routers from its own training prompts; returns its statistics for saving."""
        assert self.routers is not None  # called only where the strategy routes
        train = self.data[task].train or self._load_data(self.config.task(task), with_train=True).train
        cfg = self.config
        by_kind = {
            kind: Prompts(
                texts,
                self.components,
                self.base.tokenizer,
                self.base.kind,
                cfg.data.max_source_len,
                cfg.eval.batch_size,
            )
            for kind in cfg.routing.fit_on
            if (texts := fitting_texts(train, [kind]))
        }
        with evaluation_precision(cfg.eval.precision, self.accelerator.device):  # as routing runs
            return self.routers.fit_task(task, by_kind)

    def train_stage(self, i: int, trackers=None) -> None:
        """Train stage ``i``, save its checkpoint and record it in ``state.json``."""
        stage = self._activate(i)
        stage_tasks = self.stages[i - 1].tasks
        examples = self.rule.training_examples(stage_tasks, seed=self.seed + i)
        encoded = encode(
            examples,
            self.base.tokenizer,
            self.base.kind,
            self.config.data.max_source_len,
            self.config.data.max_target_len,
            cache_dir=self.cache_dir,
            progress=self.progress and self.main,
            long_targets=self.config.data.long_targets,
            prompt=self.config.data.prompt,
        )
        with Meter(self.accelerator.device) as meter:
            result = train_task(
                self.components.model,
                encoded,
                self.config.train,
                accelerator=self.accelerator,
                kind=self.base.kind,
                pad_token_id=self.base.tokenizer.pad_token_id,
                seed=self.seed * 1000 + i,
                task=stage,
                log_path=self.seed_dir.train_log,
                trackers=trackers,
                penalty=self.rule.penalty,
                progress=self.progress,
                checkpoint=self.seed_dir.progress_file(i, stage),
            )
        if self.main:
            took = f"{result.steps} steps in {result.seconds:.1f} s, loss {result.final_loss:.3f}"
            note(f"stage {i}/{len(self.stages)} {stage}: {took}")
        self.rule.after_task(self.components, stage_tasks, encoded, self.base)
        self.state.train.append(
            {
                "task": stage,
                **result.__dict__,
                "peak_memory_gb": meter.peak_memory_gb,
                "n_truncated_source": encoded.n_truncated_source,
                "n_truncated_target": encoded.n_truncated_target,
                "n_examples": len(examples),
                "trainable_params": count_parameters(self.components).trainable,
                "precision": "bf16"
                if self.accelerator.mixed_precision == "bf16"
                else "fp32",  # train.precision resolved
                **self.rule.train_record(),
            }
        )
        if self.main:
            meta = {"task": stage, "hybridcl": __version__}
            stage_dir = self.seed_dir.stage_dir(i, stage)
            save_tensors(stage_dir / "rule.safetensors", self.rule.state_dict(), metadata=meta)
            save_tensors(stage_dir / "components.safetensors", component_state(self.components), metadata=meta)
            if self.routers is not None:
                save_tensors(stage_dir / STATS_FILE, self._fit_router(stage), metadata=meta)
            # recorded as trained before its row is evaluated (minutes at scale): a resume from here
            # restores the stage and evaluates it, rather than training it again
            self._save_state()
            self.seed_dir.drop_progress(i, stage)

    def evaluate(self, i: int) -> None:
        """Row ``i`` of the matrix with the task id and, where there is a choice, without it; then save the state."""
        if self.main:
            with evaluation_precision(self.config.eval.precision, self.accelerator.device):
                self._evaluate(i)
            note(f"row {i} of the matrix evaluated ({'base model' if i == 0 else 'after ' + self.stages[i - 1].name})")
        self.accelerator.wait_for_everyone()

    def lacks_cells(self, i: int) -> bool:
        """Row ``i`` was made before the run learned more tasks and lacks their columns."""
        return i < len(self.state.rows) and bool(self.evaluator.missing(i, self.state.rows[i]))

    def _evaluate(self, i: int) -> None:
        # a row made before the run learned more tasks keeps its cells and scores the new columns
        known = self._saved_row(i) if i < len(self.state.rows) else None
        resumed = i > 1 and self.evaluator.reuses_cells and self.evaluator.previous_index != i - 1
        if resumed and (saved := self._saved_row(i - 1)) is not None:
            self.evaluator.remember(saved)  # row i - 1 was made before a resume: reuse its cells as then
        if i == 0:
            with self.components.base_only():
                row = self.evaluator.row(0, known)
        else:
            row = self.evaluator.row(i, known)
        self._write_predictions(f"row{i}", row)
        save_tensors(self.seed_dir.stats_file(i), _flat_stats(row.stats))
        if i < len(self.state.rows):
            self.state.rows[i] = row.cells
        else:
            self.state.rows.append(row.cells)
        routed = self.evaluator.routed_row(i, row) if i > 0 and self.config.eval.routing else None
        if routed is not None:
            self.state.routed[i] = routed.result
            save_tensors(self.seed_dir.routed_stats_file(i), _flat_stats(routed.stats))
            for task, predictions in routed.predictions.items():
                self.seed_dir.write_predictions(
                    f"routed-row{i}-{task}",
                    [
                        {"id": ex.id, "routed_to": c, "prediction": p, "reference": ex.target}
                        for ex, c, p in zip(
                            self.evaluator.examples(task), routed.chosen[task], predictions, strict=False
                        )
                    ],
                )
        self._save_state()

    def _saved_row(self, i: int) -> Row | None:
        """Row ``i`` as this seed saved it (cells, predictions, per-example statistics); None where a file
        is gone (its cells are then scored again)."""
        cells = self.state.rows[i]
        files = {t: self.seed_dir.predictions_file(f"row{i}-{t}") for t, cell in cells.items() if cell}
        if not self.seed_dir.stats_file(i).is_file() or not all(f.is_file() for f in files.values()):
            return None
        row = Row(i, dict(cells), {}, {}, _nested_stats(load_tensors(self.seed_dir.stats_file(i))))
        for task in files:
            lines = self.seed_dir.read_predictions(f"row{i}-{task}")
            row.predictions[task] = [line["prediction"] for line in lines]
            row.hit_limit[task] = [line["hit_limit"] for line in lines]
        return row

    def _tick(self) -> None:
        now = time.perf_counter()
        self.state.wall_seconds += now - self._clock
        self._clock = now

    def _save_state(self) -> None:
        self._tick()
        self.seed_dir.save_state(self.state)

    def _write_predictions(self, name: str, row: Row) -> None:
        for task, predictions in row.predictions.items():
            self.seed_dir.write_predictions(
                f"{name}-{task}",
                [
                    {"id": ex.id, "prediction": p, "reference": ex.target, "hit_limit": h}
                    for ex, p, h in zip(self.evaluator.examples(task), predictions, row.hit_limit[task], strict=True)
                ],
            )

    def _intervals(self, matrix: Matrix, *, routed: bool = False) -> dict[str, dict]:
        """95% bootstrap intervals of every cell and CL metric that decomposes over examples (paired rows);
        ``routed``: of the matrix without the task id (rows not routed are the same as with it)."""
        files = [
            self.seed_dir.routed_stats_file(i) if routed and i in self.state.routed else self.seed_dir.stats_file(i)
            for i in range(len(self.state.rows))
        ]
        stats = [load_tensors(f) for f in files]
        out = {}
        for metric in matrix.values:
            if not has_interval(metric):
                continue
            cells = [
                [(None if (s := row.get(f"{t}/{metric}")) is None else s.numpy()) for t in self.config.task_names]
                for row in stats
            ]
            intervals = cl_intervals(metric, cells, n_resamples=self.config.eval.bootstrap_resamples)
            result = intervals.to_json()
            if matrix.one_stage_per_task:
                result["own_training"] = own_training_effect(intervals)
            else:  # joint: forgetting and transfer are not defined
                result["cl"], result["intervals"] = {}, {}
            out[metric] = result
        return out

    def finish(self) -> SeedResults:
        """The seed's results (CL metrics, routing, HumanEval), written to ``results.json``."""
        config = self.config
        counts = count_parameters(self.components)
        slot = self.components.slot
        matrix = Matrix.from_cells(config.task_names, ["base", *self.state.stages_done], self.state.rows)
        humaneval = None
        python = [t.name for t in config.tasks if t.language == "python" and t.direction == "text-to-code"]
        if config.eval.humaneval and python:
            with evaluation_precision(config.eval.precision, self.accelerator.device):
                humaneval = self.evaluator.humaneval(python[0])
        intervals = self._intervals(matrix)
        routed = self._intervals(matrix, routed=True) if self.state.routed else {}
        self._tick()  # results.json's wall time: up to here
        results = SeedResults.build(
            config.strategy,
            config.task_names,
            self.state,
            intervals=intervals,
            eval_precision=config.eval.precision,
            params={
                "base": counts.base,
                "lora_per_adapter": counts.lora_per_adapter,
                "full_layer_per_block": counts.full_layer_per_block,
                "adapters": counts.n_adapters,
                "blocks": counts.n_blocks,
                "stored_total": counts.stored_total,
                "trainable_last_task": counts.trainable,
                "full_layer_position": slot.placement.position if slot is not None else None,
            },
            data={t: {**self.data[t].report, **self.evaluator.ceilings(t)} for t in config.task_names},
            routing=routed_results(matrix, self.state.routed, routed),
            humaneval=humaneval,
        )
        write_json(self.seed_dir.results_file, results.to_json())
        self.state.finished = True
        self._save_state()
        return results


def _with_environment(results: list[SeedResults | None]) -> dict:
    """The run's ``results.json``: the seeds' results aggregated, and what the run ran on."""
    return {**aggregate([r for r in results if r is not None]), "environment": environment_record()}


def _flat_stats(stats: dict[str, dict]) -> dict[str, torch.Tensor]:
    return {
        f"{task}/{m}": torch.from_numpy(values) for task, by_metric in stats.items() for m, values in by_metric.items()
    }


def _nested_stats(flat: dict[str, torch.Tensor]) -> dict[str, dict]:
    """:func:`_flat_stats` undone: task -> metric -> per-example statistics."""
    out: dict[str, dict] = {}
    for key, values in flat.items():
        task, metric = key.split("/", 1)
        out.setdefault(task, {})[metric] = values.numpy()
    return out


def run_seed(
    config: ExperimentConfig, seed_dir: SeedDir, *, progress: bool = True, reevaluate_from: SeedDir | None = None
) -> SeedResults | None:
    """Train every stage of one seed and evaluate after each; with ``reevaluate_from`` (a finished
    seed), restore its stages instead and evaluate them again, writing into ``seed_dir``.

    Returns the seed's results (``None`` on processes other than the main one).
    """
    reevaluate = reevaluate_from is not None
    if reevaluate_from is not None:
        finished = reevaluate_from.load_state()
        if not finished.finished:
            raise RunError(
                f"{reevaluate_from.path} is not finished: complete it with "
                f"`hybridcl run --resume {reevaluate_from.path.parent}` first"
            )
        state = SeedState(train=finished.train)  # training records stay; every row is evaluated again
    else:
        state = seed_dir.load_state()
        if (bad := seed_dir.first_unreadable_stage(state)) is not None:  # train again from there (deterministic)
            state = SeedState(
                rows=state.rows[:bad],
                train=state.train[: bad - 1],
                routed={i: r for i, r in state.routed.items() if i < bad},
            )
        elif state.finished_on(config.task_names):
            return SeedResults.from_json(read_json(seed_dir.results_file), where=seed_dir.results_file)
        state.finished = False  # a finished seed of a run that learns more tasks goes on
    seed_dir.path.mkdir(parents=True, exist_ok=True)
    recipe = ContinualRecipe(config, seed_dir, checkpoints=reevaluate_from, progress=progress)
    recipe.setup(state, with_train=not reevaluate)
    if recipe.main and not reevaluate:
        seed_dir.drop_unfinished_log(state.stages_done, recipe.resumed_at(len(state.train) + 1))
    tracked = recipe.main and not reevaluate
    with Trackers(config.run.report_to, seed_dir, run_config=config.to_dict(), enabled=tracked) as trackers:
        for i in range(len(recipe.stages) + 1):
            if i > 0:
                trackers.at(state.train[: i - 1])
                if i <= len(state.train):  # finished before (an interrupted or extended run, `hybridcl eval`)
                    recipe.restore_stage(i)
                    trackers.at(state.train[:i])
                else:
                    recipe.train_stage(i, trackers)
                    trackers.stage(i, state.train[-1])
            if len(state.rows) <= i:
                recipe.evaluate(i)
                trackers.row(state, i)
            elif recipe.lacks_cells(i):  # a run that learns more tasks: their columns in its earlier rows
                recipe.evaluate(i)
        results = recipe.finish() if recipe.main else None
        trackers.results(results)
    return results


def run_experiment(config: ExperimentConfig, run_dir: Path | None = None, *, progress: bool = True) -> Path:
    """Run (or resume, if ``run_dir`` holds a started run) every seed; return the run folder."""
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    main = PartialState().is_main_process
    with RunLock(run_dir, enabled=main):
        write_run_config(run_dir, config)
        _run_seeds(config, run_dir, progress=progress, main=main)
    return run_dir


def _run_seeds(config: ExperimentConfig, run_dir: Path, *, progress: bool, main: bool) -> None:
    results = [run_seed(config, SeedDir(run_dir, seed), progress=progress) for seed in config.run.seeds]
    if main:
        write_json(run_dir / "results.json", _with_environment(results))


def learn_tasks(run_dir: Path, tasks: list[str | dict], *, progress: bool = True) -> Path:
    """Teach a finished run more tasks, after the ones it has: the same as a run started on all of them.

    Each seed restores its stages from their checkpoints, scores the new tasks' columns in the rows it
    made (with ``eval.forward_transfer``; row 0 always), trains the new stages (new per-task parts;
    shared parts and the strategy's rule state go on from the last stage), extends the routers from the
    new tasks' own training prompts and evaluates the new rows; then results.json is written again.
    Checkpoints, router files, per-example statistics and matrices are those of a run started with
    every task (same seeds). A failure before any new stage is saved leaves the folder as it was; after
    that, ``hybridcl run --resume RUN_DIR`` finishes it.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    extended = _extended(config, tasks, run_dir)
    seeds = [SeedDir(run_dir, seed) for seed in config.run.seeds]
    main = PartialState().is_main_process
    with RunLock(run_dir, enabled=main):
        states = [s.load_state() for s in seeds]  # read under the lock: no other writer changes them now
        for seed_dir, state in zip(seeds, states, strict=True):
            if not state.finished_on(config.task_names):
                raise RunError(
                    f"{seed_dir.path} is not finished: complete it with `hybridcl run --resume {run_dir}`, "
                    "then learn more tasks"
                )
        stages_before = [len(state.train) for state in states]
        _check_data_unchanged(run_dir, config)
        kept = lambda: any(len(s.load_state().train) > n for s, n in zip(seeds, stages_before, strict=True))  # noqa: E731
        with Undo(run_dir, kept=kept) if main else contextlib.nullcontext():
            if main:
                write_run_config(run_dir, extended, overwrite=True)
            _run_seeds(extended, run_dir, progress=progress, main=main)
    return run_dir


def _extended(config: ExperimentConfig, tasks: list[str | dict], run_dir: Path) -> ExperimentConfig:
    """``config`` with ``tasks`` (names or task records) after its own; refuses what a finished run
    cannot learn."""
    if not tasks:
        raise ConfigError("give the tasks to learn, e.g. `hybridcl learn RUN_DIR go`")
    names = [t if isinstance(t, str) else str(t.get("name")) for t in tasks]
    if not get_strategy(config.strategy).sequential:
        raise ConfigError(
            f"{run_dir}: strategy {config.strategy} trains one stage on every task at once and has no sequence "
            f"to extend: start a new run with tasks=[{','.join([*config.task_names, *names])}]"
        )
    for name in names:
        if name in config.task_names:
            raise ConfigError(f"{run_dir} has a task {quote(name)} already: give the new task another name")
    raw = config.to_dict()
    raw["tasks"] = [*raw["tasks"], *tasks]
    return build_config(raw)


def _check_data_unchanged(run_dir: Path, config: ExperimentConfig) -> None:
    """The run's earlier tasks are read again (their rows, routing, replay): their files must be the
    ones the run read."""
    changed = check_data_files(read_json(run_dir / "results.json"), data_sources(config.data, config.tasks))
    if changed:
        raise RunError(f"{run_dir}: {changed[0]}; the run cannot learn more tasks on other data")


def evaluate_run(
    run_dir: Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    data: Path | None = None,
    out: Path | None = None,
    progress: bool = True,
) -> Path:
    """Evaluate every saved checkpoint of a finished run again, optionally with other ``eval.*`` settings.

    ``data``: score on another data set instead, a folder of record files ``<language>.<split>.jsonl[.gz]``
    (``split`` is ``eval.split``; ``hybridcl data extract`` writes them); all its examples are scored
    (``eval.max_examples`` caps generation). ``out``: write the results there (config, results,
    predictions, report) and leave the run untouched; required with ``data``. Without ``out`` the
    run's own matrices, CL metrics and routing are recomputed in place and its ``config.yaml``
    records the evaluation settings used; training results are kept. Returns the folder written.
    """
    run_dir = Path(run_dir)
    bad = [o for o in overrides if not o.startswith("eval.")]
    if bad:
        raise ConfigError(f"hybridcl eval takes eval.* settings only, not {quote(bad[0])}: training is not repeated")
    if data is not None and out is None:
        raise ConfigError("hybridcl eval --data needs --out DIR: scores on other data never replace the run's own")
    raw = load_run_config(run_dir).to_dict()
    for item in overrides:
        apply_override(raw, item)
    if data is not None:
        if not Path(data).is_dir():
            raise ConfigError(
                f"--data {data} is not a folder: give a folder of <language>.<split>.jsonl[.gz] record files"
            )
        raw["data"] |= {"source": "jsonl", "path": str(data), "max_val": None}
    config = build_config(raw)
    target = Path(out) if out is not None else run_dir
    if out is not None:
        if target.resolve() == run_dir.resolve():
            raise ConfigError(f"--out {out} is the run folder itself: leave --out out to evaluate in place")
        if target.exists() and any(target.iterdir()):
            raise ConfigError(f"--out {out} exists and is not empty: choose a new folder")
        target.mkdir(parents=True, exist_ok=True)
    with RunLock(target):
        results = [
            run_seed(config, SeedDir(target, seed), progress=progress, reevaluate_from=SeedDir(run_dir, seed))
            for seed in config.run.seeds
        ]
        write_run_config(target, config, overwrite=True)
        write_json(target / "results.json", _with_environment(results))
    return target
