#!/usr/bin/env bash
# Run lmkit's benchmarks on a CUDA GPU machine, in bfloat16 mixed precision.
#
#   bash benchmarks/gpu.sh            # from the repository root; results in benchmarks/results/gpu/
#
# Installs the CUDA 12 build of JAX and lmkit (editable, with the PyTorch bench extra) unless
# JAX already sees a GPU and lmkit imports (an offline machine with its own JAX build: put the
# checkout on PYTHONPATH), then runs each benchmark with KERAS_BACKEND=jax and
# LMKIT_PRECISION=mixed_bfloat16. PyTorch references run on the same GPU when torch sees CUDA;
# then data parallel training on one GPU and on every GPU of the machine (bf16).
#
#   LMKIT_GPU_OUT=DIR        where results go (default benchmarks/results/gpu)
#   LMKIT_GPU_TIMEOUT=SECS   the limit of each benchmark and training run (default 900)
set -euo pipefail
cd "$(dirname "$0")/.."

if python - 2>/dev/null <<'PY'
import jax, lmkit
assert jax.devices()[0].platform == "gpu"
PY
then
    echo "using the installed JAX $(python -c 'import jax; print(jax.__version__)') and lmkit"
else
    python -m pip install --quiet --upgrade "jax[cuda12]" -e ".[bench]"
fi
python - <<'PY'
import jax
devices = jax.devices()
print("JAX devices:", devices)
assert devices[0].platform == "gpu", "JAX does not see a GPU: check the CUDA driver and jax[cuda12]"
PY
lmkit=(lmkit)
command -v lmkit > /dev/null || lmkit=(python -m lmkit.cli)   # no script on the PATH
out=${LMKIT_GPU_OUT:-benchmarks/results/gpu}
limit=${LMKIT_GPU_TIMEOUT:-900}

export KERAS_BACKEND=jax
export LMKIT_PRECISION=mixed_bfloat16          # read by the benchmarks' configurations
export XLA_PYTHON_CLIENT_PREALLOCATE=false     # let the PyTorch reference share the GPU
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv"

# Data parallel over every GPU of the machine, in bfloat16: the same gpt (8 layers x 256) on one
# GPU and on all of them, with the global batch growing with the GPU count (16 rows per GPU);
# tokens/s of each, from the runs' own metrics (docs/scaling.md).
gpus=$(python -c "import jax; print(jax.local_device_count())")
counts=1
[ "$gpus" -gt 1 ] && counts="1 $gpus"   # one GPU: the single-device run only
for devices in $counts; do
    run_dir=$(mktemp -d)/data_parallel_$devices
    timeout "$limit" "${lmkit[@]}" train --set arch=gpt --set embed_dim=256 --set layers=8 --set heads=8 \
        --set seq_len=256 --set batch_size=$((16 * devices)) --set devices=$devices \
        --set precision=mixed_bfloat16 --set max_steps=300 --set validation_split=0 \
        --set sample_tokens=0 --out "$run_dir" --overwrite > /dev/null \
        || { echo "data parallel on $devices GPU(s) failed" >&2; continue; }
    python - "$run_dir" "$devices" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(f"{sys.argv[1]}/metrics.jsonl")]
steps = [r for r in rows if r["event"] == "step"]
start = next(r for r in rows if r["event"] == "start")
print(f"data parallel, {sys.argv[2]} GPU(s) [{start['devices']}]: "
      f"{steps[-1]['tokens_per_second']:,.0f} tokens/s, final loss {steps[-1]['loss']:.3f}")
PY
done | tee "$out/data_parallel.txt"

for name in gpt_char lstm_classic generate startup; do
    timeout "$limit" "${lmkit[@]}" bench "$name" --out "$out" || echo "benchmark $name failed" >&2
done

