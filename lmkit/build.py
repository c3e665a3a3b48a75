"""Build a registered architecture from a `TrainConfig`."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from lmkit.errors import ConfigError
from lmkit.registry import architectures

if TYPE_CHECKING:
    import keras

    from lmkit.config import TrainConfig

__all__ = ["build_model", "copy_model", "create_weights", "dtype_policy", "check_precision",
           "check_fits", "memory_limit"]


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
    with dtype_policy(cfg.precision):
        model = factory(vocab_size, **kwargs)
        create_weights(model, min(cfg.seq_len, 8))
    return model


def copy_model(model: "keras.Model", precision: str = "float32") -> "keras.Model":
    """A fresh `model` of the same class, options and weights, its layers created under the
    dtype policy `precision` (``mixed_bfloat16``: the weights stay float32, layers compute in
    bfloat16).

    >>> tuned = copy_model(pretrained.model, "mixed_bfloat16")   # doctest: +SKIP
    """
    config = {k: v for k, v in model.get_config().items() if k != "dtype"}  # `precision`'s
    with dtype_policy(precision):
        copy = type(model).from_config(config)
        create_weights(copy, drawn=False)
    copy.set_weights(model.get_weights())
    return copy


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Layers created inside take Keras's dtype policy `name` (``float32``, ``mixed_bfloat16``):
    they read the global policy when they are created. The previous policy is restored after,
    so nothing else changes.

    >>> with dtype_policy("mixed_bfloat16"):                # doctest: +SKIP
    ...     model = factory(vocab_size)
    """
    import keras

    check_precision(name)

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def check_precision(name: str) -> None:
    """A `ConfigError` unless `name` is one of `PRECISIONS` (the dtype policies lmkit's models
    are written for)."""
    from lmkit.config.sections import PRECISIONS

    if name not in PRECISIONS:
        raise ConfigError(f"`precision` must be one of {', '.join(map(repr, PRECISIONS))}, got "
                          f"{name!r}; 'mixed_bfloat16' computes in bfloat16 with float32 weights")


def create_weights(model: "keras.Model", length: int = 2, drawn: bool = True) -> None:
    """Create `model`'s weights with a symbolic call on ``(1, length)`` tokens: a call on real
    tokens would run every op of the forward pass eagerly, each compiled on its own (≈ 90
    programs for a small transformer, seconds on a CPU). ``drawn=False``: every weight is
    assigned next (a checkpoint's, a copy's), so the host-drawn ones are left zero
    (`lmkit.models.base.undrawn_weights`).

    >>> create_weights(model); model.built                               # doctest: +SKIP
    True
    """
    import keras

    from lmkit.models.base import undrawn_weights

    with nullcontext() if drawn else undrawn_weights():
        model(keras.Input(shape=(length,), batch_size=1, dtype="int32"))


def memory_limit() -> tuple[int, str]:
    """Bytes the training can use at most, and where that figure comes from: the accelerator's
    memory on a GPU/TPU backend that reports it, else this machine's physical memory."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"]), f"{device.device_kind} memory"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"


def check_fits(cfg: "TrainConfig", vocab_size: int, factory: Any) -> str | None:
    """Refuse, before building anything, a training that cannot fit in memory; returns a note
    for the run's summary when it fits only because of its LoRA adapter, else None.

    Each parameter costs 16 bytes in training (the weight, its gradient and two optimizer
    moments) and each activation float kept for the backward pass 4 (gradients of activations
    are transient). Under ``adapter = "lora"`` a frozen weight costs its 4 bytes only (its
    adapters, a small fraction, are left out: the guard errs low). Without this a
    `layers=10000` or `batch_size=10000000` typo grows for minutes until the machine swaps or
    the process is killed. Architectures without `training_size` are not checked.
    """
    size = getattr(factory, "training_size", None)
    if size is None:
        return None
    params, floats = size(vocab_size, cfg.batch_size, cfg.seq_len,
                          cfg.model_kwargs(_accepted(factory)))
    # the windows of one step are drawn at once: accumulate_steps batches of int64 inputs and targets
    windows = 16 * cfg.batch_size * cfg.accumulate_steps * (cfg.seq_len + 1)
    full, adapted = 16 * params + 4 * floats + windows, 4 * params + 4 * floats + windows
    limit, where = memory_limit()
    gib = 2 ** 30
    lora = getattr(cfg, "adapter", "none") == "lora"
    if (adapted if lora else full) > limit:
        raise ConfigError(
            f"this training needs about {(adapted if lora else full) / gib:,.1f} GiB ({params:,} "
            f"parameters: {(4 if lora else 16) * params / gib:,.1f} GiB"
            f"{'' if lora else ' with gradients and optimizer state'}; one batch's "
            f"activations: {4 * floats / gib:,.1f} GiB; one step's token windows: "
            f"{windows / gib:,.1f} GiB), more than {where} ({limit / gib:,.1f} "
            f"GiB). Make it smaller: fewer `layers`, a smaller `embed_dim`/`units`, "
            f"`batch_size`, `accumulate_steps` or `seq_len` (now layers={cfg.layers}, "
            f"embed_dim={cfg.embed_dim}, units={cfg.units}, batch_size={cfg.batch_size}, "
            f"accumulate_steps={cfg.accumulate_steps}, seq_len={cfg.seq_len})"
            + ("" if lora or adapted > limit else
               f", or train LoRA adapters (adapter = \"lora\": about {adapted / gib:,.1f} GiB, "
               f"the weights frozen with no gradients or optimizer state)") + ".")
    if lora and full > limit:
        return (f"fits only with adapter = \"lora\": about {adapted / gib:,.1f} GiB; training "
                f"every weight would need about {full / gib:,.1f} GiB, more than {where} "
                f"({limit / gib:,.1f} GiB)")
    return None
