"""Text generation: samplers and incremental decoding.

Models that keep a decoding state (`gpt`'s KV cache, the recurrent models' carried ``h``/``c``)
are fed one new token per step; others recompute a fixed-size window of context each step. On
JAX both are compiled once per shape, with the model's variables passed in, through
`keras.StatelessScope`. Sampling happens on the host with NumPy, so a seed reproduces a sample on
every backend.

>>> text = generate(run.model, run.tokenizer, "ROMEO:", max_new_tokens=40, top_k=5, seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from lmkit.errors import ConfigError

__all__ = ["generate", "sample_next", "Decoder"]


def _check(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ConfigError(f"`{name}` must be {expected}, got {value!r}")


def sample_next(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None) -> int:
    """Pick the next token id from one row of logits.

    ``temperature=0`` is greedy; `top_k` keeps the k most likely tokens; `top_p` keeps the
    smallest set whose probability reaches p (nucleus sampling).

    >>> sample_next(np.array([0.0, 5.0, 1.0]), np.random.default_rng(0), temperature=0)
    1
    """
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return int(np.argmax(logits))
    logits = logits / temperature
    if top_k is not None and top_k < logits.size:
        cutoff = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits < cutoff, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, top_p)) + 1]
        mask = np.zeros_like(probs)
        mask[keep] = probs[keep]
        probs = mask / mask.sum()
    return int(rng.choice(probs.size, p=probs))


class Decoder:
    """Feeds tokens to a model and returns next-token logits, compiling on JAX.

    With ``use_cache=True`` and a model whose `init_state` gives a state, each call feeds only
    the new tokens. Otherwise each call recomputes the last `window` tokens (padded on the right
    to a fixed length, which a causal model ignores, so one compiled shape serves every length).
    """

    def __init__(self, model: Any, use_cache: bool = True, window: int = 256) -> None:
        self.model = model
        self.state = model.init_state(1) if use_cache and hasattr(model, "init_state") else None
        self.cached = self.state is not None
        self.window = int(getattr(model, "max_context", None) or window)
        self.history: list[int] = []
        self._pos = 0
        self._decode = _compiled(model, _decode_body) if self.cached else None
        self._window_logits = _compiled(model, _window_body)
        # Read once per decoder: weights do not change while it generates, and gathering them on
        # every token costs more than the decode step of a small model.
        self._values = [v.value for v in model.variables]

    def feed(self, tokens: list[int]) -> np.ndarray:
        """Append `tokens` to the context and return the logits for the token after them."""
        import keras

        self.history.extend(tokens)
        if self.cached:
            limit = self.model.max_context
            if limit is not None and self._pos + len(tokens) > limit:
                # The cache is full: restart it from the most recent half window of context.
                keep = self.history[-max(1, limit // 2):]
                self.state, self._pos, tokens = self.model.init_state(1), 0, keep
            x = np.asarray([tokens], dtype=np.int32)
            logits, self.state = self._decode(self._values, x, self.state)
            self._pos += len(tokens)
        else:
            context = self.history[-self.window:]
            x = np.zeros((1, self.window), dtype=np.int32)
            x[0, : len(context)] = context
            logits = self._window_logits(self._values, x, np.int32(len(context) - 1))
        return np.asarray(keras.ops.convert_to_numpy(logits), dtype=np.float32).reshape(-1)


# The bodies below use keras.ops only; on JAX they are jit-compiled with the weights as inputs.
def _decode_body(model: Any, tokens: Any, state: Any) -> tuple[Any, Any]:
    logits, state = model.decode(tokens, state)
    return logits[:, -1, :], state


def _window_body(model: Any, tokens: Any, last: Any) -> Any:
    from keras import ops

    logits = model(tokens, training=False)
    return ops.take(logits[0], last, axis=0)


# model -> {body: compiled function}: every `generate` call on a model reuses its compilations.
_COMPILED: "weakref.WeakKeyDictionary[Any, dict[Callable[..., Any], Callable[..., Any]]]" = (
    weakref.WeakKeyDictionary())


def _compiled(model: Any, body: Callable[..., Any]) -> Callable[..., Any]:
    """`body(model, *args)` as ``fn(values, *args)``, `values` being the model's variable values.

    On JAX it is compiled once per model and shape; elsewhere `values` is ignored and the body
    runs eagerly on the model's own variables.
    """
    import keras

    if keras.backend.backend() != "jax":
        return lambda values, *args: body(model, *args)
    per_model = _COMPILED.setdefault(model, {})
    if body not in per_model:
        import jax

        variables = model.variables
        model_ref = weakref.ref(model)  # the cache must not keep the model alive

        @jax.jit
        def pure(values: list[Any], *args: Any) -> Any:
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return body(model_ref(), *args)

        per_model[body] = pure
    return per_model[body]


def generate(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 200,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, stop: str | None = None, use_cache: bool = True) -> str:
    """Continue `prompt` by up to `max_new_tokens` tokens and return only the new text.

    Generation ends early when the text produced contains `stop` (which is cut off).
    """
    _check("max_new_tokens", max_new_tokens, isinstance(max_new_tokens, int) and max_new_tokens >= 0,
           "a non-negative integer")
    _check("temperature", temperature, isinstance(temperature, (int, float)) and temperature >= 0,
           "a number >= 0 (0 is greedy)")
    _check("top_k", top_k, top_k is None or (isinstance(top_k, int) and top_k >= 1),
           "a positive integer or None")
    _check("top_p", top_p, top_p is None or (isinstance(top_p, (int, float)) and 0 < top_p <= 1),
           "a number in (0, 1] or None")
    _check("prompt", prompt, isinstance(prompt, str) and prompt != "",
           "a non-empty string (the model needs at least one token of context)")
    ids = list(tokenizer.encode(prompt))
    if not ids:
        raise ConfigError(f"prompt {prompt!r} encodes to no tokens")
    rng = np.random.default_rng(seed)
    decoder = Decoder(model, use_cache=use_cache)
    logits = decoder.feed(ids)
    new: list[int] = []
    text = ""
    for _ in range(max_new_tokens):
        token = sample_next(logits, rng, temperature, top_k, top_p)
        new.append(token)
        if stop:
            text = tokenizer.decode(new)
            if stop in text:
                return text[: text.index(stop)]
        if len(new) < max_new_tokens:
            logits = decoder.feed([token])
    return tokenizer.decode(new)
