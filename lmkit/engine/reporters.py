"""Reporters for terminals, CI logs and the run directory.

`TextReporter` draws one live `tqdm` line on a TTY and prints plain lines otherwise (CI, pipes,
nbconvert). `JsonlReporter` appends every event to ``metrics.jsonl``. Both only render: the
state they show comes from the events.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

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


def _columns(stream: IO[str]) -> int:
    """The width of the terminal behind `stream`, 0 when it reports none."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


#: the width assumed for a terminal that reports none (a bare pseudo-terminal, `script`)
FALLBACK_COLUMNS = 100


def _bar_width(columns: int) -> int:
    """The progress bar's width: narrower on a narrow terminal, leaving room for the figures."""
    return 24 if columns >= 120 else 10


class TextReporter:
    """Progress as text, with the dashboard's figures (step, loss, val, tokens/s, elapsed, ETA).

    On a terminal: one live `tqdm` line per phase (compiling, then training), evaluations and
    the end printed above it. Elsewhere (CI logs, pipes, nbconvert): a plain line every
    `every_s` seconds and at the last step, no control characters.
    """

    def __init__(self, stream: IO[str] | None = None, every_s: float = 10.0) -> None:
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s
        self._last_print = 0.0
        self._val: str = ""
        self._bar: Any = None
        self._last_step: StepEvent | None = None

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _figures(self, event: StepEvent, width: int | None = None) -> str:
        """The step's figures, dropping the least useful first until they fit in `width`."""
        rate = "" if event.tokens_per_second is None else f"{event.tokens_per_second:,.0f} tok/s"
        eta = "ETA …" if event.eta is None else f"ETA {format_duration(event.eta)}"
        # (figure, rank): the higher the rank, the sooner it goes on a narrow terminal
        fields = [(f"loss {event.loss:.4f}", 0), (self._val.strip(), 2), (rate, 3),
                  (f"elapsed {format_duration(event.elapsed)}", 4), (eta, 1)]
        fields = [f for f in fields if f[0]]
        while width is not None and len(fields) > 1 and len("  ".join(t for t, _ in fields)) > width:
            fields.remove(max(fields, key=lambda f: f[1]))
        return "  ".join(t for t, _ in fields)

    def _postfix(self, event: StepEvent) -> str:
        """The figures that fit beside the bar on this terminal (tqdm would cut the line's end,
        the ETA first)."""
        columns = _columns(self.stream) or FALLBACK_COLUMNS
        # "training ", the bar and its two spaces, "n/total" and tqdm's ", " before the postfix
        used = len("training ") + _bar_width(columns) + 2 + 2 * len(str(event.total_steps)) + 1 + 2
        return self._figures(event, columns - used - 1)

    def __call__(self, event: Event) -> None:
        if isinstance(event, StartEvent):
            self._line(
                f"lmkit: training {event.arch} ({event.parameters:,} parameters) on "
                f"{event.backend} [{event.devices}] for {event.total_steps} steps "
                f"({event.tokens_per_step} tokens/step) -> {event.run_dir}"
                + (f", resuming at step {event.start_step}" if event.start_step else "")
            )
            if self.tty:
                from tqdm import tqdm

                # ETA and rate come from the engine (they leave out compilation), not from tqdm.
                # A terminal that reports no size (a bare pseudo-terminal, `script`) gets
                # FALLBACK_COLUMNS and 24 rows: tqdm would otherwise draw an empty line.
                columns = _columns(self.stream)
                bar = _bar_width(columns or FALLBACK_COLUMNS)
                self._bar = tqdm(total=event.total_steps, initial=event.start_step,
                                 file=self.stream, desc="compiling…", dynamic_ncols=columns > 0,
                                 ncols=None if columns else FALLBACK_COLUMNS,
                                 nrows=None if columns else 24,
                                 bar_format="{desc} {bar:%d} {n_fmt}/{total_fmt}{postfix}" % bar)
                self._bar.refresh()  # "compiling…" at once: the first dispatch takes seconds
            else:
                self._line("compiling the training step…")
        elif isinstance(event, StepEvent):
            self._last_step = event
            if self._bar is not None:
                self._bar.set_description_str("training", refresh=False)
                self._bar.set_postfix_str(self._postfix(event), refresh=False)
                self._bar.update(event.step - self._bar.n)
            else:
                now = time.monotonic()
                if now - self._last_print >= self.every_s or event.step == event.total_steps:
                    self._last_print = now
                    width = len(str(event.total_steps))
                    self._line(f"step {event.step:>{width}}/{event.total_steps}  "
                               f"{self._figures(event)}")
        elif isinstance(event, EvalEvent):
            val = event.metrics.get("val_loss")
            self._val = f"  val {val:.4f}" if val is not None else ""
            shown = "  ".join(f"{k} {v:.4f}" for k, v in event.metrics.items())
            self._line(f"eval @ step {event.step}: {shown}")
            if self._bar is not None and self._last_step is not None:  # the new val on the line now
                self._bar.set_postfix_str(self._postfix(self._last_step))
        elif isinstance(event, CheckpointEvent):
            if not self.tty:
                self._line(f"checkpoint @ step {event.step}: {event.path}")
        elif isinstance(event, EndEvent):
            if self._bar is not None:
                self._bar.set_description_str(event.reason, refresh=False)
                self._bar.close()
                self._bar = None
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
