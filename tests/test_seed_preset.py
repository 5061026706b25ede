"""``preset=seed`` end to end, offline, on stand-ins for Salesforce/codet5-small and CodeSearchNet.

The stand-ins (tests/_seed_fixtures.py) have the real files and formats: the published config, a
RobertaTokenizer's vocab.json / merges.txt / special-tokens files, safetensors weights, and the
release's ``<lang>/final/jsonl/<split>/*.jsonl.gz`` layout.
"""
import json

import torch
from _seed_fixtures import SCRIPT

from hybridcl.cli import main


def test_preset_seed_runs_end_to_end(codet5_small_dir, codesearchnet_dir, tmp_path, capsys):
    rc = main(["run", "preset=seed", f"model.name={codet5_small_dir}", f"data.path={codesearchnet_dir}",
               "data.max_train=8", "data.max_val=3", "data.max_source_len=48", "data.max_target_len=48",
               "train.max_steps=2", "train.batch_size=4", "eval.max_examples=3", "eval.batch_size=4",
               "run.device=cpu", f"run.output_dir={tmp_path}", "run.name=seed", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    run = tmp_path / "seed"
    results = json.loads((run / "results.json").read_text())
    assert results["rows"] == ["base", "python", "javascript"]
    for row in range(3):
        for task in ("python", "javascript"):
            lines = [json.loads(x) for x in (run / "seed-0" / "predictions" / f"row{row}-{task}.jsonl").read_text().splitlines()]
            print(row, task, [x["prediction"] for x in lines])
