"""%%lmtrain in a real kernel: the dashboard's Stop button and a kernel interrupt end training
cleanly while the cell runs, and the run is kept. The frontend is played by jupyter_client."""

from __future__ import annotations

import os
import time

import pytest
from jupyter_client.manager import start_new_kernel

TRAIN = """%%lmtrain -o run
arch = "lstm"
embed_dim = 16
units = 16
layers = 1
batch_size = 2
seq_len = 16
steps_per_dispatch = 4
max_steps = 100000
eval_every = 100000
checkpoint_every = 100000
sample_tokens = 10
out = "{out}"
"""

REPORT = "print(len(run.history) > 0, run.summary['reason'], run.summary['steps'] < 100000, " \
         "(run.dir / 'checkpoint.npz').is_file(), run.model is not None)"


@pytest.fixture()
def kernel(tmp_path):
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path),
                                       env={**os.environ})
    try:
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _run(client, code: str, timeout: float = 120) -> str:
    msg_id = client.execute(code)
    out = []
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            raise AssertionError("\n".join(msg["content"]["traceback"]))
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out)


def _start_training(client, out_dir) -> tuple[str, str]:
    """Start the training cell; return its msg_id and the Stop button's comm id once steps run."""
    msg_id = client.execute(TRAIN.format(out=out_dir))
    stop_button, deadline = None, time.monotonic() + 240
    while time.monotonic() < deadline:
        msg = client.get_iopub_msg(timeout=240)
        content = msg["content"]
        if msg["msg_type"] == "comm_open":
            state = content["data"].get("state", {})
            if state.get("_model_name") == "ButtonModel" and state.get("description") == "Stop":
                stop_button = content["comm_id"]
        elif msg["msg_type"] == "comm_msg":
            state = content["data"].get("state", {})
            if stop_button and state.get("value", 0) and isinstance(state["value"], int):
                return msg_id, stop_button  # the progress bar moved: training is under way
        elif msg["msg_type"] == "error":
            raise AssertionError("\n".join(content["traceback"]))
    raise AssertionError("training never reported progress")


def _reply_status(client, msg_id: str) -> str:
    while True:
        reply = client.get_shell_msg(timeout=240)
        if reply["parent_header"]["msg_id"] == msg_id:
            return reply["content"]["status"]


@pytest.mark.slow
def test_stop_button_ends_training_while_the_cell_runs(kernel, tmp_path):
    _, client = kernel
    _run(client, "%load_ext lmkit")
    msg_id, stop_button = _start_training(client, tmp_path / "run")
    click = client.session.msg("comm_msg", {"comm_id": stop_button, "data": {
        "method": "custom", "content": {"event": "click"}}})
    client.shell_channel.send(click)
    assert _reply_status(client, msg_id) == "ok"
    assert _run(client, REPORT).split() == ["True", "stopped", "True", "True", "True"]


@pytest.mark.slow
def test_kernel_interrupt_ends_training_cleanly(kernel, tmp_path):
    manager, client = kernel
    _run(client, "%load_ext lmkit")
    msg_id, _ = _start_training(client, tmp_path / "run")
    manager.interrupt_kernel()
    assert _reply_status(client, msg_id) == "ok"
    assert _run(client, REPORT).split() == ["True", "interrupted", "True", "True", "True"]


MESH_CELL = """%%lmtrain -o run
data = "{corpus}"
arch = "lstm"
embed_dim = 8
units = 8
batch_size = 4
seq_len = 8
devices = "all"
max_steps = 4
steps_per_dispatch = 2
eval_every = 4
eval_batches = 1
sample_tokens = 0
out = "{out}"
"""


@pytest.mark.slow
def test_lmtrain_with_devices_all_in_a_kernel_with_forced_host_devices(tmp_path):
    """A kernel started with 2 forced host devices: `devices = "all"` trains data parallel on
    both, and the dashboard's header and the run's summary show the mesh."""
    import json
    from pathlib import Path

    corpus = Path(__file__).parent / "fixtures" / "core" / "shakespeare_30k.txt"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=env)
    try:
        _run(client, "%load_ext lmkit")
        msg_id = client.execute(MESH_CELL.format(corpus=corpus, out=tmp_path / "run"))
        shown = []  # every widget state and output the cell sent
        while True:
            msg = client.get_iopub_msg(timeout=240)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            shown.append(json.dumps(msg["content"]))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        assert any("[2 devices (data 2), 1 process]" in text for text in shown)  # the header
        report = _run(client, "import jax; print(len(jax.devices()), run.summary['mesh'], "
                              "run.summary['steps'])")
        assert report.strip() == "2 2 devices (data 2), 1 process 4"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
