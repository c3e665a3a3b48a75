"""`lmkit lr-find` and `lmkit sweep`: choosing the learning rate and the structure.

    lmkit lr-find [CONFIG.toml] [--set key=value ...] [--start LR] [--end LR] [--steps N]
                  [--rule minimum/10|steepest]
    lmkit sweep CONFIG.toml --space SPACE.toml --trials N --out DIR [--storage URL]
                [--workers W] [--metric val_loss] [--sampler tpe|random|grid]
                [--pruner median|hyperband|none] [--set key=value ...]
    lmkit sweep --report DIR

Both parse text and call `lmkit.api`; the work is in `lmkit.training.lr_find` and `lmkit.sweep`.
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
    config = f"{args.config} " if args.config else ""
    print(f"train with: lmkit train {config}--set learning_rate={found.suggestion:.3g}")
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
