"""Fine-tuning heads by task shape: one label per example, one choice out of several (COPA,
ReCoRD), or a label read from marked spans (WiC, WSC).

A choice task encodes each example as one sequence per choice, ``context <sep> choice``:
COPA's context is the premise with its connective and its two choices are the record's
``choices``; ReCoRD's context is the passage and its candidates are the query with each of the
passage's entities in place of ``@placeholder`` (`Task.candidates`: their number varies, so each
example is padded with empty rows up to the most candidates in its splits).
`MultipleChoiceClassifier` scores every sequence with the same pooled head (one logit) and
returns the logits of an example's choices side by side, ``(B, C)``, padding rows at -1e9, so
the task's cross-entropy is a softmax over the example's own choices. The examples' rows travel
together through `lmkit.evaluation.encoding.batches` (`Encoded.per_example`), so fine-tuning
(`FinetuneTrainee`) and scoring (`predict`) are the same as for any classifier.

A span task (`Task.spans`) gives the head the token positions of its marked spans
(`lmkit.evaluation.encoding.encode_spans`): `SpanClassifier` pools the hidden states over each.

>>> model, encode = head_for(get_task("superglue/copa"), backbone, "concat", 0.1)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from keras import ops

from lmkit.errors import DataError
from lmkit.evaluation.encoding import Encoded, encode_examples, encode_spans
from lmkit.evaluation.heads import SequenceClassifier, SpanClassifier
from lmkit.evaluation.loaders import Examples
from lmkit.evaluation.tasks import Task

__all__ = ["MultipleChoiceClassifier", "candidate_count", "encode_choices", "head_for", "PADDED_CHOICE"]

#: the logit of a padding row (an example with fewer candidates than the head's width)
PADDED_CHOICE = -1e9
_NO_ROW = np.zeros(0, np.int32)


class MultipleChoiceClassifier(SequenceClassifier):
    """A `SequenceClassifier` with one logit per sequence, read as ``(B, choices)`` logits;
    rows of length 0 are padding (fewer candidates than `choices`) and get `PADDED_CHOICE`."""

    def __init__(self, backbone: Any, choices: int, pooling: str = "concat", dropout: float = 0.1,
                 **kwargs: Any) -> None:
        super().__init__(backbone, 1, pooling, dropout, **kwargs)
        self.choices = choices

    def call(self, inputs: Any, training: bool = False) -> Any:
        # inputs hold B * choices sequences, an example's choices next to each other
        logits = ops.reshape(super().call(inputs, training=training), (-1, self.choices))
        real = ops.reshape(ops.cast(inputs[1], "int32") > 0, (-1, self.choices))
        return ops.where(real, logits, ops.cast(PADDED_CHOICE, logits.dtype))


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


def head_for(task: Task, backbone: Any, pooling: str, dropout: float, examples: Sequence[Examples] = ()
             ) -> tuple[SequenceClassifier, Callable[[Examples, Any, int], Encoded]]:
    """The head for `task`'s shape, its weights created, and the encoder of its examples.

    `examples` are the splits the head will see; a candidates task (ReCoRD) is as wide as the
    most candidates among them.
    """
    spans = np.zeros((1, task.spans, 2), np.int32)
    if task.multiple_choice or task.candidates:
        width = candidate_count(examples) if task.candidates else len(task.labels)
        model: SequenceClassifier = MultipleChoiceClassifier(backbone, width, pooling, dropout)
        rows, encode = width, partial(encode_choices, choices=width)
    elif task.spans:
        model, rows, encode = SpanClassifier(backbone, task.num_outputs, task.spans, pooling, dropout), 1, encode_spans
    else:
        model, rows, encode = SequenceClassifier(backbone, task.num_outputs, pooling, dropout), 1, encode_examples
    inputs = (np.zeros((rows, 2), np.int32), np.ones((rows,), np.int32))
    model(inputs + (np.repeat(spans, rows, 0),) if task.spans else inputs)  # create the head's weights
    return model, encode
