"""`ablation`: what each speedrun option of `gpt` is worth, alone and together, at a fixed budget.

Every configuration trains `gpt` with the default run's budget (its `max_steps`, `batch_size`,
learning rate and schedule: ``gpt.config_defaults``) as a whole ``lmkit train`` process with an
empty compilation cache, three seeds each, one after the other in this invocation. The
baseline is nanoGPT's architecture and optimizer (AdamW; learned positions, GELU, LayerNorm,
tied head, GPT-2 initialization, no soft-cap); each other row switches one option on over it,
then all of them together, then lmkit's default (``lmkit train`` with no ``--set``). Figures per
configuration: the median over seeds of the seconds from the process's start to its first
evaluation at or below 1.88 (compilation included), of the step of that evaluation, and the
final validation loss (lmkit's own estimate: the first 20 batches of the validation split) of
each seed.

``--quick`` runs two configurations, one seed, 20 steps: a check of the plumbing.
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._common import Result
from .speedrun_char import ROOT, TARGET, _timed_lines, first_below

SEEDS = (0, 1, 2)
#: name -> the `--set` keys over the baseline; the baseline names every key it changes from the
#: default, so that each row differs from it in exactly what it names.
BASELINE = {"optimizer": '"adamw"', "model": "{}"}
CONFIGS: dict[str, dict[str, str]] = {
    "baseline (nanoGPT: AdamW, learned positions, GELU, LayerNorm, tied)": BASELINE,
    "+ muon": {**BASELINE, "optimizer": '"muon"'},
    "+ rotary": {**BASELINE, "model.rotary": "true"},
    "+ qk_norm": {**BASELINE, "model.qk_norm": "true"},
    "+ relu2": {**BASELINE, "model.mlp": '"relu2"'},
    "+ rmsnorm": {**BASELINE, "model.norm": '"rmsnorm"'},
    "+ zero_init": {**BASELINE, "model.zero_init": "true"},
    "+ logit_softcap 30": {**BASELINE, "model.logit_softcap": "30"},
    "+ untied head": {**BASELINE, "tie_embeddings": "false"},
    "all together": {"optimizer": '"muon"', "model.rotary": "true", "model.qk_norm": "true",
                     "model.mlp": '"relu2"', "model.norm": '"rmsnorm"',
                     "model.zero_init": "true", "model.logit_softcap": "30",
                     "tie_embeddings": "false"},
    "lmkit's default": {},
}
QUICK = ("baseline (nanoGPT: AdamW, learned positions, GELU, LayerNorm, tied)", "lmkit's default")


def run_config(sets: dict[str, str], seed: int, work: Path, quick: bool) -> dict[str, Any]:
    """One whole ``lmkit train`` process: wall time and its validation curve."""
    cache = Path(tempfile.mkdtemp(dir=work, prefix="cache"))
    keys = {**sets, "seed": str(seed), "out": str(work / "run"), "overwrite": "true",
            "sample_tokens": "0", **({"max_steps": "20"} if quick else {})}
    args = [a for k, v in keys.items() for a in ("--set", f"{k}={v}")]
    wall, lines = _timed_lines([sys.executable, "-m", "lmkit.cli", "train", *args], ROOT,
                               {"LMKIT_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)})
    curve = [(t, int(m[1]), float(m[2])) for t, text in lines
             if (m := re.match(r"eval @ step (\d+): val_loss ([\d.]+)", text))]
    return {"seed": seed, "wall_s": wall, "curve": curve, "val_loss": curve[-1][2]}


def run(quick: bool = False) -> Result:
    names = QUICK if quick else tuple(CONFIGS)
    seeds = SEEDS[:1] if quick else SEEDS
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="ablation") as tmp:
        for name in names:
            results[name] = [run_config(CONFIGS[name], s, Path(tmp), quick) for s in seeds]
            print(f"{name}: " + ", ".join(f"seed {r['seed']} {r['val_loss']:.4f} "
                                          f"({r['wall_s']:.0f} s)" for r in results[name]),
                  file=sys.stderr, flush=True)
    rows = [["configuration", f"s to {TARGET} (median)", f"step at {TARGET}",
             "final val loss (seeds 0, 1, 2)", "wall s (median)"]]
    summary: dict[str, dict[str, Any]] = {}
    for name, rs in results.items():
        reach = [first_below(r["curve"], TARGET) for r in rs]
        steps = [next((s for _, s, v in r["curve"] if v <= TARGET), None) for r in rs]
        hit = [t for t in reach if t is not None]
        summary[name] = {
            "seconds_to_target": reach, "steps_to_target": steps,
            "final_val_loss": [r["val_loss"] for r in rs],
            "wall_s": [r["wall_s"] for r in rs],
        }
        rows.append([name,
                     f"{statistics.median(hit):.1f}" + ("" if len(hit) == len(rs) else
                                                         f" ({len(hit)}/{len(rs)} seeds)")
                     if hit else "not reached",
                     "/".join("-" if s is None else str(s) for s in steps),
                     ", ".join(f"{r['val_loss']:.3f}" for r in rs),
                     f"{statistics.median(r['wall_s'] for r in rs):.1f}"])
    figures = {"target": TARGET, "seeds": list(seeds), "configs": {n: CONFIGS[n] for n in names},
               "summary": summary, "runs": results}
    notes = ["each row: whole `lmkit train` processes, empty compilation cache, sample_tokens=0, "
             "the default run's budget; seconds from the process's start (imports and "
             "compilation included) to the first evaluation at or below the target",
             "configurations ran one after the other: load from elsewhere shifts the seconds, not "
             "the losses (a seed's losses do not depend on timing)"]
    return Result(figures, {}, {}, rows, notes)
