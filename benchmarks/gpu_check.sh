#!/usr/bin/env bash
# The prepared GPU check (a few minutes on one CUDA device): paper-preset and `authors` training-step and
# sampling throughput at 256 px, bf16 and channels_last on/off, then train_model under torchrun (1 process).
# Usage: benchmarks/gpu_check.sh [--batch 4] [--repeats 10]     (after `make setup`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device here')"
exec "$PY" -m strbench.cli bench gpu --device cuda --size 256 "$@"
