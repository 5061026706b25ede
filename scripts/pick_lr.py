"""Each strategy's learning rate, chosen on the loss of held-out functions from a grid (issue 23's fairness step).

    hybridcl run preset=study run.seeds=[0] eval.split=valid run.name=lr-grid \\
        --sweep strategy=lora_only,full_layer_only,hybrid_task_specific,hybrid_shared_layer \\
        --sweep train.lr=3e-4,1e-3,3e-3
    python scripts/pick_lr.py runs/lr-grid --out runs/lr-chosen

For every group of runs that differ only in ``train.lr`` (the sweep's other values: a strategy, or a
strategy with ``components.lora.r`` for the parameter-matched LoRA-only), picks the run with the lowest
loss on the scored split (``eval.split``) after the last task (``cl_metrics.loss.average_final``, nats per
target token, mean over the seeds run; ``scripts/study_at_scale.py`` scores its grids on the test split
and reports on the valid one) and writes that run's resolved config as ``OUT/<group>.yaml``, so the study runs each
strategy at its own rate: ``hybridcl run config=OUT/<group>.yaml run.seeds=[0,1,2] eval.split=test``.
``OUT/chosen_lr.json`` records the grid: each group's learning rates, their losses and the choice. A
chosen rate at an end of the grid is flagged with the rate half a decade past it (``beyond``: the optimum
may lie there). Widen the grid with a sweep of that rate and pass both folders::

    hybridcl run ... run.name=lr-grid-wider --sweep strategy=lora_only --sweep train.lr=1e-2
    python scripts/pick_lr.py runs/lr-grid runs/lr-grid-wider --out runs/lr-chosen

A run whose loss is not finite (it diverged) loses to every finite one.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

from hybridcl.config.sweep import is_sweep
from hybridcl.records.io import read_json, write_json
from hybridcl.stats.seeds import mean

LR_KEY = "train.lr"


def grid_points(sweep_dir: Path) -> list[dict]:
    """``[{"run", "group", "values", "lr", "loss"}]`` for every run of the sweep (``values``: the sweep's
    other values, which name the group; loss None where not finished)."""
    if not is_sweep(sweep_dir):
        raise SystemExit(f"{sweep_dir} is not a sweep folder (no sweep.json): pass the folder of the lr grid")
    info = read_json(sweep_dir / "sweep.json")
    if LR_KEY not in info["axes"]:
        raise SystemExit(f"{sweep_dir}: the sweep has no {LR_KEY} axis (axes: {', '.join(info['axes'])})")
    out = []
    for point in info["points"]:
        run = sweep_dir / point["name"]
        results = read_json(run / "results.json") if (run / "results.json").is_file() else None
        others = {k: v for k, v in point["values"].items() if k != LR_KEY}
        group = "__".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in others.items()) if len(others) > 1 else None
        group = group or str(next(iter(others.values()), "grid"))
        loss = mean((results["cl_metrics"].get("loss") or {}).get("average_final")) if results else None
        out.append({"run": run, "group": group, "values": others, "lr": float(point["values"][LR_KEY]), "loss": loss})
    return out


def half_decade(lr: float, steps: int) -> float:
    """``lr`` moved ``steps`` half-decades along the 1-3-10 ladder the grids use (3e-3, +1: 1e-2)."""
    k = round(2 * math.log10(lr)) + steps
    return float(f"{10 ** (k / 2):.0e}")


def beyond(lrs: list[float], best: float) -> float | None:
    """The rate half a decade past the grid's end where ``best`` sits; None when it is inside the grid."""
    if len(lrs) < 2 or min(lrs) < best < max(lrs):
        return None
    return half_decade(best, 1 if best == max(lrs) else -1)


def _rank(loss: float) -> float:
    return loss if math.isfinite(loss) else math.inf  # a diverged run loses to every finite one


def choose(points: list[dict]) -> dict[str, dict]:
    """Group -> ``{"lr", "loss", "run", "values", "grid": {lr: loss}, "at_edge", "beyond"}``: the lowest
    loss among the finished runs; ``at_edge``: it is the grid's smallest or largest rate
    (finished or not); ``beyond``: the rate past that edge (:func:`beyond`), None inside the grid."""
    groups: dict[str, list[dict]] = {}
    for p in points:
        groups.setdefault(p["group"], []).append(p)
    out = {}
    for group, members in groups.items():
        scored = [p for p in members if p["loss"] is not None]
        if not scored:
            continue
        best = min(scored, key=lambda p: _rank(p["loss"]))
        past = beyond([p["lr"] for p in members], best["lr"])
        out[group] = {
            "lr": best["lr"],
            "loss": best["loss"],
            "run": str(best["run"]),
            "values": best["values"],
            "grid": {str(p["lr"]): p["loss"] for p in sorted(members, key=lambda p: p["lr"])},
            "at_edge": past is not None,
            "beyond": past,
        }
    return out


def write_choices(chosen: dict[str, dict], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for group, c in chosen.items():
        shutil.copyfile(Path(c["run"]) / "config.yaml", out_dir / f"{group}.yaml")
    write_json(out_dir / "chosen_lr.json", chosen)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("grids", type=Path, nargs="+", help="the lr-grid sweep folder (and any that widen it)")
    parser.add_argument("--out", type=Path, required=True, help="where <group>.yaml and chosen_lr.json go")
    args = parser.parse_args(argv)
    chosen = choose([p for grid in args.grids for p in grid_points(grid)])
    if not chosen:
        raise SystemExit(f"{', '.join(map(str, args.grids))}: no finished run with a loss matrix yet")
    write_choices(chosen, args.out)
    for group, c in chosen.items():
        grid = ", ".join(f"{lr}: {loss:.4f}" if loss is not None else f"{lr}: n/a" for lr, loss in c["grid"].items())
        edge = f"  (at the grid's edge: widen it to {c['beyond']:g})" if c["at_edge"] else ""
        print(f"{group}: train.lr={c['lr']} (loss {c['loss']:.4f} on the scored split; grid {grid}){edge}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
