"""Downstream evaluation: GLUE and IMDb tasks, loaders, fine-tuned heads, `evaluate` metrics.

>>> import lmkit
>>> result = lmkit.evaluate("runs/lstm-1", task="glue/sst2", data="glue_data")   # doctest: +SKIP
>>> result.metrics                                                              # doctest: +SKIP
{'accuracy': 0.81}

Importing this package is cheap; Keras and JAX load when a model is fine-tuned.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["evaluate", "EvalResult", "EvalConfig", "Task", "get_task", "load_split", "load_metric"]

_HOMES = {
    "evaluate": "lmkit.evaluation.api",
    "EvalResult": "lmkit.evaluation.result",
    "EvalConfig": "lmkit.evaluation.config",
    "Task": "lmkit.evaluation.tasks",
    "get_task": "lmkit.evaluation.tasks",
    "load_split": "lmkit.evaluation.loaders",
    "load_metric": "lmkit.evaluation.metrics",
}


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module 'lmkit.evaluation' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
