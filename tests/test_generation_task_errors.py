"""Bad decoding settings of a generation task are refused before anything trains, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmkit.cli import main
from lmkit.errors import ConfigError

MULTI30K = Path(__file__).parent / "fixtures" / "multi30k"


def test_num_beams_below_one_is_refused_with_its_value() -> None:
    import lmkit

    with pytest.raises(ConfigError, match=r"option 'num_beams' must be at least 1, got 0"):
        lmkit.evaluate("scratch", task="multi30k", data=MULTI30K, num_beams=0)


def test_the_cli_refuses_num_beams_below_one_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "scratch", "--task", "multi30k", "--data", str(MULTI30K), "--set", "num_beams=0"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[-1] == "lmkit eval: error: option 'num_beams' must be at least 1, got 0"


# a classification option set for a generation task: refused, naming the key, its value and why
CLASSIFICATION_ONLY = {"pooling": "mean", "head_dropout": 0.2, "label_smoothing": 0.1,
                       "length_normalize": True, "loss": "cross_entropy"}


@pytest.mark.parametrize("key", list(CLASSIFICATION_ONLY))
def test_a_classification_option_is_refused_by_a_generation_task(key: str) -> None:
    import lmkit

    value = CLASSIFICATION_ONLY[key]
    with pytest.raises(ConfigError, match=rf"^{key}={value!r} is not used by multi30k/de-en, a "
                                          rf"generation task: .*; remove {key}$"):
        lmkit.evaluate("scratch", task="multi30k", data=MULTI30K, **{key: value})


def test_the_cli_refuses_pooling_for_a_generation_task_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "scratch", "--task", "multi30k", "--data", str(MULTI30K), "--set", "pooling=mean"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[-1].startswith("lmkit eval: error: pooling='mean' is not used by multi30k/de-en")
    assert "classification head" in errors[-1]


def test_options_a_generation_task_uses_or_left_at_their_defaults_pass() -> None:
    from lmkit.config import EvalConfig, Source
    from lmkit.evaluation.tasks import get_task

    task = get_task("multi30k")
    for cfg in (EvalConfig(), EvalConfig(loss="target_nll", num_beams=4, max_new_tokens=8),
                # a pretrained decoder's recipe, not the user, sets pooling
                EvalConfig.from_dict({"pooling": "last"}, by=Source("recipe", "pretrained decoder"))):
        task.shape.check_options(task, cfg)
