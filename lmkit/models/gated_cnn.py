"""`gated_cnn`: causal gated convolutional language model (Dauphin et al., 2017).

    tokens (B, T) -> embedding (B, T, E) -> linear to `units` channels
      -> `layers` residual GLU blocks:  x + dropout((conv_a(x) + b) * sigmoid(conv_g(x) + c))
      -> head (B, T, V)

Each convolution is causal: the input is padded with `kernel_size - 1` zeros on the left, so the
output at position t sees tokens t - kernel_size + 1 .. t only. The convolution is computed as one
2-D matmul on the `kernel_size` shifted copies of the input, ``(B*T, k*C) @ (k*C, 2C)``, which
XLA:CPU runs much faster than a 3-D convolution.

The model keeps no decoding state: the generator recomputes the context window
(``init_state`` returns None).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from lmkit.errors import ConfigError
from lmkit.models.base import LanguageModel, check_bool, check_positive_int, check_rate
from lmkit.registry import architectures

__all__ = ["GatedCNN"]


@architectures.register(
    "gated_cnn", aliases=("gcnn", "glu_cnn"),
    description="Causal gated convolutional LM (Dauphin et al. 2017): residual GLU blocks.",
)
@keras.saving.register_keras_serializable(package="lmkit")
class GatedCNN(LanguageModel):
    """Gated convolutional LM with `layers` residual GLU blocks of `units` channels.

    >>> model = GatedCNN(vocab_size=65, units=128, layers=4, kernel_size=4)   # doctest: +SKIP
    """

    cpu_batch_parts = 2  # see LanguageModel.cpu_batch_parts

    @classmethod
    def training_size(cls, vocab_size: int, batch_size: int, seq_len: int,
                      options: dict[str, Any]) -> tuple[int, int]:
        """The size guard's estimate with the `kernel_size` taps of each block; a kernel longer
        than the window is refused here, before anything is built: its extra taps would only
        ever see padding, and each tap is one more slice to compile (10**6 taps took minutes)."""
        k = int(options.get("kernel_size", 4))
        if k > seq_len:
            raise ConfigError(f"kernel_size={k} is longer than seq_len={seq_len}: the taps beyond "
                              f"the training window only ever see padding and are never trained. "
                              f"Use kernel_size <= seq_len")
        c, e = int(options.get("units", 128)), int(options.get("embed_dim", 128))
        n = int(options.get("layers", 4))
        params = vocab_size * e + e * c + n * (k * c * 2 * c + 2 * c) + c * vocab_size
        return params, batch_size * seq_len * (n * (k * c + 4 * c) + 2 * vocab_size)

    def __init__(self, vocab_size: int, *, embed_dim: int = 128, units: int = 128,
                 layers: int = 4, kernel_size: int = 4, dropout: float = 0.0,
                 tie_embeddings: bool = False, **kwargs: Any) -> None:
        super().__init__(vocab_size, **kwargs)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.units = check_positive_int("units", units)
        self.num_layers = check_positive_int("layers", layers)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.dropout_rate = check_rate("dropout", dropout)
        self.tie_embeddings = check_bool("tie_embeddings", tie_embeddings)
        self._options = {"embed_dim": embed_dim, "units": units, "layers": layers,
                         "kernel_size": kernel_size, "dropout": dropout,
                         "tie_embeddings": tie_embeddings}
        self.drop = keras.layers.Dropout(self.dropout_rate)

    def build(self, input_shape: Any) -> None:
        c, k = self.units, self.kernel_size
        self._build_embedding(self.embed_dim)
        self.w_in = self.add_weight(shape=(self.embed_dim, c), initializer="glorot_uniform",
                                    name="w_in")
        # One kernel per block for value and gate together: (k*C, 2C).
        self.kernels = [
            self.add_weight(shape=(k * c, 2 * c), initializer="glorot_uniform", name=f"conv_{i}")
            for i in range(self.num_layers)
        ]
        self.biases = [
            self.add_weight(shape=(2 * c,), initializer="zeros", name=f"conv_bias_{i}")
            for i in range(self.num_layers)
        ]
        self._build_head(c, self.tie_embeddings)

    def features(self, tokens: Any, training: bool = False) -> Any:
        c, k = self.units, self.kernel_size
        batch, time = ops.shape(tokens)[0], ops.shape(tokens)[1]
        x = self._embed(tokens)                                           # (B, T, E)
        x = ops.matmul(ops.reshape(x, (-1, self.embed_dim)), self.w_in)   # (B*T, C)
        for kernel, bias in zip(self.kernels, self.biases):
            h = ops.reshape(x, (batch, time, c))
            h = ops.pad(h, ((0, 0), (k - 1, 0), (0, 0)))                  # (B, T+k-1, C), causal
            taps = ops.concatenate([h[:, i:i + time] for i in range(k)], axis=-1)  # (B, T, k*C)
            h = ops.matmul(ops.reshape(taps, (-1, k * c)), kernel) + bias  # (B*T, 2C)
            value, gate = h[:, :c], h[:, c:]
            x = x + self.drop(value * ops.sigmoid(gate), training=training)  # GLU, residual
        return ops.reshape(x, (batch, time, c))                           # (B, T, C)
