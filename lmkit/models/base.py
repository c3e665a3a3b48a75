"""`LanguageModel`: the contract every lmkit architecture fulfils, and the pieces they share.

A language model maps int tokens ``(B, T)`` to next-token logits ``(B, T, V)`` at every position,
and can continue a sequence incrementally::

    >>> model = lmkit.registry.architectures.get("lstm")(vocab_size=65)    # doctest: +SKIP
    >>> logits = model(tokens)                          # (B, T, 65), float32
    >>> state = model.init_state(batch_size=B)          # tensors, or None
    >>> logits, state = model.decode(next_tokens, state)

`decode` is pure: it returns the new state instead of storing it, so the generator can run it
under ``jax.jit`` inside ``keras.StatelessScope`` with the variables passed in.

Logits are float32 even under the ``mixed_bfloat16`` policy: the embedding and output weights are
created with ``autocast=False`` (so they stay float32 when read in `call`) and the final matmul runs
in float32, because softmax over a large vocabulary loses too much in bfloat16.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, NamedTuple

import keras
import numpy as np
from keras import ops

from lmkit._scoped import scoped
from lmkit.errors import ConfigError

__all__ = [
    "LanguageModel",
    "check_positive_int",
    "check_rate",
    "check_choice",
    "check_bool",
    "HFWeight",
    "HostNormal",
    "undrawn_weights",
    "Dropout",
    "PACKING",
    "STATES_AT",
    "REWIND",
    "segment_masks",
    "MASKED",
    "dense",
    "matmul",
    "low_rank_terms",
    "on_xla_cpu",
    "tied_logits",
    "row_views",
]

#: an attention score that is masked out: finite, so a row with every key masked (padding)
#: softmaxes to equal weights instead of NaN
MASKED = -1e9

#: capability of an architecture entry whose `features` take `segments`: several examples in
#: one row, attending only within their own segment, positions restarting at each
#: (`lmkit.data.packing`); the others are fed one example per row, padded
PACKING = "packing"
#: capability of an architecture entry whose `features` take `at`, flat positions ``(N,)`` of the
#: ``(B * T)`` tokens, and return the hidden states ``(N, H)`` there alone, the last layer
#: computed only for those queries (a classifier reading each example's first token: the last
#: layer's other positions would be computed and dropped)
STATES_AT = "states_at"
#: capability of an architecture entry whose decoding state has one write position shared by all
#: rows (a KV cache): its models have ``rewind_state(state, position)``, so a batch of prompts can
#: be fed whole, padding included, and decoding resume at `position` (`lmkit.decoding`)
REWIND = "rewind"


def segment_masks(segments: Any) -> tuple[Any, Any]:
    """``(same (B, T, T), positions (B, T))`` of packed rows: whether query t and key s are in
    the same segment (padding, segment 0, only sees padding), and each token's position within
    its segment (0 at its first token).

    Segments are contiguous runs in a row, so "same segment and not after the query" is also
    the causal mask a decoder needs; a (B, T, T) count costs less than the attention it masks.

    >>> same, positions = segment_masks(np.array([[1, 1, 2, 0]]))   # doctest: +SKIP
    >>> positions.tolist()                                           # doctest: +SKIP
    [[0, 1, 0, 0]]
    """
    segments = ops.cast(segments, "int32")
    same = ops.equal(segments[:, :, None], segments[:, None, :])              # (B, T, T)
    index = ops.arange(ops.shape(segments)[1], dtype="int32")
    earlier = ops.logical_and(same, index[None, None, :] < index[None, :, None])
    return same, ops.sum(ops.cast(earlier, "int32"), axis=-1)

State = Any  # a tuple / dict of tensors, or None


@keras.saving.register_keras_serializable(package="lmkit")
class HostNormal(keras.initializers.Initializer):
    """Weights drawn from N(0, `stddev`) on the host by NumPy's global generator (which
    `keras.utils.set_random_seed` seeds, so equal seeds give equal weights); ``stddev=0`` gives
    zeros, and so does every call inside `undrawn_weights`.

    Keras's `RandomNormal` runs a compiled random-number program, one compilation per weight
    shape (0.5–1 s each on a cold compilation cache on a CPU): a few seconds of a short training
    spent before its first step. This compiles nothing: on JAX the array is placed on the
    device as it is (``jnp.asarray`` would compile a copy program per shape).

    >>> HostNormal(0.02)((2, 3)).shape
    (2, 3)
    """

    def __init__(self, stddev: float = 0.05) -> None:
        self.stddev = float(stddev)

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
        if not self.stddev or _UNDRAWN.get():
            array = np.zeros(shape, dtype=dtype)
        else:
            array = np.random.normal(0.0, self.stddev, size=shape).astype(dtype)
        if keras.backend.backend() != "jax":
            return array
        import jax

        return jax.device_put(array)

    def get_config(self) -> dict[str, Any]:
        return {"stddev": self.stddev}


# Set while weights are created that a checkpoint then replaces, every one (`undrawn_weights`)
_UNDRAWN: ContextVar[bool] = ContextVar("lmkit_undrawn", default=False)


@contextmanager
def undrawn_weights() -> Iterator[None]:
    """While the block runs, `HostNormal` draws nothing and gives zeros: for a model whose every
    weight is assigned next (a checkpoint's). Drawing MiniLM's 22.7 million numbers only to
    replace them took 0.6 s of its 1 s load.

    >>> with undrawn_weights():                      # doctest: +SKIP
    ...     create_weights(model)
    >>> model.set_weights(stored)
    """
    with scoped(_UNDRAWN, True):
        yield


class HFWeight(NamedTuple):
    """Where one of a model's variables comes from in a Hugging Face checkpoint.

    `names` are the checkpoint's tensor names (several are concatenated on the last axis, as a
    fused query-key-value matrix is from three); `transpose` is true for a PyTorch ``Linear``
    weight, stored ``(out, in)`` where lmkit multiplies by ``(in, out)``. No `names`: the
    checkpoint has no such tensor, and the variable keeps the constant it is built with (GPT-2's
    absent head bias, zero; a drawn weight is left zero by a checkpoint's build).
    """

    variable: Any
    names: tuple[str, ...]
    transpose: bool = False


def _mix(x: Any) -> Any:
    """MurmurHash3's 32-bit finalizer: a bijection of uint32 that scatters every input bit."""
    import jax.numpy as jnp

    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


@keras.saving.register_keras_serializable(package="lmkit")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` whose mask, on JAX, is a counter hash instead of `jax.random`.

    Why: on a CPU, `jax.random.bernoulli` (threefry) costs ~55 ns per element, and a BERT
    layer's attention and hidden dropouts draw B*T*(H*T + 2*D) of them: ~20 % of MiniLM's
    fine-tuning step. Two rounds of MurmurHash3's finalizer over ``(element index, seed)`` cost
    ~1 ns per element and keep each unit independently with probability ``1 - rate``. The
    seed comes from the layer's `SeedGenerator`, as Keras's does, so masks change every step
    and follow the layer's seed. Other backends (and `noise_shape`) use Keras's dropout.
    """

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training or self.rate <= 0 or self.noise_shape is not None \
                or keras.backend.backend() != "jax":
            return super().call(inputs, training=training)
        import jax
        import jax.numpy as jnp

        seed = jnp.asarray(self.seed_generator.next(), jnp.uint32)          # (2,)
        key_a = _mix(seed[0] * jnp.uint32(0x9E3779B9) + seed[1])
        key_b = _mix(key_a ^ jnp.uint32(0x5BD1E995) ^ seed[1])
        index = jax.lax.iota(jnp.uint32, math.prod(inputs.shape))
        bits = _mix(_mix(index * jnp.uint32(0x9E3779B9) + key_a) ^ key_b)
        keep = bits < jnp.uint32(min(int((1.0 - self.rate) * 2.0**32), 2**32 - 1))
        keep = jnp.reshape(keep, inputs.shape)
        return jnp.where(keep, inputs / jnp.asarray(1.0 - self.rate, inputs.dtype),
                         jnp.zeros((), inputs.dtype))


# Low-rank terms a training step attaches to kernels (LoRA, `lmkit.adapters.lora`), keyed by
# the kernel variable's id; `dense` reads them while the step traces the model
_LOW_RANK: ContextVar[Mapping[int, tuple[Any, Any]]] = ContextVar("lmkit_low_rank", default={})


@contextmanager
def low_rank_terms(terms: Iterable[tuple[Any, tuple[Any, Any]]]) -> Iterator[None]:
    """While the block runs, `dense` with a kernel ``W`` of `terms` (pairs ``(variable, (a,
    b))``, ``a (in, r)``, ``b (r, out)``) computes ``x W + (x a) b``.

    Why not ``x (W + a b)``: the gradient of a merged kernel is ``xᵀ dy``, a matmul as large as
    full fine-tuning's, where the factored form differentiates ``a`` and ``b`` at rank r.

    >>> with low_rank_terms([(layer.w_qkv, (a, b))]):       # doctest: +SKIP
    ...     outputs = model(x)
    """
    with scoped(_LOW_RANK, {id(kernel): term for kernel, term in terms}):
        yield


# Gathered rows a training step gives in place of token tables (`lmkit.param_groups.RowSparse`),
# keyed by the table variable's id; `LanguageModel._embed` reads them while the step traces
_ROW_VIEWS: ContextVar[Mapping[int, tuple[Any, Any]]] = ContextVar("lmkit_row_views", default={})


@contextmanager
def row_views(views: Iterable[tuple[Any, tuple[Any, Any]]]) -> Iterator[None]:
    """While the block runs, a token table ``T`` of `views` (pairs ``(variable, (rows, ids))``:
    ``rows`` ``(R, D)`` are ``T[ids]``, `ids` ``(R,)`` sorted, each token of the batch among
    them) is read from `rows` instead of `T`.

    Why: the gradient of ``T[tokens]`` is a ``(V, D)`` array, zero but at the batch's rows and
    written whole every step (47 MB for BERT's vocabulary); that of ``rows`` is ``(R, D)``.

    >>> with row_views([(model.embedding, (table[ids], ids))]):    # doctest: +SKIP
    ...     outputs = model(tokens)
    """
    with scoped(_ROW_VIEWS, {id(table): view for table, view in views}):
        yield


def dense(x: Any, kernel: Any, bias: Any = None) -> Any:
    """``x @ kernel + bias`` (no bias: None), plus the low-rank term `low_rank_terms` attached to
    `kernel` (none outside a LoRA training step). Architectures whose every 2-D kernel goes
    through it set `LanguageModel.low_rank_kernels`. On JAX with bfloat16 ``x`` the bias's
    gradient is summed in float32 (`lmkit.models.bf16_matmul.bf16_add_bias` says why).

    >>> dense(ops.ones((2, 3)), ops.ones((3, 4)), ops.zeros((4,))).shape
    (2, 4)
    """
    y = matmul(x, kernel)
    term = _LOW_RANK.get().get(id(kernel))
    if term is not None:
        a, b = (ops.cast(t, y.dtype) for t in term)
        y = y + matmul(matmul(x, a), b)
    if bias is None:
        return y
    if keras.backend.standardize_dtype(y.dtype) != "bfloat16" or keras.backend.backend() != "jax":
        return y + bias
    from lmkit.models.bf16_matmul import bf16_add_bias

    return bf16_add_bias(ops.convert_to_tensor(y), ops.cast(bias, "bfloat16"))


def matmul(x: Any, kernel: Any) -> Any:
    """``x @ kernel``. On JAX, bfloat16 activations (the ``mixed_bfloat16`` policy) multiply a
    bfloat16 copy of `kernel` with float32 sums (`lmkit.models.bf16_matmul`): several times
    faster than ``ops.matmul`` on CPUs with bfloat16 units (AMX), with the same result.

    >>> matmul(ops.ones((2, 3)), ops.ones((3, 4))).shape
    (2, 4)
    """
    if keras.backend.standardize_dtype(x.dtype) != "bfloat16" or keras.backend.backend() != "jax":
        return ops.matmul(x, kernel)
    from lmkit.models.bf16_matmul import bf16_matmul

    return bf16_matmul(ops.convert_to_tensor(x), ops.cast(kernel, "bfloat16"))


#: Rows of ``h`` for which `tied_logits` multiplies and sums on XLA:CPU (its docstring says why)
_FEW_ROWS = range(2, 33)


def tied_logits(h: Any, table: Any) -> Any:
    """``h @ table.T``: rows ``(N, D)`` against a token table ``(V, D)``, logits ``(N, V)``.

    Why not always the product: on XLA:CPU a product with 2 to 32 rows (decoding's batch of
    prompts and beams) runs YNNPACK's small-matrix kernel on one thread, while the same sum
    written as multiply-and-reduce over ``D`` is split over every core (GPT-2's 50,257 x 384
    table, 8 rows, 2 AMD Zen 4 cores: 5.4 -> 3.7 ms of a greedy decoding step, `lmkit bench
    decode_hf`). One row is a fast matrix-vector product already (the sum would be 200x slower)
    and from 64 rows the product wins again. Only the order of the additions differs; the gradient is the
    product's.

    >>> tied_logits(ops.ones((8, 3)), ops.ones((5, 3))).shape
    (8, 5)
    """
    if ops.shape(h)[0] in _FEW_ROWS and on_xla_cpu():
        return _summed_logits()(ops.convert_to_tensor(h), ops.convert_to_tensor(table))
    return ops.matmul(h, ops.transpose(table))


@functools.cache
def _summed_logits() -> Any:
    """`tied_logits`' multiply-and-sum on JAX, differentiated as the product: the sum's own
    gradient materialises the ``(V, N, D)`` products (7.4 GB for GPT-2's table and 32 rows)."""
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def logits(h: Any, table: Any) -> Any:
        return jnp.sum(table[:, None, :] * h[None], axis=-1).T

    def forward(h: Any, table: Any) -> tuple[Any, tuple[Any, Any]]:
        return logits(h, table), (h, table)

    def backward(saved: tuple[Any, Any], grad: Any) -> tuple[Any, Any]:
        h, table = saved
        return grad @ table, grad.T @ h

    logits.defvjp(forward, backward)
    return logits


def on_xla_cpu() -> bool:
    """Whether Keras runs on JAX with a CPU as its device (XLA:CPU), where some forms of a
    computation are chosen for its kernels and caches (`tied_logits`, `lmkit.forward`)."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


# -- constructor argument checks (errors of the form "`units` must be ..., got -3") ---------------
def check_positive_int(name: str, value: Any) -> int:
    """Return `value` if it is an int >= 1, else raise `ConfigError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"`{name}` must be a positive integer, got {value!r}")
    return value


