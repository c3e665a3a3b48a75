"""Sweeps on Optuna: each trial an ordinary lmkit run, pruned from the engine's evaluations.

`sweep` draws a config per trial from the space (`lmkit.sweeps.space`), trains it in
``OUT/trial-NNN`` (a run directory like any other) and reports each evaluation's objective to
Optuna's pruner; a trial the pruner stops ends at its next dispatch with a checkpoint, its
summary's reason ``pruned``. The study lives in a database (default SQLite, ``OUT/sweep.db``):

- a killed sweep started again with the same command loads the study and runs only the trials
  still missing; a trial whose process died is failed once its heartbeat is `GRACE_S` old and
  tried again with the same parameters (Optuna's `RetryFailedTrialCallback`);
- several workers (``workers=W`` here, or processes on other machines given the same
  ``storage`` URL, e.g. PostgreSQL's ``postgresql://user@host/db``) share one study; the
  database hands each trial to one worker.

>>> result = lmkit.sweep("char.toml", "space.toml", trials=20, out="sweeps/char")  # doctest: +SKIP
>>> result.best.params                                                              # doctest: +SKIP
{'learning_rate': 0.0041, 'layers': 2}
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmkit.config import TrainConfig
from lmkit.engine.events import EvalEvent, Event, StopSignal
from lmkit.engine.tracking import mlflow_parent, require
from lmkit.errors import ConfigError, TrainingDiverged, did_you_mean
from lmkit.sweeps.space import Param, check_space, grid_of, overrides_of, read_space

__all__ = ["sweep", "run_worker", "load_sweep", "open_study_of", "SweepResult", "TrialRecord", "TrialStartEvent",
           "TrialEndEvent", "SAMPLERS", "PRUNERS", "PRUNED", "SPEC", "DATABASE"]

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
#: a pruned trial's end reason (its summary.json says so)
PRUNED = "pruned"
#: the sweep's own files in its output folder
SPEC, DATABASE = "sweep.json", "sweep.db"
#: seconds between a running trial's heartbeats, and the silence after which it counts as dead
HEARTBEAT_S, GRACE_S = 2, 6
#: metrics a sweep minimizes unless told otherwise (the others, accuracies, are maximized)
_LOWER_IS_BETTER = ("loss", "perplexity", "bits")


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the study holds it: `state` is complete, pruned, running, failed or waiting."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    run_dir: str
    seconds: float | None = None
    step: int | None = None


@dataclass(frozen=True)
class TrialStartEvent(Event):
    """A trial starts training `params` in `run_dir`."""

    number: int
    params: dict[str, Any]
    run_dir: str
    total: int


@dataclass(frozen=True)
class TrialEndEvent(Event):
    """A trial ended (`trial.state`); `best` is the best finished trial so far."""

    trial: TrialRecord
    best: TrialRecord | None
    done: int
    total: int
    metric: str
    direction: str


@dataclass
class SweepResult:
    """A sweep's trials, best first among the finished ones, and where it is stored."""

    out: Path
    storage: str
    metric: str
    direction: str
    trials: list[TrialRecord] = field(default_factory=list)

    @property
    def best(self) -> TrialRecord | None:
        """The complete trial with the best objective (None before one finished)."""
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        pick = min if self.direction == "minimize" else max
        return pick(done, key=lambda t: t.value) if done else None  # type: ignore[arg-type, return-value]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def table(self) -> str:
        """The trials as a text table, the best first."""
        keys = sorted({k for t in self.trials for k in t.params})
        ranked = sorted(self.trials, key=lambda t: (t.value is None, _sign(self.direction) * (t.value or 0)))
        head = ["#", "state", self.metric, "steps", *keys]
        rows = [[str(t.number), t.state, "" if t.value is None else f"{t.value:.4f}",
                 "" if t.step is None else str(t.step), *(_shown(t.params.get(k)) for k in keys)]
                for t in ranked]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                         for r in [head, *rows])


def _sign(direction: str) -> int:
    return 1 if direction == "minimize" else -1


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def _direction(metric: str, direction: str | None) -> str:
    if direction is not None:
        if direction not in ("minimize", "maximize"):
            raise ConfigError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
        return direction
    return "minimize" if any(w in metric for w in _LOWER_IS_BETTER) else "maximize"


def _check_metric(metric: str, config: TrainConfig) -> None:
    """The objective must be a figure the trials' evaluations produce."""
    produced = {"val_loss", *(f"val_{m}" for m in config.metrics)}
    if metric not in produced:
        raise ConfigError(f"no evaluation produces the metric {metric!r} to optimize"
                          f"{did_you_mean(metric, produced)}; the config's evaluations give "
                          f"{', '.join(sorted(produced))} (config key 'metrics' adds others)")


