"""`mingru`: a minGRU language model (Feng et al., 2024), an lmkit architecture plugin.

    tokens (B, T) -> embedding (B, T, D)
      -> `layers` x residual block:  x + dropout(W_o minGRU(LN(x)))     (minGRU width `units`)
      -> LN -> tied head -> logits (B, T, V)

minGRU: ``z_t = sigmoid(W_z x_t + b_z)``, ``h~_t = W_h x_t + b_h``,
``h_t = (1 - z_t) * h_{t-1} + z_t * h~_t``. With ``a_t = 1 - z_t`` and ``b_t = z_t * h~_t`` this is
the linear recurrence ``h_t = a_t * h_{t-1} + b_t``, whose prefix is computed by
`keras.ops.associative_scan` with the combine ``(a1, b1), (a2, b2) -> (a1 * a2, a2 * b1 + b2)``.
A carried state ``h_0`` enters as ``b_1 += a_1 * h_0``.

>>> from lmkit.registry import architectures
>>> model = architectures.get("mingru")(vocab_size=65, units=256, layers=2)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from lmkit.models.base import LanguageModel, check_positive_int, check_rate

__all__ = ["MinGRU"]


def _combine(left: tuple[Any, Any], right: tuple[Any, Any]) -> tuple[Any, Any]:
    a1, b1 = left
    a2, b2 = right
    return a1 * a2, a2 * b1 + b2


@keras.saving.register_keras_serializable(package="lmkit_mingru")
class MinGRU(LanguageModel):
    """minGRU language model (Feng et al. 2024): residual blocks of parallel-scan minGRU layers.

    The output head is tied to the embedding (both `embed_dim` wide).
    """

    def __init__(self, vocab_size: int, *, embed_dim: int = 128, units: int = 128,
                 layers: int = 2, dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(vocab_size, **kwargs)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.units = check_positive_int("units", units)
        self.num_layers = check_positive_int("layers", layers)
        self.dropout_rate = check_rate("dropout", dropout)
        self._options = {"embed_dim": embed_dim, "units": units, "layers": layers,
                         "dropout": dropout}
        self.norms = [keras.layers.LayerNormalization(epsilon=1e-5, name=f"ln_{i}")
                      for i in range(layers)]
        self.ln_f = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_f")
        self.drop = keras.layers.Dropout(self.dropout_rate)

    def build(self, input_shape: Any) -> None:
        d, u = self.embed_dim, self.units
        self._build_embedding(d)
        # Per layer: input -> (gate, candidate) in one matmul (D, 2U), and the output (U, D).
        self.w_in = [self.add_weight(shape=(d, 2 * u), initializer="glorot_uniform",
                                     name=f"w_in_{i}") for i in range(self.num_layers)]
        self.b_in = [self.add_weight(shape=(2 * u,), initializer="zeros", name=f"b_in_{i}")
                     for i in range(self.num_layers)]
        self.w_out = [self.add_weight(shape=(u, d), initializer="glorot_uniform",
                                      name=f"w_out_{i}") for i in range(self.num_layers)]
        for norm in (*self.norms, self.ln_f):
            norm.build((None, d))
        self._build_head(d, tie=True)

    def init_state(self, batch_size: int) -> tuple[Any, ...]:
        return tuple(ops.zeros((batch_size, self.units), dtype=self.compute_dtype)
                     for _ in range(self.num_layers))                    # h_0 per layer

    def features(self, tokens: Any, training: bool = False) -> Any:
        return self._run(tokens, self.init_state(ops.shape(tokens)[0]), training)[0]

    def _decode(self, tokens: Any, state: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        x, new_state = self._run(tokens, state, False)
        return self._logits(x), new_state

    def _run(self, tokens: Any, state: tuple[Any, ...],
             training: bool) -> tuple[Any, tuple[Any, ...]]:
        d, u = self.embed_dim, self.units
        batch, time = ops.shape(tokens)[0], ops.shape(tokens)[1]
        dtype = self.compute_dtype  # explicit casts: `decode` runs outside Keras's autocasting
        x = ops.reshape(self._embed(tokens), (-1, d))                     # (B*T, D)
        new_state = []
        for i, norm in enumerate(self.norms):
            w_in, b_in, w_out = (ops.cast(w, dtype)
                                 for w in (self.w_in[i], self.b_in[i], self.w_out[i]))
            gz = ops.matmul(norm(x), w_in) + b_in                         # (B*T, 2U)
            z = ops.sigmoid(gz[:, :u])
            a = ops.reshape(1.0 - z, (batch, time, u))                    # (B, T, U)
            b = ops.reshape(z * gz[:, u:], (batch, time, u))
            h0 = ops.cast(state[i], dtype)[:, None, :]                    # (B, 1, U)
            b = ops.concatenate([b[:, :1] + a[:, :1] * h0, b[:, 1:]], axis=1)
            _, h = ops.associative_scan(_combine, (a, b), axis=1)         # (B, T, U)
            new_state.append(h[:, -1])
            y = ops.matmul(ops.reshape(h, (-1, u)), w_out)                # (B*T, D)
            x = x + self.drop(y, training=training)
        x = ops.reshape(self.ln_f(x), (batch, time, d))
        return x, tuple(new_state)                                        # x: (B, T, D)
