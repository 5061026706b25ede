"""What hybridcl's training steps spend their time on: ``train_task`` under the torch profiler.

The workload of ``train_speed.py`` (``--workload default``: the default preset's SmolLM2-135M on
the bundled corpus; ``seed``: random-init codet5-small on the peer's synthetic examples), its first
``--examples`` examples (16: two steps of batch 8), ``lora_only``. One untimed call of
``train_task`` first (first-call allocations), then one under the profiler: the line gives its
seconds and the operators that took the most CPU time. ``--attention eager|sdpa`` forces the
model's attention for the whole run (``train_task`` itself picks eager under bf16 on a CPU), which
is how the attention lever of benchmarks/README.md was compared.

Every line is printed and appended to ``benchmarks/results/<date>-cpu.jsonl`` with the load average.

    python benchmarks/profile_step.py --workload default
    python benchmarks/profile_step.py --workload default --precision fp32 --attention sdpa
    python benchmarks/profile_step.py --workload default --precision fp32 --compile   # the torch.compile lever
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import PEER, RESULTS, default_workload, load_peer, machine, workload  # noqa: E402

import hybridcl.training.loop as train_module  # noqa: E402
from hybridcl.config.experiment import ComponentsConfig, LoraSpec, ModelConfig, TrainConfig  # noqa: E402
from hybridcl.model.components import ComponentSet  # noqa: E402
from hybridcl.model.loading import load_base  # noqa: E402
from hybridcl.strategies import get_strategy  # noqa: E402
from hybridcl.training.loop import make_accelerator, train_task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="default", choices=["default", "seed"])
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument(
        "--attention",
        default=None,
        choices=["eager", "sdpa"],
        help="force the model's attention (default: what train_task picks)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (inductor, dynamic shapes) before the untimed first call",
    )
    parser.add_argument("--top", type=int, default=12, help="operators listed")
    parser.add_argument("--results", type=Path, default=RESULTS / f"{datetime.date.today()}-cpu.jsonl")
    args = parser.parse_args()

    if args.workload == "default":
        config, base, encoded, lora, _ = default_workload(argparse.Namespace(examples=args.examples))
        lr, pad = config.train.lr, base.tokenizer.pad_token_id
    else:
        encoded = workload(args.examples, load_peer(PEER))
        base = load_base(ModelConfig(name="random:Salesforce/codet5-small"))
        lora = LoraSpec(r=16, alpha=32, dropout=0.1, target_modules=["q", "k", "v", "o", "wi", "wo"])
        lr, pad = 5e-4, 0
    if args.attention is not None:
        base.model.set_attn_implementation(args.attention)
    components = ComponentSet(base.model, base.kind, get_strategy("lora_only"), ComponentsConfig(lora=lora))
    components.activate("task")
    cfg = TrainConfig(epochs=1, batch_size=8, lr=lr, grad_clip=1.0, precision=args.precision, log_every=1)
    accelerator = make_accelerator(cfg, "cpu")
    if args.attention is not None:
        # keep the forced attention: under bf16 on a CPU train_task would switch SDPA to eager
        train_module._matmul_attention_for_cpu_bf16 = lambda model, accelerator: None

    def train(seed: int):
        return train_task(
            components.model,
            encoded,
            cfg,
            accelerator=accelerator,
            kind=base.kind,
            pad_token_id=pad,
            seed=seed,
            task="task",
            progress=False,
        )

    if args.compile:
        components.model.compile(dynamic=True)  # nn.Module.compile: in place, the object train_task gets
    start = time.perf_counter()
    train(0)  # untimed: first-call allocations, and the compilation with --compile
    first_call = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        result = train(1)
        seconds = time.perf_counter() - start
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    line = {
        "benchmark": "profile_step",
        "run": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/profile_step.py", *sys.argv[1:]]),
        "hybridcl_src": _checkout(Path(train_module.__file__).parents[1]),  # which checkout's code (PYTHONPATH)
        "workload": args.workload,
        "examples": args.examples,
        "steps": result.steps,
        "precision": "bf16" if accelerator.mixed_precision == "bf16" else "fp32",
        "attention": args.attention or "train_task's choice",
        "compile": args.compile,
        "first_call_s": round(first_call, 2),
        "seconds": round(seconds, 2),
        "train_s": round(result.seconds, 2),
        "top_ops": [
            {
                "op": e.key,
                "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3),
                "share": round(e.self_cpu_time_total / total, 3),
                "calls": e.count,
            }
            for e in ops
        ],
        **machine(),
    }
    print(json.dumps(line), flush=True)
    with args.results.open("a") as f:
        f.write(json.dumps(line) + "\n")


def _checkout(src: Path) -> str:
    """``src`` relative to this checkout (a committed line names no path of the machine it ran on)."""
    root = Path(__file__).resolve().parents[1]
    return str(src.relative_to(root)) if src.is_relative_to(root) else "another checkout's src"


if __name__ == "__main__":
    main()
