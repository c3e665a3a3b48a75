"""The training engine: the one loop every kind of training runs through.

A client says what one optimizer step is, by handing the engine a `Trainee` (language-model
training: `lmkit.training.language_model`; classifier fine-tuning:
`lmkit.evaluation.finetune`). The engine owns everything else, the same way for every client:

- the step budget (and an optional time budget, `Plan.max_seconds`), and fusing steps into
  dispatches up to the next evaluation or checkpoint;
- stopping: a `StopSignal` (a widget's Stop button, early stopping), Ctrl-C or SIGTERM ends
  training at the next dispatch with a checkpoint; a second signal interrupts;
- the divergence policy: a non-finite loss, a loss `EXPLODED` times its first value, or
  non-finite weights about to be checkpointed, stop training, keep the last good checkpoint and raise `TrainingDiverged` with the same advice for
  every client; a diverged model is never checkpointed, saved or scored;
- checkpoints every `Plan.checkpoint_every` steps and on every exit, restored strictly on resume
  (a checkpoint of another model is a clear error, not a half-loaded model);
- evaluation and early stopping on ``val_loss`` (or the plan's `monitor`);
- events (start, steps with throughput and ETA, evaluations, checkpoints, end) to reporters and
  to the run directory's ``metrics.jsonl``, the history, and ``summary.json``.

>>> outcome = run(trainee, Plan(total_steps=100, checkpoint_every=50), Job("demo", 1000),
...               run_dir=RunDir.create("runs/demo", overwrite=True))      # doctest: +SKIP
"""

from __future__ import annotations

import collections
import contextlib
import math
import signal
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from lmkit.engine.checkpoint import Checkpoint, all_finite
from lmkit.engine.events import (CheckpointEvent, EndEvent, EvalEvent, Event, Reporter,
                                 StartEvent, StepEvent, StopSignal, history_record)
from lmkit.engine.phases import Phases
from lmkit.engine.reporters import JsonlReporter
from lmkit.engine.rundir import CHECKPOINT, METRICS, SUMMARY, RunDir
from lmkit.engine.tracking import open_trackers
from lmkit.errors import LmkitWarning, RunWarning, TrainingDiverged

__all__ = ["Trainee", "Plan", "Job", "Outcome", "run", "auto_steps_per_dispatch", "dispatch_steps",
           "auto_eval_every", "TIME_BUDGET"]

#: end reason of a training stopped by `Plan.max_seconds`
TIME_BUDGET = "time_budget"


class Trainee(Protocol):
    """What a client gives the engine: a model being trained, its optimizer and its data.

    Batches must be a pure function of the step (and the seed), so that a resumed training sees
    exactly the batches it would have seen.
    """

    def train(self, step: int, k: int) -> np.ndarray:
        """Take optimizer steps ``step + 1 .. step + k``; return their `k` losses."""

    def evaluate(self) -> dict[str, float]:
        """Validation metrics named ``val_*`` (``{}`` when the client has no validation data)."""

    def learning_rate(self, step: int) -> float:
        """The learning rate of optimizer step `step` (1-based), for progress reports."""

    def model_arrays(self) -> list[np.ndarray]:
        """The model's variables (trainable, then non-trainable) as host arrays."""

    def optimizer_arrays(self) -> list[np.ndarray]:
        """The optimizer's slots as host arrays."""

    def restore(self, model: list[np.ndarray], optimizer: list[np.ndarray], source: str) -> None:
        """Load a checkpoint's arrays; a mismatch raises `RunError` naming the weight."""


@dataclass(frozen=True)
class Plan:
    """When things happen: the budget and the cadence of dispatches, evaluations, checkpoints."""

    total_steps: int
    checkpoint_every: int
    eval_every: int | None = None
    steps_per_dispatch: int = 1
    early_stopping: int | None = None
    tokens_per_step: float = 0.0
    steps_per_epoch: float = 1.0
    #: seconds of training (compilation included) to stop within, with reason `TIME_BUDGET`:
    #: each dispatch takes only the steps that fit at the last dispatch's pace (a compilation
    #: inside the last one can still pass it); None: no time limit. The schedule still spans
    #: `total_steps`: a warning says so when the budget will stop training before it ends
    max_seconds: float | None = None
    #: the evaluation metric early stopping watches, and whether higher is better (a fine-tuning
    #: that scores its task while training watches e.g. ``val_bleu``)
    monitor: str = "val_loss"
    higher_is_better: bool = False


