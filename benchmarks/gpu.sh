#!/usr/bin/env bash
# Run lmkit's benchmarks on a CUDA GPU machine, in bfloat16 mixed precision, within 10 minutes.
#
#   bash benchmarks/gpu.sh            # from the repository root; results in benchmarks/results/gpu/
#   bash benchmarks/gpu.sh --dry-run  # no GPU needed: each step in a tiny CPU form (checks the script)
#
# Installs the CUDA 12 build of JAX and lmkit (editable, with the PyTorch bench extra) unless
# JAX already sees a GPU and lmkit imports (an offline machine with its own JAX build: put the
# checkout on PYTHONPATH), then, most important first, while the time budget lasts:
#   1. GPT-2 small (124M) bf16 training: lmkit against nanoGPT's own train.py with torch.compile,
#      same GPU, same synthetic tokens; tokens/s and MFU side by side (benchmarks/gpu_gpt2.py);
#   2. fine-tuning and embedding (MiniLM, `lmkit bench finetune`) and decoding (`lmkit bench
#      generate`), PyTorch references on the same GPU;
#   3. data parallel training on one GPU and on every GPU of the machine (bf16);
#   4. `gpt_char`, `lstm_classic`, `startup`.
# Without a GPU it stops at once with a message (exit 2), unless --dry-run.
#
#   LMKIT_GPU_OUT=DIR        where results go (default benchmarks/results/gpu)
#   LMKIT_GPU_BUDGET=SECS    the whole script's limit (default 600); a step starts only with a
#                            minute left and is cut at the budget
set -euo pipefail
cd "$(dirname "$0")/.."

dry=0
[ "${1:-}" = "--dry-run" ] && dry=1
budget=${LMKIT_GPU_BUDGET:-600}
out=${LMKIT_GPU_OUT:-benchmarks/results/gpu}
[ "$dry" = 1 ] && out=${LMKIT_GPU_OUT:-$(mktemp -d)}
mkdir -p "$out"

if [ "$dry" = 0 ]; then
    if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > /dev/null 2>&1; then
        echo "benchmarks/gpu.sh: no NVIDIA GPU on this machine (nvidia-smi finds none); run it" \
             "on a GPU machine, or with --dry-run to check the script on the CPU" >&2
        exit 2
    fi
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
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv"
    export LMKIT_PRECISION=mixed_bfloat16      # read by the benchmarks' configurations
    export XLA_PYTHON_CLIENT_PREALLOCATE=false # let the PyTorch reference share the GPU
fi
export KERAS_BACKEND=jax
lmkit=(lmkit)
command -v lmkit > /dev/null || lmkit=(python -m lmkit.cli)   # no script on the PATH

# the seconds the next step may take: what is left of the budget; none when under a minute
left() {
    local rest=$((budget - SECONDS))
    if [ "$rest" -lt 60 ]; then
        echo "benchmarks/gpu.sh: out of time (budget ${budget}s); skipping $1" >&2
        return 1
    fi
    echo "$rest"
}

# 1. GPT-2 small against nanoGPT + torch.compile
if limit=$(left "gpt2"); then
    timeout "$limit" python -m benchmarks.gpu_gpt2 --out "$out" $([ "$dry" = 1 ] && echo --dry-run) \
        | tee "$out/gpt2.txt" || echo "the GPT-2 comparison failed" >&2
fi

# 2. fine-tuning, embedding and decoding
for name in finetune generate; do
    limit=$(left "$name") || continue
    if [ "$dry" = 1 ]; then  # `lmkit bench NAME --quick` is tests/test_bench.py's to check
        echo "dry run: would run lmkit bench $name --out $out"
        continue
    fi
    timeout "$limit" "${lmkit[@]}" bench "$name" --out "$out" || echo "benchmark $name failed" >&2
done

# 3. Data parallel over every GPU of the machine, in bfloat16: the same gpt (8 layers x 256) on
# one GPU and on all of them, with the global batch growing with the GPU count (16 rows per GPU);
# tokens/s of each, from the runs' own metrics (docs/scaling.md).
gpus=$(python -c "import jax; print(jax.local_device_count())")
counts=1
[ "$gpus" -gt 1 ] && [ "$dry" = 0 ] && counts="1 $gpus"   # one GPU: the single-device run only
size=(--set embed_dim=256 --set layers=8 --set heads=8 --set seq_len=256 --set max_steps=300)
[ "$dry" = 1 ] && size=(--set embed_dim=32 --set layers=1 --set heads=2 --set seq_len=32 --set max_steps=40)
for devices in $counts; do
    limit=$(left "data parallel on $devices") || break
    run_dir=$(mktemp -d)/data_parallel_$devices
    timeout "$limit" "${lmkit[@]}" train --set arch=gpt "${size[@]}" \
        --set batch_size=$((16 * devices)) --set devices=$devices \
        --set precision=$([ "$dry" = 1 ] && echo float32 || echo mixed_bfloat16) \
        --set validation_split=0 --set sample_tokens=0 --out "$run_dir" --overwrite > /dev/null \
        || { echo "data parallel on $devices GPU(s) failed" >&2; continue; }
    python - "$run_dir" "$devices" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(f"{sys.argv[1]}/metrics.jsonl")]
steps = [r for r in rows if r["event"] == "step"]
start = next(r for r in rows if r["event"] == "start")
paced = [r["tokens_per_second"] for r in steps if r.get("tokens_per_second")]  # none before 2 dispatches
speed = f"{paced[-1]:,.0f} tokens/s" if paced else "tokens/s unknown (one dispatch)"
print(f"data parallel, {sys.argv[2]} GPU(s) [{start['devices']}]: {speed}, "
      f"final loss {steps[-1]['loss']:.3f}")
PY
done | tee "$out/data_parallel.txt"

# 4. the CPU benchmarks on the GPU
[ "$dry" = 1 ] && { echo "dry run done in ${SECONDS}s: results in $out"; exit 0; }
for name in gpt_char lstm_classic startup; do
    limit=$(left "$name") || continue
    timeout "$limit" "${lmkit[@]}" bench "$name" --out "$out" || echo "benchmark $name failed" >&2
done
echo "done in ${SECONDS}s: results in $out"
