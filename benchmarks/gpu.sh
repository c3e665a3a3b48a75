#!/usr/bin/env bash
# Run lmkit's benchmarks on a CUDA GPU machine, in bfloat16 mixed precision.
#
#   bash benchmarks/gpu.sh            # from the repository root; results in benchmarks/results/gpu/
#
# Installs the CUDA 12 build of JAX and lmkit (editable, with the PyTorch bench extra), then
# runs each benchmark with KERAS_BACKEND=jax and LMKIT_PRECISION=mixed_bfloat16. PyTorch
# references run on the same GPU when torch sees CUDA. Not yet run on a GPU (see
# docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --upgrade "jax[cuda12]" -e ".[bench]"
python - <<'PY'
import jax
devices = jax.devices()
print("JAX devices:", devices)
assert devices[0].platform == "gpu", "JAX does not see a GPU: check the CUDA driver and jax[cuda12]"
PY

export KERAS_BACKEND=jax
export LMKIT_PRECISION=mixed_bfloat16          # read by the benchmarks' configurations
export XLA_PYTHON_CLIENT_PREALLOCATE=false     # let the PyTorch reference share the GPU
mkdir -p benchmarks/results/gpu
for name in gpt_char lstm_classic generate startup; do
    timeout 900 lmkit bench "$name" --out benchmarks/results/gpu || echo "benchmark $name failed" >&2
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > benchmarks/results/gpu/gpu.csv
