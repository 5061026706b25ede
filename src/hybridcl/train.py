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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from hybridcl.config import TrainConfig
from hybridcl.data.batching import Encoded, batch_indices, collate
from hybridcl.errors import HybridclError
from hybridcl.loss import decoder_inputs_fn, token_scores


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


def make_accelerator(cfg: TrainConfig, device: str) -> Accelerator:
    """An Accelerator for ``device`` (auto|cpu|cuda): bf16 autocast on a capable GPU, fp32 on CPU."""
    cpu = device == "cpu" or not torch.cuda.is_available()
    if cfg.precision == "auto":
        precision = "bf16" if not cpu and torch.cuda.is_bf16_supported() else "no"
    else:
        precision = "bf16" if cfg.precision == "bf16" else "no"
    return Accelerator(cpu=cpu, mixed_precision=precision, gradient_accumulation_steps=cfg.grad_accum,
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


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
    tensorboard=None,
    penalty: Callable[[torch.nn.Module], torch.Tensor | None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model``'s trainable parameters on ``encoded`` for ``cfg.epochs`` epochs (or ``cfg.max_steps``)."""
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise HybridclError(f"task {task}: the strategy left no trainable parameter")
    features = [{"input_ids": i, "labels": l} for i, l in zip(encoded.input_ids, encoded.labels)]
    lengths = [len(i) + (len(l) if kind == "seq2seq" else 0) for i, l in zip(encoded.input_ids, encoded.labels)]

    def epoch_loader(epoch: int) -> DataLoader:
        batches = _Batches(batch_indices(lengths, cfg.batch_size, shuffle=cfg.shuffle, seed=seed + epoch,
                                         group_by_length=cfg.group_by_length), cfg.batch_size)
        loader = DataLoader(features, batch_sampler=batches,
                            collate_fn=lambda f: collate(f, pad_token_id, kind, mask_padding=cfg.mask_padding_in_loss))
        return accelerator.prepare_data_loader(loader)

    steps_per_epoch = math.ceil(math.ceil(len(features) / cfg.batch_size) / cfg.grad_accum)
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    n_epochs = math.ceil(total_steps / steps_per_epoch)

    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.lr_schedule == "constant":
        scheduler = get_constant_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps))
    else:
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    decoder_inputs = decoder_inputs_fn(model)  # before prepare(): a wrapped model hides it
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    model.train()

    result = TrainResult(0, 0, 0, 0.0, 0.0, 0.0, float("nan"))
    window_loss, window_batches = 0.0, 0
    bar = tqdm(total=total_steps, desc=f"train {task}", unit="step", disable=not progress or not accelerator.is_main_process)
    start = time.perf_counter()
    log = log_path.open("a") if log_path is not None and accelerator.is_main_process else None
    try:
        for epoch in range(n_epochs):
            for batch in epoch_loader(epoch):
                with accelerator.accumulate(model):
                    scores = token_scores(model, batch, kind, decoder_inputs=decoder_inputs)
                    loss_sum, n_tokens = scores.nll.sum(), scores.mask.sum()
                    # Gradients are averaged over processes: scale so that the step is the global-batch mean.
                    loss = loss_sum * accelerator.num_processes / accelerator.reduce(n_tokens, "sum").clamp(min=1)
                    if penalty is not None:
                        extra = penalty(unwrapped)
                        if extra is not None:
                            loss = loss + extra
                    value = accelerator.reduce(loss.detach(), "mean").item()
                    if not math.isfinite(value):
                        raise TrainingDiverged(
                            f"task {task}: the loss became {value} at step {result.steps + 1} (epoch {epoch + 1}); "
                            "finished tasks keep their checkpoints; start a new run with a lower train.lr or a train.grad_clip"
                        )
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
                n = batch["input_ids"].shape[0] * accelerator.num_processes
                result.samples += n
                result.tokens += (int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum()) * (kind == "seq2seq")) * accelerator.num_processes
                window_loss += value
                window_batches += 1
                if not accelerator.sync_gradients:
                    continue
                result.steps += 1
                elapsed = time.perf_counter() - start
                mean = window_loss / window_batches
                lr = scheduler.get_last_lr()[0]
                if result.steps % cfg.log_every == 0 or result.steps == total_steps:
                    result.losses.append((result.steps, mean))
                    entry = {"task": task, "step": result.steps, "epoch": epoch + 1, "loss": mean, "lr": lr,
                             "samples_per_s": result.samples / elapsed}
                    if log is not None:
                        log.write(json.dumps(entry) + "\n")
                        log.flush()
                    if tensorboard is not None:
                        tensorboard.add_scalar(f"{task}/loss", mean, result.steps)
                        tensorboard.add_scalar(f"{task}/lr", lr, result.steps)
                    window_loss, window_batches = 0.0, 0
                # the bar shows the mean loss since the last log line, updated every step
                bar.set_postfix(loss=f"{mean:.3f}", lr=f"{lr:.2e}", samples_s=f"{result.samples / elapsed:.1f}", refresh=False)
                bar.update(1)
                if result.steps >= total_steps:
                    break
            if result.steps >= total_steps:
                break
    finally:
        bar.close()
        if log is not None:
            log.close()
        # `prepare` wrapped model.forward in autocast (bf16 on a GPU) on the model object itself;
        # left there, every later forward pass (evaluation included) would run in bf16 for some
        # strategies and not others (PEFT's generate bypasses the wrapped forward).
        accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    result.seconds = time.perf_counter() - start
    result.samples_per_s = result.samples / result.seconds
    result.tokens_per_s = result.tokens / result.seconds
    result.final_loss = result.losses[-1][1] if result.losses else float("nan")
    model.eval()
    accelerator.free_memory()
    return result


class _Batches(list):
    """Index batches with the ``batch_size`` Accelerate needs to split them between processes."""

    def __init__(self, batches: list[list[int]], batch_size: int):
        super().__init__(batches)
        self.batch_size = batch_size
