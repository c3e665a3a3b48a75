"""lmkit: train and evaluate language models from Jupyter.

>>> import lmkit
>>> run = lmkit.train(arch="lstm", max_steps=200)          # doctest: +SKIP
>>> print(run.generate("ROMEO:", max_new_tokens=50))        # doctest: +SKIP

Importing lmkit is cheap: Keras and JAX are imported on first use of the API, so that
``%load_ext lmkit`` and ``lmkit --help`` start fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from lmkit._lazy import lazy_exports

__version__ = "0.1.0"

# JAX is lmkit's default backend (Keras's own default is TensorFlow). An explicit KERAS_BACKEND
# wins; this must run before anything imports keras, which is why it lives here.
os.environ.setdefault("KERAS_BACKEND", "jax")

# public name -> module that defines it; resolved on first attribute access (PEP 562).
_LAZY = {
    "train": "lmkit.api",
    "load": "lmkit.api",
    "evaluate": "lmkit.api",
    "evaluate_runs": "lmkit.api",
    "compare": "lmkit.api",
    "export": "lmkit.api",
    "evaluate_suite": "lmkit.api",
    "lr_find": "lmkit.api",
    "sweep": "lmkit.api",
    "open_model": "lmkit.api",
    "info": "lmkit.api",
    "list_components": "lmkit.api",
    "from_pretrained": "lmkit.api",
    "list_architectures": "lmkit.api",
    "list_optimizers": "lmkit.api",
    "list_schedules": "lmkit.api",
    "list_losses": "lmkit.api",
    "list_metrics": "lmkit.api",
    "list_tokenizers": "lmkit.api",
    "list_tasks": "lmkit.api",
    "TrainConfig": "lmkit.config",
    "Run": "lmkit.training.run",
    "StopSignal": "lmkit.engine.events",
    "LmkitError": "lmkit.errors",
    "ConfigError": "lmkit.errors",
    "DataError": "lmkit.errors",
    "RegistryError": "lmkit.errors",
    "RunError": "lmkit.errors",
    "TrainingDiverged": "lmkit.errors",
    "ExportError": "lmkit.errors",
}

__all__ = [*_LAZY, "load_ipython_extension", "unload_ipython_extension", "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from lmkit.api import (compare, evaluate, evaluate_runs, evaluate_suite, export, from_pretrained, info,
                           list_architectures, list_components, list_losses, list_metrics,
                           list_optimizers, list_schedules, list_tasks, list_tokenizers, load,
                           lr_find, open_model, sweep, train)
    from lmkit.config import TrainConfig
    from lmkit.errors import (ConfigError, DataError, ExportError, LmkitError, RegistryError,
                              RunError, TrainingDiverged)
    from lmkit.training.run import Run
    from lmkit.engine.events import StopSignal


# submodules reachable as attributes after a bare `import lmkit` (imported on first access)
_SUBMODULES = {"registry", "config", "errors", "notebook", "models", "generation", "evaluation"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, _SUBMODULES)


def _attach_notebook_view() -> None:
    """Inside IPython, show a `Run` as HTML also without ``%load_ext lmkit`` (cheap: the view is
    registered by class name and imported when a run is first displayed)."""
    import sys

    ipython = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    if ipython is not None and hasattr(ipython, "display_formatter"):
        from lmkit.notebook.display import attach

        attach(ipython)


_attach_notebook_view()


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext lmkit`: register the magics (imports neither Keras nor JAX)."""
    from lmkit.notebook.extension import load_ipython_extension as register

    register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext lmkit`: remove the magics."""
    from lmkit.notebook.extension import unload_ipython_extension as unregister

    unregister(ipython)
