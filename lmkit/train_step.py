"""One compiled training step, for every client (language modelling, fine-tuning, adapters).

A client supplies a Keras model, its parameter groups (`lmkit.param_groups.ParamGroups`: which
variables train and how) and the loss of a batch, ``loss(labels, outputs) -> mean``; the step
does the rest, on JAX, from Keras's stateless API:

- the state pytree `TrainState` (trainable values, non-trainable values such as dropout
  seeds, the groups' optimizer slots), held outside the Keras objects and donated to every call;
- the package's one gradient computation, over the variables of differentiated groups only
  (a frozen group costs no gradient) and the groups' own parameters (LoRA adapters), the model
  running on the groups' `effective` weights, or with their low-rank `factors` beside the
  unmerged kernels where the model takes them (`lmkit.models.base.dense`);
- each batch's gradient in `parts` independent equal parts (the same mathematics; XLA:CPU runs
  the parts' kernels side by side), and `accumulate` micro-batches averaged into one optimizer
  step (`lax.scan`: one micro-batch's activations alive at a time);
- `k` optimizer steps fused into one dispatch (`lax.scan` over stacked batches; with an
  ``active`` flag per step, steps marked inactive are skipped, so a client can pad a dispatch to
  a fixed length and compile one program);
- a mesh (`lmkit.distribute`): the state placed by `state_shardings`, batch rows split over the
  ``data`` axis, the same results as one device;
- host copies for checkpoints, `sync` back into the Keras model, `restore`, and the weights to
  judge for optimizers with evaluation weights (`ParamGroups.judged`).

Batches are pytrees (an array, or a tuple of arrays such as ``(tokens, lengths)``) whose
arrays hold the rows on axis 0, after the leading ``(k, [accumulate,])`` axes of `train`.

>>> step = TrainStep(model, groups, loss)                            # doctest: +SKIP
>>> losses = step.train(xs, ys)        # xs, ys: (k, B, T)           # doctest: +SKIP
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from lmkit.distribute import Layout, jit_step, state_shardings
from lmkit.models.base import low_rank_terms, row_views
from lmkit.param_groups import ParamGroups

__all__ = ["TrainStep", "TrainState"]


class TrainState(NamedTuple):
    """What the compiled step carries from one step to the next."""

    trainable: list[Any]
    non_trainable: list[Any]
    slots: list[Any]


def _rows(tree: Any, part: int, parts: int) -> Any:
    """Part `part` of `parts` equal parts of every array's rows (axis 0)."""
    import jax

    def cut(a: Any) -> Any:
        size = a.shape[0] // parts
        return a[part * size:(part + 1) * size]

    return jax.tree.map(cut, tree)


