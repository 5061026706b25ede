"""The flaw-by-flaw table of docs/reproduction.md: preset=reference-original, then one part at a time switched
to hybridcl's choice, on the same data and seed; prints a markdown table with 95% bootstrap intervals.

    python scripts/seed_flaws.py OUT_DIR [key=value ...]      # extra overrides apply to every run

Runs that finished already (OUT_DIR/<name>/results.json) are read, not run again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# The offline stand-ins: the embedded causal model (LoRA on the analogues of q,k,v,o,wo) and the
# bundled corpus, at a size a CPU finishes in minutes.
COMMON = [
    "preset=reference-original",
    "model.name=embedded:smollm2-135m-instruct",
    "data.source=bundled",
    "data.path=null",
    "components.lora.target_modules=[q_proj,k_proj,v_proj,o_proj,down_proj]",
    "data.max_train=16",
    "data.max_val=8",
    "data.max_source_len=128",
    "data.max_target_len=256",
    "train.epochs=1",
    "eval.max_examples=8",
    "eval.max_new_tokens=64",
    "eval.batch_size=8",
    "eval.bootstrap_resamples=200",
    "run.device=cpu",
]
SWITCHES = {  # run name -> (what is fixed, the overrides that fix it)
    "seed-original": ("nothing: the seed's protocol", []),
    "fix-objective": (
        "train on what is evaluated (prefix -> function), not the copy objective",
        ["data.train_objective=pairs"],
    ),
    "fix-prompt": ("a prompt that names the language instead of the raw code prefix", ["data.prompt=named"]),
    "fix-padding": ("mask padding in the loss", ["train.mask_padding_in_loss=true"]),
    "fix-lora-block": ("LoRA on the base only, the block trained whole", ["components.lora.on_full_layer=false"]),
    "fix-init": ("zero-initialised block output projections instead of x0.01", ["components.full_layer.init=zero"]),
    "fix-decoding": (
        "greedy decoding instead of sampled beams with no_repeat_ngram_size=2",
        ["eval.do_sample=false", "eval.num_beams=1", "eval.no_repeat_ngram_size=0"],
    ),
    "fix-schedule": (
        "linear schedule, shuffled length-grouped batches, no weight decay",
        ["train.lr_schedule=linear", "train.shuffle=true", "train.group_by_length=true", "train.weight_decay=0.0"],
    ),
    "fix-selection": (
        "a seeded sample of the train and valid splits instead of the first rows",
        ["data.selection=sample"],
    ),
}
METRICS = (
    ("bleu_reference", "bleu_reference"),
    ("syntax_pass_reference", "reference pass %"),
    ("syntax_pass", "syntax pass %"),
)


def _cell(intervals: dict, metric: str, row: int, task: int) -> str:
    block = intervals.get(metric)
    if block is None or block["cells"][row][task] is None:
        return "n/a"
    low_high = block["cell_intervals"][row][task]
    text = f"{block['cells'][row][task]:.2f}"
    return text + (f" [{low_high[0]:.2f}, {low_high[1]:.2f}]" if low_high else "")


def _forgetting(intervals: dict, metric: str) -> str:
    block = intervals.get(metric)
    if block is None or block["cl"].get("forgetting_relative") is None:
        return "n/a"
    interval = block["intervals"].get("forgetting_relative")
    return f"{block['cl']['forgetting_relative']:.2f}" + (
        f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""
    )


def table(out: Path) -> str:
    header = ["run", "fixed"]
    for _, label in METRICS:
        header += [f"Python {label}", f"JavaScript {label}"]
    header += ["forgetting bleu_reference (%)", "Python loss"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, (what, _) in SWITCHES.items():
        file = out / name / "results.json"
        if not file.is_file():
            continue
        results = json.loads(file.read_text())
        intervals = results["per_seed"][0]["intervals"]
        cells = [name, what]
        for metric, _ in METRICS:  # each task after its own training: row 1 for python, row 2 for javascript
            cells += [_cell(intervals, metric, 1, 0), _cell(intervals, metric, 2, 1)]
        cells += [_forgetting(intervals, "bleu_reference"), _cell(intervals, "loss", 1, 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from hybridcl.cli import main as hybridcl

    out, extra = Path(argv[0]), argv[1:]
    for name, (_, overrides) in SWITCHES.items():
        if (out / name / "results.json").is_file():
            continue
        rc = hybridcl(
            ["run", *COMMON, *overrides, *extra, f"run.output_dir={out}", f"run.name={name}", "--no-progress"]
        )
        if rc != 0:
            return rc
    print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
