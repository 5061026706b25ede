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

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, PartialState
from torch.utils.data import DataLoader
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from hybridcl.config import TrainConfig
from hybridcl.data.batching import Encoded, batch_indices, collate
from hybridcl.errors import HybridclError
from hybridcl.loss import decoder_inputs_fn, token_scores
from hybridcl.model.dropout import use_cpu_dropout
from hybridcl.progress import progress_bar

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
) -> TrainResult:
    """Train ``model``'s trainable parameters on ``encoded`` for ``cfg.epochs`` epochs (or ``cfg.max_steps``)."""
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise HybridclError(f"task {task}: the strategy left no trainable parameter")
    features = [{"input_ids": i, "labels": t} for i, t in zip(encoded.input_ids, encoded.labels, strict=True)]
    lengths = [
        len(i) + (len(t) if kind == "seq2seq" else 0) for i, t in zip(encoded.input_ids, encoded.labels, strict=True)
    ]

    def epoch_batches(epoch: int) -> list[list[int]]:
        return batch_indices(
            lengths, cfg.batch_size, shuffle=cfg.shuffle, seed=seed + epoch, group_by_length=cfg.group_by_length
        )

    def epoch_loader(batches: list[list[int]]) -> DataLoader:
        loader = DataLoader(
            features,
            batch_sampler=_Batches(batches, cfg.batch_size),
            collate_fn=lambda f: collate(f, pad_token_id, kind, mask_padding=cfg.mask_padding_in_loss),
        )
        return accelerator.prepare_data_loader(loader)

    steps_per_epoch = math.ceil(math.ceil(len(features) / cfg.batch_size) / cfg.grad_accum)
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    n_epochs = math.ceil(total_steps / steps_per_epoch)

    eager = accelerator.device.type in _EAGER_DEVICES
    # Fused AdamW updates all parameters in a few kernels on a GPU. On a CPU the update is under 1%
    # of a step (LoRA's few small tensors) and the plain loop keeps torch's overflow error, which
    # TrainingDiverged reports.
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True if accelerator.device.type == "cuda" else None
    )
    if cfg.lr_schedule == "constant":
        scheduler = get_constant_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps))
    else:
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    if accelerator.device.type == "cpu":
        # torch draws CPU dropout masks with a slow bernoulli_ (a third of a bf16 step of the seed's
        # workload); CpuDropout draws the same distribution from random integers. Every training
        # call installs it, so that adapters and blocks created since the last task have it too.
        use_cpu_dropout(model)
    attention = _matmul_attention_for_cpu_bf16(model, accelerator)
    decoder_inputs = decoder_inputs_fn(model)  # before prepare(): a wrapped model hides it
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    model.train()

    result = TrainResult(0, 0, 0, 0.0, 0.0, 0.0, float("nan"))
    bar = progress_bar(
        total=total_steps, desc=f"train {task}", unit="step", enabled=progress and accelerator.is_main_process
    )
    start = time.perf_counter()
    log = log_path.open("a") if log_path is not None and accelerator.is_main_process else None
    # Batch losses stay on the device until a flush reads them back in one transfer: every step on
    # a CPU (reading is free there, and a non-finite loss stops training before its update), every
    # _GPU_FLUSH_STEPS steps on a GPU, where each read would wait for the queued kernels and leave
    # the GPU idle. A flush writes the log lines of the steps it covers, as if written at each step.
    pending: list[list] = []  # [optimizer step, epoch, batch loss tensor, (seconds, samples, lr) at a step's end]
    window = [0.0, 0]  # loss sum and batches since the last log line

    def read(entries: list[list]) -> list[float]:
        values = torch.stack([e[2] for e in entries]).tolist()
        for (step, epoch, *_), value in zip(entries, values, strict=True):
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"task {task}: the loss became {value} at step {step} (epoch {epoch}); "
                    "finished tasks keep their checkpoints; start a new run with a lower train.lr or a train.grad_clip"
                )
        return values

    def flush() -> None:
        if not pending:
            return
        for (step, epoch, _, end), value in zip(pending, read(pending), strict=True):
            window[0] += value
            window[1] += 1
            if end is None:  # a batch accumulated into a later optimizer step
                continue
            elapsed, samples, lr = end
            mean = window[0] / window[1]
            if step % cfg.log_every == 0 or step == total_steps:
                result.losses.append((step, mean))
                entry = {
                    "task": task,
                    "step": step,
                    "epoch": epoch,
                    "loss": mean,
                    "lr": lr,
                    "samples_per_s": samples / elapsed,
                }
                if log is not None:
                    log.write(json.dumps(entry) + "\n")
                    log.flush()
                if trackers is not None:  # hybridcl.trackers.Trackers: one global step axis over the stages
                    trackers.train_step(step, mean, lr)
                window[:] = [0.0, 0]
            # the bar shows the mean loss since the last log line
            bar.set_postfix(loss=f"{mean:.3f}", lr=f"{lr:.2e}", samples_s=f"{samples / elapsed:.1f}", refresh=False)
        pending.clear()

    try:
        for epoch in range(n_epochs):
            batches = epoch_batches(epoch)
            for indices, batch in zip(batches, epoch_loader(batches), strict=True):
                with accelerator.accumulate(model):
                    scores = token_scores(model, batch, kind, decoder_inputs=decoder_inputs)
                    loss_sum, n_tokens = scores.nll.sum(), scores.mask.sum()
                    # Gradients are averaged over processes: scale so that the step is the global-batch mean.
                    loss = loss_sum * accelerator.num_processes / accelerator.reduce(n_tokens, "sum").clamp(min=1)
                    if penalty is not None:
                        extra = penalty(unwrapped)
                        if extra is not None:
                            loss = loss + extra
                    pending.append([result.steps + 1, epoch + 1, accelerator.reduce(loss.detach(), "mean"), None])
                    if eager:
                        read(pending[-1:])
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.grad_clip is not None:
                        accelerator.clip_grad_norm_(params, cfg.grad_clip)
                    try:
                        optimizer.step()
                    except RuntimeError as exc:  # torch: an update too large for the parameters' dtype
                        if "overflow" not in str(exc):
                            raise
                        raise TrainingDiverged(
                            f"task {task}: the optimizer update overflowed at step {result.steps + 1} (epoch {epoch + 1}); "
                            "finished tasks keep their checkpoints; start a new run with a lower train.lr"
                        ) from None
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                # counted on the host from the batch's indices: reading the device batch would synchronise
                result.samples += len(indices)
                result.tokens += sum(lengths[i] for i in indices)
                if not accelerator.sync_gradients:
                    continue
                result.steps += 1
                pending[-1][3] = (time.perf_counter() - start, result.samples, scheduler.get_last_lr()[0])
                if eager or result.steps % _GPU_FLUSH_STEPS == 0 or result.steps >= total_steps:
                    flush()
                bar.update(1)
                if result.steps >= total_steps:
                    break
            if result.steps >= total_steps:
                break
        flush()
    finally:
        bar.close()
        if log is not None:
            log.close()
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
    result.seconds = time.perf_counter() - start
    result.samples_per_s = result.samples / result.seconds
    result.tokens_per_s = result.tokens / result.seconds
    result.final_loss = result.losses[-1][1] if result.losses else float("nan")
    model.eval()
    accelerator.free_memory()
    return result


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
