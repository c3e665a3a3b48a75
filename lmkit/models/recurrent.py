"""`lstm`, `gru` and `classic_lstm`: stacked gated recurrent language models.

    tokens (B, T) -> embedding (B, T, E) -> [LSTM|GRU (units) -> dropout] x layers -> head (B, T, V)

The recurrent layers are Keras's own `LSTM` / `GRU`, returning every position (all positions are
trained) and their final state (carried between `decode` calls). Dropout is applied to the input
of each recurrent layer and to the output of the last one (between layers, as in Zaremba et al.).

`classic_lstm` is the classic Keras word-level example, exactly: Embedding(vocab, 128) ->
LSTM(128) -> Dense(vocab, softmax). The softmax is folded into the cross-entropy loss, which takes
logits, so the model returns the Dense layer's logits.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from lmkit.models.base import LanguageModel, check_bool, check_positive_int, check_rate
from lmkit.registry import architectures

__all__ = ["StackedRNN", "LSTMModel", "GRUModel", "ClassicLSTM"]


class StackedRNN(LanguageModel):
    """Embedding, `layers` stacked Keras recurrent layers of `units`, and an output head.

    With ``tie_embeddings=True`` the output head reuses the embedding matrix; when `units`
    differs from `embed_dim` a linear projection ``units -> embed_dim`` comes first.
    Subclasses set `cell_class` (``keras.layers.LSTM`` or ``keras.layers.GRU``).
    """

    # One layer and a learning rate of 3e-3 learn a character model in a few hundred steps
    # (lstm: val loss 2.47 at step 400 on Tiny Shakespeare, where 4 layers at 1e-3 stay at the
    # unigram level, 3.37: docs/defaults.md); a short warm-up is enough for them.
    config_defaults = {"layers": 1, "learning_rate": 3e-3, "warmup_steps": 40}

    cell_class: type[keras.layers.Layer]
    # JAX's cuDNN LSTM, which Keras picks on a GPU, compiles for float32 only: under
    # mixed_bfloat16 it fails ("Unknown output type bfloat16", seen on an H200), so such a model
    # takes Keras's generic loop there.
    cudnn_float32_only = False

    def __init__(self, vocab_size: int, *, embed_dim: int = 128, units: int = 128,
                 layers: int = 1, dropout: float = 0.0, tie_embeddings: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(vocab_size, **kwargs)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.units = check_positive_int("units", units)
        self.num_layers = check_positive_int("layers", layers)
        self.dropout_rate = check_rate("dropout", dropout)
        self.tie_embeddings = check_bool("tie_embeddings", tie_embeddings)
        self._options = {"embed_dim": embed_dim, "units": units, "layers": layers,
                         "dropout": dropout, "tie_embeddings": tie_embeddings}
        cudnn = False if self.cudnn_float32_only and self.compute_dtype != "float32" else "auto"
        self.rnns = [
            self.cell_class(units, return_sequences=True, return_state=True, use_cudnn=cudnn,
                            name=f"rnn_{i}")
            for i in range(layers)
        ]
        self.drop = keras.layers.Dropout(self.dropout_rate)

    @property
    def _states_per_layer(self) -> int:
        return 2 if self.cell_class is keras.layers.LSTM else 1   # LSTM: (h, c); GRU: h

    def build(self, input_shape: Any) -> None:
        self._build_embedding(self.embed_dim)
        width = self.embed_dim
        for rnn in self.rnns:
            rnn.build((None, None, width))
            width = self.units
        self._build_head(self.units, self.tie_embeddings)

    def init_state(self, batch_size: int) -> tuple[Any, ...]:
        zeros = ops.zeros((batch_size, self.units), dtype=self.compute_dtype)
        return tuple(zeros for _ in range(self.num_layers * self._states_per_layer))

    def features(self, tokens: Any, training: bool = False) -> Any:
        return self._run(tokens, None, training)[0]

    def _decode(self, tokens: Any, state: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        x, new_state = self._run(tokens, state, False)
        return self._logits(x), new_state

    def _run(self, tokens: Any, state: tuple[Any, ...] | None,
             training: bool) -> tuple[Any, tuple[Any, ...]]:
        n = self._states_per_layer
        x = self._embed(tokens)                                        # (B, T, E)
        new_state: list[Any] = []
        for i, rnn in enumerate(self.rnns):
            initial = None if state is None else list(state[i * n:(i + 1) * n])
            x, *layer_state = rnn(self.drop(x, training=training), initial_state=initial,
                                  training=training)                   # (B, T, units)
            new_state.extend(layer_state)
        return self.drop(x, training=training), tuple(new_state)      # (B, T, units)


@architectures.register(
    "lstm", aliases=("long-short-term-memory",),
    description="Stacked LSTM with dropout between layers and optional tied embeddings.",
)
@keras.saving.register_keras_serializable(package="lmkit")
class LSTMModel(StackedRNN):
    """Stacked LSTM language model.

    >>> model = LSTMModel(vocab_size=65, units=256, layers=2, dropout=0.2)  # doctest: +SKIP
    """

    cell_class = keras.layers.LSTM
    cudnn_float32_only = True


@architectures.register(
    "gru", aliases=("gated-recurrent-unit",),
    description="Stacked GRU with dropout between layers and optional tied embeddings.",
)
@keras.saving.register_keras_serializable(package="lmkit")
class GRUModel(StackedRNN):
    """Stacked GRU language model (Keras `GRU`, ``reset_after=True``).

    >>> model = GRUModel(vocab_size=65, units=256, layers=2, tie_embeddings=True)  # doctest: +SKIP
    """

    cell_class = keras.layers.GRU


@architectures.register(
    "classic_lstm", aliases=("keras_lstm",),
    description="The classic Keras example: Embedding(V, 128) -> LSTM(128) -> Dense(V).",
)
@keras.saving.register_keras_serializable(package="lmkit")
class ClassicLSTM(LSTMModel):
    """Embedding(vocab_size, 128) -> LSTM(128) -> Dense(vocab_size): the classic Keras example.

    Same layers, sizes and initializers; the final softmax lives in the loss (cross-entropy from
    logits), which is the same mathematics computed more stably. Every position is predicted.

    >>> model = ClassicLSTM(vocab_size=10000)   # doctest: +SKIP
    """

    def __init__(self, vocab_size: int, **kwargs: Any) -> None:
        super().__init__(vocab_size, embed_dim=128, units=128, layers=1, dropout=0.0,
                         tie_embeddings=False, **kwargs)
        self._options = {}
