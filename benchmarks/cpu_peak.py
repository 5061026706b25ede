"""This machine's matrix-multiply peak, and the fraction of it that training reaches.

Times a 2048 x 2048 x 2048 GEMM (2 * 2048^3 FLOP) in float32 and bfloat16 on ``--threads``
threads (the best of ``--repeats``), then, for every training line of ``--results`` (the
``benchmarks/results/*.jsonl`` lines that ``train_speed.py`` wrote), the fraction of the peak of
its precision that its real tokens/s reach at ``4 x params`` FLOP per real token (forward 2P,
backward to the inputs 2P; LoRA leaves the frozen weights without gradients). The numbers are
appended to the results file. Run it on an idle machine: the peak is what the cores give when
nothing else runs.

    python benchmarks/cpu_peak.py --results benchmarks/results/2026-11-27-cpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

CODET5_SMALL_PARAMS = 60.5e6  # parameters of codet5-small, the seed workload's model


def gemm_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 10, budget_s: float = 20.0) -> float:
    """The best FLOP/s of up to ``repeats`` n x n x n products in ``dtype`` (after one warm-up),
    stopping once ``budget_s`` seconds are spent. Where a 256^3 product runs under 5 GFLOP/s (bf16
    emulated in software: 0.3 GFLOP/s on an AVX2-only EPYC) the products are 512^3, which the
    emulation runs at the same rate, so the probe takes seconds, not minutes."""
    small = torch.randn(256, 256).to(dtype)
    start = time.perf_counter()
    torch.mm(small, small)
    if 2 * 256**3 / (time.perf_counter() - start) < 5e9:
        n = 512
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > budget_s:
            break
    return 2 * n**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--results", type=Path, help="a train_speed results .jsonl: add the fraction of the peak")
    parser.add_argument(
        "--params", type=float, default=CODET5_SMALL_PARAMS, help="model parameters, for FLOP per token"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = {
        "fp32": gemm_flops(torch.float32, repeats=args.repeats),
        "bf16": gemm_flops(torch.bfloat16, repeats=args.repeats),
    }
    lines = [
        {
            "benchmark": "cpu_peak",
            "gemm": "2048^3",
            "threads": args.threads,
            "fp32_gflops": round(peak["fp32"] / 1e9, 1),
            "bf16_gflops": round(peak["bf16"] / 1e9, 1),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "torch": torch.__version__,
        }
    ]
    if args.results is not None and args.results.exists():
        for raw in args.results.read_text().splitlines():
            line = json.loads(raw)
            if line.get("benchmark") != "train_speed" or "real_tokens_per_s" not in line:
                continue
            precision = "bf16" if line.get("precision") == "bf16" else "fp32"  # the peer trains in fp32 on a CPU
            flops = line["real_tokens_per_s"] * 4 * args.params
            lines.append(
                {
                    "benchmark": "cpu_peak",
                    "of_run": line["run"],
                    "system": line["system"],
                    "round": line.get("round"),
                    "precision": precision,
                    "train_gflops": round(flops / 1e9, 1),
                    "fraction_of_peak": round(flops / peak[precision], 3),
                }
            )
    for line in lines:
        print(json.dumps(line), flush=True)
    if args.results is not None:
        with args.results.open("a") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)


if __name__ == "__main__":
    main()
