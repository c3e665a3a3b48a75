"""GPT-2 small (124M) training throughput on one GPU in bfloat16: lmkit's compiled step against
nanoGPT's own ``train.py`` with ``torch.compile``, on the same synthetic tokens.

Both train a 12 x 768 decoder (12 heads, context 1,024, vocabulary 50,304, tied embeddings, no
dropout) with AdamW and gradient clipping at 1.0, batches of 8 windows of one stream of
uniformly random tokens (nanoGPT reads it from a ``train.bin`` written here and draws its own
windows from it). lmkit runs its
``gpt`` architecture through the step ``lmkit train`` uses (`benchmarks._contenders.LmkitSteps`,
mixed bfloat16, 5 steps per dispatch); nanoGPT runs unmodified from a copy of its checkout
(``--compile=True --dtype=bfloat16``, one micro-batch per iteration). The figures: the median
seconds per step after the warm-up (compilation), tokens/s, and MFU, computed the same way for
both from nanoGPT's FLOP count per token (6 N + 12 L d T, its ``estimate_mfu``) and the GPU's
dense bfloat16 peak (`PEAK_BF16`; nanoGPT's own printed MFU assumes an A100).

    python -m benchmarks.gpu_gpt2 --out DIR        # on a CUDA GPU (benchmarks/gpu.sh runs it)
    python -m benchmarks.gpu_gpt2 --dry-run        # a tiny model on the CPU: checks the plumbing

The nanoGPT checkout comes from ``$LMKIT_NANOGPT`` or ``../shared/ref/nanogpt`` next to the
checkout (`benchmarks.speedrun_char.copy_nanogpt`).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: model and run sizes: the real one and the CPU dry run
SIZES = {
    "gpt2": dict(layers=12, heads=12, embed_dim=768, seq_len=1024, vocab=50304, batch=8,
                 steps=40, warmup=10),
    "dry": dict(layers=2, heads=2, embed_dim=64, seq_len=64, vocab=512, batch=4, steps=5, warmup=5),
}
#: dense bfloat16 peak FLOP/s by GPU name (the vendors' data sheets, without sparsity)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
             "A10": 125e12}
DISPATCH = 5  # lmkit's steps per dispatch, as `lmkit train` fuses them


def flops_per_token(size: dict[str, int]) -> float:
    """nanoGPT's `estimate_mfu` count: 6 N + 12 L d T per trained token, N the parameters
    without the position embeddings (tied embeddings counted once).

    >>> round(flops_per_token(SIZES["gpt2"]) / 1e9, 3)
    0.855
    """
    d, layers = size["embed_dim"], size["layers"]
    params = size["vocab"] * d + layers * 12 * d * d
    return 6.0 * params + 12.0 * layers * d * size["seq_len"]


def peak_flops(gpu_name: str) -> float | None:
    """The dense bfloat16 peak of the GPU `gpu_name` names, None when it is not in `PEAK_BF16`.

    >>> peak_flops("NVIDIA H100 80GB HBM3"), peak_flops("a CPU")
    (989000000000000.0, None)
    """
    return next((peak for name, peak in PEAK_BF16.items() if name in gpu_name), None)


def synthetic_tokens(size: dict[str, int], batches: int, seed: int = 0) -> np.ndarray:
    """``batches`` batches of windows of ``seq_len + 1`` uniformly random token ids, flat."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, size["vocab"], batches * size["batch"] * (size["seq_len"] + 1),
                        dtype=np.int64)


def run_lmkit(size: dict[str, int], tokens: np.ndarray, dry: bool) -> dict[str, Any]:
    """Median seconds per step of lmkit's compiled step on `tokens`, after the warm-up."""
    from lmkit.config import TrainConfig

    from ._contenders import LmkitSteps

    cfg = TrainConfig(arch="gpt", layers=size["layers"], heads=size["heads"],
                      embed_dim=size["embed_dim"], seq_len=size["seq_len"],
                      batch_size=size["batch"], learning_rate=6e-4, clipnorm=1.0,
                      weight_decay=0.1, dropout=0.0, tie_embeddings=True,
                      precision="float32" if dry else "mixed_bfloat16")
    total = size["warmup"] + size["steps"]  # both multiples of DISPATCH: one compiled shape
    steps = LmkitSteps(cfg, size["vocab"], total)
    windows = tokens.reshape(-1, size["seq_len"] + 1).astype(np.int32)
    xs, ys = windows[:, :-1], windows[:, 1:]
    b, times = size["batch"], []
    for start in range(0, total, DISPATCH):
        rows = slice(start * b, (start + DISPATCH) * b)
        k = len(xs[rows]) // b
        times += steps.run(xs[rows].reshape(k, b, -1), ys[rows].reshape(k, b, -1))
    return {"step_s": statistics.median(times[size["warmup"]:]),
            "parameters": int(sum(np.prod(v.shape) for v in steps.model.trainable_variables))}


