"""The live training dashboard: a reporter that renders training events as ipywidgets.

It shows a progress bar with step / total, epoch, elapsed time and ETA; live curves of train and
validation loss and perplexity; tokens per second, learning rate, backend and devices; a Stop
button; and, at the end, a summary with a generated sample. The state comes from the events
only (see `lmkit.engine.events`); the dashboard renders it.

``%%lmtrain`` uses it through `lmkit.notebook.progress.training_reporters`, which also lets widget
messages through while the cell runs (without that, a click on Stop waits until training ends):

>>> stop = StopSignal()                                                      # doctest: +SKIP
>>> with training_reporters(stop) as reporters:                              # doctest: +SKIP
...     run = lmkit.train(max_steps=300, reporters=reporters, stop=stop)
"""

from __future__ import annotations

import html
import math
import time
from typing import Any

import ipywidgets as widgets

from lmkit.api import format_duration
from lmkit.engine.events import (CheckpointEvent, EndEvent, EvalEvent, Event, StartEvent,
                                   StepEvent, StopSignal)
from lmkit.notebook.charts import LIVE, Palette, Series, line_chart, smooth, static_palette

__all__ = ["Dashboard"]

_FINAL_KEYS = ("loss", "val_loss", "val_perplexity", "val_bits_per_char", "val_accuracy")
_CLEAN = ("completed", "early_stopping", "time_budget")
_TABLE_ROWS = 10  # evaluations shown under the curves (the best one too, when older)
#: how each `EndEvent.reason` reads in a title or on the button
REASONS = {"completed": "completed", "early_stopping": "stopped early (validation stopped improving)",
           "time_budget": "time budget reached", "stopped": "stopped", "interrupted": "interrupted",
           "terminated": "terminated", "diverged": "diverged"}
_BUTTON = {"completed": "Finished", "early_stopping": "Stopped early", "time_budget": "Time's up"}


def _reason(reason: str) -> str:
    return REASONS.get(reason, reason.replace("_", " "))


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # beyond e^50 the number says nothing more


