"""One label (or one score) per text or text pair: GLUE, IMDb, BoolQ, a user's CSV of reviews.

The head is a `SequenceClassifier` over the backbone's pooled hidden states: one logit per
label (`Classification`), or one output read as a score (`Regression`, trained with squared error).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lmkit.errors import DataError, RegistryError
from lmkit.evaluation.examples import Examples
from lmkit.evaluation.shapes.protocol import Encoder, Shape
from lmkit.registry import shapes

__all__ = ["Classification", "Regression", "build_head"]


def build_head(model: Any, rows: int, spans: int = 0) -> Any:
    """`model` called once, symbolically (`keras.Input`), on `rows` sequences (and `spans`
    spans each), which creates the head's weights. A call on real arrays would run the
    backbone's forward pass eagerly, each op compiled on its own (≈ 30 programs for MiniLM)."""
    import keras

    shapes: tuple[tuple[int, ...], ...] = ((2,), ()) + (((spans, 2),) if spans else ())
    model(tuple(keras.Input(shape, batch_size=rows, dtype="int32") for shape in shapes))
    return model


@shapes.register("classification", capabilities=("class_labels", "ranked", "single_text"),
                 description="One label out of a fixed set per text or text pair (GLUE, IMDb, BoolQ).")
@dataclass(frozen=True)
class Classification(Shape):
    """One label of `Task.labels` per example, read as the label string or a class id."""

    name: ClassVar[str] = "classification"
    default_metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    default_metric: ClassVar[str | None] = "accuracy"

    def check(self, task: Any) -> None:
        if not task.labels:
            raise RegistryError(f"task {task.name} is a {self.name} task with no labels: give "
                                f"labels=(...) as written in its files, or shape=Regression() for scores")

    def label(self, task: Any, value: Any, where: str) -> int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if 0 <= value < len(task.labels):
                return int(value)
        elif isinstance(value, str) and value.strip() in task.labels:
            return task.labels.index(value.strip())
        unlabeled = " (-1 marks the unlabeled GLUE test split; evaluate on a labelled split)" if value == -1 else ""
        raise DataError(f"{where}: label {value!r} is not in the label set of {task.name}: "
                        f"{', '.join(task.labels)} (or class ids 0..{len(task.labels) - 1}){unlabeled}")

    def head(self, task: Any, backbone: Any, pooling: str, dropout: float,
             examples: Sequence[Examples] = ()) -> tuple[Any, Encoder]:
        from lmkit.evaluation.encoding import encode_examples
        from lmkit.evaluation.heads import SequenceClassifier

        model = SequenceClassifier(backbone, self.num_outputs(task), pooling, dropout)
        return build_head(model, 1), encode_examples


@shapes.register("regression", capabilities=("single_text",),
                 description="A score per text or text pair, within a range (STS-B).")
@dataclass(frozen=True)
class Regression(Classification):
    """A score in ``[low, high]`` per example; one output, trained with squared error."""

    low: float = -math.inf
    high: float = math.inf

    name: ClassVar[str] = "regression"
    loss: ClassVar[str] = "squared_error"
    # the GLUE module's STS-B configuration reports both correlations
    default_metrics: ClassVar[tuple[str, ...]] = ("pearson", "spearmanr")
    default_metric: ClassVar[str | None] = "glue"
    default_metric_config: ClassVar[str | None] = "stsb"

    def check(self, task: Any) -> None:
        if task.labels:
            raise RegistryError(f"task {task.name} is a {self.name} task but names labels "
                                f"{', '.join(task.labels)}: a regression task has none")

    def label(self, task: Any, value: Any, where: str) -> float:
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = math.nan
        if not (self.low <= score <= self.high):
            raise DataError(f"{where}: score {value!r} of {task.name} must be a number in [{self.low}, {self.high}]")
        return score

    def label_array(self, labels: Sequence[Any]) -> np.ndarray:
        return np.asarray(labels, np.float32)

    def num_outputs(self, task: Any) -> int:
        return 1

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        return outputs[:, 0].astype(np.float32)

    def metric_inputs(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        return {"predictions": [float(p) for p in predictions], "references": [float(y) for y in labels]}

    def label_text(self, task: Any, values: np.ndarray) -> list[str]:
        return [f"{float(v):.4f}" for v in values]