def _gradients(model: Any, loss: Callable[[Any, Any], Any], groups: ParamGroups,
               parts: int, accumulate: int) -> tuple[Callable, Callable]:
    """``(batch_grads, step_grads)``: ``(trainable, slots, non_trainable, inputs, labels) ->
    ((loss, non_trainable), (grads of the differentiated variables, grads of the groups'
    parameters))`` for one batch (in `parts`), and for one optimizer step (`accumulate`
    micro-batches stacked on axis 0). The model computes with the groups' `effective` weights.
    A table a group reads only at some rows (`ParamGroups.row_ids`, given as `ids` to
    `batch_grads`; `step_grads` finds them) is differentiated at those rows alone: its grad is
    theirs, ``(R, D)``."""
    import jax
    import jax.numpy as jnp

    differentiated = groups.differentiated
    fixed = [i for i in range(len(model.trainable_variables)) if i not in set(differentiated)]
    order = np.argsort([*differentiated, *fixed]).tolist()

    variables = model.trainable_variables

    def loss_of(diff, params, held, non_trainable, inputs, labels, tables, ids):
        both = [*diff, *held]
        trainable = [both[i] for i in order]
        views = [(variables[i], (trainable[i], ids[i])) for i in ids]  # the rows, read there
        trainable = [tables.get(i, value) for i, value in enumerate(trainable)]
        trainable = groups.effective(trainable, params, factored=True)
        terms = [(variables[i], ab) for i, ab in groups.factors(params).items()]
        with low_rank_terms(terms), row_views(views):
            outputs, non_trainable = model.stateless_call(trainable, non_trainable, inputs,
                                                          training=True)
        return loss(labels, outputs), non_trainable

    grad_fn = jax.value_and_grad(loss_of, argnums=(0, 1), has_aux=True)

    def batch_grads(trainable, slots, non_trainable, inputs, labels, ids=None):
        ids = ids or {}
        diff = [jnp.take(trainable[i], ids[i], axis=0, mode="clip") if i in ids else trainable[i]
                for i in differentiated]
        held = [trainable[i] for i in fixed]
        tables = {i: trainable[i] for i in ids}
        params = groups.params(slots)
        rows = [a.shape[0] for a in jax.tree.leaves((inputs, labels))]
        if parts == 1 or any(n % parts for n in rows):
            return grad_fn(diff, params, held, non_trainable, inputs, labels, tables, ids)
        # The mean of equal parts' mean losses is the batch's mean loss, so this is the same
        # gradient; the parts share no data, so XLA:CPU runs their kernels side by side. Only
        # the dropout seeds pass from one part to the next (cheap ops, not the activations).
        losses, grads = [], []
        for i in range(parts):
            (part_loss, non_trainable), g = grad_fn(
                diff, params, held, non_trainable, _rows(inputs, i, parts),
                _rows(labels, i, parts), tables, ids)
            losses.append(part_loss)
            grads.append(g)
        mean = jax.tree.map(lambda *gs: sum(gs) / parts, *grads)
        return (sum(losses) / parts, non_trainable), mean

    def step_grads(trainable, slots, non_trainable, inputs, labels):
        ids = groups.row_ids(inputs)  # over the whole step: every micro-batch and part
        if accumulate == 1:
            return batch_grads(trainable, slots, non_trainable, inputs, labels, ids)
        # arrays (accumulate, B, ...). The mean of the micro-batches' mean losses is the mean
        # loss of one batch of accumulate * B rows, so this is its gradient; the scan keeps
        # one micro-batch's activations alive at a time.
        def micro(carry, batch):
            non_trainable, loss_sum, grad_sum = carry
            (part_loss, non_trainable), grads = batch_grads(trainable, slots, non_trainable,
                                                            *batch, ids)
            return (non_trainable, loss_sum + part_loss,
                    jax.tree.map(lambda a, g: a + g, grad_sum, grads)), None

        (non_trainable, total, grads), _ = jax.lax.scan(
            micro, (non_trainable, jnp.float32(0.0), _zero_grads(groups, trainable, slots, ids)),
            (inputs, labels))
        return (total / accumulate, non_trainable), jax.tree.map(lambda g: g / accumulate, grads)

    return batch_grads, step_grads


def _zero_grads(groups: ParamGroups, trainable: list[Any], slots: list[Any],
                ids: Mapping[int, Any] | None = None) -> Any:
    """Zeros shaped like `_gradients`' grads (a table read at `ids`: its rows'): a sum's start."""
    import jax.numpy as jnp

    ids = ids or {}
    shape = lambda i: (len(ids[i]), *trainable[i].shape[1:]) if i in ids else trainable[i].shape
    return ([jnp.zeros(shape(i), trainable[i].dtype) for i in groups.differentiated],
            [jnp.zeros_like(p) for p in groups.params(slots)])


def _fused_steps(step_grads: Callable, groups: ParamGroups, schedules: list[Any]) -> Callable:
    """``(state, inputs, labels, masks, active, peaks) -> (state, losses)``: `k` steps in a
    `lax.scan` over the arguments' axis 0; with `active`, a step marked False is skipped (loss
    0); `peaks`, the peak learning rates of `schedules`, are inputs, not constants."""
    import jax
    import jax.numpy as jnp

    from lmkit.schedules import runtime_peaks

    def one_step(carry, batch):
        # the peaks are carried, not closed over: scan reuses this body's trace across calls
        state, peaks = carry
        inputs, labels, masks, active = batch

        def take(state):
            trainable, non_trainable, slots = state
            (value, non_trainable), (grads, param_grads) = step_grads(
                trainable, slots, non_trainable, inputs, labels)
            trainable, slots = groups.update(trainable, grads, slots, inputs, masks, param_grads)
            return TrainState(trainable, non_trainable, slots), jnp.float32(value)

        with runtime_peaks((s, peaks[i]) for i, s in enumerate(schedules)):
            if active is None:
                state, loss = take(state)
            else:
                state, loss = jax.lax.cond(active, take, lambda s: (s, jnp.float32(0.0)), state)
        return (state, peaks), loss

    def train_chunk(state, inputs, labels, masks, active, peaks):
        (state, _), losses = jax.lax.scan(one_step, (state, peaks), (inputs, labels, masks, active))
        return state, losses

    return train_chunk


