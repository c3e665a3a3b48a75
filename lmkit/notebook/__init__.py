"""lmkit in Jupyter: the IPython extension, its magics, and the widgets.

``%load_ext lmkit`` registers the magics (`lmkit.notebook.magics`). The widgets are imported
from here; importing this package stays cheap, since ipywidgets, Keras and JAX load when a
widget is first used:

- `Dashboard`: live training progress, curves and a Stop button; a reporter for
  ``lmkit.train(reporters=[Dashboard()])`` (`lmkit.notebook.dashboard`);
- `GenerateWidget`: a prompt and sampling controls for a trained run, what `%lmgenerate --ui` shows
  (`lmkit.notebook.generate`);
- `EvalPanel`: pick runs and tasks, evaluate them, compare the scores
  (`lmkit.notebook.eval_panel`).

>>> from lmkit.notebook import Dashboard, EvalPanel, GenerateWidget
>>> GenerateWidget(run)                                          # doctest: +SKIP
>>> EvalPanel(namespace=globals(), data="data/")                 # doctest: +SKIP
"""

from __future__ import annotations

from lmkit.api import lazy_exports

__all__ = ["Dashboard", "GenerateWidget", "EvalPanel"]

_LAZY = {
    "Dashboard": "lmkit.notebook.dashboard",
    "GenerateWidget": "lmkit.notebook.generate",
    "EvalPanel": "lmkit.notebook.eval_panel",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
