#!/usr/bin/env bash
# Issue 23's study in one call on one GPU: preset=reference (codet5-small, the Hugging Face code_search_net
# dataset: 8,000 training functions per task, 2,000 scored, 200 generated) where the hub can be reached,
# otherwise the default model (the embedded SmolLM2-135M-Instruct) on the whole bundled corpus. It
# measures the cost units first (tiny runs), prints the predicted wall time of the plan, then runs the
# plan of scripts/study_at_scale.py (resumable: call it again after an interruption).
#
#   scripts/study_gpu.sh [study_at_scale.py arguments, e.g. --only main]
#
# Without a GPU it says so and runs nothing (exit 1): on a CPU run scripts/study_at_scale.py --scale cpu.
set -euo pipefail
PY=${PYTHON:-python}
cd "$(dirname "$0")/.."

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "study_gpu.sh: no GPU here (torch.cuda.is_available() is false): nothing was run." >&2
  echo "  On a CPU: $PY scripts/study_at_scale.py --scale cpu (see scripts/cost_model.py for its wall time)" >&2
  exit 1
fi

if "$PY" - <<'PYEOF'
import sys

try:
    import datasets  # noqa: F401  (data.source=hf reads code_search_net with it)
    from huggingface_hub import model_info

    model_info("Salesforce/codet5-small", timeout=10)
except Exception as exc:  # offline, no datasets package, hub down: the bundled fallback
    print(f"study_gpu.sh: the hub cannot be reached ({type(exc).__name__}: {exc})", file=sys.stderr)
    sys.exit(1)
PYEOF
then
  SCALE=gpu-reference
  echo "study_gpu.sh: the hub is reachable: preset=reference (codet5-small, code_search_net, 8K/2K per task)"
else
  SCALE=gpu-bundled
  echo "study_gpu.sh: running the default model on the whole bundled corpus instead"
fi

OUT=runs/study-at-scale-$SCALE
"$PY" scripts/cost_model.py measure "$OUT-units" --scale "$SCALE"
echo "study_gpu.sh: predicted wall time of the plan ($SCALE):"
"$PY" scripts/cost_model.py predict "$OUT-units/units.json" --scale "$SCALE"
exec "$PY" scripts/study_at_scale.py --scale "$SCALE" --out "$OUT" --docs "docs/results/$(date +%F)-study-$SCALE" "$@"
