"""Fine-tune a `SequenceClassifier`: the engine's client for labelled, variable-length examples.

`lmkit.engine.run` owns the loop (budget, stop and Ctrl-C, divergence, checkpoints and resume,
events); lmkit's one compiled step (`lmkit.train_step.TrainStep`) takes the steps; this module
says what a step's batch, loss and parameter groups are. The optimizer, schedule and loss come
from the registries under the same keys as `lmkit.train` (`EvalConfig`): one optimizer for the
head and one for the backbone, whose schedule peaks at ``learning_rate *
backbone_lr_multiplier``; `freeze` patterns keep variables as they are
(`lmkit.param_groups`). With ``adapter = "lora"`` the backbone is frozen and LoRA adapters
(`lmkit.adapters.lora`) train on its `lora_targets` kernels beside the head; the adapter is
written into the checkpoint folder's ``adapter/`` in the layout `peft` reads. With several devices (`devices`, `model_parallel`) the step is compiled
over a mesh (each batch's rows split over the ``data`` axis, the backbone's large matrices over
``model``), with the same results as on one device. In a run of many processes each process
feeds its own rows of every batch and process 0 alone reports and writes.

Batches are a pure function of the seed and the step (each epoch is its own seeded
permutation), so a resumed fine-tuning sees exactly the batches it would have seen. They are
bucketed by length (dynamic padding): the permutation is cut into pools of `POOL_BATCHES`
batches, each pool sorted by length and cut into batches, and the batches shuffled, so short
sentences are not padded to the long ones. Each batch pads to the smallest of `PAD_WIDTHS`
widths chosen from the run's batches to waste the least padding
(`lmkit.evaluation.encoding.pad_widths`), so the compiled step sees at most that many shapes.
The shuffled batches are then ordered in runs of `RUN_BATCHES` batches of one width (the runs
in random order): the engine's dispatch of `log_every` steps is then mostly one compiled call
of `log_every` steps, each call padded to that length with skipped steps, so each width still
compiles one program. A step of `accumulate_steps` micro-batches reads the examples of one
batch of `batch_size * accumulate_steps`.

Packing (`packing = true`, the default, where `_packs` allows it and it costs less than
padding): batches are not sorted by length, and a batch's examples are packed into rows
(`lmkit.data.packing`, first-fit decreasing) instead of padded, rows as wide as the longest
example or, where that fills them poorly, a few times wider but never wider than the model's
positions (`_packing_width`: the width whose shapes cost least in time, attention's quadratic
cost in the width included, `ATTENTION_KEYS`; padded batches where those cost less, as
examples of similar lengths do); the head reads each example from
its own segment (same losses and gradients as padded, fewer positions computed), and the few
compiled shapes are numbers of rows, chosen for the run as the pad widths are, but only as many
(up to `PAD_WIDTHS`) as save more computation than their compilation costs
(`COMPILE_POSITIONS`): a short fine-tuning packs every step into the same rows x width, one
compiled program. Scoring (`predict`) packs too, in one shape per call.

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

from lmkit.adapters.lora import lora_group
from lmkit.adapters.peft_format import save_trained
from lmkit.distribute import Layout, layout_for
from lmkit.engine import engine
from lmkit.engine.checkpoint import check_fit
from lmkit.engine.events import Event, StopSignal
from lmkit.engine.rundir import ADAPTER_DIR, CHECKPOINT, FINETUNING, RunDir
from lmkit.errors import ConfigError
from lmkit.config import EvalConfig
from lmkit.data.packing import Packed, first_fit, pack
from lmkit.evaluation.encoding import Encoded, batches, pad_widths
from lmkit.evaluation.heads import SequenceClassifier
from lmkit.models.base import PACKING
from lmkit.evaluation.hf_head import HEAD_MODULES, head_problem, head_tensors
from lmkit.optim import EVALUATION_WEIGHTS, ROW_UPDATES
from lmkit.param_groups import (Frozen, Masked, Optimize, ParamGroups, RowSparse, Transform,
                                labels_from_patterns)
from lmkit.paths import compilations, enable_compilation_cache, programs
from lmkit.registry import architectures
from lmkit.resolve import Resolved
from lmkit.train_step import TrainStep

__all__ = ["finetune", "predict", "backbone_groups", "FinetuneTrainee"]

#: batches per length-sorted pool (more: tighter padding, less random batches)
POOL_BATCHES = 16
#: the most padded lengths (or numbers of packed rows) of the training batches: compiled shapes
#: of the step (each compiles once, for ~10-40 s on 2 shared CPU cores; more widths pad less)
PAD_WIDTHS = 4
#: one more compiled shape of the step costs about the time of training this many token
#: positions (MiniLM on 2 CPU cores: 6-7 s to trace and compile, 0.55 ms a position;
#: `lmkit bench shape_cost`): a run gets another shape only where it saves more positions
#: over the run than this
COMPILE_POSITIONS = 13_000
#: the steps whose batches choose the shapes: the whole run up to this many, and at least the
#: first epoch (a later batch that needs a larger shape, rare, compiles its own)
SHAPE_STEPS = 2_000
#: a row of W tokens (packed or padded) costs about ``W * (1 + W / ATTENTION_KEYS)`` positions
#: of work: each query attends to every key of its row (masked outside its own example), so
#: wide rows pay a quadratic term beside the per-position matmuls. Measured in time, not
#: counted in FLOPs: XLA's count makes a position weigh as much as ~1,500 attended pairs, but the
#: attention's small batched products run several times slower than the dense layers'. MiniLM's
#: fine-tuning step on 2 CPU cores, 1,024 positions in rows from 64 x 16 to 2 x 512
#: (`lmkit bench shape_cost`): 0.55 ms a position, 0.69 us an attended pair
ATTENTION_KEYS = 800
#: packed widths tried: from the longest example up to this many times it, every `WIDTH_STEP`
WIDEST_PACKING = 4
WIDTH_STEP = 8
#: rows wider than the longest example only where they save more positions over the run than
#: this (about a second of MiniLM's training on 2 CPU cores): not for a negligible gain
WIDER_SAVING = COMPILE_POSITIONS // 10
#: batches (the run's first) that choose the packed width: a sample, for a run of many epochs
WIDTH_STEPS = 100
#: batches of one pad width in a row (the runs in random order): a dispatch of up to this many
#: steps (`log_every`, 20 by default) is then mostly one compiled call. A constant, so the
#: batches do not depend on `log_every`
RUN_BATCHES = 20


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
    """A classifier, its parameter groups and its examples: what `lmkit.engine.run` trains."""

    def __init__(self, model: SequenceClassifier, train: Encoded, cfg: EvalConfig, total: int,
                 parts: Resolved, layout: Layout | None = None,
                 scorer: Callable[[], dict[str, float]] | None = None) -> None:
        from keras import ops

        self.model, self.train_data, self.cfg, self.total = model, train, cfg, total
        self.scorer = scorer
        self.layout = layout
        #: examples per optimizer step: `accumulate_steps` micro-batches of `batch_size`
        self.step_size = cfg.batch_size * cfg.accumulate_steps
        self.steps_per_epoch = max(1, math.ceil(len(train) / self.step_size))
        #: steps per compiled call: a dispatch's batches of one width, padded with skipped steps
        self.dispatch = cfg.log_every
        self.schedule = parts.schedule.obj(cfg, total)
        self.groups = backbone_groups(model.backbone)
        self.lora = None  # the LoRA group, with adapter = "lora"
        loss_fn = parts.loss.obj(cfg)
        self.step = TrainStep(model, self._param_groups(cfg, parts),
                              lambda labels, outputs: ops.mean(loss_fn(labels, outputs)),
                              parts=cfg.batch_parts, accumulate=cfg.accumulate_steps,
                              layout=layout, rules=model.backbone)
        self._lengths = train.lengths()
        self._epochs: dict[int, list[np.ndarray]] = {}
        #: the width of packed rows (`lmkit.data.packing`), or None: each example padded (packing
        #: off or not possible, or padded batches cost less: `_packing_width`)
        self.packed_width = (self._packing_width() if _packs(model, train, cfg, layout)
                             else None)
        self.packs = self.packed_width is not None
        # a batch's shape: its padded width, or its number of packed rows; few chosen for the
        # run (each compiles once), the same way for both
        self.widths = self._shapes(self.packed_width, self._shape_steps())[0]

    def _param_groups(self, cfg: EvalConfig, parts: Resolved) -> ParamGroups:
        """The head (the peak `learning_rate`) and the backbone (times
        `backbone_lr_multiplier`; 0 freezes it), each with its own optimizer and schedule; the
        `freeze` patterns' variables frozen. The backbone is masked per step under gradual
        unfreezing, else its token embedding is row-updated when the optimizer is element-wise."""
        variables = self.model.trainable_variables
        group_of = {id(v): g for g, vars_ in enumerate(self.groups) for v in vars_}
        lr_mult = 1.0 if cfg.backbone_lr_multiplier is None else cfg.backbone_lr_multiplier
        frozen = labels_from_patterns(variables, {p: "frozen" for p in cfg.freeze}, "")
        labels = [f or ("head" if id(v) not in group_of else "backbone" if lr_mult > 0
                        else "frozen") for v, f in zip(variables, frozen)]
        build_optimizer, build_schedule = parts.optimizer.obj, parts.schedule.obj
        averaged = parts.optimizer.has(EVALUATION_WEIGHTS)
        body_cfg = cfg.replace(learning_rate=cfg.learning_rate * max(lr_mult, 1e-12))
        head = Optimize(build_optimizer(cfg, self.schedule), averaged)
        body_opt = build_optimizer(body_cfg, build_schedule(body_cfg, self.total))
        body: Transform = Optimize(body_opt, averaged)
        if cfg.adapter == "lora":
            return self._lora_groups(cfg, variables, labels, head, body_opt)
        body_vars = [v for v, label in zip(variables, labels) if label == "backbone"]
        self.body_group_ids = [group_of[id(v)] for v in body_vars]
        # The token embedding is read only at the batch's ids, so its gradient is zero on every
        # other row: an element-wise optimizer updates just those rows, not all V x D of them
        table = getattr(self.model.backbone, "embedding", None)
        self.masked = bool(cfg.gradual_unfreezing) and bool(body_vars)
        self.row_update = (not self.masked and any(v is table for v in body_vars)
                           and parts.optimizer.has(ROW_UPDATES))
        if self.masked:
            body = Masked(body)
        elif self.row_update:
            # a step holds at most this many distinct ids, its longest rows' tokens and the
            # padding: the gathered rows' fixed shape (`max_length` each would be 4,096 rows
            # of MiniLM's table on batches of 32 that hold a few hundred tokens)
            lengths = np.sort([len(ids) for ids in self.train_data.ids])
            longest = lengths[-self.step_size * self.train_data.per_example:]
            rows = min(table.shape[0], int(longest.sum()) + 1)
            body = RowSparse(body_opt, table, rows, ids=lambda inputs: inputs[0])
        return ParamGroups(variables, labels, {"head": head, "backbone": body, "frozen": Frozen()})

    def _lora_groups(self, cfg: EvalConfig, variables: list[Any], labels: list[str],
                     head: Transform, adapter_opt: Any) -> ParamGroups:
        """The head as usual; LoRA adapters (at the backbone's learning rate) on the
        `lora_targets` kernels; every other backbone weight frozen."""
        if cfg.gradual_unfreezing:
            raise ConfigError("gradual_unfreezing with adapter = \"lora\": the backbone is "
                              "frozen and only its adapters train; drop one of the two")
        held, self.lora = lora_group(self.model.backbone, variables, cfg, adapter_opt)
        self.masked = self.row_update = False
        labels = ["lora" if h else "head" if label == "head" else "frozen"
                  for h, label in zip(held, labels)]
        return ParamGroups(variables, labels, {"head": head, "lora": self.lora,
                                               "frozen": Frozen()})

    def _epoch_rows(self, epoch: int, packed: bool | None = None) -> list[np.ndarray]:
        """The rows of each batch of `epoch`: similar lengths together when padded (random when
        `packed`, by default `packs`: mixed lengths fill rows evenly, so batches need close
        numbers of rows), batches in random order."""
        packed = self.packs if packed is None else packed
        rng = np.random.default_rng([self.cfg.seed, epoch])
        order = rng.permutation(len(self.train_data))
        size = self.step_size
        pool = size * POOL_BATCHES
        rows: list[np.ndarray] = []
        for start in range(0, len(order), pool):
            chunk = order[start:start + pool]
            if not packed:
                chunk = chunk[np.argsort(self._lengths[chunk], kind="stable")]
            rows += [chunk[i:i + size] for i in range(0, len(chunk), size)]
        return [rows[i] for i in rng.permutation(len(rows))]

    def _needed(self, rows: np.ndarray, width: int | None) -> int:
        """The longest of these examples (padded: `width` None), or the packed rows of `width`
        tokens they fill."""
        if width is None:
            return int(self._lengths[rows].max())
        return int(first_fit(self._lengths[self._filled(rows)], width).max()) + 1

    def _shape_steps(self) -> int:
        """The steps whose batches choose the shapes: the run's, up to `SHAPE_STEPS`, and at
        least the first epoch's (a later batch that needs a larger shape compiles its own)."""
        return max(self.steps_per_epoch, min(self.total, SHAPE_STEPS))

    def _packing_width(self) -> int | None:
        """The width of packed rows whose shapes (`_shapes`) cost least over the run, from the
        longest example's up to `WIDEST_PACKING` times it and the model's `max_context`, or None
        where padded batches (sorted by length) cost less. Wider rows fill better (examples
        longer than half the longest cannot share a row of its width: sentence pairs such as
        MRPC's, of similar lengths, fill such rows to about 60 %) but pay more attention per
        position (`ATTENTION_KEYS`), and batches of similar lengths pad little; chosen on the
        run's first `WIDTH_STEPS` batches, wider only where that saves more than `WIDER_SAVING`
        positions."""
        longest = int(self._lengths.max())
        steps = min(self._shape_steps(), WIDTH_STEPS)
        widest = WIDEST_PACKING * longest
        context = getattr(self.model.backbone, "max_context", None)
        if context:  # a row's padding numbers its positions on: none past the model's last
            widest = min(widest, context)
        tried = [longest, *range(longest + WIDTH_STEP, widest + 1, WIDTH_STEP)]
        cost = {width: self._shapes(width, steps)[1] for width in tried}
        best = min(tried, key=cost.__getitem__)
        width = best if cost[longest] - cost[best] > WIDER_SAVING else longest
        return width if cost[width] <= self._shapes(None, steps)[1] else None

    def _shapes(self, width: int | None, steps: int) -> tuple[list[int], float]:
        """The shapes of the run's batches at packed `width` (None: padded) and their cost in
        token positions over the run (`_row_cost`): the `pad_widths` of the first `steps`
        steps' needs. Packed, as many (up to `PAD_WIDTHS`) as minimise the cost,
        `COMPILE_POSITIONS` per shape included; padded, `PAD_WIDTHS` (one width, the longest
        example's, would compute several times the real tokens)."""
        needed: list[int] = []
        for epoch in range(-(-steps // self.steps_per_epoch)):
            needed += [self._needed(rows, width)
                       for rows in self._epoch_rows(epoch, width is not None)[:steps - len(needed)]]
        if not needed:
            return [], 0.0
        runs = max(self.total, 1) / len(needed)  # the sample's steps scaled to the run's
        rows = self.step_size * self.train_data.per_example

        def work(shape: int) -> float:  # a batch of `shape` packed rows, or padded to `shape`
            return shape * _row_cost(width) if width else rows * _row_cost(shape)

        def cost(shapes: list[int]) -> float:
            computed = sum(work(next(s for s in shapes if s >= n)) for n in needed)
            return computed * runs + COMPILE_POSITIONS * len(shapes)

        counts = range(1, PAD_WIDTHS + 1) if width else (PAD_WIDTHS,)
        return min(((shapes, cost(shapes)) for shapes in (pad_widths(needed, k) for k in counts)),
                   key=lambda option: option[1])

    def _filled(self, rows: np.ndarray) -> np.ndarray:
        """A short last batch filled up to `step_size` examples with copies of its shortest
        (padded batches copy their first: in a padded row a copy costs nothing more, in
        packed rows the shortest takes the least room)."""
        shortest = rows[np.argmin(self._lengths[rows])]
        return np.concatenate([rows, np.full(self.step_size - len(rows), shortest)])

    def _width(self, rows: np.ndarray) -> int:
        needed = self._needed(rows, self.packed_width)
        return next((w for w in self.widths if w >= needed), needed)

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """`_epoch_rows`, reordered into runs of `RUN_BATCHES` batches of one width (the runs in
        random order), so that a fused dispatch is mostly one compiled call."""
        rows = self._epoch_rows(epoch)
        width = [self._width(r) for r in rows]
        runs = []
        for w in sorted(set(width)):
            same = [i for i in range(len(rows)) if width[i] == w]
            runs += [same[i:i + RUN_BATCHES] for i in range(0, len(same), RUN_BATCHES)]
        rng = np.random.default_rng([self.cfg.seed, epoch, 1])
        return [rows[i] for r in rng.permutation(len(runs)) for i in runs[r]]

    def _rows(self, step: int) -> np.ndarray:
        """The examples of step `step` (0-based): a pure function of the seed and the step."""
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch not in self._epochs:  # a dispatch may span two epochs: keep both
            self._epochs = {e: b for e, b in self._epochs.items() if e == epoch - 1}
            self._epochs[epoch] = self._epoch_batches(epoch)
        return self._epochs[epoch][index]

    def _batch(self, step: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """Step `step`'s host arrays ``(inputs, labels)``: ``(B, ...)``, or
        ``(accumulate_steps, B, ...)``; on a mesh of many processes only this process's rows
        of B."""
        if self.packed_width is not None:
            return self._packed_batch(self._rows(step))
        inputs, labels, _ = next(batches(self.train_data, self._rows(step), self.step_size,
                                         self.cfg.max_length, self.widths))
        micro, size = self.cfg.accumulate_steps, self.cfg.batch_size
        local = self.layout.local_rows(size) if self.layout is not None else slice(0, size)

        def mine(a: np.ndarray) -> np.ndarray:
            # (micro * B * per, ...) -> (micro, this process's B * per, ...); `per` rows per
            # example (the choices of a multiple-choice example are consecutive rows)
            a = a.reshape(micro, -1, *a.shape[1:])
            per = a.shape[1] // size
            a = a[:, local.start * per:local.stop * per]
            return a if micro > 1 else a[0]

        return tuple(mine(a) for a in inputs), mine(labels)

    def _packed_batch(self, rows: np.ndarray) -> tuple[Packed, np.ndarray]:
        """`rows`' examples (`_filled`) packed into `_width` rows of `packed_width` tokens."""
        examples = self._filled(rows)
        packed = pack([self.train_data.ids[i] for i in examples], self.packed_width,
                      n_rows=self._width(rows))
        return packed, self.train_data.labels[examples]

    def _masks(self, step: int) -> dict[str, np.ndarray]:
        if not self.masked:
            return {}
        n = len(self.groups)
        frozen_below = n - _unfrozen_groups(step, self.total, n, self.cfg.gradual_unfreezing)
        return {"backbone": np.asarray([g >= frozen_below for g in self.body_group_ids],
                                       np.float32)}

    def _stacked(self, steps: Sequence[int]) -> tuple[Any, Any, dict[str, np.ndarray], np.ndarray]:
        """The arguments of one compiled call taking `steps` (batches of one width): `dispatch`
        steps stacked, the ones past `steps` repeating the last and marked inactive."""
        taken = [self._batch(s) for s in steps]
        padded = [*taken, *[taken[-1]] * (self.dispatch - len(steps))]
        masks = [self._masks(s) for s in steps]
        masks += [masks[-1]] * (self.dispatch - len(steps))
        stack = lambda *arrays: np.stack(arrays)
        inputs, labels = zip(*padded)
        stacked = tuple(map(stack, *inputs))
        return (Packed(*stacked) if isinstance(inputs[0], Packed) else stacked, stack(*labels),
                {k: stack(*(m[k] for m in masks)) for k in masks[0]},
                np.arange(self.dispatch) < len(steps))

    def train(self, step: int, k: int) -> np.ndarray:
        """Steps `step+1 .. step+k` in as few compiled calls as the batches' widths allow
        (one when they share a width), read back once at the end."""
        widths = [self._width(self._rows(s)) for s in range(step, step + k)]
        calls, start = [], 0
        while start < k:
            end = start + 1
            while end < k and end - start < self.dispatch and widths[end] == widths[start]:
                end += 1
            steps = range(step + start, step + end)
            calls.append((end - start, self.step.train(*self._stacked(steps))))
            start = end
        return np.concatenate([np.asarray(out)[:n] for n, out in calls]).astype(np.float32)

    def evaluate(self) -> dict[str, float]:
        """The task's scores on its dev sample (`score_every`), on the weights trained so far;
        without a scorer the task is scored after fine-tuning only, by `lmkit.evaluate`."""
        if self.scorer is None:
            return {}
        self.sync()
        return self.scorer()

    def learning_rate(self, step: int) -> float:
        return float(self.schedule(step - 1))

    @property
    def state(self) -> Any:
        return self.step.state

    def model_arrays(self) -> list[np.ndarray]:
        return self.step.model_arrays()

    def optimizer_arrays(self) -> list[np.ndarray]:
        return self.step.optimizer_arrays()

    def restore(self, model: list[np.ndarray], optimizer: list[np.ndarray], source: str) -> None:
        variables, slots = self.step.targets()
        check_fit(variables, model, "model weights", source)
        check_fit(slots, optimizer, "optimizer slots", source)
        self.step.restore(model, optimizer)

    def sync(self) -> None:
        """Write the trained weights back into the Keras model (whole copies from a mesh: the
        model is then scored on one device)."""
        self.step.sync()


def _packs(model: Any, train: Encoded, cfg: EvalConfig, layout: Layout | None) -> bool:
    """Whether this fine-tuning packs its examples (`packing`): where `_packable` says so; a
    step split into parts or micro-batches or over a mesh cuts rows, not examples, so those pad."""
    return bool(cfg.packing and layout is None and cfg.accumulate_steps == 1
                and cfg.batch_parts == 1 and _packable(model, train))


def _row_cost(width: int) -> float:
    """The work of one row of `width` tokens, packed or padded, in token positions
    (`ATTENTION_KEYS`)."""
    return width * (1 + width / ATTENTION_KEYS)


def _packable(model: Any, data: Encoded) -> bool:
    """Whether `data` can be packed for `model`: the head and the backbone's architecture take
    packed rows (capabilities: `takes_packed`, `PACKING`) and one example is one row (no
    choices, no spans)."""
    if not (getattr(model, "takes_packed", False) and data.per_example == 1
            and data.spans is None and len(data)):
        return False
    entry = architectures.entry_of(model.backbone)
    return entry is not None and entry.has(PACKING)


def finetune(
    model: SequenceClassifier, train: Encoded, cfg: EvalConfig, parts: Resolved,
    reporters: Sequence[Callable[[Event], None]] = (), stop: StopSignal | None = None,
    name: str = "task", summary: dict[str, Any] | None = None,
    scorer: Callable[[], dict[str, float]] | None = None, monitor: str = "val_loss",
) -> dict[str, Any]:
    """Train `model` on `train` for ``cfg.total_steps(len(train))`` steps; returns a summary.

    `parts` are the registry entries `cfg` names (`lmkit.resolve.resolve`; its loss is the
    task's own unless ``cfg.loss`` is set). Weights are written back into `model` at the end,
    also when stopped early. A non-finite loss raises `TrainingDiverged` (the model is then not
    worth scoring). `summary` adds fields to the checkpoint folder's ``summary.json``.
    `scorer` gives the task's ``val_*`` scores every ``cfg.score_every`` steps (events the
    dashboard charts); early stopping watches `monitor` among them, higher being better.
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
    trainee = FinetuneTrainee(model, train, cfg, total, parts, layout, scorer)
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
                       tokens_per_step=trainee.step_size * mean_tokens,
                       steps_per_epoch=trainee.steps_per_epoch, max_seconds=cfg.max_seconds,
                       eval_every=cfg.score_every if scorer else None, early_stopping=cfg.early_stopping,
                       monitor=monitor, higher_is_better=scorer is not None)
    n_params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    mesh = layout.describe() if layout else "1 device, 1 process"
    counts = trainee.step.groups.counts()  # what trains, and what the optimizers keep
    job = engine.Job(name, n_params, cfg.to_dict(),
                     {"task": name, "mesh": mesh, "trainable_parameters": counts["trainable"],
                      "optimizer_state": counts["optimizer_state"], **(summary or {})},
                     retry=("then fine-tune again (resume=true continues from the checkpoint)"
                            if run_dir else ""),
                     learning_rate=cfg.learning_rate, devices=layout.describe() if layout else "",
                     token_loss=parts.loss is not None and parts.loss.has("per_token"))

    compiled, named = compilations(), programs()

    def finish(outcome: engine.Outcome) -> dict[str, Any]:
        trainee.sync()  # with an adapter: merged into the kernels
        if trainee.lora is not None:
            adapters = trainee.step.groups.params(trainee.step.optimizer_arrays())
            if run_dir is not None and lead:
                # the head beside the adapter where BertForSequenceClassification can hold it
                head = None if head_problem(model) else head_tensors(model)
                save_trained(run_dir.path / ADAPTER_DIR, trainee.lora, adapters, model.backbone,
                             head=head, modules=HEAD_MODULES, overwrite=True)
        # XLA programs of the fine-tuning, by function (the step's is `train_chunk`)
        return {"compilations": {k: n - compiled[k] for k, n in compilations().items()},
                "programs": {k: n - named.get(k, 0) for k, n in programs().items()
                             if n > named.get(k, 0)}}

    try:
        outcome = engine.run(trainee, plan, job, run_dir=run_dir,
                             reporters=list(reporters) if lead else [], stop=stop,
                             resume=cfg.resume, finish=finish, writes=lead)
    finally:
        if run_dir is not None:
            run_dir.release()
    examples = outcome.step * trainee.step_size  # compilations included: the time a user waits
    return {"steps": outcome.step, "reason": outcome.reason, "seconds": outcome.elapsed,
            "examples_per_s": examples / outcome.elapsed if outcome.elapsed > 0 else 0.0,
            **({"pad_widths": list(trainee.widths)} if trainee.packed_width is None else
               {"packed": {"width": trainee.packed_width, "rows": list(trainee.widths)}}),
            "mesh": mesh, **{k: outcome.summary[k] for k in ("phases_s", "compilations", "programs")
                             if k in outcome.summary}}


def predict(model: SequenceClassifier, data: Encoded, batch_size: int, max_length: int,
            packing: bool = True) -> np.ndarray:
    """Model outputs ``(N, num_outputs)`` for every example, in compiled batches (`lmkit.forward`);
    with `packing`, packed where fine-tuning would pack (`_packable`): one compiled program,
    the same outputs within float rounding."""
    from lmkit.forward import classify

    extras = () if data.spans is None else (data.spans,)
    return classify(model, data.ids, batch_size, max_length, group=data.per_example, extras=extras,
                    packing=packing and _packable(model, data))
