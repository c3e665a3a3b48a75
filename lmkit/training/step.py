"""Compiled training and evaluation steps.

On JAX (the fast path) a step is built from Keras's stateless API and compiled with `jax.jit`:
model weights, non-trainable state (dropout seeds) and optimizer slots live outside the Keras
objects as one pytree whose buffers are donated to each call, and `k` steps are fused into one
dispatch with `lax.scan`. On other backends the same interface is served by Keras's own
`model.fit`.

Both steppers share one contract, used by the language-model client of the engine
(`lmkit.training.language_model`):

- ``train(xs, ys) -> losses``: `k` optimizer steps on stacked batches ``(k, B, T)``; on JAX each
  batch's gradient may be computed as independent parts (`batch_parts`), the same mathematics.
- ``accumulate(batches) -> loss``: one optimizer step on the mean gradient of many batches
  (full-batch gradient descent).
- ``evaluate(batches) -> sums``: metric sums over batches, memory bounded by one batch.
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

import functools
from collections.abc import Callable, Iterable
from typing import Any

import keras
import numpy as np
from keras import ops

from lmkit.distribute import Layout, jit_step, state_shardings
from lmkit.engine.checkpoint import check_fit, restore_arrays
from lmkit.token_metrics import compute_stats
from lmkit.losses import nll

__all__ = ["make_stepper", "batch_parts", "JaxStepper", "FitStepper"]

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
    if (keras.backend.backend() != "jax" or total_steps < BATCH_PARTS_MIN_STEPS
            or cfg.batch_size * cfg.seq_len > BATCH_PARTS_MAX_TOKENS):
        return 1
    import jax

    parts = getattr(model, "cpu_batch_parts", 1)
    if jax.default_backend() != "cpu" or cfg.batch_size % parts:
        return 1
    return parts


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
    """Compiled steps on JAX: `jax.jit`, donated state, `lax.scan` over fused steps."""

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 loss_fn: Callable, metric_names: list[str], top_k: int, parts: int = 1,
                 layout: Layout | None = None, accumulate: int = 1,
                 evaluation_weights: bool = False) -> None:
        import jax

        self.model, self.optimizer = model, optimizer
        self._averaged = evaluation_weights
        self.layout, self.accumulate_steps = layout, accumulate
        self._batch_axis = 2 if accumulate > 1 else 1  # of xs: (k, [accumulate,] B, T)
        if layout is not None:  # data parallel already runs the batch's rows side by side
            parts = 1
        optimizer.build(model.trainable_variables)
        self.state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        )
        # Where each state array lives on the mesh: replicated (every device holds the weights
        # and optimizer slots; each computes the gradient of its rows, XLA sums them), or split
        # over the model axis for the weights the architecture names (`state_shardings`).
        self._state_shardings = None
        if layout is not None:
            self._state_shardings = state_shardings(layout, model, optimizer)
            self.state = layout.place(self.state, self._state_shardings)

        def loss_of(trainable, non_trainable, x, y):
            logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            labels, flat = _flat(y, logits)
            return ops.mean(loss_fn(labels, flat)), non_trainable

        grad_fn = jax.value_and_grad(loss_of, has_aux=True)

        def batch_grads(trainable, non_trainable, x, y):
            if parts == 1 or x.shape[0] % parts:
                return grad_fn(trainable, non_trainable, x, y)
            # The mean of equal parts' mean losses is the batch's mean loss, so this is the same
            # gradient; the parts share no data, so XLA:CPU runs their kernels side by side. Only
            # the dropout seeds pass from one part to the next (cheap ops, not the activations).
            size = x.shape[0] // parts
            losses, grads = [], []
            for i in range(parts):
                part = slice(i * size, (i + 1) * size)
                (loss, non_trainable), g = grad_fn(trainable, non_trainable, x[part], y[part])
                losses.append(loss)
                grads.append(g)
            mean = jax.tree.map(lambda *gs: sum(gs) / parts, *grads)
            return (sum(losses) / parts, non_trainable), mean

        def step_grads(trainable, non_trainable, x, y):
            if accumulate == 1:
                return batch_grads(trainable, non_trainable, x, y)
            # x, y: (accumulate, B, T). The mean of the micro-batches' mean losses is the mean
            # loss of one batch of accumulate * B rows, so this is its gradient; the scan keeps
            # one micro-batch's activations alive at a time.
            def micro(carry, batch):
                non_trainable, loss_sum, grad_sum = carry
                (loss, non_trainable), grads = batch_grads(trainable, non_trainable, *batch)
                return (non_trainable, loss_sum + loss,
                        jax.tree.map(lambda a, g: a + g, grad_sum, grads)), None

            zeros = jax.tree.map(jax.numpy.zeros_like, trainable)
            (non_trainable, loss, grads), _ = jax.lax.scan(
                micro, (non_trainable, jax.numpy.float32(0.0), zeros), (x, y))
            return (loss / accumulate, non_trainable), jax.tree.map(lambda g: g / accumulate, grads)

        def one_step(state, batch):
            trainable, non_trainable, opt_vars = state
            (loss, non_trainable), grads = step_grads(trainable, non_trainable, *batch)
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return (trainable, non_trainable, opt_vars), loss

        def train_chunk(state, xs, ys):
            return jax.lax.scan(one_step, state, (xs, ys))

        # xs, ys: (k, [accumulate,] B, T), the rows B split over the mesh's data axis
        train_chunk = jit_step(train_chunk, layout, self._state_shardings,
                               (self._batch_axis, self._batch_axis))

        @jax.jit
        def grad_sum(state, acc, x, y, weight):
            trainable, non_trainable, _ = state
            (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
            acc = jax.tree.map(lambda a, g: a + weight * g, acc, grads)
            return non_trainable, acc, loss * weight

        @functools.partial(jax.jit, donate_argnums=0)
        def apply_grads(state, grads):
            trainable, non_trainable, opt_vars = state
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return trainable, non_trainable, opt_vars

        @jax.jit
        def eval_batch(trainable, non_trainable, x, y):
            logits, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return _eval_sums(loss_fn, metric_names, top_k, y, logits)

        @jax.jit
        def judged(trainable, opt_vars):  # the weights to evaluate and keep
            return optimizer.evaluation_weights(trainable, opt_vars)

        self._train_chunk, self._grad_sum = train_chunk, grad_sum
        self._apply_grads, self._eval_batch, self._judged = apply_grads, eval_batch, judged
        #: (batch shape, future of the compiled evaluation) from `prepare_evaluation`
        self._prepared: tuple[tuple[int, ...], Any] | None = None

    def prepare_evaluation(self, shape: tuple[int, ...]) -> None:
        """Compile the evaluation of int32 batches of `shape` in a background thread.

        The first evaluation otherwise compiles when it comes (a second or more on a CPU, with
        the training waiting); started before the first training dispatch, the two compilations
        run side by side. Only on one device (a mesh's evaluation takes placed batches).
        """
        import concurrent.futures

        import jax

        if self.layout is not None:
            return
        avals = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                             (self.state[0], self.state[1]))
        batch = jax.ShapeDtypeStruct(tuple(shape), np.int32)
        lowered = self._eval_batch.lower(*avals, batch, batch)  # tracing needs this thread's GIL
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lmkit-compile")
        self._prepared = (tuple(shape), pool.submit(lowered.compile))
        pool.shutdown(wait=False)  # the thread ends with its one compilation

    def train(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """`k` optimizer steps on ``xs, ys`` of shape ``(k, B, T)``, or ``(k, accumulate, B, T)``
        with gradient accumulation; on a mesh of many processes, B is this process's rows
        (`Layout.local_rows`)."""
        if self.layout is not None:
            xs, ys = (self.layout.put_batch(a, self._batch_axis) for a in (xs, ys))
        self.state, losses = self._train_chunk(self.state, xs, ys)
        return np.asarray(losses)

    def accumulate(self, batches: Iterable[tuple[np.ndarray, np.ndarray, float]]) -> float:
        import jax

        acc = jax.tree.map(ops.zeros_like, self.state[0])
        total = 0.0
        for x, y, weight in batches:
            non_trainable, acc, loss = self._grad_sum(self.state, acc, self._feed(x), self._feed(y),
                                                      np.float32(weight))
            self.state = (self.state[0], non_trainable, self.state[2])
            total += float(loss)
        self.state = self._apply_grads(self.state, acc)
        return total

    def _weights(self) -> list[Any]:
        """The trainable weights to evaluate and keep: the optimizer's evaluation weights when
        it has them, else the training point itself."""
        trainable, _, opt_vars = self.state
        return self._judged(trainable, opt_vars) if self._averaged else trainable

    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        sums: dict[str, float] = {}
        weights, non_trainable = self._weights(), self.state[1]
        shape, compiled = (None, None) if self._prepared is None else (
            self._prepared[0], self._prepared[1].result())
        for x, y in batches:
            run = compiled if x.shape == shape else self._eval_batch
            for k, v in run(weights, non_trainable, self._feed(x), self._feed(y)).items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return sums

    def _feed(self, x: np.ndarray) -> Any:
        """A host batch for a step that takes it whole (evaluation, full-batch passes)."""
        return x if self.layout is None else self.layout.put(x, self.layout.replicated)

    def sync(self) -> None:
        _, non_trainable, opt_vars = self.state
        trainable = self._weights()
        # Copies: the state's buffers are donated to the next compiled call, and a Keras variable
        # must never point at a donated (deleted) buffer. Host copies (a device copy compiles a
        # program per shape); from a mesh, whole ones: the Keras model is then used on one
        # device (saving, sampling).
        copy = np.array if self.layout is None else self.layout.to_host
        for var, value in zip(self.model.trainable_variables, trainable):
            var.assign(copy(value))
        for var, value in zip(self.model.non_trainable_variables, non_trainable):
            var.assign(copy(value))
        for var, value in zip(self.optimizer.variables, opt_vars):
            var.assign(copy(value))

    def _host(self, arrays: Iterable[Any]) -> list[np.ndarray]:
        to_host = np.asarray if self.layout is None else self.layout.to_host
        return [to_host(v) for v in arrays]

    def optimizer_arrays(self) -> list[np.ndarray]:
        return self._host(self.state[2])

    def model_arrays(self) -> list[np.ndarray]:
        return self._host((*self._weights(), *self.state[1]))

    def restore(self, model: list[np.ndarray], optimizer: list[np.ndarray], source: str) -> None:
        import jax.numpy as jnp

        trainable, non_trainable, opt_vars = self.state
        check_fit([*self.model.trainable_variables, *self.model.non_trainable_variables], model,
                  "model weights", source)
        check_fit(self.optimizer.variables, optimizer, "optimizer slots", source)
        cast = lambda arrays, like: [jnp.asarray(a, dtype=c.dtype) for a, c in zip(arrays, like)]
        n = len(trainable)
        slots = cast(optimizer, opt_vars)
        weights = cast(model[:n], trainable)
        if self._averaged:  # the checkpoint holds the evaluation weights; train from y again
            weights = cast(self.optimizer.training_weights(weights, slots), trainable)
        self.state = (weights, cast(model[n:], non_trainable), slots)
        if self.layout is not None:
            self.state = self.layout.place(self.state, self._state_shardings)


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
    """Loss and gradients of one batch on the torch or TensorFlow backend."""
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
                 evaluation_weights: bool = False) -> JaxStepper | FitStepper:
    """The compiled JAX stepper on JAX, `model.fit` elsewhere.

    On JAX, `parts` (see `batch_parts`) splits each batch's gradient into independent parts,
    `layout` (`lmkit.distribute.layout_for`) runs the step data parallel over a mesh, and
    `accumulate` averages the gradients of that many micro-batches into each optimizer step (both
    JAX only: `lmkit.training.language_model` refuses them on other backends before building
    anything). `evaluation_weights`: the optimizer implements `lmkit.optim.EvaluationWeights`
    (its entry's capability), also JAX only.
    """
    if keras.backend.backend() == "jax":
        return JaxStepper(model, optimizer, loss_fn, metric_names, top_k, parts, layout, accumulate,
                          evaluation_weights)
    return FitStepper(model, optimizer, loss_fn, metric_names, top_k)
