"""Built-in learning-rate schedules, as Keras `LearningRateSchedule`s in `keras.ops`.

A schedule factory takes the config and the total number of optimizer steps and returns a
schedule object (callable on the step). Built from two small parts: a linear warm-up and a decay
shape, so every schedule is tested from one table (tests/test_components.py).

>>> from lmkit.config import TrainConfig
>>> s = build_schedule(TrainConfig(schedule="linear", learning_rate=1.0, min_lr_ratio=0.0), 10)
>>> float(s(5))
0.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from lmkit._scoped import scoped
from lmkit.registry import schedules

if TYPE_CHECKING:
    from lmkit.config import TrainConfig

__all__ = ["WarmupDecay", "build_schedule", "runtime_peaks"]

#: peaks of the schedules a step being traced takes as inputs, by the schedule's id
_PEAKS: ContextVar[dict[int, Any]] = ContextVar("lmkit_schedule_peaks", default={})


@contextmanager
def runtime_peaks(pairs: Iterable[tuple["WarmupDecay", Any]]) -> Iterator[None]:
    """While the block traces a step, each schedule of `pairs` scales by its traced peak
    instead of its own constant: the compiled program holds no learning rate, so a run at
    another rate (a sweep, a second try) finds the same program in the compilation cache.

    >>> with runtime_peaks([(schedule, peak_input)]):                    # doctest: +SKIP
    ...     rate = schedule(step)
    """
    with scoped(_PEAKS, {id(s): peak for s, peak in pairs}):
        yield


@keras.saving.register_keras_serializable(package="lmkit")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup` steps, then a decay `shape` to `peak * floor`.

    Shapes: ``constant``, ``cosine`` (half cosine), ``linear``; ``exponential`` rises instead,
    from `peak * floor` to `peak` by equal factors per step (the learning-rate range test).
    After `total` steps the rate stays at its final value.
    """

    SHAPES = ("constant", "cosine", "linear", "exponential")

    def __init__(self, peak: float, total: int, warmup: int = 0, shape: str = "constant",
                 floor: float = 0.0) -> None:
        if shape not in self.SHAPES:
            raise ValueError(f"shape must be one of {self.SHAPES}, got {shape!r}")
        self.peak, self.total, self.warmup, self.shape, self.floor = (
            float(peak), int(total), int(min(warmup, total)), shape, float(floor)
        )

    def __call__(self, step: Any) -> Any:
        """The rate at `step` (0-based): a tensor inside the optimizer's compiled step; a NumPy
        float for a host number (progress reports: eager tensor ops would compile a program
        each, a second of a short run's start on a CPU)."""
        host = isinstance(step, (int, float, np.number))
        xp: Any = np if host else ops
        step = np.float32(step) if host else ops.cast(step, "float32")
        peak = self.peak if host else _PEAKS.get().get(id(self), self.peak)
        warm = xp.minimum(1.0, (step + 1.0) / max(self.warmup, 1)) if self.warmup else 1.0
        span = max(self.total - self.warmup, 1)
        progress = xp.clip((step - self.warmup) / span, 0.0, 1.0)
        if self.shape == "cosine":
            decay = 0.5 * (1.0 + xp.cos(math.pi * progress))
        elif self.shape == "linear":
            decay = 1.0 - progress
        elif self.shape == "exponential":
            return peak * warm * self.floor ** (1.0 - progress)
        else:
            decay = xp.ones_like(progress)
        factor = self.floor + (1.0 - self.floor) * decay
        return peak * warm * factor

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "total": self.total, "warmup": self.warmup,
                "shape": self.shape, "floor": self.floor}


@schedules.register("constant", description="The same learning rate at every step.")
def constant(cfg: "TrainConfig", total_steps: int) -> WarmupDecay:
    return WarmupDecay(cfg.learning_rate, total_steps)


@schedules.register("warmup_cosine", aliases=("cosine",),
                    description="Linear warm-up, then cosine decay to min_lr_ratio of the peak.")
def warmup_cosine(cfg: "TrainConfig", total_steps: int) -> WarmupDecay:
    return WarmupDecay(cfg.learning_rate, total_steps, cfg.warmup_steps, "cosine", cfg.min_lr_ratio)


@schedules.register("linear", aliases=("linear_decay",),
                    description="Linear decay from the peak to min_lr_ratio of it.")
def linear(cfg: "TrainConfig", total_steps: int) -> WarmupDecay:
    return WarmupDecay(cfg.learning_rate, total_steps, 0, "linear", cfg.min_lr_ratio)


@schedules.register("warmup_linear", aliases=("linear_warmup",),
                    description="Linear warm-up, then linear decay to min_lr_ratio of the peak (BERT's fine-tuning schedule).")
def warmup_linear(cfg: "TrainConfig", total_steps: int) -> WarmupDecay:
    return WarmupDecay(cfg.learning_rate, total_steps, cfg.warmup_steps, "linear", cfg.min_lr_ratio)


@schedules.register("one_cycle", aliases=("onecycle",),
                    description="One-cycle: warm-up over 30% of the steps, then cosine annealing.")
def one_cycle(cfg: "TrainConfig", total_steps: int) -> WarmupDecay:
    # Smith & Topin (2018): the rate climbs for the first 30% of the steps, then anneals.
    return WarmupDecay(cfg.learning_rate, total_steps, max(1, int(0.3 * total_steps)), "cosine",
                       cfg.min_lr_ratio)


@schedules.register("exponential_range", aliases=("lr_range",),
                    description="The learning-rate range test (`lmkit lr-find`): from min_lr_ratio of the learning rate up to it, by equal factors per step.")
def exponential_range(cfg: "TrainConfig", total_steps: int) -> WarmupDecay:
    return WarmupDecay(cfg.learning_rate, total_steps, 0, "exponential", cfg.min_lr_ratio)


def build_schedule(cfg: Any, total_steps: int) -> WarmupDecay:
    """The schedule named by `cfg.schedule` for a run of `total_steps` optimizer steps."""
    return schedules.get(cfg.schedule)(cfg, total_steps)
