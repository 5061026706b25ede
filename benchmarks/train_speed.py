"""Training speed on the seed's workload, next to the standard Hugging Face stack.

Trains one task with hybridcl's training loop on the codet5-small architecture (randomly
initialised from its published config) with the synthetic workload of
``shared/bench/peer_hf_trainer.py`` (8,000 examples, source/target lengths drawn log-normally up to
512 tokens, 2 epochs, batch 8, lr 5e-4, clipping 1.0), then runs that peer script's ``tuned`` mode
(Seq2SeqTrainer + PEFT LoRA, bf16, length-grouped) in the same process and prints the ratio last.
One JSON line per measurement.

    python benchmarks/train_speed.py                          # the full workload (a GPU)
    python benchmarks/train_speed.py --examples 64 --no-peer  # a quick check on a CPU

The peer needs CUDA; on a CPU pass --no-peer.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch

from hybridcl.config import ComponentsConfig, LoraSpec, ModelConfig, TrainConfig
from hybridcl.data.batching import Encoded
from hybridcl.evaluate.efficiency import Meter
from hybridcl.model.components import ComponentSet
from hybridcl.model.loading import load_base
from hybridcl.strategies import get_strategy
from hybridcl.train import make_accelerator, train_task

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "bench" / "peer_hf_trainer.py"


def workload(n: int, peer) -> Encoded:
    """The peer's synthetic examples, drawn with the same generator and seed."""
    rng = np.random.default_rng(0)
    src = peer.lengths(rng, n, 40, 8, 512)
    tgt = peer.lengths(rng, n, 180, 16, 512)
    ids = [rng.integers(3, 32100, s).tolist() for s in src]
    labels = [rng.integers(3, 32100, t).tolist() for t in tgt]
    return Encoded(ids, labels, 0, 0)


def load_peer(path: Path):
    spec = importlib.util.spec_from_file_location("peer_hf_trainer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=8000)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--strategy", default="lora_only")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--peer", type=Path, default=PEER, help="path of peer_hf_trainer.py")
    parser.add_argument("--no-peer", action="store_true", help="skip the peer (it needs CUDA)")
    args = parser.parse_args()

    peer = load_peer(args.peer)
    encoded = workload(args.examples, peer)
    base = load_base(ModelConfig(name="random:Salesforce/codet5-small"))
    # The peer's LoRA: r=16, alpha=32, dropout 0.1 on every linear layer of the T5 blocks.
    lora = LoraSpec(r=16, alpha=32, dropout=0.1, target_modules=["q", "k", "v", "o", "wi", "wo"])
    components = ComponentSet(base.model, base.kind, get_strategy(args.strategy), ComponentsConfig(lora=lora))
    torch.manual_seed(0)
    components.activate("task")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=5e-4, grad_clip=1.0,
                      precision=args.precision, log_every=50)
    accelerator = make_accelerator(cfg, args.device)
    components.model.to(accelerator.device)
    with Meter(accelerator.device) as meter:
        result = train_task(components.model, encoded, cfg, accelerator=accelerator, kind="seq2seq", pad_token_id=0,
                            seed=0, task="task", progress=sys.stderr.isatty())
    real_tokens = int(args.epochs * sum(len(a) + len(b) for a, b in zip(encoded.input_ids, encoded.labels)))
    ours = {"system": "hybridcl", "strategy": args.strategy, "examples": args.examples, "epochs": args.epochs,
            "batch_size": args.batch_size, "precision": accelerator.mixed_precision, "train_s": round(meter.seconds, 1),
            "samples_per_s": round(result.samples / meter.seconds, 1), "real_tokens_per_s": round(real_tokens / meter.seconds),
            "peak_mem_gb": round(meter.peak_memory_gb, 2), "final_loss": round(result.final_loss, 4),
            "device": torch.cuda.get_device_name() if accelerator.device.type == "cuda" else "cpu",
            "torch": torch.__version__}
    print(json.dumps(ours), flush=True)
    if args.no_peer:
        return
    if (args.examples, args.epochs, args.batch_size) != (8000, 2, 8):
        sys.exit("the peer runs the seed's workload only (8000 examples, 2 epochs, batch 8): pass --no-peer")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        peer.main("tuned")
    theirs = json.loads(out.getvalue().strip().splitlines()[-1])
    print(json.dumps(theirs), flush=True)
    print(json.dumps({"speedup_vs_peer": round(theirs["train_s"] / ours["train_s"], 2)}), flush=True)


if __name__ == "__main__":
    main()
