"""Experiment trackers as reporters: TensorBoard event files and MLflow runs.

A config's ``report = ["tensorboard", "mlflow"]`` adds these reporters to a training or a
fine-tuning (the engine opens them, `open_trackers`), so every client and every sweep trial is
tracked the same way. They only render events: the learning rate, losses and validation metrics
of `StepEvent`/`EvalEvent`, the config of `StartEvent` as hyperparameters, and at the end the
summary, the final sample and the run directory's files. The libraries are optional
(``pip install 'lmkit[track]'``).

>>> run = lmkit.train(max_steps=50, report=["tensorboard"])       # doctest: +SKIP
>>> # tensorboard --logdir runs      (each run's events are in <run>/tensorboard/)
"""

from __future__ import annotations

import contextlib
import contextvars
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lmkit._scoped import scoped
from lmkit.engine.events import EndEvent, EvalEvent, Event, StartEvent, StepEvent
from lmkit.engine.rundir import CONFIG, MODEL, SUMMARY, TENSORBOARD, RunDir
from lmkit.config.sections import TRACKERS, missing_library
from lmkit.errors import ConfigError

__all__ = ["TRACKERS", "TensorBoardReporter", "MlflowReporter", "open_trackers",
           "flat_params", "mlflow_parent", "require"]

#: the step figures every tracker logs, under these names
STEP_FIGURES = ("loss", "learning_rate", "tokens_per_second")

#: the MLflow run a new tracked run is a child of (a sweep's parent run), if any
_PARENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("mlflow_parent", default=None)


