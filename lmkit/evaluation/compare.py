"""Is model B better than model A, or is the difference noise? A paired test on the same examples.

For each metric of two results on the same examples: the difference B - A, its 95 % interval
(a paired bootstrap: both results resampled on the same rows) and a two-sided p-value, from
McNemar's exact test for accuracy over class predictions (the discordant pairs), from the paired
bootstrap for every other metric (F1, MCC, correlations, BLEU, ROUGE: the share of resampled
differences on the other side of zero, doubled).

>>> comparison = compare(result_a, result_b)               # doctest: +SKIP
>>> print(comparison)                                       # doctest: +SKIP
glue/mrpc (dev, 408 examples): lm-b - lm-a
  f1        0.8121  0.8354  +0.0233  [-0.0061, +0.0529]  p=0.118 (paired bootstrap)  not significant
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmkit.errors import DataError
from lmkit.evaluation.intervals import bootstrap_method, draws, hits, percentiles, resampled

__all__ = ["compare", "Comparison", "MetricComparison", "mcnemar", "LEVEL"]

#: a difference whose p-value is below this is called significant
LEVEL = 0.05


@dataclass(frozen=True)
class MetricComparison:
    """One metric of two results: their values, the difference ``b - a``, its interval and p."""

    metric: str
    a: float
    b: float
    low: float  #: 95 % interval of the difference (paired bootstrap)
    high: float
    p_value: float
    test: str  #: ``"mcnemar (exact)"`` or the paired bootstrap's resamples and seed

    @property
    def difference(self) -> float:
        return self.b - self.a

    @property
    def significant(self) -> bool:
        """Whether the difference is unlikely to be noise (p < `LEVEL`)."""
        return self.p_value < LEVEL

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "a": self.a, "b": self.b, "difference": self.difference,
                "low": self.low, "high": self.high, "p_value": self.p_value, "test": self.test,
                "significant": self.significant}


@dataclass(frozen=True)
class Comparison:
    """`compare`'s answer: a `MetricComparison` per metric of two results on the same examples."""

    task: str
    split: str
    examples: int
    model_a: str
    model_b: str
    metrics: list[MetricComparison] = field(default_factory=list)

    def __getitem__(self, metric: str) -> MetricComparison:
        return next(m for m in self.metrics if m.metric == metric)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "split": self.split, "examples": self.examples, "model_a": self.model_a,
                "model_b": self.model_b, "metrics": [m.to_dict() for m in self.metrics]}

    def __str__(self) -> str:
        lines = [f"{self.task} ({self.split}, {self.examples} examples): {self.model_b} - {self.model_a}",
                 f"  {'metric':<22} {'a':>8} {'b':>8} {'b - a':>8}  95% interval of b - a   p"]
        for m in self.metrics:
            verdict = "significant" if m.significant else "not significant"
            lines.append(f"  {m.metric:<22} {m.a:8.4f} {m.b:8.4f} {m.difference:+8.4f}  "
                         f"[{m.low:+.4f}, {m.high:+.4f}]  p={m.p_value:.3g} ({m.test}): {verdict}")
        return "\n".join(lines)


def mcnemar(a_right: np.ndarray, b_right: np.ndarray) -> float:
    """McNemar's exact two-sided p-value: of the examples exactly one model got right, is B's
    share different from a fair coin's? (statsmodels' ``mcnemar(table, exact=True)``)

    >>> round(mcnemar(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 1, 1, 1], bool)), 4)
    1.0
    """
    from scipy.stats import binom

    only_a = int((a_right & ~b_right).sum())
    only_b = int((b_right & ~a_right).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(min(only_a, only_b), only_a + only_b, 0.5)))


def compare(a: Any, b: Any, seed: int | None = None) -> Comparison:
    """Compare two `EvalResult`s of the same task on the same examples (same split, same
    examples in the same order, e.g. two runs evaluated with the same options); `seed` seeds the
    paired bootstrap (default: `a`'s evaluation seed).

    >>> compare(lmkit.evaluate("runs/a", "glue/mrpc", "glue"),
    ...         lmkit.evaluate("runs/b", "glue/mrpc", "glue"))["f1"].p_value      # doctest: +SKIP
    """
    _check_same_examples(a, b)
    seed = int(a.config.get("seed", 0)) if seed is None else seed
    names = [m for m in a.metrics if m in b.metrics and isinstance(a.metrics[m], (int, float))]
    out = []
    pair = _paired(a, b, names)
    drawn = {} if pair is None else draws(pair[0], len(a.labels), pair[1], seed)
    for name in names:
        low = high = math.nan
        p_value, test = math.nan, "none: the scorer needs the examples"
        if name in drawn:
            test = "paired " + bootstrap_method(pair[1], seed)
            interval = percentiles(drawn[name], test)
            low, high = interval.low, interval.high
            p_value = _bootstrap_p(drawn[name])
        right = (hits(a), hits(b)) if name == "accuracy" else (None, None)
        if right[0] is not None and right[1] is not None:
            p_value, test = mcnemar(*right), "mcnemar (exact)"
        out.append(MetricComparison(name, float(a.metrics[name]), float(b.metrics[name]), low, high, p_value, test))
    return Comparison(a.task.name, a.split, len(a.labels), a.model_name, b.model_name, out)


def _paired(a: Any, b: Any, names: list[str]) -> tuple[Any, int] | None:
    """The statistic of ``b - a`` on the same resampled rows, and its number of resamples."""
    found_a, found_b = resampled(a, names), resampled(b, names)
    if found_a is None or found_b is None:
        return None
    (stat_a, resamples), (stat_b, _) = found_a, found_b

    def difference(rows: np.ndarray) -> dict[str, np.ndarray]:
        va, vb = stat_a(rows), stat_b(rows)
        return {m: np.asarray(vb[m]) - np.asarray(va[m]) for m in names}
    return difference, resamples


def _bootstrap_p(drawn: np.ndarray) -> float:
    """Two-sided p of a paired bootstrap: twice the share of resampled differences on the far
    side of zero (at least one resample in the count, so p is never exactly 0)."""
    drawn = drawn[np.isfinite(drawn)]
    if not len(drawn):
        return math.nan
    below, above = (drawn <= 0).sum(), (drawn >= 0).sum()
    return float(min(1.0, 2 * (min(below, above) + 1) / (len(drawn) + 1)))


def _check_same_examples(a: Any, b: Any) -> None:
    if a.task.name != b.task.name or a.split != b.split:
        raise DataError(f"a comparison needs two results on the same examples, got {a.task.name} "
                        f"('{a.split}') and {b.task.name} ('{b.split}')")
    if len(a.labels) != len(b.labels):
        raise DataError(f"{a.model_name} was scored on {len(a.labels)} examples of {a.task.name} and "
                        f"{b.model_name} on {len(b.labels)}: evaluate both with the same split and "
                        f"max_eval_examples (and seed) to compare them")
    differ = (np.asarray(a.labels) != np.asarray(b.labels)).reshape(len(a.labels), -1).any(axis=1)
    if a.examples is not None and b.examples is not None:
        differ |= np.array([x != y for x, y in zip(a.examples.text_a, b.examples.text_a)])
    if differ.any():
        raise DataError(f"{int(differ.sum())} of the {len(a.labels)} examples of {a.task.name} differ between "
                        f"{a.model_name} and {b.model_name} (other texts or labels at the same place): "
                        f"evaluate both on the same data with the same max_eval_examples and seed")
