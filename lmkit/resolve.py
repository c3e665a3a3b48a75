"""Resolve once: every default of a config applied in one place, then every registry name
looked up, the entries handed down.

The defaults, lowest first (a key set by a later layer wins; tables merge entry by entry):

1. the global default (the config class's own, `lmkit.config`);
2. the architecture's ``config_defaults`` (a training that starts: ``training_starts=True``;
   not on resume, not for fine-tuning);
3. a preset (``lmkit train nanogpt_char``: its keys are recorded as such when read);
4. a pretrained checkpoint's recipe, `CHECKPOINT_RECIPE` (fine-tuning a pretrained checkpoint),
   or the options a fine-tuned model being scored again was scored with (``fine_tuned``: it
   reads its examples and decodes as it did);
5. the keys the user set: a file (with its line), a cell, ``--set``, keyword arguments (and, on
   resume, the run's saved config below them).

Then the derived defaults fill what is still none: the loss (the job's own), the backbone's
learning-rate multiplier, warm-up as `WARMUP_FRACTION` of the steps, ``schedule = "constant"``
for an optimizer that makes its own, and `max_length` capped at the backbone's context. Every
value keeps its `lmkit.config.Source` (``lmkit train --dry-run`` prints them).

A typo in any name fails with a did-you-mean before a corpus is tokenized or a model trained;
later code reads the `Entry` (its object and its capabilities) instead of looking the name up
again or comparing strings.

>>> from lmkit.config import TrainConfig
>>> parts = resolve(TrainConfig(optimizer="full_batch"))
>>> parts.optimizer.name, parts.optimizer.has("full_batch")
('gd', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmkit.config import EvalConfig, Source, TrainConfig
from lmkit.errors import ConfigError
from lmkit.registry import Entry, get_registry

__all__ = ["Resolved", "resolve", "LABEL_SMOOTHING", "CHECKPOINT_RECIPE", "PRETRAINED_LR_MULTIPLIER",
           "WARMUP_FRACTION", "BACKBONES"]

LABEL_SMOOTHING = "label_smoothing"  # capability of a loss that reads the `label_smoothing` key

#: The standard recipe for a pretrained checkpoint's backbone (BERT's fine-tuning: AdamW, the
#: whole network at one small learning rate, warm-up then linear decay, dropout 0.1); an encoder
#: pools its [CLS] state, a decoder its last. Options the user sets win.
CHECKPOINT_RECIPE: dict[str, Any] = {
    "learning_rate": 5e-5, "backbone_lr_multiplier": 1.0, "optimizer": "adamw",
    "schedule": "warmup_linear", "head_dropout": 0.1, "weight_decay": 0.01,
}
#: a trained run's backbone moves gently under its new head; a scratch one must learn everything
PRETRAINED_LR_MULTIPLIER = 0.3
#: warm-up of the schedule when `warmup_steps` is none, as a fraction of the steps
WARMUP_FRACTION = 0.06
#: what fine-tuning starts from: a model trained from random weights, a run, or a pretrained
#: checkpoint's encoder or decoder
BACKBONES = ("scratch", "run", "encoder", "decoder")

# config key -> registry kind
_KEYS = {"arch": "architectures", "tokenizer": "tokenizers", "optimizer": "optimizers",
         "schedule": "schedules", "loss": "losses"}


@dataclass(frozen=True)
class Resolved:
    """A config with every default applied (`config`) and the registry entries it names; a key
    the config lacks (or sets to none) is None."""

    config: Any
    arch: Entry[Any] | None = None
    tokenizer: Entry[Any] | None = None
    optimizer: Entry[Any] | None = None
    schedule: Entry[Any] | None = None
    loss: Entry[Any] | None = None
    metrics: tuple[Entry[Any], ...] = ()


def resolve(cfg: TrainConfig | EvalConfig, *, training_starts: bool = False, backbone: str | None = None,
            task_loss: str | None = None, steps: int | None = None,
            context: int | None = None, fine_tuned: dict[str, Any] | None = None) -> Resolved:
    """Apply every default to `cfg` in the order of this module's docstring, then look up every
    registry name in it; call it once per job.

    `training_starts`: a training that starts takes its architecture's defaults and a schedule-
    free optimizer's constant schedule (a resumed one keeps its saved config). Fine-tuning
    says what it starts from (`backbone`, one of `BACKBONES`), the task's loss, its
    total `steps` when known (training: `max_steps`, unless `epochs` decides) and the backbone's
    longest input (`context`); scoring a fine-tuned model again, the options it was scored
    with (`fine_tuned`, kept in its folder). Unknown names raise `RegistryError` naming the
    value, the closest name and the choices.

    >>> cfg = TrainConfig.from_sources(overrides={"arch": "lstm", "layers": 3})
    >>> tuned = resolve(cfg, training_starts=True).config
    >>> tuned.layers, tuned.learning_rate, str(tuned.source("learning_rate"))
    (3, 0.003, 'architecture: lstm')
    """
    if backbone is not None and backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
    if isinstance(cfg, TrainConfig) and training_starts:
        arch = get_registry("architectures").entry(cfg.arch)
        cfg = cfg.layered(dict(getattr(arch.obj, "config_defaults", {})), Source("architecture", arch.name))
    if backbone in ("encoder", "decoder"):
        pooling = "cls" if backbone == "encoder" else "last"
        cfg = cfg.layered({**CHECKPOINT_RECIPE, "pooling": pooling},
                          Source("recipe", f"pretrained {backbone}"))
    if fine_tuned:
        cfg = cfg.layered(fine_tuned, Source("recipe", "the fine-tuned model's own scoring"))
    cfg = _derived(cfg, training_starts, backbone, task_loss, steps, context)
    return _entries(cfg)


def _derived(cfg: Any, training_starts: bool, backbone: str | None, task_loss: str | None,
             steps: int | None, context: int | None) -> Any:
    """`cfg` with the derived defaults (the module's docstring), each recorded as such."""
    def derive(why: str, **changes: Any) -> Any:
        return cfg.replace(by=Source("derived", why), **changes)

    if cfg.loss is None:
        cfg = derive("the task's loss" if task_loss else "the job's loss",
                     loss=task_loss or "cross_entropy")
    if getattr(cfg, "backbone_lr_multiplier", 0.0) is None and backbone is not None:
        scratch = backbone == "scratch"
        cfg = derive("a scratch backbone learns everything" if scratch else "a trained run's backbone",
                     backbone_lr_multiplier=1.0 if scratch else PRETRAINED_LR_MULTIPLIER)
    if steps is None and cfg.epochs is None:
        steps = cfg.max_steps
    if cfg.warmup_steps is None and steps is not None:
        cfg = derive(f"{WARMUP_FRACTION:.0%} of {steps} steps", warmup_steps=int(WARMUP_FRACTION * steps))
    elif cfg.warmup_steps is None and isinstance(cfg, TrainConfig):
        raise ConfigError(f"warmup_steps = none means {WARMUP_FRACTION:.0%} of the steps, which "
                          f"epochs = {cfg.epochs} leaves unknown until the data is read; set "
                          f"warmup_steps (e.g. 100)")
    max_length = getattr(cfg, "max_length", None)
    if context is not None and max_length is not None and context < max_length:
        cfg = derive(f"the backbone reads at most {context} positions", max_length=context)
    if isinstance(cfg, TrainConfig) and training_starts:
        from lmkit.optim import without_schedule

        if without_schedule(cfg, get_registry("optimizers").entry(cfg.optimizer)) is not cfg:
            cfg = derive(f"{cfg.optimizer} makes its own schedule", schedule="constant")
    return cfg


def _entries(cfg: Any) -> Resolved:
    """`cfg` with the registry entries of every name in it."""
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
    optimizer = found.get("optimizer")
    if getattr(cfg, "adapter", "none") == "lora" and optimizer is not None \
            and optimizer.has("evaluation_weights"):  # lmkit.optim.EVALUATION_WEIGHTS
        raise ConfigError(
            f"optimizer '{optimizer.name}' evaluates weights other than those it trains, which "
            f"LoRA adapters do not keep; with adapter = \"lora\" choose another optimizer "
            f"(e.g. adamw)")
    return Resolved(config=cfg, **found)
