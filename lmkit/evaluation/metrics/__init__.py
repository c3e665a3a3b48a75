"""Metrics as Hugging Face `evaluate` modules shipped inside lmkit, loaded by local path.

Loading by path never touches the network (no Hub look-up), so they work offline::

    >>> accuracy = load_metric("accuracy")                                  # doctest: +SKIP
    >>> accuracy.compute(predictions=[1, 0], references=[1, 1])             # doctest: +SKIP
    {'accuracy': 0.5}
    >>> load_metric("glue", "mrpc").compute(predictions=[1], references=[1])  # doctest: +SKIP
    {'f1': 1.0, 'accuracy': 1.0, 'combined_score': 1.0}
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from lmkit.errors import RegistryError, did_you_mean

__all__ = ["METRICS", "metric_path", "metric_module", "load_metric", "preload"]

_HERE = Path(__file__).resolve().parent

#: names of the shipped metric modules
METRICS: tuple[str, ...] = tuple(sorted(p.name for p in _HERE.iterdir() if (p / f"{p.name}.py").is_file()))


def metric_path(name: str) -> Path:
    """The folder of the shipped `evaluate` module `name`."""
    key = name.lower()
    if key not in METRICS:
        raise RegistryError(
            f"unknown evaluation metric '{name}'{did_you_mean(key, METRICS)}. "
            f"Available: {', '.join(METRICS)}."
        )
    return _HERE / key


def metric_module(name: str) -> Any:
    """The Python module of the shipped metric `name`, imported from lmkit's own package:
    ``evaluate.load(path)`` would copy it into ``HF_HOME/modules`` and import that copy, which
    anyone able to write there could have replaced. Its functions beside the `evaluate` module
    (`resampler`) are reached through it."""
    key = metric_path(name).name
    pending = _PRELOADS.pop(key, None)
    if pending is not None:  # its failure, if any, is raised again below, on this thread
        pending.join()
    return _import(key)


def _import(key: str) -> Any:
    import importlib

    from lmkit.paths import check_hf_home

    check_hf_home()  # importing evaluate puts HF_HOME/modules on sys.path
    return importlib.import_module(f"{__name__}.{key}.{key}")


#: metric modules being imported by `preload`, by name
_PRELOADS: dict[str, threading.Thread] = {}


def preload(name: str) -> None:
    """Start importing the shipped metric `name` on a background thread; `metric_module` and
    `load_metric` wait for it.

    Why: the modules import `evaluate`, which imports `transformers`' pipelines and with them
    PyTorch where those are installed: 4–5 s on a 2-core machine. Started when the scored split's
    outputs are computed (`lmkit.evaluation.evaluator`), the import overlaps that work: a MiniLM
    fine-tuning on 2,000 SST-2 rows ended 1.5 s sooner (three alternated pairs, docs/notes). Not
    earlier: beside the training step's compilation or its steps, the import slows the training
    more than it saves. An error stays for `metric_module` to raise where the metric is used.

    >>> preload("accuracy")                                                 # doctest: +SKIP
    """
    import sys

    key = metric_path(name).name  # an unknown name is refused now, not later
    if key in _PRELOADS or f"{__name__}.{key}.{key}" in sys.modules:
        return

    def run() -> None:
        try:
            _import(key)
        except Exception:  # noqa: BLE001 - raised again by the caller's own import
            pass

    thread = threading.Thread(target=run, name=f"lmkit-preload-{key}", daemon=True)
    _PRELOADS[key] = thread
    thread.start()


def load_metric(name: str, config_name: str | None = None, **kwargs: Any) -> Any:
    """The shipped metric `name` (an `evaluate.EvaluationModule`, from `metric_module`). Scores
    are kept in memory."""
    from lmkit.paths import cache_dir

    module = metric_module(name)  # first: it checks HF_HOME before evaluate is imported
    import evaluate

    cls = next(v for v in vars(module).values() if isinstance(v, type)
               and issubclass(v, evaluate.EvaluationModule) and v.__module__ == module.__name__)
    kwargs.setdefault("keep_in_memory", True)
    kwargs.setdefault("cache_dir", str(cache_dir() / "metrics"))
    return cls(config_name=config_name, **kwargs)
