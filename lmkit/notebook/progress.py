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
from typing import Any

from lmkit.engine.events import Reporter, StopSignal

__all__ = ["training_reporters", "in_kernel"]

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
def training_reporters(stop: StopSignal) -> Iterator[list[Reporter] | None]:
    """Reporters for `lmkit.train` (None: its text progress); widgets live while inside."""
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

    dashboard = Dashboard(stop)
    dashboard.show()
    with WidgetPump.for_current_kernel() as pump:
        def pump_widgets(_event: Any) -> None:
            pump.pump()

        yield [dashboard, pump_widgets]
