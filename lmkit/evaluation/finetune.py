"""Fine-tune a `SequenceClassifier`: the engine's client for labelled, variable-length examples.

`lmkit.engine.run` owns the loop (budget, stop and Ctrl-C, divergence, checkpoints and resume,
events); this module says what one step is. The optimizer, schedule and loss come from the
registries under the same keys as `lmkit.train` (`EvalConfig`): one optimizer for the head and
one for the backbone, whose schedule peaks at ``learning_rate * backbone_lr_multiplier``.
Each step is Keras's stateless API under `jax.jit`.

Batches are a pure function of the seed and the step (each epoch is its own seeded
permutation), so a resumed fine-tuning sees exactly the batches it would have seen. They are
bucketed by length (dynamic padding): the permutation is cut into pools of `POOL_BATCHES`
batches, each pool sorted by length and cut into batches, and the batches shuffled, so short
sentences are not padded to the long ones (padding rounds up to a multiple of 16 tokens, so the
compiled step sees a few shapes).

Gradual unfreezing (ULMFiT): the backbone's layers are groups (its own weights such as the
embedding first, then each sub-layer in order); they are unfrozen from the top group down at
even intervals over the first half of training. Frozen groups get neither gradient nor update
(masked inside the compiled step, so unfreezing never recompiles).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from lmkit.engine import engine
from lmkit.engine.checkpoint import check_fit
from lmkit.engine.events import Event, StopSignal
from lmkit.engine.rundir import CHECKPOINT, RunDir
from lmkit.errors import ConfigError
from lmkit.evaluation.config import EvalConfig
from lmkit.evaluation.encoding import Encoded, batches
from lmkit.evaluation.heads import SequenceClassifier
from lmkit.optim import EVALUATION_WEIGHTS
from lmkit.paths import enable_compilation_cache
from lmkit.resolve import Resolved

__all__ = ["finetune", "predict", "backbone_groups", "FinetuneTrainee"]

#: warm-up of the schedule when `warmup_steps` is none, as a fraction of the steps
WARMUP_FRACTION = 0.06
#: batches per length-sorted pool (more: tighter padding, less random batches)
POOL_BATCHES = 16


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
    # each evaluation traces a new step; the persistent cache compiles it once per machine
    enable_compilation_cache()


class FinetuneTrainee:
    """A classifier, its two optimizers and its examples: what `lmkit.engine.run` trains."""

    def __init__(self, model: SequenceClassifier, train: Encoded, cfg: EvalConfig, total: int,
                 parts: Resolved) -> None:
        import jax
        from keras import ops

        from lmkit.optim import exclude_from_decay

        self.model, self.train_data, self.cfg, self.total = model, train, cfg, total
        self.steps_per_epoch = max(1, math.ceil(len(train) / cfg.batch_size))
        trainable = model.trainable_variables
        self.groups = backbone_groups(model.backbone)
        group_of = {id(v): g for g, vars_ in enumerate(self.groups) for v in vars_}
        is_backbone = [id(v) in group_of for v in trainable]
        self.lr_mult = 1.0 if cfg.backbone_lr_multiplier is None else cfg.backbone_lr_multiplier
        # masks that are all ones (the whole network trains: a pretrained checkpoint's recipe)
        # are left out of the step, saving two passes over every backbone weight per step
        self.masked = bool(cfg.gradual_unfreezing) or self.lr_mult <= 0
        if cfg.warmup_steps is None:
            cfg = cfg.replace(warmup_steps=int(WARMUP_FRACTION * total))
        if parts.optimizer.has(EVALUATION_WEIGHTS):  # its step would judge the training point
            raise ConfigError(
                f"optimizer={cfg.optimizer!r} keeps separate evaluation weights, which fine-tuning "
                f"does not use yet; choose another optimizer (e.g. adamw) for `lmkit eval`")
        build_optimizer, build_schedule = parts.optimizer.obj, parts.schedule.obj
        self.schedule = build_schedule(cfg, total)
        body_cfg = cfg.replace(learning_rate=cfg.learning_rate * max(self.lr_mult, 1e-12))
        head_vars = [v for v, b in zip(trainable, is_backbone) if not b]
        body_vars = [v for v, b in zip(trainable, is_backbone) if b]
        head_opt = build_optimizer(cfg, self.schedule)
        body_opt = build_optimizer(body_cfg, build_schedule(body_cfg, total))
        loss_fn = parts.loss.obj(cfg)
        for opt, variables in ((head_opt, head_vars), (body_opt, body_vars)):
            exclude_from_decay(opt, variables)
            opt.build(variables)
        self.optimizers = (head_opt, body_opt)
        self.body_group_ids = [group_of[id(v)] for v in body_vars]

        def split(values: list[Any]) -> tuple[list[Any], list[Any]]:
            return ([x for x, b in zip(values, is_backbone) if not b],
                    [x for x, b in zip(values, is_backbone) if b])

        def merge(head: list[Any], body: list[Any]) -> list[Any]:
            head_it, body_it = iter(head), iter(body)
            return [next(body_it) if b else next(head_it) for b in is_backbone]

        def loss_of(train_vals, non_train, inputs, labels):
            outputs, non_train = model.stateless_call(train_vals, non_train, inputs, training=True)
            return ops.mean(loss_fn(labels, outputs)), non_train

        grad_fn = jax.value_and_grad(loss_of, has_aux=True)

        @jax.jit
        def step_fn(state, masks, inputs, labels):
            train_vals, non_train, head_state, body_state = state
            (loss, non_train), grads = grad_fn(train_vals, non_train, inputs, labels)
            head_g, body_g = split(grads)
            head_v, body_v = split(train_vals)
            if self.masked:
                body_g = [g * m for g, m in zip(body_g, masks)]
            head_v, head_state = head_opt.stateless_apply(head_state, head_g, head_v)
            new_body, body_state = body_opt.stateless_apply(body_state, body_g, body_v)
            # frozen variables keep their values exactly (weight decay would move them otherwise)
            body_v = ([old + m * (new - old) for old, new, m in zip(body_v, new_body, masks)]
                      if self.masked else new_body)
            return (merge(head_v, body_v), non_train, head_state, body_state), loss

        self._step_fn = step_fn
        self.state = ([v.value for v in trainable], [v.value for v in model.non_trainable_variables],
                      [v.value for v in head_opt.variables], [v.value for v in body_opt.variables])
        self._lengths = train.lengths()
        self._epoch: tuple[int, list[np.ndarray]] | None = None

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The rows of each batch of `epoch`: similar lengths together, batches in random order."""
        rng = np.random.default_rng([self.cfg.seed, epoch])
        order = rng.permutation(len(self.train_data))
        size = self.cfg.batch_size
        pool = size * POOL_BATCHES
        rows: list[np.ndarray] = []
        for start in range(0, len(order), pool):
            chunk = order[start:start + pool]
            chunk = chunk[np.argsort(self._lengths[chunk], kind="stable")]
            rows += [chunk[i:i + size] for i in range(0, len(chunk), size)]
        return [rows[i] for i in rng.permutation(len(rows))]

    def _batch(self, step: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """Batch `step` (0-based), ``(inputs, labels)``: a pure function of the seed and the step."""
        epoch, index = divmod(step, self.steps_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, self._epoch_batches(epoch))
        rows = self._epoch[1][index]
        size = self.cfg.batch_size
        inputs, labels, _ = next(batches(self.train_data, rows, size, self.cfg.max_length))
        return inputs, labels

    def _masks(self, step: int) -> list[np.float32]:
        if not self.masked:
            return []
        n = len(self.groups)
        frozen_below = n - _unfrozen_groups(step, self.total, n, self.cfg.gradual_unfreezing)
        on = 1.0 if self.lr_mult > 0 else 0.0
        return [np.float32(on if g >= frozen_below else 0.0) for g in self.body_group_ids]

    def train(self, step: int, k: int) -> np.ndarray:
        losses = []
        for s in range(step, step + k):  # dispatched back to back; read once at the end
            self.state, loss = self._step_fn(self.state, self._masks(s), *self._batch(s))
            losses.append(loss)
        return np.asarray([float(x) for x in losses], dtype=np.float32)

    def evaluate(self) -> dict[str, float]:
        return {}  # the task's dev split is scored after fine-tuning, by `lmkit.evaluate`

    def learning_rate(self, step: int) -> float:
        return float(self.schedule(step - 1))

    def _variables(self) -> list[Any]:
        return [*self.model.trainable_variables, *self.model.non_trainable_variables]

    def model_arrays(self) -> list[np.ndarray]:
        return [np.asarray(a) for a in (*self.state[0], *self.state[1])]

    def optimizer_arrays(self) -> list[np.ndarray]:
        return [np.asarray(a) for a in (*self.state[2], *self.state[3])]

    def restore(self, model: list[np.ndarray], optimizer: list[np.ndarray], source: str) -> None:
        import jax.numpy as jnp

        head_opt, body_opt = self.optimizers
        check_fit(self._variables(), model, "model weights", source)
        check_fit([*head_opt.variables, *body_opt.variables], optimizer, "optimizer slots", source)
        n, h = len(self.state[0]), len(self.state[2])
        flat = [*self.state[0], *self.state[1], *self.state[2], *self.state[3]]
        arrays = [jnp.asarray(a, dtype=c.dtype) for a, c in zip([*model, *optimizer], flat)]
        m = len(model)
        self.state = (arrays[:n], arrays[n:m], arrays[m:m + h], arrays[m + h:])

    def sync(self) -> None:
        """Write the trained weights back into the Keras model."""
        for var, value in zip(self._variables(), (*self.state[0], *self.state[1])):
            var.assign(value)


def finetune(
    model: SequenceClassifier, train: Encoded, cfg: EvalConfig, parts: Resolved,
    reporters: Sequence[Callable[[Event], None]] = (), stop: StopSignal | None = None,
    name: str = "task", summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `model` on `train` for ``cfg.total_steps(len(train))`` steps; returns a summary.

    `parts` are the registry entries `cfg` names (`lmkit.resolve.resolve`; its loss is the
    task's own unless ``cfg.loss`` is set). Weights are written back into `model` at the end,
    also when stopped early. A non-finite loss raises `TrainingDiverged` (the model is then not
    worth scoring). `summary` adds fields to the checkpoint folder's ``summary.json``.
    """
    _require_jax()
    total = cfg.total_steps(len(train))
    trainee = FinetuneTrainee(model, train, cfg, total, parts)
    run_dir = None
    if cfg.checkpoint_dir is not None:
        run_dir = (RunDir.open(cfg.checkpoint_dir, required=(CHECKPOINT,), claim=True) if cfg.resume
                   else RunDir.create(cfg.checkpoint_dir, overwrite=True))
    elif cfg.resume:
        raise ConfigError("option 'resume' needs 'checkpoint_dir' (`lmkit eval --out DIR`): the "
                          "folder whose checkpoint.npz fine-tuning continues from")
    mean_tokens = float(np.mean([len(ids) for ids in train.ids])) if len(train) else 0.0
    plan = engine.Plan(total_steps=total, checkpoint_every=cfg.checkpoint_every,
                       steps_per_dispatch=cfg.log_every,
                       tokens_per_step=cfg.batch_size * mean_tokens,
                       steps_per_epoch=trainee.steps_per_epoch)
    n_params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    job = engine.Job(name, n_params, cfg.to_dict(), {"task": name, **(summary or {})},
                     retry=("then fine-tune again (resume=true continues from the checkpoint)"
                            if run_dir else ""),
                     learning_rate=cfg.learning_rate)

    def finish(outcome: engine.Outcome) -> dict[str, Any]:
        trainee.sync()
        return {}

    try:
        outcome = engine.run(trainee, plan, job, run_dir=run_dir, reporters=list(reporters),
                             stop=stop, resume=cfg.resume, finish=finish)
    finally:
        if run_dir is not None:
            run_dir.release()
    return {"steps": outcome.step, "reason": outcome.reason, "seconds": outcome.elapsed}


def predict(model: SequenceClassifier, data: Encoded, batch_size: int, max_length: int) -> np.ndarray:
    """Model outputs ``(N, num_outputs)`` for every example, one compiled batch at a time."""
    import jax

    _require_jax()
    train_vals = [v.value for v in model.trainable_variables]
    non_train = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def forward(train_vals, non_train, inputs):
        logits, _ = model.stateless_call(train_vals, non_train, inputs, training=False)
        return logits

    batch_size = min(batch_size, len(data))
    order = np.argsort(data.lengths(), kind="stable")  # short batches pad less
    out = []
    for inputs, _, real in batches(data, order, batch_size, max_length):
        out.append(np.asarray(forward(train_vals, non_train, inputs))[:real])
    outputs = np.empty_like(np.concatenate(out, axis=0))
    outputs[order] = np.concatenate(out, axis=0)
    return outputs
