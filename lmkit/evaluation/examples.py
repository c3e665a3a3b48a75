"""`Examples`: the labelled examples of one split of a task, whatever file family they came from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Examples"]


@dataclass
class Examples:
    """Labelled examples of one split: texts (a second list for pair tasks) and labels.

    `labels` are what the task's shape reads (`Shape.label_array`): class ids (int64, indexes
    into `task.labels`; for a candidates task, into the example's own candidates), scores
    (float32, regression) or target texts (generation, which also keeps them in `text_b`). `task` is
    the `lmkit.evaluation.tasks.Task` they belong to. Tasks read from nested
    files (SuperGLUE) also keep each example's fields in `records` (what zero-shot prompts and
    per-example candidates read) and, where metrics group examples (MultiRC's questions), the
    group id of each example in `groups`.
    """

    task: Any  #: the `Task` (not imported: tasks declare sources, which build `Examples`)
    split: str
    source: str
    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray
    records: list[dict[str, Any]] | None = None
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.text_a)

    def head(self, n: int) -> "Examples":
        """The first `n` examples (for quick runs)."""
        return self.take(np.arange(min(n, len(self))))

    def take(self, rows: "Sequence[int] | np.ndarray") -> "Examples":
        """The examples at `rows`, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return Examples(self.task, self.split, self.source, [self.text_a[i] for i in rows],
                        None if self.text_b is None else [self.text_b[i] for i in rows], self.labels[rows],
                        None if self.records is None else [self.records[i] for i in rows],
                        None if self.groups is None else self.groups[rows])

    def overlap(self, other: "Examples") -> int:
        """How many of these examples have the same texts as an example of `other` (a scored
        split that overlaps the training split measures memory, not skill)."""
        seen = set(other._keys())
        return sum(key in seen for key in self._keys())

    def _keys(self) -> list[tuple[Any, ...]]:
        # WSC asks about several span pairs of one text: the spans tell those examples apart
        spans = [tuple(map(tuple, r.get("spans", ()))) for r in self.records] if self.records else [()] * len(self)
        return list(zip(self.text_a, self.text_b or [None] * len(self), spans))

    def record(self, i: int) -> dict[str, Any]:
        """The fields of example `i`: its record, or ``text_a`` / ``text_b`` for flat tasks."""
        if self.records is not None:
            return self.records[i]
        return {"text_a": self.text_a[i], "text_b": None if self.text_b is None else self.text_b[i]}
