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
