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
itself is scored on its last `window` tokens. Pairs are batched by length (padded on the right,
which a causal model ignores), with batches bounded to about 2**25 logits, so memory is bounded
however many examples there are.

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

__all__ = ["loglikelihoods", "choice_pairs", "few_shot_prefix", "evaluate_zeroshot", "LOGITS_PER_BATCH"]

#: the most logits (rows × tokens × vocabulary) one scoring batch computes
LOGITS_PER_BATCH = 2 ** 25
_BUCKET = 16


def loglikelihoods(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], window: int | None = None,
                   batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Log-probability (nats, summed over its tokens) of each continuation given its context,
    and the number of continuation tokens scored.

    >>> ll, n = loglikelihoods(run.model, run.tokenizer, [("The sky is", " blue")])  # doctest: +SKIP
    """
    window = int(window or getattr(model, "max_context", None) or 256)
    if window < 1:
        raise ConfigError(f"the scoring window must be at least 1 token, got {window}")
    inputs: list[np.ndarray] = []
    scored: list[int] = []
    for context, continuation in pairs:
        ctx, cont = list(tokenizer.encode(context)), list(tokenizer.encode(continuation))
        if not ctx or not cont:
            empty = "context" if not ctx else "continuation"
            raise DataError(f"zero-shot scoring needs a non-empty {empty}; got the pair "
                            f"({context[:60]!r}, {continuation[:60]!r}), whose {empty} encodes to no tokens")
        joined = (ctx + cont)[-(window + 1):]  # the context is cut from the left
        inputs.append(np.asarray(joined, np.int32))
        scored.append(min(len(cont), len(joined) - 1))
    forward = _forward(model)
    vocab = int(tokenizer.vocab_size)
    totals = np.zeros(len(inputs), np.float64)
    order = np.argsort([len(x) for x in inputs], kind="stable")
    start = 0
    while start < len(order):
        width = min(_round_up(len(inputs[order[start]]) - 1), window)
        rows = max(1, min(batch_size, LOGITS_PER_BATCH // (width * vocab)))
        chunk = [i for i in order[start:start + rows] if len(inputs[i]) - 1 <= width]
        tokens = np.zeros((rows, width), np.int32)
        targets = np.zeros((rows, width), np.int32)
        for r, i in enumerate(chunk):
            ids = inputs[i]
            tokens[r, :len(ids) - 1], targets[r, :len(ids) - 1] = ids[:-1], ids[1:]
        log_probs = forward(tokens, targets)  # (rows, width): log p(target | tokens before it)
        for r, i in enumerate(chunk):
            end = len(inputs[i]) - 1
            totals[i] = float(np.sum(log_probs[r, end - scored[i]:end], dtype=np.float64))
        start += len(chunk)
    return totals, np.asarray(scored, np.int64)


def _round_up(n: int) -> int:
    # a handful of padded lengths, so the compiled forward pass is traced a few times only
    return max(_BUCKET, -(-n // _BUCKET) * _BUCKET)


def _forward(model: Any) -> Any:
    """``(tokens, targets) -> log p(targets)`` for int32 ``(B, T)`` arrays, compiled on JAX."""
    import keras

    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        train_vals = [v.value for v in model.trainable_variables]
        non_train = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def target_log_probs(train_vals, non_train, tokens, targets):
            logits, _ = model.stateless_call(train_vals, non_train, tokens, training=False)
            log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
            return jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]

        return lambda tokens, targets: np.asarray(target_log_probs(train_vals, non_train, tokens, targets))

    from keras import ops

    def eager(tokens: np.ndarray, targets: np.ndarray) -> np.ndarray:
        logits = ops.convert_to_numpy(ops.cast(model(tokens, training=False), "float32")).astype(np.float64)
        top = logits.max(axis=-1, keepdims=True)
        log_probs = logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))
        return np.take_along_axis(log_probs, targets[..., None].astype(np.int64), axis=-1)[..., 0]

    return eager


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
