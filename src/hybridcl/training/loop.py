"""One task's training loop: AdamW, linear (or constant) schedule, clipping, accumulation, on Accelerate.

The loop reads top to bottom. A strategy's rule can add a ``penalty(model) -> tensor`` to the loss
(EWC, O-LoRA); data-level rules (replay, joint) change the examples before they get here.

``train.batch_size`` is the global batch: with several processes (``accelerate launch``) each
batch is split between them, and the loss is the sum over the global batch's target tokens
divided by their number, so N processes compute the same step as one process (up to float
summation order).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, PartialState
from torch.utils.data import DataLoader
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from hybridcl.config.experiment import TrainConfig
from hybridcl.data.batching import Encoded, batch_indices, collate
from hybridcl.errors import HybridclError
from hybridcl.model.dropout import use_cpu_dropout
from hybridcl.progress import progress_bar
from hybridcl.training.loss import decoder_inputs_fn, token_scores
from hybridcl.training.state import LossWindow, Position, StopSignals, TrainingInterrupted, TrainState, set_rng

_GPU_FLUSH_STEPS = 50  # optimizer steps between reads of the loss on a GPU
_EAGER_DEVICES = ("cpu",)  # device types where the loss is read back every step


class TrainingDiverged(HybridclError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What one task's training did. Seconds of wall time; memory in GB."""

    steps: int
    samples: int
    tokens: int  # non-padding input + label tokens seen
    seconds: float
    samples_per_s: float
    tokens_per_s: float
    final_loss: float
    losses: list[tuple[int, float]] = field(default_factory=list)  # (optimizer step, mean loss)

    def finish(self, seconds: float) -> None:
        """Set the task's wall seconds and what follows from them, and the last logged loss."""
        self.seconds = seconds
        self.samples_per_s = self.samples / seconds
        self.tokens_per_s = self.tokens / seconds
        self.final_loss = self.losses[-1][1] if self.losses else float("nan")


def cpu_has_native_bf16() -> bool:
    """Whether this processor multiplies bf16 matrices in hardware (AVX512-BF16 or AMX) and torch's
    oneDNN kernels can use it; where not, bf16 autocast is emulated and slower than float32."""
    if not torch.backends.mkldnn.is_available():
        return False
    # torch 2.13 has no public query; torch.cpu's cpuinfo probes are the ones its own kernels use.
    # Missing probes (another torch) read as "no": float32, the safe default.
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe() for probe in probes if probe is not None)


def training_precision(precision: str, *, cpu: bool) -> str:
    """``train.precision`` resolved for a device: ``"bf16"`` (autocast, float32 master weights and
    AdamW state) or ``"fp32"``. ``auto`` is bf16 on a GPU that supports it and on a CPU with
    native bf16 (:func:`cpu_has_native_bf16`: 1.8x faster per step on 2 AMD EPYC cores with
    avx512_bf16, benchmarks/README.md), float32 elsewhere."""
    if precision != "auto":
        return precision
    native = cpu_has_native_bf16() if cpu else torch.cuda.is_bf16_supported()
    return "bf16" if native else "fp32"


