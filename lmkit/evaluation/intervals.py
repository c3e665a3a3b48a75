"""95 % intervals for evaluation scores: Wilson's score interval for accuracy, a seeded percentile
bootstrap over the scored examples for every other metric (F1, MCC, Pearson, Spearman, BLEU,
ROUGE, SuperGLUE's scores, any metric a task names).

A small dev set makes a difference of a few points noise; the interval says how far a score
could move if the same model were scored on another sample of the same size.

>>> wilson(82, 100)                                      # doctest: +ELLIPSIS
Interval(low=0.73..., high=0.88..., method='wilson')
>>> intervals_of(result)["f1"]                           # doctest: +SKIP
Interval(low=0.71, high=0.83, method='bootstrap (1000 resamples, seed 0)')

The metrics lmkit knows (`VECTORIZED`: F1, macro F1, Matthews correlation, Pearson, Spearman) are
recomputed for all resamples at once in NumPy; a shape that keeps statistics of each example
(`Shape.resampler`: BLEU and chrF from each sentence's n-gram counts, ROUGE from its F-measures)
scores each resample from their sums or means, as many resamples; any other metric is recomputed
by the task's own scorer (`Shape.score`) once per resample, with fewer resamples
(`SCORER_RESAMPLES`, fewer still on large splits; the method names the number).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np

from lmkit.errors import DataError

__all__ = ["Interval", "wilson", "bootstrap", "draws", "percentiles", "bootstrap_method", "resampled",
           "hits", "intervals_of", "VECTORIZED", "CONFIDENCE", "RESAMPLES", "SCORER_RESAMPLES"]

CONFIDENCE = 0.95
#: resamples of the vectorized metrics
RESAMPLES = 1000
#: resamples of a metric recomputed by the task's scorer (an `evaluate` module call each), at most
SCORER_RESAMPLES = 200
#: ... and at most this many examples scored over all resamples (ReCoRD's 10,000 queries, a
#: test set decoded for BLEU and ROUGE), but never fewer than `_SCORER_MIN` resamples
_SCORER_BUDGET = 100_000
_SCORER_MIN = 50
#: the most resampled indices held at once (resamples x examples), so a large dev set (QQP's
#: 40 000 pairs) is resampled in chunks rather than in one 300 MB array
_CHUNK = 2_000_000

#: ``statistic(rows) -> {metric: (B,) values}`` for index rows ``(B, n)``
Statistic = Callable[[np.ndarray], Mapping[str, np.ndarray]]


class Interval(NamedTuple):
    """A `CONFIDENCE` interval ``[low, high]`` and how it was computed."""

    low: float
    high: float
    method: str

    def __str__(self) -> str:
        return f"[{self.low:.4f}, {self.high:.4f}]"

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "method": self.method, "confidence": CONFIDENCE}


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson's score interval of a proportion `successes` / `n` (not zero-width at 0 % or 100 %).

    >>> wilson(10, 10).low > 0.69
    True
    """
    if n < 1:
        raise DataError(f"an interval of a proportion needs at least one example, got n={n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    scale = 1 + z * z / n
    center = (p + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(max(0.0, center - half), min(1.0, center + half), "wilson")


def draws(statistic: Statistic, n: int, resamples: int, seed: int) -> dict[str, np.ndarray]:
    """Each metric's value on `resamples` seeded resamples of `n` examples (rows of indices
    drawn with replacement); the same seed draws the same rows, so two results scored on the
    same examples are resampled in pairs."""
    if n < 2:
        raise DataError(f"a bootstrap interval resamples the scored examples and needs at least 2, got {n}; "
                        f"score more examples (max_eval_examples) or drop the interval")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK // n)
    values: dict[str, list[np.ndarray]] = {}
    for start in range(0, resamples, chunk):
        rows = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        for name, found in statistic(rows).items():
            values.setdefault(name, []).append(np.asarray(found, np.float64))
    return {name: np.concatenate(parts) for name, parts in values.items()}


def percentiles(drawn: np.ndarray, method: str, confidence: float = CONFIDENCE) -> Interval:
    """The percentile interval of bootstrap draws (non-finite draws left out: a resample of one
    class has no correlation)."""
    drawn = drawn[np.isfinite(drawn)]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(drawn, [tail, 100 - tail]) if len(drawn) else (math.nan, math.nan)
    return Interval(float(low), float(high), method)


def bootstrap(statistic: Statistic, n: int, *, resamples: int = RESAMPLES, seed: int = 0,
              confidence: float = CONFIDENCE) -> dict[str, Interval]:
    """Percentile bootstrap intervals over `n` examples: `statistic` gets rows of indices
    ``(B, n)`` drawn with replacement (seeded) and returns each metric's value per row.

    >>> def mean(rows): return {"mean": np.arange(5.0)[rows].mean(axis=1)}
    >>> bootstrap(mean, 5, seed=1)["mean"].method
    'bootstrap (1000 resamples, seed 1)'
    """
    method = bootstrap_method(resamples, seed)
    return {name: percentiles(drawn, method, confidence)
            for name, drawn in draws(statistic, n, resamples, seed).items()}


def bootstrap_method(resamples: int, seed: int) -> str:
    return f"bootstrap ({resamples} resamples, seed {seed})"


# -- the metrics recomputed in NumPy, all resamples at once --------------------------------------
def _f1(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Binary F1 of the positive class 1 (scikit-learn's `f1_score`, zero_division=0)."""
    tp = ((p == 1) & (y == 1)).sum(1)
    wrong = (p != y).sum(1)  # false positives + false negatives
    denominator = 2 * tp + wrong
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def _mcc(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Matthews correlation over any number of classes (scikit-learn's `matthews_corrcoef`)."""
    classes = int(max(p.max(), y.max())) + 1
    t = np.stack([(y == k).sum(1) for k in range(classes)], 1).astype(np.float64)
    q = np.stack([(p == k).sum(1) for k in range(classes)], 1).astype(np.float64)
    s = np.float64(p.shape[1])
    c = (p == y).sum(1)
    cov = c * s - (t * q).sum(1)
    denominator = np.sqrt((s * s - (q * q).sum(1)) * (s * s - (t * t).sum(1)))
    return np.where(denominator > 0, cov / np.where(denominator > 0, denominator, 1), 0.0)


def _pearson(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = p - p.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (p * y).sum(1) / np.sqrt((p * p).sum(1) * (y * y).sum(1))


def _spearman(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return _pearson(rankdata(p, axis=1), rankdata(y, axis=1))


def _macro_f1(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """F1 averaged over the classes present in labels or predictions (scikit-learn's
    ``average="macro"``, zero_division=0)."""
    classes = int(max(p.max(), y.max())) + 1
    per_class, present = [], []
    for k in range(classes):
        tp = ((p == k) & (y == k)).sum(1)
        denominator = (p == k).sum(1) + (y == k).sum(1)
        per_class.append(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0))
        present.append(denominator > 0)
    return np.sum(per_class, 0) / np.maximum(np.sum(present, 0), 1)


#: module -> metric -> ``fn(predictions (B, n), labels (B, n)) -> (B,)``: the scores of the shipped
#: metric modules recomputed in NumPy (SuperGLUE's ``f1`` is CommitmentBank's macro F1)
VECTORIZED: dict[str, dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]] = {
    "glue": {"f1": _f1, "matthews_correlation": _mcc, "pearson": _pearson, "spearmanr": _spearman},
    "super_glue": {"f1": _macro_f1, "matthews_correlation": _mcc},
    "accuracy": {},
}
#: the mean of a task's two scores (the GLUE board's number), recomputed from them per resample
_COMBINED = "combined_score"


def _vectorized(functions: Mapping[str, Callable[[np.ndarray, np.ndarray], np.ndarray]], metrics: list[str],
                predictions: np.ndarray, labels: np.ndarray) -> Statistic:
    """All resamples at once: each metric of `functions`, accuracy, and their mean as `_COMBINED`."""
    def statistic(rows: np.ndarray) -> dict[str, np.ndarray]:
        p, y = predictions[rows], labels[rows]
        found = {m: (p == y).mean(1) if m == "accuracy" else functions[m](p, y) for m in metrics if m != _COMBINED}
        if _COMBINED in metrics:
            found[_COMBINED] = np.mean(list(found.values()), axis=0)
        return found
    return statistic


def _scorer(score: Callable[[np.ndarray], Mapping[str, float]], metrics: list[str]) -> Statistic:
    """A statistic that calls the task's scorer once per resample (any metric, slower)."""
    def statistic(rows: np.ndarray) -> dict[str, np.ndarray]:
        scored = [score(row) for row in rows]
        return {m: np.array([float(s.get(m, math.nan)) for s in scored]) for m in metrics}
    return statistic


def resampled(result: Any, metrics: list[str]) -> tuple[Statistic, int] | None:
    """The statistic that recomputes `metrics` of `result` on rows of example indices, and how
    many resamples it affords: NumPy for the metrics of `VECTORIZED` (and accuracy, and their
    mean), else the task's scorer once per resample (at most `SCORER_RESAMPLES`); `None` when the
    scorer needs examples `result` does not hold."""
    predictions, labels = np.asarray(result.predictions), np.asarray(result.labels)
    task = result.task
    plain = task.metric_inputs is None  # the scorer reads predictions and labels only
    functions = VECTORIZED.get(task.metric_for(result.split)[0], {})
    if plain and labels.dtype.kind in "biuf" and all(m in functions or m in ("accuracy", _COMBINED) for m in metrics):
        # the combined score is the mean of the others, whichever of them were asked for
        parts = [m for m in result.metrics if m != _COMBINED and (m in functions or m == "accuracy")]
        computed = [*dict.fromkeys([*metrics, *(parts if _COMBINED in metrics else [])])]
        return _vectorized(functions, computed, predictions, labels), RESAMPLES
    shaped = task.shape.resampler(predictions, labels, metrics) if plain else None
    if shaped is not None:  # statistics of each example, computed once (BLEU, chrF, ROUGE)
        return shaped, RESAMPLES
    examples = result.examples
    if not plain and examples is None:
        return None

    def score(row: np.ndarray) -> Mapping[str, float]:
        return task.shape.score(task, result.split, predictions[row], labels[row],
                                None if examples is None else examples.take(row))
    return _scorer(score, metrics), max(_SCORER_MIN, min(SCORER_RESAMPLES, _SCORER_BUDGET // len(labels)))


def hits(result: Any) -> np.ndarray | None:
    """Whether each example of `result` was right, when its accuracy is the share of examples
    right (a proportion: Wilson, McNemar; `Shape.hits`); `None` otherwise."""
    if result.task.metric_inputs is not None:
        return None
    return result.task.shape.hits(np.asarray(result.predictions), np.asarray(result.labels))


def intervals_of(result: Any, seed: int | None = None) -> dict[str, Interval]:
    """An interval for each metric of `result` (an `EvalResult` with its scored examples):
    Wilson for accuracy that counts right examples (`hits`), the bootstrap for the rest, seeded by the
    evaluation's ``seed`` unless `seed` is given. A result of fewer than 2 examples has no
    bootstrap intervals, nor one whose scorer needs examples it does not hold."""
    seed = int(result.config.get("seed", 0)) if seed is None else seed
    metrics = [m for m, v in result.metrics.items() if isinstance(v, (int, float))]
    out: dict[str, Interval] = {}
    right = hits(result) if "accuracy" in metrics else None
    if right is not None:
        out["accuracy"] = wilson(int(right.sum()), len(right))
    rest = [m for m in metrics if m not in out]
    found = resampled(result, rest) if rest and len(result.labels) >= 2 else None
    if found is None:
        return out
    statistic, resamples = found
    drawn = bootstrap(statistic, len(result.labels), resamples=resamples, seed=seed)
    return {**out, **{m: drawn[m] for m in rest}}