def check_rate(name: str, value: Any) -> float:
    """Return `value` as a float in [0, 1), else raise `ConfigError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"`{name}` must be a number in [0, 1), got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return `value` if it is one of `choices`, else raise `ConfigError` listing them."""
    if value not in choices:
        raise ConfigError(
            f"`{name}` must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
        )
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return `value` if it is a bool, else raise `ConfigError`."""
    if not isinstance(value, bool):
        raise ConfigError(f"`{name}` must be true or false, got {value!r}")
    return value


class LanguageModel(keras.Model):
    """Base class of lmkit language models: tokens ``(B, T)`` -> logits ``(B, T, vocab_size)``.

    Subclasses implement `build` (create weights), `call`, and, when they can continue a sequence
    without recomputing it, `init_state` and `decode`. They pass their constructor options to
    `_options` so that `get_config` returns them.

    The shared helpers make an input embedding and an output head with float32 logits:

    - ``self._build_embedding(width)`` creates ``self.embedding`` ``(V, width)``;
    - ``self._build_head(width, tie, bias=True)`` creates the output projection from ``width``
      features. With ``tie=True`` the head reuses the embedding matrix; if ``width`` differs from
      the embedding width, a learned linear projection ``(width, embed_dim)`` is inserted first
      (the choice lmkit makes so that `tie_embeddings` works with any `units`). ``bias=False``
      leaves out the ``(V,)`` logit bias (``self.head_bias`` is then None), as GPT-2's head does;
    - ``self._embed(tokens)`` and ``self._logits(h)`` use them.
    """

    #: Independent parts the JAX step splits a small batch into on a CPU when the config key
    #: ``batch_parts`` is 0 (automatic; `lmkit.training.step.batch_parts` decides). A step of a
    #: small model is hundreds of small kernels that one chain of dependencies can't spread over
    #: the cores; the gradients of two halves of the batch share no data, so XLA:CPU runs their
    #: kernels side by side. It pays for models without recurrence (gpt, gated_cnn: 4–7 % faster
    #: steps, docs/performance.md); recurrent models are slower that way (two loops of tiny steps
    #: contend), so they keep 1.
    cpu_batch_parts: int = 1

    #: Recommended training config for this architecture, applied to the keys the user did not
    #: set (`lmkit.resolve.resolve`): the global defaults suit the default `gpt`, but
    #: a recurrent model needs fewer layers and a higher learning rate to learn in a few hundred
    #: steps. Measured with `python -m benchmarks defaults` (docs/defaults.md).
    config_defaults: ClassVar[dict[str, Any]] = {}

    #: Weights split over the ``model`` mesh axis when a training sets ``model_parallel`` above
    #: 1 (`lmkit.distribute.state_shardings`): the last name of a variable's path -> the axis
    #: split. ``{}`` (the default): the architecture has nothing to split and refuses
    #: ``model_parallel``. The split never changes the results, only where the arithmetic runs.
    model_parallel_axes: ClassVar[dict[str, int]] = {}
    #: Attributes of the model that the ``model`` axis must divide (e.g. ``("heads",)``, so that
    #: each device holds whole attention heads).
    model_parallel_divides: ClassVar[tuple[str, ...]] = ()
    #: Whether every 2-D kernel LoRA adapts goes through `dense`: a LoRA step then computes
    #: ``x W + (x A) B`` (no gradient of the size of ``W``) instead of ``x (W + A B)``
    low_rank_kernels: ClassVar[bool] = False

    def __init__(self, vocab_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self._options: dict[str, Any] = {}

    # -- the contract -----------------------------------------------------------------------------
    @classmethod
    def training_size(cls, vocab_size: int, batch_size: int, seq_len: int,
                      options: dict[str, Any]) -> tuple[int, int]:
        """Before anything is built: about how many parameters, and how many activation floats
        one training batch keeps for the backward pass. lmkit's size guard refuses a config
        that cannot fit in memory with these. `options` are the constructor's keywords.

        This default, for a stack of `layers` blocks of width max(`embed_dim`, `units`), errs
        low (a guard must never refuse what fits); architectures with bigger parts (attention's
        T x T scores) override it.
        """
        e = int(options.get("embed_dim", 128))
        w = max(e, int(options.get("units", e)))
        n = int(options.get("layers", 1))
        params = vocab_size * e + w * vocab_size + n * 4 * w * w
        return params, batch_size * seq_len * (n * 4 * w + 2 * vocab_size)

    @property
    def max_context(self) -> int | None:
        """Longest input the model accepts; `None` when unbounded."""
        return None

    def call(self, tokens: Any, training: bool = False, segments: Any = None) -> Any:
        """int tokens ``(B, T)`` -> float32 logits ``(B, T, V)``: the head applied to `features`
        (`segments` ``(B, T)``: packed rows, for an architecture with the capability `PACKING`)."""
        packed = {} if segments is None else {"segments": segments}
        return self._logits(self.features(tokens, training=training, **packed))

    def features(self, tokens: Any, training: bool = False) -> Any:
        """The hidden states ``(B, T, H)`` the output head reads (what classifiers build on)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its features")

    def init_state(self, batch_size: int) -> State:
        """State for incremental decoding of `batch_size` sequences; `None` if the model has none.

        Without state the caller decodes by running `call` on the (truncated) whole context.
        """
        return None

    def decode(self, tokens: Any, state: State) -> tuple[Any, State]:
        """Feed new `tokens` ``(B, T_new)`` after `state`: ``(logits (B, T_new, V), new_state)``.

        With ``state=None`` (models without state) `tokens` is the whole context and the new
        state is None. Subclasses with state implement `_decode`.
        """
        if not self.built:
            self(tokens)  # creates the weights, as the first `call` would
        return self._decode(tokens, state)

    def _decode(self, tokens: Any, state: State) -> tuple[Any, State]:
        if state is not None:
            raise NotImplementedError(f"{type(self).__name__} keeps no decoding state")
        return self(tokens), None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocab_size": self.vocab_size, **self._options}

    # -- shared pieces ----------------------------------------------------------------------------
    def _build_embedding(self, width: int, initializer: Any = "uniform") -> None:
        # Default: Keras's Embedding initializer (uniform in [-0.05, 0.05]). autocast=False keeps
        # it float32 for the tied float32 head; `_embed` casts lookups to the compute dtype.
        self.embedding = self.add_weight(
            shape=(self.vocab_size, width), initializer=initializer, autocast=False,
            name="embedding",
        )

    def _build_head(self, width: int, tie: bool, bias: bool = True) -> None:
        embed_width = self.embedding.shape[1]
        self.head_projection = None
        self.head_kernel = None
        if tie and width != embed_width:
            self.head_projection = self.add_weight(
                shape=(width, embed_width), initializer="glorot_uniform", name="head_projection"
            )
        if not tie:
            self.head_kernel = self.add_weight(
                shape=(width, self.vocab_size), initializer="glorot_uniform", autocast=False,
                name="head_kernel",
            )
        self.head_bias = None
        if bias:
            self.head_bias = self.add_weight(
                shape=(self.vocab_size,), initializer=HostNormal(0.0), autocast=False,
                name="head_bias"
            )

    def set_head_bias(self, values: np.ndarray) -> None:
        """Set the output head's logit bias ``(V,)`` to `values` (what the config key
        ``head_bias_init = "unigram"`` does with the training tokens' log frequencies).

        >>> model.set_head_bias(np.log(frequencies))               # doctest: +SKIP
        """
        bias = getattr(self, "head_bias", None)
        if bias is None:
            raise ConfigError(
                f"architecture {type(self).__name__} has no logit bias in its output head to "
                f"initialise; drop head_bias_init (or, for gpt, keep [model] head_bias = true)")
        if tuple(np.shape(values)) != tuple(bias.shape):
            raise ConfigError(f"a head bias of shape {tuple(np.shape(values))} does not fit "
                              f"the model's {tuple(bias.shape)}")
        bias.assign(np.asarray(values, dtype=bias.dtype))

    def _embed(self, tokens: Any) -> Any:
        """int ``(B, T)`` -> ``(B, T, embed_dim)`` in the compute dtype (from the rows a
        training step gathered, inside `row_views`)."""
        tokens = ops.cast(tokens, "int32")
        view = _ROW_VIEWS.get().get(id(self.embedding))
        if view is None:
            return ops.cast(ops.take(self.embedding, tokens, axis=0), self.compute_dtype)
        rows, ids = view
        at = ops.reshape(ops.searchsorted(ids, ops.reshape(tokens, (-1,))), ops.shape(tokens))
        return ops.cast(ops.take(rows, at, axis=0), self.compute_dtype)

    def _logits(self, h: Any) -> Any:
        """Features ``(B, T, width)`` -> float32 logits ``(B, T, V)``.

        The matmul runs on the 2-D ``(B*T, width)`` view: XLA:CPU is much faster on 2-D dots
        than on 3-D dense layers (see the speed notes).
        """
        batch, time = ops.shape(h)[0], ops.shape(h)[1]
        h = ops.reshape(h, (-1, h.shape[-1]))                      # (B*T, width)
        if self.head_projection is not None:
            h = dense(h, self.head_projection)                     # (B*T, embed_dim)
        h = ops.cast(h, "float32")
        if self.head_kernel is None:
            logits = tied_logits(h, self.embedding)                 # (B*T, V), tied
        else:
            logits = dense(h, self.head_kernel)                    # (B*T, V)
        if self.head_bias is not None:
            logits = logits + self.head_bias
        return ops.reshape(logits, (batch, time, self.vocab_size))
