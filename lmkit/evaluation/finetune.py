"""Fine-tune a `SequenceClassifier` and score it, in compiled JAX steps, with training events.

The language-model trainer (`lmkit.training`) samples token windows; a task model needs
labelled, variable-length examples, so this module has its own compact loop built the same way:
Keras's stateless API under `jax.jit`, two AdamW optimizers (head and backbone, the backbone at
``learning_rate * backbone_lr_multiplier``), the same events (`StartEvent`, `StepEvent`,
`EvalEvent`, `EndEvent`) to reporters, and a `StopSignal` checked between steps.

Gradual unfreezing (ULMFiT): the backbone's layers are groups (its own weights such as the
embedding first, then each sub-layer in order); they are unfrozen from the top group down at
even intervals over the first half of training. Frozen groups get neither gradient nor update
(masked inside the compiled step, so unfreezing never recompiles).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from lmkit.errors import ConfigError
from lmkit.evaluation.config import EvalConfig
from lmkit.evaluation.encoding import Encoded, batches
from lmkit.evaluation.heads import SequenceClassifier
from lmkit.schedules import WarmupDecay
from lmkit.engine.events import (CheckpointEvent, EndEvent, Event, StartEvent, StepEvent,
                                   StopSignal)

__all__ = ["finetune", "predict", "backbone_groups"]


def backbone_groups(backbone: keras.Model) -> list[list[Any]]:
    """Trainable backbone variables grouped bottom-up: own weights, then each sub-layer."""
    in_layers = {id(v) for layer in backbone.layers for v in layer.trainable_variables}
    own = [v for v in backbone.trainable_variables if id(v) not in in_layers]
    groups = [own] if own else []
    groups += [list(layer.trainable_variables) for layer in backbone.layers if layer.trainable_variables]
    return groups


def _unfrozen_groups(step: int, total: int, n_groups: int, gradual: bool) -> int:
    """How many backbone groups (counted from the top) train at `step`."""
    if not gradual or n_groups == 0:
        return n_groups
    interval = max(total // 2, 1) / n_groups
    return min(n_groups, 1 + int(step / interval)) if interval > 0 else n_groups


def _require_jax() -> None:
    if keras.backend.backend() != "jax":
        raise ConfigError(
            f"fine-tuning for evaluation runs on the JAX backend; KERAS_BACKEND is "
            f"'{keras.backend.backend()}'. Set KERAS_BACKEND=jax before importing lmkit."
        )


def finetune(
    model: SequenceClassifier, train: Encoded, cfg: EvalConfig, regression: bool,
    reporters: Sequence[Callable[[Event], None]] = (), stop: StopSignal | None = None,
    name: str = "task",
) -> dict[str, Any]:
    """Train `model` on `train` for ``cfg.total_steps(len(train))`` steps; returns a summary.

    Weights are written back into `model` at the end (also when stopped early).
    """
    import jax

    _require_jax()
    stop = stop or StopSignal()
    total = cfg.total_steps(len(train))
    emit = _emitter(reporters)
    trainable = model.trainable_variables
    groups = backbone_groups(model.backbone)
    group_of = {id(v): g for g, vars_ in enumerate(groups) for v in vars_}
    is_backbone = [id(v) in group_of for v in trainable]
    lr_mult = 1.0 if cfg.backbone_lr_multiplier is None else cfg.backbone_lr_multiplier
    n_params = int(sum(np.prod(v.shape) for v in trainable))
    mean_tokens = float(np.mean([len(ids) for ids in train.ids])) if len(train) else 0.0
    emit(StartEvent(name, total, 0, type(model.backbone).__name__, n_params, keras.backend.backend(),
                    str(jax.devices()[0].platform), int(cfg.batch_size * mean_tokens), cfg.to_dict()))
    if total == 0:
        emit(EndEvent(0, "completed", 0.0, {}))
        return {"steps": 0, "reason": "completed"}

    warmup = int(cfg.warmup_fraction * total)
    common = {"weight_decay": cfg.weight_decay, **({"global_clipnorm": cfg.clipnorm} if cfg.clipnorm else {})}
    schedule = WarmupDecay(cfg.learning_rate, total, warmup, "linear")
    head_opt = keras.optimizers.AdamW(schedule, **common)
    body_opt = keras.optimizers.AdamW(WarmupDecay(cfg.learning_rate * max(lr_mult, 1e-12), total, warmup, "linear"), **common)
    head_vars = [v for v, b in zip(trainable, is_backbone) if not b]
    body_vars = [v for v, b in zip(trainable, is_backbone) if b]
    head_opt.build(head_vars)
    body_opt.build(body_vars)

    def split(values: list[Any]) -> tuple[list[Any], list[Any]]:
        return ([x for x, b in zip(values, is_backbone) if not b], [x for x, b in zip(values, is_backbone) if b])

    def merge(head: list[Any], body: list[Any]) -> list[Any]:
        head_it, body_it = iter(head), iter(body)
        return [next(body_it) if b else next(head_it) for b in is_backbone]

    def loss_of(train_vals, non_train, tokens, lengths, labels):
        logits, non_train = model.stateless_call(train_vals, non_train, (tokens, lengths), training=True)
        if regression:
            loss = ops.mean(ops.square(logits[:, 0] - ops.cast(labels, "float32")))
        else:
            loss = ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        return loss, non_train

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)

    @jax.jit
    def step_fn(state, masks, tokens, lengths, labels):
        train_vals, non_train, head_state, body_state = state
        (loss, non_train), grads = grad_fn(train_vals, non_train, tokens, lengths, labels)
        head_g, body_g = split(grads)
        head_v, body_v = split(train_vals)
        body_g = [g * m for g, m in zip(body_g, masks)]
        head_v, head_state = head_opt.stateless_apply(head_state, head_g, head_v)
        new_body, body_state = body_opt.stateless_apply(body_state, body_g, body_v)
        # frozen variables keep their values exactly (AdamW's decay would move them otherwise)
        body_v = [old + m * (new - old) for old, new, m in zip(body_v, new_body, masks)]
        return (merge(head_v, body_v), non_train, head_state, body_state), loss

    state = ([v.value for v in trainable], [v.value for v in model.non_trainable_variables],
             [v.value for v in head_opt.variables], [v.value for v in body_opt.variables])
    rng = np.random.default_rng(cfg.seed)
    epoch_size = len(train)
    steps_per_epoch = max(1, -(-epoch_size // cfg.batch_size))
    t0 = time.monotonic()
    step, reason, tokens_seen = 0, "completed", 0
    body_group_ids = [group_of[id(v)] for v in body_vars]

    def checkpoint(at: int) -> None:
        if cfg.checkpoint_dir is None:
            return
        from pathlib import Path

        from lmkit.engine.checkpoint import Checkpoint, save_checkpoint

        folder = Path(cfg.checkpoint_dir)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = [np.asarray(a) for a in (*state[0], *state[1])]
        slots = [np.asarray(a) for a in (*state[2], *state[3])]
        path = save_checkpoint(folder, Checkpoint(at, arrays, slots, {"task": name}))
        emit(CheckpointEvent(at, str(path)))
    while step < total and not stop.is_set():
        order = rng.permutation(epoch_size)
        for tokens, lengths, labels, _ in batches(train, order, cfg.batch_size, cfg.max_length):
            if step >= total or stop.is_set():
                break
            open_groups = _unfrozen_groups(step, total, len(groups), cfg.gradual_unfreezing)
            frozen_below = len(groups) - open_groups
            on = 1.0 if lr_mult > 0 else 0.0
            masks = [np.float32(on if g >= frozen_below else 0.0) for g in body_group_ids]
            state, loss = step_fn(state, masks, tokens, lengths, labels)
            step += 1
            if step % cfg.checkpoint_every == 0:
                checkpoint(step)
            tokens_seen += int(lengths.sum())
            if step % cfg.log_every == 0 or step == total:
                value = float(loss)
                if not np.isfinite(value):
                    reason = "diverged"
                    stop.set("diverged")
                elapsed = time.monotonic() - t0
                emit(StepEvent(step, total, step / steps_per_epoch, value,
                               float(schedule(step - 1)),
                               tokens_seen / max(elapsed, 1e-9), elapsed,
                               elapsed / step * (total - step)))
    if stop.is_set() and reason == "completed":
        reason = stop.reason or "stopped"
    if reason != "diverged" and step % cfg.checkpoint_every:
        checkpoint(step)  # nothing trained is lost, also when stopped early
    for var, value in zip(trainable, state[0]):
        var.assign(value)
    for var, value in zip(model.non_trainable_variables, state[1]):
        var.assign(value)
    summary = {"steps": step, "reason": reason, "seconds": time.monotonic() - t0}
    emit(EndEvent(step, reason, summary["seconds"], dict(summary)))
    return summary


def predict(model: SequenceClassifier, data: Encoded, batch_size: int, max_length: int) -> np.ndarray:
    """Model outputs ``(N, num_outputs)`` for every example, one compiled batch at a time."""
    import jax

    _require_jax()
    train_vals = [v.value for v in model.trainable_variables]
    non_train = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def forward(train_vals, non_train, tokens, lengths):
        logits, _ = model.stateless_call(train_vals, non_train, (tokens, lengths), training=False)
        return logits

    batch_size = min(batch_size, len(data))
    out = []
    for tokens, lengths, _, real in batches(data, np.arange(len(data)), batch_size, max_length):
        out.append(np.asarray(forward(train_vals, non_train, tokens, lengths))[:real])
    return np.concatenate(out, axis=0)


def _emitter(reporters: Sequence[Callable[[Event], None]]) -> Callable[[Event], None]:
    def emit(event: Event) -> None:
        for report in reporters:
            report(event)
    return emit
