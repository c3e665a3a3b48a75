"""`lmkit lr-find` and `lmkit sweep`: choosing the learning rate and the structure.

    lmkit lr-find [CONFIG.toml] [--set key=value ...] [--start LR] [--end LR] [--steps N]
                  [--rule minimum/10|steepest]
    lmkit sweep CONFIG.toml --space SPACE.toml --trials N --out DIR [--storage URL]
                [--workers W] [--metric val_loss] [--sampler tpe|random|grid]
                [--pruner median|hyperband|none] [--set key=value ...]
    lmkit sweep --task TASK --model RUN --data PATH --space SPACE.toml --trials N --out DIR
                --metric accuracy                     (a sweep of fine-tunings)
    lmkit sweep --report DIR

Both parse text and call `lmkit.api`; the work is in `lmkit.training.lr_find` and `lmkit.sweeps`.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parsers"]


def _lr_find(args: argparse.Namespace) -> int:
    from lmkit.api import lr_find, parse_set_options

    overrides: dict[str, Any] = parse_set_options(args.set or [])
    print(f"lmkit lr-find: {args.steps} steps at rates from {args.start:g} to {args.end:g}…",
          flush=True)
    found = lr_find(args.config, start_lr=args.start, end_lr=args.end, steps=args.steps,
                    rule=args.rule, **overrides)
    every = max(1, len(found.smoothed) // 12)
    print(f"{'learning rate':>14}  {'smoothed loss':>13}")
    for i in range(0, len(found.smoothed), every):
        print(f"{found.learning_rates[i]:>14.3g}  {found.smoothed[i]:>13.4f}")
    print(found.describe())
    given = [args.config] if args.config else []
    given += [f"--set {setting}" for setting in args.set or [] if not setting.startswith("learning_rate=")]
    print(f"train with: lmkit train {' '.join([*given, f'--set learning_rate={found.suggestion:.3g}'])}")
    return 0


def _values(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class TrialLines:
    """A sweep's progress on a terminal: a line when a trial starts and one when it ends."""

    def __call__(self, event: Any) -> None:
        from lmkit.api import TrialEndEvent, TrialStartEvent, format_duration

        if isinstance(event, TrialStartEvent):
            print(f"trial {event.number}: {_values(event.params)} -> {event.run_dir}", flush=True)
        elif isinstance(event, TrialEndEvent):
            t, best = event.trial, event.best
            value = "" if t.value is None else f" {event.metric} {t.value:.4f}"
            shown = (f"; best {best.value:.4f} (trial {best.number})"
                     if best is not None and best.value is not None else "")
            took = "" if t.seconds is None else f" in {format_duration(t.seconds)}"
            at = "" if t.step is None else f" at step {t.step}"
            print(f"trial {t.number}: {t.state}{at}{value}{took}{shown} "
                  f"[{event.done}/{event.total} done]", flush=True)


def _sweep(args: argparse.Namespace) -> int:
    from lmkit.api import ConfigError, parse_set_options, sweep, sweep_report

    if args.report:
        print(f"wrote {sweep_report(args.report)}")
        return 0
    needed = (("--space", args.space), ("--trials", args.trials), ("--out", args.out))
    if args.task is None:  # a sweep of trainings needs their config; fine-tunings have defaults
        needed = (("CONFIG", args.config), *needed)
    missing = [flag for flag, value in needed if value is None]
    if missing:
        raise ConfigError(f"lmkit sweep needs {', '.join(missing)}: lmkit sweep CONFIG.toml "
                          f"--space SPACE.toml --trials N --out DIR (or --task TASK --model M "
                          f"--data PATH for fine-tunings; --report DIR for the report)")
    finetune = (None if args.task is None else
                {"model": args.model, "task": args.task, "data": args.data})
    result = sweep(args.config, args.space, trials=args.trials, out=args.out,
                   storage=args.storage, workers=args.workers, metric=args.metric,
                   sampler=args.sampler, pruner=args.pruner, seed=args.seed,
                   reporters=[TrialLines()], finetune=finetune,
                   **parse_set_options(args.set or []))
    print()
    print(result.table())
    best = result.best
    if best is not None:
        print(f"\nbest: trial {best.number}, {result.metric} {best.value:.4f}: {_values(best.params)}"
              f" ({best.run_dir})")
    print(f"report: lmkit sweep --report {args.out}")
    return 0


def add_parsers(sub: Any) -> None:
    """Add the `lr-find` and `sweep` subcommands to the `lmkit` parser's subparsers."""
    p = sub.add_parser("lr-find", help="the learning-rate range test: the loss at exponentially "
                                       "rising rates, and a suggested learning_rate")
    p.add_argument("config", nargs="?", help="TOML file with config keys")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--start", type=float, default=1e-6, help="first learning rate (default 1e-6)")
    p.add_argument("--end", type=float, default=1.0, help="last learning rate (default 1)")
    p.add_argument("--steps", type=int, default=200, help="steps of the test (default 200)")
    p.add_argument("--rule", default="minimum/10", choices=("minimum/10", "steepest"),
                   help="how the suggestion is picked (default minimum/10: a tenth of the rate "
                        "with the lowest smoothed loss)")
    p.set_defaults(func=_lr_find)

    p = sub.add_parser("sweep", help="search a space of configs with Optuna (each trial a run "
                                     "directory; resumable; pruned from evaluations)")
    p.add_argument("config", nargs="?", help="TOML file with the config keys every trial shares")
    p.add_argument("--space", help="TOML file: the keys to vary, e.g. learning_rate = "
                                   "{log = [1e-4, 1e-2]}, layers = [1, 2, 4]")
    p.add_argument("--trials", type=int, help="trials in the whole sweep (all workers)")
    p.add_argument("--out", help="folder of the sweep: trial-NNN run directories, sweep.db")
    p.add_argument("--storage", help="Optuna database URL (default sqlite:///OUT/sweep.db; "
                                     "postgresql://... for workers on several machines)")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the study here")
    p.add_argument("--metric", default="val_loss", help="validation figure to optimize "
                                                        "(default val_loss)")
    p.add_argument("--sampler", default="tpe", help="tpe (default), random or grid")
    p.add_argument("--pruner", default="median", help="median (default), hyperband or none")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--task", help="sweep fine-tunings on this task instead (lmkit eval's "
                                  "options; --metric a task score, e.g. accuracy)")
    p.add_argument("--model", default="scratch", help="with --task: the run or checkpoint to "
                                                      "fine-tune (default scratch)")
    p.add_argument("--data", help="with --task: the task's data folder")
    p.add_argument("--report", metavar="DIR", help="write DIR/report.html for that sweep and exit")
    p.set_defaults(func=_sweep)
