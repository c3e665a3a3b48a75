"""Examples -> token ids -> padded batches, for fine-tuning and batched scoring.

A sentence pair is encoded as ``a <sep> b`` where the separator is the tokenizer's encoding of a
line break (a token of every built-in tokenizer), so a backbone pretrained on text has seen it.
Long inputs are truncated to `max_length` tokens (a pair trims its longer side first). A
pretrained checkpoint's tokenizer encodes examples its own way (`encode_inputs`: BERT's
``[CLS] a [SEP] b [SEP]``, Hugging Face's longest-first truncation).
Batches are right-padded with id 0 to a length rounded up to a multiple of 16, so a compiled step
sees a handful of shapes instead of one per batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmkit.evaluation.loaders import Examples

__all__ = ["Encoded", "encode_examples", "batches", "SEPARATOR"]

SEPARATOR = "\n"
_BUCKET = 16


@dataclass
class Encoded:
    """Token ids of each example (`ids[i]` is 1-D int32) and the labels.

    With `per_example` > 1 (multiple choice) an example is that many consecutive sequences of
    `ids` (one per choice), and `labels` has one entry per example.
    """

    ids: list[np.ndarray]
    labels: np.ndarray
    per_example: int = 1

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


def batches(encoded: Encoded, order: Sequence[int] | np.ndarray, batch_size: int,
            max_length: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Yield ``(tokens (B, T) int32, lengths (B,) int32, labels (B,), real)`` in `order`.

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
        width = min(max_length, -(-int(lengths.max()) // _BUCKET) * _BUCKET)
        tokens = np.zeros((len(rows), width), dtype=np.int32)
        for j, r in enumerate(rows):
            tokens[j, :lengths[j]] = encoded.ids[r]
        yield tokens, lengths, encoded.labels[examples], real
