"""Data parallel training over a mesh of devices (`lmkit.distribute`, the compiled step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmkit.config import TrainConfig
from lmkit.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_devices_key_reads_all_a_count_and_a_list() -> None:
    assert TrainConfig(devices="all").devices == "all"
    assert TrainConfig.from_dict({"devices": "2"}).devices == 2
    assert TrainConfig.from_dict({"devices": [0, 1]}).devices == [0, 1]
    assert TrainConfig.from_dict({"devices": "0,1"}).devices == [0, 1]
    with pytest.raises(ConfigError, match="'devices' must be at least 1, got 0"):
        TrainConfig(devices=0)


def test_one_device_has_no_mesh_and_keeps_the_single_device_step() -> None:
    from lmkit.distribute import layout_for

    assert layout_for("all", batch_size=12) is None
    assert layout_for(1, batch_size=7) is None


def test_more_devices_than_exist_is_a_clear_error() -> None:
    from lmkit.distribute import layout_for

    with pytest.raises(ConfigError, match=r"devices=3, but this process has 1 cpu device.*"
                                          r"xla_force_host_platform_device_count"):
        layout_for(3)
    with pytest.raises(ConfigError, match=r"devices=\[7\].*\[7\] is not among them"):
        layout_for([7])
    with pytest.raises(ConfigError, match="must be \"all\", a count or a list"):
        layout_for("every")


def test_training_refuses_a_device_count_before_creating_the_run(tmp_path) -> None:
    import lmkit

    with pytest.raises(ConfigError, match="devices=2"):
        lmkit.train(arch="lstm", devices=2, max_steps=1, out=str(tmp_path / "run"), reporters=[])
    assert not (tmp_path / "run").exists()


def _child(script: str, out: Path, devices: int, timeout: float) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / script), str(out)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_four_devices_train_exactly_like_one_with_the_batch_sharded(tmp_path) -> None:
    from jax.sharding import PartitionSpec

    result = _child("distribute_child.py", tmp_path / "result.json", 4, timeout=300)
    assert result["devices"] == 4
    for arch in ("gpt", "lstm"):
        r = result[arch]
        assert not r["layout_one"]  # devices=1: the plain single-device step
        assert r["mesh"] == "4 devices (data 4), 1 process"
        assert r["last_loss"] < r["first_loss"]  # it trained
        assert r["loss_diff"] <= 1e-5, r
        assert r["weight_diff"] <= 1e-5, r
        # the batch rows are split over the data axis (replicated would be PartitionSpec())
        assert r["x_spec"] == str(PartitionSpec(None, "data")), r
        assert r["weight_specs"] == [str(PartitionSpec())]  # weights and slots replicated
    assert result["accumulate"]["loss_diff"] <= 1e-5, result["accumulate"]
    assert result["accumulate"]["weight_diff"] <= 1e-5, result["accumulate"]
    assert "batch_size=10 does not split evenly over the data axis of 4 devices" in result["indivisible"]
    assert "multiple of 4" in result["indivisible"]
