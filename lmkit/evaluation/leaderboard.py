"""Evaluate several runs on several tasks and compare them in one table, a row per run.

>>> from lmkit.evaluation.leaderboard import evaluate_runs
>>> board = evaluate_runs({"lm": run, "base": "scratch"}, ["glue/sst2", "glue/cola"],
...                       data="data/", max_steps=300)                     # doctest: +SKIP
>>> print(board)                                                           # doctest: +SKIP
model  glue/sst2  glue/cola  GLUE avg
lm        0.8108     0.1120    0.4614
base      0.7970     0.1620    0.4795
>>> board.to_dataframe()                 # the same, plus every metric    # doctest: +SKIP

Each (run, task) pair is one call of `lmkit.evaluate`; ``lmkit eval``, ``%lmeval`` and the
notebook's `EvalPanel` all evaluate through `evaluate_runs`. A task's cell is its main score
(`EvalResult.main_score`: the mean of its two scores where it has two, as on the GLUE board), and
each benchmark's average (``GLUE avg``) is the mean of those cells over the benchmark's tasks
the run was evaluated on.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmkit.engine.events import Event, Reporter, StopSignal
from lmkit.errors import DataError, LmkitError
from lmkit.evaluation.loaders import find_task_data, is_hub
from lmkit.evaluation.result import EvalResult, main_of
from lmkit.evaluation.tasks import Task, get_task

__all__ = ["Leaderboard", "evaluate_runs", "EvaluationStartEvent", "EvaluationEndEvent"]


_PARTIAL_NOTE = "* partial: fine-tuning was stopped before its budget"
_INTERVAL_NOTE = ("[low, high]: 95 % interval of the score (Wilson for accuracy, bootstrap over the "
                  "examples otherwise); vs best: paired test against the column's best model, "
                  "≈ not significant (p >= 0.05); baseline rows: the same examples scored without a model")
#: how the baselines' and the intervals' rows are labelled
_BASELINE = "baseline: "
_INTERVAL = "95% "
_VERSUS = "vs best: "


def _shape_of(scored: Mapping[str, EvalResult]) -> Any:
    """The shape of the results' task (`Shape.higher_is_better` says which way is best)."""
    return next(iter(scored.values())).task.shape


def _bounds(result: EvalResult) -> dict[str, float | None]:
    interval = result.main_interval
    return {"main_low": None if interval is None else interval.low,
            "main_high": None if interval is None else interval.high}


@dataclass(frozen=True)
class EvaluationStartEvent(Event):
    """`evaluate_runs` starts evaluating `model` on `task` (pair `index` of `total`, from 1)."""

    model: str
    task: str
    index: int
    total: int


@dataclass(frozen=True)
class EvaluationEndEvent(Event):
    """`model` on `task` is done: `result` is its `EvalResult`, or `None` and `error` says why.

    `model` is the run's name in `evaluate_runs`'s mapping, or its path or directory when the
    runs came as a sequence (`result.model_name` is then the name `lmkit.evaluate` gave).
    """

    model: str
    task: str
    result: EvalResult | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        # the result holds the fine-tuned model: a JSON record keeps only its scores
        return {"event": "evaluation_end", "model": self.model, "task": self.task,
                "metrics": {} if self.result is None else dict(self.result.metrics), "error": self.error}


