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
#: name -> the `--set` keys. Each row names every key it changes from lmkit's default; setting
#: any `model.*` key replaces the default's whole `[model]` table, so a row with one option has
#: only that one on.
ADAMW, NO_OPTIONS = {"optimizer": '"adamw"'}, {"model": "{}"}
CONFIGS: dict[str, dict[str, str]] = {
    "baseline (nanoGPT: AdamW, learned positions, GELU, LayerNorm, tied)": {**ADAMW, **NO_OPTIONS},
    "+ muon": {"optimizer": '"muon"', **NO_OPTIONS},
    "+ rotary": {**ADAMW, "model.rotary": "true"},
    "+ qk_norm": {**ADAMW, "model.qk_norm": "true"},
    "+ relu2": {**ADAMW, "model.mlp": '"relu2"'},
    "+ rmsnorm": {**ADAMW, "model.norm": '"rmsnorm"'},
    "+ zero_init": {**ADAMW, "model.zero_init": "true"},
    "+ logit_softcap 30": {**ADAMW, "model.logit_softcap": "30"},
    "+ untied head": {**ADAMW, **NO_OPTIONS, "tie_embeddings": "false"},
    "all together": {"optimizer": '"muon"', "model.rotary": "true", "model.qk_norm": "true",
                     "model.mlp": '"relu2"', "model.norm": '"rmsnorm"',
                     "model.zero_init": "true", "model.logit_softcap": "30",
                     "tie_embeddings": "false"},
    "lmkit's default": {},
}
QUICK = ("baseline (nanoGPT: AdamW, learned positions, GELU, LayerNorm, tied)", "lmkit's default")


def run_config(sets: dict[str, str], seed: int, work: Path, quick: bool) -> dict[str, Any]:
    """One whole ``lmkit train`` process: wall time and its validation curve. The default's row
    keeps its final sample (it is then exactly ``lmkit train --set seed=S``); the others skip it."""
    cache = Path(tempfile.mkdtemp(dir=work, prefix="cache"))
    keys = {**sets, "seed": str(seed), "out": str(work / "run"), "overwrite": "true",
            **({"sample_tokens": "0"} if sets else {}), **({"max_steps": "20"} if quick else {})}
    args = [a for k, v in keys.items() for a in ("--set", f"{k}={v}")]
    wall, lines = _timed_lines([sys.executable, "-m", "lmkit.cli", "train", *args], ROOT,
                               {"LMKIT_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)})
    curve = [(t, int(m[1]), float(m[2])) for t, text in lines
             if (m := re.match(r"eval @ step (\d+): val_loss ([\d.]+)", text))]
    return {"seed": seed, "wall_s": wall, "curve": curve, "val_loss": curve[-1][2]}


def measure(names: tuple[str, ...], seeds: tuple[int, ...] = SEEDS,
            quick: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Every seed of every configuration in `names`, one process after the other."""
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="ablation") as tmp:
        for name in names:
            results[name] = [run_config(CONFIGS[name], s, Path(tmp), quick) for s in seeds]
            print(f"{name}: " + ", ".join(f"seed {r['seed']} {r['val_loss']:.4f} "
                                          f"({r['wall_s']:.0f} s)" for r in results[name]),
                  file=sys.stderr, flush=True)
    return results


def report(results: dict[str, list[dict[str, Any]]]) -> Result:
    """The table of `measure`'s results (of one invocation, or of several merged)."""
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
    figures = {"target": TARGET, "configs": {n: CONFIGS[n] for n in results},
               "summary": summary, "runs": results}
    notes = ["each row: whole `lmkit train` processes, empty compilation cache, the default "
             "run's budget (sample_tokens=0 except the default's row); seconds from the "
             "process's start (imports and compilation included) to the first evaluation at or "
             "below the target",
             "configurations ran one after the other: load from elsewhere shifts the seconds, not "
             "the losses (a seed's losses do not depend on timing)"]
    ratios: dict[str, float] = {}
    default, base = summary.get("lmkit's default"), summary.get(QUICK[0])
    if default and base:  # the default's final loss against the baseline's, seed by seed
        ratios["baseline_final_loss_over_default"] = statistics.median(
            b / d for b, d in zip(base["final_val_loss"], default["final_val_loss"]))
    return Result(figures, ratios, {}, rows, notes)


def run(quick: bool = False) -> Result:
    return report(measure(QUICK if quick else tuple(CONFIGS), SEEDS[:1] if quick else SEEDS,
                          quick))
