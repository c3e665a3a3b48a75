"""The language-model client's steps: training, full-batch passes and evaluation.

On JAX (the fast path) `JaxStepper` trains through lmkit's one compiled step
(`lmkit.train_step.TrainStep`: donated state, `lax.scan` over fused steps, parts, accumulation,
meshes) with the token loss over flattened logits, one parameter group (`freeze` patterns make
a second, frozen one), and compiles its evaluation. On other backends the same interface is
served by Keras's own `model.fit` (`FitStepper`).

Both steppers share one contract, used by the language-model client of the engine
(`lmkit.training.language_model`):

- ``train(xs, ys) -> losses``: `k` optimizer steps on stacked batches ``(k, B, T)``; on JAX each
  batch's gradient may be computed as independent parts (`batch_parts`), the same mathematics.
- ``accumulate(batches) -> loss``: one optimizer step on the mean gradient of many batches
  (full-batch gradient descent).
- ``evaluate(batches) -> sums``: metric sums over batches, memory bounded by one batch.
- ``prepare_training(xs, ys)``: start compiling the training step for batches like these now
  (on JAX, in a thread), so that what is traced next (the evaluation, the final sample) is
  traced while it compiles; the first `train` of that shape waits for it.
- ``prepare_evaluation(shape)``: start compiling the evaluation of batches of `shape` now, beside
  the training step's compilation (on JAX, in a thread: XLA:CPU compiles on one core), so the
  first evaluation does not wait for its own compilation.
- ``sync()``: write the current weights back into the Keras model (before saving it).
- ``model_arrays()`` / ``optimizer_arrays()`` / ``restore(model, optimizer, source)``: for
  checkpoints; `restore` refuses arrays of another model (`RunError` naming the weight).

With ``evaluation_weights=True`` (an optimizer entry with that capability, whose optimizer
implements `lmkit.optim.EvaluationWeights`, e.g. Schedule-Free AdamW) the weights gradients are
taken at are not the ones to judge: `evaluate`, `sync` and `model_arrays` use the optimizer's
`evaluation_weights`, and `restore` turns a checkpoint's weights back into the training point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from lmkit.adapters.lora import lora_group
from lmkit.distribute import Layout
from lmkit.engine.checkpoint import check_fit, restore_arrays
from lmkit.losses import nll
from lmkit.models.base import on_xla_cpu
from lmkit.optim import exclude_from_decay
from lmkit.param_groups import Frozen, Optimize, ParamGroups, labels_from_patterns
from lmkit.token_metrics import compute_stats
from lmkit.train_step import TrainState, TrainStep

__all__ = ["make_stepper", "batch_parts", "compile_in_background", "JaxStepper", "FitStepper"]

Batch = tuple[np.ndarray, np.ndarray]

#: Largest batch (in tokens) that `batch_parts` splits automatically: gpt at 768 and 1,536 tokens
#: per batch steps 5–7 % faster in two parts, at 4,096 no faster (docs/performance.md).
BATCH_PARTS_MAX_TOKENS = 2048
#: Shortest run that `batch_parts` splits automatically: two parts make a larger program, ≈ 1 s
#: more to compile cold for gpt_char, which ≈ 2.5 ms saved per step repays after ≈ 400 steps.
BATCH_PARTS_MIN_STEPS = 500


def batch_parts(cfg: Any, model: keras.Model, total_steps: int) -> int:
    """How many independent parts the JAX step computes each batch's gradient in.

    `cfg.batch_parts` when set. Automatically (0): the model's `cpu_batch_parts` on a CPU, for
    runs of at least `BATCH_PARTS_MIN_STEPS` steps on batches of at most
    `BATCH_PARTS_MAX_TOKENS` tokens that split evenly; else 1 (on a GPU one large kernel beats
    two half-size ones).
    """
    if cfg.batch_parts:
        return cfg.batch_parts
    if (not on_xla_cpu() or total_steps < BATCH_PARTS_MIN_STEPS
            or cfg.batch_size * cfg.seq_len > BATCH_PARTS_MAX_TOKENS):
        return 1
    parts = getattr(model, "cpu_batch_parts", 1)
    return 1 if cfg.batch_size % parts else parts


_COMPILER: list[Any] = []  # the one thread that compiles ahead (`compile_in_background`)


def compile_in_background(lowered: Any) -> Any:
    """Compile `lowered` (a ``jax.stages.Lowered``) in lmkit's background compile thread; a
    future of the compiled program.

    XLA:CPU compiles one program on one core, and the GIL is released meanwhile, so the main
    thread traces the next program while this one compiles. One thread, first come first
    served, in the order a training needs them: its step, its evaluation, its final sample
    (programs compiling side by side would slow the step, needed first). A later
    call of the same ``jax.jit`` function on the same shapes runs the program compiled here
    (JAX keeps the lowering and its executable in memory; it also lands in the persistent
    compilation cache when that is on).
    """
    import concurrent.futures

    if not _COMPILER:
        _COMPILER.append(concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lmkit-compile"))
    return _COMPILER[0].submit(lowered.compile)


def _flat(y: Any, logits: Any) -> tuple[Any, Any]:
    vocab = ops.shape(logits)[-1]
    return ops.reshape(y, (-1,)), ops.reshape(logits, (-1, vocab))


def _eval_sums(loss_fn: Callable, metric_names: list[str], top_k: int, y: Any, logits: Any) -> dict[str, Any]:
    labels, flat = _flat(y, logits)
    flat = ops.cast(flat, "float32")
    sums = {
        "nll": ops.sum(nll(labels, flat)),
        "loss": ops.sum(loss_fn(labels, flat)),
        "count": ops.cast(ops.shape(labels)[0], "float32"),
    }
    sums.update(compute_stats(metric_names, labels, flat, top_k))
    return sums


class JaxStepper:
    """Language modelling on the one compiled step (`lmkit.train_step.TrainStep`): the loss is
    the token loss over flattened logits; `freeze` lists glob patterns of variable paths that
    do not train (`lmkit.param_groups.labels_from_patterns`); evaluation is compiled here."""

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 loss_fn: Callable, metric_names: list[str], top_k: int, parts: int = 1,
                 layout: Layout | None = None, accumulate: int = 1,
                 evaluation_weights: bool = False, freeze: Sequence[str] = (),
                 lora: Any = None) -> None:
        import jax

        self.model, self.optimizer, self.layout = model, optimizer, layout
        variables = model.trainable_variables
        #: the LoRA group (`lmkit.adapters.lora.Lora`) when `lora` (a config with adapter =
        #: "lora") asks for one: then only the adapters train
        self.lora = None
        if lora is not None:
            held, self.lora = lora_group(model, variables, lora, optimizer)
            labels = ["lora" if h else "frozen" for h in held]
            transforms: dict[str, Any] = {"lora": self.lora, "frozen": Frozen()}
        else:
            labels = labels_from_patterns(variables, {p: "frozen" for p in freeze}, "train")
            transforms = {"train": Optimize(optimizer, evaluation_weights), "frozen": Frozen()}
        groups = ParamGroups(variables, labels, transforms)

        def token_loss(y: Any, logits: Any) -> Any:
            return ops.mean(loss_fn(*_flat(y, logits)))

        self.step = TrainStep(model, groups, token_loss, parts=parts, accumulate=accumulate,
                              layout=layout)

        @jax.jit
        def eval_batch(trainable, non_trainable, x, y):
            logits, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return _eval_sums(loss_fn, metric_names, top_k, y, logits)

        self._eval_batch = eval_batch
        #: future of the training step compiled ahead (`prepare_training`), until `train` waits for it
        self._train_ready: Any = None
        #: (batch shape, future of the compiled evaluation) from `prepare_evaluation`
        self._prepared: tuple[tuple[int, ...], Any] | None = None

    @property
    def state(self) -> TrainState:
        return self.step.state

    def prepare_evaluation(self, shape: tuple[int, ...]) -> None:
        """Compile the evaluation of int32 batches of `shape` in a background thread.

        The first evaluation otherwise compiles when it comes (a second or more on a CPU, with
        the training waiting); started before the first training dispatch, the two compilations
        run side by side. Only on one device (a mesh's evaluation takes placed batches).
        """
        import jax

        if self.layout is not None:
            return
        avals = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                             (self.state.trainable, self.state.non_trainable))
        batch = jax.ShapeDtypeStruct(tuple(shape), np.int32)
        # traced here: Keras keeps its scopes per thread
        lowered = self._eval_batch.lower(*avals, batch, batch)
        self._prepared = (tuple(shape), compile_in_background(lowered))

    def prepare_training(self, xs: np.ndarray, ys: np.ndarray) -> None:
        """Compile the training step for batches shaped like ``xs, ys`` in the background.

        Traced here, compiled (or read from the persistent cache) in the compile thread, so
        what the caller traces next (the evaluation, the final sample) is traced while the step
        compiles instead of before. The first `train` waits for it, and its call then finds
        the program compiled. Only on one device, as `prepare_evaluation`.
        """
        if self.layout is None:
            self._train_ready = compile_in_background(self.step.lower(xs, ys))

    def train(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """`k` optimizer steps on ``xs, ys`` of shape ``(k, B, T)``, or ``(k, accumulate, B, T)``
        with gradient accumulation; on a mesh of many processes, B is this process's rows
        (`Layout.local_rows`)."""
        if self._train_ready is not None:  # compiled ahead: never a second compilation beside it
            self._train_ready.result()
            self._train_ready = None
        return np.asarray(self.step.train(xs, ys))

    def accumulate(self, batches: Iterable[tuple[np.ndarray, np.ndarray, float]]) -> float:
        return self.step.accumulate(batches)

    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        sums: dict[str, float] = {}
        weights, non_trainable = self.step.effective_weights(), self.state.non_trainable
        shape, compiled = (None, None) if self._prepared is None else (
            self._prepared[0], self._prepared[1].result())
        for x, y in batches:
            run = compiled if x.shape == shape else self._eval_batch
            for k, v in run(weights, non_trainable, self.step.feed(x), self.step.feed(y)).items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return sums

    def sync(self) -> None:
        self.step.sync()

    def optimizer_arrays(self) -> list[np.ndarray]:
        return self.step.optimizer_arrays()

    def model_arrays(self) -> list[np.ndarray]:
        return self.step.model_arrays()

    def restore(self, model: list[np.ndarray], optimizer: list[np.ndarray], source: str) -> None:
        variables, slots = self.step.targets()
        check_fit(variables, model, "model weights", source)
        check_fit(slots, optimizer, "optimizer slots", source)
        self.step.restore(model, optimizer)


class FitStepper:
    """The same contract on any Keras backend, through `model.fit` / `model.evaluate`-style calls."""

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 loss_fn: Callable, metric_names: list[str], top_k: int) -> None:
        self.model, self.optimizer = model, optimizer
        self._loss_fn, self._metric_names, self._top_k = loss_fn, metric_names, top_k

        def keras_loss(y_true, logits):
            labels, flat = _flat(y_true, logits)
            return ops.mean(loss_fn(labels, flat))

        model.compile(optimizer=optimizer, loss=keras_loss)
        exclude_from_decay(optimizer, model.trainable_variables)
        optimizer.build(model.trainable_variables)

    def train(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        k, b = xs.shape[:2]
        history = self.model.fit(
            xs.reshape(k * b, -1), ys.reshape(k * b, -1), batch_size=b, epochs=1,
            shuffle=False, verbose=0,
        )
        # fit reports the mean over its k steps; that is the best per-step figure it gives.
        return np.full(k, history.history["loss"][-1], dtype=np.float32)

    def accumulate(self, batches: Iterable[tuple[np.ndarray, np.ndarray, float]]) -> float:
        grads_acc: list[Any] | None = None
        total = 0.0
        variables = self.model.trainable_variables
        for x, y, weight in batches:
            loss, grads = _backend_grads(self.model, self._loss_fn, x, y)
            grads = [weight * g for g in grads]
            grads_acc = grads if grads_acc is None else [a + g for a, g in zip(grads_acc, grads)]
            total += weight * float(loss)
        self.optimizer.apply(grads_acc, variables)
        return total

    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        sums: dict[str, float] = {}
        for x, y in batches:
            logits = self.model(x, training=False)
            out = _eval_sums(self._loss_fn, self._metric_names, self._top_k, y, logits)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(keras.ops.convert_to_numpy(v))
        return sums

    def prepare_training(self, xs: np.ndarray, ys: np.ndarray) -> None:
        """Nothing to prepare: Keras compiles its own training step on first use."""

    def prepare_evaluation(self, shape: tuple[int, ...]) -> None:
        """Nothing to prepare: Keras compiles its own evaluation on first use."""

    def sync(self) -> None:  # Keras owns the variables on this path
        pass

    def optimizer_arrays(self) -> list[np.ndarray]:
        return [keras.ops.convert_to_numpy(v) for v in self.optimizer.variables]

    def model_arrays(self) -> list[np.ndarray]:
        return [keras.ops.convert_to_numpy(v) for v in (*self.model.trainable_variables,
                                                        *self.model.non_trainable_variables)]

    def restore(self, model: list[np.ndarray], optimizer: list[np.ndarray], source: str) -> None:
        variables = [*self.model.trainable_variables, *self.model.non_trainable_variables]
        check_fit(variables, model, "model weights", source)
        restore_arrays(self.optimizer.variables, optimizer, "optimizer slots", source)
        restore_arrays(variables, model, "model weights", source)


def _backend_grads(model: keras.Model, loss_fn: Callable, x: np.ndarray, y: np.ndarray) -> tuple[Any, list[Any]]:
    """Loss and gradients of one batch on the torch or TensorFlow backend (full-batch gradient
    descent, `FitStepper.accumulate`: the one step lmkit takes outside `model.fit` there)."""
    backend = keras.backend.backend()
    variables = model.trainable_variables
    if backend == "torch":
        model.zero_grad()
        loss = ops.mean(loss_fn(*_flat(y, model(x, training=True))))
        loss.backward()
        return loss.detach(), [v.value.grad.detach().clone() for v in variables]
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = ops.mean(loss_fn(*_flat(y, model(x, training=True))))
        return loss, tape.gradient(loss, variables)
    raise NotImplementedError(f"full-batch gradient descent is not implemented on backend {backend!r}")


def make_stepper(model: keras.Model, optimizer: keras.optimizers.Optimizer, loss_fn: Callable,
                 metric_names: list[str], top_k: int, parts: int = 1,
                 layout: Layout | None = None, accumulate: int = 1,
                 evaluation_weights: bool = False,
                 freeze: Sequence[str] = (), lora: Any = None) -> JaxStepper | FitStepper:
    """The compiled JAX stepper on JAX, `model.fit` elsewhere.

    On JAX, `parts` (see `batch_parts`) splits each batch's gradient into independent parts,
    `layout` (`lmkit.distribute.layout_for`) runs the step data parallel over a mesh, and
    `accumulate` averages the gradients of that many micro-batches into each optimizer step (both
    JAX only: `lmkit.training.language_model` refuses them on other backends before building
    anything). `evaluation_weights`: the optimizer implements `lmkit.optim.EvaluationWeights`
    (its entry's capability), also JAX only. `freeze`: glob patterns of the variable paths
    that do not train (JAX only). `lora`: a config with ``adapter = "lora"``: train LoRA
    adapters only (`lmkit.adapters.lora`; JAX only).
    """
    if keras.backend.backend() == "jax":
        return JaxStepper(model, optimizer, loss_fn, metric_names, top_k, parts, layout, accumulate,
                          evaluation_weights, freeze, lora)
    return FitStepper(model, optimizer, loss_fn, metric_names, top_k)