def make_accelerator(cfg: TrainConfig, device: str) -> Accelerator:
    """An Accelerator for ``device`` (auto|cpu|cuda) in :func:`training_precision`'s precision."""
    cpu = device == "cpu" or not torch.cuda.is_available()
    precision = "bf16" if training_precision(cfg.precision, cpu=cpu) == "bf16" else "no"
    state = AcceleratorState._shared_state
    if state.get("_mixed_precision") not in (None, precision) and PartialState().num_processes == 1:
        # Accelerate keeps one process-wide state and raises on a second precision; a process that
        # runs configurations one after another (tests, sweeps) starts it afresh. Accelerate has no
        # public reset; its own tests call this one.
        AcceleratorState._reset_state()
    return Accelerator(
        cpu=cpu,
        mixed_precision=precision,
        gradient_accumulation_steps=cfg.grad_accum,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps a task trains: per epoch, in all, and the epochs they span."""

    steps_per_epoch: int
    total_steps: int
    n_epochs: int

    @classmethod
    def of(cls, n_examples: int, cfg: TrainConfig) -> StepPlan:
        steps_per_epoch = math.ceil(math.ceil(n_examples / cfg.batch_size) / cfg.grad_accum)
        total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
        return cls(steps_per_epoch, total_steps, math.ceil(total_steps / steps_per_epoch))


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW over ``params``. Fused on a GPU (all parameters in a few kernels); on a CPU the update is
    under 1% of a step (LoRA's few small tensors) and the plain loop keeps torch's overflow error,
    which :class:`TrainingDiverged` reports."""
    return torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True if device_type == "cuda" else None
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """``train.lr_schedule`` after ``train.warmup_ratio`` of the steps: linear decay to 0, or constant."""
    warmup = int(cfg.warmup_ratio * total_steps)
    if cfg.lr_schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def build_loader(
    features: list[dict], batches: list[list[int]], cfg: TrainConfig, *, kind: str, pad_token_id: int, accelerator
) -> DataLoader:
    """A loader over ``batches`` (lists of indices into ``features``), prepared by Accelerate (which
    splits each batch between processes)."""
    loader = DataLoader(
        features,
        batch_sampler=_Batches(batches, cfg.batch_size),
        collate_fn=lambda f: collate(f, pad_token_id, kind, mask_padding=cfg.mask_padding_in_loss),
    )
    return accelerator.prepare_data_loader(loader)


@dataclass
class _Pending:
    """One batch's loss, still on the device until a flush reads it."""

    step: int  # the optimizer step the batch belongs to
    epoch: int
    loss: torch.Tensor
    end: tuple[float, int, float] | None = None  # (seconds, samples, lr) when the batch ends a step


class StepLog:
    """Reads batch losses back and writes the training log (jsonl, TensorBoard, the progress bar).

    Losses stay on the device until a flush reads them in one transfer: every step on a CPU
    (reading is free there, and a non-finite loss stops training before its update), every
    ``_GPU_FLUSH_STEPS`` steps on a GPU, where each read would wait for the queued kernels. A flush
    writes the log lines of the steps it covers, as if written at each step.
    """

    def __init__(self, task: str, cfg: TrainConfig, total_steps: int, result: TrainResult, log, trackers, bar):
        self.task, self.cfg, self.total_steps, self.result = task, cfg, total_steps, result
        self.log, self.trackers, self.bar = log, trackers, bar
        self.pending: list[_Pending] = []
        self.window = LossWindow()

    def read(self, entries: list[_Pending]) -> list[float]:
        values = torch.stack([e.loss for e in entries]).tolist()
        for entry, value in zip(entries, values, strict=True):
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"task {self.task}: the loss became {value} at step {entry.step} (epoch {entry.epoch}); "
                    "finished tasks keep their checkpoints; start a new run with a lower train.lr or a train.grad_clip"
                )
        return values

    def flush(self) -> None:
        if not self.pending:
            return
        for entry, value in zip(self.pending, self.read(self.pending), strict=True):
            self.window.add(value)
            if entry.end is not None:  # else a batch accumulated into a later optimizer step
                self._step_end(entry, *entry.end)
        self.pending.clear()

    def _step_end(self, entry: _Pending, elapsed: float, samples: int, lr: float) -> None:
        mean, step = self.window.mean, entry.step
        if step % self.cfg.log_every == 0 or step == self.total_steps:
            self.result.losses.append((step, mean))
            line = {"task": self.task, "step": step, "epoch": entry.epoch, "loss": mean, "lr": lr}
            if self.log is not None:
                self.log.write(json.dumps(line | {"samples_per_s": samples / elapsed}) + "\n")
                self.log.flush()
            if self.trackers is not None:  # hybridcl.records.trackers.Trackers: one global step axis over the stages
                self.trackers.train_step(step, mean, lr)
            self.window.reset()
        # the bar shows the mean loss since the last log line
        self.bar.set_postfix(loss=f"{mean:.3f}", lr=f"{lr:.2e}", samples_s=f"{samples / elapsed:.1f}", refresh=False)


