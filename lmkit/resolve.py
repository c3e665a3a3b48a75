"""Resolve once: every registry name of a config looked up up front, the entries handed down.

A typo in any name fails in a second with a did-you-mean, before a corpus is tokenized or a
model built; later code reads the `Entry` (its object and its capabilities) instead of looking
the name up again or comparing strings.

>>> from lmkit.config import TrainConfig
>>> parts = resolve(TrainConfig(optimizer="full_batch"))
>>> parts.optimizer.name, parts.optimizer.has("full_batch")
('gd', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmkit.errors import ConfigError
from lmkit.registry import Entry, get_registry

__all__ = ["Resolved", "resolve", "with_arch_defaults", "LABEL_SMOOTHING"]

LABEL_SMOOTHING = "label_smoothing"  # capability of a loss that reads the `label_smoothing` key

# config key -> registry kind
_KEYS = {"arch": "architectures", "tokenizer": "tokenizers", "optimizer": "optimizers",
         "schedule": "schedules", "loss": "losses"}


@dataclass(frozen=True)
class Resolved:
    """The registry entries a config names; a key the config lacks (or sets to none) is None."""

    arch: Entry[Any] | None = None
    tokenizer: Entry[Any] | None = None
    optimizer: Entry[Any] | None = None
    schedule: Entry[Any] | None = None
    loss: Entry[Any] | None = None
    metrics: tuple[Entry[Any], ...] = ()


def resolve(cfg: Any) -> Resolved:
    """Look up every registry name in `cfg` (a `TrainConfig` or `EvalConfig`).

    Unknown names raise `RegistryError` naming the value, the closest name and the choices.
    """
    found: dict[str, Any] = {}
    for key, kind in _KEYS.items():
        name = getattr(cfg, key, None)
        if name is not None:
            found[key] = get_registry(kind).entry(name)
    metrics = get_registry("metrics")
    found["metrics"] = tuple(metrics.entry(m) for m in getattr(cfg, "metrics", ()))
    loss = found.get("loss")
    if getattr(cfg, "label_smoothing", 0.0) and loss is not None and not loss.has(LABEL_SMOOTHING):
        smoothing = [e.name for e in get_registry("losses").list() if e.has(LABEL_SMOOTHING)]
        raise ConfigError(
            f"label_smoothing={cfg.label_smoothing} has no effect with loss '{loss.name}'; "
            f"use a loss that smooths labels ({', '.join(smoothing)}), e.g. --set loss="
            f"{smoothing[0] if smoothing else 'label_smoothing'}, or drop label_smoothing")
    return Resolved(**found)


def with_arch_defaults(cfg: Any, arch: Entry[Any]) -> Any:
    """`cfg` with the architecture's recommended defaults for the keys the user did not set.

    An architecture declares them as its class attribute ``config_defaults`` (a mapping of
    config keys, `lmkit.models.base.LanguageModel.config_defaults`): a small LSTM learns in a
    few hundred steps with a learning rate a GPT would not tolerate. Keys in ``cfg.given`` (from
    a file, a cell, ``--set`` or keyword arguments) always win.

    >>> from lmkit.config import TrainConfig
    >>> cfg = TrainConfig.from_sources(overrides={"arch": "lstm", "layers": 3})
    >>> tuned = with_arch_defaults(cfg, resolve(cfg).arch)
    >>> tuned.layers, tuned.learning_rate > cfg.learning_rate
    (3, True)
    """
    defaults = {k: v for k, v in dict(getattr(arch.obj, "config_defaults", {})).items()
                if k not in cfg.given}
    return cfg.replace(**defaults) if defaults else cfg