@dataclass
class Job:
    """What is trained, for events and the summary; and the client's advice on divergence."""

    name: str
    parameters: int
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    #: how to try again after divergence, e.g. "then resume with `lmkit train --resume DIR`"
    retry: str = ""
    #: the learning rate named in the divergence advice
    learning_rate: float | None = None
    #: where the steps run, for the start event (a distributed client names its mesh, e.g.
    #: "4 devices (data 4), 1 process"); empty: the backend's devices
    devices: str = ""
    #: what is trained on, as name -> fingerprint (``{"data": corpus.fingerprint()}``): kept in
    #: each checkpoint, and a resume on other data is warned
    data: dict[str, str] = field(default_factory=dict)
    #: the loss is a mean negative log-likelihood per token, so its exponential is a perplexity
    #: (a classifier's loss per example is not)
    token_loss: bool = True
    #: where the wall time goes (`lmkit.engine.phases`): the client times its own phases (data,
    #: build, saving) in it, the loop its dispatches, evaluations and checkpoints; the summary
    #: keeps them as ``phases_s``
    phases: Phases = field(default_factory=Phases)


@dataclass
class Outcome:
    """How a training ended."""

    step: int
    reason: str
    elapsed: float
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def auto_eval_every(total_steps: int, evaluations: int = 10) -> int:
    """The evaluation interval that gives about `evaluations` points on a curve of `total_steps`
    (a multiple of 10 from 100 steps on, so dispatches stay fused).

    >>> auto_eval_every(400), auto_eval_every(2000), auto_eval_every(35)
    (40, 200, 3)
    """
    every = max(1, total_steps // evaluations)
    return every - every % 10 if every >= 10 else every


def auto_steps_per_dispatch(*intervals: int) -> int:
    """The most steps (up to 10) to fuse into one dispatch so that dispatches end on every
    multiple of `intervals` (evaluation, checkpoint): nearly every dispatch then has the same
    shape and compiles once."""
    period = math.gcd(*intervals)
    return next(k for k in (10, 8, 5, 4, 2, 1) if period % k == 0)


def dispatch_steps(plan: Plan, step: int) -> int:
    """How many steps the dispatch after `step` fuses: up to `Plan.steps_per_dispatch`, ending
    at the next evaluation, checkpoint or the last step (before any time budget cuts it). A
    client may compile the first dispatch ahead with it (``dispatch_steps(plan, 0)``).

    >>> dispatch_steps(Plan(total_steps=300, checkpoint_every=500, eval_every=50,
    ...                     steps_per_dispatch=10), 0)
    10
    >>> dispatch_steps(Plan(total_steps=8, checkpoint_every=4, steps_per_dispatch=10), 2)
    2
    """
    boundaries = [plan.total_steps, (step // plan.checkpoint_every + 1) * plan.checkpoint_every]
    if plan.eval_every:
        boundaries.append((step // plan.eval_every + 1) * plan.eval_every)
    return min(plan.steps_per_dispatch, *(b - step for b in boundaries))


class _Emitter:
    """Sends events to the reporters and keeps the history rows."""

    def __init__(self, reporters: list[Reporter], history: list[dict[str, Any]]) -> None:
        self.reporters, self.history = reporters, history

    def __call__(self, event: Event) -> None:
        record = history_record(event.to_dict())
        if record is not None:
            self.history.append(record)
        for reporter in self.reporters:
            reporter(event)


@contextlib.contextmanager
def _signals_request_stop(stop: StopSignal) -> Iterator[None]:
    """Ctrl-C (SIGINT, a kernel interrupt) and SIGTERM (`docker stop`, a scheduler's preemption,
    `timeout`) ask for a clean stop at the next dispatch, with a checkpoint; a second one of
    either interrupts at once (`KeyboardInterrupt`, after keeping what can be kept)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set("terminated" if signum == signal.SIGTERM else "interrupted")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _devices() -> tuple[str, str]:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return backend, ", ".join(f"{d.platform}:{d.id}" for d in jax.devices())
    if backend == "torch":
        import torch

        return backend, "cuda:0" if torch.cuda.is_available() else "cpu"
    return backend, backend


def run(
    trainee: Trainee,
    plan: Plan,
    job: Job,
    *,
    run_dir: RunDir | None = None,
    reporters: list[Reporter] | None = None,
    stop: StopSignal | None = None,
    resume: bool = False,
    finish: Callable[[Outcome], dict[str, Any]] | None = None,
    writes: bool = True,
    begin: Callable[[], None] | None = None,
) -> Outcome:
    """Train `trainee` according to `plan`; return how it ended.

    With a `run_dir`, events are appended to its ``metrics.jsonl``, checkpoints go to its
    ``checkpoint.npz`` and the summary to ``summary.json``; ``resume=True`` continues from its
    checkpoint. `begin` runs once that checkpoint is restored and before anything is written
    (the client writes its own files then: a refused resume leaves the run as it was). `finish`
    runs after the final checkpoint of a training that did not diverge (save the model, generate
    a sample) and returns extra summary fields. ``writes=False`` (the
    processes of a distributed run but the first) reads `run_dir` to resume and writes nothing;
    it still takes the trainee's arrays at every checkpoint, as gathering them may need every
    process. The trackers ``job.config["report"]`` names (`lmkit.engine.tracking`) receive the
    events too, from the process that writes.
    """
    stop = stop or StopSignal()
    # the config's `report` trackers, checked (a missing library) before anything is written
    trackers = open_trackers(job.config, run_dir, job.name) if writes else []
    start, engine_state = 0, {"best_val_loss": None, "bad_evals": 0}
    history: list[dict[str, Any]] = []
    if resume:
        if run_dir is None:
            raise ValueError("resume=True needs the run directory to resume from")
        ckpt = run_dir.load_checkpoint()
        trainee.restore(ckpt.model, ckpt.optimizer, str(run_dir.file(CHECKPOINT)))
        start, engine_state = ckpt.step, {**engine_state, **ckpt.trainer}
        _warn_changed_data(ckpt.trainer.get("data") or {}, job.data, start)
        # a training killed after this checkpoint logged steps that will now be taken again
        history = [r for r in run_dir.history() if r["step"] <= start]
    if begin is not None:
        begin()
    writer = run_dir if writes else None
    log = JsonlReporter(writer.file(METRICS)) if writer is not None else None
    emit = _Emitter([*([log] if log else []), *(reporters or []), *trackers], history)
    try:
        return _loop(trainee, plan, job, writer, emit, stop, start, engine_state, finish,
                     gathers=run_dir is not None)
    finally:
        for reporter in [*([log] if log else []), *trackers]:
            reporter.close()


def _warn_changed_data(before: dict[str, str], now: dict[str, str], step: int) -> None:
    """Warn when a resumed training reads other data than its checkpoint was trained on."""
    changed = [name for name in now if name in before and before[name] != now[name]]
    changed += [name for name in before if name not in now]
    if changed:
        warnings.warn(f"resuming from step {step} on other data than the run was trained on: "
                      f"{', '.join(changed)} changed (another file, other contents or encoding); "
                      f"the training continues on the new data", RunWarning, stacklevel=3)


def _warn_schedule_outlasts_budget(plan: Plan, trainee: Trainee, step: int, elapsed: float,
                                   per_step: float) -> None:
    """Warn when `Plan.max_seconds`, at the pace measured after compilation, will stop training
    before the learning-rate schedule, which spans `Plan.total_steps`, ends: a warm-up or decay
    longer than the budget would otherwise pass unseen. The schedule is not stretched to fit:
    the same config then trains the same steps on any machine."""
    total = plan.total_steps
    last = step + int(max(0.0, (plan.max_seconds or 0.0) - elapsed) // per_step)
    if last >= total:
        return
    rate, final = trainee.learning_rate(max(last, 1)), trainee.learning_rate(total)
    if math.isclose(rate, final, rel_tol=0.01):  # a constant rate, or a decay as good as ended
        return
    where = "still warming up" if trainee.learning_rate(last + 1) > rate else "before its decay ends"
    warnings.warn(f"max_seconds={plan.max_seconds:g} will stop training at about step {last:,}, {where}: "
                  f"the learning-rate schedule spans all {total:,} steps (max_steps or epochs), so the "
                  f"rate will be {rate:.3g} there, not its final {final:.3g}. For the schedule to end "
                  f"with the time budget, set max_steps to about {last:,}", LmkitWarning, stacklevel=4)


def _loop(trainee: Trainee, plan: Plan, job: Job, run_dir: RunDir | None, emit: _Emitter,
          stop: StopSignal, start: int, engine_state: dict[str, Any],
          finish: Callable[[Outcome], dict[str, Any]] | None, gathers: bool) -> Outcome:
    total = plan.total_steps
    backend, devices = _devices()
    devices = job.devices or devices
    emit(StartEvent(str(run_dir.path) if run_dir else job.name, total, start, job.name,
                    job.parameters, backend, devices, int(plan.tokens_per_step), job.config, plan.monitor,
                    job.token_loss))

    step, last_ckpt = start, start
    diverged: str | None = None

    def checkpoint() -> bool:
        """Write a checkpoint of `step`; False (and nothing written) when a weight is not finite."""
        with job.phases("checkpoints"):
            return _checkpoint()

    def _checkpoint() -> bool:
        nonlocal last_ckpt
        model = trainee.model_arrays()
        if not all_finite(model):
            return False
        # every process of a run gathers the slots, writer or not: with slots split over
        # processes the gather is a collective that process 0 cannot finish alone
        slots = trainee.optimizer_arrays() if gathers else []
        if run_dir is not None:
            path = run_dir.save_checkpoint(Checkpoint(step, model, slots,
                                                      {**engine_state, "name": job.name,
                                                       "data": job.data}))
            emit(CheckpointEvent(step, str(path)))
        last_ckpt = step
        return True

    t0 = time.monotonic()
    pace = Pace()
    last_step_time: float | None = None
    out_of_time = False
    budget_unchecked = plan.max_seconds is not None
    last_eval: dict[str, float] = {}
    with _signals_request_stop(stop):
        try:
            while step < total and not stop.is_set():
                t_chunk = time.monotonic()
                k = dispatch_steps(plan, step)
                if plan.max_seconds is not None:
                    # as many steps as fit in what is left, at the last dispatch's pace
                    left = plan.max_seconds - (t_chunk - t0)
                    fits = k if last_step_time is None else int(left // last_step_time)
                    if left <= 0 or fits < 1:
                        # not `stop.set()`: the caller's signal is shared by a suite's tasks
                        out_of_time = True
                        break
                    k = min(k, fits)
                # the first dispatch compiles the step: its own phase
                with job.phases("training" if step > start else "first dispatch"):
                    losses = np.asarray(trainee.train(step, k), dtype=np.float32)
                diverged = _blown_up(losses, step, engine_state)
                if diverged is not None:
                    break
                step += len(losses)
                now = time.monotonic()
                last_step_time = (now - t_chunk) / len(losses)
                pace.add(last_step_time)
                step_time = pace.per_step
                if budget_unchecked and step_time is not None:  # once, at the pace after compilation
                    budget_unchecked = False
                    _warn_schedule_outlasts_budget(plan, trainee, step, now - t0, step_time)
                emit(StepEvent(step, total, step / plan.steps_per_epoch, float(losses[-1]),
                               trainee.learning_rate(step),
                               None if step_time is None else plan.tokens_per_step / step_time,
                               now - t0, None if step_time is None else (total - step) * step_time))
                if plan.eval_every and (step % plan.eval_every == 0 or step == total):
                    with job.phases("evaluation"):
                        metrics = trainee.evaluate()
                    if metrics:
                        # the summary says which step its val_* figures belong to
                        last_eval = {**metrics, "eval_step": step}
                        emit(EvalEvent(step, metrics))
                        _early_stopping(plan, engine_state, metrics, stop)
                if step % plan.checkpoint_every == 0 and step != last_ckpt and not checkpoint():
                    diverged = f"the weights became non-finite by step {step}"
                    break
            if diverged is None and step != last_ckpt and not checkpoint():
                diverged = f"the weights became non-finite by step {step}"
        except BaseException:
            # Keep what was trained (a second Ctrl-C, an out-of-memory, a bug in a plugin).
            with contextlib.suppress(Exception):
                if step != last_ckpt:
                    checkpoint()
            raise

    elapsed = time.monotonic() - t0
    if diverged is not None:
        outcome = Outcome(step, "diverged", elapsed, last_eval, emit.history)
        outcome.summary = _summary(run_dir, job, outcome, {})
        emit(EndEvent(step, "diverged", elapsed, outcome.summary))
        raise TrainingDiverged(_divergence_message(diverged, job, run_dir, last_ckpt, start))
    reason = (TIME_BUDGET if out_of_time
              else (stop.reason or "stopped") if stop.is_set() else "completed")
    outcome = Outcome(step, reason, elapsed, last_eval, emit.history)
    outcome.summary = _summary(run_dir, job, outcome, finish(outcome) if finish else {})
    emit(EndEvent(step, reason, elapsed, outcome.summary))
    return outcome


class Pace:
    """Seconds per step, as the ETA and the throughput report it: the median of the last
    `window` dispatches after the first. The first dispatch compiles the step (seconds on a CPU),
    so it is left out, and the figures are unknown (None) until a second one is timed; the median
    keeps a later dispatch that compiled another shape (a fine-tuning's pad widths) or waited on
    an evaluation's compilation from swinging the estimate.

    >>> pace = Pace(); pace.add(9.0); pace.per_step is None
    True
    >>> pace.add(0.1); pace.add(0.2); pace.add(5.0); pace.per_step
    0.2
    """

    def __init__(self, window: int = 5) -> None:
        self._dispatches = 0
        self._recent: collections.deque[float] = collections.deque(maxlen=window)

    def add(self, seconds_per_step: float) -> None:
        self._dispatches += 1
        if self._dispatches > 1:
            self._recent.append(seconds_per_step)

    @property
    def per_step(self) -> float | None:
        return statistics.median(self._recent) if self._recent else None


#: a finite loss this many times its first value (or 1, if that was smaller) has blown up: no
#: healthy training comes back from there, and reporting it as "completed" hides the failure.
EXPLODED = 100.0


def _blown_up(losses: np.ndarray, step: int, state: dict[str, Any]) -> str | None:
    """Why the losses of the dispatch after `step` mean divergence, or None.

    The first loss of the training is kept in `state` (saved in checkpoints, so a resumed run
    compares with the same start)."""
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        return f"the training loss became {losses[bad[0]]} at step {step + int(bad[0]) + 1}"
    first = state.setdefault("first_loss", float(losses[0]))
    limit = EXPLODED * max(first, 1.0)
    high = np.flatnonzero(losses > limit)
    if high.size:
        return (f"the training loss blew up to {losses[high[0]]:.4g} at step "
                f"{step + int(high[0]) + 1}, more than {EXPLODED:g}x its first value "
                f"({first:.4g})")
    return None


def _divergence_message(what: str, job: Job, run_dir: RunDir | None, last_ckpt: int,
                        start: int) -> str:
    if run_dir is None:
        kept = "No checkpoint is kept (no run directory was given)."
    elif last_ckpt or start:
        kept = (f"The last good checkpoint (step {last_ckpt}) is kept in "
                f"{run_dir.file(CHECKPOINT)}.")
    else:
        kept = "No checkpoint had been written yet."
    lr = f" (now {job.learning_rate})" if job.learning_rate is not None else ""
    retry = f", {job.retry}" if job.retry and run_dir is not None and (last_ckpt or start) else ""
    return (f"{what}; training stopped. {kept} Try a lower learning_rate{lr} or gradient "
            f"clipping (clipnorm){retry}.")


def _early_stopping(plan: Plan, state: dict[str, Any], metrics: dict[str, float],
                    stop: StopSignal) -> None:
    val = metrics.get(plan.monitor)
    if val is None:
        return
    best = state.get("best_val_loss")  # the best value of `plan.monitor`
    if best is None or (val > best if plan.higher_is_better else val < best):
        state["best_val_loss"], state["bad_evals"] = val, 0
    else:
        state["bad_evals"] = state.get("bad_evals", 0) + 1
        if plan.early_stopping and state["bad_evals"] >= plan.early_stopping:
            stop.set("early_stopping")


def _summary(run_dir: RunDir | None, job: Job, outcome: Outcome,
             extra: dict[str, Any]) -> dict[str, Any]:
    summary = {**job.summary, "steps": outcome.step, "reason": outcome.reason,
               "elapsed_s": round(outcome.elapsed, 3), **outcome.metrics, **extra,
               "phases_s": job.phases.seconds(),
               "finished": datetime.now().isoformat(timespec="seconds")}
    if run_dir is not None:
        run_dir.write_json(SUMMARY, summary)
    return summary