@dataclass
class Leaderboard:
    """The results of several runs on several tasks, shown with a row per run.

    `results` keeps every evaluation in order; a table cell shows the latest result of its run
    and task. `failures` lists ``(model, task, message)`` for the pairs that failed when
    `evaluate_runs` was told to keep going; `skipped` lists ``(task, reason)`` for a suite's
    tasks that had no data (`lmkit.evaluation.suites.evaluate_suite`).

    >>> board = Leaderboard([sst2_result, cola_result])          # doctest: +SKIP
    >>> board.score("lm", "glue/sst2"), board.average("lm", "GLUE")  # doctest: +SKIP
    (0.81, 0.46)
    """

    results: list[EvalResult] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _compared: dict[tuple[int, int], Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def models(self) -> list[str]:
        """The row labels: each result's `model_name`, in order of first appearance."""
        return list(dict.fromkeys(r.model_name for r in self.results))

    @property
    def tasks(self) -> list[Task]:
        """The tasks evaluated, in order of first appearance."""
        return list({r.task.name: r.task for r in self.results}.values())

    @property
    def benchmarks(self) -> list[str]:
        """The benchmarks of the evaluated tasks (``["GLUE"]``), in order of first appearance."""
        return list(dict.fromkeys(t.benchmark for t in self.tasks if t.benchmark))

    def result(self, model: str, task: "str | Task") -> EvalResult | None:
        """The latest result of `model` on `task`, or `None` when there is none."""
        name = get_task(task).name
        return next((r for r in reversed(self.results) if r.model_name == model and r.task.name == name), None)

    def score(self, model: str, task: "str | Task") -> float | None:
        """The main score of `model` on `task` (`EvalResult.main_score`), or `None`."""
        found = self.result(model, task)
        return None if found is None else found.main_score

    def average(self, model: str, benchmark: str) -> float | None:
        """The mean main score of `model` over the `benchmark` tasks it was evaluated on, or `None`.

        >>> board.average("lm", "GLUE")       # mean of its glue/* cells  # doctest: +SKIP
        0.4614
        """
        scores = [s for t in self.tasks if t.benchmark == benchmark
                  if (s := self.score(model, t)) is not None]
        return sum(scores) / len(scores) if scores else None

    def records(self) -> list[dict[str, Any]]:
        """One dict per evaluation, in order: model, task, split, main_score with its 95 %
        interval (``main_low``, ``main_high``), each baseline's main score (``majority``,
        ``chance``, ``copy``) and every metric."""
        return [{"model": r.model_name, "task": r.task.name, "split": r.split, "main_score": r.main_score,
                 **_bounds(r), **r.main_baselines(), **r.metrics} for r in self.results]

    def interval(self, model: str, task: "str | Task") -> Any:
        """The 95 % `Interval` of `model`'s main score on `task`, or `None`."""
        found = self.result(model, task)
        return None if found is None else found.main_interval

    def versus_best(self, model: str, task: "str | Task") -> Any:
        """`model`'s main score on `task` against the best model's there (`lmkit.compare`, paired
        on the same examples): a `MetricComparison` (``.significant``), or `None` for the best
        model itself, a missing result, or results on different examples."""
        task = get_task(task)  # a user's own task (a TOML file, a `Task`) is in no registry: pass it on
        scored = {m: r for m in self.models if (r := self.result(m, task)) is not None}
        if model not in scored or len(scored) < 2:
            return None
        pick = max if getattr(_shape_of(scored), "higher_is_better", True) else min
        best = pick(scored.values(), key=lambda r: r.main_score)
        found = scored[model]
        if found is best:
            return None
        key = (id(best), id(found))
        if key not in self._compared:
            from lmkit.evaluation.compare import compare

            try:
                self._compared[key] = compare(best, found)[main_of(found.metrics)[0]]
            except DataError:
                self._compared[key] = None
        return self._compared[key]

    def baseline_rows(self) -> tuple[list[str], list[list[float | None]]]:
        """``(row labels, rows)`` of the baselines' main scores, in the columns of `table`
        (``"baseline: majority"``, ...): the same examples scored without a model."""
        kinds: dict[str, dict[str, float]] = {}
        for r in self.results:  # the latest result of a task holds its examples' baselines
            for kind, value in r.main_baselines().items():
                kinds.setdefault(kind, {})[r.task.name] = value
        labels, rows = [], []
        for kind, by_task in kinds.items():
            cells = [by_task.get(t.name) for t in self.tasks]
            averages = []
            for b in self.benchmarks:
                found = [v for t, v in zip(self.tasks, cells) if t.benchmark == b and v is not None]
                averages.append(sum(found) / len(found) if found else None)
            labels.append(f"{_BASELINE}{kind}")
            rows.append(cells + averages)
        return labels, rows

    def table(self) -> tuple[list[str], list[list[float | None]]]:
        """The board as ``(column names, one row of cells per model)``: each task's main score,
        then each benchmark's average (``"GLUE avg"``); `None` where there is no result."""
        columns = [t.name for t in self.tasks] + [f"{b} avg" for b in self.benchmarks]
        rows = [[self.score(m, t) for t in self.tasks] + [self.average(m, b) for b in self.benchmarks]
                for m in self.models]
        return columns, rows

    def to_dataframe(self, wide: bool = True) -> Any:
        """The board as a pandas DataFrame (pandas is optional: ``pip install pandas``).

        `wide`: a row per model (index ``model``) with each task's main score, every metric as
        ``task:metric``, and the benchmark averages. Otherwise one row per evaluation (`records`).
        """
        import pandas as pd

        if not wide:
            return pd.DataFrame(self.records())
        columns, cells = self.table()
        rows = []
        for model, values in zip(self.models, cells):
            row = dict(zip(columns, values))
            for task in self.tasks:
                found = self.result(model, task)
                row.update({f"{task.name}:{k}": v for k, v in (found.metrics if found else {}).items()})
            rows.append(row)
        return pd.DataFrame(rows, index=pd.Index(self.models, name="model"), dtype=float)

    def to_text(self) -> str:
        """The board as a plain-text table (what ``print(board)`` shows)."""
        if not self.results:
            return "no results yet"
        columns, rows = self.table()
        cells = [["model", *columns]] + [
            [m, *("–" if v is None else f"{v:.4f}" + ("*" if self._partial(m, i) else "")
                  for i, v in enumerate(row))] for m, row in zip(self.models, rows)]
        cells += [[name, *row] for name, _, row in self._extra_rows()]
        widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
        text = "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                         for line in cells)
        return text + "\n" + _INTERVAL_NOTE + ("\n" + _PARTIAL_NOTE if self._any_partial() else "")

    def _extra_rows(self) -> list[tuple[str, str, list[str]]]:
        """The rows under the models' rows, as ``(label, css class, cells)``: each model's 95 %
        intervals of its task scores (``95% lm``), then each baseline's scores."""
        rows = []
        for model in self.models:
            found = [self.interval(model, t) for t in self.tasks]
            if any(found):
                rows.append((f"{_INTERVAL}{model}", "lmkit-interval",
                             ["–" if i is None else f"[{i.low:.3f}, {i.high:.3f}]" for i in found]
                             + [""] * len(self.benchmarks)))
        for model in self.models:
            tested = [self.versus_best(model, t) for t in self.tasks]
            if any(tested):
                rows.append((f"{_VERSUS}{model}", "lmkit-significance",
                             ["–" if c is None else f"p={c.p_value:.3f}" + ("" if c.significant else " ≈")
                              for c in tested] + [""] * len(self.benchmarks)))
        names, baselines = self.baseline_rows()
        rows += [(name, "lmkit-baseline", ["–" if v is None else f"{v:.4f}" for v in row])
                 for name, row in zip(names, baselines)]
        return rows

    def _partial(self, model: str, column: int) -> bool:
        """Whether the cell in `column` of `model`'s row is a task's partial result."""
        found = self.result(model, self.tasks[column]) if column < len(self.tasks) else None
        return found is not None and found.partial

    def _any_partial(self) -> bool:
        return any(self._partial(m, i) for m in self.models for i in range(len(self.tasks)))

    def to_html(self) -> str:
        """The board as an HTML table (benchmark averages in bold), as notebooks show it; under
        the models' rows, their scores' 95 % intervals and the baselines' rows."""
        if not self.results:
            return "<i>no results yet</i>"
        columns, rows = self.table()
        averaged = len(self.tasks)  # the columns after the tasks are averages
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = []
        for model, row in zip(self.models, rows):
            cells = "".join("<td>–</td>" if v is None else f"<td><b>{v:.4f}</b></td>" if i >= averaged
                            else f"<td class='lmkit-partial' title='{_PARTIAL_NOTE}'>{v:.4f}*</td>"
                            if self._partial(model, i) else f"<td>{v:.4f}</td>" for i, v in enumerate(row))
            body.append(f"<tr><th>{html.escape(model)}</th>{cells}</tr>")
        body += [f"<tr class='{css}'><th>{html.escape(name)}</th>"
                 + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
                 for name, css, cells in self._extra_rows()]
        note = f"<div class='lmkit-interval-note'>{html.escape(_INTERVAL_NOTE)}</div>"
        if self._any_partial():
            note += f"<div class='lmkit-partial-note'>{_PARTIAL_NOTE}</div>"
        return f"<table class='lmkit-eval-table'><tr><th>model</th>{head}</tr>{''.join(body)}</table>{note}"

    def to_tsv(self) -> str:
        """The board as tab-separated values: a row per model (each task's main score, the
        benchmark averages), then each model's 95 % intervals as two rows (``95% low: lm``,
        ``95% high: lm``), then the baselines' rows."""
        columns, rows = self.table()

        def number(v: float | None) -> str:
            return "" if v is None else f"{v:.6f}"

        lines = ["\t".join(["model", *columns])]
        lines += ["\t".join([m, *map(number, r)]) for m, r in zip(self.models, rows)]
        blank = [""] * len(self.benchmarks)
        for model in self.models:
            found = [self.interval(model, t) for t in self.tasks]
            if any(found):
                lines += ["\t".join([f"95% {side}: {model}", *("" if i is None else number(getattr(i, side))
                                                               for i in found), *blank]) for side in ("low", "high")]
        lines += ["\t".join([name, *map(number, r)]) for name, r in zip(*self.baseline_rows())]
        return "\n".join(lines) + "\n"

    def to_json(self, path: str | Path | None = None) -> str:
        """Every result (`EvalResult.to_dict`, with confusion matrices) as JSON; also written to
        `path` when given."""
        text = json.dumps([r.to_dict() for r in self.results], indent=2)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return self.to_html()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython's text rendering
        printer.text(self.to_text())


def evaluate_runs(
    runs: "Mapping[str, Any] | Sequence[Any]", tasks: "Sequence[str | Task]",
    data: "str | Path | None" = None, *, reporters: Sequence[Reporter] = (),
    stop: StopSignal | None = None, keep_going: bool = False, board: Leaderboard | None = None,
    **options: Any,
) -> Leaderboard:
    """Evaluate every run on every task (`lmkit.evaluate` once per pair) into a `Leaderboard`.

    `runs` are `Run` objects, run directories or ``"scratch"``: a mapping name → run labels the
    rows with its names; a sequence keeps the names `lmkit.evaluate` gives (the run directory's
    name, ``scratch-<arch>``). One run or one task may also be given alone. `data` is a data folder holding the tasks' data, found in it by
    `find_task_data` (``data/glue/``, ``data/imdb/``, or `data` itself), or ``None`` / ``"hf"``
    for the Hugging Face Hub. `options` are `EvalConfig` keys for every evaluation.

    `reporters` receive an `EvaluationStartEvent` and an `EvaluationEndEvent` around each pair,
    and the fine-tuning events in between. `stop` ends the current fine-tuning at a step
    boundary and skips the pairs not started. An `LmkitError` (bad data, a bad option) is raised
    at once, unless `keep_going`: then it is added to `board.failures` and the next pair runs.
    Results are added to `board` when given (a notebook panel keeps one across calls).

    >>> board = evaluate_runs(["runs/lstm-1", "scratch"], ["glue/sst2", "imdb"], "data/",
    ...                       max_steps=300, reporters=[print])                 # doctest: +SKIP
    >>> board.to_dataframe()                                                   # doctest: +SKIP
    """
    from lmkit.evaluation.evaluator import evaluate

    if isinstance(runs, (str, Path)) or not isinstance(runs, (Mapping, Sequence)):
        runs = [runs]  # one run alone
    if isinstance(tasks, (str, Task)):
        tasks = [tasks]
    board = Leaderboard() if board is None else board
    named = isinstance(runs, Mapping)
    labelled = list(runs.items()) if named else [(_label(r), r) for r in runs]
    pairs = [(name, run, get_task(task)) for name, run in labelled for task in tasks]
    if not keep_going:  # a missing data folder fails now, not after the first fine-tuning
        for task in {t.name: t for _, _, t in pairs}.values():
            _task_data(task, data)
    for index, (name, run, task) in enumerate(pairs, start=1):
        if stop is not None and stop.is_set():
            break
        _emit(reporters, EvaluationStartEvent(name, task.name, index, len(pairs)))
        try:
            result = evaluate(run, task=task, data=_task_data(task, data), reporters=reporters, stop=stop,
                              **options)
        except LmkitError as exc:
            _emit(reporters, EvaluationEndEvent(name, task.name, error=str(exc)))
            if not keep_going:
                raise
            board.failures.append((name, task.name, str(exc)))
            continue
        if named:
            result.model_name = name
        board.results.append(result)
        _emit(reporters, EvaluationEndEvent(name, task.name, result))
    return board


def _label(run: Any) -> str:
    """How progress events name a run given without a name: its path as typed, or its directory."""
    return str(run) if isinstance(run, (str, Path)) else str(getattr(run, "dir", type(run).__name__))


def _task_data(task: Task, data: "str | Path | None") -> "str | Path | None":
    return data if data is None or is_hub(data) else find_task_data(task, data)


def _emit(reporters: Sequence[Reporter], event: Event) -> None:
    for report in reporters:
        report(event)
