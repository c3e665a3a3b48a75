"""Choose how a training run started from IPython shows its progress.

In a Jupyter kernel with ipywidgets installed: the `Dashboard`, with widget messages pumped
between steps so that its Stop button works while the cell runs. Elsewhere (terminal IPython,
``LMKIT_PROGRESS=text``) or without ipywidgets (after one warning): `lmkit.train`'s own text
progress. A kernel run by nbconvert/nbclient gets the dashboard too; its saved output carries an
HTML and a text rendering of the final state besides the widget.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from lmkit.engine.events import EndEvent, Event, Reporter, StartEvent, StopSignal

__all__ = ["training_reporters", "evaluation_reporters", "EvaluationProgress", "in_kernel"]

_warned_no_widgets = False


def in_kernel() -> bool:
    """Whether code runs in a Jupyter kernel that can display widgets."""
    if os.environ.get("LMKIT_PROGRESS", "").lower() == "text":
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


@contextmanager
def training_reporters(stop: StopSignal, title: str | None = None) -> Iterator[list[Reporter] | None]:
    """Reporters for `lmkit.train` (None: its text progress); widgets live while inside.
    `title` names the run on the dashboard (the variable it is bound to)."""
    global _warned_no_widgets
    if not in_kernel():
        yield None
        return
    try:
        from lmkit.notebook.dashboard import Dashboard
    except ImportError as exc:
        if not _warned_no_widgets:
            _warned_no_widgets = True
            warnings.warn(f"lmkit: ipywidgets is not available ({exc}); showing text progress "
                          f"instead of the dashboard. `pip install ipywidgets` to get it.",
                          stacklevel=4)
        yield None
        return
    from lmkit.notebook.kernel_pump import WidgetPump

    dashboard = Dashboard(stop, title=title)
    dashboard.show()
    with WidgetPump.for_current_kernel() as pump:
        def pump_widgets(_event: Any) -> None:
            pump.pump()

        yield [dashboard, pump_widgets]


class EvaluationProgress:
    """What ``%lmeval`` shows while `evaluate_runs` works: a line when each (run, task) pair
    starts, its fine-tuning's progress (`make_reporter(title)` for each, `title` such as
    ``"mine on glue/sst2"``: the dashboard in a kernel, text elsewhere), a line while the dev
    split is scored, and the pair's score or error.

    >>> progress = EvaluationProgress(lambda title: None)  # doctest: +SKIP
    >>> evaluate_runs(runs, tasks, data, reporters=[progress])  # doctest: +SKIP
    """

    def __init__(self, make_reporter: Any, stream: IO[str] | None = None) -> None:
        self.make_reporter = make_reporter
        self.stream = stream
        self._current: Reporter | None = None
        self._title = ""

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __call__(self, event: Event) -> None:
        from lmkit.api import EvaluationEndEvent, EvaluationStartEvent

        if isinstance(event, EvaluationStartEvent):
            self._title = f"{event.model} on {event.task}"
            self._say(f"lmkit: evaluating {event.model} on {event.task} ({event.index}/{event.total}): "
                      f"reading the data and preparing the model…")
        elif isinstance(event, EvaluationEndEvent):
            if event.result is None:
                self._say(f"lmkit: {event.model} on {event.task} failed: {event.error}")
            else:
                result = event.result
                shown = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
                partial = (f"  (partial: fine-tuning {result.training['reason']} at step "
                           f"{result.training.get('steps')})" if result.partial else "")
                self._say(f"lmkit: {event.model} on {event.task}: {shown}{partial}")
            self._current = None
        else:
            if isinstance(event, StartEvent):
                self._current = self.make_reporter(self._title)
            if self._current is not None:
                self._current(event)
            if isinstance(event, EndEvent):
                self._say("lmkit: scoring the evaluation split…")


@contextmanager
def evaluation_reporters(stop: StopSignal) -> Iterator[list[Reporter]]:
    """Reporters for ``%lmeval`` (`EvaluationProgress`); in a kernel each fine-tuning gets a
    dashboard whose Stop button works while the cell runs."""
    from lmkit.api import TextReporter

    try:
        from lmkit.notebook.dashboard import Dashboard
    except ImportError:  # no ipywidgets: text progress
        Dashboard = None  # type: ignore[assignment,misc]  # noqa: N806
    if not in_kernel() or Dashboard is None:
        yield [EvaluationProgress(lambda _title: TextReporter())]
        return
    from lmkit.notebook.kernel_pump import WidgetPump

    def dashboard(title: str) -> Dashboard:
        shown = Dashboard(stop, title=title)
        shown.show()
        return shown

    with WidgetPump.for_current_kernel() as pump:
        yield [EvaluationProgress(dashboard), lambda _event: pump.pump()]
