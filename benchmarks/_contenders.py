"""The two Keras contenders every training benchmark times: lmkit's compiled step, plain `fit`.

Both build the model, optimizer and loss from the same `TrainConfig` through lmkit's registries,
so they train the very same function with the very same parameters and optimizer; only the
way the step is run differs.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from lmkit.config import TrainConfig


def _parts(cfg: TrainConfig, vocab_size: int, total_steps: int,
           model: Any = None) -> tuple[Any, Any, Any]:
    """Model (lmkit's for `cfg`, or `model`), optimizer and loss, built as `lmkit.train` does."""
    import keras

    from lmkit.build import build_model
    from lmkit.losses import build_loss
    from lmkit.optim import build_optimizer, exclude_from_decay
    from lmkit.schedules import build_schedule

    keras.utils.set_random_seed(cfg.seed)
    if model is None:
        model = build_model(cfg, vocab_size)
    else:
        model(np.zeros((1, cfg.seq_len), dtype=np.int32))  # create its weights
    optimizer = build_optimizer(cfg, build_schedule(cfg, total_steps))
    exclude_from_decay(optimizer, model.trainable_variables)  # as `lmkit.train` does
    return model, optimizer, build_loss(cfg)


class LmkitSteps:
    """lmkit's training step (`lmkit.training.step.make_stepper`), `k` steps per dispatch."""

    def __init__(self, cfg: TrainConfig, vocab_size: int, total_steps: int) -> None:
        from lmkit.training.step import batch_parts, make_stepper

        self.model, optimizer, loss = _parts(cfg, vocab_size, total_steps)
        self.stepper = make_stepper(self.model, optimizer, loss, ["loss"], cfg.top_k,
                                    parts=batch_parts(cfg, self.model, total_steps))

    def run(self, xs: np.ndarray, ys: np.ndarray) -> list[float]:
        """Train on stacked batches ``(k, B, T)``; per-step seconds (the dispatch's mean, k times)."""
        t0 = time.perf_counter()
        losses = self.stepper.train(xs, ys)  # returns NumPy: the dispatch has finished
        return [(time.perf_counter() - t0) / len(losses)] * len(losses)

    def val_loss(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
        """Mean per-token loss over `batches`, with the evaluation step `lmkit.train` uses."""
        sums = self.stepper.evaluate(batches)
        return sums["nll"] / sums["count"]


class _BatchClock:
    """Keras callback: the time between consecutive batch ends (steady-state step time)."""

    def __init__(self) -> None:
        import keras

        class Clock(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.ends: list[float] = []

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                self.ends.append(time.perf_counter())

        self.callback = Clock()

    def intervals(self) -> list[float]:
        ends = self.callback.ends
        self.callback.ends = []
        return list(np.diff(ends))


class KerasFitSteps:
    """Plain Keras: `model.compile` with a Keras loss, then `model.fit` over the batches.

    The model is lmkit's own for `cfg` (the same function lmkit's step trains, so only the
    training loop differs), or `model` when given: a stock-Keras model of the same architecture
    (`benchmarks.keras_plain`), trained with the same optimizer settings.
    """

    def __init__(self, cfg: TrainConfig, vocab_size: int, total_steps: int,
                 model: Any = None) -> None:
        import keras

        self.model, optimizer, _ = _parts(cfg, vocab_size, total_steps, model)
        self.model.compile(optimizer=optimizer,
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        self.clock = _BatchClock()

    def run(self, xs: np.ndarray, ys: np.ndarray) -> list[float]:
        """`fit` one epoch over the ``(k, B, T)`` batches; the k-1 steady-state step times."""
        k, b = xs.shape[:2]
        self.model.fit(xs.reshape(k * b, -1), ys.reshape(k * b, -1), batch_size=b, epochs=1,
                       shuffle=False, verbose=0, callbacks=[self.clock.callback])
        return self.clock.intervals()
