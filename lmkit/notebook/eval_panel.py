"""The evaluation widget: pick runs and tasks, Run, watch progress, compare scores across runs.

>>> from lmkit.notebook import EvalPanel
>>> panel = EvalPanel(namespace=globals(), data="data/")      # doctest: +SKIP
>>> panel                                                      # shows the controls  # doctest: +SKIP
>>> panel.to_dataframe()                                       # one row per run and task  # doctest: +SKIP

The panel is a view of a `Leaderboard`: Run calls `lmkit.api.evaluate_runs` (one
`lmkit.evaluate` per (run, task), the same as ``lmkit eval``) into the panel's `Leaderboard`,
and Run suite calls `lmkit.api.evaluate_suite` (every task of GLUE or SuperGLUE
found under the data folder, the same as ``lmkit eval --suite``) into the same board; its table
(a row per run: each task's main score and the benchmark averages) is shown as results arrive; the confusion matrix of the latest classification result is drawn below it. The
Stop button ends the current fine-tuning at a step boundary.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from lmkit.api import (SCRATCH, SUITES, EvalResult, EvaluationEndEvent, EvaluationStartEvent, Leaderboard,
                       evaluate_runs, evaluate_suite)
from lmkit.engine.events import EndEvent, StartEvent, StepEvent, StopSignal
from lmkit.notebook.charts import LIVE
from lmkit.notebook.static_copy import StaticCopy

__all__ = ["EvalPanel", "find_runs", "confusion_svg", "suite_for"]


def find_runs(namespace: dict[str, Any] | None) -> dict[str, Any]:
    """Variables of `namespace` that hold lmkit runs or pretrained checkpoints (`lmkit.Run`,
    `lmkit.pretrained.Pretrained`: not an `EvalResult`, which also carries a model and a
    tokenizer but is no language model to fine-tune)."""
    from lmkit.api import Pretrained, Run

    return {name: value for name, value in (namespace or {}).items()
            if not name.startswith("_") and isinstance(value, (Run, Pretrained))}


def pretrained_names() -> dict[str, str]:
    """The named checkpoints plugins register (``minilm-l6``...), each evaluated by its name."""
    from lmkit.api import list_entries

    return {entry.name: entry.name for entry in list_entries("pretrained")}


def suite_for(data: str | Path) -> str:
    """The suite a data folder holds: ``superglue`` for a SuperGLUE folder (or one holding
    ``superglue/`` and no ``glue/``), else ``glue``."""
    folder = Path(data) if str(data) else None
    if folder is None or not folder.is_dir():
        return "glue"
    if (folder / "glue").is_dir():
        return "glue"
    superglue = ("BoolQ", "CB", "COPA", "MultiRC", "ReCoRD", "WiC", "WSC")  # RTE: in GLUE too
    return "superglue" if (folder / "superglue").is_dir() or any((folder / t).is_dir() for t in superglue) \
        else "glue"


def confusion_svg(matrix: list[list[int]], labels: list[str], title: str = "", cell: int = 46) -> str:
    """A confusion matrix as an SVG heat map (rows: true label, columns: prediction).

    Labels are in JupyterLab's theme colours (`LIVE`), so they read in the light and the dark
    theme; each count is white or black, whichever contrasts more with its cell's fixed colour.
    """
    n = len(labels)
    left, top = 90, 52  # room for the title, "prediction →" and the column labels, one row each
    peak = max(max(row) for row in matrix) or 1
    text, muted = LIVE.text, LIVE.muted
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="lmkit-confusion" width="{left + n * cell + 10}" '
             f'height="{top + n * cell + 24}" font-family="sans-serif" font-size="11">',
             f'<text class="lmkit-confusion-title" x="4" y="14" font-size="12" font-weight="bold" '
             f'style="fill:{text}">{html.escape(title)}</text>',
             f'<text class="lmkit-confusion-axis" x="{left}" y="{top - 22}" style="fill:{muted}">prediction →</text>']
    for j, name in enumerate(labels):
        parts.append(f'<text class="lmkit-confusion-label" x="{left + j * cell + cell // 2}" y="{top - 6}" '
                     f'text-anchor="middle" style="fill:{text}">{html.escape(name[:8])}</text>')
    for i, row in enumerate(matrix):
        parts.append(f'<text class="lmkit-confusion-label" x="4" y="{top + i * cell + cell // 2 + 4}" '
                     f'style="fill:{text}">{html.escape(labels[i][:12])}</text>')
        for j, count in enumerate(row):
            shade = int(255 - 180 * count / peak)
            fill = f"#{shade:02x}{shade:02x}ff"
            parts.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                         f'fill="{fill}" style="stroke:{LIVE.grid}"/>'
                         f'<text class="lmkit-confusion-count" x="{left + j * cell + cell // 2}" '
                         f'y="{top + i * cell + cell // 2 + 4}" text-anchor="middle" '
                         f'fill="{_ink_on(fill)}">{count}</text>')
    parts.append(f'<text class="lmkit-confusion-axis" x="4" y="{top + n * cell + 16}" '
                 f'style="fill:{muted}">rows: true label</text></svg>')
    return "".join(parts)


def _ink_on(colour: str) -> str:
    """``#000000`` or ``#ffffff``, whichever contrasts more with `colour` (``#rrggbb``; WCAG)."""
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#000000" if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else "#ffffff"