class Dashboard:
    """A training reporter drawn with ipywidgets; call `show()` to display it.

    `stop` is the `StopSignal` handed to `lmkit.train`; the Stop button sets it. Redraws are
    throttled to `refresh` seconds, except for evaluations and the end. `title` names what
    trains (``%%lmtrain -o NAME``'s variable, ``"mine on glue/sst2"``); by default the
    architecture. When training ends the output is replaced by a static picture of the final
    state (`static_bundle`: SVG, and PNG when matplotlib is installed, transparent, in the ink of
    JupyterLab's theme), which a saved notebook shows trusted or not, with or without the
    widget state.
    """

    def __init__(self, stop: StopSignal | None = None, refresh: float = 0.25,
                 title: str | None = None) -> None:
        self.stop = stop if stop is not None else StopSignal()
        self.refresh = refresh
        self.title = title
        self.train_points: list[tuple[float, float]] = []
        self.val_points: list[tuple[float, float]] = []
        self.val_ppl_points: list[tuple[float, float]] = []
        #: the metric judging the training (`StartEvent.monitor`); a task's score (``val_bleu``,
        #: higher is better) replaces the perplexity chart
        self.monitor = "val_loss"
        #: the loss is per token (a perplexity means something); a classifier's is not
        self.token_loss = True
        self.metric_points: list[tuple[float, float]] = []
        self.evaluations: list[dict[str, float]] = []
        self.total_steps = 0
        self.last_step: StepEvent | None = None
        self.end: EndEvent | None = None
        self._start_event: StartEvent | None = None
        self._drawn = 0.0
        self._handle: Any = None

        self.header = widgets.HTML("lmkit: preparing training…")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, bar_style="info",
                                            layout=widgets.Layout(width="40%"))
        self.progress.add_class("lmkit-progress")
        self.progress_text = widgets.HTML("")
        self.progress_text.add_class("lmkit-progress-text")
        self.stats = widgets.HTML("")
        half = widgets.Layout(width="50%")
        self.loss_chart = widgets.HTML(layout=half)
        self.loss_chart.add_class("lmkit-loss-chart")
        self.ppl_chart = widgets.HTML(layout=half)
        self.ppl_chart.add_class("lmkit-ppl-chart")
        self.stop_button = widgets.Button(description="Stop", icon="stop", button_style="danger",
                                          tooltip="End training at the next step boundary, "
                                                  "write a checkpoint and keep the run")
        self.stop_button.add_class("lmkit-stop")
        self.stop_button.on_click(self._on_stop)
        self.log_scale = widgets.ToggleButton(value=False, description="log scale", icon="line-chart",
                                              tooltip="Draw the y axes on a log scale")
        self.log_scale.add_class("lmkit-log-scale")
        self.log_scale.observe(lambda _change: self._draw_charts(), names="value")
        self._draw_charts()
        self.eval_table = widgets.HTML("")
        self.eval_table.add_class("lmkit-eval-table")
        self.summary = widgets.HTML("")
        self.summary.add_class("lmkit-summary")
        self.widget = widgets.VBox([
            self.header,
            widgets.HBox([self.progress, self.progress_text]),
            self.stats,
            widgets.HBox([self.loss_chart, self.ppl_chart], layout=widgets.Layout(width="100%")),
            widgets.HBox([self.stop_button, self.log_scale]),
            self.eval_table,
            self.summary,
        ], layout=widgets.Layout(width="100%"))
        self.widget.add_class("lmkit-dashboard")

    # -- display ------------------------------------------------------------------------------
    def show(self) -> None:
        """Display the dashboard in the current cell output."""
        from IPython.display import display

        self._handle = display(self._bundle(), raw=True, display_id=True)

    def _bundle(self) -> dict[str, Any]:
        """The live widget plus HTML and text renderings (nbconvert, frontends without widgets)."""
        bundle = dict(self.widget._repr_mimebundle_())
        bundle["text/plain"] = self.text()
        bundle["text/html"] = self.html()
        return bundle

    def static_bundle(self) -> dict[str, Any]:
        """The final state as a picture, with no widget and no HTML.

        JupyterLab shows ``image/svg+xml`` in a trusted notebook and ``image/png`` (safe) in an
        untrusted one, where it would sanitize an HTML rendering into run-on text; a widget
        whose state was not saved would show a broken-link icon instead.
        """
        bundle: dict[str, Any] = {"text/plain": self.text(), "image/svg+xml": self.picture()}
        png = self.picture_png()
        if png is not None:
            bundle["image/png"] = png
        return bundle

    def text(self) -> str:
        """A one-paragraph text rendering of the current state."""
        if self.end is not None:
            return f"lmkit: training {_reason(self.end.reason)} at step {self.end.step} after " \
                   f"{format_duration(self.end.elapsed)}"
        if self.last_step is not None:
            return f"lmkit: step {self.last_step.step}/{self.total_steps}, loss {self.last_step.loss:.4f}"
        return "lmkit: training dashboard"

    def html(self) -> str:
        """A static HTML rendering (header, curves, evaluations, summary) of the current state."""
        return (f"<div>{self.header.value}<br>{self.progress_text.value}<br>{self.stats.value}"
                f"<div style='display:flex'>{self._loss_svg()}{self._ppl_svg()}</div>"
                f"{self.eval_table.value}{self.summary.value}</div>")

    def picture(self, palette: Palette | None = None) -> str:
        """The curves, the evaluation table and the summary as one SVG with fixed colours on a
        transparent background (`palette`: default `static_palette()`, the theme's ink)."""
        palette = palette or static_palette()
        width, chart_h = 960, 260
        rows = self._picture_rows()
        height = 30 + chart_h + 18 * len(rows) + 16
        title = html.escape(self._title_text())
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                 f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
                 f'<text x="10" y="20" font-size="14" font-weight="bold" fill="{palette.text}">{title}</text>',
                 f'<svg x="0" y="30" width="480" height="{chart_h}">{self._loss_svg(palette, fluid=False)}</svg>',
                 f'<svg x="480" y="30" width="480" height="{chart_h}">{self._ppl_svg(palette, fluid=False)}</svg>']
        for i, row in enumerate(rows):
            y = 30 + chart_h + 18 * (i + 1)
            weight = ' font-weight="bold"' if i == 0 else ""
            parts.append(f'<text x="52" y="{y}" fill="{palette.text}" font-family="monospace"{weight} '
                         f'xml:space="preserve">{html.escape(row)}</text>')
        parts.append("</svg>")
        return "".join(parts)

    def picture_png(self, palette: Palette | None = None) -> bytes | None:
        """The curves and the summary as a transparent PNG (matplotlib) in `palette`'s ink, or
        None without matplotlib."""
        try:
            import matplotlib
        except ImportError:
            return None
        import io

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        ink = palette or static_palette()
        rows = self._picture_rows()
        fig = Figure(figsize=(9.6, 2.6 + 0.2 * len(rows)), dpi=100)
        top = 2.6 / (2.6 + 0.2 * len(rows))
        fig.suptitle(self._title_text(), x=0.01, ha="left", fontsize=11, fontweight="bold", color=ink.text)
        log = self.log_scale.value
        charts = [("loss", self.train_points, self.val_points), self._second_chart()]
        for i, (title, raw, val) in enumerate(c for c in charts if c[0]):
            ax = fig.add_axes((0.06 + 0.5 * i, 1 - top * 0.88, 0.42, top * 0.64))
            if raw:
                ax.plot(*zip(*raw), color=ink.train, alpha=0.3, linewidth=1)
                ax.plot(*zip(*smooth(raw)), color=ink.train, linewidth=2, label="train")
            if val:
                ax.plot(*zip(*val), color=ink.val, marker="o", markersize=3, linewidth=2, label="val")
            ax.set_title(title, loc="left", fontsize=10, color=ink.text)
            ax.set_xlabel("step", fontsize=9, color=ink.muted)
            ax.tick_params(labelsize=8, colors=ink.muted)
            ax.grid(color=ink.grid)
            ax.set_facecolor("none")
            for spine in ax.spines.values():
                spine.set_color(ink.frame)
            if log:
                ax.set_yscale("log")
            if raw or val:
                ax.legend(fontsize=8, loc="upper right", frameon=False, labelcolor=ink.text)
        for i, row in enumerate(rows):
            fig.text(0.06, (1 - top) * (1 - (i + 0.8) / max(len(rows), 1)), row, family="monospace",
                     fontsize=9, fontweight="bold" if i == 0 else "normal", color=ink.text)
        out = io.BytesIO()
        fig.savefig(out, format="png", transparent=True)
        return out.getvalue()

    def _title_text(self) -> str:
        event = self._start_event
        name = self.title or (event.arch if event else "training")
        state = (f"{_reason(self.end.reason)} at step {self.end.step} after "
                 f"{format_duration(self.end.elapsed)}" if self.end else "")
        return f"lmkit · {name} · {state}".rstrip(" ·")

    def _picture_rows(self) -> list[str]:
        """The evaluation table as fixed-width text lines (header first)."""
        if not self.evaluations:
            return []
        keys = [k for k in self.evaluations[-1] if k != "step"]
        widths = [max(10, len(k) + 2) for k in keys]
        header = "step".rjust(7) + "".join(k.rjust(w) for k, w in zip(keys, widths))
        best = self._best_step()
        lines = [header]
        for row in self._shown_evaluations():
            mark = " ← best" if row["step"] == best else ""
            lines.append(f"{row['step']:>7.0f}" + "".join(
                f"{row[k]:>{w}.4f}" if isinstance(row.get(k), float) else " " * w
                for k, w in zip(keys, widths)) + mark)
        return lines

    # -- the reporter -------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        if isinstance(event, StartEvent):
            self._start(event)
        elif isinstance(event, StepEvent):
            self.last_step = event
            self.total_steps = event.total_steps
            self.train_points.append((event.step, event.loss))
            if time.monotonic() - self._drawn >= self.refresh:
                self._draw()
        elif isinstance(event, EvalEvent):
            if self.monitor != "val_loss" and self.monitor in event.metrics:
                self.metric_points.append((event.step, float(event.metrics[self.monitor])))
            val = event.metrics.get("val_loss")
            if val is not None:
                self.val_points.append((event.step, val))
                ppl = event.metrics.get("val_perplexity", _perplexity(val))
                self.val_ppl_points.append((event.step, ppl))
            train = smooth(self.train_points)
            self.evaluations.append({"step": float(event.step),
                                     **({"train_loss": train[-1][1]} if train else {}),
                                     **event.metrics})
            self._draw()
        elif isinstance(event, CheckpointEvent):
            self.header.value = self._header_text(f"checkpoint at step {event.step}")
        elif isinstance(event, EndEvent):
            self.end = event
            self._finish(event)

    def _start(self, event: StartEvent) -> None:
        self.total_steps = event.total_steps
        self._start_event = event
        self.monitor = event.monitor
        self.token_loss = event.token_loss
        self.progress.max = max(event.total_steps, 1)
        self.progress.value = event.start_step
        self.header.value = self._header_text()
        # the first dispatch traces and compiles the step: seconds with nothing else to show
        self.progress_text.value = "compiling the training step…"
        self._draw()

    def _header_text(self, note: str = "") -> str:
        event = self._start_event
        if event is None:
            return "lmkit"
        resumed = f", resuming at step {event.start_step}" if event.start_step else ""
        extra = f" · {html.escape(note)}" if note else ""
        # a fine-tuning without a folder reports its name ("lstm-… on glue/sst2") as run_dir and
        # arch: say what trains once, an architecture's registry name (one word) beside a title
        name = self.title or event.arch
        arch = f"{html.escape(event.arch)}, " if self.title and " " not in event.arch else ""
        folder = f" · <code>{html.escape(event.run_dir)}</code>" if event.run_dir not in (
            event.arch, self.title) else ""
        return (f"<b>lmkit</b> · <b>{html.escape(name)}</b> ({arch}{event.parameters:,} parameters) on "
                f"<b>{html.escape(event.backend)}</b> [{html.escape(event.devices)}] · "
                f"{event.tokens_per_step:,} tokens/step{folder}{resumed}{extra}")

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        step = self.last_step
        if step is not None:
            self.progress.max = max(step.total_steps, 1)
            self.progress.value = min(step.step, self.progress.max)
            # no ETA once a stop is asked for or training ended: nothing more is coming
            eta = ("" if self.end is not None or self.stop.is_set()
                   else " · ETA …" if step.eta is None else f" · ETA {format_duration(step.eta)}")
            self.progress_text.value = (
                f"step <b>{step.step}</b> / {step.total_steps} · epoch {step.epoch:.2f} · "
                f"{format_duration(step.elapsed)} elapsed{eta}")
            val = f" · val loss <b>{self.val_points[-1][1]:.4f}</b>" if self.val_points else ""
            ppl = f" (perplexity {_perplexity(step.loss):.2f})" if self.token_loss else ""
            rate = ("measuring" if step.tokens_per_second is None  # the first dispatch compiles
                    else f"{step.tokens_per_second:,.0f}")
            self.stats.value = (
                f"loss <b>{step.loss:.4f}</b>{ppl}{val} · "
                f"{rate} tokens/s · learning rate {step.learning_rate:.3g}")
        self._draw_charts()
        self.eval_table.value = self._eval_table_html()

    def _draw_charts(self) -> None:
        self.loss_chart.value = self._loss_svg()
        self.ppl_chart.value = self._ppl_svg()

    def _best_step(self) -> float | None:
        if self.monitor != "val_loss":
            return max(self.metric_points, key=lambda p: p[1])[0] if self.metric_points else None
        return min(self.val_points, key=lambda p: p[1])[0] if self.val_points else None

    def _second_chart(self) -> tuple[str, list[tuple[float, float]], list[tuple[float, float]]]:
        """Title, train and validation points of the right-hand chart: the perplexity of a
        language model, or the task's own score of a fine-tuning that scores while it trains;
        no chart (an empty title) for a classifier's loss, whose exponential means nothing."""
        if self.monitor != "val_loss":
            return self.monitor.removeprefix("val_"), [], self.metric_points
        if not self.token_loss:
            return "", [], []
        return "perplexity", [(x, _perplexity(y)) for x, y in self.train_points], self.val_ppl_points

    def _curves(self, raw: list[tuple[float, float]], val: list[tuple[float, float]], title: str,
                palette: Palette, fluid: bool, higher_is_better: bool = False) -> str:
        best = (max if higher_is_better else min)(val, key=lambda p: p[1]) if val else None
        train = [Series("train-raw", raw, "train", faint=True), Series("train", smooth(raw), "train")] if raw else []
        return line_chart([*train, *([Series("val", val, "val", markers=True)] if val else [])],
                          title=title, log_y=self.log_scale.value,  # x: up to the last step, readable early on
                          best=best, palette=palette, fluid=fluid)

    def _loss_svg(self, palette: Palette = LIVE, fluid: bool = True) -> str:
        return self._curves(self.train_points, self.val_points, "loss", palette, fluid)

    def _ppl_svg(self, palette: Palette = LIVE, fluid: bool = True) -> str:
        title, train, val = self._second_chart()
        if not title:
            return ""
        return self._curves(train, val, title, palette, fluid, higher_is_better=self.monitor != "val_loss")

    def _shown_evaluations(self) -> list[dict[str, float]]:
        """The last `_TABLE_ROWS` evaluations, after the best one when it is older: the table
        keeps its height however long the run."""
        best = self._best_step()
        recent = self.evaluations[-_TABLE_ROWS:]
        older = [row for row in self.evaluations[:-_TABLE_ROWS] if row["step"] == best]
        return older[-1:] + recent

    def _eval_table_html(self) -> str:
        """The latest evaluations as a table under the curves (and the best one, bold)."""
        if not self.evaluations:
            return ""
        keys = [k for k in self.evaluations[-1] if k != "step"]
        best = self._best_step()
        cell = "text-align:right;padding:1px 0 1px 1.6em"  # numbers right-aligned, columns apart
        head = "".join(f"<th style='{cell}'>{html.escape(k)}</th>" for k in ["step", *keys])
        best_row = " class='lmkit-best-row' style='font-weight:bold'"
        body = "".join(
            f"<tr{best_row if row['step'] == best else ''}><td style='{cell}'>{row['step']:.0f}</td>"
            + "".join(f"<td style='{cell}'>{row[k]:.4f}</td>" if isinstance(row.get(k), float)
                      else "<td></td>" for k in keys)
            + "</tr>" for row in self._shown_evaluations())
        return (f"<table class='lmkit-evaluations' style='font-variant-numeric:tabular-nums;"
                f"border-collapse:collapse'><tr>{head}</tr>{body}</table>")

    def _on_stop(self, _button: Any) -> None:
        self.stop.set("stopped")
        self.stop_button.disabled = True
        self.stop_button.description = "Stopping…"
        self._draw()  # the ETA goes away at once

    def _finish(self, event: EndEvent) -> None:
        self._draw()
        self.progress.bar_style = "success" if event.reason in _CLEAN \
            else ("warning" if event.reason in ("stopped", "interrupted", "terminated") else "danger")
        self.stop_button.disabled = True
        # the red of "Stop" meant "this ends training"; a finished run is not an alarm
        self.stop_button.button_style = "" if event.reason in _CLEAN else "warning"
        self.stop_button.icon = "check" if event.reason in _CLEAN else "stop"
        self.stop_button.description = _BUTTON.get(event.reason, event.reason.capitalize())
        self.header.value = self._header_text(f"training {_reason(event.reason)}")
        self.summary.value = _summary_html(event)
        if self._handle is not None:
            self._handle.update(self.static_bundle(), raw=True)
            sample = event.summary.get("sample")
            hint = event.summary.get("hint")
            if hint or sample:  # text outputs: shown trusted or not, selectable
                from IPython.display import display

                display({"text/plain": (f"hint: {hint}\n\n" if hint else "")
                         + (f"sample:\n{sample}" if sample else "")}, raw=True)


def _summary_html(event: EndEvent) -> str:
    summary = event.summary
    rows = [("reason", _reason(event.reason)), ("steps", str(event.step)),
            ("elapsed", format_duration(event.elapsed))]
    rows += [(k, f"{summary[k]:.4f}") for k in _FINAL_KEYS if isinstance(summary.get(k), float)]
    table = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                    f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in rows)
    hint = summary.get("hint")
    shown_hint = f"<p class='lmkit-hint'><b>hint</b>: {html.escape(hint)}</p>" if hint else ""
    sample = summary.get("sample")
    shown = (f"<div><b>sample</b><pre class='lmkit-sample' style='white-space:pre-wrap'>"
             f"{html.escape(sample)}</pre></div>") if sample else ""
    return f"<table class='lmkit-final'>{table}</table>{shown_hint}{shown}"
