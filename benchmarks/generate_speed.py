"""Generation speed: hybridcl's ``generate`` against plain Hugging Face ``generate`` on the evaluation's workload.

The workload is what a run of ``--preset`` (default: ``default``) generates in one matrix cell per
task: the first ``--prompts`` (default: the preset's ``eval.max_examples``) validation examples of
each task, encoded as the evaluator encodes them (``encode_prompts``, ``data.max_source_len``),
greedy, the preset's ``eval.max_new_tokens`` and ``eval.batch_size``, a generated function
stopping at its end.

The peer is ``model.generate`` as a user would call it: batches of ``eval.batch_size`` in input
order, greedy, KV cache, the same ``max_new_tokens``, pad and EOS, and the function-end rule as its
``StoppingCriteria`` (hybridcl's ``FunctionEndCriteria``: a row stops there, the batch when its
last row has stopped); its texts are cut at EOS and at the function's end as hybridcl cuts its
own. hybridcl is :func:`hybridcl.evaluation.generate.generate` as the evaluator calls it (prompts
sorted by length, finished rows leaving the batch, waiting prompts joining it). Both decode the
same token ids up to float rounding (``hybridcl.evaluation.greedy``); the last line counts the
outputs whose texts are identical.

The sides alternate (peer, hybridcl, peer, ...) for ``--rounds`` rounds in one process after one
untimed call of each on one prompt per task, so that other work on a shared machine slows both
alike. Each line gives wall seconds; CPU seconds of the process (where higher-priority work shares
the machine, wall time mostly measures waiting: one call took 364 s of wall time for 13.9 s of
CPU time) and the part of them inside prefills and decoding passes of the model (the rest is
Python around it: stopping checks, decoding texts, bookkeeping); and the work done, forward
passes and token rows (the rows of each pass times its tokens), which do not depend on the load.
``--draft-budgets 0,16`` adds hybridcl sides with other ``DRAFT_BUDGET`` values (0: no drafted
tokens). The last line has the ratios of the medians. Every line, with the load average, is
appended to ``benchmarks/results/<date>-cpu.jsonl``.

    python benchmarks/generate_speed.py                       # the default preset: 8 prompts per task
    python benchmarks/generate_speed.py --prompts 32          # 32 prompts per task (eval.max_examples=32)
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
from transformers import StoppingCriteriaList

from hybridcl.config.experiment import load_config
from hybridcl.data.batching import encode_prompts
from hybridcl.data.tasks import load_task_data
from hybridcl.evaluation import greedy
from hybridcl.evaluation.generate import GenerationSettings, code_language, generate
from hybridcl.evaluation.stopping import FunctionEndCriteria, function_end
from hybridcl.model.loading import load_base

ROOT = Path(__file__).resolve().parents[1]


def hf_generate(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int, language: str | None
) -> list[str]:
    """Plain ``model.generate`` in input order with the function-end criterion; texts cut at EOS, then at
    the function's end (as hybridcl's generate cuts them)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    texts = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            rows = prompts[start : start + batch_size]
            width = max(map(len, rows))
            ids = torch.full((len(rows), width), pad)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, seq in enumerate(rows):  # left padding: the prompt ends where generation starts
                ids[r, width - len(seq) :] = torch.tensor(seq)
                mask[r, width - len(seq) :] = 1
            stop = StoppingCriteriaList([FunctionEndCriteria(tokenizer, language, width, eos)] if language else [])
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                use_cache=True,
                pad_token_id=pad,
                eos_token_id=eos,
                temperature=None,
                top_p=None,
                top_k=None,
                stopping_criteria=stop,
            )
            for row in out[:, width:].tolist():
                row = row[: row.index(eos)] if eos in row else row
                text = tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                end = function_end(text, language, final=True) if language else None
                texts.append(text if end is None or not text[end:].strip() else text[:end].rstrip())
    return texts


