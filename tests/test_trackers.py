"""run.report_to: the same step losses and final CL metrics in TensorBoard, W&B (offline), MLflow (a
real local tracking server on 127.0.0.1 with a SQLite store) and CSV, each read back with its own
library; the config's checks."""

import csv
import json
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import pytest

from hybridcl.config.experiment import load_config
from hybridcl.continual import run_experiment
from hybridcl.errors import ConfigError

SMALL = ["preset=smoke", "data.max_train=8", "data.max_val=4", "eval.max_new_tokens=4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 with a SQLite store; yields its URI."""
    pytest.importorskip("mlflow")
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        + ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--default-artifact-root", str(folder / "a")],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "server.log", "w"),
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (folder / "server.log").read_text()
                time.sleep(0.5)
        else:
            pytest.fail("the MLflow server did not start in 120 s: " + (folder / "server.log").read_text())
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, mlflow_server):
    pytest.importorskip("wandb")
    patch = pytest.MonkeyPatch()
    patch.setenv("WANDB_MODE", "offline")
    patch.setenv("WANDB_SILENT", "true")
    patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    try:
        config = load_config(overrides=[*SMALL, "run.report_to=[wandb,mlflow,csv,tensorboard]"])
        run = run_experiment(config, tmp_path_factory.mktemp("tracked") / "run", progress=False)
    finally:
        patch.undo()
    return run


def expected(run):
    """(global step -> training loss) from train_log.jsonl, and the final CL metrics from results.json."""
    steps, offset = {}, 0
    lines = [json.loads(line) for line in (run / "seed-0" / "train_log.jsonl").read_text().splitlines()]
    for task in dict.fromkeys(line["task"] for line in lines):
        mine = [line for line in lines if line["task"] == task]
        steps |= {offset + line["step"]: line["loss"] for line in mine}
        offset += max(line["step"] for line in mine)
    results = json.loads((run / "seed-0" / "results.json").read_text())
    cl = results["cl_metrics"]["loss"]
    bwt_low, bwt_high = results["intervals"]["loss"]["intervals"]["bwt"]
    final = {"cl/loss/bwt": cl["bwt"], "cl/loss/bwt/low": bwt_low, "cl/loss/bwt/high": bwt_high}
    final["cl/loss/average_final"] = cl["average_final"]
    return steps, final


def wandb_records(run):
    """Every record of the offline run's ``.wandb`` file (LevelDB-log framing: 32 KiB blocks of
    records with a 7-byte header; W&B's own protobuf inside)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = (run / "seed-0" / "wandb").glob("offline-run-*/run-*.wandb")
    raw, pos, records, part = path.read_bytes(), 7, [], b""
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        space = 32768 - pos % 32768
        if space < 7:
            pos += space
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += space
            continue
        part += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(part)
            records.append(record)
            part = b""
    return records


def test_wandb_offline_files_hold_the_step_losses_and_cl_metrics(tracked_run):
    steps, final = expected(tracked_run)
    history = [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        for r in wandb_records(tracked_run)
        if r.WhichOneof("record_type") == "history"
    ]
    losses = {h["_step"]: h["train/loss"] for h in history if "train/loss" in h}
    assert losses == pytest.approx(steps) and len(losses) == 2  # one step per task
    last = history[-1]
    assert {k: last[k] for k in final} == pytest.approx(final)
    config = next(r.config for r in wandb_records(tracked_run) if r.WhichOneof("record_type") == "config")
    values = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in config.update}
    assert values["train.lr"] == 1.0e-3 and values["strategy"] == "hybrid_shared_layer"


def test_mlflow_server_holds_the_step_losses_and_cl_metrics(tracked_run, mlflow_server):
    from mlflow.tracking import MlflowClient

    steps, final = expected(tracked_run)
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(tracked_run.name)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "seed-0" and run.data.params["train.lr"] == "0.001"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert history == pytest.approx(steps)
    assert {k: run.data.metrics[k] for k in final} == pytest.approx(final)
    cells = client.get_metric_history(run.info.run_id, "matrix/loss/python")
    assert [m.step for m in cells] == [0, 1, 2]  # rows 0, 1, 2 at the end of each stage's one step


def test_csv_and_tensorboard_hold_the_step_losses_and_cl_metrics(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps, final = expected(tracked_run)
    with (tracked_run / "seed-0" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {int(r["step"]): float(r["value"]) for r in rows if r["name"] == "train/loss"} == pytest.approx(steps)
    last = {r["name"]: float(r["value"]) for r in rows if r["step"] and int(r["step"]) == 2}
    assert {k: last[k] for k in final} == pytest.approx(final)
    assert {r["name"]: r["value"] for r in rows if not r["step"]}["config/train.lr"] == "0.001"
    events = EventAccumulator(str(tracked_run / "seed-0" / "tensorboard"))
    events.Reload()
    assert {e.step: e.value for e in events.Scalars("train/loss")} == pytest.approx(steps)
    assert events.Scalars("cl/loss/bwt")[-1].value == pytest.approx(final["cl/loss/bwt"])


def test_csv_alone_and_none(tmp_path):
    config = load_config(overrides=[*SMALL, "tasks=[python]", "run.report_to=[csv]"])
    run = run_experiment(config, tmp_path / "csv", progress=False)
    assert (run / "seed-0" / "metrics.csv").is_file() and not (run / "seed-0" / "tensorboard").exists()
    config = load_config(overrides=[*SMALL, "tasks=[python]", "run.report_to=[none]"])
    run = run_experiment(config, tmp_path / "none", progress=False)
    assert not any((run / "seed-0" / name).exists() for name in ("metrics.csv", "tensorboard", "wandb"))


def test_report_to_errors(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="unknown run.report_to 'wandbb' \\(did you mean wandb\\?\\)"):
        load_config(overrides=["run.report_to=[wandbb]"])
    with pytest.raises(ConfigError, match="`none` cannot be combined"):
        load_config(overrides=["run.report_to=[none,csv]"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    config = load_config(overrides=[*SMALL, "tasks=[python]", "run.report_to=[wandb]"])
    with pytest.raises(ConfigError, match=r"pip install 'hybridcl\[wandb\]'"):
        run_experiment(config, tmp_path / "w", progress=False)
