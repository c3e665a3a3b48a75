"""Cross-validation: stratified seeded folds, per-fold scores with mean ± sd, budget, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from lmkit.config import EvalConfig
from lmkit.errors import ConfigError, DataError
from lmkit.evaluation.evaluator import _Job
from lmkit.evaluation.examples import Examples
from lmkit.evaluation.folds import cross_validate, stratified_folds
from lmkit.evaluation.result import EvalResult
from lmkit.evaluation.tasks import get_task

GLUE = Path(__file__).parent / "fixtures" / "eval" / "glue"
LABELS = np.array([0] * 12 + [1] * 30)


def test_folds_partition_the_split_and_keep_each_class_share() -> None:
    folds = stratified_folds(LABELS, 4, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(LABELS)))
    for rows in folds:
        assert np.bincount(LABELS[rows]).tolist() in ([3, 7], [3, 8])  # 12 / 4 and 30 / 4 per fold
    assert [f.tolist() for f in folds] == [f.tolist() for f in stratified_folds(LABELS, 4, seed=3)]
    assert [f.tolist() for f in folds] != [f.tolist() for f in stratified_folds(LABELS, 4, seed=4)]


def test_bad_fold_counts_are_refused() -> None:
    with pytest.raises(ConfigError, match="folds"):
        EvalConfig.from_dict({"folds": 1})
    with pytest.raises(DataError, match="folds=13 is more than the 12 training examples of class 0"):
        stratified_folds(LABELS, 13, seed=0)


def fake_job(tmp_path: Path | None, **options: Any) -> _Job:
    task = get_task("glue/mrpc")
    train = Examples(task, "train", "memory", [f"s{i}" for i in range(len(LABELS))],
                     [f"t{i}" for i in range(len(LABELS))], LABELS.copy())
    cfg = EvalConfig.from_dict({"folds": 3, "seed": 1, **options,
                                **({"checkpoint_dir": str(tmp_path)} if tmp_path else {})})
    return _Job(cfg, None, task, "scratch", train, train, None)


def make_fit(calls: list[Any]) -> Any:
    """A fine-tuning that predicts class 1 except for the first scored example."""
    def fit_and_score(job: _Job, reporters: Any, stop: Any) -> EvalResult:
        calls.append(job)
        predictions = np.ones(len(job.scored), np.int64)
        predictions[0] = 0
        return EvalResult.build(job.task, job.scored.split, "m", np.eye(2)[predictions], job.scored.labels,
                                job.scored, config=job.cfg.to_dict(), training={"steps": 1, "reason": "completed"})
    return fit_and_score


def test_each_fold_is_scored_on_rows_it_did_not_train_on(tmp_path: Path) -> None:
    calls: list[_Job] = []
    result = cross_validate(fake_job(tmp_path), make_fit(calls), (), None)
    assert len(calls) == 3
    for job in calls:
        assert not set(job.scored.text_a) & set(job.train.text_a)
        assert len(job.scored) + len(job.train) == len(LABELS)
    expected = [skm.f1_score(job.scored.labels, np.r_[0, np.ones(len(job.scored) - 1)]) for job in calls]
    assert [f["f1"] for f in result.folds] == pytest.approx(expected)
    assert result.metrics["f1"] == pytest.approx(np.mean(expected))
    assert result.fold_sd()["f1"] == pytest.approx(np.std(expected, ddof=1))
    assert len(result.labels) == len(LABELS) and result.split == "train (3-fold)"
    assert "± " in repr(result) and result.to_dict()["folds"][1]["f1"] == pytest.approx(expected[1])
    assert [c.cfg.checkpoint_dir for c in calls] == [str(tmp_path / f"fold-{i}") for i in range(3)]


def test_resume_does_not_redo_finished_folds(tmp_path: Path) -> None:
    first: list[_Job] = []
    done = cross_validate(fake_job(tmp_path), make_fit(first), (), None)
    (tmp_path / "fold-2.json").unlink()  # as if stopped during the last fold
    again: list[_Job] = []
    resumed = cross_validate(fake_job(tmp_path, resume=True), make_fit(again), (), None)
    assert len(again) == 1 and again[0].scored.text_a == first[2].scored.text_a
    assert resumed.folds == done.folds
    redo: list[_Job] = []
    cross_validate(fake_job(tmp_path), make_fit(redo), (), None)  # without resume: every fold again
    assert len(redo) == 3


class Clock:
    """A monotonic clock that a fake fine-tuning moves (no sleeping on a loaded machine)."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_max_seconds_is_shared_by_the_folds_left(monkeypatch: pytest.MonkeyPatch) -> None:
    import lmkit.evaluation.folds as folds

    clock = Clock()
    monkeypatch.setattr(folds, "time", clock)
    calls: list[_Job] = []
    cross_validate(fake_job(None, max_seconds=30.0), make_fit(calls), (), None)
    shares = [c.cfg.max_seconds for c in calls]
    # each fold gets an equal share of what is left: these folds take no time, so the share grows
    assert shares == pytest.approx([10.0, 15.0, 30.0], abs=0.5)
    fit = make_fit([])

    def slow(job: _Job, reporters: Any, stop: Any) -> EvalResult:
        clock.now += 31.0
        return fit(job, reporters, stop)
    with pytest.raises(ConfigError, match="max_seconds=30 was spent before fold 2 of 3"):
        cross_validate(fake_job(None, max_seconds=30.0), slow, (), None)


@pytest.mark.slow  # three tiny fine-tunings: about 30 s on 2 loaded cores
def test_cli_folds_prints_each_fold_and_mean_and_sd(capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    assert main(["eval", "scratch", "--task", "glue/mrpc", "--data", str(GLUE), "--quiet", "--set", "folds=3",
                 "--set", "max_steps=3", "--set", "embed_dim=8", "--set", "units=8", "--set", "vocab_size=200",
                 "--set", "max_length=16", "--set", "batch_size=16"]) == 0
    out = capsys.readouterr().out
    assert out.count("  fold ") == 3 and "mean ± sd over the folds: f1 " in out
    assert "glue/mrpc (train (3-fold), 200 examples" in out
