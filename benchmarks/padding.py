"""The share of padded token positions in hybridcl's training batches: the most that packing (several
examples per row, no padding) could save.

Batches as ``train_task`` draws them (``batch_indices``: length-grouped megabatches of 50 x batch, the
seed of epoch 0); a causal row is padded to its batch's longest example, a seq2seq batch to its
longest source and its longest target. ``--workload default``: the default preset's first
``--examples`` Python training functions (512: the size the study trains on); ``seed``: the peer's
synthetic codet5 lengths (log-normal up to 512 tokens). The line is printed and appended to
``benchmarks/results/<date>-cpu.jsonl``.

    python benchmarks/padding.py --workload default --examples 512
    python benchmarks/padding.py --workload seed --examples 64
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import PEER, RESULTS, default_workload, load_peer, workload  # noqa: E402

from hybridcl.data.batching import batch_indices  # noqa: E402


def padding_share(sources: list[int], targets: list[int] | None, batch_size: int, seed: int = 0) -> dict:
    """Real and padded token positions over one epoch's batches; ``targets`` None: a causal model, whose
    rows hold prompt and target together (``sources``)."""
    streams = [sources] if targets is None else [sources, targets]
    lengths = [sum(row) for row in zip(*streams, strict=True)]  # train_task's grouping key
    real = padded = 0
    for batch in batch_indices(lengths, batch_size, shuffle=True, seed=seed, group_by_length=True):
        for stream in streams:
            real += sum(stream[i] for i in batch)
            padded += max(stream[i] for i in batch) * len(batch)
    return {"real_tokens": real, "padded_positions": padded, "padding_share": round(1 - real / padded, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="default", choices=["default", "seed"])
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--peer", type=Path, default=PEER)
    parser.add_argument("--results", type=Path, default=RESULTS / f"{datetime.date.today()}-cpu.jsonl")
    args = parser.parse_args()
    if args.workload == "default":
        *_, encoded, _, _ = default_workload(args)
        sources, targets = [len(ids) for ids in encoded.input_ids], None
    else:
        encoded = workload(args.examples, load_peer(args.peer))
        sources, targets = [len(ids) for ids in encoded.input_ids], [len(ids) for ids in encoded.labels]
    line = {
        "benchmark": "padding",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "workload": args.workload,
        "examples": len(sources),
        "batch_size": args.batch_size,
        **padding_share(sources, targets, args.batch_size),
    }
    print(json.dumps(line))
    with open(args.results, "a") as handle:
        handle.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
