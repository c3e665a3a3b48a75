"""`llama`: the Llama family of decoders (Llama, Mistral, Qwen2), written with `keras.ops`.

    tokens (B, T) -> token embedding
      -> `layers` x Block:  x + attn(RMSNorm(x)),  x + SwiGLU(RMSNorm(x))   (pre-RMSNorm)
      -> RMSNorm -> head (tied: x @ embedding^T, or its own matrix; no bias) -> logits (B, T, V)

Attention has `heads` query heads and `kv_heads` key/value heads (grouped-query attention:
query head h reads key/value head ``h // (heads / kv_heads)``), rotary positions on queries and
keys (`rope_theta`, `rope_scaling`: linear, dynamic NTK or Llama 3.1's, as ``config.json``
writes them), optional biases (Qwen2: on query, key and value; Llama's ``attention_bias``: on
all four projections; ``mlp_bias``), and a sliding window (Mistral; Qwen2 on the layers from
`max_window_layers` on): a query at position i sees the keys j with ``i - window < j <= i``.
The MLP is SwiGLU, ``down(silu(gate(x)) * up(x))``.

Checkpoints: `from_hf_config` reads a ``LlamaForCausalLM``, ``MistralForCausalLM`` or
``Qwen2ForCausalLM`` ``config.json``; `llama_hf_weights` is the one table of tensor names that
loading (`lmkit.pretrained`) and export (`lmkit.exporters.hf`) read. Every dense kernel is one
variable stored ``(in, out)``, named after the ``nn.Linear`` it comes from (transposed).

The KV cache holds `seq_len` positions of the `kv_heads` heads per layer. `seq_len` is lmkit's
context (`max_context`, the training window, the cache); `max_position_embeddings` is the
checkpoint's, which dynamic scaling starts from. Rotary positions are not learned, so `seq_len`
may exceed it.

>>> model = Llama(vocab_size=256, embed_dim=64, layers=2, heads=4, kv_heads=2, seq_len=128)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops

from lmkit.errors import ConfigError, RunError
from lmkit.models.base import (MASKED, PACKING, REWIND, HFWeight, HostNormal, LanguageModel,
                               check_bool, check_choice, check_positive_int, check_rate, dense,
                               segment_masks)
from lmkit.models.gpt import rotate
from lmkit.models.kv_cache import CachedDecoder, beam_attention, write_cache
from lmkit.registry import architectures

__all__ = ["Llama", "LlamaBlock", "llama_hf_weights", "rope_frequencies", "HF_MODEL_TYPES",
           "ROPE_TYPES"]

_ZEROS = HostNormal(0.0)
#: the `config.json` model types read, each the class `transformers` builds from it
HF_MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                  "qwen2": "Qwen2ForCausalLM"}
#: rotary scalings computed (`rope_scaling`'s ``rope_type``; ``default``: none)
ROPE_TYPES = ("default", "linear", "dynamic", "llama3")
#: the KV cache of a checkpoint holds at most this many positions by default (Llama 3.1's
#: 131072 would take gigabytes); `seq_len` sets it
DEFAULT_CONTEXT = 4096


def rope_frequencies(head_dim: int, theta: float, scaling: dict[str, Any],
                     max_positions: int) -> np.ndarray:
    """The ``(head_dim / 2,)`` float32 rotary frequencies of `theta` under a static `scaling`
    (``{}``, linear or llama3; dynamic scaling depends on the length, `Llama._frequencies`),
    computed in float32 as `transformers` does.

    >>> rope_frequencies(4, 10000.0, {"rope_type": "linear", "factor": 2.0}, 2048)
    array([0.5  , 0.005], dtype=float32)
    """
    exponent = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    freq = (np.float32(1.0) / np.float32(theta) ** exponent).astype(np.float32)
    kind = scaling.get("rope_type", "default")
    if kind == "linear":
        return (freq / np.float32(scaling["factor"])).astype(np.float32)
    if kind == "llama3":  # Llama 3.1: long wavelengths slowed by `factor`, short ones kept
        factor = np.float32(scaling["factor"])
        low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        old = scaling.get("original_max_position_embeddings", max_positions)
        wavelength = np.float32(2 * math.pi) / freq
        scaled = np.where(wavelength > old / low, freq / factor, freq)
        smooth = (old / wavelength - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelength < old / high) & ~(wavelength > old / low)
        return np.where(medium, blended, scaled).astype(np.float32)
    return freq


@keras.saving.register_keras_serializable(package="lmkit")
class LlamaBlock(keras.layers.Layer):
    """Pre-RMSNorm block: grouped-query causal self-attention, then a SwiGLU MLP.

    `call` takes 2-D activations ``(B*T, D)``, ``allowed`` ``(T, T_k)`` (true where a query
    may attend to a key; ``(B, 1, 1, T, T)`` for packed rows, with their `positions` ``(B, T)``)
    and the rotary frequencies, and returns the activations with keys and values: the whole
    layer's cache ``(B, kv_heads, T_k, head_dim)`` passed in with the new entries written at
    `pos` (`lmkit.models.kv_cache.write_cache`), or without a cache the block's own. With a beam
    search's `beams` table, each row reads the entries of its beam's history (`beam_attention`).
    """

    def __init__(self, embed_dim: int, heads: int, kv_heads: int, head_dim: int, ffn_dim: int,
                 rms_eps: float = 1e-6, qkv_bias: bool = False, out_bias: bool = False,
                 mlp_bias: bool = False, windowed: bool = False, dropout: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.embed_dim, self.heads, self.kv_heads = embed_dim, heads, kv_heads
        self.head_dim, self.ffn_dim, self.rms_eps = head_dim, ffn_dim, rms_eps
        self.qkv_bias, self.out_bias, self.mlp_bias = qkv_bias, out_bias, mlp_bias
        self.windowed, self.dropout = windowed, dropout
        self.input_layernorm = keras.layers.RMSNormalization(epsilon=rms_eps, name="input_layernorm")
        self.post_attention_layernorm = keras.layers.RMSNormalization(
            epsilon=rms_eps, name="post_attention_layernorm")
        self.drop = keras.layers.Dropout(dropout)

    def _dense(self, name: str, shape: tuple[int, int], bias: bool) -> None:
        setattr(self, f"w_{name}", self.add_weight(shape=shape, initializer=HostNormal(0.02),
                                                   name=f"w_{name}"))
        setattr(self, f"b_{name}", self.add_weight(shape=shape[1:], initializer=_ZEROS,
                                                   name=f"b_{name}") if bias else None)

    def build(self, input_shape: Any) -> None:
        d, f = self.embed_dim, self.ffn_dim
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.input_layernorm.build((None, d))
        self.post_attention_layernorm.build((None, d))
        for name, shape, bias in (("q", (d, q), self.qkv_bias), ("k", (d, kv), self.qkv_bias),
                                  ("v", (d, kv), self.qkv_bias), ("o", (q, d), self.out_bias),
                                  ("gate", (d, f), self.mlp_bias), ("up", (d, f), self.mlp_bias),
                                  ("down", (f, d), self.mlp_bias)):
            self._dense(name, shape, bias)

    def _project(self, x: Any, name: str) -> Any:
        return dense(x, getattr(self, f"w_{name}"), getattr(self, f"b_{name}"))

    def call(self, x: Any, *, batch: int, allowed: Any, freq: Any,
             cache: tuple[Any, Any] | None = None, pos: Any = 0,
             positions: Any = None, beams: Any = None,
             training: bool = False) -> tuple[Any, Any, Any]:
        h, kvh, hd = self.heads, self.kv_heads, self.head_dim
        time = ops.shape(x)[0] // batch
        if positions is None:  # packed rows pass each token's position in its segment
            positions = pos + ops.arange(time, dtype="int32")
        # -- attention ------------------------------------------------------------------------
        y = self.input_layernorm(x)
        q = ops.reshape(self._project(y, "q"), (batch, time, h, hd))
        k = ops.reshape(self._project(y, "k"), (batch, time, kvh, hd))
        v = ops.reshape(self._project(y, "v"), (batch, time, kvh, hd))
        q, k = rotate(q, positions, freq), rotate(k, positions, freq)  # keys cached rotated
        k, v = (ops.transpose(t, (0, 2, 1, 3)) for t in (k, v))       # (B, KV, T, d)
        if cache is not None:
            k, v = write_cache(cache, pos, k, v)                       # (B, KV, T_k, d)
        # query head kv * group + g reads key/value head kv (transformers' repeat_kv)
        q = ops.reshape(q, (batch, time, kvh, h // kvh, hd))            # (B, T, KV, G, d)
        if beams is not None:  # a beam search's step: each beam reads its own history
            y = beam_attention(q, k, v, allowed, beams)                 # (B, T, KV, G, d)
        else:
            scores = ops.einsum("bqkgd,bksd->bkgqs", q, k) / math.sqrt(hd)  # (B, KV, G, T, T_k)
            scores = ops.where(allowed, ops.cast(scores, "float32"), MASKED)  # softmax in float32
            att = self.drop(ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype),
                            training=training)
            y = ops.einsum("bkgqs,bksd->bqkgd", att, v)                 # (B, T, KV, G, d)
        x = x + self._project(ops.reshape(y, (-1, h * hd)), "o")        # (B*T, D)
        # -- SwiGLU MLP -----------------------------------------------------------------------
        y = self.post_attention_layernorm(x)
        y = ops.silu(self._project(y, "gate")) * self._project(y, "up")  # (B*T, F)
        return x + self._project(y, "down"), k, v

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "embed_dim": self.embed_dim, "heads": self.heads,
                "kv_heads": self.kv_heads, "head_dim": self.head_dim, "ffn_dim": self.ffn_dim,
                "rms_eps": self.rms_eps, "qkv_bias": self.qkv_bias, "out_bias": self.out_bias,
                "mlp_bias": self.mlp_bias, "windowed": self.windowed, "dropout": self.dropout}


def _head_sizes(embed_dim: int, heads: int, kv_heads: int | None,
                head_dim: int | None) -> tuple[int, int]:
    """``(kv_heads, head_dim)`` checked: whole groups of query heads, even head widths."""
    kv_heads = check_positive_int("kv_heads", kv_heads or heads)
    if heads % kv_heads:
        raise ConfigError(f"`heads` ({heads}) must be a multiple of `kv_heads` ({kv_heads}): "
                          f"each key/value head serves a group of query heads")
    if head_dim is None and embed_dim % heads:
        raise ConfigError(f"`embed_dim` ({embed_dim}) must be divisible by `heads` ({heads}), "
                          f"or set `head_dim`")
    head_dim = check_positive_int("head_dim", head_dim or embed_dim // heads)
    if head_dim % 2:
        raise ConfigError(f"rotary positions turn pairs of features, so `head_dim` must be "
                          f"even, got {head_dim}")
    return kv_heads, head_dim


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"`{name}` must be a positive number, got {value!r}")
    return float(value)


def _count(name: str, value: Any, upper: int | None, meaning: str) -> int:
    """`value` as an integer in [0, `upper`] (no upper bound: None)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 \
            or (upper is not None and value > upper):
        bound = ">= 0" if upper is None else f"in [0, {upper}]"
        raise ConfigError(f"`{name}` must be an integer {bound} ({meaning}), got {value!r}")
    return value


