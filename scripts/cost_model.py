"""The wall time of scripts/study_at_scale.py's plan, predicted from measured per-unit costs.

    python scripts/cost_model.py measure OUT [--scale cpu]      # tiny runs in OUT; writes OUT/units.json
    python scripts/cost_model.py fit SWEEP ... --timings T.json [--generate-s-per-function S] --out UNITS.json
    python scripts/cost_model.py refit UNITS.json RUN ... --out UNITS.json   # from finished seeds' measured split
    python scripts/cost_model.py predict UNITS.json [--scale cpu] [--json] [--measured TIMINGS.json]

The units (seconds, on the machine they were measured on):

- ``train_s_per_function_epoch``: per strategy (``default`` for one not measured): training seconds per
  training function per epoch (results.json's ``train[k].seconds / samples``);
- ``generate_s_per_function``, ``loss_s_per_function``, ``cell_s``: one evaluated cell costs
  ``cell_s + generate_s_per_function * generated + loss_s_per_function * loss-scored`` (a least-squares fit
  over every computed cell of the measurement runs, which vary both counts);
- ``fixed_s_per_run``: what one seed of one run costs besides training and its cells (process start, model
  loading, tokenising, writing): the measurement sweeps' wall time minus their training and evaluation
  seconds, per seed-run;
- ``routing_s_per_function`` (``refit`` only; 0 where absent): routing without the task id, per loss-scored
  function of the run's tasks (their frozen-base features once per run, the routers' fit, re-scoring);
- ``kept_share``: per task, the share of functions within ``data.max_target_len`` (from the data report),
  for the parts that take every function (``data.max_train=null``).

The prediction counts, per run of the plan and per seed: training functions x epochs per task; the cells
computed (row 0 and every trained row, each task; a per-task strategy's earlier tasks are reused, not
computed: ``eval.reuse_unchanged``); and in each cell the ``eval.max_examples`` generated and the
``data.max_val`` loss-scored functions. Parts whose learning rate comes from the grid are counted at any
rate (the rate does not change the cost).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_at_scale  # noqa: E402

# The task-specific hybrid first: a sweep's first point pays its process's warm-up, and the hybrid is
# measured again by the cells sweep (``fit_units``)
MEASURE_STRATEGIES = ["hybrid_task_specific", "lora_only", "full_layer_only", "hybrid_shared_layer", "full_finetune"]
KINDS = ("train", "loss", "generate", "cells", "routing", "fixed")  # what a prediction splits a seed-run's time into


# scale -> the measurement's training functions per task and its two (generated, loss-scored) cell sizes.
# On a GPU a generation batch (the study preset's eval.batch_size, 32) costs about the same whatever its
# rows (an H200 generated 8 and 24 functions per cell in the same 4-8 s, docs/study.md), so its sizes are
# whole batches, one and three, or the generation unit cannot be told from the cost per cell; and more
# training steps, so the first ones (kernels loaded and tuned per new shape) weigh less.
SIZES = {
    "cpu": {"train": 32, "generated": (8, 24), "scored": (48, 144)},
    "gpu-bundled": {"train": 128, "generated": (32, 96), "scored": (48, 144)},
    "gpu-reference": {"train": 128, "generated": (32, 96), "scored": (48, 144)},
}


def measurement_parts(scale: str, sizes: dict | None = None) -> list[tuple[str, list[str]]]:
    """``(folder, hybridcl run arguments)`` of the measurement: every strategy at one size, then the
    task-specific hybrid at two more (generated, loss-scored) sizes, so the cell fit has three points."""
    sizes = sizes or SIZES[scale]
    base, _ = study_at_scale.SCALES[scale]
    (few, more), (small, large) = sizes["generated"], sizes["scored"]
    tiny = [*base, "run.seeds=[0]", f"data.max_train={sizes['train']}", "train.epochs=1", "eval.split=valid"]
    return [
        (
            "strategies",
            [*tiny, f"data.max_val={small}", f"eval.max_examples={few}"]
            + ["--sweep", f"strategy={','.join(MEASURE_STRATEGIES)}"],
        ),
        (
            "cells",
            [
                *tiny,
                "strategy=hybrid_task_specific",
                f"eval.max_examples={more}",
                "--sweep",
                f"data.max_val={small},{large}",
            ],
        ),
    ]


# ---- measuring --------------------------------------------------------------------------------------


def seed_results(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("**/seed-*/results.json"))]


def cell_counts(results: dict, config) -> dict[str, list[list[int]]]:
    """The generated and loss-scored functions of each cell, from the data report and the config."""
    n_loss = [results["data"][t][config.eval.split]["kept"] for t in results["tasks"]]
    n_gen = [min(n, config.eval.max_examples or n) for n in n_loss]
    rows = len(results["eval_seconds"])
    return {"n_generated": [n_gen] * rows, "n_loss": [n_loss] * rows}


def sweep_runs(folder: Path) -> list[tuple[Path, Any]]:
    """``(run folder, its config)`` of every run of ``folder`` with a finished seed, in the order the sweep
    ran them (``hybridcl.config.sweep.load_sweep``), by name where the folder holds no sweep file."""
    from hybridcl.config.sweep import SWEEP_FILE, load_sweep
    from hybridcl.records.run_dir import load_run_config

    finished = {p.parent.parent for p in folder.glob("*/seed-*/results.json")}
    if (folder / SWEEP_FILE).is_file():
        return [(folder / p.name, p.config) for p in load_sweep(folder) if folder / p.name in finished]
    return [(run, load_run_config(run)) for run in sorted(finished)]


def fit_units(runs: list[tuple[Path, float]], generate_s: float | None = None) -> dict:
    """The units from finished sweeps: ``runs`` = ``(sweep folder, its wall seconds)``. ``generate_s``:
    the generation unit measured elsewhere, for sweeps whose cells all generate as many functions (the
    study's grids generate one): the cells then fit the loss unit and the cost per cell alone (the loss
    unit alone, with no cost per cell, when they also all score as many functions).

    A sweep runs its points in one process, and its first point pays the warm-up (on a GPU: the CUDA
    context, kernels loaded and tuned on first use; an H200 trained LoRA-only's 4 steps in 3.7 s as the
    first point and the hybrid's in 0.8 s as the third): a strategy's training unit leaves first points
    out wherever a later point measured it."""
    train: dict[str, list[float]] = {}
    warm_up: dict[str, list[float]] = {}
    design, seconds, kept = [], [], {}
    overhead, seed_runs = 0.0, 0
    for folder, wall in runs:
        spent = 0.0
        for k, (run, config) in enumerate(sweep_runs(folder)):
            for r in seed_results(run):
                seed_runs += 1
                for record in r["train"]:
                    (warm_up if k == 0 else train).setdefault(r["strategy"], []).append(
                        record["seconds"] / record["samples"]
                    )
                    spent += record["seconds"]
                counts = cell_counts(r, config)
                for i, row in enumerate(r["eval_seconds"]):
                    for j, s in enumerate(row):
                        spent += s or 0.0
                        if s:
                            design.append([1.0, counts["n_generated"][i][j], counts["n_loss"][i][j]])
                            seconds.append(s)
                for t, report in r["data"].items():
                    checked, long = report["train"].get("long_targets_checked"), report["train"].get("long_targets")
                    dropped = (report.get("long_targets") or {}).get("mode", "drop") == "drop"
                    if checked:  # long targets are kept (cut) unless dropped
                        kept.setdefault(t, []).append(1.0 - long / checked if dropped else 1.0)
        overhead += wall - spent
    cell_s, gen_s, loss_s = _fit_cells(np.array(design), np.array(seconds), generate_s)
    per_strategy = {s: float(np.mean(train.get(s) or v)) for s, v in (warm_up | train).items()}
    return {
        "train_s_per_function_epoch": {"default": float(np.median(list(per_strategy.values()))), **per_strategy},
        "generate_s_per_function": float(gen_s),
        "loss_s_per_function": float(loss_s),
        "cell_s": float(cell_s),
        "fixed_s_per_run": overhead / max(seed_runs, 1),
        "kept_share": {t: float(np.mean(v)) for t, v in kept.items()},
        "cells_fitted": len(seconds),
    }


def _fit_cells(design: np.ndarray, seconds: np.ndarray, generate_s: float | None) -> tuple[float, float, float]:
    """``(cell_s, generate_s, loss_s)``: least squares of the cells' seconds on ``[1, generated, scored]``,
    no unit negative (a noisy machine's fit, or sizes that do not move a unit's cost, is refitted without
    it: ``_nonnegative_lstsq``)."""
    if generate_s is not None:
        seconds, design = seconds - generate_s * design[:, 1], design[:, [0, 2]]
        if np.ptp(design[:, 1]) == 0:  # every cell scores as many functions: the time is all theirs
            return 0.0, generate_s, float(np.mean(seconds) / design[0, 1])
        cell_s, loss_s = _nonnegative_lstsq(design, seconds)
        return cell_s, generate_s, loss_s
    cell_s, gen_s, loss_s = _nonnegative_lstsq(design, seconds)
    return cell_s, gen_s, loss_s


def _nonnegative_lstsq(design: np.ndarray, y: np.ndarray) -> list[float]:
    """Least squares with every coefficient >= 0, exact for the few columns here: the non-negative optimum
    is the unconstrained fit on some subset of the columns (the rest 0), so try every subset and keep the
    feasible one with the least residual. (scipy.optimize.nnls does this for many columns; three do not
    warrant the dependency.)"""
    k = design.shape[1]
    best, best_residual = [0.0] * k, float(np.sum(y**2))
    for mask in range(1, 2**k):
        cols = [j for j in range(k) if mask >> j & 1]
        coef, *_ = np.linalg.lstsq(design[:, cols], y, rcond=None)
        residual = float(np.sum((design[:, cols] @ coef - y) ** 2))
        if np.all(coef >= 0) and residual < best_residual - 1e-12:
            best, best_residual = [0.0] * k, residual
            for j, c in zip(cols, coef, strict=True):
                best[j] = float(c)
    return best


def measure(out: Path, scale: str, sizes: dict | None = None) -> dict:
    """Run (or resume, or reuse) the measurement sweeps in ``out``, fit the units, write ``out/units.json``."""
    runs = []
    for folder, args in measurement_parts(scale, sizes):
        path = out / folder
        timing = out / f"{folder}.seconds"
        if not study_at_scale.finished(path):
            cmd = [sys.executable, "-m", "hybridcl", "run", "--no-progress"]
            cmd += ["--resume", str(path)] if path.exists() else [*args, f"run.output_dir={out}", f"run.name={folder}"]
            print("+", " ".join(cmd), flush=True)
            start = time.perf_counter()
            subprocess.run(cmd, check=True)
            previous = float(timing.read_text()) if timing.is_file() else 0.0
            timing.write_text(f"{previous + time.perf_counter() - start}\n")
        runs.append((path, float(timing.read_text())))
    units = fit_units(runs)
    (out / "units.json").write_text(json.dumps(units, indent=2) + "\n")
    return units


def refit_units(units: dict, runs: list[Path]) -> dict:
    """``units`` updated from finished seeds of real runs (``RUN/seed-*/results.json``): each seed's
    ``evaluation`` record splits its wall time into training, generation, loss scoring, routing and the
    rest, so the evaluation units are ratios of measured sums (no fit, ``cell_s`` 0) and ``fixed_s_per_run``
    is the median rest; the training unit of every strategy measured is replaced."""
    seeds = [r for run in runs for r in seed_results(run) if "evaluation" in r]
    if not seeds:
        raise SystemExit(f"no finished seed with an evaluation record under {', '.join(map(str, runs))}")
    total = lambda key: sum(r["evaluation"][key] for r in seeds)  # noqa: E731
    routed = sum(r["routing"]["n"] for r in seeds if r.get("routing"))  # every scored prompt, once per seed
    train: dict[str, list[float]] = {}
    for r in seeds:
        for record in r["train"]:
            train.setdefault(r["strategy"], []).append(record["seconds"] / record["samples"])
    rest = [
        e["wall_seconds"] - e["train_seconds"] - e["generate_seconds"] - e["loss_seconds"] - e["routing_seconds"]
        for e in (r["evaluation"] for r in seeds)
    ]
    return {
        **units,
        "train_s_per_function_epoch": {
            **units["train_s_per_function_epoch"],
            **{s: float(np.mean(v)) for s, v in train.items()},
        },
        "generate_s_per_function": total("generate_seconds") / total("generated"),
        "loss_s_per_function": total("loss_seconds") / total("loss_scored"),
        "cell_s": 0.0,
        "routing_s_per_function": total("routing_seconds") / routed if routed else 0.0,
        "fixed_s_per_run": float(np.median(rest)),
        "seeds_refitted": len(seeds),
    }


# ---- predicting -------------------------------------------------------------------------------------


def _n(cap: int | None, task: str, units: dict, available: int | None) -> int:
    if cap is not None and (available is None or cap <= available):
        return cap
    if available is None:
        raise SystemExit(f"{task}: every function is taken but the count is unknown: give data.max_train/max_val")
    return round(available * units.get("kept_share", {}).get(task, 1.0))


def available(config, task: str, split: str) -> int | None:
    """Functions in the split before the length filter (bundled and local sources; None for hf)."""
    if config.data.source == "hf":
        return None
    from hybridcl.data.readers import read_split

    records, _ = read_split(config.data.source, config.data.path, task, split)
    return len(records)


def computed_cells(config, *, row0: bool = True) -> int:
    """Cells evaluated (not reused) over every trained row and, with ``row0``, row 0."""
    from hybridcl.strategies import get_strategy

    T = len(config.task_names)
    reuse = config.eval.reuse_unchanged and get_strategy(config.strategy).isolates_tasks
    total = T if row0 else 0
    for i in range(1, T + 1):
        tasks = range(T) if config.eval.forward_transfer else range(i)
        total += sum(1 for j in tasks if not (reuse and j + 1 < i))
    return total


def seed_run_seconds(config, units: dict, *, row0: bool = True) -> dict[str, float]:
    """One seed of one run: training, loss, generation, fixed, in seconds (``row0``: with row 0's
    cells; the plan computes them once, ``eval.base_cells``)."""
    train_units = units["train_s_per_function_epoch"]
    per_fe = train_units.get(config.strategy, train_units["default"])
    train = val = 0
    for t in config.task_names:
        train += _n(config.data.max_train, t, units, available(config, t, "train"))
        val += _n(config.data.max_val, t, units, available(config, t, config.eval.split))
    val_per_task = val / len(config.task_names)
    gen_per_task = min(val_per_task, config.eval.max_examples or val_per_task)
    n_cells = computed_cells(config, row0=row0)
    return {
        "train": per_fe * train * config.train.epochs,
        "loss": units["loss_s_per_function"] * val_per_task * n_cells,
        "generate": units["generate_s_per_function"] * gen_per_task * n_cells,
        "cells": units.get("cell_s", 0.0) * n_cells,
        "routing": units.get("routing_s_per_function", 0.0) * val if config.eval.routing else 0.0,
        "fixed": units["fixed_s_per_run"],
    }


def part_configs(part: study_at_scale.Part) -> list:
    """The configs a part runs (a sweep's every point), at a placeholder rate where the grid chooses it."""
    from hybridcl.config.experiment import build_config, raw_config
    from hybridcl.config.sweep import sweep_axes, sweep_points

    overrides = [*part.overrides, *(["train.lr=1e-3"] if part.lr_from else [])]
    raw = raw_config(None, overrides)
    axes = sweep_axes(raw, part.sweeps)
    return [p.config for p in sweep_points(raw, axes)] if axes else [build_config(raw)]


def predict(
    units: dict, scale: str, open_question_seeds: list[int] | None = None, more_seeds: list[int] = ()
) -> list[dict]:
    """Per part of the plan (``study_at_scale.plan``'s, with its seeds' options): its runs, seed-runs and
    predicted seconds by kind; last, row 0's cells, computed once per evaluation setting for the whole
    plan (``eval.base_cells``)."""
    rows, row0 = [], {}
    for part in study_at_scale.plan(scale, open_question_seeds, more_seeds):
        if part.kind != "run":
            continue
        total = dict.fromkeys(KINDS, 0.0)
        configs = part_configs(part)
        for config in configs:
            for key, seconds in seed_run_seconds(config, units, row0=False).items():
                total[key] += seconds * len(config.run.seeds)
            for task in config.task_names:
                setting = (task, config.eval.split, config.eval.max_examples, config.data.max_val)
                row0.setdefault(setting, (config, task))
        seed_runs = sum(len(c.run.seeds) for c in configs)
        rows.append({"part": part.folder, "runs": len(configs), "seed_runs": seed_runs, **total})
    base = dict.fromkeys(KINDS, 0.0)
    for config, task in row0.values():
        one = dataclasses.replace(config, tasks=[config.task(task)], strategy="lora_only")
        cell = seed_run_seconds(one, units)
        for key in ("loss", "generate", "cells"):
            base[key] += cell[key] / computed_cells(one)  # row 0's one cell of this task
    rows.append({"part": "row 0 (once)", "runs": 0, "seed_runs": 0, **base})
    return rows


def table(rows: list[dict], measured: dict[str, float] | None = None) -> str:
    """The prediction per part in minutes; with ``measured`` (part -> wall seconds: the study's
    ``timings.json``) beside each part's total, "-" where the part has not run."""
    extra = " measured |" if measured is not None else ""
    lines = [
        "| part | runs x seeds | " + " | ".join(KINDS) + " | total |" + extra,
        "|---|---|" + "---|" * (len(KINDS) + 1) + ("---|" if extra else ""),
    ]
    minutes = lambda s: f"{s / 60:.1f} min"  # noqa: E731
    for r in rows:
        total = sum(r[k] for k in KINDS)
        line = (
            f"| {r['part']} | {r['seed_runs']} | " + " | ".join(minutes(r[k]) for k in KINDS) + f" | {minutes(total)} |"
        )
        if measured is not None:
            line += f" {minutes(measured[r['part']])} |" if r["part"] in measured else " - |"
        lines.append(line)
    for part in sorted(set(measured or {}) - {r["part"] for r in rows}):  # the grids' widenings, other plans' parts
        why = "a grid widened past its end" if part.startswith("lr-widen/") else "not in this plan"
        empty = " |" * (len(KINDS) + 1)
        lines.append(f"| {part} | not predicted ({why}) |{empty} {minutes(measured[part])} |")
    grand = sum(r[k] for r in rows for k in KINDS)
    last = f"| **all** | {sum(r['seed_runs'] for r in rows)} |{' |' * len(KINDS)} **{grand / 3600:.2f} h** |"
    if measured is not None:
        done = [r["part"] for r in rows if r["part"] in measured]
        predicted = sum(r[k] for r in rows if r["part"] in done for k in KINDS)
        spent = sum(measured[p] for p in done)
        last += f" {spent / 3600:.2f} h of the {predicted / 3600:.2f} h predicted for those parts |"
    lines.append(last)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="run the tiny measurement runs and fit the units")
    m.add_argument("out", type=Path)
    m.add_argument("--scale", choices=sorted(study_at_scale.SCALES), default="cpu")
    f = sub.add_parser("fit", help="fit the units from finished sweeps (the study's grids) and their wall times")
    f.add_argument("sweeps", type=Path, nargs="+")
    f.add_argument("--timings", type=Path, required=True, help="JSON: sweep folder name -> its wall seconds")
    f.add_argument("--generate-s-per-function", type=float, help="measured elsewhere, when the sweeps cannot fit it")
    f.add_argument("--out", type=Path, required=True, help="where units.json goes")
    r = sub.add_parser("refit", help="update units.json from finished seeds' measured time split")
    r.add_argument("units", type=Path)
    r.add_argument("runs", type=Path, nargs="+", help="run folders (RUN/seed-*/results.json)")
    r.add_argument("--out", type=Path, required=True, help="where the updated units.json goes")
    p = sub.add_parser("predict", help="predict the plan's wall time from units.json")
    p.add_argument("units", type=Path)
    p.add_argument("--scale", choices=sorted(study_at_scale.SCALES), default="cpu")
    p.add_argument("--json", action="store_true")
    p.add_argument("--measured", type=Path, help="timings.json of the study: each part's measured wall time beside it")
    p.add_argument("--open-question-seeds", type=int, nargs="+", help="as study_at_scale.py's (the plan to predict)")
    p.add_argument("--more-seeds", type=int, nargs="+", default=[], help="as study_at_scale.py's (the plan to predict)")
    args = parser.parse_args(argv)
    if args.command == "measure":
        print(json.dumps(measure(args.out, args.scale), indent=2))
        return 0
    if args.command == "fit":
        walls = json.loads(args.timings.read_text())
        units = fit_units([(s, walls[s.name]) for s in args.sweeps], args.generate_s_per_function)
        args.out.write_text(json.dumps(units, indent=2) + "\n")
        print(json.dumps(units, indent=2))
        return 0
    if args.command == "refit":
        units = refit_units(json.loads(args.units.read_text()), args.runs)
        args.out.write_text(json.dumps(units, indent=2) + "\n")
        print(json.dumps(units, indent=2))
        return 0
    rows = predict(json.loads(args.units.read_text()), args.scale, args.open_question_seeds, args.more_seeds)
    measured = json.loads(args.measured.read_text()) if args.measured else None
    print(json.dumps(rows, indent=2) if args.json else table(rows, measured))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
