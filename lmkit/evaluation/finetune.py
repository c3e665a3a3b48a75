"""Fine-tune a `SequenceClassifier`: the engine's client for labelled, variable-length examples.

`lmkit.engine.run` owns the loop (budget, stop and Ctrl-C, divergence, checkpoints and resume,
events); this module says what one step is. The optimizer, schedule and loss come from the
registries under the same keys as `lmkit.train` (`EvalConfig`): one optimizer for the head and
one for the backbone, whose schedule peaks at ``learning_rate * backbone_lr_multiplier``.
Each step is Keras's stateless API under `jax.jit`; with several devices (`devices`,
`model_parallel`) it is compiled over a mesh by the same helpers as language-model training
(`lmkit.distribute`: each batch's rows split over the ``data`` axis, the backbone's large
matrices over ``model``), with the same results as on one device. In a run of many processes
each process feeds its own rows of every batch and process 0 alone reports and writes.

Batches are a pure function of the seed and the step (each epoch is its own seeded
permutation), so a resumed fine-tuning sees exactly the batches it would have seen. They are
bucketed by length (dynamic padding): the permutation is cut into pools of `POOL_BATCHES`
batches, each pool sorted by length and cut into batches, and the batches shuffled, so short
sentences are not padded to the long ones. Each batch pads to the smallest of `PAD_WIDTHS`
widths chosen from the first epoch's batches to waste the least padding
(`lmkit.evaluation.encoding.pad_widths`), so the compiled step sees at most that many shapes.

Gradual unfreezing (ULMFiT): the backbone's layers are groups (its own weights such as the
embedding first, then each sub-layer in order); they are unfrozen from the top group down at
even intervals over the first half of training. Frozen groups get neither gradient nor update
(masked inside the compiled step, so unfreezing never recompiles).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np

from lmkit.distribute import Layout, jit_step, layout_for, state_shardings
from lmkit.engine import engine
from lmkit.engine.checkpoint import check_fit
from lmkit.engine.events import Event, StopSignal
from lmkit.engine.rundir import CHECKPOINT, FINETUNING, RunDir
from lmkit.errors import ConfigError
from lmkit.config import EvalConfig
from lmkit.evaluation.encoding import Encoded, batches, pad_widths
from lmkit.evaluation.heads import SequenceClassifier
from lmkit.optim import EVALUATION_WEIGHTS, ROW_UPDATES
from lmkit.paths import enable_compilation_cache
from lmkit.resolve import Resolved

__all__ = ["finetune", "predict", "backbone_groups", "FinetuneTrainee"]

#: batches per length-sorted pool (more: tighter padding, less random batches)
POOL_BATCHES = 16
#: padded lengths of the training batches: compiled shapes of the step (each compiles once, for
#: ~20-40 s on 2 shared CPU cores, a cost inside a 10-minute fine-tuning; more widths pad less)
PAD_WIDTHS = 4


class _Slot(NamedTuple):
    """An optimizer slot held outside Keras (a row-updated table's moments): name and shape."""

    path: str
    shape: tuple[int, ...]


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
                 parts: Resolved, layout: Layout | None = None) -> None:
        import jax
        import jax.numpy as jnp
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
        if parts.optimizer.has(EVALUATION_WEIGHTS):  # its step would judge the training point
            raise ConfigError(
                f"optimizer={cfg.optimizer!r} keeps separate evaluation weights, which fine-tuning "
                f"does not use yet; choose another optimizer (e.g. adamw) for `lmkit eval`")
        build_optimizer, build_schedule = parts.optimizer.obj, parts.schedule.obj
        self.schedule = build_schedule(cfg, total)
        body_cfg = cfg.replace(learning_rate=cfg.learning_rate * max(self.lr_mult, 1e-12))
        head_vars = [v for v, b in zip(trainable, is_backbone) if not b]
        body_vars = [v for v, b in zip(trainable, is_backbone) if b]
        self.body_group_ids = [group_of[id(v)] for v in body_vars]
        # The token embedding is read only at the batch's ids, so its gradient is zero on every
        # other row: an element-wise optimizer updates just those rows (lazy, as PyTorch's
        # SparseAdam: the other rows keep their weights and moments), not all V x D of them
        table = getattr(model.backbone, "embedding", None)
        rows_at = next((i for i, v in enumerate(body_vars) if v is table), None)
        self.row_update = (rows_at is not None and not self.masked
                           and parts.optimizer.has(ROW_UPDATES))
        clip = body_cfg.clipnorm if self.row_update else None  # one norm over the body and the rows
        if self.row_update:
            body_cfg = body_cfg.replace(clipnorm=None)
            body_vars.pop(rows_at)
            vocab, width = table.shape
            # a batch holds at most this many distinct ids: the gathered rows' fixed shape
            n_rows = min(vocab, cfg.batch_size * train.per_example * cfg.max_length)
            placeholder = keras.Variable(np.zeros((n_rows, width), np.float32), name="embedding_rows")
        head_opt = build_optimizer(cfg, self.schedule)
        body_opt = build_optimizer(body_cfg, build_schedule(body_cfg, total))
        groups = [(head_opt, head_vars), (body_opt, body_vars)]
        if self.row_update:
            row_opt = build_optimizer(body_cfg, build_schedule(body_cfg, total))
            groups.append((row_opt, [placeholder]))
        loss_fn = parts.loss.obj(cfg)
        for opt, variables in groups:
            exclude_from_decay(opt, variables)
            opt.build(variables)
        self.optimizers = tuple(opt for opt, _ in groups)
        # the optimizer state a checkpoint holds; a row slot is held whole, (V, D)
        self.slots: list[Any] = [*head_opt.variables, *body_opt.variables]
        if self.row_update:
            is_slot = [tuple(v.shape) == (n_rows, width) for v in row_opt.variables]
            self.slots += [_Slot(v.path, table.shape) if row else v
                           for v, row in zip(row_opt.variables, is_slot)]
        n_body = len(body_opt.variables)

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

        def update_rows(tokens, body_g, row_state, body_v):
            """Clip the body's gradients with the table's rows by one norm, update the rows of
            the ids in `tokens`; returns the other body gradients, the new table and row state."""
            grad, weights = body_g.pop(rows_at), body_v.pop(rows_at)
            ids = jnp.ravel(tokens)
            ordered = jnp.sort(ids)
            distinct = 1 + jnp.sum(ordered[1:] != ordered[:-1])
            rows = jnp.unique(ids, size=n_rows, fill_value=ids[0])    # the first `distinct` are real
            real = jnp.arange(n_rows) < distinct
            row_g = jnp.where(real[:, None], grad[rows], 0.0)
            if clip is not None:
                norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in (*body_g, row_g)))
                scale = clip / jnp.maximum(norm, clip)
                body_g, row_g = [g * scale for g in body_g], row_g * scale
            gathered = [value[rows] if row else value for value, row in zip(row_state, is_slot)]
            (new_rows,), new_state = row_opt.stateless_apply(gathered, [row_g], [weights[rows]])
            into = jnp.where(real, rows, weights.shape[0])            # past the end: dropped
            row_state = [full.at[into].set(new, mode="drop") if row else new
                         for full, new, row in zip(row_state, new_state, is_slot)]
            return body_g, weights.at[into].set(new_rows, mode="drop"), row_state

        def step_fn(state, masks, inputs, labels):
            train_vals, non_train, head_state, body_state = state
            (loss, non_train), grads = grad_fn(train_vals, non_train, inputs, labels)
            head_g, body_g = split(grads)
            head_v, body_v = split(train_vals)
            if self.masked:
                body_g = [g * m for g, m in zip(body_g, masks)]
            head_v, head_state = head_opt.stateless_apply(head_state, head_g, head_v)
            if self.row_update:
                body_state, row_state = body_state[:n_body], body_state[n_body:]
                body_g, body_v = list(body_g), list(body_v)
                body_g, new_table, row_state = update_rows(inputs[0], body_g, row_state, body_v)
            new_body, body_state = body_opt.stateless_apply(body_state, body_g, body_v)
            if self.row_update:
                new_body = [*new_body[:rows_at], new_table, *new_body[rows_at:]]
                body_state = [*body_state, *row_state]
            # frozen variables keep their values exactly (weight decay would move them otherwise)
            body_v = ([old + m * (new - old) for old, new, m in zip(body_v, new_body, masks)]
                      if self.masked else new_body)
            return (merge(head_v, body_v), non_train, head_state, body_state), loss

        self.layout = layout
        body_slots = [v.value for v in body_opt.variables]
        if self.row_update:
            body_slots += [np.zeros(table.shape, np.float32) if row else v.value
                           for v, row in zip(row_opt.variables, is_slot)]
        # The step donates its state (the embedding table and its row moments are then updated
        # in place, not copied whole every step), so it starts from copies: the Keras variables
        # keep their own buffers until `sync`
        self.state = jax.tree.map(lambda a: jnp.array(a, copy=True), (
            [v.value for v in trainable], [v.value for v in model.non_trainable_variables],
            [v.value for v in head_opt.variables], body_slots))
        # on a mesh: the state replicated (or the backbone's large matrices split over the model
        # axis, with their slots), the masks replicated, the rows of inputs and labels split
        self._shardings = None
        if layout is not None:
            trainable_sh, non_trainable_sh, head_sh, body_sh = state_shardings(
                layout, model, head_opt, body_opt, rules=model.backbone)
            # the embedding's row slots are held whole, like the table itself: replicated
            body_sh = body_sh + [layout.replicated] * (len(body_slots) - len(body_sh))
            self._shardings = (trainable_sh, non_trainable_sh, head_sh, body_sh)
            self.state = layout.place(self.state, self._shardings)
        self._step_fn = jit_step(step_fn, layout, self._shardings, (None, 0, 0))
        self._lengths = train.lengths()
        self._epoch: tuple[int, list[np.ndarray]] | None = None
        self.widths = pad_widths([self._lengths[rows].max() for rows in self._epoch_batches(0)],
                                 PAD_WIDTHS)

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
        inputs, labels, _ = next(batches(self.train_data, rows, size, self.cfg.max_length,
                                         self.widths))
        if self.layout is not None:  # every array's rows (axis 0) split over the data axis;
            local = self.layout.local_rows(size)  # this process's rows (all of them in one process)
            inputs = tuple(self.layout.put_batch(a[local], 0) for a in inputs)
            labels = self.layout.put_batch(labels[local], 0)
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

    def _host(self, arrays: Any) -> list[np.ndarray]:
        to_host = np.asarray if self.layout is None else self.layout.to_host
        return [to_host(a) for a in arrays]

    def model_arrays(self) -> list[np.ndarray]:
        return self._host((*self.state[0], *self.state[1]))

    def optimizer_arrays(self) -> list[np.ndarray]:
        return self._host((*self.state[2], *self.state[3]))

    def restore(self, model: list[np.ndarray], optimizer: list[np.ndarray], source: str) -> None:
        import jax.numpy as jnp

        check_fit(self._variables(), model, "model weights", source)
        check_fit(self.slots, optimizer, "optimizer slots", source)
        n, h = len(self.state[0]), len(self.state[2])
        flat = [*self.state[0], *self.state[1], *self.state[2], *self.state[3]]
        arrays = [jnp.asarray(a, dtype=c.dtype) for a, c in zip([*model, *optimizer], flat)]
        m = len(model)
        self.state = (arrays[:n], arrays[n:m], arrays[m:m + h], arrays[m + h:])
        if self.layout is not None:
            self.state = self.layout.place(self.state, self._shardings)

    def sync(self) -> None:
        """Write the trained weights back into the Keras model (whole copies from a mesh: the
        model is then scored on one device)."""
        for var, value in zip(self._variables(), self.model_arrays()):
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
    layout = layout_for(cfg.devices, cfg.batch_size, cfg.model_parallel)
    if cfg.max_seconds is not None and layout is not None and layout.processes > 1:
        raise ConfigError(
            f"max_seconds={cfg.max_seconds:g} in a run of {layout.processes} processes: each "
            f"process would judge its own clock, and one that stopped first would leave the "
            f"others waiting for it. Across processes, budget with max_steps or epochs; "
            f"max_seconds works in one process")
    lead = layout is None or layout.lead  # the one process that reports and writes
    trainee = FinetuneTrainee(model, train, cfg, total, parts, layout)
    run_dir = None
    if cfg.checkpoint_dir is not None:
        if cfg.resume:  # every process reads the checkpoint
            run_dir = RunDir.open(cfg.checkpoint_dir, required=(CHECKPOINT,), claim=lead)
        else:  # process 0 creates it; the others never touch it
            run_dir = (RunDir.create(cfg.checkpoint_dir, overwrite=True, kind=FINETUNING) if lead
                       else RunDir(cfg.checkpoint_dir))
    elif cfg.resume:
        raise ConfigError("option 'resume' needs 'checkpoint_dir' (`lmkit eval --out DIR`): the "
                          "folder whose checkpoint.npz fine-tuning continues from")
    mean_tokens = float(np.mean([len(ids) for ids in train.ids])) if len(train) else 0.0
    plan = engine.Plan(total_steps=total, checkpoint_every=cfg.checkpoint_every,
                       steps_per_dispatch=cfg.log_every,
                       tokens_per_step=cfg.batch_size * mean_tokens,
                       steps_per_epoch=trainee.steps_per_epoch, max_seconds=cfg.max_seconds)
    n_params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    mesh = layout.describe() if layout else "1 device, 1 process"
    job = engine.Job(name, n_params, cfg.to_dict(), {"task": name, "mesh": mesh, **(summary or {})},
                     retry=("then fine-tune again (resume=true continues from the checkpoint)"
                            if run_dir else ""),
                     learning_rate=cfg.learning_rate, devices=layout.describe() if layout else "")

    def finish(outcome: engine.Outcome) -> dict[str, Any]:
        trainee.sync()
        return {}

    try:
        outcome = engine.run(trainee, plan, job, run_dir=run_dir,
                             reporters=list(reporters) if lead else [], stop=stop,
                             resume=cfg.resume, finish=finish, writes=lead)
    finally:
        if run_dir is not None:
            run_dir.release()
    examples = outcome.step * cfg.batch_size  # compilations included: the time a user waits
    return {"steps": outcome.step, "reason": outcome.reason, "seconds": outcome.elapsed,
            "examples_per_s": examples / outcome.elapsed if outcome.elapsed > 0 else 0.0,
            "pad_widths": list(trainee.widths), "mesh": mesh}


def predict(model: SequenceClassifier, data: Encoded, batch_size: int, max_length: int) -> np.ndarray:
    """Model outputs ``(N, num_outputs)`` for every example, in compiled batches (`lmkit.forward`)."""
    from lmkit.forward import classify

    extras = () if data.spans is None else (data.spans,)
    return classify(model, data.ids, batch_size, max_length, group=data.per_example, extras=extras)