def train_task(
    model: torch.nn.Module,
    encoded: Encoded,
    cfg: TrainConfig,
    *,
    accelerator: Accelerator,
    kind: str,
    pad_token_id: int,
    seed: int,
    task: str,
    log_path: Path | None = None,
    trackers=None,
    penalty: Callable[[torch.nn.Module], torch.Tensor | None] | None = None,
    progress: bool = True,
    checkpoint: Path | None = None,
) -> TrainResult:
    """Train ``model``'s trainable parameters on ``encoded`` for ``cfg.epochs`` epochs (or ``cfg.max_steps``).

    ``checkpoint``: the file of this task's mid-task checkpoint (:mod:`hybridcl.training.state`), written
    every ``cfg.checkpoint_every`` optimizer steps and when SIGTERM or SIGINT arrives (then training
    stops with :class:`TrainingInterrupted`); if it exists, training continues from it.
    """
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise HybridclError(f"task {task}: the strategy left no trainable parameter")
    pairs = list(zip(encoded.input_ids, encoded.labels, strict=True))
    features = [{"input_ids": i, "labels": t} for i, t in pairs]
    lengths = [len(i) + (len(t) if kind == "seq2seq" else 0) for i, t in pairs]  # tokens per example
    plan = StepPlan.of(len(features), cfg)
    optimizer = build_optimizer(params, cfg, accelerator.device.type)
    scheduler = build_scheduler(optimizer, cfg, plan.total_steps)
    model, optimizer, scheduler, attention, decoder_inputs = _prepare(model, optimizer, scheduler, accelerator)
    unwrapped = accelerator.unwrap_model(model)
    result = TrainResult(0, 0, 0, 0.0, 0.0, 0.0, float("nan"))
    state = TrainState(checkpoint, task, plan.total_steps, unwrapped, optimizer, scheduler, accelerator)
    position = state.restore(result) if checkpoint is not None else Position()
    shown = progress and accelerator.is_main_process
    bar = progress_bar(total=plan.total_steps, initial=result.steps, desc=f"train {task}", unit="step", enabled=shown)
    log = log_path.open("a") if log_path is not None and accelerator.is_main_process else None
    steps = StepLog(task, cfg, plan.total_steps, result, log, trackers, bar)
    steps.window = position.window
    loop = _Loop(model, kind, decoder_inputs, accelerator, optimizer, scheduler, params, cfg, penalty, unwrapped, steps)
    loop.features, loop.lengths, loop.plan, loop.seed, loop.pad_token_id = features, lengths, plan, seed, pad_token_id
    loop.state, loop.start = state, time.perf_counter() - position.seconds
    try:
        with StopSignals() as loop.stop:
            _train_epochs(loop, position)
            steps.flush()
            if loop.stop.signum is not None:  # it came during the last step: the task is trained, and saved so
                _save_and_stop(loop, Position(plan.n_epochs, 0))
    finally:
        bar.close()
        if log is not None:
            log.close()
        _unprepare(model, accelerator, attention)
    result.finish(time.perf_counter() - loop.start)
    model.eval()
    accelerator.free_memory()
    return result


def _prepare(model, optimizer, scheduler, accelerator: Accelerator):
    """Accelerate's ``prepare`` and what must come before it; returns the prepared three, the
    attention implementation to restore afterwards and the model's decoder-inputs function."""
    if accelerator.device.type == "cpu":
        # torch draws CPU dropout masks with a slow bernoulli_ (a third of a bf16 step of the seed's
        # workload); CpuDropout draws the same distribution from random integers. Every training
        # call installs it, so that adapters and blocks created since the last task have it too.
        use_cpu_dropout(model)
    attention = _matmul_attention_for_cpu_bf16(model, accelerator)
    decoder_inputs = decoder_inputs_fn(model)  # before prepare(): a wrapped model hides it
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    return model, optimizer, scheduler, attention, decoder_inputs


