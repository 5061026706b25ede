"""Training speed on the seed's workload, next to the standard Hugging Face stack, in one run.

Trains one task with hybridcl's training loop on the codet5-small architecture (randomly
initialised from its published config) with the synthetic workload of
``shared/bench/peer_hf_trainer.py`` (source/target lengths drawn log-normally up to 512 tokens,
batch 8, lr 5e-4, clipping 1.0, LoRA r=16 on q,k,v,o,wi,wo), and that peer script's ``tuned`` mode
(Seq2SeqTrainer + PEFT LoRA, length-grouped; bf16 on a GPU, fp32 on a CPU) on the same examples.

Each side runs in its own child process (so that each has its own peak RSS), interleaved
``peer, hybridcl, peer, hybridcl, ...`` for ``--rounds`` rounds so that a busy machine slows both
alike; the ratio of the medians comes last, with the spread of the per-round ratios. Every line
printed is appended to ``benchmarks/results/<date>-<device>.jsonl`` with the machine's load.

``--workload default`` is the real workload instead: the default preset's model (the embedded
SmolLM2-135M-Instruct) on the bundled corpus's Python examples at the preset's lengths (prompts
up to 96 tokens, targets up to 128, longer targets dropped), the preset's LoRA (r=8, alpha=16,
dropout 0.05 on q_proj, v_proj), batch 8, lr 1e-3, clipping 1.0, against the same model, examples
and LoRA under the Hugging Face Trainer + PEFT (length-grouped, float32 on a CPU, bf16 on a GPU).

    python benchmarks/train_speed.py --examples 64 --epochs 1 --rounds 2   # a CPU: ~5 min on 2 cores
    python benchmarks/train_speed.py --rounds 1                             # a GPU: the seed's workload
    python benchmarks/train_speed.py --workload default --examples 32 --epochs 1 --rounds 2 --device cpu
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import io
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# shared/ sits next to the main checkout (../shared) and two levels up from a worktree (../../shared)
PEER = next(
    (
        p
        for p in (
            ROOT.parent / "shared" / "bench" / "peer_hf_trainer.py",
            ROOT.parent.parent / "shared" / "bench" / "peer_hf_trainer.py",
        )
        if p.exists()
    ),
    ROOT.parent / "shared" / "bench" / "peer_hf_trainer.py",
)
RESULTS = ROOT / "benchmarks" / "results"


def load_peer(path: Path):
    spec = importlib.util.spec_from_file_location("peer_hf_trainer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workload(n: int, peer):
    """The peer's synthetic examples, drawn with the same generator, seed and order as the peer."""
    import numpy as np

    from hybridcl.data.batching import Encoded

    rng = np.random.default_rng(0)
    src = peer.lengths(rng, n, 40, 8, 512)
    tgt = peer.lengths(rng, n, 180, 16, 512)
    pairs = [
        (rng.integers(3, 32100, s).tolist(), rng.integers(3, 32100, t).tolist()) for s, t in zip(src, tgt, strict=True)
    ]
    return Encoded([p[0] for p in pairs], [p[1] for p in pairs], 0, 0)


