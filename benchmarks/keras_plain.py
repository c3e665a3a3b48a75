"""The benchmark models written the way a Keras user writes them: stock layers, then `fit`.

`lmkit`'s own models are Keras models too, but written for speed on XLA (2-D activations around
every matmul, explicit weights). These are the same architectures from `keras.layers` as the
Keras documentation shows them: 3-D `Dense` layers, `MultiHeadAttention` with a causal mask,
`LayerNormalization`, and an untied output `Dense` (stock Keras has no tied head; that adds
`vocab x width` parameters, 8,320 for `gpt_char`). Same widths, depths, activation (tanh GELU)
and optimizer as the lmkit model they are compared with.
"""

from __future__ import annotations

from typing import Any


def gpt(vocab_size: int, embed_dim: int, layers: int, heads: int, seq_len: int) -> Any:
    """nanoGPT's architecture from stock Keras layers (pre-LayerNorm, learned positions)."""
    import keras
    from keras import layers as L

    class AddPositions(L.Layer):
        """Learned position embeddings added to the token embeddings."""

        def build(self, input_shape: Any) -> None:
            self.positions = self.add_weight(shape=(seq_len, embed_dim), name="positions",
                                             initializer=keras.initializers.RandomNormal(0.02))

        def call(self, x: Any) -> Any:
            return x + self.positions[None, : keras.ops.shape(x)[1]]

    def gelu(x: Any) -> Any:
        return keras.activations.gelu(x, approximate=True)

    tokens = keras.Input((seq_len,), dtype="int32")
    x = AddPositions()(L.Embedding(vocab_size, embed_dim)(tokens))
    for _ in range(layers):
        h = L.LayerNormalization(epsilon=1e-5)(x)
        x = x + L.MultiHeadAttention(heads, embed_dim // heads)(h, h, use_causal_mask=True)
        h = L.LayerNormalization(epsilon=1e-5)(x)
        x = x + L.Dense(embed_dim)(L.Dense(4 * embed_dim, activation=gelu)(h))
    logits = L.Dense(vocab_size)(L.LayerNormalization(epsilon=1e-5)(x))
    return keras.Model(tokens, logits, name="keras_gpt")


def classic_lstm(vocab_size: int, embed_dim: int = 128, units: int = 128) -> Any:
    """The classic Keras word-level example: Embedding -> LSTM -> Dense (logits)."""
    import keras
    from keras import layers as L

    return keras.Sequential([L.Embedding(vocab_size, embed_dim),
                             L.LSTM(units, return_sequences=True),
                             L.Dense(vocab_size)], name="keras_classic_lstm")
