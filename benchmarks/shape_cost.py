"""`shape_cost`: what a fine-tuning batch's shape costs in time, the figures behind the packing
rule (`ATTENTION_KEYS` and `COMPILE_POSITIONS` in `lmkit/evaluation/finetune.py`).

MiniLM (`minilm-l6`) fine-tuned for classification, every step on the same number of token
positions (`BATCH` examples of `LENGTH` tokens) packed into rows from `LENGTH` to `WIDEST`
wide: the matmuls' work is the same in every shape, and only the attention's (each query
attends to every key of its row) grows with the width. The steps of every shape are
interleaved in one process; a least-squares line through the median step times gives the
milliseconds a position costs and the microseconds an attended (query, key) pair costs, and
their quotient, the row width at which attention doubles a position's cost (`ATTENTION_KEYS`).
Each shape's first call (its tracing and compilation with an empty compilation cache, one step
included) over a position's cost gives `COMPILE_POSITIONS`. ``--quick``: three widths, fewer steps.

    lmkit bench shape_cost            # or: python -m benchmarks shape_cost
"""

from __future__ import annotations

import json
import tempfile

from ._common import Result
from .startup import _python

BATCH = 64
LENGTH = 16
WIDEST = 512

_CHILD = """
import json, statistics, sys, time
import numpy as np
import lmkit
from lmkit.config import EvalConfig
from lmkit.evaluation.encoding import Encoded
from lmkit.evaluation.finetune import FinetuneTrainee
from lmkit.evaluation.heads import SequenceClassifier
from lmkit.resolve import resolve
widths, batch, length, steps = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
mini = lmkit.from_pretrained("minilm-l6")
rng = np.random.default_rng(0)
ids = [np.concatenate([[101], rng.integers(2000, 20000, length - 2), [102]]).astype(np.int32)
       for _ in range(batch * (steps + 2))]
data = Encoded(ids, rng.integers(0, 2, len(ids)))
model = SequenceClassifier(mini.model, 2, "cls", 0.1)
model((np.zeros((1, 2), np.int32), np.ones((1,), np.int32)))
cfg = EvalConfig(learning_rate=5e-5, pooling="cls", batch_size=batch, max_length=512,
                 max_steps=1000, log_every=1)
parts = resolve(cfg)
trainees, first = {}, {}
for width in widths:
    trainee = FinetuneTrainee(model, data, parts.config, cfg.max_steps, parts)
    # every batch packed into the same rows x width (the rule would choose otherwise)
    trainee.packed_width, trainee.widths = width, [batch * length // width]
    t0 = time.perf_counter()
    trainee.train(0, 1)
    first[width] = time.perf_counter() - t0
    trainees[width] = trainee
times = {w: [] for w in widths}
for r in range(3):  # interleaved rounds, the order reversed every other round
    for width in (widths if r % 2 == 0 else widths[::-1]):
        time.sleep(0.5)
        trainees[width].train(1, 1)  # not timed: the first step after an idle wait is slow
        for s in range(2, 2 + steps):
            t0 = time.perf_counter()
            trainees[width].train(s, 1)
            times[width].append(time.perf_counter() - t0)
print(json.dumps({w: {"ms": 1000 * statistics.median(times[w]), "first_s": first[w]} for w in widths}))
"""


def run(quick: bool = False) -> Result:
    import numpy as np

    widths = [LENGTH, 128, WIDEST] if quick else [LENGTH * 2 ** k for k in range(6)]
    steps = 2 if quick else 4
    code = (f"import sys; sys.argv = ['x', {json.dumps(json.dumps(widths))}, '{BATCH}', "
            f"'{LENGTH}', '{steps}']\n{_CHILD}")
    with tempfile.TemporaryDirectory() as cache:  # an empty compilation cache: cold compiles
        got = {int(w): v for w, v in json.loads(_python(code, {"LMKIT_CACHE_DIR": cache})).items()}
    positions = BATCH * LENGTH
    pairs = np.array([positions * w for w in widths], float)
    ms = np.array([got[w]["ms"] for w in widths])
    (fixed, per_pair), *_ = np.linalg.lstsq(np.stack([np.ones_like(pairs), pairs], 1), ms,
                                            rcond=None)
    per_position = fixed / positions  # ms: the step's every cost but attention's, per position
    compile_s = float(np.median([got[w]["first_s"] for w in widths]))
    ratios = {"attention_keys": round(per_position / per_pair),
              "compile_positions": round(1000 * compile_s / per_position, -3)}
    figures = {"batch": BATCH, "length": LENGTH, "positions": positions,
               "ms_per_position": round(per_position, 4), "us_per_pair": round(1000 * per_pair, 4),
               "first_call_s": round(compile_s, 2),
               **{f"ms_per_step_{w}": round(got[w]["ms"], 1) for w in widths}}
    rows = [["rows x width", "attended pairs", "ms / step", "first call s"],
            *[[f"{positions // w} x {w}", f"{positions * w:,}", f"{got[w]['ms']:.0f}",
               f"{got[w]['first_s']:.1f}"] for w in widths],
            ["fit", f"{1000 * per_pair:.3f} us a pair", f"{per_position:.3f} ms a position",
             f"ATTENTION_KEYS ~ {ratios['attention_keys']}, COMPILE_POSITIONS ~ "
             f"{ratios['compile_positions']:,.0f}"]]
    return Result(figures, ratios, {}, rows)