def _check_scaling(scaling: Any) -> dict[str, Any]:
    if not isinstance(scaling, dict):
        raise ConfigError(f"`rope_scaling` must be a table such as {{rope_type = \"linear\", "
                          f"factor = 2.0}} ({{}}: none), got {scaling!r}")
    kind = check_choice("rope_scaling.rope_type", scaling.get("rope_type", "default"), ROPE_TYPES)
    if kind != "default":
        factor = scaling.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1:
            raise ConfigError(f"`rope_scaling.factor` must be a number >= 1 for rope_type "
                              f"{kind!r}, got {factor!r}")
    return dict(scaling)


@architectures.register(
    "llama", capabilities=("lora", PACKING, REWIND),
    description="Llama-family decoder (Llama, Mistral, Qwen2): RMSNorm, SwiGLU, rotary with "
                "scaling, grouped-query attention, sliding window; loads Hugging Face "
                "checkpoints (KV cache).",
)
@keras.saving.register_keras_serializable(package="lmkit")
class Llama(CachedDecoder, LanguageModel):
    """Llama-family decoder with `layers` blocks of width `embed_dim`, `heads` query heads and
    `kv_heads` key/value heads (default `heads`) of width `head_dim` (default
    ``embed_dim // heads``), and a SwiGLU MLP of `ffn_dim` (default ``8/3 * embed_dim``
    rounded up to a multiple of 64).

    Options (module docstring): `rope_theta`, `rope_scaling` (``{}``, or a table with
    ``rope_type`` linear / dynamic / llama3 and its factors), `max_position_embeddings`
    (default `seq_len`), `rms_eps`, `qkv_bias`, `out_bias`, `mlp_bias`, `sliding_window`
    (``0``: off) with `max_window_layers` (the first layer that uses it), `hf_model_type`
    (the Hugging Face layout an export writes: ``llama``, ``mistral`` or ``qwen2``).
    """

    hf_model_types: ClassVar[tuple[str, ...]] = tuple(HF_MODEL_TYPES)
    hf_prefix: ClassVar[str] = ""  # the table holds ``*ForCausalLM``'s full names
    cpu_batch_parts = 2  # no recurrence: halves of a batch run side by side (base docstring)
    low_rank_kernels = True  # the seven projections and the head go through `dense`
    # Megatron's split, as `gpt`: input matrices by columns (whole heads: `heads` and `kv_heads`
    # divisible), output matrices by rows
    model_parallel_axes = {"w_q": 1, "w_k": 1, "w_v": 1, "w_gate": 1, "w_up": 1,
                           "w_o": 0, "w_down": 0}
    model_parallel_divides = ("heads", "kv_heads")

    @classmethod
    def training_size(cls, vocab_size: int, batch_size: int, seq_len: int,
                      options: dict[str, Any]) -> tuple[int, int]:
        d, n = int(options.get("embed_dim", 128)), int(options.get("layers", 4))
        h = int(options.get("heads", 4))
        kv = int(options.get("kv_heads") or h)
        hd = int(options.get("head_dim") or d // h)
        f = int(options.get("ffn_dim") or _default_ffn(d))
        t = int(options.get("seq_len", seq_len))
        head = 0 if options.get("tie_embeddings", True) else vocab_size * d
        params = vocab_size * d + head + n * (2 * d * hd * (h + kv) + 3 * d * f)
        per_layer = batch_size * t * (4 * d + (h + 2 * kv) * hd + 3 * f) + batch_size * h * t * t * 2
        return params, n * per_layer + batch_size * t * 2 * vocab_size

    def __init__(self, vocab_size: int, *, embed_dim: int = 128, layers: int = 4, heads: int = 4,
                 kv_heads: int | None = None, head_dim: int | None = None,
                 ffn_dim: int | None = None, seq_len: int = 64,
                 max_position_embeddings: int | None = None, rope_theta: float = 10000.0,
                 rope_scaling: dict[str, Any] | None = None, rms_eps: float = 1e-6,
                 qkv_bias: bool = False, out_bias: bool = False, mlp_bias: bool = False,
                 sliding_window: int = 0, max_window_layers: int = 0,
                 tie_embeddings: bool = True, dropout: float = 0.0,
                 hf_model_type: str = "llama", **kwargs: Any) -> None:
        super().__init__(vocab_size, **kwargs)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.num_layers = check_positive_int("layers", layers)
        self.heads = check_positive_int("heads", heads)
        self.kv_heads, self.head_dim = _head_sizes(embed_dim, heads, kv_heads, head_dim)
        self.ffn_dim = check_positive_int("ffn_dim", ffn_dim or _default_ffn(embed_dim))
        self.seq_len = check_positive_int("seq_len", seq_len)
        self.max_position_embeddings = check_positive_int(
            "max_position_embeddings", max_position_embeddings or seq_len)
        self.rope_theta = _positive_number("rope_theta", rope_theta)
        self.rope_scaling = _check_scaling({} if rope_scaling is None else rope_scaling)
        self.rms_eps = _positive_number("rms_eps", rms_eps)
        self.qkv_bias = check_bool("qkv_bias", qkv_bias)
        self.out_bias = check_bool("out_bias", out_bias)
        self.mlp_bias = check_bool("mlp_bias", mlp_bias)
        self.sliding_window = _count("sliding_window", sliding_window, None, "0: off")
        self.max_window_layers = _count("max_window_layers", max_window_layers, layers,
                                        "the first layer with a sliding window")
        self.tie_embeddings = check_bool("tie_embeddings", tie_embeddings)
        self.dropout_rate = check_rate("dropout", dropout)
        self.hf_model_type = check_choice("hf_model_type", hf_model_type, tuple(HF_MODEL_TYPES))
        self._options = {
            "embed_dim": embed_dim, "layers": layers, "heads": heads, "kv_heads": self.kv_heads,
            "head_dim": self.head_dim, "ffn_dim": self.ffn_dim, "seq_len": seq_len,
            "max_position_embeddings": self.max_position_embeddings, "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling, "rms_eps": self.rms_eps, "qkv_bias": self.qkv_bias,
            "out_bias": self.out_bias, "mlp_bias": self.mlp_bias,
            "sliding_window": sliding_window, "max_window_layers": max_window_layers,
            "tie_embeddings": tie_embeddings, "dropout": dropout,
            "hf_model_type": self.hf_model_type}
        self.blocks = [
            LlamaBlock(embed_dim, self.heads, self.kv_heads, self.head_dim, self.ffn_dim,
                       self.rms_eps, self.qkv_bias, self.out_bias, self.mlp_bias,
                       windowed=bool(sliding_window) and i >= max_window_layers,
                       dropout=self.dropout_rate, name=f"block_{i}")
            for i in range(layers)]
        self.norm = keras.layers.RMSNormalization(epsilon=self.rms_eps, name="norm")
        self._static_freq = rope_frequencies(self.head_dim, self.rope_theta, self.rope_scaling,
                                             self.max_position_embeddings)

    @property
    def max_context(self) -> int:
        return self.seq_len

    def build(self, input_shape: Any) -> None:
        d = self.embed_dim
        self._build_embedding(d, initializer=HostNormal(0.02))              # (V, D)
        for block in self.blocks:
            block.build((None, d))
        self.norm.build((None, d))
        self._build_head(d, self.tie_embeddings, bias=False)

    @property
    def kv_heads_dim(self) -> tuple[int, int]:
        return self.kv_heads, self.head_dim

    def _frequencies(self, length: Any) -> Any:
        """Rotary frequencies for a sequence of `length` positions so far: fixed, except under
        dynamic NTK scaling, whose base grows once `length` passes `max_position_embeddings`
        (``transformers``' rule, with the keys in the cache kept as they were rotated)."""
        if self.rope_scaling.get("rope_type", "default") != "dynamic":
            return ops.convert_to_tensor(self._static_freq)
        d, factor = self.head_dim, float(self.rope_scaling["factor"])
        seen = ops.cast(ops.maximum(length, self.max_position_embeddings), "float32")
        base = self.rope_theta * ((factor * seen / self.max_position_embeddings) - (factor - 1)) \
            ** (d / (d - 2))
        exponent = ops.arange(0, d, 2, dtype="float32") / d
        return 1.0 / ops.power(base, exponent)

    def _forward(self, tokens: Any, pos: Any, cache: list[tuple[Any, Any]] | None,
                 training: bool, segments: Any = None,
                 beams: Any = None) -> tuple[Any, list[tuple[Any, Any]] | None]:
        batch, time = ops.shape(tokens)[0], ops.shape(tokens)[1]
        positions = pos + ops.arange(time, dtype="int32")                   # (T,)
        x = ops.reshape(self._embed(tokens), (-1, self.embed_dim))          # (B*T, D)
        # Query i (at position pos + i) may see key j iff j <= pos + i (and, in a window,
        # pos + i - j < sliding_window).
        keys = ops.arange(time if cache is None else ops.shape(cache[0][0])[2], dtype="int32")
        causal = keys[None, :] <= positions[:, None]                        # (T, T_k)
        windowed = ops.logical_and(causal, keys[None, :] > positions[:, None] - self.sliding_window)
        packed = None
        if segments is not None:  # ... and is in the same segment; positions restart at each
            same, packed = segment_masks(segments)                          # (B, T, T), (B, T)
            causal = ops.logical_and(same, causal)[:, None, None]           # (B, 1, 1, T, T)
            windowed = ops.logical_and(same, windowed)[:, None, None]
        freq = self._frequencies(pos + time)
        written = []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, batch=batch, allowed=windowed if block.windowed else causal,
                            freq=freq, cache=None if cache is None else cache[i], pos=pos,
                            positions=packed, beams=beams, training=training)
            written.append((k, v))
        x = ops.reshape(self.norm(x), (batch, time, self.embed_dim))
        return x, None if cache is None else written

    # -- Hugging Face checkpoints ---------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, config: dict[str, Any], tokenizer: Any) -> "Llama":
        """The model a Hugging Face Llama, Mistral or Qwen2 ``config.json`` describes (weights
        still random). Both ways of writing rotary scaling are read: ``rope_theta`` and
        ``rope_scaling`` (``type`` or ``rope_type``), and transformers 5's ``rope_parameters``."""
        return cls(config["vocab_size"], **llama_options(config))

    def hf_weights(self) -> list[HFWeight]:
        """Every variable with the ``*ForCausalLM`` tensor it is read from."""
        return llama_hf_weights(self)


