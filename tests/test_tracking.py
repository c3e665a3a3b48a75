"""Tracking reporters: TensorBoard files read back with TensorBoard's own reader, MLflow runs with
MLflow's client, for a training and a fine-tuning; a missing library or a typo says what to do."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lmkit
from lmkit.errors import ConfigError

CORPUS = Path(__file__).parent / "fixtures" / "core" / "shakespeare_30k.txt"
GLUE = Path(__file__).parent / "fixtures" / "eval" / "glue"
TINY = dict(data=str(CORPUS), arch="gpt", layers=1, heads=2, embed_dim=32, seq_len=32,
            batch_size=8, max_steps=12, eval_every=4, eval_batches=2, checkpoint_every=4,
            warmup_steps=2, learning_rate=3e-3, sample_tokens=20)


def logged(run_dir: Path) -> tuple[dict[str, dict[int, float]], dict[str, Any]]:
    """The run's own record (metrics.jsonl): each figure by step, and the end event."""
    figures: dict[str, dict[int, float]] = {}
    end: dict[str, Any] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "step":
            for k in ("loss", "learning_rate"):
                figures.setdefault(k, {})[event["step"]] = event[k]
        elif event["event"] == "eval":
            for k, v in event["metrics"].items():
                figures.setdefault(k, {})[event["step"]] = v
        elif event["event"] == "end":
            end = event
    return figures, end


@pytest.mark.slow
def test_a_tracked_training_reads_back_exactly_in_tensorboard_and_mlflow(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    monkeypatch.chdir(tmp_path)  # MLflow keeps artifacts in ./mlruns beside a SQLite store
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = lmkit.train(**TINY, out=str(tmp_path / "run"), report=["tensorboard", "mlflow"],
                      tracking_uri=uri, experiment="tiny", reporters=[])
    figures, end = logged(run.dir)
    assert set(figures["loss"]) == {4, 8, 12} and set(figures["val_loss"]) == {4, 8, 12}

    board = EventAccumulator(str(run.dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    board.Reload()
    for name, by_step in figures.items():
        tag = f"train/{name}" if name in ("loss", "learning_rate") else f"val/{name.removeprefix('val_')}"
        read = {e.step: e.value for e in board.Scalars(tag)}
        assert read == {s: np.float32(v) for s, v in by_step.items()}, tag
    sample = board.Tensors("sample")[0]
    assert tensor_util.make_ndarray(sample.tensor_proto).item().decode() == end["summary"]["sample"]
    assert "_hparams_/session_start_info" in board.Tags()["tensors"]

    client = MlflowClient(uri)
    [tracked] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert tracked.info.status == "FINISHED"
    assert tracked.data.params["learning_rate"] == "0.003"
    assert tracked.data.params["arch"] == "gpt" and tracked.data.params["layers"] == "1"
    for name, by_step in figures.items():
        history = {m.step: m.value for m in client.get_metric_history(tracked.info.run_id, name)}
        assert history == pytest.approx(by_step, rel=1e-12), name
    assert tracked.data.metrics["final_val_loss"] == pytest.approx(end["summary"]["val_loss"])
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id)}
    assert {"config.toml", "summary.json", "model.keras", "sample.txt"} <= artifacts
    local = client.download_artifacts(tracked.info.run_id, "config.toml", str(tmp_path))
    assert Path(local).read_text() == (run.dir / "config.toml").read_text()


@pytest.mark.slow
def test_fine_tuning_is_tracked_like_a_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lmkit.evaluate("scratch", task="glue/sst2", data=GLUE, embed_dim=16, units=16,
                   vocab_size=400, max_length=16, batch_size=16, max_steps=6, log_every=2,
                   checkpoint_dir=str(tmp_path / "ft"), report=["mlflow"], tracking_uri=uri)
    client = MlflowClient(uri)
    [tracked] = client.search_runs([client.get_experiment_by_name("lmkit").experiment_id])
    losses = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    steps = {e["step"]: e["loss"] for e in losses if e["event"] == "step"}
    history = {m.step: m.value for m in client.get_metric_history(tracked.info.run_id, "loss")}
    assert history == pytest.approx(steps) and sorted(history) == [2, 4, 6]
    assert tracked.data.params["max_length"] == "16"
    assert "summary.json" in {a.path for a in client.list_artifacts(tracked.info.run_id)}


def test_a_tracker_name_with_a_typo_suggests_the_right_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'tensorbord'.*did you mean 'tensorboard'"):
        lmkit.train(**TINY, out=str(tmp_path / "run"), report=["tensorbord"], reporters=[])
    assert not (tmp_path / "run").exists()  # refused with the config, before anything ran
    with pytest.raises(ConfigError, match="'mlfow'.*did you mean 'mlflow'"):
        lmkit.evaluate("scratch", task="glue/sst2", data=GLUE, report=["mlfow"])


def test_a_missing_tracking_library_names_the_extra_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails as if absent
    with pytest.raises(ConfigError, match=r"needs the 'mlflow' package.*pip install 'lmkit\[track\]'"):
        lmkit.train(**TINY, out=str(tmp_path / "run"), report=["mlflow"], reporters=[])
    assert not (tmp_path / "run").exists()  # said with the config, before the data was read


@pytest.mark.slow
def test_a_sweep_is_an_mlflow_parent_run_with_its_trials_as_children(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow keeps artifacts in ./mlruns beside a SQLite store
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_config = Path(__file__).parent / "fixtures" / "sweep" / "tiny.toml"
    result = lmkit.sweep(sweep_config, {"units": [16, 24]}, trials=2, out=tmp_path / "s",
                         sampler="grid", report=["mlflow"], tracking_uri=uri,
                         experiment="swept", data=str(CORPUS))
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("swept").experiment_id])
    [parent] = [r for r in runs if "lmkit.sweep" in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["units"] for r in children) == ["16", "24"]
    assert {r.data.tags["lmkit.run_dir"] for r in children} == {t.run_dir for t in result.trials}
