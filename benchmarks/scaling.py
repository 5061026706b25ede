"""Time of a whole run against examples, sequence length and number of tasks, measured.

Runs the ``smoke`` preset (tiny T5, hybrid_shared_layer) end to end with one setting varied at a
time from a base of 32 training examples per task, 64-token sources and targets and 2 tasks, and
prints one JSON line per run: wall seconds, training seconds, evaluation seconds (the matrix's
(T+1)·T cells; generation + teacher-forced loss), the number of cells, and the machine's load.
Lines are appended to ``benchmarks/results/<date>-cpu.jsonl``.

    python benchmarks/scaling.py
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import time
from pathlib import Path

from hybridcl.config.experiment import load_config
from hybridcl.continual import run_experiment

ROOT = Path(__file__).resolve().parents[1]
BASE = {"examples": 32, "length": 64, "tasks": ["python", "javascript"]}
GRID = [
    ("examples", [16, 32, 64, 128]),
    ("length", [32, 64, 128]),
    ("tasks", [["python"], ["python", "javascript"], ["python", "javascript", "go"]]),
]


def one_run(examples: int, length: int, tasks: list[str]) -> dict:
    overrides = [
        "preset=smoke",
        f"data.max_train={examples}",
        "data.max_val=4",
        f"data.max_source_len={length}",
        f"data.max_target_len={length}",
        f"tasks=[{','.join(tasks)}]",
        "eval.max_new_tokens=32",
    ]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run = run_experiment(load_config(overrides=[*overrides, f"run.output_dir={out}", "run.name=s"]), progress=False)
        wall = time.perf_counter() - start
        state = json.loads((run / "seed-0" / "state.json").read_text())
    cells = [c for row in state["rows"] for c in row.values() if c]
    return {
        "benchmark": "scaling",
        "examples": examples,
        "length": length,
        "tasks": len(tasks),
        "wall_s": round(wall, 1),
        "train_s": round(sum(t["seconds"] for t in state["train"]), 1),
        "eval_s": round(sum(c.get("eval_seconds") or 0 for c in cells), 1),
        "cells": len(cells),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    results = ROOT / "benchmarks" / "results" / f"{datetime.date.today()}-cpu.jsonl"
    for name, values in GRID:
        for value in values:
            line = one_run(**{**BASE, name: value})
            print(json.dumps(line), flush=True)
            with results.open("a") as f:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
