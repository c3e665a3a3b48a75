"""lmkit's notebook widgets in one place.

>>> from lmkit.widgets import Dashboard, GenerateWidget, EvalPanel   # doctest: +SKIP

`Dashboard` renders training events (pass it to `lmkit.train(reporters=[...])`),
`GenerateWidget` samples from a run, `EvalPanel` runs and shows an evaluation. Each is imported
on first access, so this module is cheap to import.
"""

from __future__ import annotations

from lmkit._lazy import lazy_exports

__all__ = ["Dashboard", "GenerateWidget", "EvalPanel"]

_HOMES = {
    "Dashboard": "lmkit.notebook.dashboard",
    "GenerateWidget": "lmkit.notebook.generate",
    "EvalPanel": "lmkit.notebook.eval_panel",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
