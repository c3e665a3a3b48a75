"""Examples -> token ids -> padded batches, for fine-tuning and batched scoring.

A sentence pair is encoded as ``a <sep> b`` where the separator is the tokenizer's encoding of a
line break (a token of every built-in tokenizer), so a backbone pretrained on text has seen it.
Long inputs are truncated to `max_length` tokens (a pair trims its longer side first). A
pretrained checkpoint's tokenizer encodes examples its own way (`encode_inputs`: BERT's
``[CLS] a [SEP] b [SEP]``, Hugging Face's longest-first truncation).
Marked spans (WiC's target word, WSC's noun phrase and pronoun: character offsets in the record's
``spans``) become token positions through the tokenizer (`encode_spans`): each text is encoded
piece by piece, cut at the span boundaries, so a span's tokens are exactly those of its
characters; a checkpoint's tokenizer maps them with its own character offsets instead.
Batches are right-padded with id 0 to a length rounded up to a multiple of 16, so a compiled step
sees a handful of shapes instead of one per batch; fine-tuning instead pads to the `pad_widths`
chosen for its own batches (the few widths that waste the least padding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmkit.evaluation.examples import Examples

__all__ = ["Encoded", "encode_examples", "encode_spans", "head_and_tail", "batches", "pad_widths",
           "SEPARATOR"]

SEPARATOR = "\n"
_BUCKET = 16
#: share of `max_length` that `head_and_tail` keeps from the start (Sun et al. 2019, "How to
#: fine-tune BERT for text classification": 128 + 382 of 512 tokens was IMDb's best cut)
HEAD_FRACTION = 0.25


@dataclass
class Encoded:
    """Token ids of each example (`ids[i]` is 1-D int32) and the labels.

    With `per_example` > 1 (multiple choice) an example is that many consecutive sequences of
    `ids` (one per choice), and `labels` has one entry per example. `spans` ``(N, S, 2)`` are
    the token positions ``[start, end)`` of each example's S marked spans (span tasks).
    """

    ids: list[np.ndarray]
    labels: np.ndarray
    per_example: int = 1
    spans: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids) // self.per_example

    def lengths(self) -> np.ndarray:
        """Each example's length in tokens (its longest sequence): what its batch pads to."""
        rows = np.asarray([len(ids) for ids in self.ids])
        return rows.reshape(-1, self.per_example).max(axis=1)


def _trim_pair(a: list[int], b: list[int], room: int) -> tuple[list[int], list[int]]:
    while len(a) + len(b) > room:
        if len(a) >= len(b):
            a = a[:-1]
        else:
            b = b[:-1]
    return a, b


def encode_examples(examples: Examples, tokenizer: Any, max_length: int) -> Encoded:
    """Tokenize every example of `examples` (truncated to `max_length` tokens)."""
    encode_inputs = getattr(tokenizer, "encode_inputs", None)
    if encode_inputs is not None:  # the input format the checkpoint was trained on
        return Encoded(encode_inputs(examples.text_a, examples.text_b, max_length), examples.labels)
    sep = list(tokenizer.encode(SEPARATOR))
    ids: list[np.ndarray] = []
    for i, a_text in enumerate(examples.text_a):
        a = list(tokenizer.encode(a_text))
        if examples.text_b is not None:
            a, b = _trim_pair(a, list(tokenizer.encode(examples.text_b[i])), max(max_length - len(sep), 0))
            a = a + sep + b
        ids.append(np.asarray(a[:max_length] or [0], dtype=np.int32))  # an empty text scores as one pad
    return Encoded(ids, examples.labels)


def head_and_tail(encoded: Encoded, max_length: int) -> Encoded:
    """`encoded` (untruncated) with each row longer than `max_length` cut to its first
    ``HEAD_FRACTION`` and its last tokens: a review's verdict is often in its last sentences.
    A checkpoint's ``[CLS]`` and final ``[SEP]`` stay at the ends.

    >>> head_and_tail(Encoded([np.arange(10)], np.zeros(1)), 8).ids[0].tolist()
    [0, 1, 4, 5, 6, 7, 8, 9]
    """
    head = max(1, int(max_length * HEAD_FRACTION))
    ids = [row if len(row) <= max_length else np.concatenate([row[:head], row[len(row) - (max_length - head):]])
           for row in encoded.ids]
    return dataclasses.replace(encoded, ids=ids)


def encode_spans(examples: Examples, tokenizer: Any, max_length: int) -> Encoded:
    """`encode_examples` with the token positions of each example's marked spans.

    A record's ``spans`` are ``(segment, start, end)``: character offsets (end exclusive) into
    `text_a` (segment 0) or `text_b` (segment 1). A span that truncation cut off is empty
    (``start == end``) and pools nothing.
    """
    if getattr(tokenizer, "encodings", None) is not None:  # a checkpoint's own input format
        return _checkpoint_spans(examples, tokenizer, max_length)
    sep = list(tokenizer.encode(SEPARATOR))
    ids, spans = [], []
    for i, a_text in enumerate(examples.text_a):
        marked = examples.record(i)["spans"]
        texts = [a_text] if examples.text_b is None else [a_text, examples.text_b[i]]
        cut = [_cut_encode(tokenizer, text, [c for seg, s, e in marked if seg == n for c in (s, e)])
               for n, text in enumerate(texts)]
        segments = [tokens for tokens, _ in cut]
        if len(segments) == 2:
            segments = list(_trim_pair(*segments, max(max_length - len(sep), 0)))
        offset = [0, len(segments[0]) + len(sep)]
        row = (segments[0] + sep + segments[1] if len(segments) == 2 else segments[0])[:max_length]
        found = []
        for seg, start, end in marked:
            kept = min(len(segments[seg]), max(max_length - offset[seg], 0))
            at = cut[seg][1]
            found.append((offset[seg] + min(at[start], kept), offset[seg] + min(at[end], kept)))
        ids.append(np.asarray(row or [0], dtype=np.int32))
        spans.append(found)
    return Encoded(ids, examples.labels, spans=np.asarray(spans, np.int32).reshape(len(ids), -1, 2))


