"""Inference from a finished (or interrupted) run: ``hybridcl.load_run(path).generate(task, prompts)``.

:func:`load_run` rebuilds the base model and its :class:`~hybridcl.model.components.ComponentSet`
from the run's ``config.yaml``, activates the tasks in the order they were trained and loads the
components saved after the last finished task of one seed. ``task="auto"`` chooses each prompt's
task by :mod:`hybridcl.inference.routing` (``routing.method`` of the run, fitted from the statistics saved with
each task's components).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from hybridcl.errors import RunError, quote
from hybridcl.model.parameters import load_component_state

AUTO = "auto"


class LoadedRun:
    """A run's model with all its components, routed per call to one task's parts."""

    def __init__(self, run_dir: Path, config, base, components, seed: int, stage_dir: Path, routers=None):
        self.run_dir, self.config, self.base, self.components = run_dir, config, base, components
        self.seed, self.stage_dir, self.routers = seed, stage_dir, routers

    @property
    def kind(self) -> str:
        return self.base.kind

    @property
    def tokenizer(self):
        return self.base.tokenizer

    @property
    def model(self):
        """The model with every component (a PEFT model once LoRA is used); route it with :meth:`route`."""
        return self.components.model

    @property
    def tasks(self) -> list[str]:
        """The run's tasks (in training order)."""
        return list(self.config.task_names)

    def check_task(self, task: str) -> str:
        if task == AUTO or task in self.config.task_names:
            return task
        raise RunError(
            f"task {quote(task)} is not a task of run {self.run_dir}: "
            f"choose one of {', '.join([*self.config.task_names, AUTO])}"
        )

    def route(self, task: str) -> None:
        """Send the forward pass through ``task``'s components."""
        self.components.route(self.check_task(task))

    def choose_tasks(self, sources: Sequence[str], among: Sequence[str] | None = None) -> list[str]:
        """The task the run's router picks for each source text (docstring, code or start of a
        function), among ``among`` (default: every task)."""
        from hybridcl.inference.routing import Prompts, routable_tasks

        allowed = self.config.task_names if among is None else among
        tasks = [t for t in routable_tasks(self.components) if t in allowed]
        if len(tasks) < 2:  # shared or no per-task parts: every task uses the same weights
            return [self.config.task_names[-1] if not tasks else tasks[0]] * len(sources)
        prompts = Prompts(
            list(sources),
            self.components,
            self.tokenizer,
            self.kind,
            self.config.data.max_source_len,
            self.config.eval.batch_size,
        )
        return self.routers.main.choose(prompts, tasks)

    def generate(self, task: str, prompts: str | Sequence[str], *, return_tasks: bool = False, seed: int = 0, **kwargs):
        """Generate for each prompt (a docstring for text-to-code runs, code for code-to-text, the start
        of a function for completion).

        ``task`` is one of the run's tasks or ``"auto"``; under ``"auto"`` a prompt that starts with a
        language tag, ``[python] ...``, goes to that task (the tag is removed) and the others are
        routed by :mod:`hybridcl.inference.routing`. Prompts are formatted with
        :func:`hybridcl.data.batching.encode_prompts` (as training encodes them) for the (chosen)
        task's language. Generation settings are the run's
        (:meth:`~hybridcl.evaluation.generate.GenerationSettings.from_config`); ``kwargs`` override
        them (``max_new_tokens``, ``num_beams``, ``do_sample``, ``temperature``, ``top_p``,
        ``batch_size``); ``seed`` seeds sampling. Returns the texts
        (one string for one string prompt); with ``return_tasks`` also the task used per prompt.
        """
        from hybridcl.data.batching import encode_prompts
        from hybridcl.evaluation.generate import GenerationSettings, code_language, generate
        from hybridcl.evaluation.precision import evaluation_precision

        single = isinstance(prompts, str)
        sources = [prompts] if single else list(prompts)
        task = self.check_task(task)
        cfg = self.config.eval
        device = next(self.model.parameters()).device
        sources, chosen = self._tasks_of(sources) if task == AUTO else (sources, [task] * len(sources))
        settings = replace(GenerationSettings.from_config(self.config), **kwargs)
        texts: list = [None] * len(sources)
        for t in dict.fromkeys(chosen):
            idx = [k for k, c in enumerate(chosen) if c == t]
            self.components.route(t)
            language, direction = self.config.task(t).language, self.config.task(t).direction
            assert language is not None and direction is not None  # resolved by the config
            prompts, _ = encode_prompts(
                self.tokenizer,
                [sources[k] for k in idx],
                [language] * len(idx),
                direction,
                self.kind,
                settings.max_source_len,
                prompt=self.config.data.prompt,
            )
            with evaluation_precision(cfg.precision, device):
                generated = generate(
                    self.model,
                    self.tokenizer,
                    prompts,
                    kind=self.kind,
                    settings=settings,
                    seed=seed,
                    progress=False,
                    code_language=code_language(language, direction, self.config.data.completion_target),
                )
            for k, text in zip(idx, generated.texts, strict=True):
                texts[k] = text
        out = texts[0] if single else texts
        if return_tasks:
            return out, (chosen[0] if single else chosen)
        return out

    def _tasks_of(self, sources: list[str]) -> tuple[list[str], list[str]]:
        """``task="auto"``: each prompt's language tag removed, and its task (the tag's, else routed)."""
        from hybridcl.evaluation.precision import evaluation_precision
        from hybridcl.inference.routing import split_language_tag

        tags, untagged_sources = zip(*(split_language_tag(s, self.config.task_names) for s in sources), strict=True)
        chosen = list(tags)
        # a prompt that names a language goes to that language's task, or is routed among its tasks
        groups: dict[tuple[str, ...], list[int]] = {}
        for k, (source, tag) in enumerate(zip(untagged_sources, tags, strict=True)):
            if tag is None:
                groups.setdefault(self._candidates(source), []).append(k)
        for candidates, idx in groups.items():
            if len(candidates) == 1:
                routed = [candidates[0]] * len(idx)
            else:  # routing's forward passes in the evaluation's precision too, as in the run
                with evaluation_precision(self.config.eval.precision, next(self.model.parameters()).device):
                    routed = self.choose_tasks([untagged_sources[k] for k in idx], candidates)
            for k, task in zip(idx, routed, strict=True):
                chosen[k] = task
        return list(untagged_sources), chosen

    def _candidates(self, source: str) -> tuple[str, ...]:
        """The tasks a request may go to: those of the language it names, else every task."""
        from hybridcl.inference.routing import named_language

        language = named_language(source)
        return tuple(t.name for t in self.config.tasks if t.language == language) or tuple(self.tasks)


