"""Several short examples in one row: packing instead of padding.

A batch of examples of different lengths padded to its longest computes every padded position.
Packed, the examples are laid end to end in rows of one `width` (first-fit decreasing: the
longest first, each into the first row with room), so a batch computes about its real tokens.
`segments` number the examples of a row 1, 2, ... (0: padding at the row's end); a model with
the capability ``"packing"`` (`lmkit.models.base.PACKING`) attends only within a segment and
restarts positions at each, so each example's hidden states are those it has alone. `offsets`
say where each example starts in the flattened rows (``row * width + start``), which is what
per-example pooling and per-example outputs read (`lmkit.forward.pool`).

>>> packed = pack([[5, 6, 7], [8, 9], [4]], width=4)
>>> packed.tokens.tolist(), packed.segments.tolist()
([[5, 6, 7, 4], [8, 9, 0, 0]], [[1, 1, 1, 2], [1, 1, 0, 0]])
>>> packed.offsets.tolist(), packed.lengths.tolist()
([0, 4, 3], [3, 2, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from lmkit.errors import ConfigError

__all__ = ["Packed", "first_fit", "pack"]


class Packed(NamedTuple):
    """Examples packed into rows: ``tokens`` and ``segments`` ``(R, W)`` int32, and per example
    its ``lengths`` ``(N,)`` and ``offsets`` ``(N,)`` (its first token in the flattened rows).
    A pytree: it travels through compiled steps as the model's inputs."""

    tokens: Any
    lengths: Any
    segments: Any
    offsets: Any


def first_fit(lengths: Sequence[int] | np.ndarray, width: int) -> np.ndarray:
    """The row of each example when examples of these `lengths` are packed into rows of
    `width` tokens by first-fit decreasing (rows numbered in the order they are opened).

    >>> first_fit([3, 2, 1], 4).tolist()
    [0, 1, 0]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and (lengths.max() > width or lengths.min() < 1):
        raise ConfigError(f"packing needs examples of 1 to width={width} tokens, got lengths from "
                          f"{int(lengths.min())} to {int(lengths.max())}")
    row = np.empty(len(lengths), dtype=np.int64)
    free: list[int] = []  # room left in each open row (plain ints: a batch has few rows)
    order = np.argsort(-lengths, kind="stable")
    for i, n in zip(order.tolist(), lengths[order].tolist()):
        r = next((r for r, room in enumerate(free) if room >= n), len(free))
        if r == len(free):
            free.append(width)
        free[r] -= n
        row[i] = r
    return row


def pack(rows: Sequence[Any], width: int, row_of: np.ndarray | None = None,
         n_rows: int | None = None, pad_id: int = 0) -> Packed:
    """`rows` (token ids of each example) packed into `n_rows` rows of `width` (default: as
    many as `row_of` uses) at the rows `row_of` gives (default: `first_fit`); within a row the
    examples follow each other longest first, the rest is `pad_id` in segment 0."""
    arrays = [np.asarray(r, dtype=np.int32) for r in rows]
    lengths = np.asarray([len(a) for a in arrays], dtype=np.int32)
    row_of = first_fit(lengths, width) if row_of is None else np.asarray(row_of)
    used = int(row_of.max()) + 1 if len(row_of) else 0
    n_rows = used if n_rows is None else n_rows
    if n_rows < used:
        raise ConfigError(f"{len(arrays)} examples need {used} packed rows of {width} tokens, "
                          f"got n_rows={n_rows}")
    tokens = np.full((n_rows, width), pad_id, np.int32)
    segments = np.zeros((n_rows, width), np.int32)
    offsets = np.empty(len(arrays), np.int32)
    filled = np.zeros(n_rows, np.int64)
    count = np.zeros(n_rows, np.int32)
    for i in np.argsort(-lengths, kind="stable"):
        r, start = row_of[i], filled[row_of[i]]
        if start + lengths[i] > width:
            raise ConfigError(f"row {r} cannot hold example {i} ({lengths[i]} tokens after "
                              f"{start} of {width})")
        tokens[r, start:start + lengths[i]] = arrays[i]
        count[r] += 1
        segments[r, start:start + lengths[i]] = count[r]
        offsets[i] = r * width + start
        filled[r] += lengths[i]
    return Packed(tokens, lengths, segments, offsets)