class EvalPanel(widgets.VBox):
    """Evaluate runs from the notebook namespace on tasks, through `lmkit.evaluate`.

    `namespace` (usually ``globals()``) is searched for `Run` objects each time the panel is
    refreshed; `runs` adds named runs or run directories explicitly. ``"scratch"`` is always
    offered. `data` is a data folder (``data/glue``, ``data/imdb``: see
    `lmkit.evaluation.loaders.find_task_data`), empty for the Hugging Face Hub; the suite picker
    follows it (SuperGLUE for a SuperGLUE folder, else GLUE). The budget of each fine-tuning is
    `max_steps`, or `epochs` over the task's training set when given, and at most `max_seconds`
    when given (the Steps, Epochs and Seconds boxes; 0 means unset). `options` are other
    `EvalConfig` keys passed to every evaluation. Results accumulate in `board`.
    """

    def __init__(self, namespace: dict[str, Any] | None = None, runs: dict[str, Any] | None = None,
                 tasks: tuple[str, ...] = ("glue/sst2",), data: str | Path = "", max_steps: int = 300,
                 epochs: float | None = None, max_seconds: float | None = None,
                 **options: Any) -> None:
        from lmkit.api import list_tasks

        self.namespace = namespace
        self.extra_runs = dict(runs or {})
        self.options = options
        self.board = Leaderboard()
        self.copy = StaticCopy()
        self._last_failed = False
        self.stop_signal = StopSignal()
        self.run_picker = widgets.SelectMultiple(description="Runs", rows=4)
        self.task_picker = widgets.SelectMultiple(options=[entry.name for entry in list_tasks()], value=tuple(tasks),
                                                  description="Tasks", rows=6)
        self.data = widgets.Text(value=str(data), description="Data", placeholder="GLUE / aclImdb folder",
                                 layout=widgets.Layout(width="60%"))
        self.budget = widgets.IntText(value=max_steps, description="Steps")
        self.epochs = widgets.BoundedFloatText(value=epochs or 0, min=0, max=1000, step=0.5,
                                               description="Epochs", tooltip="0: use Steps")
        self.max_seconds = widgets.BoundedFloatText(value=max_seconds or 0, min=0, max=1e6, step=30,
                                                    description="Seconds",
                                                    tooltip="time budget per fine-tuning; 0: none")
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.suite_picker = widgets.Dropdown(options=list(SUITES), value=suite_for(data), description="Suite")
        self.suite_button = widgets.Button(description="Run suite", icon="list",
                                           tooltip="every task of the suite found under Data")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.refresh_button = widgets.Button(description="Refresh runs", icon="refresh")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="")
        self.status = widgets.HTML("")
        self.table = widgets.HTML(self.board.to_html())
        self.plot = widgets.HTML("")
        self.run_button.on_click(lambda _b: self._click(self.run))
        self.suite_button.on_click(lambda _b: self._click(self.run_suite))
        self.stop_button.on_click(lambda _b: self.stop_signal.set())
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.data.observe(lambda change: setattr(self.suite_picker, "value", suite_for(change["new"])),
                          names="value")
        super().__init__([
            widgets.HBox([self.run_picker, self.task_picker]),
            self.data, widgets.HBox([self.budget, self.epochs, self.max_seconds]),
            widgets.HBox([self.run_button, self.stop_button, self.refresh_button]),
            widgets.HBox([self.suite_picker, self.suite_button]),
            widgets.HBox([self.progress, self.status]), self.table, self.plot,
        ])
        self.add_class("lmkit-eval-panel")
        self.refresh()

    # -- choices ------------------------------------------------------------------------------
    def available_runs(self) -> dict[str, Any]:
        """Name -> run (or run directory, pretrained checkpoint or its registered name, or
        'scratch') for everything the panel can evaluate."""
        return {**find_runs(self.namespace), **self.extra_runs, **pretrained_names(),
                SCRATCH: SCRATCH}

    def refresh(self) -> None:
        """Re-read the namespace for runs, keeping the current selection where possible."""
        selected = self.run_picker.value
        names = list(self.available_runs())
        self.run_picker.options = names
        self.run_picker.value = tuple(n for n in selected if n in names) or (names[0],)

    # -- running ------------------------------------------------------------------------------
    def run(self, runs: tuple[str, ...] | None = None, tasks: tuple[str, ...] | None = None) -> list[EvalResult]:
        """Evaluate every selected run on every selected task; returns the new `EvalResult`s.

        Errors a user can fix (data, options) are shown in the status line and the next pair runs;
        any other error is shown there too, then raised.
        """
        tasks = tuple(tasks or self.task_picker.value)
        return self._evaluate(runs, lambda named, **common: evaluate_runs(named, tasks, **common))

    def run_suite(self, suite: str | None = None, runs: tuple[str, ...] | None = None,
                  tasks: "Sequence[str] | None" = None) -> list[EvalResult]:
        """Evaluate every selected run on every task of `suite` (the picker's: ``glue`` or
        ``superglue``; only `tasks` of it when given) found under the data folder; returns the
        new `EvalResult`s. The table gains the suite's average; the suite's tasks without data
        are listed in the status line.
        """
        suite = suite or self.suite_picker.value
        self.board.skipped = []
        new = self._evaluate(runs, lambda named, **common: evaluate_suite(named, suite, tasks=tasks, **common))
        if self.board.skipped and not self._last_failed:
            self.status.value += html.escape("; skipped: " + ", ".join(f"{t} ({why})" for t, why in self.board.skipped))
        return new

    def _evaluate(self, runs: tuple[str, ...] | None, evaluate: Any) -> list[EvalResult]:
        """Call ``evaluate(named_runs, data=..., reporters=..., ...)`` into the board, the
        buttons disabled meanwhile; errors go to the status line."""
        from lmkit.notebook.kernel_pump import WidgetPump

        available = self.available_runs()
        names = tuple(runs or self.run_picker.value)
        before = len(self.board.results)
        self.stop_signal.clear()
        self._last_failed = False
        self._busy(True)
        try:
            with WidgetPump.for_current_kernel() as pump:
                evaluate({name: available[name] for name in names}, data=self.data.value or None,
                         reporters=[self._on_event, lambda _e: pump.pump()], stop=self.stop_signal,
                         keep_going=True, board=self.board, **self.budget_options(), **self.options)
        except Exception as exc:  # a button callback has no cell output: say it here
            self._last_failed = True
            self.status.value = (f"<span class='lmkit-error' style='color:var(--jp-error-color1, #b00)'>"
                                 f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</span>")
            raise
        finally:
            self._busy(False)
        new = self.board.results[before:]
        if new and not self._last_failed:
            self.status.value = f"done: {len(new)} evaluation(s)"
        return new

    def budget_options(self) -> dict[str, Any]:
        """The `EvalConfig` budget keys the Steps, Epochs and Seconds boxes describe."""
        return {"max_steps": self.budget.value,
                **({"epochs": self.epochs.value} if self.epochs.value > 0 else {}),
                **({"max_seconds": self.max_seconds.value} if self.max_seconds.value > 0 else {})}

    def _busy(self, busy: bool) -> None:
        self.run_button.disabled = self.suite_button.disabled = busy
        self.stop_button.disabled = not busy

    def _click(self, action: Any) -> None:
        try:
            action()
        except Exception:  # noqa: BLE001 - already shown in the status line, which is where the user looks
            pass

    @property
    def results(self) -> list[EvalResult]:
        """Every result so far, in order (``board.results``)."""
        return self.board.results

    def _on_event(self, event: Any) -> None:
        if isinstance(event, EvaluationStartEvent):
            self.status.value = f"{html.escape(event.model)} on {html.escape(event.task)}: preparing…"
        elif isinstance(event, EvaluationEndEvent):
            self._last_failed = event.result is None
            if event.result is None:
                self.status.value = (f"<span class='lmkit-error' style='color:var(--jp-error-color1, #b00)'>"
                                     f"{html.escape(event.error)}</span>")
            else:
                self._show()
        elif isinstance(event, StartEvent):
            self.progress.max, self.progress.value = max(event.total_steps, 1), 0
            self.status.value = f"fine-tuning {html.escape(event.run_dir)}"
        elif isinstance(event, StepEvent):
            self.progress.value = event.step
            self.status.value = f"step {event.step}/{event.total_steps}  loss {event.loss:.4f}"
        elif isinstance(event, EndEvent):
            self.progress.value = self.progress.max if event.reason == "completed" else event.step
            self.status.value = f"fine-tuning {event.reason} at step {event.step}; scoring…"

    def _show(self) -> None:
        self.table.value = self.board.to_html()
        last = next((r for r in reversed(self.results) if r.confusion_matrix is not None), None)
        if last is not None:
            self.plot.value = confusion_svg(last.confusion_matrix.tolist(), list(last.task.display_labels),
                                            f"{last.model_name} · {last.task.name} ({last.split})")
        self.copy.update(self.table.value + self.plot.value, self.board.to_text())

    def _ipython_display_(self) -> None:
        # a saved notebook keeps the table and the matrix, not only the controls (StaticCopy)
        self.copy.show(self, hide=[self.table, self.plot])

    # -- export -------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One dict per (run, task): model, task, split, main_score and every metric."""
        return self.board.records()

    def to_dataframe(self) -> Any:
        """The results as a pandas DataFrame (one row per run and task); ``board.to_dataframe()``
        has a row per run."""
        return self.board.to_dataframe(wide=False)

    def to_json(self, path: str | Path | None = None) -> str:
        """The results (with confusion matrices) as JSON; also written to `path` when given."""
        return self.board.to_json(path)
