"""`rnn`: the Elman recurrent network, exactly as written down in 1990.

    h_t = f(W x_t + U h_{t-1} + b)        x_t: one-hot token, f: tanh or relu
    y_t = softmax(W' h_t + c)

``W x_t`` for a one-hot ``x_t`` is column ``x_t`` of ``W``, so it is computed as a row lookup in
``W`` stored as ``(V, units)``. The model returns the logits ``W' h_t + c``; the softmax is part of
the cross-entropy loss, which takes logits.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from lmkit.models.base import LanguageModel, check_choice, check_positive_int
from lmkit.registry import architectures

__all__ = ["ElmanRNN"]

_ACTIVATIONS = {"tanh": ops.tanh, "relu": ops.relu}


@architectures.register(
    "rnn", aliases=("elman",),
    description="Elman RNN: h_t = f(W x_t + U h_{t-1} + b), y_t = softmax(W' h_t + c).",
)
@keras.saving.register_keras_serializable(package="lmkit")
class ElmanRNN(LanguageModel):
    """Elman RNN language model with one hidden layer of `units` and activation tanh or relu.

    >>> model = ElmanRNN(vocab_size=65, units=128, activation="relu")   # doctest: +SKIP
    """

    # a single recurrent layer learns faster than the global default learning rate allows
    config_defaults = {"learning_rate": 3e-3, "warmup_steps": 40}

    def __init__(self, vocab_size: int, *, units: int = 128, activation: str = "tanh",
                 **kwargs: Any) -> None:
        super().__init__(vocab_size, **kwargs)
        self.units = check_positive_int("units", units)
        self.activation = check_choice("activation", activation, tuple(_ACTIVATIONS))
        self._options = {"units": units, "activation": activation}

    def build(self, input_shape: Any) -> None:
        v, u = self.vocab_size, self.units
        self.W = self.add_weight(shape=(v, u), initializer="glorot_uniform", name="W")
        self.U = self.add_weight(shape=(u, u), initializer="orthogonal", name="U")
        self.b = self.add_weight(shape=(u,), initializer="zeros", name="b")
        self.W_out = self.add_weight(shape=(u, v), initializer="glorot_uniform", autocast=False,
                                     name="W_out")
        self.c = self.add_weight(shape=(v,), initializer="zeros", autocast=False, name="c")

    @property
    def head_bias(self) -> Any:
        """The logit bias ``c``: what ``head_bias_init = "unigram"`` sets."""
        return self.c

    def init_state(self, batch_size: int) -> Any:
        return ops.zeros((batch_size, self.units), dtype=self.compute_dtype)  # h_0 = 0

    def call(self, tokens: Any, training: bool = False) -> Any:
        return self._output(self.features(tokens, training=training))

    def features(self, tokens: Any, training: bool = False) -> Any:
        return self._recur(tokens, self.init_state(ops.shape(tokens)[0]))[0]

    def _decode(self, tokens: Any, state: Any) -> tuple[Any, Any]:
        hs, h_last = self._recur(tokens, state)
        return self._output(hs), h_last

    def _recur(self, tokens: Any, state: Any) -> tuple[Any, Any]:
        """h_t = f(W x_t + U h_{t-1} + b) over the sequence: ``(hs (B, T, U), h_T)``."""
        f = _ACTIVATIONS[self.activation]
        # Explicit casts: the generator calls `decode` directly, outside Keras's autocasting.
        dtype = self.compute_dtype
        W, U, b = (ops.cast(w, dtype) for w in (self.W, self.U, self.b))
        wx = ops.take(W, ops.cast(tokens, "int32"), axis=0)            # (B, T, U): W x_t
        wx = ops.transpose(wx, (1, 0, 2)) + b                          # (T, B, U), time-major

        def step(h, wx_t):                                             # h: (B, U)
            h = f(wx_t + ops.matmul(h, U))
            return h, h

        h_last, hs = ops.scan(step, ops.cast(state, dtype), wx)        # hs: (T, B, U)
        return ops.transpose(hs, (1, 0, 2)), h_last                    # (B, T, U)

    def _output(self, hs: Any) -> Any:
        """y_t = W' h_t + c (the softmax is in the loss): ``(B, T, U)`` -> logits ``(B, T, V)``."""
        batch, time = ops.shape(hs)[0], ops.shape(hs)[1]
        h2d = ops.cast(ops.reshape(hs, (-1, self.units)), "float32")   # (B*T, U)
        logits = ops.matmul(h2d, self.W_out) + self.c                  # (B*T, V): W' h_t + c
        return ops.reshape(logits, (batch, time, self.vocab_size))
