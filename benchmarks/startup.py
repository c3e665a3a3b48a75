"""`startup`: `import lmkit`, `%load_ext lmkit`, and the first training step, cold and warm.

Every figure is measured in a fresh Python process, as a user meets it. The first step is the
first compiled dispatch of `lmkit.train` on the `gpt_char` model (one step; the time from the
start of the training loop to its first `StepEvent`): once with an empty persistent JAX
compilation cache (a new ``LMKIT_CACHE_DIR``) and once more with the cache that run left.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

from ._common import Result, ratio

_IMPORT = "import time; t = time.perf_counter(); import lmkit; print(time.perf_counter() - t)"
_LOAD_EXT = """
from IPython.core.interactiveshell import InteractiveShell
import time
shell = InteractiveShell.instance()
t = time.perf_counter()
shell.run_line_magic("load_ext", "lmkit")
print(time.perf_counter() - t)
"""
_FIRST_STEP = """
import json, sys, time, tempfile
import lmkit
from lmkit.engine.events import StepEvent
seen = []
with tempfile.TemporaryDirectory() as out:
    t0 = time.perf_counter()
    lmkit.train(arch="gpt", seq_len=64, batch_size=12, embed_dim=128, layers=4, heads=4,
                max_steps=1, steps_per_dispatch=1, validation_split=0.0, sample_tokens=0,
                out=out, reporters=[lambda e: seen.append(e) if isinstance(e, StepEvent) else None])
    total = time.perf_counter() - t0
print(json.dumps({"first_step_s": seen[0].elapsed, "train_call_s": total}))
"""


def _python(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)
    if done.returncode:
        raise RuntimeError(f"benchmark subprocess failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def run(quick: bool = False) -> Result:
    repeats = 1 if quick else 7
    imports = [float(_python(_IMPORT)) for _ in range(repeats)]
    load_ext = [float(_python(_LOAD_EXT)) for _ in range(repeats)]
    with tempfile.TemporaryDirectory() as cache:
        env = {"LMKIT_CACHE_DIR": cache}
        cold = json.loads(_python(_FIRST_STEP, env))
        warm = json.loads(_python(_FIRST_STEP, env))
    figures = {
        "import_lmkit_s": {"median": statistics.median(imports), "all": imports},
        "load_ext_lmkit_s": {"median": statistics.median(load_ext), "all": load_ext},
        "cold_cache": cold, "warm_cache": warm,
    }
    ratios = {"load_ext_s": round(statistics.median(load_ext), 3),
              "warm_over_cold_first_step": ratio(warm["first_step_s"], cold["first_step_s"])}
    targets = {"load_ext_s": ("<", 0.3), "warm_over_cold_first_step": ("<=", 0.25)}
    rows = [["figure", "seconds"],
            ["import lmkit (median)", f"{statistics.median(imports):.3f}"],
            ["%load_ext lmkit (median)", f"{statistics.median(load_ext):.3f}"],
            ["first step, empty compilation cache", f"{cold['first_step_s']:.2f}"],
            ["first step, warm compilation cache", f"{warm['first_step_s']:.2f}"],
            ["lmkit.train(max_steps=1) call, cold", f"{cold['train_call_s']:.2f}"],
            ["lmkit.train(max_steps=1) call, warm", f"{warm['train_call_s']:.2f}"]]
    return Result(figures, ratios, targets, rows)