def _default_ffn(embed_dim: int) -> int:
    """Llama's MLP width: 2/3 of 4 * embed_dim, rounded up to a multiple of 64."""
    return 64 * math.ceil(8 * embed_dim / 3 / 64)


def _rope(config: dict[str, Any], where: str) -> tuple[float, dict[str, Any]]:
    """``(rope_theta, rope_scaling)`` of a config in either spelling."""
    parameters = dict(config.get("rope_parameters") or {})
    scaling = dict(config.get("rope_scaling") or parameters)
    theta = config.get("rope_theta") or parameters.get("rope_theta") or scaling.get("rope_theta") \
        or 10000.0
    kind = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
    scaling.pop("type", None)
    scaling.pop("rope_theta", None)
    if kind not in ROPE_TYPES:
        raise RunError(f"{where}: rope_scaling type {kind!r} is not supported by lmkit's `llama`; "
                       f"it computes: {', '.join(ROPE_TYPES)}")
    if scaling.pop("partial_rotary_factor", 1.0) != 1.0:
        raise RunError(f"{where}: partial_rotary_factor is not supported by lmkit's `llama` "
                       f"(it rotates every feature of a head)")
    if kind == "default":
        return float(theta), {}
    keep = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    return float(theta), {"rope_type": kind, **{k: scaling[k] for k in keep if k in scaling}}


