"""Experiment trackers: ``run.report_to`` = any of ``tensorboard`` (default), ``wandb``, ``mlflow``,
``csv``, or ``none``.

TensorBoard, W&B and MLflow are Accelerate's trackers (``accelerate.tracking``); CSV is
:class:`CSVTracker`, an Accelerate ``GeneralTracker`` that writes ``metrics.csv``. Only the main
process logs. One seed is one tracked run; what it logs, on one global step axis (optimizer steps
summed over the stages trained so far):

- the resolved config (flattened ``section.key`` values), once;
- ``train/loss`` and ``train/lr`` at every logged training step (``train.log_every``), ``train/stage``;
- at the end of each stage: ``stage/seconds``, ``stage/samples_per_s``, ``stage/peak_memory_gb``;
- after each matrix row: every cell, ``matrix/<metric>/<task>``, and ``routing/accuracy`` of a routed row;
- at the end: ``cl/<metric>/<name>`` for each CL metric with ``.../low`` and ``.../high`` (its 95%
  interval), ``routing/accuracy`` with its interval.

Where each tracker writes: TensorBoard ``seed-<s>/tensorboard/``; CSV ``seed-<s>/metrics.csv``
(``step,name,value``); W&B ``seed-<s>/wandb/`` (project ``hybridcl``, run ``<run>-seed-<s>``; offline
with ``WANDB_MODE=offline``); MLflow the server of ``MLFLOW_TRACKING_URI``, else the SQLite store
``<run>/mlflow.db`` (experiment ``<run>``, run ``seed-<s>``). docs/reports.md shows how to open each.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker, WandBTracker, on_main_process

from hybridcl.errors import ConfigError

EXTRAS = {"wandb": "wandb", "mlflow": "mlflow"}  # tracker -> the pip extra that installs it
CL_NAMES = ("average_final", "forgetting_relative", "forgetting_absolute", "bwt", "fwt")


def check_installed(report_to: list[str], key: str = "run.report_to") -> None:
    """The optional libraries of ``report_to`` are installed (the config checks the names)."""
    import importlib.util

    for tracker, extra in EXTRAS.items():
        if tracker in report_to and importlib.util.find_spec(tracker) is None:
            raise ConfigError(
                f"{key} includes {tracker}, which is not installed: pip install 'hybridcl[{extra}]' (or remove it)"
            )


class CSVTracker(GeneralTracker):
    """An Accelerate tracker that appends ``step,name,value`` rows to ``<logging_dir>/metrics.csv``."""

    name = "csv"
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir: str | os.PathLike):
        super().__init__()
        self.run_name, self.path = run_name, Path(logging_dir) / "metrics.csv"

    @on_main_process
    def start(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        self.file = self.path.open("a", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(["step", "name", "value"])

    @property
    def tracker(self):
        return self.writer

    @on_main_process
    def store_init_configuration(self, values: dict):
        for k, v in values.items():
            self.writer.writerow(["", f"config/{k}", v])
        self.file.flush()

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs):
        for k, v in values.items():
            self.writer.writerow(["" if step is None else step, k, v])
        self.file.flush()

    @on_main_process
    def finish(self):
        self.file.close()


def flatten(config: dict, prefix: str = "") -> dict[str, str | int | float | bool]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 0.001}``; lists and ``None`` become strings."""
    out: dict = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (str, int, float, bool)) else str(v)
    return out


class Trackers:
    """The trackers of one seed (``enabled=False``: none, e.g. on other processes or when re-evaluating).

    Used as a context manager around the seed's stages; the recipe calls :meth:`train_step`,
    :meth:`stage`, :meth:`row` and :meth:`results`."""

    def __init__(self, report_to: list[str], seed_dir, *, run_config: dict, enabled: bool = True):
        self.names = [t for t in report_to if t != "none"] if enabled else []
        check_installed(self.names)
        self.seed_dir, self.run_config = seed_dir, run_config
        self.trackers: list[GeneralTracker] = []
        self.offset = 0  # optimizer steps of the stages trained before the current one
        self.step = 0  # the global step the next values are logged at

    def _make(self, name: str) -> GeneralTracker:
        seed_dir = Path(self.seed_dir.path)
        run = seed_dir.parent.name
        if name == "tensorboard":
            return TensorBoardTracker("tensorboard", seed_dir)
        if name == "csv":
            return CSVTracker(run, seed_dir)
        if name == "wandb":
            os.makedirs(seed_dir, exist_ok=True)
            return WandBTracker("hybridcl", name=f"{run}-{seed_dir.name}", dir=str(seed_dir), reinit="finish_previous")
        if "MLFLOW_TRACKING_URI" not in os.environ:
            import mlflow

            mlflow.set_tracking_uri(f"sqlite:///{(seed_dir.parent / 'mlflow.db').resolve()}")
        return MLflowTracker(experiment_name=run, run_name=seed_dir.name)

    def __enter__(self):
        for name in self.names:
            tracker = self._make(name)
            tracker.start()
            tracker.store_init_configuration(flatten(self.run_config))
            self.trackers.append(tracker)
        return self

    def __exit__(self, *exc):
        for tracker in self.trackers:
            tracker.finish()

    def log(self, values: dict, step: int | None = None) -> None:
        values = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
        for tracker in self.trackers:
            tracker.log(values, step=self.step if step is None else step)

    def at(self, finished: list[dict]) -> None:
        """Put the step axis at the end of the ``finished`` stages' training records (resume: restored ones)."""
        self.offset = self.step = sum(record["steps"] for record in finished)

    def train_step(self, step: int, loss: float, lr: float) -> None:
        """One logged training step (``step``: the stage's optimizer step, from 1)."""
        self.step = self.offset + step
        self.log({"train/loss": loss, "train/lr": lr})

    def stage(self, i: int, record: dict) -> None:
        """Stage ``i`` finished training (its ``record``): time, throughput and memory."""
        if not self.trackers:
            return
        self.step = self.offset + record["steps"]
        self.log(
            {
                "train/stage": i,
                "stage/seconds": record["seconds"],
                "stage/samples_per_s": record["samples_per_s"],
                "stage/peak_memory_gb": record.get("peak_memory_gb"),
            }
        )

    def row(self, state, i: int) -> None:
        """Matrix row ``i`` of ``state`` (task -> metric -> value) and, when routed, its routing accuracy."""
        if not self.trackers:
            return
        cells, routed = state.rows[i], state.routed.get(i)
        values = {
            f"matrix/{metric}/{task}": value
            for task, cell in cells.items()
            if cell
            for metric, value in cell.items()
            if isinstance(value, (int, float)) and metric not in ("n", "eval_seconds")
        }
        if routed is not None:
            values["routing/accuracy"] = routed.get("accuracy")
        self.log(values)

    def results(self, results) -> None:
        """The seed's CL metrics with their 95% intervals, and routing accuracy with its interval."""
        if not self.trackers:
            return
        values = {}
        for metric, cl in results.cl_metrics.items():
            bounds = (results.intervals.get(metric) or {}).get("intervals", {})
            for name in CL_NAMES:
                values[f"cl/{metric}/{name}"] = cl.get(name)
                if bounds.get(name):
                    values[f"cl/{metric}/{name}/low"], values[f"cl/{metric}/{name}/high"] = bounds[name]
        if results.routing:
            values["routing/accuracy"] = results.routing.get("accuracy")
            if results.routing.get("accuracy_interval"):
                values["routing/accuracy/low"], values["routing/accuracy/high"] = results.routing["accuracy_interval"]
        self.log(values)
