"""Reporters for terminals, CI logs and the run directory.

`TextReporter` draws one updating line on a TTY and prints plain lines otherwise (CI, pipes,
nbconvert). `JsonlReporter` appends every event to ``metrics.jsonl``. Both only render: the
state they show comes from the events.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO

from lmkit.engine.events import (CheckpointEvent, EndEvent, EvalEvent, Event, StartEvent,
                                   StepEvent)

__all__ = ["TextReporter", "JsonlReporter", "format_duration"]


def format_duration(seconds: float) -> str:
    """``75 -> '1m15s'``; ``3700 -> '1h01m'``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


class TextReporter:
    """Progress as text: an updating line on a terminal, a line every `every_s` seconds otherwise."""

    def __init__(self, stream: IO[str] | None = None, every_s: float = 10.0) -> None:
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s
        self._last_print = 0.0
        self._val: str = ""
        self._open_line = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _line(self, text: str) -> None:
        if self._open_line:
            self._write("\n")
            self._open_line = False
        self._write(text + "\n")

    def __call__(self, event: Event) -> None:
        if isinstance(event, StartEvent):
            self._line(
                f"lmkit: training {event.arch} ({event.parameters:,} parameters) on "
                f"{event.backend} [{event.devices}] for {event.total_steps} steps "
                f"({event.tokens_per_step} tokens/step) -> {event.run_dir}"
                + (f", resuming at step {event.start_step}" if event.start_step else "")
            )
        elif isinstance(event, StepEvent):
            width = len(str(event.total_steps))
            text = (f"step {event.step:>{width}}/{event.total_steps}  loss {event.loss:.4f}"
                    f"{self._val}  {event.tokens_per_second:,.0f} tok/s  "
                    f"elapsed {format_duration(event.elapsed)}  ETA {format_duration(event.eta)}")
            if self.tty:
                self._write("\r\x1b[2K" + text)
                self._open_line = True
            else:
                now = time.monotonic()
                if now - self._last_print >= self.every_s or event.step == event.total_steps:
                    self._last_print = now
                    self._line(text)
        elif isinstance(event, EvalEvent):
            val = event.metrics.get("val_loss")
            self._val = f"  val {val:.4f}" if val is not None else ""
            shown = "  ".join(f"{k} {v:.4f}" for k, v in event.metrics.items())
            self._line(f"eval @ step {event.step}: {shown}")
        elif isinstance(event, CheckpointEvent):
            if not self.tty:
                self._line(f"checkpoint @ step {event.step}: {event.path}")
        elif isinstance(event, EndEvent):
            # a diverged run's own error names the step that failed; its last good one is not it
            where = "" if event.reason == "diverged" else f" at step {event.step}"
            self._line(f"training {event.reason}{where} after {format_duration(event.elapsed)}")


class JsonlReporter:
    """Append each event as one JSON line to `path` (the run's ``metrics.jsonl``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh = self.path.open("a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        self._fh.write(json.dumps(event.to_dict(), default=str) + "\n")
        self._fh.flush()
        if isinstance(event, EndEvent):
            self.close()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
