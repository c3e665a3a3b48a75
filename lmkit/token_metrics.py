"""Built-in language-model metrics.

A metric is two small functions: `stats` computes sums over one batch inside the compiled
evaluation step (so evaluation memory is bounded by a batch), and `finalize` turns the sums over
all batches into one number. Metrics that need the same sums share them; a plugin metric brings
its own `stats`.

Sums available to every metric: ``nll`` (total negative log-likelihood, nats), ``count``
(tokens), ``loss`` (total training loss), ``chars`` and ``bytes`` (of the decoded target text),
plus whatever the metrics' own `stats` return.

>>> metrics.get("perplexity").finalize({"nll": 2.0, "count": 2})   # exp(mean nll)
2.718281828459045
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmkit.errors import DataError
from lmkit.registry import metrics

__all__ = ["Metric", "compute_stats"]

Stats = Callable[[Any, Any, int], dict[str, Any]]


@dataclass(frozen=True)
class Metric:
    """A metric: batch sums in the compiled step, a final value from all sums."""

    name: str
    finalize: Callable[[dict[str, float]], float]
    stats: Stats | None = None


def _correct_top1(labels: Any, logits: Any, k: int) -> dict[str, Any]:
    from keras import ops

    hit = ops.cast(ops.argmax(logits, axis=-1) == ops.cast(labels, "int32"), "float32")
    return {"correct": ops.sum(hit)}


def _correct_topk(labels: Any, logits: Any, k: int) -> dict[str, Any]:
    from keras import ops

    logits = ops.cast(logits, "float32")
    label_logit = ops.take_along_axis(logits, ops.expand_dims(ops.cast(labels, "int32"), -1), -1)
    # The label is in the top k when fewer than k logits beat it (ties count for the label).
    beaten_by = ops.sum(ops.cast(logits > label_logit, "float32"), axis=-1)
    return {f"correct_top{k}": ops.sum(ops.cast(beaten_by < k, "float32"))}


def _register(metric: Metric, description: str, aliases: tuple[str, ...] = ()) -> None:
    metrics.register(metric.name, metric, aliases=aliases, description=description)


_LN2 = math.log(2.0)

_register(Metric("loss", lambda s: s["loss"] / s["count"]), "Mean training loss per token.")
_register(Metric("perplexity", lambda s: math.exp(min(s["nll"] / s["count"], 700.0))),
          "exp(mean negative log-likelihood per token).", aliases=("ppl",))
def _bits_per(unit: str) -> Callable[[dict[str, float]], float]:
    """Total NLL in bits over the `unit`s (``chars``, ``bytes``) of the decoded target text."""

    def finalize(s: dict[str, float]) -> float:
        if not s.get(unit):
            raise DataError(
                f"bits per {unit[:-1]} is undefined here: the evaluated validation targets decode "
                f"to {s.get(unit, 0):.0f} {unit} ({s.get('count', 0):.0f} tokens). Use validation "
                f"text the tokenizer decodes to characters, or drop bits_per_{unit[:-1]} from "
                f"`metrics`")
        return s["nll"] / _LN2 / s[unit]

    return finalize


_register(Metric("bits_per_char", _bits_per("chars")),
          "Bits per character of the decoded text (total NLL / ln 2 / characters).",
          aliases=("bpc",))
_register(Metric("bits_per_byte", _bits_per("bytes")),
          "Bits per UTF-8 byte of the decoded text.", aliases=("bpb",))
_register(Metric("accuracy", lambda s: s["correct"] / s["count"], _correct_top1),
          "Top-1 next-token accuracy.", aliases=("top1_accuracy", "acc"))


def _topk_finalize(s: dict[str, float]) -> float:
    key = next(k for k in s if k.startswith("correct_top"))
    return s[key] / s["count"]


_register(Metric("top_k_accuracy", _topk_finalize, _correct_topk),
          "Next-token accuracy counting a hit when the label is among the top `top_k` logits.",
          aliases=("topk_accuracy",))


def compute_stats(names: list[str], labels: Any, logits: Any, k: int) -> dict[str, Any]:
    """Union of the batch sums that the metrics `names` need (inside the compiled step)."""
    out: dict[str, Any] = {}
    for name in names:
        metric = metrics.get(name)
        if metric.stats is not None:
            out.update(metric.stats(labels, logits, k))
    return out