def _cut_encode(tokenizer: Any, text: str, cuts: list[int]) -> tuple[list[int], dict[int, int]]:
    """`text` encoded piece by piece between the character positions `cuts`, and the token
    position at each cut."""
    points = sorted({0, len(text), *cuts})
    ids: list[int] = []
    at = {}
    for a, b in zip(points, points[1:]):
        at[a] = len(ids)
        ids += tokenizer.encode(text[a:b])
    at[points[-1]] = len(ids)
    return ids, at


def _checkpoint_spans(examples: Examples, tokenizer: Any, max_length: int) -> Encoded:
    """Span positions from a checkpoint tokenizer's offsets (its special tokens included)."""
    encodings = tokenizer.encodings(examples.text_a, examples.text_b, max_length)
    spans = []
    for i, enc in enumerate(encodings):
        found = []
        for seg, start, end in examples.record(i)["spans"]:
            inside = [t for t, (sid, (a, b)) in enumerate(zip(enc.sequence_ids, enc.offsets))
                      if sid == seg and a < end and b > start]
            found.append((inside[0], inside[-1] + 1) if inside else (0, 0))
        spans.append(found)
    return Encoded([np.asarray(e.ids, dtype=np.int32) for e in encodings], examples.labels,
                   spans=np.asarray(spans, np.int32).reshape(len(encodings), -1, 2))


def pad_widths(longest: Sequence[int] | np.ndarray, count: int) -> list[int]:
    """At most `count` padded lengths that minimise the padding of batches whose longest rows
    are `longest`: each batch pads to the smallest width that holds it.

    Every width is a compiled shape of the fine-tuning step (one XLA compilation each), so the
    widths are few, and chosen for the data instead of a fixed grid: on SST-2's short phrases
    (batches of 32 sorted by length) multiples of 16 pad to 1.7x the real tokens; these widths
    pad to about 1.5x with 4 shapes (1.36x with 6). Exact (dynamic programming over the distinct lengths).

    >>> pad_widths([5, 6, 6, 7, 30, 31], 2)
    [7, 31]
    """
    values, counts = np.unique(np.asarray(longest, dtype=np.int64), return_counts=True)
    if not len(values):
        return []
    n, count = len(values), max(1, min(count, len(values)))
    below = np.concatenate([[0], np.cumsum(counts)])  # batches with a longest row < values[j]
    # cost[k][j]: padded tokens (per row) of every batch up to values[j], with k + 1 widths, the
    # largest being values[j]; back[k][j]: index of the width before it
    cost = np.full((count, n), np.inf)
    back = np.zeros((count, n), dtype=np.int64)
    cost[0] = values * below[1:]
    for k in range(1, count):
        for j in range(k, n):
            options = cost[k - 1][:j] + values[j] * (below[j + 1] - below[1:j + 1])
            back[k][j] = int(np.argmin(options))
            cost[k][j] = options[back[k][j]]
    k = int(np.argmin(cost[:, n - 1]))
    widths, j = [int(values[-1])], n - 1
    while k > 0:
        j = int(back[k][j])
        widths.append(int(values[j]))
        k -= 1
    return sorted(widths)


def batches(encoded: Encoded, order: Sequence[int] | np.ndarray, batch_size: int,
            max_length: int, widths: Sequence[int] | None = None,
            ) -> Iterator[tuple[tuple[np.ndarray, ...], np.ndarray, int]]:
    """Yield ``(inputs, labels (B,), real)`` in `order`; the inputs are ``(tokens (B, T) int32,
    lengths (B,) int32)``, and ``spans (B, S, 2)`` for a span task. ``T`` is the smallest of
    `widths` that holds the batch (`pad_widths`), or by default its longest row rounded up to a
    multiple of 16.

    The last batch is filled up with copies of its first row to a full `batch_size` (so compiled
    functions keep their shapes); only its first `real` rows are examples. With
    ``encoded.per_example = C`` the B examples give ``B * C`` token rows, each example's together.
    """
    order = np.asarray(order)
    for start in range(0, len(order), batch_size):
        examples = order[start:start + batch_size]
        real = len(examples)
        if real < batch_size:
            examples = np.concatenate([examples, np.repeat(examples[:1], batch_size - real)])
        per = encoded.per_example
        rows = (examples[:, None] * per + np.arange(per)).reshape(-1)
        lengths = np.asarray([len(encoded.ids[r]) for r in rows], dtype=np.int32)
        longest = int(lengths.max())
        width = min(max_length, -(-longest // _BUCKET) * _BUCKET)
        if widths is not None:
            width = next((w for w in widths if w >= longest), width)
        tokens = np.zeros((len(rows), width), dtype=np.int32)
        for j, r in enumerate(rows):
            tokens[j, :lengths[j]] = encoded.ids[r]
        inputs = (tokens, lengths) if encoded.spans is None else (tokens, lengths, encoded.spans[examples])
        yield inputs, encoded.labels[examples], real
