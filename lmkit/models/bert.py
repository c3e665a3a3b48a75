"""`bert`: a bidirectional Transformer encoder in the layout of BERT (and MiniLM), with `keras.ops`.

    tokens (B, T) -> word + position + token-type embedding -> LN -> dropout
      -> `layers` x Layer:  LN(x + attn(x)),  LN(x + MLP(x))      (post-LayerNorm, exact GELU)
      -> hidden states (B, T, H)

An encoder reads the whole sequence at once: there are no next-token logits, so `call` returns
the hidden states (as `features` does) and the registry entry carries the capability
``"encoder"`` (training a language model refuses it; classifiers and `lmkit.pretrained` use it).

Padding is masked out of attention: a key whose id is `pad_token_id` is never attended to. Token
types follow BERT's pair encoding ``[CLS] a [SEP] b [SEP]``: without explicit `token_types`,
every real token after the first `sep_token_id` is of type 1, so a classifier fed only token ids
encodes pairs as the checkpoint was trained.

Activations stay 2-D, ``(B*T, D)``, around every dense matmul (faster on XLA:CPU, as in `gpt`);
query, key and value are one fused ``(D, 3D)`` matrix, filled from the checkpoint's three.

>>> model = BERT(vocab_size=30522, embed_dim=384, layers=6, heads=12)   # doctest: +SKIP
>>> hidden = model.features(tokens)                                      # (B, T, 384)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import keras
from keras import ops

from lmkit.errors import ConfigError, RunError
from lmkit.models.base import (MASKED, PACKING, STATES_AT, Dropout, HFWeight, HostNormal,
                               LanguageModel, check_positive_int, check_rate, dense,
                               segment_masks)
from lmkit.registry import architectures

__all__ = ["BERT", "EncoderLayer"]

ENCODER = "encoder"  #: capability of an architecture entry without next-token logits


# drawn on the host: Keras's `RandomNormal` compiles three programs per weight shape (seconds on
# a cold compilation cache), for weights a checkpoint then replaces; zeros likewise, as `gpt`'s
_NORMAL = HostNormal(0.02)
_ZEROS = HostNormal(0.0)


@keras.saving.register_keras_serializable(package="lmkit")
class EncoderLayer(keras.layers.Layer):
    """Post-LayerNorm Transformer layer: ``LN(x + attn(x))`` then ``LN(x + W2 gelu(W1 x))``.

    `call` takes 2-D activations ``(B*T, D)`` and ``allowed`` ``(B, 1, 1, T)``, true for the keys
    (real tokens) that may be attended to (``(B, 1, T, T)`` per query for packed rows). With
    `at`, flat positions ``(N,)``, it returns only those positions' outputs ``(N, D)``.
    """

    def __init__(self, embed_dim: int, heads: int, ffn_dim: int, dropout: float,
                 attention_dropout: float, layer_norm_eps: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.embed_dim, self.heads, self.ffn_dim = embed_dim, heads, ffn_dim
        self.dropout, self.attention_dropout = dropout, attention_dropout
        self.layer_norm_eps = layer_norm_eps
        self.head_dim = embed_dim // heads
        self.ln_attention = keras.layers.LayerNormalization(epsilon=layer_norm_eps, name="ln_attention")
        self.ln_output = keras.layers.LayerNormalization(epsilon=layer_norm_eps, name="ln_output")
        self.drop = Dropout(dropout)
        self.attention_drop = Dropout(attention_dropout)

    def build(self, input_shape: Any) -> None:
        d, f = self.embed_dim, self.ffn_dim
        self.ln_attention.build((None, d))
        self.ln_output.build((None, d))
        self.w_qkv = self.add_weight(shape=(d, 3 * d), initializer=_NORMAL, name="w_qkv")
        self.b_qkv = self.add_weight(shape=(3 * d,), initializer=_ZEROS, name="b_qkv")
        self.w_proj = self.add_weight(shape=(d, d), initializer=_NORMAL, name="w_proj")
        self.b_proj = self.add_weight(shape=(d,), initializer=_ZEROS, name="b_proj")
        self.w_fc = self.add_weight(shape=(d, f), initializer=_NORMAL, name="w_fc")
        self.b_fc = self.add_weight(shape=(f,), initializer=_ZEROS, name="b_fc")
        self.w_out = self.add_weight(shape=(f, d), initializer=_NORMAL, name="w_out")
        self.b_out = self.add_weight(shape=(d,), initializer=_ZEROS, name="b_out")

    def call(self, x: Any, *, batch: int, allowed: Any, training: bool = False,
             at: Any = None) -> Any:
        d, h, hd = self.embed_dim, self.heads, self.head_dim
        time = ops.shape(x)[0] // batch
        qkv = dense(x, self.w_qkv, self.b_qkv)                              # (B*T, 3D)
        q, k, v = (ops.reshape(t, (batch, time, h, hd)) for t in ops.split(qkv, 3, axis=-1))
        if at is not None:  # only the queries at flat positions `at`, each over its row's keys
            rows = at // time
            q = ops.take(ops.reshape(q, (-1, h, hd)), at, axis=0)[:, None]  # (N, 1, H, d)
            k, v = ops.take(k, rows, axis=0), ops.take(v, rows, axis=0)     # (N, T, H, d)
            allowed = ops.take(allowed, rows, axis=0)                       # (N, 1, 1|T, T)
            if allowed.shape[2] != 1:  # packed rows: the query's own line of the mask
                allowed = ops.take_along_axis(allowed, (at % time)[:, None, None, None], axis=2)
            x = ops.take(x, at, axis=0)                                     # (N, D)
        scores = ops.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)        # (B, H, T, T)
        scores = ops.where(allowed, ops.cast(scores, "float32"), MASKED)  # softmax in float32
        att = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        att = self.attention_drop(att, training=training)
        y = ops.einsum("bhqk,bkhd->bqhd", att, v)                           # (B, T, H, d)
        y = dense(ops.reshape(y, (-1, d)), self.w_proj, self.b_proj)        # (B*T, D)
        x = self.ln_attention(x + self.drop(y, training=training))
        y = ops.gelu(dense(x, self.w_fc, self.b_fc), approximate=False)     # (B*T, F), erf
        y = dense(y, self.w_out, self.b_out)                                # (B*T, D)
        return self.ln_output(x + self.drop(y, training=training))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "embed_dim": self.embed_dim, "heads": self.heads,
                "ffn_dim": self.ffn_dim, "dropout": self.dropout,
                "attention_dropout": self.attention_dropout, "layer_norm_eps": self.layer_norm_eps}


@architectures.register(
    "bert", aliases=("minilm",), capabilities=(ENCODER, "lora", PACKING, STATES_AT),
    description="Bidirectional Transformer encoder (BERT / MiniLM layout): post-LayerNorm, "
                "token types, padding mask; loads Hugging Face checkpoints.",
)
@keras.saving.register_keras_serializable(package="lmkit")
class BERT(LanguageModel):
    """BERT-layout encoder: `layers` layers of width `embed_dim`, `heads` heads, MLP `ffn_dim`.

    `seq_len` is the number of learned positions (`max_context`); `pad_token_id` is masked out
    of attention; `sep_token_id` starts the second segment of a pair.
    """

    #: Hugging Face ``model_type`` values this class reads (`lmkit.pretrained` dispatches on it)
    hf_model_types: ClassVar[tuple[str, ...]] = ("bert",)
    #: prefix of the encoder's tensors in task-head checkpoints (``BertForSequenceClassification``)
    hf_prefix: ClassVar[str] = "bert."
    # `model_parallel`: each layer's large matrices split as `gpt`'s (query-key-value and the
    # MLP's first matrix by columns, the two output matrices by rows), with their optimizer slots
    model_parallel_axes = {"w_qkv": 1, "w_fc": 1, "w_proj": 0, "w_out": 0}
    model_parallel_divides = ("heads", "ffn_dim")
    low_rank_kernels = True  # the layers' four kernels go through `dense`

    def __init__(self, vocab_size: int, *, embed_dim: int = 384, layers: int = 6, heads: int = 12,
                 ffn_dim: int | None = None, seq_len: int = 512, type_vocab_size: int = 2,
                 dropout: float = 0.1, attention_dropout: float | None = None,
                 layer_norm_eps: float = 1e-12, pad_token_id: int = 0, sep_token_id: int = 102,
                 **kwargs: Any) -> None:
        super().__init__(vocab_size, **kwargs)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.num_layers = check_positive_int("layers", layers)
        self.heads = check_positive_int("heads", heads)
        self.ffn_dim = check_positive_int("ffn_dim", ffn_dim if ffn_dim is not None else 4 * embed_dim)
        self.seq_len = check_positive_int("seq_len", seq_len)
        self.type_vocab_size = check_positive_int("type_vocab_size", type_vocab_size)
        self.dropout_rate = check_rate("dropout", dropout)
        attention_dropout = self.dropout_rate if attention_dropout is None else attention_dropout
        self.attention_dropout = check_rate("attention_dropout", attention_dropout)
        if embed_dim % heads:
            raise ConfigError(f"`embed_dim` ({embed_dim}) must be divisible by `heads` ({heads})")
        self.pad_token_id, self.sep_token_id = int(pad_token_id), int(sep_token_id)
        self.layer_norm_eps = float(layer_norm_eps)
        self._options = {"embed_dim": embed_dim, "layers": layers, "heads": heads,
                         "ffn_dim": self.ffn_dim, "seq_len": seq_len,
                         "type_vocab_size": type_vocab_size, "dropout": dropout,
                         "attention_dropout": self.attention_dropout,
                         "layer_norm_eps": self.layer_norm_eps, "pad_token_id": self.pad_token_id,
                         "sep_token_id": self.sep_token_id}
        self.encoder_layers = [
            EncoderLayer(embed_dim, heads, self.ffn_dim, self.dropout_rate, self.attention_dropout,
                         self.layer_norm_eps, name=f"layer_{i}")
            for i in range(layers)
        ]
        self.ln_embedding = keras.layers.LayerNormalization(epsilon=self.layer_norm_eps,
                                                            name="ln_embedding")
        self.drop = Dropout(self.dropout_rate)

    @property
    def max_context(self) -> int:
        return self.seq_len

    def build(self, input_shape: Any) -> None:
        d = self.embed_dim
        self._build_embedding(d, initializer=_NORMAL)                     # (V, D)
        self.position_embedding = self.add_weight(
            shape=(self.seq_len, d), initializer=_NORMAL, name="position_embedding")
        self.type_embedding = self.add_weight(
            shape=(self.type_vocab_size, d), initializer=_NORMAL, name="type_embedding")
        self.ln_embedding.build((None, d))
        for layer in self.encoder_layers:
            layer.build((None, d))

    def call(self, tokens: Any, training: bool = False) -> Any:
        """An encoder has no next-token logits: the hidden states ``(B, T, H)``."""
        return self.features(tokens, training=training)

    def features(self, tokens: Any, training: bool = False, token_types: Any = None,
                 segments: Any = None, at: Any = None) -> Any:
        """Hidden states ``(B, T, embed_dim)``; padding (`pad_token_id`) is not attended to.
        With `at`, flat positions ``(N,)`` of the ``B * T`` tokens, the states ``(N, embed_dim)``
        at those positions alone (`STATES_AT`: the last layer computes only their queries).

        With `segments` ``(B, T)`` (packed rows, `lmkit.data.packing`: 1, 2, ... per example,
        0 for padding) a token attends only within its segment, and positions and token types
        restart at each segment's first token: each example is encoded as if alone.
        """
        tokens = ops.cast(tokens, "int32")
        batch, time = ops.shape(tokens)[0], ops.shape(tokens)[1]
        positions = ops.arange(time, dtype="int32")
        if segments is None:
            real = ops.not_equal(tokens, self.pad_token_id)                 # (B, T)
            allowed = real[:, None, None, :]                                # (B, 1, 1, T) keys
        else:
            real = ops.not_equal(ops.cast(segments, "int32"), 0)
            same, positions = segment_masks(segments)                       # (B, T, T), (B, T)
            allowed = ops.logical_and(same, real[:, None, :])[:, None]      # (B, 1, T, T)
        if token_types is None:
            # Type 1 from the token after the first separator on: ``[CLS] a [SEP]`` is 0, ``b [SEP]`` 1.
            is_sep = ops.cast(ops.equal(tokens, self.sep_token_id), "int32")
            before = ops.cumsum(is_sep, axis=1) - is_sep                    # separators before t
            if segments is not None:  # ... counted from the segment's first token
                starts = ops.arange(time, dtype="int32")[None, :] - positions
                before = before - ops.take_along_axis(before, starts, axis=1)
            token_types = ops.cast(ops.logical_and(before >= 1, real), "int32")
        x = (self._embed(tokens)
             + ops.cast(ops.take(self.position_embedding, positions, axis=0), self.compute_dtype)
             + ops.cast(ops.take(self.type_embedding, ops.cast(token_types, "int32"), axis=0),
                        self.compute_dtype))                               # (B, T, D)
        x = self.ln_embedding(ops.reshape(x, (-1, self.embed_dim)))         # (B*T, D)
        x = self.drop(x, training=training)
        *layers, last = self.encoder_layers
        for layer in layers:
            x = layer(x, batch=batch, allowed=allowed, training=training)
        # `STATES_AT`: the last layer for the queries at `at` alone, their states (N, D)
        at = None if at is None else ops.cast(at, "int32")
        x = last(x, batch=batch, allowed=allowed, training=training, at=at)
        return x if at is not None else ops.reshape(x, (batch, time, self.embed_dim))

    # -- Hugging Face checkpoints -----------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, config: dict[str, Any], tokenizer: Any) -> "BERT":
        """The model a Hugging Face ``BertConfig`` describes (weights still random)."""
        act = config.get("hidden_act", "gelu")
        if act != "gelu":
            raise RunError(f"config.json: hidden_act={act!r} is not supported by lmkit's `bert` "
                           f"(it implements 'gelu', the exact erf form)")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise RunError(f"config.json: position_embedding_type="
                           f"{config['position_embedding_type']!r} is not supported (only 'absolute')")
        sep = tokenizer.token_id("[SEP]") if tokenizer is not None else None
        return cls(
            config["vocab_size"], embed_dim=config["hidden_size"],
            layers=config["num_hidden_layers"], heads=config["num_attention_heads"],
            ffn_dim=config["intermediate_size"], seq_len=config["max_position_embeddings"],
            type_vocab_size=config.get("type_vocab_size", 2),
            dropout=config.get("hidden_dropout_prob", 0.1),
            attention_dropout=config.get("attention_probs_dropout_prob", 0.1),
            layer_norm_eps=config.get("layer_norm_eps", 1e-12),
            pad_token_id=config.get("pad_token_id") or 0,
            sep_token_id=config.get("sep_token_id") or (sep if sep is not None else 102),
        )

    def hf_weights(self) -> list[HFWeight]:
        """Every variable with the Hugging Face ``BertModel`` tensors it is read from."""
        out = [HFWeight(self.embedding, ("embeddings.word_embeddings.weight",)),
               HFWeight(self.position_embedding, ("embeddings.position_embeddings.weight",)),
               HFWeight(self.type_embedding, ("embeddings.token_type_embeddings.weight",)),
               HFWeight(self.ln_embedding.gamma, ("embeddings.LayerNorm.weight",)),
               HFWeight(self.ln_embedding.beta, ("embeddings.LayerNorm.bias",))]
        for i, layer in enumerate(self.encoder_layers):
            p = f"encoder.layer.{i}."
            qkv = tuple(f"{p}attention.self.{n}" for n in ("query", "key", "value"))
            out += [
                HFWeight(layer.w_qkv, tuple(f"{n}.weight" for n in qkv), True),
                HFWeight(layer.b_qkv, tuple(f"{n}.bias" for n in qkv)),
                HFWeight(layer.w_proj, (f"{p}attention.output.dense.weight",), True),
                HFWeight(layer.b_proj, (f"{p}attention.output.dense.bias",)),
                HFWeight(layer.ln_attention.gamma, (f"{p}attention.output.LayerNorm.weight",)),
                HFWeight(layer.ln_attention.beta, (f"{p}attention.output.LayerNorm.bias",)),
                HFWeight(layer.w_fc, (f"{p}intermediate.dense.weight",), True),
                HFWeight(layer.b_fc, (f"{p}intermediate.dense.bias",)),
                HFWeight(layer.w_out, (f"{p}output.dense.weight",), True),
                HFWeight(layer.b_out, (f"{p}output.dense.bias",)),
                HFWeight(layer.ln_output.gamma, (f"{p}output.LayerNorm.weight",)),
                HFWeight(layer.ln_output.beta, (f"{p}output.LayerNorm.bias",)),
            ]
        return out