def _window(config: dict[str, Any], where: str) -> tuple[int, int]:
    """``(sliding_window, max_window_layers)``: Mistral's window on every layer, Qwen2's
    from `max_window_layers` on when ``use_sliding_window``, or none."""
    layers = config["num_hidden_layers"]
    window = config.get("sliding_window") or 0
    if config["model_type"] == "qwen2" and not config.get("use_sliding_window", False):
        window = 0
    if not window:
        return 0, 0
    first = config.get("max_window_layers", 0) if config["model_type"] == "qwen2" else 0
    types = config.get("layer_types")
    if types is not None:  # transformers 5 lists each layer's kind; lmkit's rule must give it
        first = sum(t == "full_attention" for t in types)
        if types != ["full_attention"] * first + ["sliding_attention"] * (layers - first):
            raise RunError(f"{where}: layer_types {types} mixes full and sliding attention in an "
                           f"order lmkit's `llama` does not compute (full layers first, then "
                           f"sliding ones)")
    return int(window), int(min(first, layers))


def llama_options(config: dict[str, Any]) -> dict[str, Any]:
    """The constructor options of `Llama` for a Hugging Face ``config.json`` (a `RunError`
    names what it cannot compute)."""
    where = "config.json"
    model_type = config["model_type"]
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise RunError(f"{where}: hidden_act={act!r} is not supported by lmkit's `llama` "
                       f"(expected 'silu', SwiGLU's gate)")
    theta, scaling = _rope(config, where)
    window, first = _window(config, where)
    attention_bias = bool(config.get("attention_bias", False))
    heads = config["num_attention_heads"]
    return dict(
        embed_dim=config["hidden_size"], layers=config["num_hidden_layers"], heads=heads,
        kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        ffn_dim=config["intermediate_size"],
        seq_len=min(config["max_position_embeddings"], DEFAULT_CONTEXT),
        max_position_embeddings=config["max_position_embeddings"], rope_theta=theta,
        rope_scaling=scaling, rms_eps=float(config.get("rms_norm_eps", 1e-6)),
        # Qwen2 always biases query, key and value and never the output; Llama's
        # attention_bias covers all four
        qkv_bias=model_type == "qwen2" or attention_bias,
        out_bias=model_type == "llama" and attention_bias,
        mlp_bias=model_type == "llama" and bool(config.get("mlp_bias", False)),
        sliding_window=window, max_window_layers=first,
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        dropout=float(config.get("attention_dropout", 0.0)), hf_model_type=model_type)