def peak_rss_gb() -> float:
    """This process's peak resident set size, GB (10^9 bytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024) / 1e9


def machine() -> dict:
    """Where a number was measured: load averages (1, 5, 15 min), cores, torch threads."""
    import torch

    return {
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def default_workload(args):
    """The default preset's base model, LoRA settings and first ``args.examples`` Python training
    examples, tokenised as ``hybridcl run preset=default`` tokenises them; the train settings."""
    from hybridcl.config.experiment import load_config
    from hybridcl.data.batching import encode, target_length_counter
    from hybridcl.data.tasks import load_task_data
    from hybridcl.model.full_layer import family_of
    from hybridcl.model.loading import load_base

    config = load_config(overrides=["preset=default", f"data.max_train={args.examples}", "data.max_val=1"])
    base = load_base(config.model)
    data = load_task_data(config.data, "python", target_lengths=target_length_counter(base.tokenizer, base.kind))
    encoded = encode(
        data.train,
        base.tokenizer,
        base.kind,
        config.data.max_source_len,
        config.data.max_target_len,
        progress=False,
        long_targets=config.data.long_targets,
    )
    lora = config.components.lora
    targets = list(lora.target_modules or family_of(base.model).lora_targets)
    return config, base, encoded, lora, targets


def run_hybridcl(args) -> dict:
    import torch

    from hybridcl.config.experiment import ComponentsConfig, LoraSpec, ModelConfig, TrainConfig
    from hybridcl.model.components import ComponentSet
    from hybridcl.model.loading import load_base
    from hybridcl.strategies import get_strategy
    from hybridcl.training.loop import make_accelerator, train_task

    if args.workload == "default":
        config, base, encoded, lora, _ = default_workload(args)
        lr = config.train.lr
        model_name = config.model.name
    else:
        encoded = workload(args.examples, load_peer(args.peer))
        base = load_base(ModelConfig(name="random:Salesforce/codet5-small"))
        # The peer's LoRA: r=16, alpha=32, dropout 0.1 on every linear layer of the T5 blocks.
        lora = LoraSpec(r=16, alpha=32, dropout=0.1, target_modules=["q", "k", "v", "o", "wi", "wo"])
        lr = 5e-4
        model_name = "random:Salesforce/codet5-small"
    components = ComponentSet(base.model, base.kind, get_strategy(args.strategy), ComponentsConfig(lora=lora))
    torch.manual_seed(0)
    components.activate("task")
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=lr,
        grad_clip=1.0,
        precision=args.precision,
        log_every=1 if args.workload == "default" else 10,
    )
    accelerator = make_accelerator(cfg, args.device)
    components.model.to(accelerator.device)
    cuda = accelerator.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train_task(
        components.model,
        encoded,
        cfg,
        accelerator=accelerator,
        kind=base.kind,
        pad_token_id=base.tokenizer.pad_token_id if args.workload == "default" else 0,
        seed=0,
        task="task",
        progress=False,
    )
    real_tokens = int(args.epochs * real_token_count(encoded, base.kind))
    return {
        "system": "hybridcl",
        "workload": args.workload,
        "model": model_name,
        "strategy": args.strategy,
        "examples": len(encoded),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "precision": "bf16" if accelerator.mixed_precision == "bf16" else "fp32",
        "train_s": round(result.seconds, 1),
        "samples_per_s": round(result.samples / result.seconds, 2),
        "real_tokens_per_s": round(real_tokens / result.seconds),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "peak_cuda_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None,
        "final_loss": round(result.final_loss, 4),
        "losses": [[s, round(v, 4)] for s, v in result.losses],
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "base_params": sum(p.numel() for p in base.model.parameters()),
    }


def real_token_count(encoded, kind: str) -> int:
    """Non-padding tokens of one epoch: source + target (seq2seq), the whole sequence (causal)."""
    if kind == "causal":  # input_ids already hold prompt + target
        return sum(len(a) for a in encoded.input_ids)
    return sum(len(a) + len(b) for a, b in zip(encoded.input_ids, encoded.labels, strict=True))


def run_peer_default(args) -> dict:
    """The Hugging Face Trainer + PEFT LoRA on the default workload: same model, examples, LoRA,
    batch, lr, clipping and epochs as hybridcl's side; length-grouped batches; float32 on a CPU."""
    import tempfile

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    config, base, encoded, lora, targets = default_workload(args)
    base_params = sum(p.numel() for p in base.model.parameters())
    cuda = args.device != "cpu" and torch.cuda.is_available()
    precision, attention = args.peer_setting.split("-")
    base.model.set_attn_implementation(attention)
    torch.manual_seed(0)
    model = get_peft_model(
        base.model,
        LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, task_type="CAUSAL_LM"
        ),
    )
    base.tokenizer.padding_side = "right"  # as hybridcl pads, so positions match
    features = [{"input_ids": i, "labels": t} for i, t in zip(encoded.input_ids, encoded.labels, strict=True)]

    class Examples(torch.utils.data.Dataset):
        def __len__(self):
            return len(features)

        def __getitem__(self, i):
            return features[i]

    training = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="peer_default_"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        learning_rate=config.train.lr,
        max_grad_norm=1.0,
        weight_decay=0.0,
        bf16=precision == "bf16",
        use_cpu=not cuda,
        train_sampling_strategy="group_by_length",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=Examples(),
        data_collator=DataCollatorForSeq2Seq(base.tokenizer, padding=True, label_pad_token_id=-100),
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    losses = [[e["step"], round(e["loss"], 4)] for e in trainer.state.log_history if "loss" in e]
    samples = args.epochs * len(features)
    return {
        "peer": "hf_trainer+peft_lora",
        "workload": "default",
        "model": config.model.name,
        "examples": len(features),
        "epochs": args.epochs,
        "precision": precision,
        "attention": attention,
        "train_s": round(seconds, 1),
        "samples_per_s": round(samples / seconds, 2),
        "real_tokens_per_s": round(args.epochs * real_token_count(encoded, base.kind) / seconds),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "peak_cuda_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None,
        "final_loss": losses[-1][1] if losses else None,
        "losses": losses,
        "device": torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()}",
        "base_params": base_params,
    }


