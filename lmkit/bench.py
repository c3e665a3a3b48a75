"""`lmkit bench NAME [--quick]`: run one of the repository's speed benchmarks.

The benchmarks are not part of the installed package: they live in the ``benchmarks/`` folder of
the git checkout, next to the ``lmkit/`` package folder, and need PyTorch for their references
(``pip install -e '.[bench]'``). In an editable install that folder is found from this file's
location; elsewhere point ``$LMKIT_BENCHMARKS`` at it.

Each benchmark prints a table and writes every figure, the machine and the ratios to
``benchmarks/results/NAME.json`` (``NAME.quick.json`` for ``--quick``, so a quick check never
overwrites recorded results; ``--out DIR`` writes elsewhere).

>>> main(["gpt_char", "--quick", "--out", "/tmp/bench"])   # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from lmkit.errors import RunError

__all__ = ["BENCHMARKS", "benchmarks_dir", "main", "run_benchmark"]

BENCHMARKS = ("gpt_char", "lstm_classic", "generate", "startup", "memory")
_PACKAGE = "lmkit_benchmarks"  # import name given to the benchmarks folder


def benchmarks_dir() -> Path:
    """The ``benchmarks/`` folder: ``$LMKIT_BENCHMARKS``, else the one beside the package."""
    explicit = os.environ.get("LMKIT_BENCHMARKS")
    folder = Path(explicit) if explicit else Path(__file__).resolve().parent.parent / "benchmarks"
    if not (folder / "__init__.py").is_file():
        where = "$LMKIT_BENCHMARKS" if explicit else "beside the lmkit package"
        raise RunError(
            f"no benchmarks folder at {folder} ({where}). The benchmarks ship with the git "
            f"checkout, not the wheel: clone the repository and `pip install -e '.[bench]'`, or "
            f"set LMKIT_BENCHMARKS to the checkout's benchmarks/ folder."
        )
    return folder


def _load(name: str) -> Any:
    if name not in BENCHMARKS:
        import difflib

        close = difflib.get_close_matches(name, BENCHMARKS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise RunError(f"unknown benchmark '{name}'.{hint} Available: {', '.join(BENCHMARKS)}")
    folder = benchmarks_dir()
    if _PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            _PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[_PACKAGE] = package
        spec.loader.exec_module(package)
    try:
        return importlib.import_module(f"{_PACKAGE}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            raise RunError("the benchmarks compare against PyTorch, which is not installed: "
                           "`pip install -e '.[bench]'` (or `pip install torch`)") from exc
        raise


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_benchmark(name: str, quick: bool = False, out: str | Path | None = None) -> dict[str, Any]:
    """Run benchmark `name`, print its table, write its JSON, and return what was written."""
    module = _load(name)
    from lmkit_benchmarks._common import machine_info

    started = time.time()
    result = module.run(quick=quick)
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
    folder = Path(out) if out is not None else benchmarks_dir() / "results"
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
    """Entry point of `lmkit bench`; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="lmkit bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help=f"one of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true",
                        help="a short run (under a minute) that checks the benchmark works")
    parser.add_argument("--out", default=None, help="folder for the JSON (default: benchmarks/results)")
    args = parser.parse_args(argv)
    run_benchmark(args.name, quick=args.quick, out=args.out)
    return 0
