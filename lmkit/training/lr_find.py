"""The learning-rate finder: an exponential range test on the one engine and the one step.

The training a config describes (its model, data, optimizer, batch) runs for `steps` steps while
the learning rate rises by equal factors from `start_lr` to `end_lr` (the registry schedule
``exponential_range``); the loss of every step is smoothed (a debiased moving average, as fastai
and TensorBoard do) and the test stops once the smoothed loss passes `DIVERGED` times its lowest
value, or the engine finds the loss non-finite. The suggestion follows a named rule:

- ``minimum/10`` (default): a tenth of the rate where the smoothed loss is lowest: the loss is
  still falling fast there and well short of the rates where training blows up (Smith 2017;
  fastai's ``lr_min``);
- ``steepest``: where the smoothed loss falls fastest per decade of rate (fastai's ``lr_steep``).

>>> found = lmkit.lr_find(arch="lstm", max_steps=500)            # doctest: +SKIP
>>> found.suggestion, found.rule                                  # doctest: +SKIP
(0.0021, 'minimum/10')
>>> run = lmkit.train(arch="lstm", learning_rate="find")         # doctest: +SKIP
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from typing import Any

from lmkit.config import TrainConfig
from lmkit.engine.events import Event, Reporter, StepEvent, StopSignal
from lmkit.errors import ConfigError, TrainingDiverged

__all__ = ["LrFinding", "lr_find", "suggest", "smoothed", "RULES", "FIND", "DIVERGED"]

#: the `learning_rate` value that runs the finder first
FIND = "find"
#: the smoothed loss this many times its lowest value ends the test (fastai's criterion)
DIVERGED = 4.0
#: the rules a suggestion can follow
RULES = ("minimum/10", "steepest")


def smoothed(losses: list[float], beta: float = 0.9) -> list[float]:
    """The debiased exponential moving average of `losses` (non-finite ones end it).

    >>> [round(v, 3) for v in smoothed([4.0, 2.0], 0.5)]
    [4.0, 2.667]
    """
    out: list[float] = []
    average = 0.0
    for i, loss in enumerate(losses):
        if not math.isfinite(loss):
            break
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** (i + 1)))
    return out


def suggest(rates: list[float], smooth: list[float], rule: str = "minimum/10") -> float:
    """The learning rate `rule` picks from a range test's rates and smoothed losses.

    >>> suggest([1e-4, 1e-3, 1e-2, 1e-1], [3.0, 2.0, 1.0, 9.0])
    0.001
    >>> suggest([1e-4, 1e-3, 1e-2, 1e-1], [3.0, 2.9, 1.0, 9.0], "steepest")
    0.001
    """
    if rule not in RULES:
        raise ConfigError(f"learning-rate rule {rule!r} is not one of {', '.join(RULES)}")
    if not smooth:
        raise ConfigError("the range test recorded no finite loss: start_lr is already too "
                          "high, or the model diverges at once; try a lower start_lr")
    best = min(range(len(smooth)), key=smooth.__getitem__)
    if rule == "minimum/10":
        return rates[best] / 10
    if best == 0:  # the loss never fell: the start of the range is the only safe rate
        return rates[0]
    # the slope of the loss over log(rate), up to the minimum; the rate where the step begins
    slopes = [(smooth[i + 1] - smooth[i]) / math.log(rates[i + 1] / rates[i]) for i in range(best)]
    return rates[min(range(best), key=slopes.__getitem__)]


@dataclass
class LrFinding:
    """A range test's curve and its suggestion (`rule` says how it was picked)."""

    learning_rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    rule: str
    #: why the test ended: "completed" (the whole range), "diverged"
    reason: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def minimum(self) -> float:
        """The rate at which the smoothed loss was lowest."""
        return self.learning_rates[min(range(len(self.smoothed)), key=self.smoothed.__getitem__)]

    def describe(self) -> str:
        """One line: the suggestion, its rule, and where the loss was lowest and blew up."""
        ended = (f"the loss diverged by {self.learning_rates[len(self.smoothed) - 1]:.2g}"
                 if self.reason == "diverged" else
                 f"the range ended at {self.learning_rates[-1]:.2g}")
        return (f"suggested learning_rate = {self.suggestion:.2g} (rule {self.rule}; the smoothed "
                f"loss was lowest, {min(self.smoothed):.4f}, at {self.minimum:.2g}; {ended})")

    def __repr__(self) -> str:
        return f"LrFinding({self.describe()})"


