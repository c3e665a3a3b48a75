"""`gpt`: a decoder-only Transformer in the shape of nanoGPT, written with `keras.ops`.

    tokens (B, T) -> token embedding + learned position embedding -> dropout
      -> `layers` x Block:  x + attn(LN(x)),  x + MLP(LN(x))      (pre-LayerNorm)
      -> LN -> tied head (x @ embedding^T + bias) -> logits (B, T, V), float32

This is GPT-2's computation (GELU with the tanh approximation, LayerNorm epsilon 1e-5) except
for the head's bias, which GPT-2 does not have: with ``head_bias=False``
(config: ``[model] head_bias = false``, or ``--set model.head_bias=false``) the model is GPT-2
exactly, and `lmkit export --format hf` writes it as a `transformers` ``GPT2LMHeadModel``
(any other options: with lmkit's own modeling code, `lmkit.exporters.hf`).

Activations are kept 2-D, ``(B*T, D)``, around every dense matmul, with explicit weights and
`lmkit.models.base.dense`: on XLA:CPU this is about 1.4x faster than 3-D dense layers (see the
speed notes), bfloat16 activations take the fast bfloat16 dot, and a LoRA step adds its low-rank
terms there (`low_rank_kernels`).
Only attention reshapes to ``(B, T, H, d)``.

Incremental decoding keeps a KV cache of `seq_len` positions per layer in the state returned by
`init_state`; `decode` writes the new keys/values at the current position and attends over the
cache with a mask. The caller keeps ``pos + T_new <= seq_len`` (past that it must recompute on
the last `seq_len` tokens): inside `jax.jit` a position beyond the cache cannot raise.

Options from the modded-nanoGPT speedrun, all off by default so that existing runs and presets keep
their exact computation (``[model]`` table, or ``--set model.rotary=true``):

- ``rotary``: rotary position embeddings on queries and keys instead of learned positions;
- ``qk_norm``: queries and keys RMS-normalised per head before their dot product;
- ``mlp = "relu2"``: ReLU² instead of GELU in the MLP;
- ``norm = "rmsnorm"``: RMSNorm (a scale, no centring, no bias) instead of LayerNorm;
- ``zero_init``: the residual projections (attention output, MLP output) start at zero, so each
  block starts as the identity;
- ``logit_softcap``: logits squashed to ``cap * tanh(logits / cap)`` (``0``: off);
- an untied output head is the generic key ``tie_embeddings = false``.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from lmkit.errors import ConfigError
from lmkit.models.base import (MASKED, PACKING, REWIND, HostNormal, LanguageModel,
                               check_bool, check_choice, check_positive_int, check_rate, dense,
                               segment_masks)
from lmkit.models.kv_cache import CachedDecoder, beam_attention, write_cache
from lmkit.registry import architectures

__all__ = ["GPT", "Block", "rotate"]

MLPS = ("gelu", "relu2")
_ZEROS = HostNormal(0.0)
NORMS = ("layernorm", "rmsnorm")


def _normal(stddev: float) -> keras.initializers.Initializer:
    return HostNormal(stddev)  # drawn on the host: no compilation before the first step


def _norm_layer(kind: str, name: str) -> keras.layers.Layer:
    if kind == "rmsnorm":
        return keras.layers.RMSNormalization(epsilon=1e-5, name=name)
    return keras.layers.LayerNormalization(epsilon=1e-5, name=name)


def _rms(x: Any) -> Any:
    """`x` divided by its root mean square over the last axis (no learned scale)."""
    x32 = ops.cast(x, "float32")
    scaled = x32 * ops.rsqrt(ops.mean(ops.square(x32), axis=-1, keepdims=True) + 1e-6)
    return ops.cast(scaled, x.dtype)


def rotate(x: Any, positions: Any, freq: Any = None) -> Any:
    """Rotary position embedding of `x` ``(B, T, H, d)`` at `positions` ``(T,)``, or ``(B, T)``
    for packed rows (RoFormer, half-split pairs: feature i turns with feature i + d/2 by
    ``position * freq[i]``); `freq` ``(d/2,)`` float32 defaults to RoFormer's
    ``1 / 10000^(2i/d)`` (`llama` passes its scaled ones)."""
    half = x.shape[-1] // 2
    if freq is None:
        freq = 1.0 / (10000.0 ** (ops.arange(half, dtype="float32") / half))  # (d/2,)
    angle = ops.cast(positions, "float32")[..., None] * freq                  # ([B,] T, d/2)
    if len(angle.shape) == 2:
        angle = angle[None]
    cos = ops.cast(ops.cos(angle), x.dtype)[:, :, None, :]                    # (1 or B, T, 1, d/2)
    sin = ops.cast(ops.sin(angle), x.dtype)[:, :, None, :]
    a, b = x[..., :half], x[..., half:]
    return ops.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


@keras.saving.register_keras_serializable(package="lmkit")
class Block(keras.layers.Layer):
    """Pre-LayerNorm Transformer block: causal multi-head self-attention, then a GELU MLP
    (the options `rotary`, `qk_norm`, `mlp`, `norm`, `zero_init` are the model's, see `GPT`).

    `call` takes 2-D activations ``(B*T, D)`` and ``allowed`` ``(T, T_k)`` (``(B, 1, T, T)``
    for packed rows, with their `positions` ``(B, T)``), true where a query may attend to a
    key, and returns the activations with keys and values ``(B, H, T_k, d)``: this block's
    cache passed in with the new entries written at `pos` (`write_cache`), or without a cache
    the block's own. With a beam search's `beams` table, each row reads the entries of its
    beam's history (`lmkit.models.kv_cache.beam_attention`).
    """

    def __init__(self, embed_dim: int, heads: int, dropout: float, num_layers: int,
                 rotary: bool = False, qk_norm: bool = False, mlp: str = "gelu",
                 norm: str = "layernorm", zero_init: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.embed_dim, self.heads = embed_dim, heads
        self.dropout, self.num_layers = dropout, num_layers
        self.rotary, self.qk_norm, self.mlp, self.norm = rotary, qk_norm, mlp, norm
        self.zero_init = zero_init
        self.head_dim = embed_dim // heads
        self.ln_1 = _norm_layer(norm, "ln_1")
        self.ln_2 = _norm_layer(norm, "ln_2")
        self.drop = keras.layers.Dropout(dropout)

    def build(self, input_shape: Any) -> None:
        d = self.embed_dim
        # GPT-2 initialization: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers).
        # One initializer object per weight: a Keras initializer carries a fixed seed, so reusing
        # one would draw the same numbers for both weights (w_out's first rows = w_proj).
        resid_std = 0.02 / math.sqrt(2 * self.num_layers)
        resid = (lambda: _ZEROS) if self.zero_init else (lambda: _normal(resid_std))
        self.ln_1.build((None, d))
        self.ln_2.build((None, d))
        self.w_qkv = self.add_weight(shape=(d, 3 * d), initializer=_normal(0.02), name="w_qkv")
        self.b_qkv = self.add_weight(shape=(3 * d,), initializer=_ZEROS, name="b_qkv")
        self.w_proj = self.add_weight(shape=(d, d), initializer=resid(), name="w_proj")
        self.b_proj = self.add_weight(shape=(d,), initializer=_ZEROS, name="b_proj")
        self.w_fc = self.add_weight(shape=(d, 4 * d), initializer=_normal(0.02), name="w_fc")
        self.b_fc = self.add_weight(shape=(4 * d,), initializer=_ZEROS, name="b_fc")
        self.w_out = self.add_weight(shape=(4 * d, d), initializer=resid(), name="w_out")
        self.b_out = self.add_weight(shape=(d,), initializer=_ZEROS, name="b_out")

    def call(self, x: Any, *, batch: int, allowed: Any, cache: tuple[Any, Any] | None = None,
             pos: Any = 0, positions: Any = None, beams: Any = None,
             training: bool = False) -> tuple[Any, Any, Any]:
        d, h, hd = self.embed_dim, self.heads, self.head_dim
        time = ops.shape(x)[0] // batch
        # -- attention ------------------------------------------------------------------------
        qkv = dense(self.ln_1(x), self.w_qkv, self.b_qkv)                 # (B*T, 3D)
        q, k, v = (ops.reshape(t, (batch, time, h, hd)) for t in ops.split(qkv, 3, axis=-1))
        if self.qk_norm:
            q, k = _rms(q), _rms(k)
        if self.rotary:  # keys are cached already rotated, at their absolute positions
            if positions is None:  # packed rows pass each token's position in its segment
                positions = pos + ops.arange(time, dtype="int32")
            q, k = rotate(q, positions), rotate(k, positions)
        k, v = (ops.transpose(t, (0, 2, 1, 3)) for t in (k, v))           # (B, H, T, d)
        if cache is not None:
            k, v = write_cache(cache, pos, k, v)                           # (B, H, T_k, d)
        if beams is not None:  # a beam search's step: each beam reads its own history
            y = beam_attention(q[:, :, :, None], k, v, allowed, beams)     # (B, T, H, 1, d)
        else:
            scores = ops.einsum("bqhd,bhkd->bhqk", q, k) / math.sqrt(hd)   # (B, H, T, T_k)
            scores = ops.where(allowed, ops.cast(scores, "float32"), MASKED)  # softmax in float32
            att = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
            att = self.drop(att, training=training)
            y = ops.einsum("bhqk,bhkd->bqhd", att, v)                      # (B, T, H, d)
        y = dense(ops.reshape(y, (-1, d)), self.w_proj, self.b_proj)       # (B*T, D)
        x = x + self.drop(y, training=training)
        # -- MLP ------------------------------------------------------------------------------
        y = dense(self.ln_2(x), self.w_fc, self.b_fc)                     # (B*T, 4D)
        y = ops.square(ops.relu(y)) if self.mlp == "relu2" else ops.gelu(y)
        y = dense(y, self.w_out, self.b_out)                              # (B*T, D)
        return x + self.drop(y, training=training), k, v

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "embed_dim": self.embed_dim, "heads": self.heads,
                "dropout": self.dropout, "num_layers": self.num_layers, "rotary": self.rotary,
                "qk_norm": self.qk_norm, "mlp": self.mlp, "norm": self.norm,
                "zero_init": self.zero_init}


@architectures.register(
    "gpt", aliases=("transformer", "nanogpt"), capabilities=("lora", PACKING, REWIND),
    description="Decoder-only Transformer: pre-LayerNorm, causal attention, learned positions, "
                "KV cache.",
)
@keras.saving.register_keras_serializable(package="lmkit")
class GPT(CachedDecoder, LanguageModel):
    """Decoder-only Transformer with `layers` blocks of width `embed_dim` and `heads` heads.

    `seq_len` is the context length (number of learned positions), also `max_context`.
    `head_bias` adds a learned bias to the logits (the default, kept so that existing runs load
    unchanged); ``head_bias=False`` makes the head GPT-2's, ``x @ embedding^T`` (with GPT-2's other
    options, `lmkit.export` writes a plain ``GPT2LMHeadModel``; else lmkit's modeling code).

    Speedrun options (module docstring; all off by default): `rotary`, `qk_norm`, `mlp`
    (``"gelu"`` or ``"relu2"``), `norm` (``"layernorm"`` or ``"rmsnorm"``), `zero_init`,
    `logit_softcap` (``0``: off).

    >>> model = GPT(vocab_size=65, embed_dim=128, layers=4, heads=4, seq_len=64)  # doctest: +SKIP
    >>> state = model.init_state(1)                                              # doctest: +SKIP
    >>> logits, state = model.decode(prompt_tokens, state)                       # doctest: +SKIP
    """

    cpu_batch_parts = 2  # see LanguageModel.cpu_batch_parts
    low_rank_kernels = True  # the blocks' four kernels and the head go through `dense`
    # Megatron's split: attention and MLP input matrices by columns, their output matrices by
    # rows. The fused q|k|v columns split into equal blocks, so a device's block is not whole
    # heads (XLA moves what attention needs; results equal one device's, tests/test_distribute.py).
    model_parallel_axes = {"w_qkv": 1, "w_fc": 1, "w_proj": 0, "w_out": 0}
    model_parallel_divides = ("heads",)

    #: The fastest recipe measured to a char-level validation loss of 1.88 on Tiny Shakespeare
    #: (docs/performance.md, "Speedrun"): two blocks (half the arithmetic of four per step, for
    #: ~25 % more steps to the same loss), Muon at 1e-2 with a short warm-up and a linear decay,
    #: batches of 32 (a third more tokens than 24 for a tenth more time a step on two cores) and
    #: the speedrun options, 200 steps, an evaluation every 50 (nanoGPT's CPU recipe: four
    #: blocks, 2,000 steps of 12, `nanogpt_char`). Applied to the keys a config does not set,
    #: and to the `[model]` entries it does not set.
    config_defaults = {
        "layers": 2, "optimizer": "muon", "learning_rate": 1e-2, "batch_size": 32,
        "max_steps": 200, "warmup_steps": 10, "schedule": "warmup_linear", "eval_every": 50,
        "model": {"rotary": True, "mlp": "relu2", "qk_norm": True, "zero_init": True},
    }

    @classmethod
    def training_size(cls, vocab_size: int, batch_size: int, seq_len: int,
                      options: dict[str, Any]) -> tuple[int, int]:
        d, n = int(options.get("embed_dim", 128)), int(options.get("layers", 4))
        h, t = int(options.get("heads", 4)), int(options.get("seq_len", seq_len))
        head = 0 if options.get("tie_embeddings", True) else vocab_size * d
        positions = 0 if options.get("rotary", False) else t * d
        params = vocab_size * d + positions + n * 12 * d * d + head
        per_layer = batch_size * t * 14 * d + batch_size * h * t * t * 2  # + attention scores
        return params, n * per_layer + batch_size * t * 2 * vocab_size

    def __init__(self, vocab_size: int, *, embed_dim: int = 128, layers: int = 4, heads: int = 4,
                 seq_len: int = 64, dropout: float = 0.0, tie_embeddings: bool = True,
                 head_bias: bool = True, rotary: bool = False, qk_norm: bool = False,
                 mlp: str = "gelu", norm: str = "layernorm", zero_init: bool = False,
                 logit_softcap: float = 0.0, **kwargs: Any) -> None:
        super().__init__(vocab_size, **kwargs)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.num_layers = check_positive_int("layers", layers)
        self.heads = check_positive_int("heads", heads)
        self.seq_len = check_positive_int("seq_len", seq_len)
        self.dropout_rate = check_rate("dropout", dropout)
        self.tie_embeddings = check_bool("tie_embeddings", tie_embeddings)
        self.use_head_bias = check_bool("head_bias", head_bias)
        self.rotary = check_bool("rotary", rotary)
        self.qk_norm = check_bool("qk_norm", qk_norm)
        self.mlp = check_choice("mlp", mlp, MLPS)
        self.norm = check_choice("norm", norm, NORMS)
        self.zero_init = check_bool("zero_init", zero_init)
        if (isinstance(logit_softcap, bool) or not isinstance(logit_softcap, (int, float))
                or not logit_softcap >= 0):
            raise ConfigError(f"`logit_softcap` must be a number >= 0 (0: off), got "
                              f"{logit_softcap!r}; the speedrun uses 15 to 30")
        self.logit_softcap = float(logit_softcap)
        if embed_dim % heads:
            raise ConfigError(
                f"`embed_dim` ({embed_dim}) must be divisible by `heads` ({heads}); "
                f"try embed_dim={heads * max(1, round(embed_dim / heads))}"
            )
        if rotary and (embed_dim // heads) % 2:
            raise ConfigError(
                f"`rotary` turns pairs of features, so the head width embed_dim / heads "
                f"({embed_dim} / {heads} = {embed_dim // heads}) must be even; change embed_dim "
                f"or heads")
        self._options = {"embed_dim": embed_dim, "layers": layers, "heads": heads,
                         "seq_len": seq_len, "dropout": dropout, "tie_embeddings": tie_embeddings,
                         "head_bias": head_bias, "rotary": self.rotary, "qk_norm": self.qk_norm,
                         "mlp": self.mlp, "norm": self.norm, "zero_init": self.zero_init,
                         "logit_softcap": self.logit_softcap}
        self.blocks = [Block(embed_dim, heads, self.dropout_rate, layers, rotary=self.rotary,
                             qk_norm=self.qk_norm, mlp=self.mlp, norm=self.norm,
                             zero_init=self.zero_init, name=f"block_{i}")
                       for i in range(layers)]
        self.ln_f = _norm_layer(self.norm, "ln_f")
        self.drop = keras.layers.Dropout(self.dropout_rate)

    @property
    def max_context(self) -> int:
        return self.seq_len

    def build(self, input_shape: Any) -> None:
        d = self.embed_dim
        self._build_embedding(d, initializer=_normal(0.02))                # (V, D)
        self.position_embedding = None if self.rotary else self.add_weight(
            shape=(self.seq_len, d), initializer=_normal(0.02), name="position_embedding"
        )                                                                  # (L, D)
        for block in self.blocks:
            block.build((None, d))
        self.ln_f.build((None, d))
        self._build_head(d, self.tie_embeddings, bias=self.use_head_bias)
        if self.head_kernel is not None and self.zero_init:  # an untied head starts at zero too
            self.head_kernel.assign(_ZEROS(self.head_kernel.shape, self.head_kernel.dtype))

    @property
    def kv_heads_dim(self) -> tuple[int, int]:
        return self.heads, self.embed_dim // self.heads

    def _logits(self, h: Any) -> Any:
        logits = super()._logits(h)
        if self.logit_softcap:
            logits = self.logit_softcap * ops.tanh(logits / self.logit_softcap)
        return logits

    def _forward(self, tokens: Any, pos: Any, cache: list[tuple[Any, Any]] | None,
                 training: bool, segments: Any = None,
                 beams: Any = None) -> tuple[Any, list[tuple[Any, Any]] | None]:
        """Hidden states ``(B, T, D)`` and, given each layer's cache (keys, values), the
        caches with the new entries written (`beams`: `lmkit.models.kv_cache.CachedDecoder`)."""
        batch, time = ops.shape(tokens)[0], ops.shape(tokens)[1]
        positions = pos + ops.arange(time, dtype="int32")                  # (T,)
        # Query i (at position pos + i) may see key j iff j <= pos + i.
        keys = ops.arange(time if cache is None else ops.shape(cache[0][0])[2], dtype="int32")
        allowed = keys[None, :] <= positions[:, None]                      # (T, T_k)
        packed = None
        if segments is not None:  # ... and is in the same segment; positions restart at each
            same, packed = segment_masks(segments)                         # (B, T, T), (B, T)
            allowed = ops.logical_and(same, allowed)[:, None]              # (B, 1, T, T)
            positions = packed
        x = self._embed(tokens)                                            # (B, T, D)
        if self.position_embedding is not None:
            x = x + ops.cast(ops.take(self.position_embedding, positions, axis=0),
                             self.compute_dtype)
        x = self.drop(ops.reshape(x, (-1, self.embed_dim)), training=training)  # (B*T, D)
        written = []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, batch=batch, allowed=allowed, cache=None if cache is None else cache[i],
                            pos=pos, positions=packed, beams=beams, training=training)
            written.append((k, v))
        x = ops.reshape(self.ln_f(x), (batch, time, self.embed_dim))
        return x, None if cache is None else written
