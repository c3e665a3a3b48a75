"""Fine-tuning heads by task shape: one label per example, or one choice out of several (COPA).

A multiple-choice task (`Task.multiple_choice`) encodes each example as one sequence per choice,
``context <sep> choice`` (the context is `text_a`, the choices are the record's ``choices``);
`MultipleChoiceClassifier` scores every sequence with the same pooled head (one logit) and
returns the logits of an example's choices side by side, ``(B, C)``, so the task's
cross-entropy is a softmax over its choices. The examples' rows travel together through
`lmkit.evaluation.encoding.batches` (`Encoded.per_example`), so fine-tuning
(`FinetuneTrainee`) and scoring (`predict`) are the same as for any classifier.

>>> model, encode = head_for(get_task("superglue/copa"), backbone, "concat", 0.1)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

from lmkit.evaluation.encoding import Encoded, encode_examples
from lmkit.evaluation.heads import SequenceClassifier
from lmkit.evaluation.loaders import Examples
from lmkit.evaluation.tasks import Task

__all__ = ["MultipleChoiceClassifier", "encode_choices", "head_for"]


class MultipleChoiceClassifier(SequenceClassifier):
    """A `SequenceClassifier` with one logit per sequence, read as ``(B, choices)`` logits."""

    def __init__(self, backbone: Any, choices: int, pooling: str = "concat", dropout: float = 0.1,
                 **kwargs: Any) -> None:
        super().__init__(backbone, 1, pooling, dropout, **kwargs)
        self.choices = choices

    def call(self, inputs: Any, training: bool = False) -> Any:
        # inputs hold B * choices sequences, an example's choices next to each other
        return ops.reshape(super().call(inputs, training=training), (-1, self.choices))


def encode_choices(examples: Examples, tokenizer: Any, max_length: int) -> Encoded:
    """One ``context <sep> choice`` sequence per choice of each example (truncated as pairs are)."""
    choices = len(examples.task.labels)
    contexts = [text for text in examples.text_a for _ in range(choices)]
    options = [c for i in range(len(examples)) for c in examples.record(i)["choices"]]
    flat = Examples(examples.task, examples.split, examples.source, contexts, options,
                    np.repeat(examples.labels, choices))
    encoded = encode_examples(flat, tokenizer, max_length)
    return Encoded(encoded.ids, examples.labels, per_example=choices)


def head_for(task: Task, backbone: Any, pooling: str, dropout: float
             ) -> tuple[SequenceClassifier, Callable[[Examples, Any, int], Encoded]]:
    """The head for `task`'s shape, its weights created, and the encoder of its examples."""
    if task.multiple_choice:
        model: SequenceClassifier = MultipleChoiceClassifier(backbone, len(task.labels), pooling, dropout)
        rows, encode = len(task.labels), encode_choices
    else:
        model, rows, encode = SequenceClassifier(backbone, task.num_outputs, pooling, dropout), 1, encode_examples
    model((np.zeros((rows, 2), np.int32), np.ones((rows,), np.int32)))  # create the head's weights
    return model, encode