def _storage(url: str) -> Any:
    """Optuna's database storage, with heartbeats, and the reason when it cannot be opened."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):  # workers wait for each other's writes instead of failing
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    # a dead trial is tried again with its parameters (Optuna >= 4.9 names the callback anew)
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    try:
        with _quiet():
            if retry is not None:
                kwargs["heartbeat_stale_trial_callback"] = retry(max_retry=2)
            else:
                kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=2)
            return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S, **kwargs)
    except Exception as e:  # a bad URL, a server that does not answer, a folder that is missing
        raise ConfigError(f"cannot open the sweep's storage {url!r}: {type(e).__name__}: "
                          f"{str(e).splitlines()[0][:300]}. Give a reachable database URL: "
                          f"sqlite:///path/sweep.db (the default, in --out) or "
                          f"postgresql://user@host/db") from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Optuna's heartbeats are marked experimental; its warnings say nothing to a user."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _sampler(name: str, params: list[Param], seed: int) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_of(params), seed=seed)
    raise ConfigError(f"sampler {name!r} is not one of {', '.join(SAMPLERS)}"
                      f"{did_you_mean(name, SAMPLERS)}")


def _pruner(name: str, config: Any) -> Any:
    import optuna

    if name == "median":  # two trials' curves before any is judged, each after its first evaluation
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":  # a fine-tuning's evaluations are its scorings (score_every)
        every = getattr(config, "eval_every", None) or getattr(config, "score_every", None) or 1
        return optuna.pruners.HyperbandPruner(min_resource=max(1, every),
                                              max_resource=config.max_steps or "auto")
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"pruner {name!r} is not one of {', '.join(PRUNERS)}"
                      f"{did_you_mean(name, PRUNERS)}")


class _Pruning:
    """A training reporter: each evaluation's objective goes to the trial; a trial the pruner
    judges bad is asked to stop (reason `PRUNED`)."""

    def __init__(self, trial: Any, metric: str, stop: StopSignal) -> None:
        self.trial, self.metric, self.stop = trial, metric, stop

    def __call__(self, event: Event) -> None:
        if isinstance(event, EvalEvent) and self.metric in event.metrics:
            self.trial.report(event.metrics[self.metric], event.step)
            if self.trial.should_prune():
                self.stop.set(PRUNED)


@dataclass
class _Spec:
    """Everything a worker needs, as JSON (``OUT/sweep.json``): the base config, the space,
    the objective, the study's storage and its sampler and pruner."""

    config: dict[str, Any]
    space: list[dict[str, Any]]
    trials: int
    out: str
    storage: str
    metric: str
    direction: str
    sampler: str
    pruner: str
    seed: int
    #: a sweep of fine-tunings: {"model": ..., "task": ..., "data": ...}; None: of trainings
    finetune: dict[str, Any] | None = None

    @property
    def params(self) -> list[Param]:
        return [Param(**{**p, "values": tuple(p["values"])}) for p in self.space]

    @property
    def base(self) -> Any:
        """The config every trial starts from: a `TrainConfig`, or a fine-tuning's `EvalConfig`."""
        if self.finetune is not None:
            from lmkit.config import EvalConfig

            return EvalConfig.from_dict(self.config)
        return TrainConfig.from_dict(self.config)


def _open_study(spec: _Spec) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = spec.base
    return optuna.create_study(
        study_name=Path(spec.out).name or "lmkit-sweep", storage=_storage(spec.storage),
        sampler=_sampler(spec.sampler, spec.params, spec.seed), pruner=_pruner(spec.pruner, base),
        direction=spec.direction, load_if_exists=True)


def _record(trial: Any) -> TrialRecord:
    state = trial.state.name.lower()
    state = {"fail": "failed"}.get(state, state)
    attrs = trial.user_attrs
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
        if trial.datetime_complete and trial.datetime_start else None
    return TrialRecord(trial.number, state, trial.value, dict(trial.params), attrs.get("run_dir", ""),
                       seconds, attrs.get("steps", trial.last_step))


def _counted(trial: Any) -> bool:
    """A trial that used up one of the sweep's trials: finished, pruned, or diverged."""
    import optuna

    states = optuna.trial.TrialState
    return trial.state in (states.COMPLETE, states.PRUNED) or bool(trial.user_attrs.get("diverged"))


