"""CPU dropout: the mask alone, and a whole training step, with torch's ``nn.Dropout`` and hybridcl's ``CpuDropout``.

1. Masks: milliseconds to draw a keep-mask of ``--elements`` elements with ``p = 0.1`` on one
   thread, each way (median of ``--repeats``, interleaved): torch's ``bernoulli_`` (what
   ``nn.Dropout`` does on a CPU), ``torch.rand >= p`` (24-bit floats), ``torch.rand`` in bfloat16
   (8-bit steps: not p), 16-bit integer lanes (p in steps of 2**-16), hybridcl's ``keep_mask``
   (32-bit lanes of 64-bit draws).
2. Steps: seconds per training step (forward, backward, AdamW) of the seed's workload as in
   ``train_speed.py`` (random-init codet5-small, LoRA r=16 dropout 0.1 on q,k,v,o,wi,wo, T5's
   dropout 0.1, one batch of 8 of the peer's synthetic examples), ``--precision`` autocast,
   alternating ``nn.Dropout`` and ``CpuDropout`` modules on the same model, ``--rounds`` times.

Every line is printed and appended to ``benchmarks/results/<date>-cpu.jsonl`` with the load average.

    python benchmarks/dropout_speed.py --rounds 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import PEER, RESULTS, load_peer, machine, workload  # noqa: E402

from hybridcl.model.dropout import CpuDropout, keep_mask, use_cpu_dropout  # noqa: E402


def mask_times(n: int, p: float, repeats: int) -> dict[str, float]:
    """Median milliseconds per mask of ``n`` elements, each method interleaved with the others."""
    methods = {
        "bernoulli_ (nn.Dropout)": lambda: torch.empty(n).bernoulli_(1 - p).bool(),
        "rand float32 >= p": lambda: torch.rand(n) >= p,
        "rand bfloat16 >= p (8-bit steps)": lambda: torch.rand(n, dtype=torch.bfloat16) >= p,
        "int16 lanes of int64 draws (2**-16 steps)": lambda: (
            torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None).view(torch.int16)[:n]
            >= round(p * 2**16) - 2**15
        ),
        "keep_mask (int32 lanes of int64 draws)": lambda: keep_mask((n,), p),
    }
    times: dict[str, list[float]] = {k: [] for k in methods}
    for f in methods.values():
        f()
    for _ in range(repeats):
        for name, f in methods.items():
            start = time.perf_counter()
            f()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def torch_dropout(model: nn.Module) -> None:
    """Put torch's ``nn.Dropout`` back where :func:`use_cpu_dropout` put a ``CpuDropout``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is CpuDropout:
                setattr(parent, name, nn.Dropout(child.p))


def step_model():
    from hybridcl.config.experiment import ComponentsConfig, LoraSpec, ModelConfig
    from hybridcl.data.batching import collate
    from hybridcl.model.components import ComponentSet
    from hybridcl.model.loading import load_base
    from hybridcl.strategies import get_strategy

    encoded = workload(8, load_peer(PEER))
    base = load_base(ModelConfig(name="random:Salesforce/codet5-small"))
    lora = LoraSpec(r=16, alpha=32, dropout=0.1, target_modules=["q", "k", "v", "o", "wi", "wo"])
    components = ComponentSet(base.model, base.kind, get_strategy("lora_only"), ComponentsConfig(lora=lora))
    torch.manual_seed(0)
    components.activate("task")
    batch = collate(
        [{"input_ids": i, "labels": t} for i, t in zip(encoded.input_ids, encoded.labels, strict=True)], 0, "seq2seq"
    )
    return components.model, batch


def step_seconds(model, batch, optimizer, precision: str) -> float:
    from hybridcl.training.loss import token_scores

    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        scores = token_scores(model, batch, "seq2seq")
    loss = scores.nll.sum() / scores.mask.sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", type=int, default=3_100_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=5, help="nn.Dropout step, CpuDropout step pairs")
    parser.add_argument("--steps", type=int, default=1, help="steps per side per round")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the steps (default: torch's)")
    parser.add_argument("--results", type=Path, default=RESULTS / f"{datetime.date.today()}-cpu.jsonl")
    args = parser.parse_args()
    run = datetime.datetime.now().isoformat(timespec="seconds")

    def emit(line: dict) -> None:
        line = {"benchmark": "dropout_speed", "run": run, **line, **machine()}
        print(json.dumps(line), flush=True)
        with args.results.open("a") as f:
            f.write(json.dumps(line) + "\n")

    emit({"command": " ".join(["python", "benchmarks/dropout_speed.py", *sys.argv[1:]])})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    emit(
        {
            "part": "mask",
            "elements": args.elements,
            "p": 0.1,
            "threads": 1,
            "median_ms": mask_times(args.elements, 0.1, args.repeats),
        }
    )
    torch.set_num_threads(args.threads or threads)

    model, batch = step_model()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    replaced = use_cpu_dropout(model)
    step_seconds(model, batch, optimizer, args.precision)  # warm-up: first-call allocations
    torch_dropout(model)
    step_seconds(model, batch, optimizer, args.precision)
    seconds: dict[str, list[float]] = {"nn.Dropout": [], "CpuDropout": []}
    for _ in range(args.rounds):
        torch_dropout(model)
        seconds["nn.Dropout"] += [step_seconds(model, batch, optimizer, args.precision) for _ in range(args.steps)]
        use_cpu_dropout(model)
        seconds["CpuDropout"] += [step_seconds(model, batch, optimizer, args.precision) for _ in range(args.steps)]
    median = {k: statistics.median(v) for k, v in seconds.items()}
    emit(
        {
            "part": "step",
            "precision": args.precision,
            "dropout_modules": replaced,
            "batch_tokens": int(batch["attention_mask"].sum() + (batch["labels"] != -100).sum()),
            "seconds": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
            "median_s": {k: round(v, 3) for k, v in median.items()},
            "speedup": round(median["nn.Dropout"] / median["CpuDropout"], 3),
        }
    )


if __name__ == "__main__":
    main()
