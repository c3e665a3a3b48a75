"""The widget pump delivers a button click to a cell that keeps a real kernel busy."""

from __future__ import annotations

import time

import pytest
from jupyter_client.manager import start_new_kernel

SETUP = """
import time
import ipywidgets
from lmkit.notebook.kernel_pump import WidgetPump
clicks = []
button = ipywidgets.Button(description="Stop")
button.on_click(lambda _: clicks.append(time.monotonic()))
print(button.model_id)
"""

BUSY = """
with WidgetPump.for_current_kernel(interval=0.05) as pump:
    start = time.monotonic()
    while not clicks and time.monotonic() - start < 60:
        time.sleep(0.02)
        pump.pump()
print("clicked" if clicks else "never clicked", pump.active)
"""


@pytest.fixture()
def kernel():
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _stdout_of(client, msg_id: str, timeout: float = 60) -> str:
    """Collect the stdout of one request until the kernel goes idle for it."""
    text = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            text.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            raise AssertionError("\n".join(msg["content"]["traceback"]))
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(text)
    raise AssertionError(f"no idle status for {msg_id} within {timeout} s")


def _wait_busy(client, msg_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = client.get_iopub_msg(timeout=timeout)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input"):
            return
    raise AssertionError("the busy cell never started")


def test_click_reaches_busy_cell_and_later_cells_still_run_in_order(kernel):
    model_id = _stdout_of(kernel, kernel.execute(SETUP)).strip()
    busy = kernel.execute(BUSY)
    _wait_busy(kernel, busy)
    after = kernel.execute("print('after', clicks and 'ok')")
    time.sleep(0.3)  # the next cell's request is now queued behind the busy one
    click = kernel.session.msg(
        "comm_msg",
        {"comm_id": model_id, "data": {"method": "custom", "content": {"event": "click"}}},
    )
    kernel.shell_channel.send(click)
    assert _stdout_of(kernel, busy).strip() == "clicked True"
    assert _stdout_of(kernel, after).strip() == "after ok"
    reply = kernel.get_shell_msg(timeout=30)
    while reply["parent_header"]["msg_id"] != busy:
        reply = kernel.get_shell_msg(timeout=30)
    assert reply["content"]["status"] == "ok"


def test_pump_is_inert_outside_a_kernel():
    from lmkit.notebook.kernel_pump import WidgetPump

    with WidgetPump.for_current_kernel() as pump:
        pump.pump(force=True)
    assert not pump.active


def _statuses_until_idle(client, msg_id: str, timeout: float = 60) -> list[tuple[str, str]]:
    """(execution_state, msg_id of the request it answers) of every status message until the
    request `msg_id` ends."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["msg_type"] == "status":
            seen.append((msg["content"]["execution_state"], msg["parent_header"].get("msg_id")))
            if seen[-1] == ("idle", msg_id):
                return seen
    raise AssertionError(f"no idle status for {msg_id} within {timeout} s")


@pytest.mark.parametrize("delay", [0.3, 1.5], ids=["before-the-pump-opens", "while-it-pumps"])
def test_the_kernel_stays_busy_for_a_front_end_while_the_pump_runs(kernel, delay):
    # JupyterLab shows the last status, whichever request it answers. ipywidgets' front end
    # sends a create_subshell_request on the control channel when it sees the first widget,
    # whose "idle" came while %%lmtrain ran: the status bar said "Idle" through the training.
    model_id = _stdout_of(kernel, kernel.execute(SETUP)).strip()
    busy = kernel.execute("time.sleep(1.0)\n" + BUSY)  # the pump opens after a second
    _wait_busy(kernel, busy)
    time.sleep(delay)
    control = kernel.session.msg("kernel_info_request", {})
    kernel.control_channel.send(control)
    kernel.get_control_msg(timeout=30)
    time.sleep(max(1.3 - delay, 0.3))
    click = kernel.session.msg(
        "comm_msg", {"comm_id": model_id, "data": {"method": "custom", "content": {"event": "click"}}})
    kernel.shell_channel.send(click)
    seen = _statuses_until_idle(kernel, busy)
    assert ("idle", control["header"]["msg_id"]) in seen  # the control request was answered
    assert seen[-2] == ("busy", busy)  # and the front end heard "busy" again until the cell ended