def _objective(spec: _Spec, reporters: Sequence[Callable[[Event], None]],
               train: Callable[..., Any], ran: list[int]) -> Callable[[Any], float]:
    """The trial function; each trial's number is appended to `ran` (this worker's trials)."""
    base, params, out = spec.base, spec.params, Path(spec.out)

    def objective(trial: Any) -> float:
        ran.append(trial.number)
        values = {p.key: p.suggest(trial) for p in params}
        run_dir = out / f"trial-{trial.number:03d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", os.getpid())
        _emit(reporters, TrialStartEvent(trial.number, values, str(run_dir), spec.trials))
        if spec.finetune is not None:
            return _finetune_trial(spec, base.replace(**values, checkpoint_dir=str(run_dir)),
                                   trial, run_dir)
        cfg = base.replace(**overrides_of(values, base), out=str(run_dir), overwrite=True)
        stop = StopSignal()
        try:
            run = train(cfg, reporters=[_Pruning(trial, spec.metric, stop)], stop=stop)
        except TrainingDiverged:
            trial.set_user_attr("diverged", True)
            raise
        trial.set_user_attr("steps", run.summary.get("steps"))
        _check_ended(run.summary.get("reason"), run.summary.get("steps"))
        if spec.metric not in run.summary:
            has = ", ".join(k for k in run.summary if k.startswith("val_")) or "no val_* figure"
            raise ConfigError(f"trial {trial.number} ({run_dir}) ended without {spec.metric!r} "
                              f"in its summary (it has {has}); does the training have "
                              f"validation data (validation_split, validation_data)?")
        return float(run.summary[spec.metric])

    return objective


def _check_ended(reason: str | None, steps: int | None) -> None:
    """A trial's training that did not run to its end: pruned (Optuna marks the trial so; its
    folder is kept, its summary.json says pruned) or interrupted (the sweep stops; the trial is
    failed and tried again when the sweep resumes)."""
    import optuna

    if reason == PRUNED:
        raise optuna.TrialPruned(f"pruned at step {steps}")
    if reason in ("interrupted", "terminated"):
        raise KeyboardInterrupt


def _finetune_trial(spec: _Spec, cfg: Any, trial: Any, run_dir: Path) -> float:
    """Fine-tune and score one trial (`lmkit.evaluate`); its folder holds the checkpoint, the
    events and ``metrics.json``. The objective is one of the task's metrics; with the option
    ``score_every`` each scoring while fine-tuning (``val_<metric>``) goes to the pruner."""
    from lmkit.evaluation import evaluate

    target = spec.finetune or {}
    stop = StopSignal()
    try:
        result = evaluate(target["model"], task=target["task"], data=target.get("data"), config=cfg,
                          reporters=[_Pruning(trial, f"val_{spec.metric}", stop)], stop=stop)
    except TrainingDiverged:
        trial.set_user_attr("diverged", True)
        raise
    result.save(run_dir)  # also a pruned trial's: the scores of the weights it had
    trial.set_user_attr("steps", result.training.get("steps"))
    _check_ended(result.training.get("reason"), result.training.get("steps"))
    if spec.metric not in result.metrics:
        raise ConfigError(f"the task {target['task']} scores no metric {spec.metric!r}"
                          f"{did_you_mean(spec.metric, result.metrics)}; it gives "
                          f"{', '.join(result.metrics)} (--metric)")
    return float(result.metrics[spec.metric])


def _emit(reporters: Sequence[Callable[[Event], None]], event: Event) -> None:
    for report in reporters:
        report(event)


def _work(spec: _Spec, reporters: Sequence[Callable[[Event], None]]) -> None:
    """Run trials until the study holds `spec.trials` counted ones (this worker's and others')."""
    import optuna

    from lmkit.training.run import train

    study = _open_study(spec)
    ran: list[int] = []
    objective = _objective(spec, reporters, train, ran)
    while True:
        with _quiet():
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(_counted(t) for t in trials)
        running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
        if done >= spec.trials:
            return
        if done + running >= spec.trials:  # the last ones are running elsewhere (or dying)
            time.sleep(HEARTBEAT_S)
            continue
        ran.clear()
        study.optimize(objective, n_trials=1, catch=(TrainingDiverged,))
        now = study.get_trials(deepcopy=False)
        best = _result(spec, study).best
        for t in (t for t in now if t.number in ran):
            _emit(reporters, TrialEndEvent(_record(t), best, sum(map(_counted, now)), spec.trials,
                                           spec.metric, spec.direction))


def _result(spec: _Spec, study: Any) -> SweepResult:
    return SweepResult(Path(spec.out), spec.storage, spec.metric, spec.direction,
                       [_record(t) for t in study.get_trials(deepcopy=False)])


