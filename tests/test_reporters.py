"""Terminal progress: one live line on a terminal (a real pseudo-terminal here), plain lines in logs."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import termios
import time

from lmkit.engine.events import EndEvent, EvalEvent, StartEvent, StepEvent
from lmkit.engine.reporters import TextReporter

START = StartEvent(run_dir="runs/x", total_steps=100, start_step=0, arch="lstm", parameters=1234,
                   backend="jax", devices="cpu", tokens_per_step=768)


def events() -> list:
    out: list = [START]
    for step in range(10, 101, 10):
        out.append(StepEvent(step, 100, step / 50, 3.0 - step / 100, 1e-3, 5000.0, step / 10,
                             (100 - step) / 10))
        if step % 50 == 0:
            out.append(EvalEvent(step, {"val_loss": 2.5 - step / 1000}))
    out.append(EndEvent(100, "completed", 10.0))
    return out


def _read_all(fd: int, timeout: float = 5.0) -> bytes:
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_on_a_terminal_progress_is_one_live_line_with_the_dashboards_figures() -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a 160-column terminal
    with os.fdopen(slave, "w", encoding="utf-8", closefd=True) as stream:
        assert stream.isatty()
        reporter = TextReporter(stream)
        for event in events():
            reporter(event)
    text = _read_all(master).decode("utf-8", "replace")
    os.close(master)
    assert "compiling…" in text  # the first seconds say what is happening
    assert "\r" in text  # the line is redrawn in place
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    # start line, two evaluations, the bar's final state and the end line: not one line per step
    assert len(lines) <= 6, lines
    final_bar = [line for line in text.split("\r") if "100/100" in line][-1]
    for figure in ("loss 2.0000", "val 2.4000", "5,000 tok/s", "ETA 0s"):  # the latest evaluation
        assert figure in final_bar, (figure, final_bar)
    assert "training completed at step 100" in text


def _final_bar_on(columns: int) -> str:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    with os.fdopen(slave, "w", encoding="utf-8", closefd=True) as stream:
        reporter = TextReporter(stream)
        for event in events()[:-1]:  # before the end: the line as it looks while training
            reporter(event)
        text = _read_all(master).decode("utf-8", "replace")
        reporter(events()[-1])
    _read_all(master)
    os.close(master)
    return [line for line in text.split("\r") if "100/100" in line][-1].strip("\n")


def test_on_a_narrow_terminal_the_line_fits_and_keeps_the_eta() -> None:
    line = _final_bar_on(80)
    assert len(line.rstrip()) <= 80, (len(line), line)
    assert "loss 2.0000" in line and "ETA 0s" in line and "val 2.4000" in line, line
    assert "elapsed" not in line  # the least useful figure went first
    wide = _final_bar_on(160)
    assert "elapsed" in wide and "tok/s" in wide and "ETA 0s" in wide, wide


def test_before_the_pace_is_known_the_eta_says_so() -> None:
    stream = io.StringIO()
    reporter = TextReporter(stream, every_s=0.0)
    reporter(START)
    reporter(StepEvent(10, 100, 0.2, 3.0, 1e-3, None, 12.0, None))  # the compiling dispatch
    assert "step  10/100  loss 3.0000  elapsed 12s  ETA …" in stream.getvalue()


def test_a_terminal_that_reports_no_width_still_gets_the_line() -> None:
    master, slave = pty.openpty()  # 0 columns, as under `script` or some CI runners
    with os.fdopen(slave, "w", encoding="utf-8", closefd=True) as stream:
        reporter = TextReporter(stream)
        for event in events():
            reporter(event)
    text = _read_all(master).decode("utf-8", "replace")
    os.close(master)
    assert "compiling…" in text and "loss 2.0000  val 2.4500" in text


def test_in_a_log_progress_is_plain_lines() -> None:
    stream = io.StringIO()
    reporter = TextReporter(stream, every_s=0.0)
    for event in events():
        reporter(event)
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert "compiling the training step…" in text
    assert "step 100/100  loss 2.0000  val 2.4500  5,000 tok/s" in text
    assert text.count("\nstep ") == 10
