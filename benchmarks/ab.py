"""A/B: a whole job of this checkout against another commit's, interleaved.

    git worktree add /tmp/lmkit-ref 794a764          # the reference commit, beside this checkout
    python -m benchmarks.ab --ref /tmp/lmkit-ref [--config gpt_char lstm_classic minilm_sst2] [--steps 500] [--rounds 3]

Each round runs the same job once with each checkout, in fresh processes, alternating which
goes first, through the public API (so the training loop, events and checkpoints are timed, not
only the compiled step): `lmkit.train` of a preset, or `lmkit.evaluate` fine-tuning MiniLM
(`minilm-l6`, from the `lmkit-minilm` extension) on the SST-2 sentences of tests/fixtures.
Per job it records the median time per step over the dispatches after the first (which
compiles), from the `StepEvent`s, the job's wall time and its final figure (the validation loss
of a training, the dev accuracy of a fine-tuning). Prints the medians over rounds and the ratio new ÷ reference (below 1: this
checkout is faster); writes them to ``benchmarks/results/ab.json`` (``--out FILE`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
CONFIGS = {
    "gpt_char": {"config": "nanogpt_char"},
    "lstm_classic": {"config": "classic_lstm"},
    "minilm_sst2": {"config": "finetune:minilm-l6"},
}
SST2 = HERE / "tests" / "fixtures" / "eval" / "glue" / "SST-2"

# Runs in the child, against whichever checkout PYTHONPATH names; the public API only.
CHILD = r"""
import json, sys, time
t0 = time.monotonic()
import lmkit
steps = []
def collect(event):
    if type(event).__name__ == "StepEvent":
        steps.append((event.step, event.elapsed))
preset, max_steps, out, sst2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if preset.startswith("finetune:"):  # the dev split's loss is not reported; its accuracy is
    result = lmkit.evaluate(preset.split(":", 1)[1], task="glue/sst2", data=sst2, max_steps=max_steps,
                            log_every=10, reporters=[collect])
    final = result.metrics["accuracy"]
else:
    run = lmkit.train(preset, max_steps=max_steps, out=out, overwrite=True, sample_tokens=0,
                      eval_every=max_steps, checkpoint_every=max_steps, reporters=[collect])
    final = run.summary.get("val_loss")
per_step = [(e1 - e0) / (s1 - s0) for (s0, e0), (s1, e1) in zip(steps[1:], steps[2:])]
print(json.dumps({"lmkit": lmkit.__file__, "ms_per_step": 1000 * sorted(per_step)[len(per_step) // 2],
                  "job_s": time.monotonic() - t0, "final": final}))
"""


def one_job(checkout: Path, preset: str, steps: int, out: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, "-c", CHILD, preset, str(steps), str(out), str(SST2)],
                          cwd=checkout, env=env, capture_output=True, text=True, check=True)
    record = json.loads(done.stdout.strip().splitlines()[-1])
    if not record["lmkit"].startswith(str(checkout)):
        raise RuntimeError(f"the job imported {record['lmkit']}, not the checkout {checkout}")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--ref", required=True, type=Path, help="checkout of the reference commit")
    parser.add_argument("--config", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "benchmarks" / "results" / "ab.json")
    args = parser.parse_args(argv)
    sides = {"new": HERE, "ref": args.ref.resolve()}
    report: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="lmkit-ab-") as tmp:
        for name in args.config:
            seen: dict[str, list[dict[str, float]]] = {"new": [], "ref": []}
            for r in range(args.rounds):
                for side in (("ref", "new") if r % 2 == 0 else ("new", "ref")):
                    record = one_job(sides[side], CONFIGS[name]["config"], args.steps,
                                     Path(tmp) / f"{name}-{side}")
                    seen[side].append(record)
                    print(f"{name} round {r + 1} {side}: {record['ms_per_step']:.2f} ms/step, "
                          f"job {record['job_s']:.1f} s, final {record['final']:.4f}",
                          flush=True)
            med = {side: {k: statistics.median(x[k] for x in rows) for k in ("ms_per_step", "job_s")}
                   for side, rows in seen.items()}
            report[name] = {
                "new_ms_per_step": med["new"]["ms_per_step"], "ref_ms_per_step": med["ref"]["ms_per_step"],
                "step_ratio_new_over_ref": med["new"]["ms_per_step"] / med["ref"]["ms_per_step"],
                "new_job_s": med["new"]["job_s"], "ref_job_s": med["ref"]["job_s"],
                "job_ratio_new_over_ref": med["new"]["job_s"] / med["ref"]["job_s"],
                "final_new": seen["new"][-1]["final"], "final_ref": seen["ref"][-1]["final"],
            }
            print(json.dumps({name: report[name]}, indent=2), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "python -m benchmarks.ab " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": args.steps,
        "rounds": args.rounds, "results": report}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
