"""The environment record: versions, commit, processor, GPUs and threads, in results.json and the report."""

import json
import subprocess
from pathlib import Path

import torch
import transformers

from hybridcl.config.experiment import load_config
from hybridcl.continual import run_experiment
from hybridcl.records.environment import cpu_info, environment_record, git_commit
from hybridcl.report.markdown import write_report

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse
"""


def test_cpu_model_and_flags_from_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    info = cpu_info(tmp_path / "cpuinfo")
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["flags"] == {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_bf16": False, "amx_tile": True}
    assert info["torch_capability"] == torch.backends.cpu.get_cpu_capability()


def test_git_commit_of_the_checkout_and_none_outside_one(tmp_path):
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, check=True
    ).stdout.strip()
    assert git_commit()["commit"] == head
    assert git_commit(tmp_path) is None


def test_a_runs_results_and_report_carry_the_environment(tmp_path):
    overrides = ["preset=smoke", "tasks=[python]", "data.max_train=8", "data.max_val=2", "eval.max_new_tokens=4"]
    run = run_experiment(load_config(overrides=overrides), tmp_path / "run", progress=False)
    env = json.loads((run / "results.json").read_text())["environment"]
    assert env["versions"]["torch"] == torch.__version__ and env["versions"]["transformers"] == transformers.__version__
    assert env["threads"]["torch"] == torch.get_num_threads() == 1  # conftest sets one thread
    assert env["gpu"]["count"] == torch.cuda.device_count()
    assert set(env) == set(environment_record())
    report = write_report(run).read_text()
    section = report[report.index("## Environment") :]
    assert f"torch {torch.__version__}" in section and f"hybridcl commit: `{env['git']['commit'][:12]}`" in section
