#!/bin/bash
# The GPU benchmark in one command, for a lent GPU machine (python3 there holds torch with CUDA):
#   make gpu-wheels                                   # here, once: the wheels torch's image lacks -> .whl/
#   device run: bash eval/bench/gpu.sh   (carry .whl) # there: results page section in $OUT (or results/)
# Installs the carried wheels (train/gpu_env.sh: nothing by hand), then runs python -m eval.bench.gpu
# with the repository on the path.  Extra arguments go to eval.bench.gpu (e.g. --batches 64).
set -euo pipefail
cd "$(dirname "$0")/../.."
. train/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONUNBUFFERED=1 python3 -m eval.bench.gpu --out "${OUT:-results}/performance_gpu.md" "$@"