def require(module: str, feature: str) -> Any:
    """Import an optional library, or say which extra installs it (`ConfigError`)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing_library(module.split(".")[0], feature) from None


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config as flat scalars: tables become dotted keys, lists and None their text.

    >>> flat_params({"arch": "gpt", "model": {"mlp_ratio": 4}, "freeze": [], "x": None})
    {'arch': 'gpt', 'model.mlp_ratio': 4, 'freeze': '[]', 'x': 'none'}
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flat_params(value, f"{prefix}{key}."))
        elif value is None:
            flat[prefix + key] = "none"
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix + key] = value
        else:
            flat[prefix + key] = str(value)
    return flat


def _step_figures(event: StepEvent) -> dict[str, float]:
    return {k: float(getattr(event, k)) for k in STEP_FIGURES if getattr(event, k) is not None}


class TensorBoardReporter:
    """Write TensorBoard event files into `log_dir`: scalars ``train/loss``,
    ``train/learning_rate``, ``train/tokens_per_second``, ``val/<metric>``, the config as
    hyperparameters (the HPARAMS tab, with the final validation metrics) and the final sample
    as text. Needs only the `tensorboard` package (no TensorFlow)."""

    def __init__(self, log_dir: str | Path) -> None:
        writer = require("tensorboard.summary.writer.event_file_writer", "report = ['tensorboard']")
        self.log_dir = Path(log_dir)
        self._writer_class = writer.EventFileWriter
        self._writer: Any = None

    def _put(self, summary: Any, step: int) -> None:
        from tensorboard.compat.proto import event_pb2

        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def _scalars(self, values: Mapping[str, float], step: int) -> None:
        from tensorboard.compat.proto import summary_pb2

        self._put(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=v)
                                             for tag, v in values.items()]), step)

    def __call__(self, event: Event) -> None:
        if isinstance(event, StartEvent):
            from tensorboard.plugins.hparams import summary_v2 as hparams

            if event.start_step == 0:  # a new run (or one overwritten): no stale curves
                shutil.rmtree(self.log_dir, ignore_errors=True)
            self._writer = self._writer_class(str(self.log_dir))
            self._put(hparams.hparams_pb(flat_params(event.config)), event.start_step)
        elif self._writer is None:
            return
        elif isinstance(event, StepEvent):
            self._scalars({f"train/{k}": v for k, v in _step_figures(event).items()}, event.step)
        elif isinstance(event, EvalEvent):
            self._scalars({f"val/{k.removeprefix('val_')}": v for k, v in event.metrics.items()},
                          event.step)
        elif isinstance(event, EndEvent):
            from tensorboard.plugins.text import summary_v2 as text

            if event.summary.get("sample"):
                self._put(text.text_pb("sample", event.summary["sample"]), event.step)
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


#: MLflow's end status of each way a training ends
_STATUS = {"completed": "FINISHED", "early_stopping": "FINISHED", "time_budget": "FINISHED",
           "diverged": "FAILED"}


class MlflowReporter:
    """Log a training as an MLflow run: the config as params, the step figures and validation
    metrics at every step they are reported, and at the end the summary's figures and the run
    directory's config, summary and model file as artifacts.

    `tracking_uri` None is MLflow's own default (``MLFLOW_TRACKING_URI``, else
    ``sqlite:///mlflow.db`` in the working folder). A run started inside `mlflow_parent` is that
    run's child (a sweep's trials)."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "lmkit",
                 run_dir: RunDir | None = None, run_name: str | None = None) -> None:
        require("mlflow", "report = ['mlflow']")
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.run_dir, self.run_name = run_dir, run_name
        self.run_id: str | None = None
        self._client: Any = None
        self._pending: list[Any] = []

    def _start(self, event: StartEvent) -> None:
        import mlflow

        self._client = mlflow.MlflowClient(self.tracking_uri)
        try:
            found = self._client.get_experiment_by_name(self.experiment)
        except Exception as e:  # an unreachable server, an unwritable database
            raise ConfigError(f"cannot reach the MLflow tracking store "
                              f"{self._client.tracking_uri!r}: {e}. Check `tracking_uri` (or "
                              f"MLFLOW_TRACKING_URI)") from None
        experiment = (found.experiment_id if found is not None
                      else self._client.create_experiment(self.experiment))
        parent = _PARENT.get()
        tags = {"lmkit.run_dir": event.run_dir, **({"mlflow.parentRunId": parent} if parent else {})}
        run = self._client.create_run(experiment, run_name=self.run_name or Path(event.run_dir).name,
                                      tags=tags)
        self.run_id = run.info.run_id
        params = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in flat_params(event.config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self._client.log_batch(self.run_id, params=params[i:i + 100])

    def _metrics(self, values: Mapping[str, float], step: int) -> None:
        import mlflow

        stamp = int(time.time() * 1000)
        self._pending += [mlflow.entities.Metric(k, v, stamp, step) for k, v in values.items()]

    def _flush(self) -> None:
        for i in range(0, len(self._pending), 1000):  # MLflow's limit per batch
            self._client.log_batch(self.run_id, metrics=self._pending[i:i + 1000])
        self._pending = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, StartEvent):
            self._start(event)
        elif self.run_id is None:
            return
        elif isinstance(event, StepEvent):
            self._metrics(_step_figures(event), event.step)
        elif isinstance(event, EvalEvent):
            self._metrics(event.metrics, event.step)
            self._flush()  # a live view between evaluations, one write per evaluation
        elif isinstance(event, EndEvent):
            final = {k: float(v) for k, v in event.summary.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "steps"}
            self._metrics({f"final_{k}": v for k, v in final.items()}, event.step)
            self._flush()
            self._artifacts(event)
            self.close(_STATUS.get(event.reason, "KILLED"))

    def _artifacts(self, event: EndEvent) -> None:
        if event.summary.get("sample"):
            self._client.log_text(self.run_id, event.summary["sample"], "sample.txt")
        if self.run_dir is None:
            return
        for name in (CONFIG, SUMMARY, MODEL):
            path = self.run_dir.file(name)
            if path.is_file():
                self._client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "FAILED") -> None:
        """End the MLflow run (a training that raised before its end event `FAILED`)."""
        if self.run_id is not None:
            with contextlib.suppress(Exception):
                self._flush()
            self._client.set_terminated(self.run_id, status)
            self.run_id = None


def open_trackers(config: Mapping[str, Any], run_dir: RunDir | None, name: str) -> list[Any]:
    """The reporters a config's ``report`` names (``[]`` without one), checked before training.

    TensorBoard writes into the run directory's ``tensorboard/`` folder (a job without one, a
    fine-tuning without `checkpoint_dir`: ``runs/tensorboard/<name>-<time>``)."""
    names = list(config.get("report") or [])  # checked with the config (`check_tracking`)
    reporters: list[Any] = []
    if "tensorboard" in names:
        log_dir = (run_dir.file(TENSORBOARD) if run_dir is not None else
                   Path("runs", TENSORBOARD, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"))
        reporters.append(TensorBoardReporter(log_dir))
    if "mlflow" in names:
        reporters.append(MlflowReporter(config.get("tracking_uri"),
                                        config.get("experiment") or "lmkit", run_dir))
    return reporters


@contextlib.contextmanager
def mlflow_parent(run_id: str | None) -> Iterator[None]:
    """MLflow runs tracked inside this block are children of `run_id` (a sweep's trials)."""
    with scoped(_PARENT, run_id):
        yield
