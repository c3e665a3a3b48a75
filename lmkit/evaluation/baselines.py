"""Baselines beside every score: what a model that learned nothing would get on the same examples.

* ``majority``: every example gets the most frequent label of the scored split (tasks whose
  labels are classes);
* ``chance``: a uniform guess among the classes, or among each example's own candidates (the
  mean over `DRAWS` seeded guesses); for regression, the labels shuffled (a guess drawn from
  the labels' own distribution);
* ``copy``: the source text as the prediction (text-to-text tasks).

Each baseline is scored by the task's own scorer (`Shape.score`), so it has every metric the
model's score has.

>>> baselines_of(result)                                  # doctest: +SKIP
{'majority': {'f1': 0.81, 'accuracy': 0.68, ...}, 'chance': {'f1': 0.58, 'accuracy': 0.5, ...}}
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["baselines_of", "DRAWS"]

#: seeded guesses averaged for the chance baseline
DRAWS = 10


def baselines_of(result: Any, seed: int | None = None) -> dict[str, dict[str, float]]:
    """The baselines of `result` (an `EvalResult` with its scored examples), each a dict of
    metric -> value; empty when the task has none that apply."""
    task, labels, examples = result.task, np.asarray(result.labels), result.examples
    rng = np.random.default_rng(int(result.config.get("seed", 0)) if seed is None else seed)

    def score(predictions: np.ndarray) -> dict[str, float]:
        return {k: float(v) for k, v in task.shape.score(task, result.split, predictions, labels, examples).items()
                if isinstance(v, (int, float))}

    def chance(draw: Any) -> dict[str, float]:
        scored = [score(draw()) for _ in range(DRAWS)]
        return {k: float(np.mean([s[k] for s in scored])) for k in scored[0]}

    if not len(labels) or (task.metric_inputs is not None and examples is None):
        return {}  # nothing scored, or a scorer that needs the examples (MultiRC's groups) without them
    if task.shape.has("class_labels"):
        values, counts = np.unique(labels, return_counts=True)
        majority = np.full_like(labels, values[np.argmax(counts)])
        return {"majority": score(majority),
                "chance": chance(lambda: rng.integers(0, len(task.labels), len(labels)))}
    if task.shape.has("own_choices") and examples is not None:
        widths = np.array([max(len(examples.record(i).get("choices", ())), 1) for i in range(len(examples))])
        return {"chance": chance(lambda: (rng.random(len(labels)) * widths).astype(np.int64))}
    if labels.dtype.kind == "f" and labels.ndim == 1:  # scores (STS-B); not a perplexity task's sizes
        return {"chance": chance(lambda: rng.permutation(labels))}
    if labels.dtype.kind == "O" and examples is not None and examples.text_b is not None:  # source -> target
        return {"copy": score(np.asarray(examples.text_a, dtype=object))}
    return {}
