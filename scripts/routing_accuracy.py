"""Routing accuracy of every method on the bundled corpus, without training anything.

Each language's router statistics come from its own training prompts (``--train`` of them, drawn as
a run draws them), and the routers choose among the languages for every evaluation prompt
(``--val`` per language, the run's evaluation split). The frozen default model gives the features;
``min_prompt_loss`` needs trained components, so it is measured in runs, not here.

    python scripts/routing_accuracy.py --out docs/results/<date>-routing/accuracy.json
    python scripts/routing_accuracy.py --languages python,javascript --directions completion

Prints one line per (direction, language set, method): accuracy with its 95% Wilson interval.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from hybridcl.config.experiment import load_config
from hybridcl.constants import DIRECTIONS, LANGUAGES
from hybridcl.data.batching import target_length_counter
from hybridcl.data.tasks import load_task_data
from hybridcl.inference.routing import Prompts, Routers, routing_accuracy, wilson_interval
from hybridcl.model.components import ComponentSet
from hybridcl.model.loading import load_base
from hybridcl.records.io import load_tensors, save_tensors
from hybridcl.strategies import get_strategy

FEATURE_METHODS = ["feature_ridge", "mahalanobis", "token_ngram"]


def measure(
    preset: str,
    direction: str,
    languages: list[str],
    subsets: list[list[str]],
    n_train: int,
    n_val: int,
    overrides: list[str],
    cache: Path | None = None,
) -> list[dict]:
    """Fit every language of ``languages`` once, then score each subset of them (routing among its languages)."""
    config = load_config(
        preset,
        [f"data.direction={direction}", f"data.max_train={n_train}", f"data.max_val={n_val}", *overrides],
    )
    base = load_base(config.model)
    components = ComponentSet(base.model, base.kind, get_strategy("lora_only"), config.components)
    lengths = target_length_counter(base.tokenizer, base.kind)
    routers = Routers(replace(config.routing, compare=FEATURE_METHODS))

    def prompts(texts, name):
        p = Prompts(texts, components, base.tokenizer, base.kind, config.data.max_source_len, 16)
        if cache is not None:  # the frozen base's features depend on the texts only: compute them once
            path = cache / f"{direction}-{name}-{len(texts)}.safetensors"
            if path.is_file():
                p.__dict__["features"] = load_tensors(path)["features"]
            else:
                save_tensors(path, {"features": p.features})
        return p

    evaluation, n_fit = {}, {}
    for language in languages:
        data = load_task_data(config.data, language, target_lengths=lengths)
        started = time.perf_counter()
        routers.fit_task(language, prompts([ex.source for ex in data.train], f"{language}-train"))
        n_fit[language] = (len(data.train), time.perf_counter() - started)
        evaluation[language] = prompts([ex.source for ex in data.val], f"{language}-val")
    return [
        {
            "direction": direction,
            "languages": subset,
            "n_train_prompts": {t: n_fit[t][0] for t in subset},
            "fit_seconds": sum(n_fit[t][1] for t in subset),
            "methods": {m: _score(r, {t: evaluation[t] for t in subset}) for m, r in routers.by_method.items()},
        }
        for subset in subsets
    ]


def _score(router, evaluation: dict) -> dict:
    started = time.perf_counter()
    tasks, true, chosen = list(evaluation), [], []
    for language, p in evaluation.items():
        true += [language] * len(p.texts)
        chosen += router.choose(p, tasks)
    correct = sum(t == c for t, c in zip(true, chosen, strict=True))
    pairs = list(zip(true, chosen, strict=True))
    return {
        "accuracy": routing_accuracy(true, chosen),
        "wilson_95": wilson_interval(correct, len(true)),
        "n": len(true),
        "errors": {f"{t}->{c}": pairs.count((t, c)) for t, c in sorted(set(pairs)) if t != c},
        "choose_seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--directions", default=",".join(DIRECTIONS))
    parser.add_argument("--languages", default=None, help="one language set (default: python,javascript and all six)")
    parser.add_argument("--train", type=int, default=96, help="training prompts per language (the default preset's)")
    parser.add_argument("--val", type=int, default=256, help="evaluation prompts per language")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=None, help="a folder keeping the base's features between calls")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. routing.ridge=0.1")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    languages = args.languages.split(",") if args.languages else list(LANGUAGES)
    subsets = [languages] if args.languages else [["python", "javascript"], languages]
    results = []
    for direction in args.directions.split(","):
        for result in measure(
            args.preset, direction, languages, subsets, args.train, args.val, args.overrides, args.cache
        ):
            results.append(result)
            for method, r in result["methods"].items():
                low, high = r["wilson_95"]
                print(
                    f"{direction:13s} {len(result['languages'])} languages  {method:14s} {r['accuracy']:6.2f}% "
                    f"[{low:.2f}, {high:.2f}] of {r['n']}  errors {r['errors']}",
                    flush=True,
                )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "command": "python scripts/routing_accuracy.py " + " ".join(sys.argv[1:]),
            "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        }
        args.out.write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
