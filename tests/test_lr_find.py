"""The learning-rate finder: its suggestion lies below the rates where training is known to blow
up, trains well, and `learning_rate = "find"` trains at it."""

from __future__ import annotations

from pathlib import Path

import pytest

import lmkit
from lmkit.cli import main
from lmkit.errors import ConfigError, TrainingDiverged
from lmkit.training import lr_find as finder

CORPUS = Path(__file__).parent / "fixtures" / "core" / "shakespeare_30k.txt"
# plain SGD without clipping: a rate of 100 blows the loss up within a few steps
TINY = dict(data=str(CORPUS), arch="lstm", layers=1, units=32, embed_dim=16, seq_len=32,
            batch_size=8, optimizer="sgd", clipnorm=None, sample_tokens=0)
DIVERGES = 100.0


@pytest.mark.slow
def test_the_suggestion_lies_below_a_rate_known_to_diverge_and_trains(tmp_path: Path) -> None:
    # the known fact, established by ordinary training and the engine's divergence policy
    with pytest.raises(TrainingDiverged):
        lmkit.train(**TINY, learning_rate=DIVERGES, schedule="constant", max_steps=20,
                    out=str(tmp_path / "diverges"), reporters=[])
    found = lmkit.lr_find(**TINY, start_lr=1e-3, end_lr=1e4, steps=70)
    assert found.reason == "diverged"  # the test saw the blow-up and stopped there
    assert len(found.losses) < 70 and found.learning_rates[-1] < 1e4
    assert found.rule == "minimum/10" and found.suggestion == pytest.approx(found.minimum / 10)
    assert found.suggestion < DIVERGES
    # the rates rise by equal factors, from the start of the range
    ratios = [b / a for a, b in zip(found.learning_rates, found.learning_rates[1:])]
    assert found.learning_rates[0] == pytest.approx(1e-3, rel=1e-6)
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-3)
    assert "rule minimum/10" in found.describe()
    run = lmkit.train(**TINY, learning_rate=found.suggestion, schedule="constant", max_steps=40,
                      out=str(tmp_path / "suggested"), reporters=[])
    losses = [r["loss"] for r in run.history if "loss" in r]
    assert losses[-1] < losses[0] - 0.2, losses  # learns, where DIVERGES blew up


def test_the_rules_pick_from_the_smoothed_curve() -> None:
    rates = [10 ** (e / 2) for e in range(-8, 1)]           # 1e-4 .. 1, half a decade apart
    losses = [4.0, 4.0, 3.9, 3.5, 2.5, 2.0, 1.9, 2.5, 9.0]  # falls fastest from 1e-2.5 to 1e-2
    assert finder.suggest(rates, losses) == pytest.approx(rates[6] / 10)
    assert finder.suggest(rates, losses, "steepest") == pytest.approx(rates[3])
    assert finder.smoothed([1.0, float("nan"), 1.0]) == [1.0]  # a non-finite loss ends the curve
    with pytest.raises(ConfigError, match="no finite loss"):
        finder.suggest([1e-3], [])


def test_bad_ranges_are_refused_before_training() -> None:
    with pytest.raises(ConfigError, match="start_lr < end_lr"):
        lmkit.lr_find(**TINY, start_lr=1.0, end_lr=1e-3)
    with pytest.raises(ConfigError, match="at least 10 steps"):
        lmkit.lr_find(**TINY, steps=3)
    assert main(["lr-find", "--set", "learning_rate=fast"]) == 2
    with pytest.raises(ConfigError, match="makes its own learning-rate schedule"):
        lmkit.lr_find(**{**TINY, "optimizer": "schedule_free_adamw"})


def test_a_resumed_run_cannot_find_its_learning_rate(tmp_path: Path) -> None:
    from lmkit.config import TrainConfig
    from lmkit.training.run import train

    with pytest.raises(ConfigError, match="resumed run's learning rate"):
        train(TrainConfig(**TINY, learning_rate="find", out=str(tmp_path)), resume=True)


@pytest.mark.slow
def test_learning_rate_find_trains_at_the_suggestion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    found: list = []
    real = finder.lr_find

    def short(config, **kw):  # the real finder, with a short range test
        found.append(real(config, **{**kw, "steps": 30, "start_lr": 1e-3, "end_lr": 1e4}))
        return found[-1]

    monkeypatch.setattr(finder, "lr_find", short)
    run = lmkit.train(**TINY, learning_rate="find", max_steps=10, out=str(tmp_path / "run"),
                      reporters=[])
    assert run.config.learning_rate == pytest.approx(found[0].suggestion, rel=1e-2)
    assert "lr-find (rule minimum/10)" in str(run.config.source("learning_rate"))
    saved = (tmp_path / "run" / "config.toml").read_text()
    assert f"learning_rate = {run.config.learning_rate}" in saved and '"find"' not in saved