class Work:
    """Counts the model's forward passes and token rows (rows x tokens of each pass), and the CPU
    seconds spent in prefills (the prompts' pass) and in decoding passes."""

    def __init__(self, model):
        self.passes = self.token_rows = 0
        self.cpu = {"prefill": 0.0, "decode": 0.0}
        self._started = None
        model.register_forward_pre_hook(self._start, with_kwargs=True)
        model.register_forward_hook(self._end)

    def _start(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        cache = kwargs.get("cache")
        if ids is not None:
            self.passes += 1
            self.token_rows += ids.numel()
            stage = "prefill" if cache is None or cache.get_seq_length() == 0 else "decode"
            self._started = (stage, time.process_time())

    def _end(self, module, args, output):
        if self._started is not None:
            stage, start = self._started
            self.cpu[stage] += time.process_time() - start
            self._started = None

    def take(self) -> dict:
        out = {
            "forward_passes": self.passes,
            "token_rows": self.token_rows,
            "cpu_prefill_s": round(self.cpu["prefill"], 2),
            "cpu_decode_s": round(self.cpu["decode"], 2),
        }
        self.passes = self.token_rows = 0
        self.cpu = {"prefill": 0.0, "decode": 0.0}
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--prompts", type=int, default=None, help="per task (default: the preset's eval.max_examples)")
    parser.add_argument("--tasks", default=None, help="comma-separated (default: the preset's tasks)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="both sides (default: eval.batch_size)")
    parser.add_argument(
        "--draft-budgets",
        default=None,
        help="comma-separated DRAFT_BUDGET values to run as further hybridcl sides (0: no drafts)",
    )
    args = parser.parse_args()
    config = load_config(args.preset)
    n = args.prompts or config.eval.max_examples
    batch = [f"eval.batch_size={args.batch_size}"] if args.batch_size else []
    config = load_config(args.preset, [f"data.max_val={max(n, config.data.max_val)}", *batch])
    settings = GenerationSettings.from_config(config)
    base = load_base(config.model)
    model, tokenizer, kind = base.model.eval(), base.tokenizer, base.kind
    if kind != "causal":
        raise SystemExit(f"--preset {args.preset}: the peer here is written for decoder-only models; got {kind}")
    workload = []
    for task in args.tasks.split(",") if args.tasks else config.task_names:
        examples = load_task_data(config.data, task, with_train=False).val[:n]
        prompts, _ = encode_prompts(
            tokenizer,
            [e.source for e in examples],
            [task] * len(examples),
            config.data.direction,
            kind,
            config.data.max_source_len,
        )
        workload.append((task, prompts, code_language(task, config.data.direction, config.data.completion_target)))
    results = ROOT / "benchmarks" / "results" / f"{datetime.date.today()}-cpu.jsonl"
    run_id = datetime.datetime.now().isoformat(timespec="seconds")
    work = Work(model)

    def emit(line: dict) -> None:
        line = {
            "benchmark": "generate_speed",
            "run": run_id,
            **line,
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "threads": torch.get_num_threads(),
        }
        print(json.dumps(line), flush=True)
        with results.open("a") as f:
            f.write(json.dumps(line) + "\n")

    default_budget = greedy.DRAFT_BUDGET
    sides = {"hf_generate": None, "hybridcl": default_budget}
    for budget in args.draft_budgets.split(",") if args.draft_budgets else []:
        sides[f"hybridcl_draft_budget_{int(budget)}"] = int(budget)

    def run(side: str, first_only: bool = False) -> dict[str, list[str]]:
        texts = {}
        for task, prompts, language in workload:
            prompts = prompts[:1] if first_only else prompts
            if side == "hf_generate":
                texts[task] = hf_generate(
                    model, tokenizer, prompts, settings.max_new_tokens, settings.batch_size, language
                )
            else:
                greedy.DRAFT_BUDGET = sides[side]
                texts[task] = generate(
                    model, tokenizer, prompts, kind=kind, settings=settings, progress=False, code_language=language
                ).texts
                greedy.DRAFT_BUDGET = default_budget
        return texts

    setting = {
        "model": config.model.name,
        "preset": args.preset,
        "tasks": [t for t, _, _ in workload],
        "prompts_per_task": n,
        "max_new_tokens": settings.max_new_tokens,
        "batch_size": settings.batch_size,
    }
    # the first call of a process pays one-time costs (lazy imports, allocator growth): one untimed call
    # of each side on the first prompt of each task
    for side in sides:
        run(side, first_only=True)
    work.take()
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    outputs = {}
    for round_ in range(args.rounds):
        for side in sides:
            wall, proc = time.perf_counter(), time.process_time()
            outputs[side] = run(side)
            seconds[side].append(time.perf_counter() - wall)
            cpu[side].append(time.process_time() - proc)
            extra = {"draft_budget": sides[side]} if sides[side] is not None else {}
            emit(
                {
                    "round": round_ + 1,
                    "system": side,
                    **extra,
                    **setting,
                    "seconds": round(seconds[side][-1], 2),
                    "cpu_seconds": round(cpu[side][-1], 2),
                    **work.take(),
                }
            )
    for side in list(sides)[2:]:
        same = sum(
            a == b
            for task, _, _ in workload
            for a, b in zip(outputs["hf_generate"][task], outputs[side][task], strict=True)
        )
        emit(
            {
                "system": side,
                "draft_budget": sides[side],
                "cpu_speedup_vs_hf_generate": round(
                    statistics.median(cpu["hf_generate"]) / statistics.median(cpu[side]), 2
                ),
                "identical_outputs": f"{same}/{sum(len(p) for _, p, _ in workload)}",
                **setting,
            }
        )
    pairs = [
        (a, b)
        for task, _, _ in workload
        for a, b in zip(outputs["hf_generate"][task], outputs["hybridcl"][task], strict=True)
    ]
    same = sum(a == b for a, b in pairs)
    median = {side: statistics.median(s) for side, s in seconds.items()}
    median_cpu = {side: statistics.median(s) for side, s in cpu.items()}
    emit(
        {
            "speedup_vs_hf_generate": round(median["hf_generate"] / median["hybridcl"], 2),
            "per_round": [round(p / h, 2) for p, h in zip(seconds["hf_generate"], seconds["hybridcl"], strict=True)],
            "cpu_speedup_vs_hf_generate": round(median_cpu["hf_generate"] / median_cpu["hybridcl"], 2),
            "cpu_per_round": [round(p / h, 2) for p, h in zip(cpu["hf_generate"], cpu["hybridcl"], strict=True)],
            "draft_budget": default_budget,
            "identical_outputs": f"{same}/{len(pairs)}",
            **setting,
        }
    )


if __name__ == "__main__":
    main()