def llama_hf_weights(model: Llama) -> list[HFWeight]:
    """Every variable of a `llama` model with its ``*ForCausalLM`` tensor name (the one table
    loading and export read; a dense kernel is a transposed ``nn.Linear`` weight).

    >>> [w.names for w in llama_hf_weights(model)][:2]        # doctest: +SKIP
    [('model.embed_tokens.weight',), ('model.norm.weight',)]
    """
    out = [HFWeight(model.embedding, ("model.embed_tokens.weight",)),
           HFWeight(model.norm.scale, ("model.norm.weight",))]
    if model.head_kernel is not None:
        out.append(HFWeight(model.head_kernel, ("lm_head.weight",), transpose=True))
    projections = (("q", "self_attn.q_proj"), ("k", "self_attn.k_proj"),
                   ("v", "self_attn.v_proj"), ("o", "self_attn.o_proj"),
                   ("gate", "mlp.gate_proj"), ("up", "mlp.up_proj"), ("down", "mlp.down_proj"))
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        out += [HFWeight(block.input_layernorm.scale, (f"{p}input_layernorm.weight",)),
                HFWeight(block.post_attention_layernorm.scale,
                         (f"{p}post_attention_layernorm.weight",))]
        for name, hf in projections:
            out.append(HFWeight(getattr(block, f"w_{name}"), (f"{p}{hf}.weight",), transpose=True))
            bias = getattr(block, f"b_{name}")
            if bias is not None:
                out.append(HFWeight(bias, (f"{p}{hf}.bias",)))
    return out
