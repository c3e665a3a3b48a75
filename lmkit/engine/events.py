"""The event stream of a training run, and the stop request.

Training emits events; reporters (terminal progress, the JSONL log, notebook widgets) subscribe
by being callables that take one event. The engine never knows how events are shown.

>>> seen = []
>>> run = lmkit.train(max_steps=10, reporters=[seen.append])      # doctest: +SKIP
>>> [type(e).__name__ for e in seen][-1]                          # doctest: +SKIP
'EndEvent'
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Event", "StartEvent", "StepEvent", "EvalEvent", "CheckpointEvent", "EndEvent",
    "Reporter", "StopSignal", "history_record",
]

_STEP_KEYS = ("step", "loss", "learning_rate", "tokens_per_second", "elapsed", "epoch")


@dataclass(frozen=True)
class Event:
    """Base of all training events."""

    def to_dict(self) -> dict[str, Any]:
        return {"event": type(self).__name__.removesuffix("Event").lower(), **asdict(self)}


@dataclass(frozen=True)
class StartEvent(Event):
    """Training is about to start (after compiling nothing yet)."""

    run_dir: str
    total_steps: int
    start_step: int
    arch: str
    parameters: int
    backend: str
    devices: str
    tokens_per_step: int
    config: dict[str, Any] = field(default_factory=dict)
    #: the validation metric that judges the training (`val_loss`, or a task's score such as
    #: `val_bleu` when a fine-tuning scores its task while training: higher is better then)
    monitor: str = "val_loss"
    #: the loss is a negative log-likelihood per token (a language model, a generation task), so
    #: a front end may show its exponential as a perplexity; a classifier's loss is not
    token_loss: bool = True


@dataclass(frozen=True)
class StepEvent(Event):
    """One optimizer step finished (reported once per compiled dispatch, for its last step)."""

    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    tokens_per_second: float | None  # None until measured: the first dispatch compiles
    elapsed: float
    eta: float | None


@dataclass(frozen=True)
class EvalEvent(Event):
    """Validation metrics at `step` (keys like 'val_loss', 'val_perplexity')."""

    step: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class CheckpointEvent(Event):
    """A checkpoint was written atomically to `path`."""

    step: int
    path: str


@dataclass(frozen=True)
class EndEvent(Event):
    """Training ended: reason is 'completed', 'stopped', 'interrupted' (Ctrl-C), 'terminated'
    (SIGTERM), 'early_stopping', 'time_budget' (`Plan.max_seconds` reached) or 'diverged' (then
    `TrainingDiverged` is raised right after this event)."""

    step: int
    reason: str
    elapsed: float
    summary: dict[str, Any] = field(default_factory=dict)


Reporter = Callable[[Event], None]


def history_record(event: dict[str, Any]) -> dict[str, Any] | None:
    """The history row of one serialized event (steps and evaluations), else None (also for
    anything that is no such event: a damaged line of an event log)."""
    if not isinstance(event, dict) or not isinstance(event.get("step"), int):
        return None
    if event.get("event") == "step":
        return {k: event[k] for k in _STEP_KEYS if k in event}
    if event.get("event") == "eval" and isinstance(event.get("metrics"), dict):
        return {"step": event["step"], **event["metrics"]}
    return None


class StopSignal:
    """A thread-safe request to stop training at the next step boundary.

    A widget's Stop button, a SIGINT handler and early stopping all call `set()`; the training
    loop checks `is_set()` between dispatches, writes a checkpoint and returns the run.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def set(self, reason: str = "stopped") -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()
        self.reason = ""

    def __repr__(self) -> str:
        return f"StopSignal(set={self.is_set()}, reason={self.reason!r})"
