"""Data-parallel training: `accelerate launch` with 2 CPU processes (gloo) computes the same run as
one process with the same global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from hybridcl.config.experiment import load_config
from hybridcl.continual import run_experiment

# tiny:llama has no dropout, so the two runs see the same computation, only split differently.
OVERRIDES = [
    "preset=smoke",
    "model.name=tiny:llama",
    "strategy=hybrid_shared_layer",
    "data.max_train=16",
    "data.max_val=4",
    "eval.max_new_tokens=8",
    "train.batch_size=8",
    "train.log_every=1",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    one = run_experiment(load_config(overrides=OVERRIDES), tmp_path / "one", progress=False)
    accelerate = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            str(accelerate),
            "launch",
            "--num_processes",
            "2",
            "--cpu",
            "--main_process_port",
            str(free_port()),
            "-m",
            "hybridcl",
            "run",
            *OVERRIDES,
            f"run.output_dir={tmp_path}",
            "run.name=two",
            "--no-progress",
        ],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
    )
    two = tmp_path / "two"

    def log(d):
        return [json.loads(line) for line in (d / "seed-0" / "train_log.jsonl").read_text().splitlines()]

    assert [(e["task"], e["step"]) for e in log(one)] == [(e["task"], e["step"]) for e in log(two)]
    for a, b in zip(log(one), log(two), strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5
    x = load_file(one / "seed-0" / "tasks" / "2-javascript" / "components.safetensors")
    y = load_file(two / "seed-0" / "tasks" / "2-javascript" / "components.safetensors")
    assert x.keys() == y.keys() and all(torch.allclose(x[k], y[k], atol=1e-6) for k in x)

    def results(d):
        return json.loads((d / "results.json").read_text())

    assert results(one)["matrix"] == results(two)["matrix"]