@dataclass
class _Loop:
    """What every batch of one task's training uses."""

    model: torch.nn.Module
    kind: str
    decoder_inputs: Callable | None
    accelerator: Accelerator
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch LR scheduler
    params: list[torch.nn.Parameter]
    cfg: TrainConfig
    penalty: Callable[[torch.nn.Module], torch.Tensor | None] | None
    unwrapped: torch.nn.Module
    steps: StepLog
    # set once the loop starts
    features: list[dict] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    plan: StepPlan | None = None
    seed: int = 0
    pad_token_id: int = 0
    state: TrainState | None = None
    start: float = 0.0  # perf_counter() at the task's start (earlier by the seconds before a resume)
    stop: StopSignals | None = None


def _train_epochs(loop: _Loop, position: Position) -> None:
    """The batches of every epoch from ``position`` on, up to the plan's last optimizer step."""
    cfg, result = loop.cfg, loop.steps.result
    rng = position.rng  # a resumed task's saved generator states, set where the uninterrupted run had them
    for epoch in range(position.epoch, loop.plan.n_epochs):
        batches = batch_indices(
            loop.lengths,
            cfg.batch_size,
            shuffle=cfg.shuffle,
            seed=loop.seed + epoch,
            group_by_length=cfg.group_by_length,
        )
        skip = position.batch if epoch == position.epoch else 0
        if skip >= len(batches):
            continue
        if rng is not None and skip == 0:  # before the epoch's loader draws its seed
            set_rng(rng)
            rng = None
        loader = build_loader(
            loop.features,
            batches[skip:],
            cfg,
            kind=loop.kind,
            pad_token_id=loop.pad_token_id,
            accelerator=loop.accelerator,
        )
        for b, (indices, batch) in enumerate(zip(batches[skip:], loader, strict=False), start=skip):
            if rng is not None:  # mid-epoch: after the loader drew its seed (the uninterrupted run drew it before)
                set_rng(rng)
                rng = None
            _train_batch(loop, batch, epoch)
            # counted on the host from the batch's indices: reading the device batch would synchronise
            result.samples += len(indices)
            result.tokens += sum(loop.lengths[i] for i in indices)
            if loop.accelerator.sync_gradients and _step_end(loop, Position(epoch, b + 1)):
                return
    if rng is not None:  # resumed after the last step
        set_rng(rng)


def _step_end(loop: _Loop, position: Position) -> bool:
    """After an optimizer step: log, checkpoint, stop on a signal; whether the task's steps are done."""
    result, steps, total = loop.steps.result, loop.steps, loop.plan.total_steps
    result.steps += 1
    steps.pending[-1].end = (time.perf_counter() - loop.start, result.samples, loop.scheduler.get_last_lr()[0])
    if loop.accelerator.device.type in _EAGER_DEVICES or result.steps % _GPU_FLUSH_STEPS == 0 or result.steps >= total:
        steps.flush()
    steps.bar.update(1)
    if result.steps >= total:
        return True
    every = loop.cfg.checkpoint_every
    if loop.stop.signum is not None:
        _save_and_stop(loop, position)
    if every and result.steps % every == 0:
        steps.flush()
        loop.state.save(
            result, Position(position.epoch, position.batch, steps.window, time.perf_counter() - loop.start)
        )
    return False


def _save_and_stop(loop: _Loop, position: Position) -> None:
    """Write the checkpoint at ``position`` and stop training with :class:`TrainingInterrupted`."""
    steps = loop.steps
    steps.flush()
    loop.state.save(
        steps.result, Position(position.epoch, position.batch, steps.window, time.perf_counter() - loop.start)
    )
    raise TrainingInterrupted(loop.stop.signum, steps.task, steps.result.steps, saved=loop.state.path is not None)


