"""Where a training process's wall time goes, by phase: `Phases`.

A run's ``summary.json`` keeps ``phases_s``: seconds of start-up (interpreter and imports, up to
the training call), data (tokenizer and token ids), build (model, optimizer, step), the first
dispatch (the training step's compilation and its steps), the other training dispatches,
evaluations, checkpoints, saving the model and the final sample. The phases do not overlap, so
their sum is the process's time up to the summary; what a whole process adds after it (exit) is
its wall time minus that sum (`benchmarks/speedrun_char.py` reports both).

>>> phases = Phases()
>>> with phases("data"):
...     pass
>>> sorted(phases.seconds())
['data']
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

__all__ = ["Phases", "process_age"]


def process_age() -> float | None:
    """Seconds since this process started (interpreter start-up and imports included), or None
    where the operating system does not say (read from ``/proc`` on Linux)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            # the command name (field 2) may hold spaces; the fields after its ")" are fixed
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")


class Phases:
    """Seconds spent in named phases, added up over every entry of each (``with phases(name)``)."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._lap = time.perf_counter()

    def lap(self, name: str) -> None:
        """Count the seconds since the last lap (or since this was made) in phase `name`: for
        consecutive phases of one long function."""
        now = time.perf_counter()
        self.add(name, now - self._lap)
        self._lap = now

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        """Count `seconds` more in phase `name`."""
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def seconds(self) -> dict[str, float]:
        """Each phase's seconds, rounded to milliseconds, in the order they were first entered."""
        return {name: round(s, 3) for name, s in self._seconds.items()}
