"""The cost of one mid-task checkpoint (train_state.py) against one training step, per preset.

    PYTHONPATH=src python benchmarks/checkpoint_cost.py --preset smoke --preset default

Trains 6 optimizer steps of the preset's first task with its strategy, writing a checkpoint every
2 steps, and prints the mean seconds of a step (checkpoint writes excluded) and of a write, and the
smallest ``train.checkpoint_every`` that keeps the writes under 2% of training time.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path


def measure(preset: str) -> dict:
    import torch

    import hybridcl.training.state as train_state
    from hybridcl.config.experiment import load_config
    from hybridcl.data.batching import encode
    from hybridcl.data.tasks import load_task_data
    from hybridcl.model.components import ComponentSet
    from hybridcl.model.loading import load_base
    from hybridcl.strategies import get_strategy
    from hybridcl.training.loop import make_accelerator, train_task

    config = load_config(overrides=[f"preset={preset}", "data.max_train=48", "train.checkpoint_every=2"])
    base = load_base(config.model)
    components = ComponentSet(base.model, base.kind, get_strategy(config.strategy), config.components)
    torch.manual_seed(0)
    task = config.task_names[0]
    components.activate(task)
    data = load_task_data(config.data, task)
    d = config.data
    encoded = encode(
        data.train, base.tokenizer, base.kind, d.max_source_len, d.max_target_len, long_targets=d.long_targets
    )
    cfg = config.train.__class__(**{**config.train.__dict__, "max_steps": 6})
    accelerator = make_accelerator(cfg, "cpu")
    writes: list[float] = []
    save = train_state.TrainState.save

    def timed(self, *a, **k):
        t = time.perf_counter()
        save(self, *a, **k)
        writes.append(time.perf_counter() - t)

    train_state.TrainState.save = timed
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "progress.safetensors"
        result = train_task(
            components.model, encoded, cfg, accelerator=accelerator, kind=base.kind,
            pad_token_id=base.tokenizer.pad_token_id, seed=0, task=task, progress=False, checkpoint=path,
        )  # fmt: skip
        size = path.stat().st_size
    train_state.TrainState.save = save
    step = (result.seconds - sum(writes)) / result.steps
    write = sum(writes) / len(writes)
    return {
        "preset": preset,
        "model": config.model.name,
        "strategy": config.strategy,
        "precision": accelerator.mixed_precision,
        "step_s": round(step, 4),
        "write_s": round(write, 4),
        "checkpoint_mb": round(size / 1e6, 2),
        "writes": len(writes),
        "every_for_2pct": math.ceil(write / (0.02 * step)),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", default=[])
    for preset in parser.parse_args().preset or ["smoke", "default"]:
        print(json.dumps(measure(preset)))


if __name__ == "__main__":
    main()
