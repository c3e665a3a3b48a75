"""Fine-tuning is a client of the one engine: Ctrl-C, divergence, resume and the registries
behave as in language-model training."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lmkit.engine.checkpoint import load_checkpoint
from lmkit.engine.events import EndEvent, Event, StepEvent, StopSignal
from lmkit.errors import ConfigError, RegistryError, TrainingDiverged
from lmkit.evaluation import evaluate

GLUE = Path(__file__).parent / "fixtures" / "eval" / "glue"
TINY: dict[str, Any] = {"embed_dim": 16, "units": 16, "vocab_size": 400, "max_length": 16,
                        "batch_size": 16, "eval_batch_size": 64, "log_every": 2}


def finetune(folder: Path | None, **options: Any) -> Any:
    if folder is not None:
        options["checkpoint_dir"] = str(folder)
    return evaluate("scratch", task="glue/sst2", data=GLUE, **{**TINY, **options})


def weights(model: Any) -> list[np.ndarray]:
    return [np.asarray(v) for v in (*model.trainable_variables, *model.non_trainable_variables)]


@pytest.mark.slow
def test_ctrl_c_once_stops_fine_tuning_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    def press_ctrl_c(event: Event) -> None:
        if isinstance(event, StepEvent) and event.step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    events: list[Event] = []
    result = finetune(tmp_path, max_steps=500, reporters=[press_ctrl_c, events.append])
    assert result.training["reason"] == "interrupted" and result.training["steps"] == 4
    assert isinstance(events[-1], EndEvent) and events[-1].reason == "interrupted"
    assert len(result.predictions) == 120  # the stopped model is still scored
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 4
    for saved, now in zip(ckpt.model, weights(result.model)):
        np.testing.assert_array_equal(saved, now)


def test_divergence_raises_the_engine_error_and_scores_nothing(tmp_path: Path) -> None:
    with pytest.raises(TrainingDiverged) as info:
        finetune(tmp_path, optimizer="sgd", learning_rate=1e30, clipnorm=None, schedule="constant",
                 max_steps=40, checkpoint_every=2)
    message = str(info.value)
    assert "training stopped." in message
    assert "Try a lower learning_rate (now 1e+30) or gradient clipping (clipnorm)" in message
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["reason"] == "diverged"  # recorded as such, and no result was returned
    if (tmp_path / "checkpoint.npz").exists():  # a checkpoint is only ever one of finite weights
        assert all(np.isfinite(a).all() for a in load_checkpoint(tmp_path).model)


@pytest.mark.slow
def test_stopped_fine_tuning_resumes_exactly(tmp_path: Path) -> None:
    straight = finetune(tmp_path / "straight", max_steps=12, head_dropout=0.2)
    stop = StopSignal()

    def stop_at_6(event: Event) -> None:
        if isinstance(event, StepEvent) and event.step >= 6:
            stop.set()

    stopped = finetune(tmp_path / "resumed", max_steps=12, head_dropout=0.2, stop=stop,
                       reporters=[stop_at_6])
    assert (stopped.training["steps"], stopped.training["reason"]) == (6, "stopped")
    resumed = finetune(tmp_path / "resumed", max_steps=12, head_dropout=0.2, resume=True)
    assert resumed.training["steps"] == 12
    for a, b in zip(weights(resumed.model), weights(straight.model)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_array_equal(resumed.predictions, straight.predictions)
    with pytest.raises(ConfigError, match="'resume' needs 'checkpoint_dir'"):
        finetune(None, max_steps=2, resume=True)


def test_fine_tuning_takes_its_optimizer_and_schedule_from_the_registries(tmp_path: Path) -> None:
    import keras

    from lmkit.registry import optimizers

    peaks: list[float] = []

    @optimizers.register("test_recording_sgd")
    def recording_sgd(cfg: Any, learning_rate: Any) -> keras.optimizers.Optimizer:
        peaks.append(round(float(learning_rate(0)), 6))
        return keras.optimizers.SGD(learning_rate)

    try:
        result = finetune(None, optimizer="test_recording_sgd", schedule="constant",
                          learning_rate=0.01, backbone_lr_multiplier=0.5, max_steps=2)
    finally:
        optimizers.unregister("test_recording_sgd")
    assert peaks == [0.01, 0.005]  # the head's optimizer, then the backbone's at half the rate
    assert result.training["steps"] == 2
    with pytest.raises(RegistryError, match=r"unknown optimizer 'adamv' \(did you mean"):
        finetune(None, optimizer="adamv")
    with pytest.raises(RegistryError, match="unknown schedule 'cosinus'"):
        finetune(None, schedule="cosinus")


@pytest.mark.slow  # builds the backbone and encodes the task first
def test_an_optimizer_with_evaluation_weights_is_refused_by_fine_tuning() -> None:
    """Fine-tuning's step would score the training point of Schedule-Free AdamW, not its
    average: one clear error instead of quietly worse scores."""
    with pytest.raises(ConfigError, match="optimizer='schedule_free_adamw' keeps separate "
                                          "evaluation weights"):
        finetune(None, max_steps=2, optimizer="schedule_free_adamw")