def run_peer(args) -> dict:
    if args.workload == "default":
        return {"system": "peer", "setting": args.peer_setting, **run_peer_default(args)}
    peer = load_peer(args.peer)
    precision, attention = args.peer_setting.split("-")
    _set_peer_script(peer, bf16=precision == "bf16", attention=attention)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        peer.main("tuned", args.examples, args.epochs)
    theirs = json.loads(out.getvalue().strip().splitlines()[-1])
    theirs["peak_rss_gb"] = round(peak_rss_gb(), 2)
    return {"system": "peer", "setting": args.peer_setting, "precision": precision, "attention": attention, **theirs}


def _set_peer_script(peer, *, bf16: bool, attention: str) -> None:
    """The peer script's ``tuned`` mode at one setting: its training arguments with ``bf16`` (the
    Trainer's autocast; the script turns it on only on a GPU) and its model with ``attention``."""
    arguments, model_class = peer.Seq2SeqTrainingArguments, peer.T5ForConditionalGeneration

    def training_arguments(*a, **kw):
        return arguments(*a, **{**kw, "bf16": bf16})

    def model(config):
        config._attn_implementation = attention
        return model_class(config)

    peer.Seq2SeqTrainingArguments, peer.T5ForConditionalGeneration = training_arguments, model


def peer_settings(requested: str, device: str, workload: str) -> tuple[list[str], str | None]:
    """The peer settings to measure (``precision-attention``) and why any were left out.

    ``best`` is every setting a user of the peer could pick on this machine: float32 and, where the
    processor multiplies bf16 natively (a GPU, or a CPU with AVX512-BF16 or AMX), the Trainer's bf16
    autocast; each with SDPA and eager attention. Where bf16 is emulated it is left out: it is slower
    than float32 by orders of magnitude (``cpu_peak.py`` records the two GEMM peaks on every line)."""
    import torch

    from hybridcl.training.loop import cpu_has_native_bf16

    if requested != "best":
        return requested.split(","), None
    cuda = device != "cpu" and torch.cuda.is_available()
    native = torch.cuda.is_bf16_supported() if cuda else cpu_has_native_bf16()
    attentions = ["sdpa", "eager"]
    precisions = ["fp32", "bf16"] if native else ["fp32"]
    settings = [f"{p}-{a}" for p in precisions for a in attentions]
    emulated = "bf16 left out: this processor has no native bf16 (its GEMM is emulated: see bf16_gflops)"
    return settings, None if native else emulated


def device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    return "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workload",
        default="seed",
        choices=["seed", "default"],
        help="seed: random-init codet5-small on the peer's synthetic lengths; default: the default "
        "preset's SmolLM2-135M on the bundled corpus",
    )
    parser.add_argument("--examples", type=int, default=8000)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--strategy", default="lora_only")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="hybridcl's train.precision (auto: bf16 where the processor has it)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every side, interleaved")
    parser.add_argument("--peer", type=Path, default=PEER, help="path of peer_hf_trainer.py")
    parser.add_argument(
        "--peer-settings",
        default="best",
        help="the peer's settings, precision-attention (fp32-sdpa, fp32-eager, bf16-sdpa, bf16-eager), "
        "comma-separated; best: every one this machine offers (bf16 only where it is native)",
    )
    parser.add_argument("--no-peer", action="store_true", help="hybridcl only")
    parser.add_argument("--results", type=Path, default=None, help="the .jsonl every line is appended to")
    parser.add_argument("--side", choices=["hybridcl", "peer"], help=argparse.SUPPRESS)  # one child's side
    parser.add_argument("--peer-setting", default="fp32-sdpa", help=argparse.SUPPRESS)  # the peer child's setting
    args = parser.parse_args()

    if args.side:
        line = run_hybridcl(args) if args.side == "hybridcl" else run_peer(args)
        print(json.dumps({**line, **machine()}), flush=True)
        return

    if args.workload == "seed" and args.batch_size != 8 and not args.no_peer:
        sys.exit("the peer trains with batch 8 only: pass --batch-size 8 or --no-peer")
    results = args.results or RESULTS / f"{datetime.date.today()}-{device_name(args.device)}.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    run_id = datetime.datetime.now().isoformat(timespec="seconds")
    command = " ".join(["python", "benchmarks/train_speed.py", *sys.argv[1:]])
    peaks = gemm_peaks(args.device)

    def emit(line: dict) -> None:
        line = {"benchmark": "train_speed", "run": run_id, **line}
        print(json.dumps(line), flush=True)
        with results.open("a") as f:
            f.write(json.dumps(line) + "\n")

    settings, left_out = ([], None) if args.no_peer else peer_settings(args.peer_settings, args.device, args.workload)
    emit({"command": command, "peer_settings": settings, "left_out": left_out, **peaks, **machine()})
    sides = [*(f"peer:{s}" for s in settings), "hybridcl"]
    seen: dict[str, list[dict]] = {side: [] for side in sides}
    for round_ in range(args.rounds):
        for side in sides:
            line = run_child(args, side)
            line.update(fraction_of_peak(line, peaks, args.workload))
            seen[side].append(line)
            emit({"round": round_ + 1, **line})
    if not args.no_peer:
        emit({**summary(seen, settings, args), **peaks, **machine()})


