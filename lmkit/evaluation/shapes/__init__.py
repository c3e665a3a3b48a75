"""Task shapes: what a task predicts (`protocol.Shape`), one module per kind, each registered in
`lmkit.registry.shapes` with its capabilities.

>>> from lmkit.evaluation.shapes import Classification, Generation
>>> Classification().has("class_labels"), Generation().loss
(True, 'target_nll')
"""

from __future__ import annotations

from lmkit.evaluation.shapes.classification import Classification, Regression
from lmkit.evaluation.shapes.last_word import LastWord
from lmkit.evaluation.shapes.multiple_choice import Candidates, MultipleChoice
from lmkit.evaluation.shapes.perplexity import Perplexity
from lmkit.evaluation.shapes.protocol import Shape
from lmkit.evaluation.shapes.spans import Spans
from lmkit.evaluation.shapes.text_to_text import Generation

__all__ = ["Shape", "Classification", "Regression", "MultipleChoice", "Candidates", "Spans", "Generation", "Perplexity",
           "LastWord", "get_shape"]


def get_shape(name: str, **options: object) -> Shape:
    """The registered shape `name` with `options` (``get_shape("regression", low=0, high=5)``);
    unknown names raise with close matches listed."""
    from lmkit.registry import shapes

    return shapes.get(name)(**options)
