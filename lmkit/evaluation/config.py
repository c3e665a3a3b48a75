"""`EvalConfig`: every option of an evaluation, typed, documented and validated.

The same keys come from keyword arguments of `lmkit.evaluate`, ``--set key=value`` of
``lmkit eval`` and the `%lmeval` magic::

    >>> cfg = EvalConfig.from_dict({"max_steps": "200", "pooling": "mean"})
    >>> cfg.max_steps, cfg.pooling
    (200, 'mean')

Unknown keys and wrong types raise `ConfigError` naming the key, the value and what is expected.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, fields
from typing import Any

from lmkit.config import _coerce, _key
from lmkit.errors import ConfigError, did_you_mean

__all__ = ["EvalConfig"]


@dataclass
class EvalConfig:
    """Options of `lmkit.evaluate` (fine-tuning budget, head, optimizer, data limits)."""

    # data
    split: str | None = _key(None, "Split to score (default: the task's dev split; `test` for IMDb).")
    train_split: str = _key("train", "Split to fine-tune on.")
    max_length: int = _key(128, "Tokens per example (longer inputs are truncated; pairs share it).", min=2)
    max_train_examples: int | None = _key(None, "Fine-tune on at most this many examples (seeded sample).", min=1)
    max_eval_examples: int | None = _key(None, "Score at most this many examples (the first ones).", min=1)
    # head
    pooling: str = _key("concat", "Sequence summary fed to the head: `last` state, `mean` of states, or `concat` of both.",
                        choices=("last", "mean", "concat"))
    head_dropout: float = _key(0.1, "Dropout before the classification head.", min=0.0, max=0.95)
    # fine-tuning
    max_steps: int = _key(300, "Fine-tuning budget in optimizer steps (`0`: score the untrained head).", min=0)
    epochs: float | None = _key(None, "Passes over the training split; overrides `max_steps` when set.", min=0.0, exclusive_min=True)
    batch_size: int = _key(32, "Training examples per step.", min=1)
    eval_batch_size: int = _key(256, "Examples per scoring batch (memory is bounded by it).", min=1)
    learning_rate: float = _key(2e-3, "Peak learning rate of the head (warm-up, then linear decay).", min=0.0, exclusive_min=True)
    backbone_lr_multiplier: float | None = _key(None, "Backbone learning rate as a fraction of `learning_rate` (0: frozen backbone; default 0.3 for a pretrained run, 1 for scratch).", min=0.0)
    gradual_unfreezing: bool = _key(False, "Unfreeze the backbone from its top layers down over the first half of training (ULMFiT).")
    weight_decay: float = _key(0.01, "Decoupled weight decay (AdamW).", min=0.0)
    warmup_fraction: float = _key(0.06, "Fraction of the steps spent warming up the learning rate.", min=0.0, max=1.0)
    clipnorm: float | None = _key(1.0, "Clip gradients to this global norm (`none` to disable).", min=0.0, exclusive_min=True)
    log_every: int = _key(20, "Report progress every N steps.", min=1)
    seed: int = _key(0, "Seed of the head, the data order and dropout.", min=0)
    # the model trained from scratch (`run_or_path="scratch"`)
    arch: str = _key("lstm", "Architecture of a scratch model (`lmkit list architectures`).")
    tokenizer: str = _key("word", "Tokenizer of a scratch model, fitted on the training split.")
    vocab_size: int | None = _key(20000, "Vocabulary of a scratch model's tokenizer.", min=2)
    embed_dim: int = _key(128, "Embedding width of a scratch model.", min=1)
    units: int = _key(128, "Hidden units of a scratch model.", min=1)
    layers: int = _key(1, "Layers of a scratch model.", min=1)
    heads: int = _key(4, "Attention heads of a scratch `gpt`.", min=1)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(EvalConfig)
        for f in fields(self):
            try:
                value = _coerce(f.name, getattr(self, f.name), hints[f.name], "eval option")
            except ConfigError as exc:
                raise ConfigError(str(exc).replace("eval option: config key", "option")) from None
            object.__setattr__(self, f.name, value)
            _check_range(f, value)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EvalConfig":
        """Build from a mapping (strings from ``--set`` are coerced to the declared types)."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"unknown evaluation option '{key}'{did_you_mean(key, known)}. "
                    f"Options: {', '.join(sorted(known))}."
                )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def total_steps(self, train_examples: int) -> int:
        """Optimizer steps of fine-tuning on `train_examples` examples."""
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * train_examples / self.batch_size))
        return self.max_steps


def _check_range(f: dataclasses.Field, value: Any) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(
            f"option '{f.name}' must be one of {', '.join(map(repr, meta['choices']))}, "
            f"got {value!r}{did_you_mean(str(value), meta['choices'])}"
        )
    if isinstance(value, str):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"option '{f.name}' must be a finite number, got {value!r}")
    low, high = meta.get("min"), meta.get("max")
    if low is not None and (value < low or (meta.get("exclusive_min") and value == low)):
        relation = "greater than" if meta.get("exclusive_min") else "at least"
        raise ConfigError(f"option '{f.name}' must be {relation} {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"option '{f.name}' must be at most {high}, got {value!r}")