def _train_batch(loop: _Loop, batch: dict, epoch: int) -> None:
    """Forward, backward and (at the end of an accumulation) the optimizer and scheduler step of one batch."""
    accelerator, model, steps, task = loop.accelerator, loop.model, loop.steps, loop.steps.task
    with accelerator.accumulate(model):
        scores = token_scores(model, batch, loop.kind, decoder_inputs=loop.decoder_inputs)
        loss_sum, n_tokens = scores.nll.sum(), scores.mask.sum()
        # Gradients are averaged over processes: scale so that the step is the global-batch mean.
        loss = loss_sum * accelerator.num_processes / accelerator.reduce(n_tokens, "sum").clamp(min=1)
        if loop.penalty is not None:
            extra = loop.penalty(loop.unwrapped)
            if extra is not None:
                loss = loss + extra
        step = steps.result.steps + 1
        steps.pending.append(_Pending(step, epoch + 1, accelerator.reduce(loss.detach(), "mean")))
        if accelerator.device.type in _EAGER_DEVICES:
            steps.read(steps.pending[-1:])
        accelerator.backward(loss)
        if accelerator.sync_gradients and loop.cfg.grad_clip is not None:
            accelerator.clip_grad_norm_(loop.params, loop.cfg.grad_clip)
        try:
            loop.optimizer.step()
        except RuntimeError as exc:  # torch: an update too large for the parameters' dtype
            if "overflow" not in str(exc):
                raise
            raise TrainingDiverged(
                f"task {task}: the optimizer update overflowed at step {step} (epoch {epoch + 1}); "
                "finished tasks keep their checkpoints; start a new run with a lower train.lr"
            ) from None
        loop.scheduler.step()
        loop.optimizer.zero_grad(set_to_none=True)


def _unprepare(model: torch.nn.Module, accelerator: Accelerator, attention: str | None) -> None:
    """Undo what ``prepare`` did to the model object itself."""
    # `prepare` wrapped model.forward in autocast (bf16 on a GPU) on the model object itself;
    # left there, every later forward pass (evaluation included) would run in bf16 for some
    # strategies and not others (PEFT's generate bypasses the wrapped forward).
    bare = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    # Accelerate also marks the model it prepared, and `prepare` returns a marked model as it is:
    # the next task's training (same process, same model) would then run without the autocast
    # wrapper removed above, in float32, while a run resumed at that task trains it in bf16.
    vars(bare).pop("_is_accelerate_prepared", None)
    if attention is not None:
        bare.set_attn_implementation(attention)


def _matmul_attention_for_cpu_bf16(model: torch.nn.Module, accelerator: Accelerator) -> str | None:
    """Switch ``model`` from SDPA to eager attention (matrix products and a softmax) when training on
    a CPU under bf16 autocast; return the implementation to restore afterwards, else ``None``.

    torch's CPU flash-attention kernel is slow in bf16, its backward most: on the default preset's
    workload (SmolLM2-135M, batch 8, ~220 tokens) two bf16 training steps took 3.68 s with SDPA and
    2.78 s with eager attention; in float32 the two are equally fast (6.74 s, 6.91 s):
    benchmarks/profile_step.py, quoted in benchmarks/README.md.
    """
    config = getattr(model, "config", None)
    if (
        accelerator.device.type != "cpu"
        or accelerator.mixed_precision != "bf16"
        or getattr(config, "_attn_implementation", None) != "sdpa"
    ):
        return None
    model.set_attn_implementation("eager")
    return "sdpa"


class _Batches(list):
    """Index batches with the ``batch_size`` Accelerate needs to split them between processes."""

    def __init__(self, batches: list[list[int]], batch_size: int):
        super().__init__(batches)
        self.batch_size = batch_size
