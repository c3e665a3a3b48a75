"""Text generation: samplers and incremental decoding.

Models that keep a decoding state (`gpt`'s KV cache, the recurrent models' carried ``h``/``c``)
are fed one new token per step; others recompute a fixed-size window of context each step.

On JAX the whole sampling loop runs compiled on the device: one dispatch produces up to
`CHUNK` tokens (model step, sampling and, for `gpt`, the cache restart when its context is
full), compiled by `lmkit.forward.compiled` (the model's variables passed in through
`keras.StatelessScope`), so a token costs a decode step and not a round trip through Python.
Sampling there draws from `jax.random`; on other backends it happens on the host with NumPy
(`sample_next`). Either way a seed reproduces a sample on the same backend.

>>> text = generate(run.model, run.tokenizer, "ROMEO:", max_new_tokens=40, top_k=5, seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmkit.errors import ConfigError
from lmkit.forward import compiled

__all__ = ["generate", "lower_generate", "sample_next", "Decoder", "Sampling", "CHUNK"]

CHUNK = 64  # most tokens one compiled dispatch produces; a stop string is checked between them
#: Longest prompt `Decoder.generate` feeds inside the sampling loop, one token a step. Past it, a
#: prompt program (one pass over the prompt, compiled once per length) is faster on repeated
#: calls: for a 6 x 384 gpt with GPT-2's vocabulary on 2 CPU cores, 16 tokens cost the same
#: either way and 64 tokens 2-3x more in the loop.
LOOP_PROMPT = 16


def _check(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ConfigError(f"`{name}` must be {expected}, got {value!r}")


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked: ``temperature=0`` is greedy, `top_k` keeps the k most likely
    tokens, `top_p` the smallest set whose probability reaches p (nucleus sampling). Ids in
    `banned` are never picked (`generate` bans the tokenizer's ``unknown_id``)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    banned: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        t, k, p = self.temperature, self.top_k, self.top_p
        _check("temperature", t, isinstance(t, (int, float)) and 0 <= t < math.inf,
               "a finite number >= 0 (0 is greedy)")
        _check("top_k", k, k is None or (isinstance(k, int) and k >= 1), "a positive integer or None")
        _check("top_p", p, p is None or (isinstance(p, (int, float)) and 0 < p <= 1),
               "a number in (0, 1] or None")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def nucleus(self) -> bool:
        return self.top_p is not None and self.top_p < 1.0


def sample_next(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None,
                banned: tuple[int, ...] = ()) -> int:
    """Pick the next token id from one row of logits, on the host with NumPy.

    ``temperature=0`` is greedy; `top_k` keeps the k most likely tokens; `top_p` keeps the
    smallest set whose probability reaches p (nucleus sampling); ids in `banned` are never picked.

    >>> sample_next(np.array([0.0, 5.0, 1.0]), np.random.default_rng(0), temperature=0)
    1
    >>> sample_next(np.array([0.0, 5.0, 1.0]), np.random.default_rng(0), temperature=0, banned=(1,))
    2
    """
    logits = np.array(logits, dtype=np.float64)
    logits[list(banned)] = -np.inf
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


def _pick_on_device(logits: Any, key: Any, temperature: Any, top_p: Any, sampling: Sampling) -> Any:
    """`sample_next` for JAX, traced: the same rules, drawing with `jax.random`."""
    import jax
    import jax.numpy as jnp

    logits = jnp.asarray(logits, jnp.float32)
    if sampling.banned:
        logits = logits.at[jnp.asarray(sampling.banned)].set(-jnp.inf)
    if sampling.greedy:
        return jnp.argmax(logits).astype(jnp.int32)
    logits = logits / temperature
    if sampling.top_k is not None and sampling.top_k < logits.shape[-1]:
        cutoff = jax.lax.top_k(logits, sampling.top_k)[0][-1]
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    if sampling.nucleus:
        order = jnp.argsort(-logits)
        probs = jax.nn.softmax(logits[order])
        # Keep a token while the probability before it is short of p: the first token that
        # reaches p is the last one kept, as in `sample_next`.
        keep = (jnp.cumsum(probs) - probs) < top_p
        logits = jnp.where(jnp.zeros_like(keep).at[order].set(keep), logits, -jnp.inf)
    return jax.random.categorical(key, logits).astype(jnp.int32)


class Decoder:
    """Feeds tokens to a model and produces next tokens, compiling on JAX.

    With ``use_cache=True`` and a model whose `init_state` gives a state, each step feeds only
    the new token. Otherwise each step recomputes the last `window` tokens (padded on the right
    to a fixed length, which a causal model ignores, so one compiled shape serves every length).
    `feed` appends tokens and returns the logits that follow; `sample` continues from there.
    """

    def __init__(self, model: Any, use_cache: bool = True, window: int = 256) -> None:
        import keras

        self.model = model
        self.state = model.init_state(1) if use_cache and hasattr(model, "init_state") else None
        self.cached = self.state is not None
        self.window = int(getattr(model, "max_context", None) or window)
        limit = getattr(model, "max_context", None)
        self.limit: int | None = int(limit) if self.cached and limit else None
        # When the cache is full, it restarts from the most recent `keep` tokens.
        self.keep = max(1, self.limit // 2) if self.limit else 0
        self.history: list[int] = []
        self.logits: Any = None
        self._pos = 0
        self._on_device = keras.backend.backend() == "jax"
        self._decode = compiled(model, _decode_body) if self.cached else None
        self._window_logits = compiled(model, _window_body)
        # Read once per decoder: weights do not change while it generates, and gathering them on
        # every call costs more than the decode step of a small model.
        self._values = [v.value for v in model.variables]

    def feed(self, tokens: list[int]) -> np.ndarray:
        """Append `tokens` to the context and return the logits for the token after them."""
        import keras

        self.history.extend(tokens)
        if self.cached:
            if self.limit is not None and self._pos + len(tokens) > self.limit:
                # The cache is full: restart it from the most recent half window of context.
                tokens = self.history[-self.keep:]
                self.state, self._pos = self.model.init_state(1), 0
            x = np.asarray([tokens], dtype=np.int32)
            logits, self.state = self._decode(self._values, x, self.state)
            self._pos += len(tokens)
        else:
            context = self.history[-self.window:]
            x = np.zeros((1, self.window), dtype=np.int32)
            x[0, : len(context)] = context
            logits = self._window_logits(self._values, x, np.int32(len(context) - 1))
        self.logits = logits
        return np.asarray(keras.ops.convert_to_numpy(logits), dtype=np.float32).reshape(-1)

    def sample(self, n: int, sampling: Sampling = Sampling(), seed: int | None = None,
               ) -> Iterator[list[int]]:
        """Generate `n` tokens after what was fed, yielding them in chunks of up to `CHUNK`.

        Every token produced is fed back, so `feed` and `sample` can be mixed. Needs a `feed`
        first (the prompt).
        """
        if self.logits is None:
            raise ConfigError("Decoder.sample needs context: call feed(prompt_tokens) first")
        if self._on_device:
            yield from self._sample_on_device(n, sampling, seed)
            return
        import keras

        rng = np.random.default_rng(seed)
        logits = np.asarray(keras.ops.convert_to_numpy(self.logits), dtype=np.float32).reshape(-1)
        done = 0
        while done < n:
            chunk = []
            for _ in range(min(CHUNK, n - done)):
                chunk.append(sample_next(logits, rng, sampling.temperature, sampling.top_k,
                                         sampling.top_p, sampling.banned))
                logits = self.feed(chunk[-1:])
            done += len(chunk)
            yield chunk

    def generate(self, prompt: list[int], n: int, sampling: Sampling = Sampling(),
                 seed: int | None = None) -> Iterator[list[int]]:
        """``feed(prompt)`` then ``sample(n, sampling, seed)``, yielding the new tokens.

        On JAX a prompt of up to `LOOP_PROMPT` tokens (and no longer than the cache) is fed
        inside the sampling loop, so the loop is the only program and a new prompt length
        compiles nothing (a prompt program costs half a second or more on a CPU); its tokens go
        through the model one a step instead of in one pass, which is why longer prompts are
        fed first. The draws are those of feeding the prompt first: the random key moves only
        when a token is sampled.

        >>> tokens = [t for chunk in Decoder(model).generate([5, 7], 40) for t in chunk]  # doctest: +SKIP
        """
        if n <= 0 or not self._forced_prompt(prompt):
            self.feed(prompt)
            yield from self.sample(n, sampling, seed)
            return
        yield from self._sample_on_device(n, sampling, seed, list(prompt))

    def _forced_prompt(self, prompt: list[int]) -> bool:
        """Whether `generate` feeds `prompt` inside the compiled sampling loop (which starts
        from blank logits of the model's `vocab_size`)."""
        return (self._on_device and 0 < len(prompt) <= LOOP_PROMPT
                and hasattr(self.model, "vocab_size")
                and (self.limit is None or self._pos + len(prompt) <= self.limit))

    def lower(self, prompt: list[int], sampling: Sampling = Sampling()) -> list[Any]:
        """The programs ``generate(prompt, n, sampling)`` runs, lowered but neither compiled
        nor run (JAX only): once they are compiled ahead, e.g. beside a training, the same
        calls on this model compile nothing (JAX keeps them in memory). The model's weights may
        still change: only their shapes count."""
        import jax.numpy as jnp

        if self._forced_prompt(prompt):
            loop, args = self._loop_inputs(sampling, 0, self._no_logits(), prompt)
            return [loop.lower(self._values, *args)]
        if self.limit is not None and len(prompt) > self.limit:  # as `feed` restarts the cache
            prompt = prompt[-self.keep:]
        x = np.asarray([prompt], dtype=np.int32)
        if self.cached:
            feed = self._decode.lower(self._values, x, self.state)
        else:
            feed = self._window_logits.lower(self._values, np.zeros((1, self.window), np.int32),
                                             np.int32(len(prompt) - 1))
        logits = feed.out_info[0] if self.cached else feed.out_info
        self.history = list(prompt)  # the context `feed` leaves, for the loop's inputs
        loop, args = self._loop_inputs(sampling, 0, jnp.zeros(logits.shape[-1], logits.dtype))
        self.history = []
        return [feed, loop.lower(self._values, *args)]

    def _no_logits(self) -> Any:
        """Logits before any context: never sampled (the loop's first steps are the prompt's)."""
        import jax.numpy as jnp

        return jnp.zeros(self.model.vocab_size, jnp.float32)

    def _loop_inputs(self, sampling: Sampling, seed: int, logits: Any,
                     forced: list[int] | None = None) -> tuple[Any, tuple]:
        """The compiled sampling loop and its inputs but the weights: ``(carry, steps,
        temperature, top_p, forced, n_forced)``, `steps` being one `CHUNK` and `forced` the
        tokens its first steps feed instead of sampling."""
        import jax
        import jax.numpy as jnp

        body = _cached_loop if self.cached else _window_loop
        # Only what changes the program is static: temperature and top_p are traced arguments,
        # so moving a slider in the generation widget does not recompile.
        program = Sampling(0 if sampling.greedy else 1.0, sampling.top_k,
                           0.5 if sampling.nucleus else None, sampling.banned)
        loop = compiled(self.model, body, (program, self.limit, self.keep, self.window))
        if self.cached:
            recent = np.zeros(max(1, self.keep), dtype=np.int32)
            tail = self.history[-self.keep:] if self.keep else []
            recent[len(recent) - len(tail):] = tail
            context: Any = (self.state, jnp.int32(self._pos), recent)
        else:
            tail = self.history[-self.window:]
            buffer = np.zeros(self.window, dtype=np.int32)
            buffer[: len(tail)] = tail
            context = (buffer, jnp.int32(len(tail)))
        carry = (jnp.reshape(logits, (-1,)), jax.random.key(seed), context)
        forced = forced or []
        prompt = np.zeros(CHUNK, dtype=np.int32)
        prompt[: len(forced)] = forced
        return loop, (carry, np.int32(CHUNK), np.float32(sampling.temperature or 1.0),
                      np.float32(sampling.top_p or 1.0), prompt, np.int32(len(forced)))

    def _sample_on_device(self, n: int, sampling: Sampling, seed: int | None,
                          forced: list[int] | None = None) -> Iterator[list[int]]:
        """`n` sampled tokens after `forced` ones (a prompt, at most `LOOP_PROMPT`) fed first."""
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        forced = forced or []
        logits = self._no_logits() if self.logits is None else self.logits
        loop, (carry, _, temperature, top_p, prompt, n_forced) = self._loop_inputs(
            sampling, seed, logits, forced)
        done = 0
        while done < n:
            steps = min(CHUNK - int(n_forced), n - done)
            carry, tokens = loop(self._values, carry, np.int32(n_forced + steps), temperature,
                                 top_p, prompt, n_forced)
            chunk = np.asarray(tokens)[int(n_forced):][:steps].tolist()
            self.history.extend(forced)
            forced, n_forced = [], np.int32(0)
            done += steps
            self.history.extend(chunk)
            self.logits = carry[0]
            if self.cached:
                self.state, pos, _ = carry[2]
                self._pos = int(pos)
            yield chunk


# The bodies below use keras.ops for the model; on JAX they are jit-compiled with the weights
# as inputs. The `*_loop` bodies are JAX-only: they run `steps` sampling steps on the device.
def _decode_body(model: Any, tokens: Any, state: Any) -> tuple[Any, Any]:
    logits, state = model.decode(tokens, state)
    return logits[:, -1, :], state


def _window_body(model: Any, tokens: Any, last: Any) -> Any:
    from keras import ops

    logits = model(tokens, training=False)
    return ops.take(logits[0], last, axis=0)


def _run_loop(step: Callable[[Any, Any], tuple[Any, Any]], carry: Any, steps: Any,
              temperature: Any, top_p: Any, forced: Any, n_forced: Any,
              sampling: Sampling) -> tuple[Any, Any]:
    """`steps` (traced, <= CHUNK) iterations of pick-then-feed; the tokens in a CHUNK buffer.
    The first `n_forced` steps feed ``forced[i]`` instead of a pick and leave the random key
    as it is, so a prompt fed here draws the same sample as one fed before the loop."""
    import jax
    import jax.numpy as jnp

    def one(i: Any, loop_carry: Any) -> Any:
        (logits, key, context), out = loop_carry
        next_key, draw = jax.random.split(key)
        prompt = i < n_forced
        token = jnp.where(prompt, forced[i], _pick_on_device(logits, draw, temperature, top_p,
                                                              sampling))
        key = jax.random.wrap_key_data(jnp.where(prompt, jax.random.key_data(key),
                                                 jax.random.key_data(next_key)))
        logits, context = step(token, context)
        return (logits, key, context), out.at[i].set(token)

    return jax.lax.fori_loop(0, steps, one, (carry, jnp.zeros(CHUNK, jnp.int32)))


def _cached_loop(model: Any, carry: Any, steps: Any, temperature: Any, top_p: Any, forced: Any,
                 n_forced: Any, *, static: tuple[Sampling, int | None, int, int]) -> tuple[Any, Any]:
    import jax
    import jax.numpy as jnp

    sampling, limit, keep, _ = static

    def step(token: Any, context: Any) -> Any:
        state, pos, recent = context
        recent = jnp.concatenate([recent[1:], token[None]])  # the last `keep` tokens
        feed_one = lambda: _decode_body(model, token[None, None], state)  # noqa: E731
        if limit is None:
            logits, state = feed_one()
            return logits[0], (state, pos + 1, recent)
        # Full cache: restart from the last half window, as `Decoder.feed` does.
        restart = lambda: _decode_body(model, recent[None], model.init_state(1))  # noqa: E731
        logits, state = jax.lax.cond(pos >= limit, restart, feed_one)
        return logits[0], (state, jnp.where(pos >= limit, keep, pos + 1), recent)

    return _run_loop(step, carry, steps, temperature, top_p, forced, n_forced, sampling)


def _window_loop(model: Any, carry: Any, steps: Any, temperature: Any, top_p: Any, forced: Any,
                 n_forced: Any, *, static: tuple[Sampling, int | None, int, int]) -> tuple[Any, Any]:
    import jax.numpy as jnp

    sampling, _, _, window = static

    def step(token: Any, context: Any) -> Any:
        buffer, length = context
        full = length >= window
        buffer = jnp.where(full, jnp.concatenate([buffer[1:], token[None]]),
                           buffer.at[jnp.minimum(length, window - 1)].set(token))
        length = jnp.minimum(length + 1, window)
        return _window_body(model, buffer[None], length - 1), (buffer, length)

    return _run_loop(step, carry, steps, temperature, top_p, forced, n_forced, sampling)


def generate(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 200,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, stop: str | None = None, use_cache: bool = True,
             include_prompt: bool = False) -> str:
    """Continue `prompt` by up to `max_new_tokens` tokens and return the new text, after the
    prompt itself with `include_prompt`.

    The rule for showing the prompt (README, "Generating text"): a function returns only what it made
    unless asked (`include_prompt`), so ``prompt + text`` composes; what shows text to a person
    (``lmkit generate``, ``%lmgenerate``, the widget) shows the prompt unless told not to
    (``--no-prompt``, the widget's "Show prompt" box). Generation ends early when the text produced contains `stop` (which is cut off). The
    tokenizer's unknown id (`Tokenizer.unknown_id`) is never sampled: it is a placeholder that
    would print as U+FFFD or ``<unk>``.
    """
    _check("max_new_tokens", max_new_tokens, isinstance(max_new_tokens, int) and max_new_tokens >= 0,
           "a non-negative integer")
    sampling = _sampling(tokenizer, temperature, top_k, top_p)
    _check("prompt", prompt, isinstance(prompt, str) and prompt != "",
           "a non-empty string (the model needs at least one token of context)")
    vocab = getattr(tokenizer, "vocab_size", None)
    if top_k is not None and vocab is not None and top_k > vocab:
        raise ConfigError(f"top_k={top_k} is larger than the vocabulary ({vocab} tokens), so it "
                          f"keeps every token; use a top_k of at most {vocab}, or none")
    ids = list(tokenizer.encode(prompt))
    if not ids:
        raise ConfigError(f"prompt {prompt!r} encodes to no tokens")
    text = _continue(model, tokenizer, ids, max_new_tokens, sampling, seed, stop, use_cache)
    return prompt + text if include_prompt else text


def lower_generate(model: Any, tokenizer: Any, prompt: str, temperature: float = 1.0,
                   top_k: int | None = None, top_p: float | None = None) -> list[Any]:
    """The compiled programs of ``generate(model, tokenizer, prompt, temperature=..., top_k=...,
    top_p=...)``, lowered, not run (JAX only; see `Decoder.lower`): `lmkit train` compiles its
    final sample's programs beside the training step this way."""
    decoder = Decoder(model)
    return decoder.lower(list(tokenizer.encode(prompt)), _sampling(tokenizer, temperature, top_k, top_p))


def _sampling(tokenizer: Any, temperature: float, top_k: int | None, top_p: float | None) -> Sampling:
    """`generate`'s sampling rules: the tokenizer's unknown id is never sampled."""
    unknown = getattr(tokenizer, "unknown_id", None)
    return Sampling(temperature, top_k, top_p, () if unknown is None else (unknown,))


def _continue(model: Any, tokenizer: Any, ids: list[int], max_new_tokens: int, sampling: Sampling,
              seed: int | None, stop: str | None, use_cache: bool) -> str:
    """The text of up to `max_new_tokens` new tokens after `ids`, cut before `stop`."""
    if max_new_tokens == 0:
        return ""
    decoder = Decoder(model, use_cache=use_cache)
    new: list[int] = []
    for chunk in decoder.generate(ids, max_new_tokens, sampling, seed):
        new.extend(chunk)
        if stop:
            text = tokenizer.decode(new)
            if stop in text:
                return text[: text.index(stop)]
    return tokenizer.decode(new)
