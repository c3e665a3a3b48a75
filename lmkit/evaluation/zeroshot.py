"""Zero-shot scoring by likelihood: a language model ranks each example's choices, no training.

Each task gives, per example, one ``(context, continuation)`` pair per label (or per candidate,
for ReCoRD): `Task.choices`. The model scores each continuation by its log-probability given the
context, summed over the continuation's tokens; the best choice is the prediction, and the
task's own metric scores the predictions (as lm-evaluation-harness does; its prompts are used).
With ``length_normalize=true`` the sum is divided by the continuation's length in characters
(the harness's ``acc_norm``), which stops long choices from losing only for being long.
With ``shots=k`` (few-shot), k solved examples of the training split (a seeded sample, the same
for every example: `few_shot_prefix`) are written before every context, each as its context and
right continuation, separated by blank lines.

Context and continuation are encoded separately and joined, so the continuation's tokens are
exactly its own encoding (with char and byte tokenizers the join equals encoding the whole
text). The model reads at most `window` tokens (its context length, `max_context`, or the
`max_length` option for models without one): a longer pair keeps its last ``window + 1``
tokens, so the context is truncated **from the left**; a continuation longer than the window
itself is scored on its last `window` tokens. Pairs are batched by `lmkit.forward`'s padding
policy (sorted by length, padded on the right, which a causal model ignores), with batches bounded
to about 2**25 logits, so memory is bounded however many examples there are.

>>> import lmkit
>>> lmkit.evaluate("runs/char-gpt", task="superglue/copa", data="superglue/", method="zeroshot")  # doctest: +SKIP
EvalResult(task='superglue/copa', split='val', model='char-gpt', accuracy=0.5400)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from lmkit.errors import ConfigError, DataError
from lmkit.config import EvalConfig
from lmkit.evaluation.examples import Examples
from lmkit.evaluation.result import EvalResult
from lmkit.forward import LOGITS_PER_BATCH, greedy_log_likelihoods, log_likelihoods

__all__ = ["loglikelihoods", "greedy_loglikelihoods", "choice_pairs", "few_shot_prefix", "evaluate_zeroshot", "LOGITS_PER_BATCH"]


def loglikelihoods(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], window: int | None = None,
                   batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Log-probability (nats, summed over its tokens) of each continuation given its context,
    and the number of continuation tokens scored (`lmkit.forward.log_likelihoods` computes them).

    >>> ll, n = loglikelihoods(run.model, run.tokenizer, [("The sky is", " blue")])  # doctest: +SKIP
    """
    inputs, first, window = _joined(tokenizer, pairs, window or getattr(model, "max_context", None))
    if not inputs:
        return np.zeros(0, np.float64), np.zeros(0, np.int64)
    return log_likelihoods(model, inputs, first, batch_size, window), _scored(inputs, first)


