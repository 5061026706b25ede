"""Sweeps: the product of several config keys' values, each point a run of its own on the same data and seeds.

    hybridcl run preset=default --sweep strategy=lora_only,hybrid_task_specific --sweep components.lora.r=4,8
    hybridcl run preset=default strategy=all        # shorthand: a sweep over every strategy

or, in a YAML config, ``sweep: {strategy: [lora_only, ewc], components.lora.r: [4, 8]}``. A sweep
folder holds ``sweep.json`` (the axes and the points) and one run folder per point, named by its
values; every point's config is written and checked before the first one trains, so a bad value
fails at once and ``hybridcl run --resume SWEEP_DIR`` continues where it stopped.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from hybridcl.config.experiment import ExperimentConfig, apply_override, build_config
from hybridcl.errors import ConfigError, RunError, quote
from hybridcl.records.io import read_json, write_json
from hybridcl.records.run_dir import load_run_config, write_run_config
from hybridcl.strategies import ALL_STRATEGIES

SWEEP_FILE = "sweep.json"
ALL = "all"  # strategy=all: every strategy


@dataclass
class SweepPoint:
    """One point of a sweep: its folder name, the values it sets and its validated config."""

    name: str
    values: dict[str, Any]
    config: ExperimentConfig


def parse_axis(item: str) -> tuple[str, list]:
    """``"key=v1,v2"`` -> ``("key", [v1, v2])``; values are YAML (``tasks=[python,go],[go,python]``)."""
    key, sep, text = item.partition("=")
    if not sep or not key or not text:
        raise ConfigError(f"--sweep {quote(item)} is not of the form key=value1,value2 (e.g. components.lora.r=4,8,16)")
    try:
        values = yaml.safe_load(f"[{text}]")
    except yaml.YAMLError:
        raise ConfigError(f"--sweep {quote(item)}: the values are not a comma-separated list") from None
    return key, values


def sweep_axes(raw: dict[str, Any], items: Sequence[str] | None = ()) -> dict[str, list]:
    """The axes of a sweep: ``raw``'s ``sweep:`` section, then ``items`` (``key=v1,v2``), then ``strategy=all``.

    Removes the ``sweep`` section from ``raw``; an empty result means a single run.
    """
    axes: dict[str, list] = {}
    section = raw.pop("sweep", None) or {}
    if not isinstance(section, dict):
        raise ConfigError("sweep must be a mapping of keys to lists of values, e.g. sweep: {components.lora.r: [4, 8]}")
    for key, values in section.items():
        axes[str(key)] = values if isinstance(values, list) else [values]
    for item in items or ():
        key, values = parse_axis(item)
        axes[key] = values
    if raw.get("strategy") == ALL or axes.get("strategy") == [ALL]:
        axes["strategy"] = list(ALL_STRATEGIES)
    for key, values in axes.items():
        if not values:
            raise ConfigError(f"sweep {key} has no values: give at least one")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"sweep {key} = {values}: each value may appear once")
    return axes


def _slug(value: Any) -> str:
    text = "+".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)


def sweep_points(raw: dict[str, Any], axes: dict[str, list]) -> list[SweepPoint]:
    """Every combination of the axes' values, each applied to ``raw`` and validated."""
    keys = list(axes)
    points = []
    for combo in itertools.product(*(axes[k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        point = copy.deepcopy(raw)
        for key, value in values.items():
            apply_override(point, f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}")
        try:
            config = build_config(point)
        except ConfigError as exc:
            raise ConfigError(f"sweep point {values}: {exc}") from None
        if len(keys) == 1:
            name = _slug(combo[0])
        else:
            name = "__".join(f"{k.rsplit('.', 1)[-1]}={_slug(v)}" for k, v in values.items())
        points.append(SweepPoint(name, values, config))
    return points


def new_sweep_dir(raw: dict[str, Any], axes: dict[str, list]) -> Path:
    run = raw.get("run") or {}
    label = "all" if axes.get("strategy") == list(ALL_STRATEGIES) and len(axes) == 1 else "sweep"
    name = run.get("name") or f"{raw.get('preset', 'config')}-{label}-{datetime.now():%Y%m%d-%H%M%S}"
    return Path(run.get("output_dir") or "runs") / name


def write_sweep(sweep_dir: Path, axes: dict[str, list], points: list[SweepPoint]) -> None:
    """Create the sweep folder: ``sweep.json`` and every point's folder with its ``config.yaml``. Points
    that do not name an ``eval.base_cells`` folder share ``<sweep>/base-cells``: row 0 is computed once."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    for point in points:
        if point.config.eval.base_cells is None:
            point.config.eval.base_cells = str(sweep_dir / "base-cells")
        (sweep_dir / point.name).mkdir(exist_ok=True)
        write_run_config(sweep_dir / point.name, point.config)
    write_json(
        sweep_dir / SWEEP_FILE,
        {"format": 1, "axes": axes, "points": [{"name": p.name, "values": p.values} for p in points]},
    )


def is_sweep(folder: Path) -> bool:
    return (Path(folder) / SWEEP_FILE).is_file()


def sweep_run_dirs(sweep_dir: Path) -> list[Path]:
    """The run folders of a sweep, in the sweep's order."""
    return [Path(sweep_dir) / p.name for p in load_sweep(sweep_dir)]


def load_sweep(sweep_dir: Path) -> list[SweepPoint]:
    """The points of an existing sweep folder, with each point's saved config."""
    info = read_json(Path(sweep_dir) / SWEEP_FILE)
    if not isinstance(info, dict) or not isinstance(info.get("points"), list):
        raise RunError(f"{sweep_dir / SWEEP_FILE} is not a hybridcl sweep file: start the sweep again")
    return [SweepPoint(p["name"], p["values"], load_run_config(Path(sweep_dir) / p["name"])) for p in info["points"]]
