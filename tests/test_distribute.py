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


def _processes(script: str, out: Path, count: int) -> list[subprocess.Popen]:
    """`count` processes of `script` joined as one distributed run (what `lmkit train
    --processes` sets up), one device each."""
    import socket

    out.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    return [subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / script), str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "jax",
             "LMKIT_COORDINATOR": address, "LMKIT_NUM_PROCESSES": str(count),
             "LMKIT_PROCESS_ID": str(index)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for index in range(count)]


@pytest.mark.slow
def test_four_devices_and_two_processes_train_and_fine_tune_exactly_like_one(tmp_path) -> None:
    from jax.sharding import PartitionSpec

    # fine-tuning over 2 processes (gloo) runs beside the 4 devices' process
    pair = _processes("distribute_finetune_child.py", tmp_path / "processes" / "result.json", 2)
    try:
        result = _child("distribute_child.py", tmp_path / "result.json", 4, timeout=480)
        errors = [p.communicate(timeout=300)[1] for p in pair]
    finally:
        for p in pair:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in pair] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
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
    bf16 = result["bf16"]
    assert bf16["compute"] == "bfloat16" and bf16["mesh"] == "4 devices (data 4), 1 process"
    assert bf16["last_loss"] < bf16["first_loss"], bf16  # it trains
    assert bf16["loss_diff"] <= 2e-2, bf16  # 4 devices vs 1, both in bfloat16
    assert 0 < bf16["loss_diff_float32"] <= 0.1, bf16  # really computed in bfloat16, and close
    assert bf16["dtypes"] == ["float32"], bf16  # weights and slots: what a checkpoint holds
    split = result["model_parallel"]
    assert split["mesh"] == "4 devices (data 2 x model 2), 1 process"
    # with 2 micro-batches of 4 rows (accumulate_steps=2): the same as one batch of 8
    assert split["loss_diff"] <= 1e-5 and split["weight_diff"] <= 1e-5, split
    assert split["w_fc"] == str(PartitionSpec(None, "model"))  # (16, 64) by columns
    assert split["w_out"] == str(PartitionSpec("model", None))  # (64, 16) by rows
    assert split["w_fc_slot"] == str(PartitionSpec(None, "model"))  # Adam's slot follows it
    assert split["w_fc_shard_shape"] == [16, 32]  # each device holds half of it
    assert split["embedding"] == str(PartitionSpec())
    assert "model_parallel=4 does not divide heads=2" in result["mp_heads"]
    assert "model_parallel=2: architecture LSTMModel names no weights to split" in result["mp_lstm"]
    assert "model_parallel=3 must divide the 4 devices" in result["mp_devices"]
    assert "batch_size=10 does not split evenly over the data axis of 4 devices" in result["indivisible"]
    assert "multiple of 4" in result["indivisible"]

    # fine-tuning: a gpt backbone on the SST-2 fixture on data 4, a bert on data 2 x model 2
    data, bert = result["finetune"]["data"], result["finetune"]["bert"]
    assert not data["one_layout"]  # devices=1: the plain single-device step
    assert data["mesh"] == data["summary_mesh"] == "4 devices (data 4), 1 process"
    assert bert["mesh"] == bert["summary_mesh"] == "4 devices (data 2 x model 2), 1 process"
    assert data["last_loss"] < data["first_loss"] and data["steps"] == 20  # it trained
    assert bert["last_loss"] < bert["first_loss"] and bert["steps"] == 10, bert
    for r in (data, bert):  # the same losses and weights as one device
        assert r["loss_diff"] <= 1e-5 and r["weight_diff"] <= 1e-5, r
        # the rows of every batch array (after the axis of the fused steps) are split over the
        # data axis (replicated: PartitionSpec())
        assert r["tokens_spec"] == r["labels_spec"] == str(PartitionSpec(None, "data")), r
    assert data["state_specs"] == [str(PartitionSpec())]  # weights and slots replicated
    # the encoder's attention and MLP matrices are split over the model axis
    assert bert["w_qkv"] == str(PartitionSpec(None, "model")) and bert["w_qkv_shard"] == [16, 24]
    assert bert["w_out"] == str(PartitionSpec("model", None)) and bert["w_out_shard"] == [32, 16]
    assert "model_parallel=4 does not divide ffn_dim=30" in result["mp_bert_ffn"]

    # 2 processes x 1 device: each feeds its half of every batch; the same losses as 1 device,
    # and process 0 alone wrote the checkpoint folder (one training logged once)
    two = json.loads((tmp_path / "processes" / "result.json").read_text())
    assert two["mesh"] == "2 devices (data 2), 2 processes"
    assert two["local_rows"] == str(slice(0, 8))  # process 0: rows 0-7 of the 16
    one_losses = result["finetune"]["data"]["losses_one"]
    assert len(two["losses"]) == len(one_losses) == 20
    assert max(abs(a - b) for a, b in zip(one_losses, two["losses"])) <= 1e-5, (one_losses, two)
    folder = tmp_path / "processes" / "finetuned"
    events = [json.loads(line)["event"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert events.count("start") == events.count("end") == 1 and events.count("step") == 4
    assert json.loads((folder / "summary.json").read_text())["mesh"] == two["mesh"]


# -- many processes -----------------------------------------------------------------------------
CORPUS = ROOT / "tests" / "fixtures" / "core" / "shakespeare_30k.txt"
TINY = ["--set", f"data={json.dumps(str(CORPUS))}", "--set", "arch=lstm", "--set", "embed_dim=16",
        "--set", "units=16", "--set", "seq_len=16", "--set", "batch_size=8", "--set", "devices=1",
        "--set", "steps_per_dispatch=5", "--set", "checkpoint_every=10", "--set", "eval_every=10",
        "--set", "eval_batches=2", "--set", "sample_tokens=0",
        "--set", "schedule=constant"]  # a schedule that does not depend on max_steps (resume: 20 -> 30)


def test_a_coordinator_that_does_not_answer_is_a_clear_error_in_bounded_time(monkeypatch) -> None:
    import socket
    import time

    from lmkit import distribute
    from lmkit.errors import RunError

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LMKIT_COORDINATOR", f"127.0.0.1:{port}")
    monkeypatch.setenv("LMKIT_NUM_PROCESSES", "2")
    monkeypatch.setenv("LMKIT_PROCESS_ID", "1")
    monkeypatch.setenv("LMKIT_INIT_TIMEOUT", "0")
    t0 = time.monotonic()
    with pytest.raises(RunError, match=rf"coordinator 127.0.0.1:{port} .* did not answer within 0 s"):
        distribute.initialize()
    assert time.monotonic() - t0 < 5


def test_a_coordinator_without_count_or_id_is_a_config_error(monkeypatch) -> None:
    from lmkit import distribute

    monkeypatch.setenv("LMKIT_COORDINATOR", "127.0.0.1:1234")
    monkeypatch.delenv("LMKIT_NUM_PROCESSES", raising=False)
    monkeypatch.setenv("LMKIT_PROCESS_ID", "0")
    with pytest.raises(ConfigError, match="needs LMKIT_NUM_PROCESSES"):
        distribute.initialize()


SLURM = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "node[001-004]", "SLURM_NTASKS": "4",
         "SLURM_PROCID": "2", "SLURM_LOCALID": "0"}


@pytest.fixture()
def fake_jax_distributed(monkeypatch):
    """`jax.distributed.initialize` recorded instead of run (no cluster here); gloo not switched on
    in this test process."""
    import jax

    calls: list[dict] = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    update = jax.config.update
    monkeypatch.setattr(jax.config, "update", lambda name, value: None if
                        name == "jax_cpu_collectives_implementation" else update(name, value))
    for name in ("LMKIT_COORDINATOR", "LMKIT_NUM_PROCESSES", "LMKIT_PROCESS_ID",
                 "LMKIT_DISTRIBUTED", "OMPI_MCA_orte_hnp_uri", *SLURM):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_a_slurm_job_of_several_tasks_joins_through_jax_s_own_detection(monkeypatch,
                                                                         fake_jax_distributed) -> None:
    from lmkit import distribute

    assert distribute.initialize() is False and fake_jax_distributed == []  # no cluster: alone
    for name, value in SLURM.items():
        monkeypatch.setenv(name, value)
    assert distribute.detect_cluster() == "SLURM (SLURM_NTASKS=4, SLURM_PROCID=2)"
    assert distribute.initialize() is True
    (call,) = fake_jax_distributed
    # no address, count or id of lmkit's: JAX reads SLURM's variables itself
    assert set(call) == {"initialization_timeout", "heartbeat_timeout_seconds"}
    monkeypatch.setenv("LMKIT_DISTRIBUTED", "off")  # one process inside the job, on purpose
    assert distribute.initialize() is False and len(fake_jax_distributed) == 1


def test_one_slurm_task_or_one_mpi_rank_trains_alone(monkeypatch, fake_jax_distributed) -> None:
    from lmkit import distribute

    for name, value in {**SLURM, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OMPI_MCA_orte_hnp_uri", "1531576320.0;tcp://10.96.0.1:34911")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    assert distribute.detect_cluster() is None
    assert distribute.initialize() is False and fake_jax_distributed == []
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "8")  # mpirun -n 8
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "5")
    assert distribute.detect_cluster() == "Open MPI (OMPI_COMM_WORLD_SIZE=8, OMPI_COMM_WORLD_RANK=5)"
    assert distribute.initialize() is True and len(fake_jax_distributed) == 1