def sweep(
    config: Any, space: str | Path | Mapping[str, Any], *, trials: int, out: str | Path,
    storage: str | None = None, workers: int = 1, metric: str = "val_loss",
    direction: str | None = None, sampler: str = "tpe", pruner: str = "median", seed: int = 0,
    reporters: Sequence[Callable[[Event], None]] = (), finetune: Mapping[str, Any] | None = None,
) -> SweepResult:
    """Run (or resume) a sweep of `trials` trials over `space` on the training `config` (a
    `TrainConfig`).

    Each trial trains ``config`` with the trial's values in ``OUT/trial-NNN``; the study is in
    `storage` (default ``sqlite:///OUT/sweep.db``); `workers` processes share it (this one and
    ``workers - 1`` started here). `metric` is any validation figure the config's evaluations
    give (``val_loss``, ``val_accuracy``...), minimized when it is a loss, perplexity or bits,
    else maximized (`direction` overrides). `reporters` receive `TrialStartEvent` and
    `TrialEndEvent` of this process's trials.

    With ``finetune={"model": RUN_OR_CHECKPOINT, "task": "glue/sst2", "data": PATH}`` each
    trial is a fine-tuning instead (`lmkit.evaluate`; `config` is then an `EvalConfig`, the
    space varies its options), and `metric` one of the task's scores (``accuracy``, ``f1``...).
    """
    require("optuna", "a sweep")
    if trials < 1:
        raise ConfigError(f"a sweep needs at least 1 trial, got trials={trials}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    params = read_space(space)
    check_space(params, config)
    if finetune is None:
        _check_metric(metric, config)
    elif not {"model", "task"} <= set(finetune):
        raise ConfigError(f"finetune needs 'model' and 'task' (and 'data'), got {dict(finetune)}")
    if "mlflow" in config.report:
        require("mlflow", "report = ['mlflow']")
    _sampler(sampler, params, seed), _pruner(pruner, config)  # a typo fails before anything runs
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # only the keys the user set: each trial's architecture then fills in its own defaults
    given = {k: v for k, v in config.to_dict().items() if k in config.given}
    spec = _Spec(given, [{**asdict(p), "values": list(p.values)} for p in params],
                 trials, str(out), storage or f"sqlite:///{(out / DATABASE).resolve()}", metric,
                 _direction(metric, direction), sampler, pruner, seed,
                 None if finetune is None else {k: None if v is None else str(v)
                                                for k, v in finetune.items()})
    _open_study(spec)  # an unreachable storage fails here, once
    (out / SPEC).write_text(json.dumps(asdict(spec), indent=1, default=str), encoding="utf-8")
    helpers = [subprocess.Popen([sys.executable, "-m", "lmkit.sweeps.worker", str(out / SPEC)])
               for _ in range(workers - 1)]
    try:
        with _tracked_parent(spec):
            _work(spec, reporters)
    finally:
        for helper in helpers:
            helper.wait()
    return load_sweep(out)


def _tracked_parent(spec: _Spec) -> Any:
    """With ``report = ["mlflow"]``: one MLflow parent run for the sweep, the trials its children."""
    base = spec.base
    if "mlflow" not in base.report:
        return contextlib.nullcontext()
    import mlflow

    client = mlflow.MlflowClient(base.tracking_uri)
    found = client.get_experiment_by_name(base.experiment)
    experiment = found.experiment_id if found else client.create_experiment(base.experiment)
    parent = client.create_run(experiment, run_name=f"sweep {Path(spec.out).name}",
                               tags={"lmkit.sweep": spec.out})
    client.log_param(parent.info.run_id, "trials", spec.trials)
    client.log_param(parent.info.run_id, "metric", spec.metric)

    @contextlib.contextmanager
    def scope() -> Any:
        try:
            with mlflow_parent(parent.info.run_id):
                yield
        finally:
            client.set_terminated(parent.info.run_id)

    return scope()


def run_worker(spec_path: str | Path) -> None:
    """One more worker of the sweep whose ``sweep.json`` is `spec_path` (``python -m
    lmkit.sweeps.worker``)."""
    raw = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    _work(_Spec(**raw), ())


def _spec_of(out: str | Path) -> _Spec:
    path = Path(out) / SPEC
    if not path.is_file():
        raise ConfigError(f"{out} holds no sweep ({SPEC} is missing); give the --out folder of "
                          f"`lmkit sweep`")
    require("optuna", "a sweep")
    return _Spec(**json.loads(path.read_text(encoding="utf-8")))


def open_study_of(out: str | Path) -> Any:
    """The Optuna study of the sweep in `out`."""
    return _open_study(_spec_of(out))


def load_sweep(out: str | Path) -> SweepResult:
    """The sweep in `out` as its study holds it now (a finished, running or killed sweep)."""
    spec = _spec_of(out)
    return _result(spec, _open_study(spec))
