"""Negative log-likelihoods of texts under any lmkit language model.

>>> nll, units = text_nll(run.model, run.tokenizer, ["To be, or not to be"], unit="byte")  # doctest: +SKIP

Each text is cut into windows of at most `window` tokens (the model's context when it has one);
within a window every token after the first is predicted from the tokens before it, so the first
token of each window is context only. Units: ``token`` counts the predicted tokens (compare runs
with the same tokenizer only); ``word`` (whitespace-separated) and ``byte`` (UTF-8) count the
whole text, so they compare models with different tokenizers. Memory is bounded by `batch_size`
windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["text_nll", "UNITS"]

UNITS = ("token", "word", "byte")


def text_nll(model: Any, tokenizer: Any, texts: Sequence[str], unit: str = "token",
             window: int | None = None, batch_size: int = 16) -> tuple[list[float], list[int]]:
    """Summed NLL (nats) of each text, and its number of `unit`s."""
    from keras import ops

    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    window = window or getattr(model, "max_context", None) or 256
    pieces: list[tuple[int, np.ndarray]] = []  # (text index, window of ids)
    nll = [0.0] * len(texts)
    predicted = [0] * len(texts)
    for i, text in enumerate(texts):
        ids = np.asarray(tokenizer.encode(text), dtype=np.int32)
        pieces += [(i, ids[s:s + window]) for s in range(0, len(ids), window) if len(ids[s:s + window]) > 1]
    for start in range(0, len(pieces), batch_size):
        chunk = pieces[start:start + batch_size]
        width = max(len(ids) for _, ids in chunk)
        tokens = np.zeros((len(chunk), width), np.int32)
        mask = np.zeros((len(chunk), width - 1), np.float64)
        for j, (_, ids) in enumerate(chunk):
            tokens[j, :len(ids)] = ids
            mask[j, :len(ids) - 1] = 1.0
        logits = ops.convert_to_numpy(ops.cast(model(tokens, training=False), "float32")).astype(np.float64)
        log_probs = logits[:, :-1] - _logsumexp(logits[:, :-1])
        target = np.take_along_axis(log_probs, tokens[:, 1:, None].astype(np.int64), axis=-1)[..., 0]
        for j, (i, _) in enumerate(chunk):
            nll[i] -= float((target[j] * mask[j]).sum())
            predicted[i] += int(mask[j].sum())
    if unit == "token":
        units = predicted
    elif unit == "word":
        units = [len(t.split()) for t in texts]
    else:
        units = [len(t.encode("utf-8")) for t in texts]
    return nll, units


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True))
