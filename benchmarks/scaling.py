"""`scaling`: tokens/s of data parallel training on 1 vs 2 devices, 1 vs 2 processes, and of the
step in mixed_bfloat16 vs float32 on one device.

Each figure is one ``lmkit train`` in a fresh process (the device count is fixed when JAX
starts): one device (the reference), two forced host devices in one process
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``, ``devices=2``), and two processes of one
device each (``lmkit train --processes 2``, gloo between them). The three are interleaved, round
after round, so a busy machine slows them alike; a figure is the median over rounds of the last
smoothed tokens/s of the run (compilation excluded). On a CPU the "devices" share the same
cores XLA already spreads one device's kernels over, so no speed-up is expected here: the
figures measure the cost of the distribution machinery, not the gain a machine with more
accelerators gets. Likewise a CPU has no bfloat16 arithmetic units: the bf16 ratio says what the
casts cost here, not what a GPU or TPU gains.

    python -c "from benchmarks.scaling import run; print(run(steps=60, rounds=2, models=['gpt_char']).rows)"
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ._common import Result, precision, ratio

MODELS = {
    "gpt_char": ["embed_dim=128", "layers=4", "heads=4"],
    "gpt_wide": ["embed_dim=256", "layers=8", "heads=8"],
}
SETUPS = {  # name -> (extra lmkit train arguments, forced host devices)
    "1 device": (["--set", "devices=1"], 1),
    "2 devices": (["--set", "devices=2"], 2),
    "2 processes": (["--processes", "2", "--set", "devices=1"], 1),
    # the compiled step in bfloat16 (float32 weights), against "1 device" in float32
    "1 device bf16": (["--set", "devices=1", "--set", "precision=mixed_bfloat16"], 1),
}


def _tokens_per_s(model: list[str], setup: str, steps: int, folder: Path) -> float:
    extra, devices = SETUPS[setup]
    out = folder / f"{setup.replace(' ', '_')}-{len(list(folder.iterdir()))}"
    sets = [a for kv in [*model, "arch=gpt", "seq_len=64", "batch_size=12", f"max_steps={steps}",
                         "steps_per_dispatch=10", "eval_every=0", "validation_split=0",
                         "sample_tokens=0", f"precision={precision()}"] for a in ("--set", kv)]
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    done = subprocess.run([sys.executable, "-m", "lmkit.cli", "train", *sets, *extra,
                           "--out", str(out)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"lmkit train ({setup}) failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["tokens_per_second"] for r in rows if r["event"] == "step"][-1]


def run(quick: bool = False, steps: int | None = None, rounds: int | None = None,
        models: list[str] | None = None) -> Result:
    """`steps` per run and `rounds` (defaults: 200 and 3; 40 and 1 when `quick`) for `models`
    (default: all of `MODELS`)."""
    steps = steps or (40 if quick else 200)
    rounds = rounds or (1 if quick else 3)
    figures: dict[str, float] = {}
    ratios: dict[str, float] = {}
    rows = [["model", *SETUPS, "2 devices / 1", "2 processes / 1", "bf16 / float32"]]
    with tempfile.TemporaryDirectory() as tmp:
        for name in models or list(MODELS):
            model = MODELS[name]
            measured: dict[str, list[float]] = {s: [] for s in SETUPS}
            for _ in range(rounds):
                for setup in SETUPS:
                    measured[setup].append(_tokens_per_s(model, setup, steps, Path(tmp)))
            medians = {s: statistics.median(v) for s, v in measured.items()}
            for setup, value in medians.items():
                figures[f"{name} {setup} tokens/s"] = round(value, 1)
            ratios[f"{name} 2 devices / 1 device"] = ratio(medians["2 devices"], medians["1 device"])
            ratios[f"{name} 2 processes / 1 device"] = ratio(medians["2 processes"],
                                                             medians["1 device"])
            ratios[f"{name} bf16 / float32"] = ratio(medians["1 device bf16"], medians["1 device"])
            rows.append([name, *(f"{medians[s]:,.0f}" for s in SETUPS),
                         f"{ratios[f'{name} 2 devices / 1 device']:.2f}",
                         f"{ratios[f'{name} 2 processes / 1 device']:.2f}",
                         f"{ratios[f'{name} bf16 / float32']:.2f}"])
    notes = [f"{steps} steps per run, median of {rounds} interleaved rounds; tokens/s of a "
             f"global batch of 12 x 64 tokens. On a CPU two devices share the cores one device "
             f"already uses: a ratio below 1 is the cost of the collectives, not a defect of a "
             f"machine with two accelerators."]
    return Result(figures=figures, ratios=ratios, targets={}, rows=rows, notes=notes)
