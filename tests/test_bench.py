"""`lmkit bench`: each benchmark's quick run writes a well-formed result (no timed assertions)."""

from __future__ import annotations

import json
import math

import pytest

from lmkit.bench import BENCHMARKS, benchmarks_dir, main
from lmkit.errors import RunError


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_run_writes_figures_machine_and_ratios(name, tmp_path, capsys):
    assert main([name, "--quick", "--out", str(tmp_path)]) == 0

    record = json.loads((tmp_path / f"{name}.quick.json").read_text())
    assert record["benchmark"] == name and record["quick"] is True
    assert record["command"] == f"lmkit bench {name} --quick"
    machine = record["machine"]
    assert machine["cpu"] and machine["logical_cores"] >= 1
    assert machine["versions"]["jax"] and machine["versions"]["keras"]
    assert record["figures"]
    assert record["ratios"], "every benchmark reports at least one ratio against its target"
    for key, value in record["ratios"].items():
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, key
    for key, target in record["targets"].items():
        assert target["value"] == record["ratios"][key]
        assert isinstance(target["met"], bool)
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path / f'{name}.quick.json'}" in printed
    assert "target" in printed


def test_unknown_benchmark_suggests_the_closest_name(capsys):
    with pytest.raises(RunError, match="Did you mean 'gpt_char'"):
        main(["gpt_chr", "--quick"])


def test_missing_benchmarks_folder_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LMKIT_BENCHMARKS", str(tmp_path))
    with pytest.raises(RunError, match="git checkout"):
        benchmarks_dir()


def test_benchmarks_folder_is_found_beside_the_package():
    assert (benchmarks_dir() / "gpt_char.py").is_file()
