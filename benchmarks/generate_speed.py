"""Generation speed: hybridcl's ``generate`` against plain Hugging Face ``generate``, same prompts.

The prompts are the first ``--prompts`` validation examples of a bundled task, formatted as a run
formats them. The peer is ``model.generate`` as a user would call it: batches in input order,
greedy, KV cache, the same ``max_new_tokens``, pad and EOS; its texts are cut at EOS and at the
end of the function afterwards so that both sides' texts can be compared. hybridcl's
:func:`hybridcl.evaluate.generate.generate` sorts prompts by length and stops each batch once
every function in it has ended. The sides alternate (peer, hybridcl, ...) for ``--rounds``
rounds in one process; the line with the ratio of the medians and the number of identical
outputs comes last. Every line is appended to ``benchmarks/results/<date>-<device>.jsonl``.

    python benchmarks/generate_speed.py --model embedded:smollm2-135m-instruct --prompts 32 --max-new-tokens 128
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path

import torch

from hybridcl.config import DataConfig, ModelConfig
from hybridcl.data.tasks import format_prompt, load_task_data
from hybridcl.evaluate.generate import encode_prompts, generate
from hybridcl.evaluate.stopping import function_end
from hybridcl.model.loading import load_base

ROOT = Path(__file__).resolve().parents[1]


def hf_generate(model, tokenizer, prompts, kind, max_new_tokens, batch_size, language) -> list[str]:
    """Plain ``model.generate`` in input order; texts cut at EOS, then at the function's end."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    encoded = encode_prompts(tokenizer, prompts, kind, 512)
    texts = []
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            rows = encoded[start:start + batch_size]
            width = max(map(len, rows))
            left = kind == "causal"
            ids = torch.full((len(rows), width), pad)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, seq in enumerate(rows):
                span = slice(width - len(seq), width) if left else slice(0, len(seq))
                ids[r, span] = torch.tensor(seq)
                mask[r, span] = 1
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 num_beams=1, use_cache=True, pad_token_id=pad, eos_token_id=eos,
                                 temperature=None, top_p=None, top_k=None)
            for row in out[:, width if left else 1:].tolist():
                row = row[:row.index(eos)] if eos in row else row
                text = tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                end = function_end(text, language, final=True)
                texts.append(text if end is None or not text[end:].strip() else text[:end].rstrip())
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--language", default="python")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    base = load_base(ModelConfig(name=args.model))
    model, tokenizer, kind = base.model.eval(), base.tokenizer, base.kind
    data = load_task_data(DataConfig(max_train=1, max_val=args.prompts), args.language, with_train=False)
    prompts = [format_prompt(e, args.language, e.direction, kind) for e in data.val]
    results = ROOT / "benchmarks" / "results" / f"{datetime.date.today()}-cpu.jsonl"
    run_id = datetime.datetime.now().isoformat(timespec="seconds")

    def emit(line: dict) -> None:
        line = {"benchmark": "generate_speed", "run": run_id, **line,
                "loadavg": [round(x, 2) for x in os.getloadavg()], "threads": torch.get_num_threads()}
        print(json.dumps(line), flush=True)
        with results.open("a") as f:
            f.write(json.dumps(line) + "\n")

    setting = {"model": args.model, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
               "batch_size": args.batch_size}
    # The first generation in a process is several times slower than the next ones (measured 123 s
    # then 8.8 s for the same call, on the same model): one untimed call first, shared by both sides.
    hf_generate(model, tokenizer, prompts, kind, args.max_new_tokens, args.batch_size, args.language)
    seconds: dict[str, list[float]] = {"hf_generate": [], "hybridcl": []}
    outputs = {}
    for round_ in range(args.rounds):
        for side in seconds:
            start = time.perf_counter()
            if side == "hf_generate":
                texts = hf_generate(model, tokenizer, prompts, kind, args.max_new_tokens, args.batch_size, args.language)
            else:
                texts = generate(model, tokenizer, prompts, kind=kind, max_new_tokens=args.max_new_tokens,
                                 batch_size=args.batch_size, progress=False, code_language=args.language)
            seconds[side].append(time.perf_counter() - start)
            outputs[side] = texts
            emit({"round": round_ + 1, "system": side, **setting, "seconds": round(seconds[side][-1], 1)})
    same = sum(a == b for a, b in zip(outputs["hf_generate"], outputs["hybridcl"]))
    median = {side: statistics.median(s) for side, s in seconds.items()}
    emit({"speedup_vs_hf_generate": round(median["hf_generate"] / median["hybridcl"], 2),
          "per_round": [round(p / h, 2) for p, h in zip(seconds["hf_generate"], seconds["hybridcl"])],
          "identical_outputs": f"{same}/{len(prompts)}", **setting})


if __name__ == "__main__":
    main()
