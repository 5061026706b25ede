"""Routing accuracy of a finished run on what a server receives, per kind of request.

For each task of the run, its evaluation functions are sent as a client would: the start of the
function (``code_start``), its docstring summary, a chat request naming the language ("Write a
JavaScript function that ...") and one that does not; plus the run's own prompts. Each is routed
as ``hybridcl serve`` routes ``model=auto`` (a request that names its language goes to that
language's tasks, the router chooses among them), and by the router alone. Two routers: the run's
own (fitted on ``routing.fit_on``, saved with each stage) and, for comparison, one refitted here on
the run's prompts alone (what runs made before ``routing.fit_on`` used).

    python scripts/routing_requests.py RUN_DIR --out docs/results/<date>-serve-routing/
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import replace
from pathlib import Path

from hybridcl.data.batching import target_length_counter
from hybridcl.data.tasks import load_task_data, task_data_config
from hybridcl.inference.load import load_run
from hybridcl.inference.routing import Prompts, Routers, fitting_texts, request_texts, wilson_interval
from hybridcl.records.environment import environment_record

KINDS = ("code_start", "docstring", "chat_named", "chat_unnamed", "prompts")


def texts_of(example, kind: str) -> list[str]:
    if kind.startswith("chat_"):
        chat = request_texts(example, "chat")
        return chat[:1] if kind == "chat_named" else chat[1:]
    return request_texts(example, kind)


def prompts_router(run, train: dict) -> Routers:
    """A router fitted on each task's own prompts alone, as runs before ``routing.fit_on`` were."""
    routers = Routers(replace(run.config.routing, compare=[]))
    for task, examples in train.items():
        prompts = Prompts(
            fitting_texts(examples, ["prompts"]), run.components, run.tokenizer, run.kind,
            run.config.data.max_source_len, run.config.eval.batch_size,
        )  # fmt: skip
        routers.fit_task(task, prompts)
    return routers


def measure(run_dir: Path) -> list[dict]:
    run = load_run(run_dir)
    config, lengths = run.config, target_length_counter(run.tokenizer, run.kind)
    data = {
        t.name: load_task_data(
            task_data_config(config.data, t), t.language, eval_split=config.eval.split, target_lengths=lengths
        )
        for t in config.tasks
    }
    routers = {"run's router": run.routers, "prompts only": prompts_router(run, {t: d.train for t, d in data.items()})}
    rows = []
    for name, router in routers.items():
        run.routers = router
        for kind in KINDS:
            for task, d in data.items():
                texts = [x for ex in d.val for x in texts_of(ex, kind)]
                if not texts:
                    continue
                for how, chosen in (("as served", run._tasks_of(texts)[1]), ("router alone", run.choose_tasks(texts))):
                    correct = sum(c == task for c in chosen)
                    low, high = wilson_interval(correct, len(texts))
                    rows.append(
                        {"router": name, "kind": kind, "task": task, "how": how, "n": len(texts), "correct": correct,
                         "accuracy": 100 * correct / len(texts), "interval": [low, high]}
                    )  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    lines = [
        "| router | routed | request | " + " | ".join(tasks) + " |",
        "|---|---|---|" + "---|" * len(tasks),
    ]
    keys = dict.fromkeys((r["router"], r["how"], r["kind"]) for r in rows)
    for router, how, kind in keys:
        cells = []
        for task in tasks:
            r = next(
                (r for r in rows if (r["router"], r["how"], r["kind"], r["task"]) == (router, how, kind, task)), None
            )
            cells.append("-" if r is None else f"{r['accuracy']:.1f} [{r['interval'][0]:.1f}, {r['interval'][1]:.1f}]")
        lines.append(f"| {router} | {how} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="folder for routing.jsonl and routing.md")
    args = parser.parse_args()
    rows = measure(args.run_dir)
    text = table(rows)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        env = environment_record()
        header = {"benchmark": "routing_requests", "run": args.run_dir.name, "machine": platform.processor(),
                  "cpu": env.get("cpu"), "git": env.get("git")}  # fmt: skip
        (args.out / "routing.jsonl").write_text("".join(json.dumps({**header, **r}) + "\n" for r in rows))
        (args.out / "routing.md").write_text(text)


if __name__ == "__main__":
    main()