def run_nanogpt(size: dict[str, int], tokens: np.ndarray, work: Path, dry: bool) -> dict[str, Any]:
    """Median seconds per iteration of nanoGPT's own train.py on `tokens`, after the warm-up."""
    from .speedrun_char import copy_nanogpt

    checkout = copy_nanogpt(work)
    data = checkout / "data" / "synthetic"
    data.mkdir(parents=True)
    tokens.astype(np.uint16).tofile(data / "train.bin")
    tokens.astype(np.uint16).tofile(data / "val.bin")
    total = size["warmup"] + size["steps"]
    args = ["--dataset=synthetic", f"--n_layer={size['layers']}", f"--n_head={size['heads']}",
            f"--n_embd={size['embed_dim']}", f"--block_size={size['seq_len']}",
            f"--batch_size={size['batch']}", "--gradient_accumulation_steps=1",
            f"--max_iters={total}", f"--lr_decay_iters={total}", "--eval_iters=1",
            f"--eval_interval={total + 1000}", "--log_interval=1", "--dropout=0.0",
            "--always_save_checkpoint=False", f"--out_dir={work / 'nanogpt-out'}",
            *(["--device=cpu", "--compile=False", "--dtype=float32"] if dry
              else ["--device=cuda", "--compile=True", "--dtype=bfloat16"])]
    done = subprocess.run([sys.executable, "train.py", *args], cwd=checkout, text=True,
                          capture_output=True, check=False)
    if done.returncode:
        raise RuntimeError(f"nanoGPT's train.py failed:\n{(done.stdout + done.stderr)[-3000:]}")
    times = [float(m[1]) / 1000 for m in re.finditer(r"iter \d+: loss [\d.]+, time ([\d.]+)ms",
                                                     done.stdout)]
    return {"step_s": statistics.median(times[size["warmup"]:])}


def gpu_name() -> str:
    """The first GPU's name as ``nvidia-smi`` says it; ``"cpu"`` without one."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "cpu"
    return done.stdout.strip().splitlines()[0]


def compare(dry: bool) -> dict[str, Any]:
    """Both contenders on the same tokens: seconds per step, tokens/s and MFU of each."""
    size = SIZES["dry" if dry else "gpt2"]
    tokens = synthetic_tokens(size, size["warmup"] + size["steps"])
    name = gpu_name()
    peak = peak_flops(name)
    per_step = size["batch"] * size["seq_len"]
    with tempfile.TemporaryDirectory(prefix="gpu_gpt2") as tmp:
        results = {"lmkit": run_lmkit(size, tokens, dry),
                   "nanogpt": run_nanogpt(size, tokens, Path(tmp), dry)}
    for r in results.values():
        r["tokens_per_s"] = per_step / r["step_s"]
        r["mfu"] = None if peak is None else r["tokens_per_s"] * flops_per_token(size) / peak
    return {"device": name, "peak_bf16_flops": peak, "size": size, "dry_run": dry,
            "results": results,
            "lmkit_over_nanogpt": results["nanogpt"]["step_s"] / results["lmkit"]["step_s"]}


def table(record: dict[str, Any]) -> str:
    """The comparison as text lines: one contender a line."""
    lines = [f"GPT-2 {'dry run (tiny, CPU)' if record['dry_run'] else '124M bf16'} on "
             f"{record['device']}, batch {record['size']['batch']} x {record['size']['seq_len']}"]
    for name, r in record["results"].items():
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
        lines.append(f"  {name:8s} {1000 * r['step_s']:9.1f} ms/step  "
                     f"{r['tokens_per_s']:12,.0f} tokens/s  MFU {mfu}")
    lines.append(f"  lmkit / nanoGPT tokens/s: {record['lmkit_over_nanogpt']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="a tiny model on the CPU")
    parser.add_argument("--out", type=Path, help="folder for gpu_gpt2.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    record = compare(args.dry_run)
    record["seconds"] = time.perf_counter() - started
    print(table(record))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_gpt2.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