def greedy_loglikelihoods(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], window: int | None = None,
                          batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`loglikelihoods` and whether greedy decoding gives each continuation (every one of its
    tokens the model's most likely next token: the harness's ``is_greedy``, LAMBADA's accuracy).

    >>> ll, n, greedy = greedy_loglikelihoods(run.model, run.tokenizer, [("The sky is", " blue")])  # doctest: +SKIP
    """
    inputs, first, window = _joined(tokenizer, pairs, window or getattr(model, "max_context", None))
    if not inputs:
        return np.zeros(0, np.float64), np.zeros(0, np.int64), np.zeros(0, bool)
    ll, greedy = greedy_log_likelihoods(model, inputs, first, batch_size, window)
    return ll, _scored(inputs, first), greedy


def _joined(tokenizer: Any, pairs: Sequence[tuple[str, str]], window: int | None,
            ) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Each pair's context and continuation encoded apart and joined, cut from the left to
    ``window + 1`` tokens; the position before each continuation's first scored token; the window."""
    window = int(window or 256)
    if window < 1:
        raise ConfigError(f"the scoring window must be at least 1 token, got {window}")
    inputs: list[np.ndarray] = []
    first: list[int] = []
    for context, continuation in pairs:
        ctx, cont = list(tokenizer.encode(context)), list(tokenizer.encode(continuation))
        if not ctx or not cont:
            empty = "context" if not ctx else "continuation"
            raise DataError(f"zero-shot scoring needs a non-empty {empty}; got the pair "
                            f"({context[:60]!r}, {continuation[:60]!r}), whose {empty} encodes to no tokens")
        joined = (ctx + cont)[-(window + 1):]  # the context is cut from the left
        inputs.append(np.asarray(joined, np.int32))
        first.append(len(joined) - 1 - min(len(cont), len(joined) - 1))
    return inputs, np.asarray(first, np.int32), window


def _scored(inputs: list[np.ndarray], first: np.ndarray) -> np.ndarray:
    """How many continuation tokens each joined row scores."""
    return np.asarray([len(ids) - 1 - f for ids, f in zip(inputs, first)], np.int64)


def few_shot_prefix(train: Examples, shots: int, seed: int = 0) -> str:
    """`shots` solved examples of `train` (a seeded sample of the labelled ones), each its context
    and right continuation, each followed by a blank line.

    >>> few_shot_prefix(load_split("superglue/copa", data, "train"), 1)    # doctest: +SKIP
    'My body cast a shadow over the grass because the sun was rising.\\n\\n'
    """
    labelled = np.flatnonzero(train.labels >= 0)
    if len(labelled) < shots:
        raise DataError(f"shots={shots} needs that many labelled examples in split '{train.split}' of "
                        f"{train.task.name}; it has {len(labelled)}")
    picked = np.random.default_rng(seed).choice(labelled, shots, replace=False)
    solved = []
    for i in picked:
        context, continuation = choice_pairs(train.take([i]))[0][int(train.labels[i])]
        solved.append(context + continuation + "\n\n")
    return "".join(solved)


def choice_pairs(examples: Examples, prefix: str = "") -> list[list[tuple[str, str]]]:
    """Each example's ``(context, continuation)`` pairs, one per label in order (`Task.choices`),
    the contexts after `prefix` (few-shot examples)."""
    task = examples.task
    if task.choices is None:
        from lmkit.registry import tasks

        able = sorted(e.name for e in tasks.list() if getattr(e.obj, "choices", None) is not None)
        raise ConfigError(f"task {task.name} has no zero-shot prompts (Task.choices); method='zeroshot' "
                          f"works for: {', '.join(able)}")
    out = []
    for i in range(len(examples)):
        pairs = task.choices(examples.record(i))
        if not task.shape.has("own_choices") and len(pairs) != len(task.labels):
            raise ConfigError(f"task {task.name}: its prompts give {len(pairs)} choices for "
                              f"{len(task.labels)} labels; Task.choices must give one per label")
        out.append([(prefix + context, continuation) for context, continuation in pairs])
    return out


def evaluate_zeroshot(run: Any, examples: Examples, cfg: EvalConfig, name: str,
                      shots: Examples | None = None) -> EvalResult:
    """Score `examples` by ranking their choices with `run`'s language model (no training);
    with ``cfg.shots``, after that many solved examples of `shots` (the training split)."""
    started = time.perf_counter()
    prefix = few_shot_prefix(shots, cfg.shots, cfg.seed) if cfg.shots and shots is not None else ""
    per_example = choice_pairs(examples, prefix)
    flat = [pair for pairs in per_example for pair in pairs]
    window = getattr(run.model, "max_context", None) or cfg.max_length
    ll, tokens = loglikelihoods(run.model, run.tokenizer, flat, window, cfg.eval_batch_size)
    if cfg.length_normalize:
        ll = ll / np.asarray([max(len(cont), 1) for _, cont in flat], np.float64)
    width = max(len(pairs) for pairs in per_example)
    scores = np.full((len(examples), width), -np.inf)
    at = 0
    for i, pairs in enumerate(per_example):
        scores[i, :len(pairs)] = ll[at:at + len(pairs)]
        at += len(pairs)
    training = {"method": "zeroshot", "shots": cfg.shots if prefix else 0, "pairs": len(flat), "scored_tokens": int(tokens.sum()),
                "window": int(window), "seconds": time.perf_counter() - started}
    return EvalResult.build(examples.task, examples.split, name, scores, examples.labels, examples,
                            config=cfg.to_dict(), training=training, model=run.model, tokenizer=run.tokenizer)
