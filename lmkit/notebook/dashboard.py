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

from lmkit.notebook.charts import Series, line_chart
from lmkit.engine.events import (CheckpointEvent, EndEvent, EvalEvent, Event, StartEvent,
                                   StepEvent, StopSignal)
from lmkit.engine.reporters import format_duration

__all__ = ["Dashboard"]

_TRAIN, _VAL = "#1f77b4", "#ff7f0e"
_FINAL_KEYS = ("loss", "val_loss", "val_perplexity", "val_bits_per_char", "val_accuracy")


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # beyond e^50 the number says nothing more


class Dashboard:
    """A training reporter drawn with ipywidgets; call `show()` to display it.

    `stop` is the `StopSignal` handed to `lmkit.train`; the Stop button sets it. Redraws are
    throttled to `refresh` seconds, except for evaluations and the end.
    """

    def __init__(self, stop: StopSignal | None = None, refresh: float = 0.25) -> None:
        self.stop = stop if stop is not None else StopSignal()
        self.refresh = refresh
        self.train_points: list[tuple[float, float]] = []
        self.val_points: list[tuple[float, float]] = []
        self.val_ppl_points: list[tuple[float, float]] = []
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
        self.loss_chart = widgets.HTML(self._loss_svg())
        self.loss_chart.add_class("lmkit-loss-chart")
        self.ppl_chart = widgets.HTML(self._ppl_svg())
        self.stop_button = widgets.Button(description="Stop", icon="stop", button_style="danger",
                                          tooltip="End training at the next step boundary, "
                                                  "write a checkpoint and keep the run")
        self.stop_button.add_class("lmkit-stop")
        self.stop_button.on_click(self._on_stop)
        self.summary = widgets.HTML("")
        self.summary.add_class("lmkit-summary")
        self.widget = widgets.VBox([
            self.header,
            widgets.HBox([self.progress, self.progress_text]),
            self.stats,
            widgets.HBox([self.loss_chart, self.ppl_chart]),
            self.stop_button,
            self.summary,
        ])
        self.widget.add_class("lmkit-dashboard")

    # -- display ------------------------------------------------------------------------------
    def show(self) -> None:
        """Display the dashboard in the current cell output."""
        from IPython.display import display

        self._handle = display(self._bundle(), raw=True, display_id=True)

    def _bundle(self) -> dict[str, Any]:
        """The widget plus HTML and text renderings, for frontends (and saved files) without it."""
        bundle = dict(self.widget._repr_mimebundle_())
        bundle["text/plain"] = self.text()
        bundle["text/html"] = self.html()
        return bundle

    def text(self) -> str:
        """A one-paragraph text rendering of the current state."""
        if self.end is not None:
            return f"lmkit: training {self.end.reason} at step {self.end.step} after " \
                   f"{format_duration(self.end.elapsed)}"
        if self.last_step is not None:
            return f"lmkit: step {self.last_step.step}/{self.total_steps}, loss {self.last_step.loss:.4f}"
        return "lmkit: training dashboard"

    def html(self) -> str:
        """A static HTML rendering (header, curves, summary) of the current state."""
        return (f"<div>{self.header.value}<br>{self.progress_text.value}<br>{self.stats.value}"
                f"<div style='display:flex'>{self._loss_svg()}{self._ppl_svg()}</div>"
                f"{self.summary.value}</div>")

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
            val = event.metrics.get("val_loss")
            if val is not None:
                self.val_points.append((event.step, val))
                ppl = event.metrics.get("val_perplexity", _perplexity(val))
                self.val_ppl_points.append((event.step, ppl))
            self._draw()
        elif isinstance(event, CheckpointEvent):
            self.header.value = self._header_text(f"checkpoint at step {event.step}")
        elif isinstance(event, EndEvent):
            self.end = event
            self._finish(event)

    def _start(self, event: StartEvent) -> None:
        self.total_steps = event.total_steps
        self._start_event = event
        self.progress.max = max(event.total_steps, 1)
        self.progress.value = event.start_step
        self.header.value = self._header_text()
        self._draw()

    def _header_text(self, note: str = "") -> str:
        event = self._start_event
        if event is None:
            return "lmkit"
        resumed = f", resuming at step {event.start_step}" if event.start_step else ""
        extra = f" · {html.escape(note)}" if note else ""
        return (f"<b>lmkit</b> · training <b>{html.escape(event.arch)}</b> "
                f"({event.parameters:,} parameters) on <b>{html.escape(event.backend)}</b> "
                f"[{html.escape(event.devices)}] · {event.tokens_per_step:,} tokens/step · "
                f"<code>{html.escape(event.run_dir)}</code>{resumed}{extra}")

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        step = self.last_step
        if step is not None:
            self.progress.max = max(step.total_steps, 1)
            self.progress.value = min(step.step, self.progress.max)
            self.progress_text.value = (
                f"step <b>{step.step}</b> / {step.total_steps} · epoch {step.epoch:.2f} · "
                f"{format_duration(step.elapsed)} elapsed · ETA {format_duration(step.eta)}")
            val = f" · val loss <b>{self.val_points[-1][1]:.4f}</b>" if self.val_points else ""
            self.stats.value = (
                f"loss <b>{step.loss:.4f}</b> (perplexity {_perplexity(step.loss):.2f}){val} · "
                f"{step.tokens_per_second:,.0f} tokens/s · learning rate {step.learning_rate:.3g}")
        self.loss_chart.value = self._loss_svg()
        self.ppl_chart.value = self._ppl_svg()

    def _loss_svg(self) -> str:
        return line_chart([Series("train", self.train_points, _TRAIN),
                           Series("val", self.val_points, _VAL, markers=True)],
                          title="loss")

    def _ppl_svg(self) -> str:
        train = [(x, _perplexity(y)) for x, y in self.train_points]
        return line_chart([Series("train", train, _TRAIN),
                           Series("val", self.val_ppl_points, _VAL, markers=True)],
                          title="perplexity")

    def _on_stop(self, _button: Any) -> None:
        self.stop.set("stopped")
        self.stop_button.disabled = True
        self.stop_button.description = "Stopping…"

    def _finish(self, event: EndEvent) -> None:
        self._draw()
        self.progress.bar_style = "success" if event.reason in ("completed", "early_stopping") \
            else ("warning" if event.reason in ("stopped", "interrupted") else "danger")
        self.stop_button.disabled = True
        self.stop_button.description = "Finished" if event.reason == "completed" else event.reason.capitalize()
        self.header.value = self._header_text(f"training {event.reason}")
        self.summary.value = _summary_html(event)
        if self._handle is not None:
            self._handle.update(self._bundle(), raw=True)


def _summary_html(event: EndEvent) -> str:
    summary = event.summary
    rows = [("reason", event.reason), ("steps", str(event.step)),
            ("elapsed", format_duration(event.elapsed))]
    rows += [(k, f"{summary[k]:.4f}") for k in _FINAL_KEYS if isinstance(summary.get(k), float)]
    table = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                    f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in rows)
    sample = summary.get("sample")
    shown = (f"<div><b>sample</b><pre class='lmkit-sample' style='white-space:pre-wrap'>"
             f"{html.escape(sample)}</pre></div>") if sample else ""
    return f"<table class='lmkit-final'>{table}</table>{shown}"
