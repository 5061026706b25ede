#!/usr/bin/env bash
# One call on a machine with a GPU: hybridcl and the peer (HF Seq2SeqTrainer + PEFT, bf16) on the
# seed's full workload (8,000 examples, 2 epochs, batch 8), in one process, ratio last; the lines
# go to benchmarks/results/<date>-<gpu>.jsonl (commit that file). Goal (issue 15): <= 30 s per
# task, >= 15x the peer (538 s on an H100).
#   bash benchmarks/gpu.sh              # the full workload (the peer alone takes ~9 min on an H100)
#   bash benchmarks/gpu.sh --quick      # 800 examples, 1 epoch: a check that fits a short lease
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [[ "${1:-}" == "--quick" ]]; then
  exec "$PY" benchmarks/train_speed.py --device cuda --examples 800 --epochs 1 --rounds 1
fi
exec "$PY" benchmarks/train_speed.py --device cuda --rounds 1
