"""lmkit in Jupyter: the IPython extension, its magics and widgets.

``%load_ext lmkit`` registers the magics (`lmkit.notebook.magics`); the widgets live in
`lmkit.notebook.dashboard` (training) and `lmkit.notebook.generate` (text generation), and are
also importable from `lmkit.widgets`. Importing this package stays cheap: ipywidgets, Keras and
JAX load when a widget is first made.

>>> from lmkit.notebook import generate_widget
>>> generate_widget(run)                # doctest: +SKIP
"""

from __future__ import annotations

from lmkit._lazy import lazy_exports

__all__ = ["Dashboard", "GenerateWidget", "generate_widget"]

_LAZY = {
    "Dashboard": "lmkit.notebook.dashboard",
    "GenerateWidget": "lmkit.notebook.generate",
    "generate_widget": "lmkit.notebook.generate",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