class _RangeWatch:
    """Records every step's rate and loss; asks the test to stop once the loss has blown up."""

    def __init__(self, stop: StopSignal, beta: float) -> None:
        self.stop, self.beta = stop, beta
        self.rates: list[float] = []
        self.losses: list[float] = []

    def __call__(self, event: Event) -> None:
        if not isinstance(event, StepEvent):
            return
        self.rates.append(event.learning_rate)
        self.losses.append(event.loss)
        smooth = smoothed(self.losses, self.beta)
        if len(smooth) < len(self.losses) or smooth[-1] > DIVERGED * min(smooth):
            self.stop.set("diverged")


def lr_find(config: TrainConfig, *, start_lr: float = 1e-6, end_lr: float = 1.0,
            steps: int = 200, rule: str = "minimum/10", smoothing: float = 0.9,
            reporters: list[Reporter] | None = None) -> LrFinding:
    """Run the range test on `config`'s training (its every default applied) and suggest a
    learning rate. Nothing is kept on disk: the test's run directory is a temporary folder.

    >>> lr_find(TrainConfig(arch="lstm"), steps=100).suggestion       # doctest: +SKIP
    0.0021
    """
    from lmkit.optim import FULL_BATCH, SCHEDULE_FREE
    from lmkit.training.language_model import resolve_training, train_language_model

    if not 0 < start_lr < end_lr:
        raise ConfigError(f"the range test needs 0 < start_lr < end_lr, got start_lr={start_lr:g}, "
                          f"end_lr={end_lr:g}")
    if steps < 10:
        raise ConfigError(f"the range test needs at least 10 steps to draw a curve, got {steps}")
    if rule not in RULES:
        raise ConfigError(f"learning-rate rule {rule!r} is not one of {', '.join(RULES)}")
    if config.learning_rate == FIND:
        config = config.replace(learning_rate=end_lr)
    parts = resolve_training(config, False)[0]
    if parts.optimizer.has(SCHEDULE_FREE) or parts.optimizer.has(FULL_BATCH):
        raise ConfigError(f"optimizer={parts.config.optimizer!r} makes its own learning-rate "
                          f"schedule or takes whole passes, so a range test cannot raise the rate "
                          f"step by step; run the finder with another optimizer (adamw)")
    resolved = parts.config
    stop = StopSignal()
    watch = _RangeWatch(stop, smoothing)
    with tempfile.TemporaryDirectory(prefix="lmkit-lr-find-") as folder:
        test = resolved.replace(
            schedule="exponential_range", learning_rate=end_lr, min_lr_ratio=start_lr / end_lr,
            warmup_steps=0, max_steps=steps, epochs=None, steps_per_dispatch=1,
            eval_every=steps, eval_batches=1, checkpoint_every=steps, early_stopping=None,
            sample_tokens=0, report=[], out=folder, overwrite=True)
        try:
            train_language_model(test, reporters=[watch, *(reporters or [])], stop=stop)
        except TrainingDiverged:  # the engine's own verdict (a non-finite loss): the curve stands
            stop.set("diverged")
    smooth = smoothed(watch.losses, smoothing)
    return LrFinding(watch.rates, watch.losses, smooth, suggest(watch.rates, smooth, rule), rule,
                     "diverged" if stop.is_set() else "completed", resolved.to_dict())


def with_found_learning_rate(config: TrainConfig) -> TrainConfig:
    """`config` with ``learning_rate = "find"`` replaced by the finder's suggestion (its source
    names the rule: ``lmkit train --dry-run`` and the run's config say where it came from)."""
    found = lr_find(config)
    return config.replace(learning_rate=float(f"{found.suggestion:.3g}"),
                          by=f"lr-find (rule {found.rule})")
