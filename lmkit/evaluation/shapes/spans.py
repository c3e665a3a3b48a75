"""A label read from marked spans of the text: WiC's target word in each sentence, WSC's noun
phrase and pronoun.

The records keep each span as character offsets (``spans``: ``(segment, start, end)``);
`lmkit.evaluation.encoding.encode_spans` turns them into token positions through the tokenizer
and `lmkit.evaluation.heads.SpanClassifier` pools the hidden states over each, beside the
sequence's pooled vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lmkit.evaluation.examples import Examples
from lmkit.evaluation.shapes.classification import Classification, build_head
from lmkit.evaluation.shapes.protocol import Encoder
from lmkit.registry import shapes

__all__ = ["Spans"]


@shapes.register("spans", capabilities=("class_labels", "ranked"),
                 description="One label per example, read from its marked spans (WiC, WSC).")
@dataclass(frozen=True)
class Spans(Classification):
    """`count` marked spans per example, pooled by the head."""

    count: int = 2

    name: ClassVar[str] = "spans"

    def head(self, task: Any, backbone: Any, pooling: str, dropout: float,
             examples: Sequence[Examples] = ()) -> tuple[Any, Encoder]:
        from lmkit.evaluation.encoding import encode_spans
        from lmkit.evaluation.heads import SpanClassifier

        model = SpanClassifier(backbone, self.num_outputs(task), self.count, pooling, dropout)
        return build_head(model, 1, self.count), encode_spans
