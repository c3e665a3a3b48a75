"""The task-shape protocol: what a task predicts, and everything that follows from it.

A `Shape` supplies, for the tasks of its kind: how a raw label is read (`label`, `label_array`,
`examples`), the fine-tuning head and the encoder of its examples (`head`), the default loss,
the fine-tuned scorer (`outputs`: raw outputs of the scored examples; `predictions` turns them
into what the metric reads), which predictions are right when accuracy is a proportion (`hits`:
Wilson's interval, McNemar's test), the metrics (`score`), the zero-shot scorer (`zeroshot`) and
the text of a prediction (`label_text`). Clients ask the shape, never which shape it is: what they
branch on is a capability of its registry entry (`Shape.has`):

* ``class_labels``: predictions and labels are ids into `Task.labels` (confusion matrices,
  stratified samples, label -1 marks an unlabelled example);
* ``own_choices``: every example has its own choices (ReCoRD's entities): label smoothing
  would spread probability onto padded choices; examples with no right choice teach nothing;
* ``ranked``: zero-shot scoring ranks the example's choices by likelihood (`Task.choices`);
* ``single_text``: one text per example, so ``truncation="head_tail"`` applies;
* ``generated``: predictions are texts generated from a source text (results keep the sources:
  ``predictions.tsv`` has source, reference and hypothesis columns).

A new shape is one module of `lmkit.evaluation.shapes` holding a `Shape` subclass registered in
`lmkit.registry.shapes` with its capabilities, plus its import in the package's ``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from lmkit.errors import ConfigError, DataError
from lmkit.evaluation.examples import Examples

__all__ = ["Shape", "Encoder"]

#: ``encode(examples, tokenizer, max_length) -> Encoded``
Encoder = Callable[[Examples, Any, int], Any]


class Shape:
    """What a task predicts. Subclasses set `name` (their registry name) and `loss` (the
    registry loss fine-tuning uses unless the ``loss`` option says otherwise)."""

    name: ClassVar[str] = ""
    loss: ClassVar[str] = "cross_entropy"
    #: the scores a task of this shape reports when it names none (`Task.metrics`), and their module
    default_metrics: ClassVar[tuple[str, ...]] = ()
    default_metric: ClassVar[str | None] = None
    default_metric_config: ClassVar[str | None] = None

    def has(self, capability: str) -> bool:
        """Whether this shape's registry entry declares `capability`."""
        from lmkit.registry import shapes

        return shapes.entry(self.name).has(capability)

    #: options (`EvalConfig` keys) that tasks of this shape do not use, with the reason; a user
    #: who sets one gets a `ConfigError` rather than a run that silently ignores it
    unused_options: ClassVar[Mapping[str, str]] = {}

    def check(self, task: Any) -> None:
        """Raise `RegistryError` when `task` cannot be of this shape (at declaration)."""

    def check_options(self, task: Any, cfg: Any) -> None:
        """Raise `ConfigError` when the user set an option (`cfg.given`, an `EvalConfig`) that
        `task` would ignore (`unused_options`).

        >>> Generation().check_options(get_task("multi30k"), EvalConfig(pooling="mean"))  # doctest: +SKIP
        Traceback (most recent call last):
        ConfigError: pooling='mean' is not used by translation/multi30k, a generation task: ...
        """
        unused = sorted(cfg.given & self.unused_options.keys())
        if unused:
            key = unused[0]
            raise ConfigError(f"{key}={getattr(cfg, key)!r} is not used by {task.name}, a {self.name} task: "
                              f"{self.unused_options[key]}; remove {key}")

    # -- reading --------------------------------------------------------------------------------
    def label(self, task: Any, value: Any, where: str) -> Any:
        """The label `value` (as written in the files, or a `datasets` id) as the shape holds it."""
        raise NotImplementedError

    def label_array(self, labels: Sequence[Any]) -> np.ndarray:
        return np.asarray(labels, np.int64)

    def examples(self, task: Any, split: str, source: str, text_a: list[str], text_b: list[str] | None,
                 labels: list[Any]) -> Examples:
        """The `Examples` a reader found (labels already read by `label`)."""
        return Examples(task, split, source, text_a, text_b, self.label_array(labels))

    # -- fine-tuning ----------------------------------------------------------------------------
    def num_outputs(self, task: Any) -> int:
        """Width of the head's output for `task`."""
        return len(task.labels) or 1

    def head(self, task: Any, backbone: Any, pooling: str, dropout: float,
             examples: Sequence[Examples] = ()) -> tuple[Any, Encoder]:
        """The head over `backbone` (its weights created) and the encoder of its examples.
        `examples` are the splits the head will see (a candidates head is as wide as the most
        candidates among them)."""
        raise NotImplementedError

    def outputs(self, model: Any, tokenizer: Any, examples: Examples, encode: Encoder, cfg: Any) -> np.ndarray:
        """The fine-tuned `model`'s outputs for `examples`, one row each (`cfg`: an `EvalConfig`)."""
        from lmkit.evaluation.finetune import predict

        return predict(model, encode(examples, tokenizer, cfg.max_length), cfg.eval_batch_size, cfg.max_length,
                       cfg.packing)

    # -- scoring --------------------------------------------------------------------------------
    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        """Predictions from outputs ``(N, C)`` (logits, or zero-shot choice scores)."""
        return outputs.argmax(-1)

    def metric_inputs(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        return {"predictions": [int(p) for p in predictions], "references": [int(y) for y in labels]}

    def hits(self, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
        """Whether each prediction is right, where accuracy counts right predictions (class ids,
        a choice's index): a proportion, with Wilson's interval and McNemar's test; else `None`."""
        if predictions.dtype.kind in "biu" and labels.dtype.kind in "biu":
            return predictions == labels
        return None

    def score(self, task: Any, split: str, predictions: np.ndarray, labels: np.ndarray,
              examples: Examples | None = None) -> dict[str, float]:
        """Score `split` with the `evaluate` module the task names (`Task.metric_for`); a task
        whose metric needs more than labels (MultiRC's groups, ReCoRD's answer strings) builds
        its arguments from the scored `examples` (`Task.metric_inputs`)."""
        from lmkit.evaluation.metrics import load_metric

        if self.has("class_labels") and len(labels) and int(np.min(labels)) < 0:
            raise DataError(f"split '{split}' of {task.name} has unlabelled examples (label -1: test labels "
                            f"are hidden); score a labelled split such as '{task.eval_split}'")
        if task.metric_inputs is not None:
            inputs = task.metric_inputs(predictions, examples)
        else:
            inputs = self.metric_inputs(predictions, labels)
        return load_metric(*task.metric_for(split)).compute(**inputs)

    def resampler(self, predictions: np.ndarray, labels: np.ndarray,
                  metrics: Sequence[str]) -> Callable[[np.ndarray], Mapping[str, np.ndarray]] | None:
        """``scores(rows)``: `metrics` of every resample of the examples (rows of indices ``(B,
        n)``), from statistics of each example computed once, equal to `score` on each resample
        (the bootstrap intervals, `lmkit.evaluation.intervals`); None: `score` is called per
        resample."""
        return None

    def signatures(self) -> dict[str, str]:
        """Strings that make the scores comparable elsewhere (sacreBLEU's signatures), per score."""
        return {}

    def label_text(self, task: Any, values: np.ndarray) -> list[str]:
        """How `values` (predictions or labels) read in a table of predictions."""
        if self.has("class_labels"):
            return [task.labels[int(v)] for v in values]
        return [str(int(v)) for v in values]

    def zeroshot(self, run: Any, examples: Examples, cfg: Any, name: str, shots: Examples | None) -> Any:
        """Score `examples` with `run`'s language model and no training (an `EvalResult`)."""
        if not self.has("ranked"):
            raise ConfigError(f"method='zeroshot' ranks choices by likelihood; {examples.task.name} is a "
                              f"{self.name} task, which has none: fine-tune it (method='finetune')")
        from lmkit.evaluation.zeroshot import evaluate_zeroshot

        return evaluate_zeroshot(run, examples, cfg, name, shots)
