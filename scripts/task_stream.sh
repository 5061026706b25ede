#!/usr/bin/env bash
# The task stream's committed example (docs/results/2026-12-08-task-stream/): make demo's
# task-specific hybrid on Python -> JavaScript learns Go with `hybridcl learn`, beside the same run
# started on Python -> JavaScript -> Go, each step's wall time recorded. Run it on an idle machine.
#   scripts/task_stream.sh [OUT]   (default OUT: runs/task-stream)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/task-stream}
docs=docs/results/2026-12-08-task-stream
hybridcl=.venv/bin/hybridcl
mkdir -p "$out" "$docs"
timed() {  # timed NAME COMMAND...: run it, append {"step", "seconds"} to timings.jsonl
  local name=$1; shift
  local start; start=$(date +%s.%N)
  "$@"
  python3 -c "import json,sys; print(json.dumps({'step': sys.argv[1], 'seconds': round(float(sys.argv[3]) - float(sys.argv[2]), 1)}))" \
    "$name" "$start" "$(date +%s.%N)" | tee -a "$out/timings.jsonl"
}
common=(preset=default strategy=hybrid_task_specific "run.output_dir=$out" --no-progress)
timed "run python,javascript" $hybridcl run "${common[@]}" run.name=grown
timed "learn go" $hybridcl learn "$out/grown" go --no-progress
timed "run python,javascript,go" $hybridcl run "${common[@]}" run.name=whole "tasks=[python,javascript,go]"
for run in grown whole; do
  mkdir -p "$docs/$run"
  cp "$out/$run/config.yaml" "$out/$run/results.json" "$out/$run/report.md" "$docs/$run/"
done
python3 - "$out" > "$docs/equivalence.txt" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
seed = {r: out / r / "seed-0" for r in ("grown", "whole")}
def files(d):
    return {str(p.relative_to(d)): p.read_bytes() for g in ("tasks/*/*.safetensors", "stats/*.safetensors") for p in sorted(d.glob(g))}
a, b = files(seed["grown"]), files(seed["whole"])
print(f"checkpoints, router files and per-example statistics: {len(a)} files, {sum(a[k] == b.get(k) for k in a)} byte-identical")
def untimed(node):  # what measures time differs between any two runs
    if isinstance(node, dict):
        return {k: untimed(v) for k, v in node.items() if not k.endswith("seconds")}
    return [untimed(v) for v in node] if isinstance(node, list) else node
ra, rb = (json.loads((seed[r] / "results.json").read_text()) for r in ("grown", "whole"))
for key in ("matrix", "cl_metrics", "intervals", "routing", "data"):
    print(f"results.json {key}: {'equal' if untimed(ra[key]) == untimed(rb[key]) else 'DIFFERENT'}")
PY
cat "$docs/equivalence.txt"
# then a task of the user's own code: the functions of the installed PEFT package (Python, not in the
# bundled corpus, whose Python is CPython's standard library), a task named peft of language python
mkdir -p "$out/own"
peft_dir=$(.venv/bin/python -c "import os, peft; print(os.path.dirname(peft.__file__))")
$hybridcl data extract --language python --from "$peft_dir" --out "$out/own/peft.jsonl.gz" --repo peft --no-progress \
  --report "$out/own/extract.json"
printf 'name: peft\nlanguage: python\ndata: %s\n' "$out/own/peft.jsonl.gz" > "$out/own/peft.yaml"
timed "learn peft" $hybridcl learn "$out/grown" "$out/own/peft.yaml" --no-progress
mkdir -p "$docs/grown-peft"
cp "$out/grown/config.yaml" "$out/grown/results.json" "$out/grown/report.md" "$docs/grown-peft/"
cp "$out/timings.jsonl" "$out/own/peft.yaml" "$out/own/extract.json" "$docs/"
