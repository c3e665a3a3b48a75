"""Whole benchmarks: evaluate every GLUE or SuperGLUE task found under a data folder, with the
leaderboard's average score.

A suite is the set of registered tasks whose `Task.benchmark` it names (``glue`` → GLUE's nine
tasks, ``superglue`` → SuperGLUE's eight), so a plugin task that declares the benchmark joins it.
`evaluate_suite` keeps the tasks whose scored split it finds under `data` and that the method
can score (CoLA, STS-B, MNLI, QNLI, QQP and WNLI have no zero-shot prompts); the others are listed in `Leaderboard.skipped`, with the reason. It
evaluates each run on each of them through `evaluate_runs` (fine-tuning, or
``method="zeroshot"``), and optionally writes the leaderboard
(``leaderboard.json``, ``.tsv``, ``.html``) and every result (``<run>/<task>/metrics.json`` and
``predictions.tsv``) under `out`.

The average is the leaderboards' formula: each task counts once, with the mean of its scores
where it has two (CB: accuracy and F1; MultiRC: EM and F1a; ReCoRD: F1 and EM; MRPC, QQP, STS-B),
over the tasks evaluated. The scored split is each task's default (GLUE ``dev``, SuperGLUE
``val``: test labels are hidden) unless the `split` option says otherwise (``dev32`` for FewGLUE).

>>> from lmkit.evaluation.suites import evaluate_suite
>>> board = evaluate_suite("runs/char-gpt", "superglue", "data/superglue", method="zeroshot",
...                        out="results/")                                  # doctest: +SKIP
>>> board.average("char-gpt", "SuperGLUE")                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmkit.engine.events import Reporter, StopSignal
from lmkit.errors import ConfigError, DataError, did_you_mean
from lmkit.evaluation.leaderboard import Leaderboard, evaluate_runs
from lmkit.evaluation.loaders import find_task_data, is_hub
from lmkit.evaluation.tasks import Task, get_task
from lmkit.paths import atomic_output

__all__ = ["suite_tasks", "available_tasks", "evaluate_suite", "write_leaderboard", "SUITES"]

#: suite name (as typed) -> the `Task.benchmark` whose tasks it runs
SUITES = {"glue": "GLUE", "superglue": "SuperGLUE"}


def suite_tasks(suite: str) -> list[Task]:
    """The registered tasks of `suite` (``glue`` or ``superglue``), by name.

    >>> [t.name for t in suite_tasks("superglue")][:3]
    ['superglue/boolq', 'superglue/cb', 'superglue/copa']
    """
    from lmkit.registry import tasks

    key = suite.lower().replace("-", "").replace("_", "")
    if key not in SUITES:
        raise ConfigError(f"unknown suite '{suite}'{did_you_mean(key, SUITES)}; suites: {', '.join(SUITES)}")
    found = sorted((e.obj for e in tasks.list() if getattr(e.obj, "benchmark", None) == SUITES[key]),
                   key=lambda t: t.name)
    return list({t.name: t for t in found}.values())  # an alias lists its task again


def available_tasks(tasks: Sequence[Task], data: "str | Path | None",
                    split: str | None = None) -> tuple[list[Task], list[tuple[str, str]]]:
    """``(tasks whose scored split is under data, [(task, why not), ...] for the others)``."""
    if is_hub(data):
        return list(tasks), []
    found, skipped = [], []
    for task in tasks:
        try:
            path = find_task_data(task, data)
            name = task.resolve_split(split)
        except DataError as exc:
            skipped.append((task.name, str(exc).split(". ")[0]))
            continue
        if _split_file(task, path, name) is None:
            skipped.append((task.name, f"no '{name}' split file under '{path}'"))
        else:
            found.append(task)
    return found, skipped


def _split_file(task: Task, path: Path, split: str) -> Path | None:
    """The file holding `split` of `task` under `path` (None: absent); `path` itself for the
    `datasets` layouts, which `load_split` checks when it reads them."""
    if task.source.holds(path):
        return task.source.file(path, split)
    return path


def evaluate_suite(
    runs: "Mapping[str, Any] | Sequence[Any] | Any", suite: str, data: "str | Path | None" = None, *,
    tasks: Sequence[str] | None = None, out: "str | Path | None" = None,
    reporters: Sequence[Reporter] = (), stop: StopSignal | None = None, keep_going: bool = False,
    board: Leaderboard | None = None, **options: Any,
) -> Leaderboard:
    """Evaluate `runs` on every task of `suite` found under `data` (or only `tasks` of it).

    `options` are `EvalConfig` keys for every task (``method="zeroshot"``, ``split="dev32"``,
    ``max_steps``, ...). The returned `Leaderboard` has a row per run, a column per task and the
    benchmark's average; `skipped` lists the suite's tasks without data. With `out`, the
    leaderboard and each result are written there (`write_leaderboard`). Results are added to
    `board` when given (the notebook panel keeps one).

    >>> board = evaluate_suite({"gpt": run}, "superglue", "data/superglue", method="zeroshot")  # doctest: +SKIP
    >>> print(board)                                                                            # doctest: +SKIP
    """
    members = suite_tasks(suite)
    if tasks:
        names = {t.name for t in members}
        chosen = [get_task(t if "/" in t else f"{suite.lower()}/{t}") for t in tasks]
        outside = [t.name for t in chosen if t.name not in names]
        if outside:
            raise ConfigError(f"{', '.join(outside)} {'is' if len(outside) == 1 else 'are'} not in the "
                              f"{suite} suite; its tasks: {', '.join(sorted(names))}")
        members = chosen
    found, skipped = available_tasks(members, data, options.get("split"))
    if options.get("method") == "zeroshot":  # what the method cannot score is skipped, not a failure mid-suite
        for task in [t for t in found if t.choices is None]:
            found.remove(task)
            skipped.append((task.name, "has no zero-shot prompts (Task.choices)"))
    if not found:
        reasons = "; ".join(f"{t}: {why}" for t, why in skipped)
        raise DataError(f"no task of the {suite} suite has data under '{data}' ({reasons})")
    board = evaluate_runs(runs, found, data, reporters=reporters, stop=stop, keep_going=keep_going,
                          board=board, **options)
    board.skipped = skipped
    if out is not None:
        write_leaderboard(board, out)
    return board


def write_leaderboard(board: Leaderboard, out: "str | Path") -> Path:
    """Write ``leaderboard.json`` (every result, averages, skipped tasks), ``leaderboard.tsv``
    (the table), ``leaderboard.html`` (the table as a self-contained page) and each result's
    ``<run>/<task>/metrics.json`` and ``predictions.tsv`` under `out`; returns `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    columns, rows = board.table()
    averages = {m: {b: board.average(m, b) for b in board.benchmarks} for m in board.models}
    summary = {"columns": columns, "rows": [{"model": m, **dict(zip(columns, r))} for m, r in zip(board.models, rows)],
               "baselines": [{"model": m, **dict(zip(columns, r))} for m, r in zip(*board.baseline_rows())],
               "averages": averages, "tasks_averaged": {b: [t.name for t in board.tasks if t.benchmark == b]
                                                        for b in board.benchmarks},
               "skipped": [{"task": t, "reason": why} for t, why in board.skipped],
               "failures": [{"model": m, "task": t, "error": e} for m, t, e in board.failures],
               "results": [r.to_dict() for r in board.results]}
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>lmkit leaderboard</title><style>"
            "table{border-collapse:collapse;font-family:sans-serif}td,th{border:1px solid #ccc;"
            "padding:4px 8px;text-align:right}</style></head><body>" + board.to_html() + "</body></html>\n")
    for name, text in (("leaderboard.json", json.dumps(summary, indent=2) + "\n"),
                       ("leaderboard.tsv", board.to_tsv()), ("leaderboard.html", page)):
        with atomic_output(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    for result in board.results:
        result.save(out / _safe(result.model_name) / _safe(result.task.name))
    return out


def _safe(name: str) -> str:
    return name.replace("/", "_").replace("\\", "_") or "_"
