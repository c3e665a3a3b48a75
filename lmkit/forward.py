"""The one batched, compiled forward pass: logits, features, pooled embeddings, classifier
outputs and log-likelihoods of many token rows, for every inference path of lmkit.

`compiled(model, body)` turns ``body(model, *args)`` into ``fn(values, *args)``: on JAX a
`jax.jit` program with the model's variable values as inputs, cached per model (weak keys), per
body and per `static` setting, so a second call on the same model compiles nothing new for shapes
it has seen. `generation.Decoder`, `Pretrained`, zero-shot scoring, text perplexity and
fine-tuning's `predict` all compile through it.

**Padding policy** (`plan`, the only one): rows are sorted by length (stable) and cut into
batches in that order. A batch holds at most ``rows = min(batch_size, the power of two >= the
number of rows)`` rows, so a call with few rows computes few; it is padded on the right to its
longest row rounded up to a multiple of `BUCKET` (16; never past `limit`, the model's context),
and filled up to ``rows`` rows with copies of its first. The model gets the padded tokens and each
row's length (`apply`): causal models ignore right padding, encoders mask it (their pad id), heads
pool over the lengths. With a budget of tokens per batch (`max_tokens`, e.g. `LOGITS_PER_BATCH`
logits over the vocabulary; on XLA:CPU at most `CPU_BATCH_TOKENS` positions, sized for its caches)
a wide batch holds fewer rows, a number fixed by its width. So one call
compiles at most one shape per width (``ceil(longest / 16)`` at most), whatever the number of rows;
results come back in the rows' own order, stacked.

>>> hidden = features(model, [[5, 6, 7], [8]], batch_size=32)      # doctest: +SKIP
>>> hidden.shape                                                     # doctest: +SKIP
(2, 3, 64)
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from lmkit.errors import ConfigError

__all__ = ["compiled", "Batch", "plan", "padded_width", "pad_rows", "apply", "apply_packed", "logits",
           "features", "pooled", "pool", "classify", "log_likelihoods", "greedy_log_likelihoods", "text_nll", "perplexity", "BUCKET",
           "LOGITS_PER_BATCH", "CPU_BATCH_TOKENS", "POOLINGS", "UNITS"]

#: padded widths are multiples of this: a handful of compiled shapes serve any lengths
BUCKET = 16
#: the most logits (rows × tokens × vocabulary) one log-likelihood batch computes: bounded memory
LOGITS_PER_BATCH = 2 ** 25
#: on XLA:CPU, the most token positions one batch of `apply` or `apply_packed` holds: a larger
#: batch's activations outgrow the caches (2 Zen 4 cores: MiniLM embedding the 872 SST-2 dev
#: sentences 2.9-3.1 s at 832 to 3,200 positions a batch, 3.7-3.9 s at 4,000 to 5,600; a 2 x 128
#: char GPT's perplexity of 100,000 characters 0.75 s at 2,048, 1.33 s at 16,384)
CPU_BATCH_TOKENS = 2048
#: how `pooled` turns hidden states into one vector: the mean over real tokens, or the first token's
POOLINGS = ("mean", "cls")
#: what `text_nll` counts: the predicted tokens, whitespace words, or UTF-8 bytes
UNITS = ("token", "word", "byte")

# model -> {(body, static): compiled function}: every call on a model reuses them.
_COMPILED: "weakref.WeakKeyDictionary[Any, dict[Any, Callable[..., Any]]]" = (
    weakref.WeakKeyDictionary())


def compiled(model: Any, body: Callable[..., Any], static: Any = None) -> Callable[..., Any]:
    """`body(model, *args)` as ``fn(values, *args)``, `values` being the model's variable values.

    On JAX it is compiled once per model, `static` settings (passed to the body as ``static=``)
    and shape; elsewhere `values` is ignored and the body runs eagerly on the model's own
    variables. `body` must be a module-level function: it is part of the cache key.
    """
    import keras

    extra = {} if static is None else {"static": static}
    if keras.backend.backend() != "jax":
        return lambda values, *args: body(model, *args, **extra)
    per_model = _COMPILED.setdefault(model, {})
    if (body, static) not in per_model:
        import jax

        from lmkit.paths import enable_compilation_cache

        enable_compilation_cache()  # a checkpoint loaded again in a new process compiles nothing

        variables = model.variables
        model_ref = weakref.ref(model)  # the cache must not keep the model alive

        def pure(values: list[Any], *args: Any) -> Any:
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return body(model_ref(), *args, **extra)

        # the program is named for its body (`lmkit.paths.programs` counts programs by name)
        pure.__name__ = pure.__qualname__ = body.__name__.lstrip("_")
        per_model[(body, static)] = jax.jit(pure)
    return per_model[(body, static)]


class Batch(NamedTuple):
    """One batch of `plan`: the rows it holds (indices into the input), its padded width and
    its padded row count (``rows >= len(index)``; the extra rows are copies of the first)."""

    index: np.ndarray
    width: int
    rows: int


def padded_width(longest: int, limit: int | None = None) -> int:
    """The width a batch whose longest row has `longest` tokens is padded to.

    >>> padded_width(17), padded_width(0), padded_width(40, limit=32)
    (32, 16, 32)
    """
    width = max(BUCKET, -(-int(longest) // BUCKET) * BUCKET)
    return min(width, limit) if limit else width


def _positions(max_tokens: int | None, group: int = 1) -> int | None:
    """The token positions a batch item may hold: `max_tokens`, and on XLA:CPU at most its share
    of `CPU_BATCH_TOKENS` (not in `plan`: the rows of a decoding batch share each read of the
    weights, so decoding gains from more rows)."""
    from lmkit.models.base import on_xla_cpu

    if not on_xla_cpu():
        return max_tokens
    cap = max(1, CPU_BATCH_TOKENS // group)
    return cap if max_tokens is None else min(max_tokens, cap)


def plan(lengths: Sequence[int] | np.ndarray, batch_size: int, limit: int | None = None,
         max_tokens: int | None = None) -> list[Batch]:
    """The batches the padding policy (module docstring) makes of rows of these `lengths`.

    >>> [(b.index.tolist(), b.width, b.rows) for b in plan([40, 3, 20], batch_size=2)]
    [([1, 2], 32, 2), ([0], 48, 2)]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if batch_size < 1:
        raise ConfigError(f"`batch_size` must be a positive integer, got {batch_size!r}")
    if limit and len(lengths) and lengths.max() > limit:
        raise ConfigError(f"a row of {int(lengths.max())} tokens is longer than the limit of {limit} "
                          f"(the model's context): truncate rows to {limit} tokens first")
    rows = min(batch_size, 1 << max(len(lengths) - 1, 0).bit_length())

    def rows_at(width: int) -> int:  # fixed by the width, so each width is one compiled shape
        return rows if max_tokens is None else max(1, min(rows, max_tokens // width))

    order = np.argsort(lengths, kind="stable")
    ranked = lengths[order]
    batches, start = [], 0
    while start < len(order):
        end = min(start + rows, len(order))
        width = padded_width(ranked[end - 1], limit)  # sorted: the last row is the longest
        if rows_at(width) < end - start:  # too many rows at that width: fill a narrower one
            width = padded_width(ranked[start + rows_at(width) - 1], limit)
            end = min(start + rows_at(width), int(np.searchsorted(ranked, width, "right")))
        batches.append(Batch(order[start:end], width, rows_at(width)))
        start = end
    return batches


def pad_rows(rows: Sequence[Any], width: int, pad_id: int = 0) -> np.ndarray:
    """`rows` (each ``(length, ...)`` ids, ``length <= width``) right-padded with `pad_id`:
    int32 ``(len(rows), width, ...)``.

    >>> pad_rows([[1, 2], [3]], 4).tolist()
    [[1, 2, 0, 0], [3, 0, 0, 0]]
    """
    arrays = [np.asarray(r, dtype=np.int32) for r in rows]
    lengths = np.asarray([len(a) for a in arrays])
    out = np.full((len(arrays), width, *arrays[0].shape[1:]), pad_id, np.int32)
    out[np.arange(width)[None, :] < lengths[:, None]] = np.concatenate(arrays)
    return out


def apply(model: Any, body: Callable[..., Any], rows: Sequence[Any], *, batch_size: int = 32,
          limit: int | None = None, pad_id: int = 0, static: Any = None, group: int = 1,
          extras: Sequence[np.ndarray] = (), per_token: bool = False,
          max_tokens: int | None = None) -> np.ndarray:
    """``body(model, tokens (B, T, ...), lengths (B,), *extras)`` over `rows` in compiled batches
    of the padding policy; its outputs stacked in the rows' order.

    An item is `group` consecutive rows that travel together (a multiple-choice example's
    choices; the body then returns one output per item); `extras` hold one entry per item
    (a span task's positions). With `per_token` the body returns ``(B, T, ...)`` and the result
    is ``(items, longest, ...)``, zero past each row's length; otherwise ``(items, ...)``.
    """
    lengths = np.asarray([len(r) for r in rows], dtype=np.int32)
    if not len(lengths) or len(lengths) % group:
        raise ConfigError(f"`rows` must hold a positive multiple of group={group} rows, got {len(lengths)}")
    out = _Gathered(len(lengths) // group, lengths if per_token else None)
    fn: Callable[..., Any] | None = None
    pending = None
    budget = _positions(max_tokens, group)
    for batch in plan(lengths.reshape(-1, group).max(axis=1), batch_size, limit, budget):
        items = np.concatenate([batch.index, np.repeat(batch.index[:1], batch.rows - len(batch.index))])
        picked = (items[:, None] * group + np.arange(group)).reshape(-1)
        args = (pad_rows([rows[r] for r in picked], batch.width, pad_id), lengths[picked],
                *(e[items] for e in extras))
        if fn is None:
            fn, values = _prepared(model, body, static, args)
        result = fn(values, *args)
        if pending is not None:  # the host copy of one batch overlaps the next one's computation
            out.put(*pending)
        pending = (batch.index, result)
    out.put(*pending)
    return out.array


def apply_packed(model: Any, body: Callable[..., Any], rows: Sequence[Any], *,
                 batch_size: int = 32, limit: int | None = None, pad_id: int = 0,
                 static: Any = None) -> np.ndarray:
    """``body(model, tokens (R, W), lengths (N,), segments (R, W), offsets (N,))`` over `rows`
    packed (`lmkit.data.packing`) into rows of one width `W` (the longest row's
    `padded_width`), `R` rows per batch (as many as `batch_size` examples fill on average, at
    most `CPU_BATCH_TOKENS` positions on XLA:CPU, evened out over the batches);
    the body returns one output per example, stacked in the rows' order.

    Every batch has the same shape (its examples filled up with copies of its first), so a call
    compiles one program, and computes about the real tokens instead of each batch's padding.
    """
    from lmkit.data.packing import first_fit, pack

    lengths = np.asarray([len(r) for r in rows], dtype=np.int32)
    if not len(lengths):
        raise ConfigError("`rows` must hold at least one row")
    width = padded_width(lengths.max(), limit)
    row_of = first_fit(lengths, width)
    total = int(row_of.max()) + 1
    per_batch = max(1, min(total, math.ceil(total * batch_size / len(lengths))))
    budget = _positions(None)
    if budget is not None:
        per_batch = min(per_batch, max(1, budget // width))
    per_batch = -(-total // -(-total // per_batch))  # evened out: no last batch of mostly padding
    groups = [g for g in (np.flatnonzero(row_of // per_batch == b)
                          for b in range(-(-total // per_batch))) if len(g)]
    examples = -(-max(map(len, groups)) // 8) * 8  # fixed per call: one compiled shape
    out = _Gathered(len(lengths), None)
    fn: Callable[..., Any] | None = None
    pending = None
    for group in groups:
        packed = pack([rows[i] for i in group], width, row_of[group] % per_batch, per_batch, pad_id)
        fill = np.zeros(examples - len(group), np.int64)  # copies of the first example
        args = (packed.tokens, np.concatenate([packed.lengths, packed.lengths[fill]]),
                packed.segments, np.concatenate([packed.offsets, packed.offsets[fill]]))
        if fn is None:
            fn, values = _prepared(model, body, static, args)
        result = fn(values, *args)
        if pending is not None:  # the host copy of one batch overlaps the next one's computation
            out.put(*pending)
        pending = (group, result)
    out.put(*pending)
    return out.array


def _prepared(model: Any, body: Callable[..., Any], static: Any, args: tuple[Any, ...],
              ) -> tuple[Callable[..., Any], list[Any]]:
    """The compiled body and the model's variable values, its weights built first; those the
    body reads only in bfloat16 (`_read_as_bfloat16`) cast once, here."""
    if not getattr(model, "built", True):
        # weights created inside a compiled trace would leak its tracers: build them eagerly
        body(model, *args, **({} if static is None else {"static": static}))
    fn, values = compiled(model, body, static), [v.value for v in model.variables]
    if getattr(model, "compute_dtype", None) == "bfloat16" and hasattr(fn, "__wrapped__"):
        narrow = _read_as_bfloat16(model, (body, static), fn, values, args)
        for i, value in zip(narrow, _to_bfloat16([values[i] for i in narrow])):
            values[i] = value
    return fn, values


def _to_bfloat16(arrays: list[Any]) -> list[Any]:
    """`arrays` as bfloat16, in one program (one compiled shape set, not one per array)."""
    return _bfloat16_cast()(arrays)


@functools.cache
def _bfloat16_cast() -> Callable[[list[Any]], list[Any]]:
    import jax
    import jax.numpy as jnp

    return jax.jit(lambda arrays: [a.astype(jnp.bfloat16) for a in arrays])


# model -> {(body, static): indices of the variables the body reads only as bfloat16}
_BFLOAT16_READS: "weakref.WeakKeyDictionary[Any, dict[Any, list[int]]]" = weakref.WeakKeyDictionary()


def _read_as_bfloat16(model: Any, key: Any, fn: Callable[..., Any], values: list[Any],
                      args: tuple[Any, ...]) -> list[int]:
    """The variables a ``mixed_bfloat16`` model's compiled body only ever converts to bfloat16
    (its kernels), read from the traced program once per body.

    Why: the float32 weights are otherwise converted on every call, every batch (a quarter of
    MiniLM's embedding time in bfloat16). Given the bfloat16 copy instead, Keras's stateless
    scope widens it to float32 and the body narrows it again, which XLA folds away: an exact
    round trip, so the results are the same bits.
    """
    import jax
    import jax.numpy as jnp

    known = _BFLOAT16_READS.setdefault(model, {})
    if key not in known:
        jaxpr = jax.make_jaxpr(fn.__wrapped__)(values, *args).jaxpr
        inputs = jaxpr.invars[:len(values)]
        uses: dict[int, list[Any]] = {id(v): [] for v in inputs}  # by identity: literals too
        for eqn in jaxpr.eqns:
            for v in eqn.invars:
                uses.get(id(v), []).append(eqn)
        returned = {id(v) for v in jaxpr.outvars}
        known[key] = [
            i for i, v in enumerate(inputs)
            if uses[id(v)] and v.aval.dtype == jnp.float32 and id(v) not in returned
            and all(e.primitive.name == "convert_element_type"
                    and e.params["new_dtype"] == jnp.bfloat16 for e in uses[id(v)])]
    return known[key]


class _Gathered:
    """Batch results written back to their items' places (one assignment per batch); per-token
    results (given the rows' `lengths`) are zero past each row's length."""

    def __init__(self, items: int, lengths: np.ndarray | None) -> None:
        self.items, self.lengths, self.array = items, lengths, np.empty(0)

    def put(self, index: np.ndarray, result: Any) -> None:
        import keras

        result = np.asarray(keras.ops.convert_to_numpy(result))[:len(index)]
        if self.lengths is None:
            if self.array.size == 0:
                self.array = np.empty((self.items, *result.shape[1:]), result.dtype)
            self.array[index] = result
            return
        if self.array.size == 0:
            longest = int(self.lengths.max())
            self.array = np.zeros((self.items, longest, *result.shape[2:]), result.dtype)
        width = min(result.shape[1], self.array.shape[1])
        real = np.arange(width)[None, :] < self.lengths[index][:, None]
        self.array[index, :width] = np.where(real.reshape(*real.shape, *[1] * (result.ndim - 2)),
                                             result[:, :width], 0)


def logits(model: Any, rows: Sequence[Any], batch_size: int = 32, limit: int | None = None,
           pad_id: int = 0) -> np.ndarray:
    """Next-token logits ``(N, longest, V)`` of a language model; row ``i`` is meaningful for its
    first ``len(rows[i])`` positions."""
    return apply(model, _logits_body, rows, batch_size=batch_size, limit=limit, pad_id=pad_id,
                 per_token=True)


def features(model: Any, rows: Sequence[Any], batch_size: int = 32, limit: int | None = None,
             pad_id: int = 0) -> np.ndarray:
    """Last hidden states ``(N, longest, H)`` (`model.features`), zero past each row's length."""
    return apply(model, _features_body, rows, batch_size=batch_size, limit=limit, pad_id=pad_id,
                 per_token=True)


def pooled(model: Any, rows: Sequence[Any], pooling: str = "mean", batch_size: int = 32,
           limit: int | None = None, pad_id: int = 0, packing: bool = False) -> np.ndarray:
    """One vector per row ``(N, H)``: the mean of the hidden states over its tokens (`mean`) or
    its first token's state (`cls`), pooled inside the compiled program. With `packing` (a
    model whose architecture has the capability ``"packing"``) short rows share packed rows
    (`apply_packed`): the same vectors within float rounding, fewer positions computed."""
    if pooling not in POOLINGS:
        raise ConfigError(f"`pooling` must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if packing:
        return apply_packed(model, _packed_pooled_body, rows, batch_size=batch_size, limit=limit,
                            pad_id=pad_id, static=pooling)
    return apply(model, _pooled_body, rows, batch_size=batch_size, limit=limit, pad_id=pad_id,
                 static=pooling)


def classify(model: Any, rows: Sequence[Any], batch_size: int = 32, limit: int | None = None,
             group: int = 1, extras: Sequence[np.ndarray] = (), packing: bool = False) -> np.ndarray:
    """A classifier's outputs ``(items, outputs)``: `model` takes ``(tokens, lengths, *extras)``
    (`lmkit.evaluation.heads`), an item being `group` rows (one per choice). With `packing` (a
    head that takes `lmkit.data.packing.Packed` inputs over a backbone with the capability
    ``"packing"``; one row per item, no extras) short rows share packed rows (`apply_packed`):
    one compiled program per call, the same outputs within float rounding."""
    if packing:
        if group != 1 or len(extras):
            raise ConfigError(f"packed classification takes one row per item and no extras, got "
                              f"group={group} and {len(extras)} extras: pass packing=False")
        return apply_packed(model, _packed_classify_body, rows, batch_size=batch_size, limit=limit)
    return apply(model, _classify_body, rows, batch_size=batch_size, limit=limit, group=group,
                 extras=extras)


def log_likelihoods(model: Any, rows: Sequence[Sequence[int]], first: Sequence[int] | np.ndarray,
                    batch_size: int = 64, limit: int | None = None) -> np.ndarray:
    """``sum(log p(row[t + 1] | row[:t + 1]) for t in range(first[i], len(row) - 1))`` per row
    (nats, float64): the log-likelihood of each row's tokens after its first ``first[i] + 1``.

    The model reads ``row[:-1]`` (at most `limit` tokens); a batch holds at most
    `LOGITS_PER_BATCH` logits, so memory is bounded however many rows there are.
    """
    pairs = [np.stack([r[:-1], r[1:]], axis=-1) for r in map(np.asarray, rows)]  # (inputs, targets)
    budget = LOGITS_PER_BATCH // int(model.vocab_size)
    sums = apply(model, _log_likelihood_body, pairs, batch_size=batch_size, limit=limit,
                 extras=(np.asarray(first, np.int32),), max_tokens=budget)
    return sums.astype(np.float64)


def greedy_log_likelihoods(model: Any, rows: Sequence[Sequence[int]], first: Sequence[int] | np.ndarray,
                           batch_size: int = 64, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`log_likelihoods` and, per row, whether each scored token is the model's most likely next
    token (greedy decoding would write them: lm-evaluation-harness's ``is_greedy``), in one pass.

    >>> ll, greedy = greedy_log_likelihoods(model, [[5, 6, 7]], [1])   # doctest: +SKIP
    """
    pairs = [np.stack([r[:-1], r[1:]], axis=-1) for r in map(np.asarray, rows)]
    both = apply(model, _greedy_log_likelihood_body, pairs, batch_size=batch_size, limit=limit,
                 extras=(np.asarray(first, np.int32),), max_tokens=LOGITS_PER_BATCH // int(model.vocab_size))
    return both[:, 0].astype(np.float64), both[:, 1] > 0


def text_nll(model: Any, tokenizer: Any, texts: Sequence[str], unit: str = "token",
             window: int | None = None, batch_size: int = 16) -> tuple[list[float], list[int]]:
    """Summed negative log-likelihood (nats) of each text, and its number of `unit`s.

    Each text is cut into windows of at most `window` tokens (the model's context when it has
    one); within a window every token after the first is predicted from the tokens before it.
    ``token`` counts the predicted tokens (compare runs with the same tokenizer only); ``word``
    (whitespace-separated) and ``byte`` (UTF-8) count the whole text, so they compare models
    with different tokenizers.

    >>> nll, units = text_nll(run.model, run.tokenizer, ["To be"], unit="byte")  # doctest: +SKIP
    """
    if unit not in UNITS:
        raise ConfigError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    window = int(window or getattr(model, "max_context", None) or 256)
    pieces, owner = [], []
    for i, text in enumerate(texts):
        ids = np.asarray(tokenizer.encode(text), dtype=np.int32)
        cuts = [ids[s:s + window] for s in range(0, len(ids), window)]
        pieces += [c for c in cuts if len(c) > 1]
        owner += [i] * sum(len(c) > 1 for c in cuts)
    ll = log_likelihoods(model, pieces, np.zeros(len(pieces), np.int32), batch_size, window) \
        if pieces else np.zeros(0)
    nll = np.bincount(np.asarray(owner, np.int64), -ll, minlength=len(texts))
    predicted = np.bincount(np.asarray(owner, np.int64), [len(p) - 1 for p in pieces], minlength=len(texts))
    if unit == "token":
        units = [int(n) for n in predicted]
    elif unit == "word":
        units = [len(t.split()) for t in texts]
    else:
        units = [len(t.encode("utf-8")) for t in texts]
    return [float(x) for x in nll], units


def perplexity(model: Any, tokenizer: Any, texts: str | Sequence[str], unit: str = "token",
               window: int | None = None, batch_size: int = 16) -> float:
    """``exp(total NLL / total units)`` of `texts` (`text_nll`): per token by default, per
    ``word`` or ``byte`` to compare models with different tokenizers.

    >>> perplexity(run.model, run.tokenizer, ["To be, or not to be"], unit="byte")  # doctest: +SKIP
    1.93
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    nll, units = text_nll(model, tokenizer, texts, unit, window, batch_size)
    if sum(units) == 0:
        raise ConfigError(f"perplexity needs at least one {unit} to predict; the texts have none "
                          f"(a text of one token predicts nothing)")
    return math.exp(sum(nll) / sum(units))


# Bodies: `body(model, tokens, lengths, *extras)` in keras.ops, compiled by `compiled`.
def _logits_body(model: Any, tokens: Any, lengths: Any) -> Any:
    return model(tokens, training=False)


def _features_body(model: Any, tokens: Any, lengths: Any) -> Any:
    return model.features(tokens, training=False)


def _pooled_body(model: Any, tokens: Any, lengths: Any, static: str) -> Any:
    """Hidden states pooled by `static` (`mean` over the first `lengths` tokens, or `cls`)."""
    from keras import ops

    return pool(ops.cast(model.features(tokens, training=False), "float32"), lengths, static)


def _packed_pooled_body(model: Any, tokens: Any, lengths: Any, segments: Any, offsets: Any,
                        static: str) -> Any:
    """`_pooled_body` of packed rows: one vector per example (`lmkit.data.packing`)."""
    from keras import ops

    hidden = model.features(tokens, training=False, segments=segments)
    return pool(ops.cast(hidden, "float32"), lengths, static, offsets)


def _classify_body(model: Any, tokens: Any, lengths: Any, *extras: Any) -> Any:
    return model((tokens, lengths, *extras), training=False)


def _packed_classify_body(model: Any, tokens: Any, lengths: Any, segments: Any, offsets: Any) -> Any:
    """`_classify_body` of packed rows: one output per example (`lmkit.data.packing`)."""
    from lmkit.data.packing import Packed

    return model(Packed(tokens, lengths, segments, offsets), training=False)


def _log_likelihood_body(model: Any, pairs: Any, lengths: Any, first: Any) -> Any:
    """Sum of log p(target) over positions ``first <= t < lengths``; `pairs` is ``(B, T, 2)``:
    the model's input tokens and, at each position, the token that follows."""
    from keras import ops

    _, picked, scored = _scored_targets(model, pairs, lengths, first)
    return ops.sum(ops.where(scored, picked, 0.0), axis=1)


def _greedy_log_likelihood_body(model: Any, pairs: Any, lengths: Any, first: Any) -> Any:
    """``(B, 2)``: `_log_likelihood_body`'s sum, and 1 where every scored target is the argmax."""
    from keras import ops

    log_probs, picked, scored = _scored_targets(model, pairs, lengths, first)
    best = ops.argmax(log_probs, axis=-1) == ops.cast(pairs[..., 1], "int32")
    greedy = ops.all(best | ~scored, axis=1)
    return ops.stack([ops.sum(ops.where(scored, picked, 0.0), axis=1), ops.cast(greedy, "float32")], axis=1)


def _scored_targets(model: Any, pairs: Any, lengths: Any, first: Any) -> tuple[Any, Any, Any]:
    """Log-probabilities ``(B, T, V)``, those of the targets ``(B, T)`` and where they count ``(B, T)``."""
    from keras import ops

    tokens, targets = pairs[..., 0], pairs[..., 1]
    log_probs = ops.log_softmax(ops.cast(model(tokens, training=False), "float32"), axis=-1)
    picked = ops.take_along_axis(log_probs, ops.cast(targets, "int32")[..., None], axis=-1)[..., 0]
    scored = _real(tokens, lengths) & (ops.arange(ops.shape(tokens)[1])[None, :] >= first[:, None])
    return log_probs, picked, scored


def pool(hidden: Any, lengths: Any, pooling: str, offsets: Any = None) -> Any:
    """One vector per example from hidden states ``(B, T, H)``: its `mean` over its `lengths`
    tokens, its first (`cls`) or `last` token's state, or `concat` (last, then mean). Example
    i starts at position ``offsets[i]`` of the flattened ``(B * T, H)`` states (packed rows,
    `lmkit.data.packing`); by default row i holds example i from its start. The one pooling of
    lmkit: `pooled` embeddings and fine-tuning's heads (`lmkit.evaluation.heads`) read it.
    """
    from keras import ops

    batch, time, width = ops.shape(hidden)[0], ops.shape(hidden)[1], ops.shape(hidden)[2]
    flat = ops.reshape(hidden, (-1, width))                                      # (B*T, H)
    lengths = ops.maximum(ops.cast(lengths, "int32"), 1)
    if offsets is None:
        offsets = ops.arange(batch, dtype="int32") * time
    offsets = ops.cast(offsets, "int32")
    if pooling == "cls":
        return ops.take(flat, offsets, axis=0)
    last = ops.take(flat, offsets + lengths - 1, axis=0)                          # (N, H)
    if pooling == "last":
        return last
    # the mean as a matmul with each example's (N, B*T) averaging weights: no (N, T, H) gather
    where = ops.arange(batch * time, dtype="int32")[None, :] - offsets[:, None]
    weights = ops.cast((where >= 0) & (where < lengths[:, None]), flat.dtype)
    mean = ops.matmul(weights, flat) / ops.cast(lengths, flat.dtype)[:, None]   # (N, H)
    return mean if pooling == "mean" else ops.concatenate([last, mean], axis=-1)


def _real(tokens: Any, lengths: Any) -> Any:
    """``(B, T)`` bool: true at each row's first `lengths` positions (its real tokens)."""
    from keras import ops

    return ops.arange(ops.shape(tokens)[1])[None, :] < ops.cast(lengths, "int32")[:, None]