def _full_batch(batch_grads: Callable, groups: ParamGroups) -> tuple[Callable, Callable]:
    """Compiled ``grad_sum(state, acc, inputs, labels, weight) -> (non_trainable, acc, loss)``
    (adds a batch's weighted gradient) and ``apply_grads(state, grads) -> state`` (donated)."""
    import jax

    @jax.jit
    def grad_sum(state, acc, inputs, labels, weight):
        trainable, non_trainable, slots = state
        (value, non_trainable), grads = batch_grads(trainable, slots, non_trainable, inputs,
                                                    labels)
        return non_trainable, jax.tree.map(lambda a, g: a + weight * g, acc, grads), value * weight

    @functools.partial(jax.jit, donate_argnums=0)
    def apply_grads(state, grads):
        trainable, non_trainable, slots = state
        trainable, slots = groups.update(trainable, grads[0], slots, None, {}, grads[1])
        return TrainState(trainable, non_trainable, slots)

    return grad_sum, apply_grads


class TrainStep:
    """The compiled training step of `model` with `groups`; see the module's docstring.

    `loss(labels, outputs)` is the mean loss of a batch, `outputs` what
    ``model(inputs, training=True)`` returns. `rules` names the weights a model axis splits
    (`state_shardings`; default `model`).
    """

    def __init__(self, model: Any, groups: ParamGroups, loss: Callable[[Any, Any], Any], *,
                 parts: int = 1, accumulate: int = 1, layout: Layout | None = None,
                 rules: Any = None) -> None:
        import jax

        self.model, self.groups, self.layout = model, groups, layout
        self.accumulate_steps = accumulate
        self.batch_axis = 2 if accumulate > 1 else 1  # of the arrays of train: (k, [acc,] B, ...)
        if layout is not None:  # data parallel already runs the batch's rows side by side
            parts = 1
        # Copies: the step donates its state, and the Keras variables keep their own buffers
        # until `sync` (a Keras variable must never point at a donated, deleted buffer). A
        # buffer copy: `jnp.array(copy=True)` would compile a program per shape
        self.state = jax.device_put(TrainState(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables], groups.init()), may_alias=False)
        self._shardings = None
        if layout is not None:
            self._shardings = TrainState(*state_shardings(layout, model, groups.slots(),
                                                          rules=rules))
            self.state = layout.place(self.state, self._shardings)
        batch_grads, step_grads = _gradients(model, loss, groups, parts, accumulate)
        # inputs, labels: (k, [accumulate,] B, ...), the rows B split over the data axis
        schedules = groups.schedules()
        self._peaks = np.asarray([s.peak for s in schedules], np.float32)
        self._train = jit_step(_fused_steps(step_grads, groups, schedules), layout,
                               self._shardings, (self.batch_axis, self.batch_axis, None, None, None))
        grad_sum, apply_grads = _full_batch(batch_grads, groups)
        self._grad_sum, self._apply_grads = grad_sum, apply_grads
        self._judged = jax.jit(groups.judged)
        self._effective = jax.jit(lambda values, slots: groups.effective(values,
                                                                         groups.params(slots)))

    # -- training ---------------------------------------------------------------------------
    def train(self, inputs: Any, labels: Any, masks: Mapping[str, np.ndarray] | None = None,
              active: np.ndarray | None = None) -> Any:
        """`k` optimizer steps on batches stacked on axis 0: arrays ``(k, B, ...)``, or
        ``(k, accumulate, B, ...)`` with gradient accumulation; on a mesh of many processes, B
        is this process's rows (`Layout.local_rows`). `masks`: for each masked group, ``(k,
        variables)`` 0/1; `active` ``(k,)`` bool: the steps to take (the others are skipped and
        report loss 0). Returns the `k` losses, on the device (reading them waits for the call)."""
        self.state, losses = self._train(self.state, *self._placed(inputs, labels, masks, active))
        return losses

    def lower(self, inputs: Any, labels: Any, masks: Mapping[str, np.ndarray] | None = None,
              active: np.ndarray | None = None) -> Any:
        """The `jax.stages.Lowered` step `train` would run on these arguments (to inspect its
        program or shardings)."""
        return self._train.lower(self.state, *self._placed(inputs, labels, masks, active))

    def _placed(self, inputs: Any, labels: Any, masks: Mapping[str, np.ndarray] | None,
                active: np.ndarray | None) -> tuple[Any, Any, dict[str, Any], Any, Any]:
        masks = dict(masks or {})
        if self.layout is None:
            return inputs, labels, masks, active, self._peaks
        import jax

        inputs, labels = jax.tree.map(lambda a: self.layout.put_batch(a, self.batch_axis),
                                      (inputs, labels))
        return (inputs, labels, *self.feed((masks, active, self._peaks)))

    def accumulate(self, batches: Iterable[tuple[Any, Any, float]]) -> float:
        """One optimizer step on the weighted sum of the gradients of ``(inputs, labels,
        weight)`` batches, computed one batch at a time (full-batch gradient descent)."""
        acc = _zero_grads(self.groups, self.state.trainable, self.state.slots)
        total = 0.0
        for inputs, labels, weight in batches:
            non_trainable, acc, value = self._grad_sum(self.state, acc, self.feed(inputs),
                                                       self.feed(labels), np.float32(weight))
            self.state = self.state._replace(non_trainable=non_trainable)
            total += float(value)
        self.state = self._apply_grads(self.state, acc)
        return total

    def feed(self, batch: Any) -> Any:
        """A host batch for a computation that takes it whole (evaluation, full-batch passes)."""
        if self.layout is None:
            return batch
        import jax

        return jax.tree.map(lambda a: self.layout.put(a, self.layout.replicated), batch)

    # -- weights ------------------------------------------------------------------------------
    def weights(self) -> list[Any]:
        """The trainable weights to evaluate and keep: an averaging optimizer's evaluation
        weights, else the training point itself."""
        if not self.groups.averaged:
            return self.state.trainable
        return self._judged(self.state.trainable, self.state.slots)

    def effective_weights(self) -> list[Any]:
        """The weights the model computes with: `weights`, with the parameter groups'
        adapters added (`ParamGroups.effective`); what evaluation and `sync` use."""
        if not self.groups.adapted:
            return self.weights()
        return self._effective(self.weights(), self.state.slots)

    def _host(self, arrays: Iterable[Any]) -> list[np.ndarray]:
        to_host = np.asarray if self.layout is None else self.layout.to_host
        return [to_host(a) for a in arrays]

    def model_arrays(self) -> list[np.ndarray]:
        """Host copies of the weights to keep, then the non-trainable values (whole arrays,
        gathered from a mesh; every process must call it at the same point)."""
        return self._host((*self.weights(), *self.state.non_trainable))

    def optimizer_arrays(self) -> list[np.ndarray]:
        return self._host(self.state.slots)

    def targets(self) -> tuple[list[Any], list[Any]]:
        """What `model_arrays` and `optimizer_arrays` hold (objects with ``path`` and
        ``shape``): to check a checkpoint against before `restore`."""
        return ([*self.model.trainable_variables, *self.model.non_trainable_variables],
                self.groups.slots())

    def restore(self, model: list[np.ndarray], optimizer: list[np.ndarray]) -> None:
        """Continue from arrays `model_arrays` and `optimizer_arrays` gave (checked against
        `targets` by the caller); the evaluation weights of an averaging optimizer are turned
        back into the point gradients are taken at."""
        import jax.numpy as jnp

        cast = lambda arrays, like: [jnp.asarray(a, dtype=c.dtype) for a, c in zip(arrays, like)]
        trainable, non_trainable, slots = self.state
        n = len(trainable)
        slots = cast(optimizer, slots)
        weights = cast(model[:n], trainable)
        if self.groups.averaged:
            weights = cast(self.groups.trained(weights, slots), trainable)
        self.state = TrainState(weights, cast(model[n:], non_trainable), slots)
        if self.layout is not None:
            self.state = self.layout.place(self.state, self._shardings)

    def sync(self) -> None:
        """Write the weights to keep (and the optimizer's slots) into the Keras objects; with
        adapters, the kernels get the adapted (merged) weights, so the Keras model computes
        what was trained.

        Host copies (`np.array`: a view could alias a buffer the next call donates; a device
        copy compiles a program per shape); from a mesh, whole ones (the Keras model is then used
        on one device: saving, sampling, scoring)."""
        variables, slots = self.targets()
        arrays = self._host((*self.effective_weights(), *self.state.non_trainable))
        for var, value in zip(variables, arrays):
            var.assign(np.array(value))
        for slot, value in zip(slots, self.optimizer_arrays()):
            if hasattr(slot, "assign"):  # not the row-updated tables' whole slots
                slot.assign(np.array(value))
