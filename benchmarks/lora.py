"""`lora`: MiniLM fine-tuned on SST-2 with LoRA (rank 8 on the query and value projections)
against full fine-tuning, each in a fresh process through `lmkit.evaluate`.

The same checkpoint (`minilm-l6`), SST-2 (the real data when ``LMKIT_SST2`` names its folder,
else the small copy in tests/fixtures), steps of `BATCH` examples at most `MAX_LENGTH`
tokens (LoRA: `STEPS`; full fine-tuning: `FULL_STEPS`, for its step time, memory and a
reference accuracy), a linear head on the [CLS] state, scored on the dev split. Full fine-tuning uses the
pretrained recipe (AdamW at 5e-5 for every weight); LoRA trains the head and the adapters at
1e-3 with every MiniLM weight frozen. Reported per mode: dev accuracy, trained numbers and
their fraction of the model, the optimizer state (float32 numbers the optimizers keep), the
step time over the second half of training (the programs compiled by then), the whole call's
seconds, and the process's peak resident memory. The step-time ratio is measured apart, with
both trainees in one process and their steps interleaved, so a shared machine's changing load
hits both alike, beside XLA's count of each compiled step's operations. ``--quick``: 20 steps.
``LMKIT_PRECISION=mixed_bfloat16``: every run and step in bfloat16 (`precision`).

    python -m benchmarks.lora --steps 3     # only the interleaved step times, three samples
    python -m benchmarks.lora --steps 3 --precision mixed_bfloat16    # both steps in bfloat16
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ._common import Result, samples_main
from .startup import _python

BATCH = 32
MAX_LENGTH = 64
#: LoRA's steps (what its accuracy is measured after); full fine-tuning takes `FULL_STEPS`,
#: enough for its step time, memory and a reference accuracy on a machine shared with others
STEPS = 2500  # 1.1 epochs; 1,500 gave 0.850-0.856 (docs/lora.md), 600 gave 0.835
FULL_STEPS = 200
FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "eval" / "glue" / "SST-2"

_CHILD = """
import json, resource, sys, tempfile, time
import numpy as np
import lmkit
from lmkit.engine.events import StepEvent
mode, data, steps, batch, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
# a progress event every `log_every` steps: the step time is read from them
options = dict(max_steps=steps, batch_size=batch, max_length=length, seed=0,
               log_every=min(20, max(1, steps // 10)), precision=sys.argv[6])
if mode == "lora":
    options.update(adapter="lora", lora_rank=8, lora_targets=["q", "v"], learning_rate=1e-3)
else:
    options.update(learning_rate=5e-5)
ticks = []
report = lambda e: ticks.append((e.step, e.elapsed)) if isinstance(e, StepEvent) else None
with tempfile.TemporaryDirectory() as out:
    t0 = time.perf_counter()
    result = lmkit.evaluate("minilm-l6", task="glue/sst2", data=data, checkpoint_dir=out,
                            reporters=[report], **options)
    seconds = time.perf_counter() - t0
    summary = json.load(open(out + "/summary.json"))
half = [t for t in ticks if t[0] >= steps // 2]
pace = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(half, half[1:]) if b[0] > a[0]]
mini = lmkit.from_pretrained("minilm-l6")
print(json.dumps({
    "accuracy": result.metrics["accuracy"], "call_s": seconds,
    "ms_per_step": 1000 * float(np.median(pace)) if pace else None,
    "trainable": summary["trainable_parameters"], "optimizer_state": summary["optimizer_state"],
    "model_parameters": int(sum(np.prod(v.shape) for v in mini.model.trainable_variables)),
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


# Step times of both in one process, interleaved (`_common.interleave`): the figures of two
# processes run one after the other on a shared machine see different loads
_PACE = """
import json, sys
import lmkit
from benchmarks._common import interleave, timed_steps
from benchmarks.finetune import _lmkit_trainer
from lmkit.evaluation.loaders import load_split
mini = lmkit.from_pretrained("minilm-l6")
data = load_split("glue/sst2", sys.argv[1], "train")
precision = sys.argv[2]
modes = {"lora": dict(adapter="lora", lora_rank=8, lora_targets=["q", "v"], learning_rate=1e-3,
                      precision=precision),
         "full": dict(precision=precision)}
trainees = {m: _lmkit_trainer(mini, data, **keys) for m, keys in modes.items()}
at = {m: 0 for m in modes}
def step(m):
    trainee, batches, _ = trainees[m]
    trainee.train(at[m] % len(batches), 1)
    at[m] += 1
for m, (_, batches, _) in trainees.items():  # compile every padded width first
    for _ in batches:
        step(m)
paced = interleave({m: (lambda m=m: timed_steps(lambda: step(m), 4)) for m in modes}, rounds=3)
# XLA's own count of each compiled step's work on the first batch: what the times are
# compared with (a count, the same on any machine)
cost = {}
for m, (trainee, _, _) in trainees.items():
    c = trainee.step.lower(*trainee._stacked([0])).compile().cost_analysis()
    cost[m] = c[0] if isinstance(c, list) else c
print(json.dumps({m: {"ms": 1000 * v["median_s"], "gflops": cost[m]["flops"] / 1e9,
                      "gbytes": cost[m]["bytes accessed"] / 1e9} for m, v in paced.items()}))
"""


def _pace(precision: str = "float32") -> dict:
    """Median ms per step of LoRA and of full fine-tuning, interleaved in one process (on the
    small SST-2 copy: the same lengths, padded to the same widths), both at `precision`, with
    each step's floating-point operations and bytes accessed in XLA's cost analysis
    (``gflops``, ``gbytes``)."""
    return json.loads(_python(f"import sys; sys.argv = ['x', {str(FIXTURE)!r}, {precision!r}]\n{_PACE}"))


def _mode(mode: str, data: str, steps: int, precision: str) -> dict:
    code = (f"import sys; sys.argv = ['x', {mode!r}, {data!r}, '{steps}', '{BATCH}', "
            f"'{MAX_LENGTH}', {precision!r}]\n{_CHILD}")
    got = json.loads(_python(code))
    print(f"{mode}: {got}", flush=True)  # each mode's figures as soon as they exist
    return got


def run(quick: bool = False) -> Result:
    data = os.environ.get("LMKIT_SST2", str(FIXTURE))
    precision = os.environ.get("LMKIT_PRECISION", "float32")
    steps = {"lora": 20 if quick else STEPS, "full": 20 if quick else FULL_STEPS}
    got = {mode: _mode(mode, data, n, precision) for mode, n in steps.items()}
    paced = _pace(precision)
    print(f"interleaved ms per step: {paced}", flush=True)
    for mode, pace in paced.items():
        got[mode].update(ms_per_step_interleaved=pace["ms"], step_gflops=pace["gflops"],
                         step_gbytes=pace["gbytes"])
    lora, full = got["lora"], got["full"]
    # the head trains in both; its numbers are part of `trainable`
    fraction = lora["trainable"] / lora["model_parameters"]
    ratios = {
        "lora_accuracy": round(lora["accuracy"], 4),
        "lora_trainable_fraction": round(fraction, 5),
        "step_speedup_full_over_lora": round(full["ms_per_step_interleaved"]
                                             / lora["ms_per_step_interleaved"], 2),
        "optimizer_state_full_over_lora": round(full["optimizer_state"] / lora["optimizer_state"], 1),
        "step_flops_full_over_lora": round(full["step_gflops"] / lora["step_gflops"], 2),
    }
    # where the data came from, without this machine's paths
    figures = {"data": "tests/fixtures/eval/glue/SST-2" if data == str(FIXTURE)
               else f"$LMKIT_SST2 ({Path(data).name})",
               "precision": precision,
               "lora_steps": steps["lora"], "full_steps": steps["full"], "batch_size": BATCH, "max_length": MAX_LENGTH,
               **{f"{m}_{k}": v for m, r in got.items() for k, v in r.items()}}
    rows = [["figure", "LoRA r=8 q,v", "full fine-tuning"],
            ["steps", str(steps["lora"]), str(steps["full"])],
            ["dev accuracy", f"{lora['accuracy']:.4f}", f"{full['accuracy']:.4f}"],
            ["trained numbers", f"{lora['trainable']:,} ({fraction:.2%})", f"{full['trainable']:,}"],
            ["optimizer state", f"{4 * lora['optimizer_state'] / 2**20:.2f} MiB",
             f"{4 * full['optimizer_state'] / 2**20:.1f} MiB"],
            ["ms / step, interleaved", f"{lora['ms_per_step_interleaved']:.0f}",
             f"{full['ms_per_step_interleaved']:.0f}"],
            ["GFLOP / step (XLA's count)", f"{lora['step_gflops']:.1f}",
             f"{full['step_gflops']:.1f}"],
            ["ms / step, 2nd half of its run", f"{lora['ms_per_step']:.0f}",
             f"{full['ms_per_step']:.0f}"],
            ["lmkit.evaluate call", f"{lora['call_s']:.0f} s", f"{full['call_s']:.0f} s"],
            ["peak RSS", f"{lora['peak_rss_bytes'] / 1e9:.2f} GB",
             f"{full['peak_rss_bytes'] / 1e9:.2f} GB"]]
    targets = {"lora_accuracy": (">=", 0.85), "lora_trainable_fraction": ("<=", 0.01),
               "step_speedup_full_over_lora": (">=", 1.5),
               "optimizer_state_full_over_lora": (">=", 50.0)}
    return Result(figures, ratios, targets, rows)


def steps(samples: int, precision: str = "float32") -> list[dict]:
    """Only the step times, without the accuracy runs: `samples` interleaved measurements
    (`_pace`) at `precision`, each printed with the machine's load average beside it."""
    got = []
    for _ in range(samples):
        paced = _pace(precision)
        load = os.getloadavg()[0]
        got.append({**paced, "load_average": load, "precision": precision})
        lora, full = paced["lora"], paced["full"]
        print(f"LoRA {lora['ms']:.0f} ms ({lora['gflops']:.1f} GFLOP), full fine-tuning "
              f"{full['ms']:.0f} ms ({full['gflops']:.1f} GFLOP): full / LoRA "
              f"{full['ms'] / lora['ms']:.2f}x in time, {full['gflops'] / lora['gflops']:.2f}x "
              f"in operations (load average {load:.1f})", flush=True)
    return got


if __name__ == "__main__":
    samples_main("python -m benchmarks.lora",
                 "The LoRA and full fine-tuning steps' times only (no accuracy runs; "
                 "`python -m benchmarks lora` runs the whole benchmark).", steps, precision=True)
