"""Run one of lmkit's speed benchmarks from the git checkout's root folder.

    python -m benchmarks NAME [--quick] [--out DIR]     # or `lmkit bench ...`, which runs this

Prints the benchmark's table and writes every figure, the machine and the ratios with their
targets to ``benchmarks/results/NAME.json`` (``NAME.quick.json`` for ``--quick``, so a quick
check never overwrites a recorded result; ``--out DIR`` writes elsewhere). Exits with status 2,
and one paragraph on stderr, for an unknown name or a missing PyTorch.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from . import _common
from ._common import machine_info

__all__ = ["BENCHMARKS", "main", "run_benchmark"]

BENCHMARKS = ("gpt_char", "lstm_classic", "generate", "startup", "memory", "defaults", "finetune",
              "scaling", "speedrun_char", "ablation", "speedrun_word", "translate", "lora",
              "lora_llama", "decode_hf", "embed_st", "finetune_hf", "shape_cost", "states_at")
RESULTS = _common.RESULTS


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_benchmark(name: str, quick: bool = False, out: str | Path | None = None) -> dict[str, Any]:
    """Run benchmark `name` (one of `BENCHMARKS`), print its table, write and return its record."""
    module = importlib.import_module(f"{__package__}.{name}")
    folder = Path(out) if out is not None else RESULTS
    _common.RESULTS = folder
    started = time.time()
    try:
        result = module.run(quick=quick)
    finally:
        _common.RESULTS = RESULTS
    verdicts = result.verdicts()
    record = {
        "benchmark": name,
        "quick": quick,
        "command": f"lmkit bench {name}{' --quick' if quick else ''}",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": machine_info(),
        "figures": result.figures,
        "ratios": result.ratios,
        "targets": {k: {"target": f"{op} {limit}", "value": result.ratios.get(k),
                        "met": verdicts.get(k)} for k, (op, limit) in result.targets.items()},
        "notes": result.notes,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{'.quick' if quick else ''}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    print(f"\n{name}{' (quick)' if quick else ''} on {record['machine']['cpu']}, "
          f"{record['machine']['usable_cores']} cores")
    print(_table(result.rows))
    for k, v in record["targets"].items():
        mark = "met" if v["met"] else "NOT met"
        print(f"  {k} = {v['value']}  (target {v['target']}: {mark})")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"wrote {path}")
    return record


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: the command line), run the benchmark; the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="Run one of lmkit's speed benchmarks.")
    parser.add_argument("name", help=f"one of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true",
                        help="a short run (under a minute) that checks the benchmark works")
    parser.add_argument("--out", default=None,
                        help=f"folder for the JSON (default: {RESULTS})")
    args = parser.parse_args(argv)
    if args.name not in BENCHMARKS:
        close = difflib.get_close_matches(args.name, BENCHMARKS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        parser.error(f"unknown benchmark '{args.name}'.{hint} Available: {', '.join(BENCHMARKS)}")
    try:
        run_benchmark(args.name, quick=args.quick, out=args.out)
    except ModuleNotFoundError as exc:
        # The PyTorch references import torch only when they are first needed, so a missing
        # PyTorch shows up here, part-way through a run, not when the module is imported.
        if exc.name != "torch":
            raise
        parser.exit(2, f"{parser.prog}: error: benchmark '{args.name}' compares against "
                       f"PyTorch, which is not installed in {sys.prefix}: "
                       f"`pip install -e '.[bench]'` from the checkout (or `pip install torch`)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
