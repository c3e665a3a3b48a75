"""Built-in training losses, per token, from logits, in `keras.ops`.

A loss factory takes the config and returns ``fn(labels, logits) -> losses`` where `labels` is
``(N,)`` int and `logits` is ``(N, V)``; the trainer flattens ``(B, T)`` to ``N = B*T`` first
(2-D layouts compile to much faster code on XLA:CPU) and averages the result.

>>> import numpy as np
>>> from lmkit.config import TrainConfig
>>> fn = build_loss(TrainConfig())
>>> round(float(fn(np.array([0]), np.log(np.array([[0.5, 0.25, 0.25]])))[0]), 4)  # -log 0.5
0.6931
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keras import ops

from lmkit.registry import losses

if TYPE_CHECKING:
    from lmkit.config import TrainConfig

__all__ = ["build_loss", "nll"]

LossFn = Callable[[Any, Any], Any]


def nll(labels: Any, logits: Any) -> Any:
    """Negative log-likelihood of `labels` under softmax(`logits`), in nats, per row."""
    logits = ops.cast(logits, "float32")
    # logsumexp minus the label's logit: never materialises the softmax or a one-hot matrix.
    picked = ops.take_along_axis(logits, ops.expand_dims(ops.cast(labels, "int32"), -1), axis=-1)
    return ops.logsumexp(logits, axis=-1) - ops.squeeze(picked, -1)


@losses.register("cross_entropy", aliases=("sparse_categorical_crossentropy", "ce", "xent"),
                 description="Sparse categorical cross-entropy from logits (default).")
def cross_entropy(cfg: "TrainConfig") -> LossFn:
    return nll


@losses.register("label_smoothing", aliases=("smoothed_cross_entropy",),
                 description="Cross-entropy against labels smoothed by `label_smoothing`.",
                 capabilities=("label_smoothing",))
def label_smoothing(cfg: "TrainConfig") -> LossFn:
    eps = cfg.label_smoothing

    def fn(labels: Any, logits: Any) -> Any:
        logits = ops.cast(logits, "float32")
        lse = ops.logsumexp(logits, axis=-1)
        uniform = lse - ops.mean(logits, axis=-1)  # cross-entropy against the uniform distribution
        return (1.0 - eps) * nll(labels, logits) + eps * uniform

    return fn


@losses.register("mse", aliases=("mean_squared_error",),
                 description="Mean squared error between softmax probabilities and one-hot labels.")
def mean_squared_error(cfg: "TrainConfig") -> LossFn:
    def fn(labels: Any, logits: Any) -> Any:
        probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        target = ops.one_hot(ops.cast(labels, "int32"), ops.shape(logits)[-1])
        return ops.mean(ops.square(probs - target), axis=-1)

    return fn


@losses.register("squared_error", aliases=("regression",),
                 description="Squared error of a single output against a real-valued label (regression, e.g. STS-B).")
def squared_error(cfg: "TrainConfig") -> LossFn:
    def fn(labels: Any, outputs: Any) -> Any:
        return ops.square(ops.cast(outputs[:, 0], "float32") - ops.cast(labels, "float32"))

    return fn


@losses.register("target_nll", description="Mean negative log-likelihood of a span of target tokens "
                 "(generation tasks: the loss is on the target only).",
                 capabilities=("per_token",))
def target_nll(cfg: "TrainConfig") -> LossFn:
    """`labels` ``(B, 2)`` are the ``[start, end)`` positions of each row's target tokens and
    `outputs` ``(B, T)`` the log-probability of each next token; per row, the mean over the span."""
    def fn(labels: Any, outputs: Any) -> Any:
        spans = ops.cast(labels, "int32")
        positions = ops.arange(ops.shape(outputs)[1], dtype="int32")[None, :]
        inside = ops.cast((positions >= spans[:, :1]) & (positions < spans[:, 1:]), "float32")
        return -ops.sum(inside * ops.cast(outputs, "float32"), axis=1) / ops.maximum(ops.sum(inside, axis=1), 1.0)
    return fn


def build_loss(cfg: Any) -> LossFn:
    """The per-example loss named by `cfg.loss` (any config with the loss keys of `TrainConfig`)."""
    return losses.get(cfg.loss)(cfg)
