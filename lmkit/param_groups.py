"""Parameter groups: which variables train, and how, composed as transforms.

Every trainable variable of a model gets a label, and every label a `Transform`: what one step
does to the variables of that group (as ``optax.multi_transform(transforms, labels)``). The
compiled step (`lmkit.train_step.TrainStep`) takes the gradient of the variables of
differentiated groups only and hands each group its values, gradients and slots:

- `Optimize(optimizer)`: a Keras optimizer's `stateless_apply` (its own learning rate,
  schedule, clipping by the group's global norm, weight decay of matrices);
- `Frozen()`: no gradient, no update (bit-identical), no optimizer slots;
- `RowSparse(optimizer, table, rows, ids)`: as `Optimize`, but a token embedding `table` only
  changes at the rows of the batch's ids (lazy, as PyTorch's SparseAdam), and only those rows
  are differentiated (`Transform.row_ids`);
- `Masked(inner)`: `inner`, with a 0/1 per variable given to every step (gradual unfreezing:
  a 0 leaves the variable exactly as it is; a step input, so unfreezing never recompiles).

>>> groups = ParamGroups(model.trainable_variables,                        # doctest: +SKIP
...                      labels_from_patterns(model.trainable_variables, {"embedding": "frozen"}, "train"),
...                      {"train": Optimize(optimizer), "frozen": Frozen()})

A new kind of group is a `Transform` subclass, or only new labels over the existing ones. A group
may hold `parameters` of its own, differentiated by the step, from which `effective` makes the
weights the model computes with: LoRA (`lmkit.adapters.lora.Lora`) keeps its kernels frozen and
trains two low-rank matrices per kernel, held as its first slots; where the model takes them
(`factored`), the step passes them as `factors` beside the unmerged kernels.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from lmkit.errors import ConfigError
from lmkit.optim import exclude_from_decay

__all__ = ["Transform", "Optimize", "Frozen", "RowSparse", "Masked", "ParamGroups", "Slot",
           "labels_from_patterns", "relative_path"]


class Slot(NamedTuple):
    """An optimizer slot held outside Keras (a row-updated table's moments, held whole)."""

    path: str
    shape: tuple[int, ...]


class Transform:
    """How the variables of one group change in a step: pure functions of arrays, traced inside
    the compiled step. `build` sees the group's Keras variables once; `update` returns the new
    values and slots."""

    #: whether the step takes the gradient of this group's variables
    differentiated = True
    #: whether `update` reads a per-step mask (one float per variable, `Context.mask`)
    masked = False
    #: whether `judged` differs from the values (an optimizer with evaluation weights)
    averaged = False
    #: how many of the first slots are parameters the step differentiates (adapter matrices):
    #: the forward runs on `effective` weights made from the values and these
    parameters = 0

    def build(self, variables: Sequence[Any]) -> None:
        self.size = len(variables)

    def slots(self) -> list[Any]:
        """What the group keeps between steps (objects with ``path`` and ``shape``), in the order
        checkpoints hold them."""
        return []

    def init(self) -> list[Any]:
        """The slots' first values."""
        return []

    def update(self, values: list[Any], grads: list[Any], slots: list[Any],
               ctx: "Context") -> tuple[list[Any], list[Any]]:
        return values, slots

    def judged(self, values: list[Any], slots: list[Any]) -> list[Any]:
        """The weights to evaluate and keep (an averaging optimizer's average)."""
        return values

    def effective(self, values: list[Any], params: list[Any]) -> list[Any]:
        """The weights the model computes with, from the group's values and its `parameters`
        (a low-rank adapter added to a frozen kernel); the values themselves by default."""
        return values

    #: whether the step's forward takes `factors` instead of the `effective` weights
    factored = False

    def factors(self, params: list[Any]) -> dict[int, tuple[Any, Any]]:
        """With `factored`: ``{index in the group: (a, b)}``, the model computing ``x W +
        (x a) b`` for that kernel ``W`` (`lmkit.models.base.low_rank_terms`)."""
        return {}

    def trained(self, weights: list[Any], slots: list[Any]) -> list[Any]:
        """The values to take the next gradient at, from `judged`'s weights (on resume)."""
        return weights

    def schedules(self) -> list[Any]:
        """The learning-rate schedules of the group's optimizers: the step takes their peaks
        as inputs (`lmkit.schedules.runtime_peaks`). None by default."""
        return []

    def row_ids(self, inputs: Any) -> dict[int, Any]:
        """``{index in the group: ids}``: tables of which a step reads only the rows `ids`
        (sorted, ``(R,)``; ids past the table's end fill it). The step then differentiates
        those rows alone (`lmkit.models.base.row_views`), and `update` gets their gradient,
        ``(R, D)``, in the table's place. None by default."""
        return {}


class Context(NamedTuple):
    """What a group may read in a step besides its own variables."""

    inputs: Any
    mask: Any = None


class Frozen(Transform):
    """No gradient and no change: the variables keep their values bit for bit."""

    differentiated = False


def optimizer_schedules(optimizer: Any) -> list[Any]:
    """`optimizer`'s learning-rate schedule, where it was given a `WarmupDecay` (a Keras
    optimizer keeps it as ``_learning_rate``), else none."""
    from lmkit.schedules import WarmupDecay

    schedule = getattr(optimizer, "_learning_rate", None)
    return [schedule] if isinstance(schedule, WarmupDecay) else []


class Optimize(Transform):
    """A Keras optimizer over the group (`averaged`: it implements
    `lmkit.optim.EvaluationWeights`, from its entry's capability ``"evaluation_weights"``)."""

    def __init__(self, optimizer: Any, averaged: bool = False) -> None:
        self.optimizer, self.averaged = optimizer, averaged

    def build(self, variables: Sequence[Any]) -> None:
        super().build(variables)
        exclude_from_decay(self.optimizer, list(variables))
        self.optimizer.build(list(variables))

    def slots(self) -> list[Any]:
        return list(self.optimizer.variables)

    def init(self) -> list[Any]:
        return [v.value for v in self.optimizer.variables]

    def update(self, values, grads, slots, ctx):
        values, slots = self.optimizer.stateless_apply(slots, grads, values)
        return list(values), list(slots)

    def schedules(self):
        return optimizer_schedules(self.optimizer)

    def judged(self, values, slots):
        return self.optimizer.evaluation_weights(values, slots) if self.averaged else values

    def trained(self, weights, slots):
        return self.optimizer.training_weights(weights, slots) if self.averaged else weights


class RowSparse(Optimize):
    """`Optimize` with an element-wise optimizer (entry capability ``"row_updates"``), where the
    token embedding `table` changes only at the rows of the ids `ids(inputs)` reads: its
    gradient is zero on every other row, so those rows keep their weights and slots. The step
    differentiates only the batch's rows (`row_ids`), and the optimizer sees them as a
    ``(rows, width)`` variable (`rows`: the most distinct ids a step holds), so the group's
    clipping norm and weight decay are those of the dense update restricted to those rows; the
    table's slots are held whole."""

    def __init__(self, optimizer: Any, table: Any, rows: int,
                 ids: Callable[[Any], Any]) -> None:
        super().__init__(optimizer)
        self.table, self.rows, self.ids = table, rows, ids

    def build(self, variables: Sequence[Any]) -> None:
        import keras

        self.at = next(i for i, v in enumerate(variables) if v is self.table)
        width = self.table.shape[1]
        placeholder = keras.Variable(np.zeros((self.rows, width), np.float32),
                                     name="embedding_rows")
        super().build([*variables[:self.at], placeholder, *variables[self.at + 1:]])
        prefix = placeholder.path.replace("/", "_") + "_"
        self.is_row = [tuple(v.shape) == (self.rows, width)
                       and v.path.rsplit("/", 1)[-1].startswith(prefix)
                       for v in self.optimizer.variables]

    def slots(self) -> list[Any]:
        shape = tuple(self.table.shape)
        return [Slot(v.path, shape) if row else v
                for v, row in zip(self.optimizer.variables, self.is_row)]

    def init(self) -> list[Any]:
        return [np.zeros(self.table.shape, np.float32) if row else v.value
                for v, row in zip(self.optimizer.variables, self.is_row)]

    def row_ids(self, inputs: Any) -> dict[int, Any]:
        import jax.numpy as jnp

        # sorted distinct ids, filled with the table's length: past its end, so dropped below
        ids = jnp.ravel(self.ids(inputs))
        return {self.at: jnp.unique(ids, size=self.rows, fill_value=self.table.shape[0])}

    def update(self, values, grads, slots, ctx):
        import jax.numpy as jnp

        rows = self.row_ids(ctx.inputs)[self.at]
        table = values[self.at]
        real = rows < table.shape[0]
        row_values = [*values[:self.at], jnp.take(table, rows, axis=0, mode="clip"),
                      *values[self.at + 1:]]
        row_grads = list(grads)  # the table's: its rows' gradient already
        row_grads[self.at] = jnp.where(real[:, None], grads[self.at], 0.0)
        gathered = [jnp.take(s, rows, axis=0, mode="clip") if row else s
                    for s, row in zip(slots, self.is_row)]
        new, new_slots = super().update(row_values, row_grads, gathered, ctx)
        new[self.at] = table.at[rows].set(new[self.at], mode="drop")  # the fill: dropped
        slots = [full.at[rows].set(s, mode="drop") if row else s
                 for full, s, row in zip(slots, new_slots, self.is_row)]
        return new, slots


class Masked(Transform):
    """`inner` with a per-step 0/1 per variable: a 0 gives the variable no gradient and keeps
    it exactly (weight decay would move it otherwise). The inner optimizer's slots still
    advance on the zero gradient."""

    masked = True

    def __init__(self, inner: Transform) -> None:
        self.inner = inner

    def build(self, variables):
        super().build(variables)
        self.inner.build(variables)

    def slots(self):
        return self.inner.slots()

    def init(self):
        return self.inner.init()

    def schedules(self):
        return self.inner.schedules()

    def update(self, values, grads, slots, ctx):
        import jax.numpy as jnp

        on = [ctx.mask[i] > 0 for i in range(len(values))]
        grads = [jnp.where(m, g, jnp.zeros_like(g)) for g, m in zip(grads, on)]
        new, slots = self.inner.update(values, grads, slots, ctx)
        return [jnp.where(m, n, v) for n, v, m in zip(new, values, on)], slots

    @property
    def averaged(self) -> bool:  # type: ignore[override]
        return self.inner.averaged

    def judged(self, values, slots):
        return self.inner.judged(values, slots)

    def trained(self, weights, slots):
        return self.inner.trained(weights, slots)


def relative_path(variable: Any) -> str:
    """A variable's path without its model's name (``gpt_3/block_0/w_fc`` -> ``block_0/w_fc``):
    what freeze patterns match, the same whichever number Keras gave the model."""
    return variable.path.split("/", 1)[-1]


def labels_from_patterns(variables: Sequence[Any], patterns: Mapping[str, str], default: str,
                         key: str = "freeze") -> list[str]:
    """A label per variable: that of the first glob pattern matching its path (whole, or
    without the model's name: `relative_path`), else `default`. A pattern that matches no
    variable is a `ConfigError` naming it, the config `key` and the paths there are."""
    labels = []
    used = set()
    for v in variables:
        label = default
        for pattern, name in patterns.items():
            if fnmatch.fnmatchcase(v.path, pattern) or fnmatch.fnmatchcase(relative_path(v), pattern):
                label = name
                used.add(pattern)
                break
        labels.append(label)
    unused = [p for p in patterns if p not in used]
    if unused:
        paths = ", ".join(relative_path(v) for v in variables)
        raise ConfigError(
            f"{key} pattern {unused[0]!r} matches no trainable variable; patterns are globs over "
            f"variable paths such as 'embedding' or 'block_0/*'. The paths are: {paths}")
    return labels


class ParamGroups:
    """Variables labelled into groups, each updated by its `Transform` (optax's
    `multi_transform`). Slots are the groups' slots in the order of `transforms`."""

    def __init__(self, variables: Sequence[Any], labels: Sequence[str],
                 transforms: Mapping[str, Transform]) -> None:
        unknown = sorted(set(labels) - set(transforms))
        if unknown or len(labels) != len(variables):
            raise ValueError(f"every one of the {len(variables)} variables needs a label that "
                             f"names a transform ({sorted(transforms)}); got {len(labels)} "
                             f"labels, unknown: {unknown}")
        self.transforms = {name: t for name, t in transforms.items() if name in labels}
        self.members = {name: [i for i, label in enumerate(labels) if label == name]
                        for name in self.transforms}
        for name, t in self.transforms.items():
            t.build([variables[i] for i in self.members[name]])
        #: indices (in `variables`) of the variables whose gradient the step takes
        self.differentiated = sorted(i for name, t in self.transforms.items() if t.differentiated
                                     for i in self.members[name])
        self.masked = [name for name, t in self.transforms.items() if t.masked]
        self.averaged = any(t.averaged for t in self.transforms.values())
        self.adapted = any(t.parameters for t in self.transforms.values())
        self._slot_counts = [len(t.slots()) for t in self.transforms.values()]
        self._differentiated_size = sum(int(np.prod(variables[i].shape, dtype=np.int64))
                                        for i in self.differentiated)

    def slots(self) -> list[Any]:
        return [s for t in self.transforms.values() for s in t.slots()]

    def init(self) -> list[Any]:
        return [s for t in self.transforms.values() for s in t.init()]

    def _split(self, slots: list[Any]) -> list[list[Any]]:
        out, at = [], 0
        for n in self._slot_counts:
            out.append(list(slots[at:at + n]))
            at += n
        return out

    def counts(self) -> dict[str, int]:
        """How many numbers train (`trainable`: the differentiated variables and the groups'
        parameters) and how many the optimizers keep for them (`optimizer_state`), for run
        summaries and memory figures."""
        size = lambda slot: int(np.prod(slot.shape, dtype=np.int64))
        slots = self.slots()
        n_params = sum(size(p) for p in self.params(slots))
        return {"trainable": self._differentiated_size + n_params,
                "optimizer_state": sum(size(s) for s in slots) - n_params}

    def params(self, slots: list[Any]) -> list[Any]:
        """The slots that are differentiated parameters (each group's first `parameters`)."""
        return [s for t, group in zip(self.transforms.values(), self._split(slots))
                for s in group[:t.parameters]]

    def effective(self, values: list[Any], params: list[Any],
                  factored: bool = False) -> list[Any]:
        """The weights the model computes with (`Transform.effective`, per group); `values`
        themselves when no group has parameters. `factored`: the `factored` groups' kernels
        stay unmerged (the step's forward adds their `factors` instead)."""
        if not self.adapted:
            return values
        new, at = list(values), 0
        for name, t in self.transforms.items():
            idx, n = self.members[name], t.parameters
            if not (factored and t.factored):
                out = t.effective([values[i] for i in idx], list(params[at:at + n]))
                for i, value in zip(idx, out):
                    new[i] = value
            at += n
        return new

    def factors(self, params: list[Any]) -> dict[int, tuple[Any, Any]]:
        """The low-rank factors of the `factored` groups by variable index (`Transform.factors`):
        the step's forward computes ``x W + (x a) b`` with them, their kernels left unmerged."""
        terms: dict[int, tuple[Any, Any]] = {}
        at = 0
        for name, t in self.transforms.items():
            if t.factored:
                idx = self.members[name]
                group = t.factors(list(params[at:at + t.parameters]))
                terms.update({idx[j]: ab for j, ab in group.items()})
            at += t.parameters
        return terms

    def schedules(self) -> list[Any]:
        """The groups' learning-rate schedules (`Transform.schedules`), each once: the compiled
        step takes their peaks as inputs (`lmkit.schedules.runtime_peaks`)."""
        found = {id(s): s for t in self.transforms.values() for s in t.schedules()}
        return list(found.values())

    def row_ids(self, inputs: Any) -> dict[int, Any]:
        """``{variable index: ids}`` of the tables a step reads only at rows `ids`
        (`Transform.row_ids`): their gradients are those rows' (`update` takes them so)."""
        found: dict[int, Any] = {}
        for name, t in self.transforms.items():
            found.update({self.members[name][j]: ids for j, ids in t.row_ids(inputs).items()})
        return found

    def update(self, values: list[Any], grads: list[Any], slots: list[Any], inputs: Any,
               masks: Mapping[str, Any], param_grads: Sequence[Any] = ()
               ) -> tuple[list[Any], list[Any]]:
        """New values (all variables, in order) and slots. `grads` are those of the
        `differentiated` variables, in that order; `masks` one array per `masked` group;
        `param_grads` those of `params` (a group with parameters gets these as its grads)."""
        grad_of = dict(zip(self.differentiated, grads))
        new = list(values)
        new_slots: list[Any] = []
        at = 0
        for (name, t), group_slots in zip(self.transforms.items(), self._split(slots)):
            idx = self.members[name]
            if t.parameters:
                ctx = Context(inputs, masks.get(name))
                group_grads = list(param_grads[at:at + t.parameters])
                at += t.parameters
                new_slots += t.update([values[i] for i in idx], group_grads, group_slots, ctx)[1]
                continue
            if not t.differentiated:
                new_slots += group_slots
                continue
            ctx = Context(inputs, masks.get(name))
            out, group_slots = t.update([values[i] for i in idx], [grad_of[i] for i in idx],
                                        group_slots, ctx)
            for i, value in zip(idx, out):
                new[i] = value
            new_slots += group_slots
        return new, new_slots

    def judged(self, values: list[Any], slots: list[Any]) -> list[Any]:
        return self._each("judged", values, slots)

    def trained(self, weights: list[Any], slots: list[Any]) -> list[Any]:
        return self._each("trained", weights, slots)

    def _each(self, method: str, values: list[Any], slots: list[Any]) -> list[Any]:
        new = list(values)
        for (name, t), group_slots in zip(self.transforms.items(), self._split(slots)):
            idx = self.members[name]
            for i, value in zip(idx, getattr(t, method)([values[i] for i in idx], group_slots)):
                new[i] = value
        return new
