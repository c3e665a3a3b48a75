"""`states_at`: MiniLM's fine-tuning step with the last layer computed only at the [CLS]
positions (`STATES_AT`, the default for a `cls` head on `bert`) against the whole last layer.

One process, the same examples, shapes and recipe for both (`benchmarks.finetune._lmkit_trainer`:
SST-2 and MRPC's training sentences, 32 a step, at most 64 tokens, the shapes of a 63-step run,
its first 63 batches); the two trainees' steps are
interleaved (`_common.interleave`), so a shared machine's changing load hits both alike. The
GLUE folder is ``$LMKIT_GLUE``, else the copies in tests/fixtures. ``--quick``: SST-2 alone,
fewer rounds.

    lmkit bench states_at            # or: python -m benchmarks states_at
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ._common import Result
from .startup import _python

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "eval" / "glue"
TASKS = {"glue/sst2": "SST-2", "glue/mrpc": "MRPC"}

_CHILD = """
import json, sys
import lmkit
from benchmarks._common import interleave, timed_steps
from benchmarks.finetune import _lmkit_trainer
from lmkit.evaluation.loaders import load_split
task, folder, rounds, STEPS = sys.argv[1], sys.argv[2], int(sys.argv[3]), 63
mini = lmkit.from_pretrained("minilm-l6")
data = load_split(task, folder, "train")
trainees = {}
for mode in ("first_only", "whole"):
    trainee, batches, _ = _lmkit_trainer(mini, data, max_steps=STEPS)  # the shapes of a short run
    trainee.model.first_only = mode == "first_only"  # before the step is first traced
    trainees[mode] = [trainee, min(len(batches), STEPS), 0]
def step(mode):
    trainee, n, at = trainees[mode]
    trainee.train(at % n, 1)
    trainees[mode][2] += 1
for mode, (trainee, n, _) in trainees.items():  # each shape compiled before the timing
    seen = set()
    for s in range(n):
        shape = trainee._width(trainee._rows(s))
        if shape not in seen:
            seen.add(shape)
            trainee.train(s, 1)
paced = interleave({m: (lambda m=m: timed_steps(lambda: step(m), 6)) for m in trainees}, rounds)
first = trainees["whole"][0]._batch(0)[0][0]
print(json.dumps({"shape": list(first.shape),
                  **{m: 1000 * v["median_s"] for m, v in paced.items()}}))
"""


def run(quick: bool = False) -> Result:
    source = os.environ.get("LMKIT_GLUE")
    root = Path(source) if source else FIXTURES
    tasks = list(TASKS)[:1] if quick else list(TASKS)
    got = {}
    for task in tasks:
        code = (f"import sys; sys.argv = ['x', {task!r}, {str(root / TASKS[task])!r}, "
                f"'{2 if quick else 4}']\n{_CHILD}")
        got[task] = json.loads(_python(code, {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}))
        print(f"{task}: {got[task]}", flush=True)
    name = {t: t.split("/")[1] for t in tasks}
    ratios = {f"{name[t]}_whole_over_first_only": round(got[t]["whole"] / got[t]["first_only"], 3)
              for t in tasks}
    figures = {"data": "LMKIT_GLUE" if source else "tests/fixtures/eval/glue",
               **{f"{name[t]}_{k}": v for t in tasks for k, v in got[t].items()}}
    rows = [["task", "rows x width", "whole last layer ms", "[CLS] queries only ms", "ratio"],
            *[[t, " x ".join(map(str, got[t]["shape"])), f"{got[t]['whole']:.0f}",
               f"{got[t]['first_only']:.0f}", f"{ratios[f'{name[t]}_whole_over_first_only']:.2f}"]
              for t in tasks]]
    return Result(figures, ratios, {}, rows)
