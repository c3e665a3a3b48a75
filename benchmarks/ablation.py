"""`ablation`: what each speedrun option of `gpt` is worth, alone and together, at a fixed budget.

Every configuration trains `gpt` at the default run's size and settings (``gpt.config_defaults``:
two blocks of 128, batches of 32 windows of 64, learning rate 1e-2 with warm-up and linear decay)
for `BUDGET` (150 steps, the schedule over them), three seeds each, one training after the
other in this process. The baseline is nanoGPT's block and optimizer at that size (AdamW;
learned positions, GELU, LayerNorm, tied head, GPT-2 initialization, no soft-cap); each other
row switches one option on over it, then all of them together; the last row is lmkit's default
itself, its 200 steps (``lmkit train --set seed=S``: Muon, rotary, ReLU², QK-norm, zero-init).
Figures per configuration: the validation loss at each evaluation (every 50 steps; lmkit's own
estimate, the first 20 batches of the validation split) of each seed, the step and the seconds
(from the training call: data, model and compilation included) of the first evaluation at or
below 1.88, and the seconds of the whole training. A seed's losses do not depend on the
machine's load; its seconds do.

``--quick`` runs two configurations, one seed, 20 steps: a check of the plumbing.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from typing import Any

from ._common import Result
from .speedrun_char import TARGET, first_below

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
    "the default's options (Muon, rotary, ReLU², QK-norm, zero-init)": {
        "optimizer": '"muon"', "model.rotary": "true", "model.mlp": '"relu2"',
        "model.qk_norm": "true", "model.zero_init": "true"},
    "lmkit's default": {},
}
#: the ablation's budget over the default's: fewer steps, with the schedule over them, so that
#: 11 configurations x 3 seeds fit a quarter of an hour on 2 cores (the default's own row keeps
#: its full 200 steps: the `lmkit train` a user runs)
BUDGET = {"max_steps": "150"}
QUICK = ("baseline (nanoGPT: AdamW, learned positions, GELU, LayerNorm, tied)", "lmkit's default")


def run_config(sets: dict[str, str], seed: int, quick: bool) -> dict[str, Any]:
    """One training of `gpt` with `sets` over lmkit's default config, in this process: seconds
    from the call (data, model, compilation included) and its validation curve. The default's
    row keeps its final sample (it is then ``lmkit train --set seed=S``); the others skip it."""
    import lmkit
    from lmkit.config import parse_set_options
    from lmkit.engine.events import EvalEvent

    keys = {**sets, "seed": str(seed), **({"sample_tokens": "0", **BUDGET} if sets else {}),
            **({"max_steps": "20"} if quick else {})}
    config = parse_set_options([f"{k}={v}" for k, v in keys.items()])
    curve: list[tuple[float, int, float]] = []
    t0 = time.perf_counter()

    def record(event: Any) -> None:
        if isinstance(event, EvalEvent):
            curve.append((time.perf_counter() - t0, event.step, event.metrics["val_loss"]))

    with tempfile.TemporaryDirectory(prefix="ablation") as out:
        lmkit.train(config, out=out, overwrite=True, reporters=[record])
    return {"seed": seed, "wall_s": time.perf_counter() - t0, "curve": curve,
            "val_loss": curve[-1][2]}


def measure(names: tuple[str, ...], seeds: tuple[int, ...] = SEEDS,
            quick: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Every seed of every configuration in `names`, one after the other in this process. JAX's
    compilation cache is a new empty folder: a configuration's first seed compiles cold, as a
    first run in a new process would, its other seeds (the same programs) find them there."""
    import jax

    with tempfile.TemporaryDirectory(prefix="ablation_cache") as cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        results: dict[str, list[dict[str, Any]]] = {}
        for name in names:
            results[name] = [run_config(CONFIGS[name], s, quick) for s in seeds]
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
    notes = [f"each row: `lmkit.train` in one process, {BUDGET} over the default config "
             "(sample_tokens=0), except the default's row (its own 300 steps and its sample); "
             "seconds from the training call (data, model and compilation included, not the "
             "imports: ~3 s more for a whole `lmkit train` process); a configuration's first "
             "seed compiles cold, the others find its programs in the compilation cache",
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
