"""Functional correctness of a trained model: HumanEval pass@k, run in the sandbox.

The model is asked the way it was trained (text-to-code: the problem's signature and docstring as
the description) and answers with a whole function. The program that is run is HumanEval's
``prompt + completion + test``: the generated function follows the prompt's stub and replaces it,
so the tests call the generated code.
"""

from __future__ import annotations

from dataclasses import replace

from hybridcl.config import EvalConfig
from hybridcl.constants import Kind
from hybridcl.data.batching import encode_prompts
from hybridcl.evaluate.generate import GenerationSettings, generate
from hybridcl.evaluate.humaneval import evaluate_completions, load_problems
from hybridcl.evaluate.postprocess import extract_code
from hybridcl.evaluate.precision import evaluation_precision


def humaneval(
    model, tokenizer, kind: Kind, cfg: EvalConfig, settings: GenerationSettings, *, progress: bool = True
) -> dict:
    """pass@k (0-100) for k in 1, 10, 100 up to ``cfg.humaneval_samples``, with per-problem statuses.

    One sample per problem is greedy; several are sampled (``settings``' temperature and top_p)."""
    problems = load_problems(cfg.humaneval_problems)
    n = cfg.humaneval_samples
    prompts, _ = encode_prompts(
        tokenizer,
        [p["prompt"] for p in problems],
        ["python"] * len(problems),
        "text-to-code",
        kind,
        settings.max_source_len,
    )
    sampling = replace(settings, num_beams=1, do_sample=n > 1, temperature=settings.temperature if n > 1 else 1.0)
    with evaluation_precision(cfg.precision, next(model.parameters()).device):
        outputs = generate(
            model,
            tokenizer,
            prompts,
            kind=kind,
            settings=sampling,
            num_return_sequences=n,
            progress=progress,
            desc="humaneval",
            code_language="python",
        )
    completions = [["\n" + extract_code(text) for text in group] for group in outputs.samples]
    ks = [k for k in (1, 10, 100) if k <= n]
    result = evaluate_completions(
        problems, completions, ks=ks, timeout_s=cfg.sandbox_timeout_s, allow_unsandboxed=cfg.allow_unsandboxed
    )
    result["samples"] = n
    result["problems"] = len(problems)
    return result
