#!/usr/bin/env bash
# Run lmkit's benchmarks on a CUDA GPU machine, in bfloat16 mixed precision.
#
#   bash benchmarks/gpu.sh            # from the repository root; results in benchmarks/results/gpu/
#
# Installs the CUDA 12 build of JAX and lmkit (editable, with the PyTorch bench extra), then
# runs each benchmark with KERAS_BACKEND=jax and LMKIT_PRECISION=mixed_bfloat16. PyTorch
# references run on the same GPU when torch sees CUDA; then data parallel training on one GPU
# and on every GPU of the machine (bf16). Not yet run on a GPU (see
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

# Data parallel over every GPU of the machine, in bfloat16: the same gpt (8 layers x 256) on one
# GPU and on all of them, with the global batch growing with the GPU count (16 rows per GPU);
# tokens/s of each, from the runs' own metrics (docs/scaling.md).
gpus=$(python -c "import jax; print(jax.local_device_count())")
counts=1
[ "$gpus" -gt 1 ] && counts="1 $gpus"   # one GPU: the single-device run only
for devices in $counts; do
    out=benchmarks/results/gpu/data_parallel_$devices
    timeout 900 lmkit train --set arch=gpt --set embed_dim=256 --set layers=8 --set heads=8 \
        --set seq_len=256 --set batch_size=$((16 * devices)) --set devices=$devices \
        --set precision=mixed_bfloat16 --set max_steps=300 --set validation_split=0 \
        --set sample_tokens=0 --out "$out" --overwrite > /dev/null \
        || { echo "data parallel on $devices GPU(s) failed" >&2; continue; }
    python - "$out" "$devices" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(f"{sys.argv[1]}/metrics.jsonl")]
steps = [r for r in rows if r["event"] == "step"]
start = next(r for r in rows if r["event"] == "start")
print(f"data parallel, {sys.argv[2]} GPU(s) [{start['devices']}]: "
      f"{steps[-1]['tokens_per_second']:,.0f} tokens/s, final loss {steps[-1]['loss']:.3f}")
PY
done | tee benchmarks/results/gpu/data_parallel.txt
