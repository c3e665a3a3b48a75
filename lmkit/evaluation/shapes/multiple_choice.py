"""One choice out of several per example: a fixed number (COPA) or each example's own (ReCoRD).

A choice task encodes each example as one sequence per choice, ``context <sep> choice``:
COPA's context is the premise with its connective and its two choices are the record's
``choices``; ReCoRD's context is the passage and its candidates are the query with each of the
passage's entities in place of ``@placeholder`` (`Candidates`: their number varies, so each
example is padded with empty rows up to the most candidates in its splits).
`lmkit.evaluation.heads.MultipleChoiceClassifier` scores every sequence with the same pooled
head (one logit) and returns the logits of an example's choices side by side, ``(B, C)``,
padding rows at `PADDED_CHOICE`, so the task's cross-entropy is a softmax over the example's own
choices. The examples' rows travel together through `lmkit.evaluation.encoding.batches`
(`Encoded.per_example`), so fine-tuning and scoring are the same as for any classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np

from lmkit.errors import DataError
from lmkit.evaluation.encoding import Encoded, encode_examples
from lmkit.evaluation.examples import Examples
from lmkit.evaluation.shapes.classification import Classification, build_head
from lmkit.evaluation.shapes.protocol import Encoder
from lmkit.registry import shapes

__all__ = ["MultipleChoice", "Candidates", "candidate_count", "encode_choices"]

_NO_ROW = np.zeros(0, np.int32)


def candidate_count(examples: Sequence[Examples]) -> int:
    """The most choices any example of `examples` has (the width of a candidates head)."""
    counts = [len(e.record(i)["choices"]) for e in examples for i in range(len(e))]
    if not counts or min(counts) == 0:
        raise DataError("every example of a candidates task needs at least one candidate")
    return max(counts)


def encode_choices(examples: Examples, tokenizer: Any, max_length: int, choices: int | None = None) -> Encoded:
    """One ``context <sep> choice`` sequence per choice of each example (truncated as pairs are),
    padded with empty rows to `choices` per example (default: the task's label count)."""
    width = choices or len(examples.task.labels)
    counts = [len(examples.record(i)["choices"]) for i in range(len(examples))]
    if max(counts) > width:
        raise DataError(f"an example of {examples.task.name} in '{examples.source}' has {max(counts)} choices; "
                        f"the head scores at most {width}")
    contexts = [text for text, n in zip(examples.text_a, counts) for _ in range(n)]
    options = [c for i in range(len(examples)) for c in examples.record(i)["choices"]]
    flat = Examples(examples.task, examples.split, examples.source, contexts, options,
                    np.zeros(len(contexts), np.int64))
    rows = iter(encode_examples(flat, tokenizer, max_length).ids)
    ids = [row for n in counts for row in [*(next(rows) for _ in range(n)), *[_NO_ROW] * (width - n)]]
    return Encoded(ids, examples.labels, per_example=width)


@shapes.register("multiple_choice", capabilities=("class_labels", "ranked"),
                 description="One of a fixed number of choices, each scored against the context (COPA).")
@dataclass(frozen=True)
class MultipleChoice(Classification):
    """The labels name the record's ``choices`` in order; one shared score per choice."""

    name: ClassVar[str] = "multiple_choice"

    def width(self, task: Any, examples: Sequence[Examples]) -> int:
        """How many choices the head scores per example."""
        return len(task.labels)

    def head(self, task: Any, backbone: Any, pooling: str, dropout: float,
             examples: Sequence[Examples] = ()) -> tuple[Any, Encoder]:
        from lmkit.evaluation.heads import MultipleChoiceClassifier

        width = self.width(task, examples)
        model = MultipleChoiceClassifier(backbone, width, pooling, dropout)
        return build_head(model, width), partial(encode_choices, choices=width)


@shapes.register("candidates", capabilities=("own_choices", "ranked"),
                 description="One of each example's own candidates (ReCoRD's passage entities).")
@dataclass(frozen=True)
class Candidates(MultipleChoice):
    """Each example's record lists its own ``choices``; the label is an index into them (-1:
    none is right), computed by the task's reader."""

    name: ClassVar[str] = "candidates"

    def check(self, task: Any) -> None:
        """Candidates need no label set."""

    def label(self, task: Any, value: Any, where: str) -> int:
        return int(value)

    def width(self, task: Any, examples: Sequence[Examples]) -> int:
        return candidate_count(examples)
