"""The evaluation widget: pick runs and tasks, Run, watch progress, compare scores across runs.

>>> from lmkit.widgets import EvalPanel
>>> panel = EvalPanel(namespace=globals(), data="data/")      # doctest: +SKIP
>>> panel                                                      # shows the controls  # doctest: +SKIP
>>> panel.to_dataframe()                                       # one row per run and task  # doctest: +SKIP

Each (run, task) pair is one call of `lmkit.evaluate`, the same call as ``lmkit eval``. The
results table has a GLUE-style row per run (each task's main score, and their mean over GLUE
tasks), so runs sit side by side; the confusion matrix of the latest classification result is
drawn below it. The Stop button ends the current fine-tuning at a step boundary.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from lmkit.engine.events import EndEvent, StartEvent, StepEvent, StopSignal

__all__ = ["EvalPanel", "find_runs", "task_data", "results_table_html", "confusion_svg"]

SCRATCH = "scratch"


def find_runs(namespace: dict[str, Any] | None) -> dict[str, Any]:
    """Variables of `namespace` that hold lmkit runs (objects with a model, tokenizer and config)."""
    return {name: value for name, value in (namespace or {}).items()
            if not name.startswith("_") and all(hasattr(value, a) for a in ("model", "tokenizer", "config"))}


def task_data(task_name: str, root: str | Path) -> Path:
    """The folder under `root` that holds `task_name`'s data: `root` itself, or its ``glue/`` /
    ``imdb/`` sub-folder, so one data folder serves GLUE tasks and IMDb alike."""
    from lmkit.evaluation.loaders import detect_layout
    from lmkit.evaluation.tasks import get_task

    root = Path(root).expanduser()
    task = get_task(task_name)
    names = ("glue", "GLUE", "glue_data") if task.glue is not None else ("imdb", "aclImdb")
    wanted = ("glue", "parquet", "hf_disk") if task.glue is not None else ("imdb", "parquet", "hf_disk")
    for candidate in (root, *(root / n for n in names)):
        if candidate.is_dir() and detect_layout(candidate) in wanted:
            return candidate
    return root  # the loader's error then says what layout was expected


def results_table_html(rows: list[dict[str, Any]]) -> str:
    """A table with one row per model and one column per task (main scores), plus the GLUE mean."""
    if not rows:
        return "<i>no results yet</i>"
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    score = {(r["model"], r["task"]): r["main_score"] for r in rows}
    glue_tasks = [t for t in tasks if t.startswith("glue/")]
    head = "".join(f"<th>{html.escape(t)}</th>" for t in tasks) + ("<th>GLUE avg</th>" if glue_tasks else "")
    body = []
    for model in models:
        cells = "".join(f"<td>{score[(model, t)]:.4f}</td>" if (model, t) in score else "<td>–</td>"
                        for t in tasks)
        if glue_tasks:
            have = [score[(model, t)] for t in glue_tasks if (model, t) in score]
            cells += f"<td><b>{sum(have) / len(have):.4f}</b></td>" if have else "<td>–</td>"
        body.append(f"<tr><th>{html.escape(model)}</th>{cells}</tr>")
    return (f"<table class='lmkit-eval-table'><tr><th>model</th>{head}</tr>{''.join(body)}</table>")


def confusion_svg(matrix: list[list[int]], labels: list[str], title: str = "", cell: int = 46) -> str:
    """A confusion matrix as an SVG heat map (rows: true label, columns: prediction)."""
    n = len(labels)
    left, top = 90, 40
    peak = max(max(row) for row in matrix) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="lmkit-confusion" width="{left + n * cell + 10}" '
             f'height="{top + n * cell + 24}" font-family="sans-serif" font-size="11">',
             f'<text x="4" y="14" font-size="12" font-weight="bold">{html.escape(title)}</text>',
             f'<text x="{left}" y="{top - 16}">prediction →</text>']
    for j, name in enumerate(labels):
        parts.append(f'<text x="{left + j * cell + 4}" y="{top - 4}">{html.escape(name[:8])}</text>')
    for i, row in enumerate(matrix):
        parts.append(f'<text x="4" y="{top + i * cell + cell // 2 + 4}">{html.escape(labels[i][:12])}</text>')
        for j, count in enumerate(row):
            shade = int(255 - 180 * count / peak)
            ink = "#fff" if shade < 150 else "#000"
            parts.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                         f'fill="rgb({shade},{shade},255)" stroke="#fff"/>'
                         f'<text x="{left + j * cell + cell // 2}" y="{top + i * cell + cell // 2 + 4}" '
                         f'text-anchor="middle" fill="{ink}">{count}</text>')
    parts.append(f'<text x="4" y="{top + n * cell + 16}">rows: true label</text></svg>')
    return "".join(parts)


class EvalPanel(widgets.VBox):
    """Evaluate runs from the notebook namespace on tasks, through `lmkit.evaluate`.

    `namespace` (usually ``globals()``) is searched for `Run` objects each time the panel is
    refreshed; `runs` adds named runs or run directories explicitly. ``"scratch"`` is always
    offered. `options` are `EvalConfig` keys passed to every evaluation.
    """

    def __init__(self, namespace: dict[str, Any] | None = None, runs: dict[str, Any] | None = None,
                 tasks: tuple[str, ...] = ("glue/sst2",), data: str | Path = "", max_steps: int = 300,
                 **options: Any) -> None:
        from lmkit.registry import tasks as task_registry

        self.namespace = namespace
        self.extra_runs = dict(runs or {})
        self.options = options
        self.results: list[Any] = []
        self.stop_signal = StopSignal()
        self.run_picker = widgets.SelectMultiple(description="Runs", rows=4)
        self.task_picker = widgets.SelectMultiple(options=list(task_registry), value=tuple(tasks),
                                                  description="Tasks", rows=6)
        self.data = widgets.Text(value=str(data), description="Data", placeholder="GLUE / aclImdb folder",
                                 layout=widgets.Layout(width="60%"))
        self.budget = widgets.IntText(value=max_steps, description="Steps")
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.refresh_button = widgets.Button(description="Refresh runs", icon="refresh")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="")
        self.status = widgets.HTML("")
        self.table = widgets.HTML(results_table_html([]))
        self.plot = widgets.HTML("")
        self.run_button.on_click(lambda _b: self.run())
        self.stop_button.on_click(lambda _b: self.stop_signal.set())
        self.refresh_button.on_click(lambda _b: self.refresh())
        super().__init__([
            widgets.HBox([self.run_picker, self.task_picker]),
            self.data, self.budget,
            widgets.HBox([self.run_button, self.stop_button, self.refresh_button]),
            widgets.HBox([self.progress, self.status]), self.table, self.plot,
        ])
        self.add_class("lmkit-eval-panel")
        self.refresh()

    # -- choices ------------------------------------------------------------------------------
    def available_runs(self) -> dict[str, Any]:
        """Name -> run (or run directory, or 'scratch') for every run the panel can evaluate."""
        return {**find_runs(self.namespace), **self.extra_runs, SCRATCH: SCRATCH}

    def refresh(self) -> None:
        """Re-read the namespace for runs, keeping the current selection where possible."""
        selected = self.run_picker.value
        names = list(self.available_runs())
        self.run_picker.options = names
        self.run_picker.value = tuple(n for n in selected if n in names) or (names[0],)

    # -- running ------------------------------------------------------------------------------
    def run(self, runs: tuple[str, ...] | None = None, tasks: tuple[str, ...] | None = None) -> list[Any]:
        """Evaluate every selected run on every selected task; returns the new `EvalResult`s."""
        import lmkit
        from lmkit.errors import LmkitError
        from lmkit.notebook.kernel_pump import WidgetPump

        available = self.available_runs()
        runs = tuple(runs or self.run_picker.value)
        tasks = tuple(tasks or self.task_picker.value)
        self.stop_signal.clear()
        self.run_button.disabled, self.stop_button.disabled = True, False
        new: list[Any] = []
        try:
            with WidgetPump.for_current_kernel() as pump:
                for name in runs:
                    for task in tasks:
                        if self.stop_signal.is_set():
                            break
                        self.status.value = f"{html.escape(name)} on {html.escape(task)}: preparing…"
                        try:
                            result = lmkit.evaluate(
                                available[name], task=task, data=task_data(task, self.data.value) if self.data.value else None,
                                max_steps=self.budget.value, stop=self.stop_signal,
                                reporters=[self._on_event, lambda _e: pump.pump()], **self.options)
                        except LmkitError as exc:
                            self.status.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
                            continue
                        result.model_name = name
                        new.append(result)
                        self.results.append(result)
                        self._show()
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True
        if new and not self.status.value.startswith("<span"):
            self.status.value = f"done: {len(new)} evaluation(s)"
        return new

    def _on_event(self, event: Any) -> None:
        if isinstance(event, StartEvent):
            self.progress.max, self.progress.value = max(event.total_steps, 1), 0
            self.status.value = f"fine-tuning {html.escape(event.run_dir)}"
        elif isinstance(event, StepEvent):
            self.progress.value = event.step
            self.status.value = f"step {event.step}/{event.total_steps}  loss {event.loss:.4f}"
        elif isinstance(event, EndEvent):
            self.progress.value = self.progress.max if event.reason == "completed" else event.step
            self.status.value = f"fine-tuning {event.reason} at step {event.step}; scoring…"

    def _show(self) -> None:
        self.table.value = results_table_html(self.rows())
        last = next((r for r in reversed(self.results) if r.confusion_matrix is not None), None)
        if last is not None:
            self.plot.value = confusion_svg(last.confusion_matrix.tolist(), list(last.task.display_labels),
                                            f"{last.model_name} · {last.task.name} ({last.split})")

    # -- export -------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One dict per (run, task): model, task, split, main_score and every metric."""
        return [{"model": r.model_name, "task": r.task.name, "split": r.split, "main_score": r.main_score,
                 **r.metrics} for r in self.results]

    def to_dataframe(self) -> Any:
        """The results as a pandas DataFrame (one row per run and task)."""
        import pandas as pd

        return pd.DataFrame(self.rows())

    def to_json(self, path: str | Path | None = None) -> str:
        """The results (with confusion matrices) as JSON; also written to `path` when given."""
        text = json.dumps([r.to_dict() for r in self.results], indent=2)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text