def load_run(path: str | Path, *, seed: int | None = None, device: str | None = None) -> LoadedRun:
    """Rebuild a run's model with the components saved after its last finished task.

    ``seed``: which seed's components (default: the run's first seed). ``device``: ``"cpu"``,
    ``"cuda"``... (default: the base model's loading device, CPU). Raises :class:`RunError` if the
    folder is not a run or the seed finished no task.
    """
    from hybridcl.config.sweep import is_sweep, sweep_run_dirs
    from hybridcl.model.components import ComponentSet
    from hybridcl.model.loading import load_base
    from hybridcl.records.io import load_tensors
    from hybridcl.records.run_dir import SeedDir, load_run_config
    from hybridcl.strategies import get_strategy

    run_dir = Path(path)
    if is_sweep(run_dir):
        raise RunError(f"{run_dir} is a sweep of several runs: load one of them, e.g. {sweep_run_dirs(run_dir)[0]}")
    config = load_run_config(run_dir)
    seed = config.run.seeds[0] if seed is None else seed
    if seed not in config.run.seeds:
        raise RunError(f"run {run_dir} has no seed {seed}: choose one of {config.run.seeds}")
    seed_dir = SeedDir(run_dir, seed)
    if not seed_dir.state_file.is_file():
        raise RunError(f"{seed_dir.path} has no state.json: the seed never started; run it with `hybridcl run`")
    stages = seed_dir.load_state().stages_done
    if not stages:
        raise RunError(f"{seed_dir.path} finished no task yet: resume it with `hybridcl run --resume {run_dir}`")
    base = load_base(config.model)
    components = ComponentSet(base.model, base.kind, get_strategy(config.strategy), config.components)
    with torch.random.fork_rng(devices=[]):
        for stage in stages:
            components.activate(stage)
    stage_dir = seed_dir.stage_dir(len(stages), stages[-1])
    load_component_state(components, load_tensors(stage_dir / "components.safetensors"))
    components.model.requires_grad_(False)
    components.model.eval()
    if device is not None:
        components.model.to(device)
    return LoadedRun(run_dir, config, base, components, seed, stage_dir, _load_routers(config, seed_dir, stages))


def _load_routers(config, seed_dir, stages: list[str]):
    """The run's routers from the statistics saved with each stage; a run saved before routers were
    fitted routes by ``min_prompt_loss``, which needs none."""
    from hybridcl.inference.routing import STATS_FILE, Routers
    from hybridcl.records.io import load_tensors

    saved = [seed_dir.stage_dir(i, stage) / STATS_FILE for i, stage in enumerate(stages, 1)]
    if not all(path.is_file() for path in saved):
        return Routers(replace(config.routing, method="min_prompt_loss", compare=[]))
    routers = Routers(replace(config.routing, compare=[]))
    for stage, path in zip(stages, saved, strict=True):
        routers.load_task(stage, load_tensors(path))
    return routers
