"""`EvalResult`: the scores, per-example predictions and confusion matrix of one evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lmkit.errors import ConfigError

__all__ = ["EvalResult", "score", "main_of", "generate_texts", "MAIN"]

#: the metric that is a task's one number where it has several (the GLUE board's mean of two)
MAIN = "combined_score"


def main_of(metrics: dict[str, float]) -> tuple[str, float]:
    """The main metric of `metrics` and its value: `MAIN` where present, else the first metric.

    >>> main_of({"f1": 0.8, "accuracy": 0.7, "combined_score": 0.75})
    ('combined_score', 0.75)
    """
    name = MAIN if MAIN in metrics else next(iter(metrics))
    return name, float(metrics[name])


def score(task: Any, split: str, predictions: np.ndarray, labels: np.ndarray,
          examples: Any = None) -> dict[str, float]:
    """Score `split` of `task` (a `Task`) as its shape does (`Shape.score`: the `evaluate`
    module the task names, or BLEU and ROUGE for generation).

    >>> score(get_task("glue/mrpc"), "dev", np.array([0, 1, 1, 1]), np.array([0, 1, 0, 1]))  # doctest: +SKIP
    {'f1': 0.8, 'accuracy': 0.75, 'combined_score': 0.775}
    """
    return task.shape.score(task, split, predictions, labels, examples)


def generate_texts(task: Any, model: Any, tokenizer: Any, sources: "str | list[str]",
                   options: dict[str, Any]) -> list[str]:
    """A generation task's outputs for `sources` from a fine-tuned `model` (the task's head, or
    the language model itself), decoded by `Shape.generate` with the decoding keys of `options`
    (`EvalConfig` keys); what `EvalResult.decode` and `FineTuned.decode` do.

    >>> generate_texts(result.task, result.model, result.tokenizer, "Ein Hund.", {"num_beams": 2})  # doctest: +SKIP
    ['A dog.']
    """
    from lmkit.config import EvalConfig

    texts = [sources] if isinstance(sources, str) else list(sources)
    model = getattr(model, "backbone", model)  # the fine-tuned head wraps the language model
    return task.shape.generate(model, tokenizer, texts, EvalConfig.from_dict(options)).tolist()


def _confusion(num_classes: int, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Counts ``[true label, predicted label]``."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


@dataclass
class EvalResult:
    """What `lmkit.evaluate` returns.

    >>> result.metrics                      # doctest: +SKIP
    {'accuracy': 0.82}
    >>> result.intervals["accuracy"]        # 95 %, method named  # doctest: +SKIP
    Interval(low=0.79, high=0.85, method='wilson')
    >>> result.baselines["majority"]        # the same metrics of a constant guess  # doctest: +SKIP
    {'accuracy': 0.51}
    >>> result.confusion_matrix             # rows: true label, columns: predicted  # doctest: +SKIP
    >>> result.to_dataframe().head()        # doctest: +SKIP
    >>> result.save("out/")                 # metrics.json + predictions.tsv  # doctest: +SKIP
    """

    task: Any  #: the `lmkit.evaluation.tasks.Task` scored
    split: str
    model_name: str
    metrics: dict[str, float]
    predictions: np.ndarray
    labels: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)
    examples: Any = field(default=None, repr=False)  #: the scored `Examples` (intervals, baselines)
    #: cross-validation (``folds = k``): each fold's metrics; `metrics` are then their means
    folds: list[dict[str, float]] | None = None
    #: the source texts of a generation task's examples (shape capability ``generated``), else empty
    sources: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def build(cls, task: Any, split: str, model_name: str, outputs: np.ndarray, labels: np.ndarray,
              examples: Any = None, **extra: Any) -> "EvalResult":
        """Turn raw model outputs (logits ``(N, C)``, zero-shot choice scores, decoded texts) into
        predictions (`Shape.predictions`) and scores; `examples` are the scored `Examples`."""
        predictions = task.shape.predictions(outputs)
        if task.shape.has("generated") and examples is not None:
            extra.setdefault("sources", [" ".join(str(s).split()) for s in examples.text_a])  # one line each
        return cls(task, split, model_name, score(task, split, predictions, labels, examples),
                   predictions, labels, examples=examples, **extra)

    @cached_property
    def intervals(self) -> dict[str, Any]:
        """A 95 % `Interval` per metric (`lmkit.evaluation.intervals`: Wilson for accuracy, a
        seeded bootstrap over the examples for the others), computed on first use."""
        from lmkit.evaluation.intervals import intervals_of

        return intervals_of(self)

    @cached_property
    def baselines(self) -> dict[str, dict[str, float]]:
        """The metrics of a model that learned nothing (`lmkit.evaluation.baselines`: majority
        class, chance, copying the source), on the same examples."""
        from lmkit.evaluation.baselines import baselines_of

        return baselines_of(self)

    def fold_sd(self) -> dict[str, float]:
        """The standard deviation over the folds of each metric (``ddof=1``); `{}` without folds."""
        if not self.folds or len(self.folds) < 2:
            return {}
        return {m: float(np.std([f[m] for f in self.folds], ddof=1)) for m in self.metrics}

    @property
    def confusion_matrix(self) -> np.ndarray | None:
        """``[true, predicted]`` counts for tasks whose labels are classes; `None` for the others."""
        if not self.task.shape.has("class_labels"):
            return None
        return _confusion(len(self.task.labels), self.predictions, self.labels)

    @property
    def partial(self) -> bool:
        """Whether fine-tuning ended before its budget (Stop, Ctrl-C, SIGTERM): the scores are
        those of a head trained for `training["steps"]` steps only."""
        return self.training.get("reason") in ("stopped", "interrupted", "terminated")

    @property
    def main_score(self) -> float:
        """One number per task (the GLUE board's): the combined score, else the first metric."""
        return main_of(self.metrics)[1]

    @property
    def main_interval(self) -> Any:
        """The 95 % `Interval` of `main_score`, or `None` when it has none."""
        return self.intervals.get(main_of(self.metrics)[0])

    def main_baselines(self) -> dict[str, float]:
        """Each baseline's main score (same metric as `main_score`), e.g. ``{"majority": 0.68}``."""
        name = main_of(self.metrics)[0]
        return {kind: scores[name] for kind, scores in self.baselines.items() if name in scores}

    def label_text(self, values: np.ndarray) -> list[str]:
        return self.task.shape.label_text(self.task, values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-example data)."""
        cm = self.confusion_matrix
        return {
            "task": self.task.name, "split": self.split, "model": self.model_name,
            "examples": int(len(self.labels)), "metrics": dict(self.metrics),
            "intervals": {k: v.to_dict() for k, v in self.intervals.items()},
            "baselines": {k: dict(v) for k, v in self.baselines.items()},
            **({"folds": [dict(f) for f in self.folds], "fold_sd": self.fold_sd()} if self.folds else {}),
            "main_score": self.main_score, "partial": self.partial,
            "signatures": self.task.shape.signatures(),
            "labels": list(self.task.display_labels),
            "confusion_matrix": None if cm is None else cm.tolist(),
            "training": dict(self.training), "config": dict(self.config),
        }

    def _columns(self) -> dict[str, list[str]]:
        """The per-example table: prediction and label, or a generation task's source, reference
        and hypothesis."""
        predictions, labels = self.label_text(self.predictions), self.label_text(self.labels)
        if self.sources:
            return {"source": list(self.sources), "reference": labels, "hypothesis": predictions}
        return {"prediction": predictions, "label": labels}

    def to_dataframe(self) -> Any:
        """Per-example predictions as a pandas DataFrame (index, prediction, label; for a
        generation task index, source, reference, hypothesis)."""
        import pandas as pd

        return pd.DataFrame(self._columns()).rename_axis("index")

    def showcase(self, n: int = 3, seed: int = 0) -> Any:
        """A generation task's `n` best, `n` worst and `n` random examples by sentence BLEU
        (sacreBLEU's `sentence_bleu`), as a pandas DataFrame (which, bleu, source, reference,
        hypothesis): what the scores mean, in examples.

        >>> result.showcase(2)                                      # doctest: +SKIP
        """
        import pandas as pd
        import sacrebleu

        if not self.sources:
            raise ConfigError(f"showcase() shows generated texts; {self.task.name} is a {self.task.shape.name} "
                              f"task: see to_dataframe() or confusion_matrix")
        table = self.to_dataframe()
        table.insert(0, "bleu", [sacrebleu.sentence_bleu(h, [r]).score
                                 for h, r in zip(table["hypothesis"], table["reference"])])
        ranked = table.sort_values("bleu", ascending=False, kind="stable")
        rng = np.random.default_rng(seed)
        picks = {"best": ranked.head(n), "worst": ranked.tail(n).iloc[::-1],
                 "random": table.iloc[np.sort(rng.choice(len(table), min(n, len(table)), replace=False))]}
        return pd.concat([rows.assign(which=which) for which, rows in picks.items()]).set_index("which")

    def decode(self, sources: "str | list[str]", **options: Any) -> list[str]:
        """A generation task's outputs for new `sources` from the fine-tuned model, decoded as the
        scored ones were (`options`: the decoding keys ``num_beams``, ``length_penalty``,
        ``no_repeat_ngram_size``, ``max_new_tokens`` to change).

        >>> result.decode("Ein Mann fährt Fahrrad.", num_beams=4)      # doctest: +SKIP
        ['A man rides a bike.']
        """
        if not self.sources or self.model is None:
            raise ConfigError(f"decode() continues sources with a generation task's model; this result of "
                              f"{self.task.name} ({self.task.shape.name}) has none")
        return generate_texts(self.task, self.model, self.tokenizer, sources, {**self.config, **options})

    def save(self, out_dir: str | Path) -> Path:
        """Write ``metrics.json`` and ``predictions.tsv`` (index, prediction, label; for a
        generation task index, source, reference, hypothesis) to `out_dir`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        columns = self._columns()
        rows = ["\t".join(["index", *columns])]
        rows += ["\t".join([str(i), *cells]) for i, cells in enumerate(zip(*columns.values()))]
        (out / "predictions.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        return out

    def __repr__(self) -> str:
        sd = self.fold_sd()
        shown = ", ".join(f"{k}={v:.4f}" + (f" ± {sd[k]:.4f} over {len(self.folds or ())} folds" if k in sd
                                             else f" {self.intervals[k]}" if k in self.intervals else "")
                          for k, v in self.metrics.items())
        partial = f", partial: fine-tuning {self.training['reason']} at step {self.training.get('steps')}" \
            if self.partial else ""
        return (f"EvalResult(task='{self.task.name}', split='{self.split}', model='{self.model_name}', "
                f"{shown}{partial})")
