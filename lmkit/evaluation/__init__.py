"""Downstream evaluation: GLUE, SuperGLUE, IMDb, Multi30K and users' tasks (a data source plus a
shape), loaders, fine-tuned heads, zero-shot likelihood scoring, whole-benchmark suites,
`evaluate` metrics.

>>> import lmkit
>>> result = lmkit.evaluate("runs/lstm-1", task="glue/sst2", data="glue_data")   # doctest: +SKIP
>>> result.metrics                                                              # doctest: +SKIP
{'accuracy': 0.81}

Importing this package is cheap; Keras and JAX load when a model is fine-tuned.
"""

from __future__ import annotations

from lmkit._lazy import lazy_exports

__all__ = ["evaluate", "evaluate_runs", "compare", "evaluate_suite", "Leaderboard", "EvalResult", "EvalConfig", "Task", "get_task",
           "TableSource", "Classification", "Regression", "Generation", "load_split", "find_task_data", "load_metric"]

_HOMES = {
    "evaluate": "lmkit.evaluation.evaluator",
    "evaluate_runs": "lmkit.evaluation.leaderboard",
    "compare": "lmkit.evaluation.compare",
    "evaluate_suite": "lmkit.evaluation.suites",
    "Leaderboard": "lmkit.evaluation.leaderboard",
    "find_task_data": "lmkit.evaluation.loaders",
    "EvalResult": "lmkit.evaluation.result",
    "EvalConfig": "lmkit.config",
    "Task": "lmkit.evaluation.tasks",
    "get_task": "lmkit.evaluation.tasks",
    "TableSource": "lmkit.evaluation.sources",
    "Classification": "lmkit.evaluation.shapes",
    "Regression": "lmkit.evaluation.shapes",
    "Generation": "lmkit.evaluation.shapes",
    "load_split": "lmkit.evaluation.loaders",
    "load_metric": "lmkit.evaluation.metrics",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