def run_child(args, side: str) -> dict:
    """One side's training in a child process of its own (its own peak RSS); its result line."""
    system, _, setting = side.partition(":")
    child = [sys.executable, str(Path(__file__).resolve()), "--side", system, "--peer-setting", setting or "fp32-sdpa"]
    for name in ("workload", "examples", "epochs", "batch_size", "strategy", "device", "precision", "peer"):
        child += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    proc = subprocess.run(child, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        sys.exit(f"the {side} run failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gemm_peaks(device: str) -> dict:
    """The machine's float32 and bf16 matrix-multiply peaks (``cpu_peak.py``), GFLOP/s; none on a GPU."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return {}
    from cpu_peak import gemm_flops

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    return {f"{p}_gflops": round(gemm_flops(d) / 1e9, 1) for p, d in dtypes.items()}


def fraction_of_peak(line: dict, peaks: dict, workload: str) -> dict:
    """The GFLOP/s a side reaches at 4 x parameters per real token (forward 2P, backward to the inputs
    2P: the frozen weights get no gradients) and its fraction of the GEMM peak of its precision; for
    hybridcl an upper estimate (prompt tokens skip the head there)."""
    from cpu_peak import CODET5_SMALL_PARAMS

    params = line.get("base_params") or (CODET5_SMALL_PARAMS if workload == "seed" else None)
    peak = peaks.get(f"{line.get('precision', 'fp32')}_gflops")
    if not params or not peak or "real_tokens_per_s" not in line:
        return {}
    gflops = line["real_tokens_per_s"] * 4 * params / 1e9
    return {"gflops": round(gflops, 1), "fraction_of_peak": round(gflops / peak, 3)}


def summary(seen: dict[str, list[dict]], settings: list[str], args) -> dict:
    """The ratio of medians against the peer at its fastest setting, and against its float32 best."""
    median = {side: statistics.median(x["train_s"] for x in lines) for side, lines in seen.items()}
    peers = {s: median[f"peer:{s}"] for s in settings}
    best = min(peers, key=peers.get)
    fp32 = [s for s in settings if s.startswith("fp32")]
    best_fp32 = min(fp32, key=peers.get) if fp32 else None
    mine = seen["hybridcl"]
    ratios = [p["train_s"] / h["train_s"] for p, h in zip(seen[f"peer:{best}"], mine, strict=True)]
    return {
        "speedup_vs_peer_best": round(peers[best] / median["hybridcl"], 2),
        "peer_best_setting": best,
        "per_round": [round(r, 2) for r in ratios],
        "speedup_vs_peer_fp32": round(peers[best_fp32] / median["hybridcl"], 2) if best_fp32 else None,
        "peer_train_s": {s: round(v, 1) for s, v in peers.items()},
        "hybridcl_train_s": round(median["hybridcl"], 1),
        "peak_rss_gb": {side: max(x["peak_rss_gb"] for x in lines) for side, lines in seen.items()},
        "fraction_of_peak": {side: lines[-1].get("fraction_of_peak") for side, lines in seen.items()},
        "workload": args.workload,
        "examples": mine[0]["examples"],
        "epochs": args.epochs,
        "final_loss": {side: [x.get("final_loss") for x in lines] for side, lines in seen.items()},
        "device": mine[0]["device"],
    }


if __name__ == "__main__":
    main()