def test_a_cluster_that_cannot_be_joined_is_a_clear_error(monkeypatch, fake_jax_distributed) -> None:
    import jax

    from lmkit import distribute
    from lmkit.errors import RunError

    for name, value in SLURM.items():
        monkeypatch.setenv(name, value)

    def refused(**kwargs):
        raise RuntimeError("DEADLINE_EXCEEDED: RegisterTask\nmore")

    monkeypatch.setattr(jax.distributed, "initialize", refused)
    with pytest.raises(RunError, match=r"could not join the distributed run of SLURM \(SLURM_NTASKS=4, "
                                       r"SLURM_PROCID=2\) within 60 s: DEADLINE_EXCEEDED: RegisterTask\. "
                                       r".*LMKIT_DISTRIBUTED=off"):
        distribute.initialize()
    monkeypatch.setenv("LMKIT_DISTRIBUTED", "yes")
    with pytest.raises(ConfigError, match="LMKIT_DISTRIBUTED must be \"auto\" or \"off\", got 'yes'"):
        distribute.initialize()


def _lmkit(*args: str, cwd: Path, timeout: float, devices: int = 1) -> subprocess.CompletedProcess:
    """`lmkit` in a fresh process (and the processes it launches) with `devices` CPU devices."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "jax",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.run([sys.executable, "-m", "lmkit.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _step_losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["event"] == "step"]


@pytest.mark.slow
def test_two_processes_of_two_devices_train_like_one_and_resume_on_one_device_then_on_two(tmp_path) -> None:
    import numpy as np

    # 2 processes x 2 forced devices each: the batch is split over 4 devices
    two = _lmkit("train", "--processes", "2", *TINY, "--set", "devices=2", "--set", "max_steps=20",
                 "--out", "two", cwd=tmp_path, timeout=300, devices=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("training completed at step 20") == 1  # process 0's output only
    assert "on jax [4 devices (data 4), 2 processes]" in two.stdout  # the mesh, as dashboards show it
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["mesh"] == "4 devices (data 4), 2 processes"
    # its checkpoint holds whole weights: one process on one device continues from it ...
    resumed = _lmkit("train", "--resume", "two", "--set", "devices=1", "--set", "max_steps=30",
                     cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "on jax [cpu:0]" in resumed.stdout
    # ... and two processes continue from that one's (lmkit train --processes 2 --resume)
    again = _lmkit("train", "--processes", "2", "--resume", "two", "--set", "devices=1",
                   "--set", "max_steps=40", cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "on jax [2 devices (data 2), 2 processes]" in again.stdout
    assert again.stdout.count("training completed at step 40") == 1
    one = _lmkit("train", *TINY, "--set", "max_steps=40", "--out", "one", cwd=tmp_path, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    losses_one, losses_two = _step_losses(tmp_path / "one"), _step_losses(tmp_path / "two")
    assert len(losses_two) == 8  # steps 5 .. 40, from 3 trainings: 2 processes x 2, 1, 2 x 1
    assert np.allclose(losses_one, losses_two, rtol=0, atol=1e-5), (losses_one, losses_two)
    events = [json.loads(line)["event"] for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert events.count("start") == 3 and events.count("end") == 3  # each training logged once


@pytest.mark.slow
def test_a_killed_process_ends_the_run_with_a_clear_error_within_a_minute(tmp_path) -> None:
    import signal
    import time

    from lmkit.engine.checkpoint import load_checkpoint

    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "jax"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "lmkit.cli", "train", "--processes", "2", *TINY,
         "--set", "max_steps=100000", "--out", "run"], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "run" / "checkpoint.npz").exists():  # training for real
            assert launcher.poll() is None and time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.2)
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        assert len(children) == 2
        os.kill(int(children[1]), signal.SIGKILL)  # process 1
        t0 = time.monotonic()
        _, err = launcher.communicate(timeout=60)
        assert time.monotonic() - t0 < 60
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert "process 1 of 2 was killed by SIGKILL; stopped the other processes" in err
    for pid in children:  # none left behind
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert load_checkpoint(tmp_path / "run").step % 10 == 0  # the last checkpoint loads


def test_lmkit_eval_processes_starts_every_process_with_the_same_evaluation(monkeypatch) -> None:
    from lmkit.cli import launch, main

    calls = []
    monkeypatch.setattr(launch, "launch", lambda n, argv, command: calls.append((n, argv, command)) or 0)
    args = ["eval", "scratch", "--task", "glue/sst2", "--data", "glue", "--set", "max_steps=5",
            "--set", "devices=1", "--out", "ft", "--quiet"]
    assert main([*args[:2], "--processes", "2", *args[2:]]) == 0
    assert calls == [(2, args, "eval")]  # each process: the same command, without --processes


@pytest.mark.slow  # two Python processes: about a second
def test_the_launcher_stops_and_names_a_process_that_failed(tmp_path, capfd) -> None:
    from lmkit.cli.launch import launch

    code = launch(2, ["info", str(tmp_path / "no-such-run")], command="info")
    assert code == 2
    err = capfd.readouterr().err
    assert "does not exist" in err  # the failed process's own error is shown
    assert "lmkit info: error: process" in err and "of 2 exited with status 2" in err



def test_lmkit_train_processes_passes_every_option_but_processes_to_each_process(monkeypatch) -> None:
    from lmkit.cli import launch, main

    calls = []
    monkeypatch.setattr(launch, "launch", lambda n, argv: calls.append((n, argv)) or 0)
    args = ["train", "cfg.toml", "--set", "max_steps=5", "--out", "run", "--overwrite"]
    for spelled in (["--processes", "2"], ["--processes=2"], ["--proc", "2"]):
        calls.clear()
        assert main([*args[:2], *spelled, *args[2:]]) == 0
        assert calls == [(2, args)], spelled  # an abbreviation left in would launch again
