"""`lmkit compare RUN_A RUN_B --task TASK --data PATH [--set key=value ...] [--json FILE]`.

Evaluates both runs on each task with the same options (so on the same examples) and prints,
per metric, both scores, the difference B - A with its 95 % interval, the p-value of a paired
test (McNemar for accuracy, a paired bootstrap otherwise) and whether the difference is
significant (`lmkit.api.compare`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "main"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `compare` sub-command to the `lmkit` parser; returns it (the caller sets `func`)."""
    p = subparsers.add_parser(
        "compare", help="is run B better than run A on a task, or is the difference noise? (paired test)",
        description="Evaluate two runs on the same examples of each task and test the difference of "
                    "every metric: McNemar's exact test for accuracy, a paired bootstrap otherwise.",
        epilog="Options (--set key=value) are those of `lmkit eval`, applied to both runs.")
    p.add_argument("run_a", metavar="RUN_A", help="run directory, pretrained checkpoint or 'scratch'")
    p.add_argument("run_b", metavar="RUN_B", help="the run compared with RUN_A (differences are B - A)")
    p.add_argument("--task", "--tasks", dest="tasks", action="append", required=True, metavar="TASK",
                   help="task name, repeatable or comma-separated")
    p.add_argument("--data", help="the tasks' data folder (as for `lmkit eval`); omit for the Hugging Face Hub")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="evaluation option for both runs")
    p.add_argument("--json", metavar="FILE", help="also write the comparisons to this JSON file")
    return p


def main(args: argparse.Namespace) -> int:
    """Compare the two runs of the parsed `args` on each task; returns the exit status."""
    from lmkit.api import compare, parse_set_options

    options = parse_set_options(args.set or [])
    tasks = [t for item in args.tasks for t in item.split(",") if t]
    found = [compare(args.run_a, args.run_b, task, args.data, **options) for task in tasks]
    print("\n".join(str(c) for c in found))
    if args.json:
        Path(args.json).write_text(json.dumps([c.to_dict() for c in found], indent=2) + "\n", encoding="utf-8")
    return 0
