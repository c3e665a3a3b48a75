"""Build a registered architecture from a `TrainConfig`."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from lmkit.registry import architectures

if TYPE_CHECKING:
    import keras

    from lmkit.config import TrainConfig

__all__ = ["build_model"]


#: what a Keras model class's ``**kwargs`` forward to `keras.Model`; any other [model] option
#: would only fail later, inside Keras, as a traceback
_KERAS_MODEL_KWARGS = {"name", "dtype", "trainable"}


def _accepted(factory: Any) -> set[str]:
    """The keyword options `factory` takes; ``"kwargs"`` among them when it takes any."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = inspect.signature(target).parameters
    names = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        import keras

        if inspect.isclass(factory) and issubclass(factory, keras.layers.Layer):
            names |= _KERAS_MODEL_KWARGS
        else:
            names.add("kwargs")  # a plain function: where its **kwargs go is its own business
    return names - {"self", "vocab_size"}


def build_model(cfg: "TrainConfig", vocab_size: int, factory: Any = None) -> "keras.Model":
    """Instantiate `cfg.arch` (or `factory`, its resolved registry object) for `vocab_size`
    tokens and build its weights.

    Only the generic keys the architecture's constructor accepts are passed (an LSTM has no
    `heads`), plus the free-form `[model]` table.
    """
    import keras

    factory = factory or architectures.get(cfg.arch)
    kwargs = cfg.model_kwargs(_accepted(factory))
    kwargs.pop("kwargs", None)
    previous = keras.config.dtype_policy()
    # Layers read the global policy when they are created; restore it so nothing else changes.
    keras.config.set_dtype_policy(cfg.precision)
    try:
        model = factory(vocab_size, **kwargs)
        model(keras.ops.zeros((1, min(cfg.seq_len, 8)), dtype="int32"))  # create the weights
    finally:
        keras.config.set_dtype_policy(previous)
    return model
