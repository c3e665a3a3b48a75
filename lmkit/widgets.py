"""lmkit's notebook widgets in one place.

>>> from lmkit.widgets import Dashboard, GenerateWidget, EvalPanel   # doctest: +SKIP

`Dashboard` renders training events (pass it to `lmkit.train(reporters=[...])`),
`GenerateWidget` samples from a run, `EvalPanel` runs and shows an evaluation. Each is imported
on first access, so this module is cheap to import.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Dashboard", "GenerateWidget", "EvalPanel"]

_HOMES = {
    "Dashboard": "lmkit.notebook.dashboard",
    "GenerateWidget": "lmkit.notebook.generate",
    "EvalPanel": "lmkit.notebook.eval_panel",
}


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module 'lmkit.widgets' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
