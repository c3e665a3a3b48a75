"""Evaluation tasks: what each GLUE task and IMDb reads, predicts and is scored by.

A `Task` is plain data: its inputs (one sentence or a pair), its label set (or a score range for
regression), its splits, where its files live in each supported layout, the `evaluate` module
that scores it and the scores that module reports. Built-in tasks register in
`lmkit.registry.tasks`; plugins add their own through the entry-point group ``lmkit.tasks`` with
a `Task` object.

>>> from lmkit.registry import tasks
>>> sst2 = tasks.get("glue/sst2")
>>> sst2.labels, sst2.is_pair, sst2.metrics, sst2.metric_for("dev")
(('0', '1'), False, ('accuracy',), ('glue', 'sst2'))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmkit.errors import DataError, RegistryError, did_you_mean
from lmkit.evaluation.metrics import METRICS
from lmkit.registry import tasks

__all__ = ["SCRATCH", "Task", "TsvLayout", "get_task"]

#: what `lmkit.evaluate`, ``lmkit eval`` and the notebook take instead of a run: the task model
#: trained from random weights
SCRATCH = "scratch"


@dataclass(frozen=True)
class TsvLayout:
    """Where a GLUE task lives in the official distribution and which columns it reads.

    `text_columns` and `label_column` are header names, or 0-based column positions for files
    without a header (CoLA).
    """

    folder: str
    files: dict[str, str]
    text_columns: tuple[str | int, ...]
    label_column: str | int
    header: bool = True


@dataclass(frozen=True)
class Task:
    """One evaluation task.

    `labels` are the label strings as written in the official files, in the order of the
    Hugging Face `datasets` class ids; an empty tuple means regression within `score_range`.
    `eval_split` is the split scored by default (GLUE test labels are not public).

    Scoring: `metric` names the shipped `evaluate` module (``lmkit.evaluation.metrics.METRICS``)
    and `metric_config` its configuration; `metric_configs` overrides the configuration for
    some splits (MNLI's ``dev_mismatched``). `metric` defaults to the module named like the
    first score, for tasks scored by a one-score module (``metrics=("accuracy",)``). `metrics`
    are the scores that module reports, the first being the main one.

    Tables: `benchmark` names the benchmark whose average includes the task ("GLUE"), and
    `data_folders` the sub-folders of a shared data folder that may hold the task's data
    (`lmkit.evaluation.loaders.find_task_data`).

    Tasks beyond flat classification (SuperGLUE, `lmkit.evaluation.superglue`): `jsonl` is the
    reader of their official JSONL layout (a `superglue.JsonlLayout`); `candidates` means each
    example has its own choices (ReCoRD's entities) instead of a fixed label set;
    `multiple_choice` means the labels name the record's ``choices`` (COPA), each scored against
    the context (`text_a`) by one shared head (`lmkit.evaluation.choice`; a `candidates` task
    is fine-tuned the same way over its record's ``choices``); `spans` is the number of marked
    spans each record gives as character offsets (``spans``: WiC's target word in each
    sentence, WSC's noun phrase and pronoun), which the head pools;
    `metric_inputs(predictions, examples)` gives the metric's ``compute`` arguments when they
    are not plain label ids (MultiRC's question groups, ReCoRD's answer strings); and
    `choices(record)` gives the ``(context, continuation)`` pairs that zero-shot scoring ranks,
    one per label (or candidate) in order (`lmkit.evaluation.zeroshot`).
    """

    name: str
    description: str
    labels: tuple[str, ...]
    metrics: tuple[str, ...]
    splits: tuple[str, ...]
    eval_split: str
    hf_path: str
    hf_config: str | None
    hf_text_columns: tuple[str, ...]
    hf_splits: dict[str, str] = field(default_factory=dict)
    glue: TsvLayout | None = None
    score_range: tuple[float, float] | None = None
    label_names: tuple[str, ...] = ()
    metric: str | None = None
    metric_config: str | None = None
    metric_configs: dict[str, str] = field(default_factory=dict)
    benchmark: str | None = None
    data_folders: tuple[str, ...] = ()
    jsonl: Any = None
    candidates: bool = False
    multiple_choice: bool = False
    spans: int = 0
    metric_inputs: Callable[[Any, Any], dict[str, Any]] | None = None
    choices: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = None

    def __post_init__(self) -> None:
        # Checked here, so that a plugin's typo shows when it registers, not after fine-tuning.
        if self.metric is None and not self.metrics:
            raise RegistryError(f"task {self.name} names no metric: give it metrics=(score names, ...) "
                                f"and metric=<module>, one of {', '.join(METRICS)}")
        module = self.metric_for(self.eval_split)[0]
        if module.lower() not in METRICS:  # load_metric ignores case
            raise RegistryError(
                f"task {self.name}: '{module}' is not a metric module{did_you_mean(module, METRICS)}; "
                f"set Task(metric=...) to the module that reports {', '.join(self.metrics)}, "
                f"one of {', '.join(METRICS)}"
            )

    @property
    def is_pair(self) -> bool:
        return len(self.hf_text_columns) == 2

    @property
    def is_regression(self) -> bool:
        return not self.labels and not self.candidates

    @property
    def loss(self) -> str:
        """The registry loss fine-tuning uses unless the `loss` option says otherwise."""
        return "squared_error" if self.is_regression else "cross_entropy"

    @property
    def num_outputs(self) -> int:
        """Width of the model head: one per class, or 1 for regression."""
        return len(self.labels) or 1

    @property
    def display_labels(self) -> tuple[str, ...]:
        """Human-readable class names (for confusion matrices)."""
        return self.label_names or self.labels

    def metric_for(self, split: str) -> tuple[str, str | None]:
        """The `evaluate` module and configuration that score `split`.

        >>> get_task("glue/mnli").metric_for("dev_mismatched")
        ('glue', 'mnli_mismatched')
        """
        return self.metric or self.metrics[0], self.metric_configs.get(split, self.metric_config)

    def hf_split(self, split: str) -> str:
        return self.hf_splits.get(split, split)

    def resolve_split(self, split: str | None) -> str:
        """The task's name for `split`: `None` is the scoring split; `validation` means `dev`.

        >>> get_task("glue/mnli").resolve_split("dev")
        'dev_matched'
        """
        if split is None:
            return self.eval_split
        key = split.lower().replace("validation", "dev")
        if key in self.splits:
            return key
        if key == "dev" and self.eval_split.startswith(("dev", "val")):
            return self.eval_split
        raise DataError(
            f"task {self.name} has no split '{split}'{did_you_mean(split, self.splits)}; "
            f"its splits are: {', '.join(self.splits)}"
        )


def get_task(name: "str | Task") -> Task:
    """Return the task registered as `name`; unknown names raise with close matches listed.

    >>> get_task("GLUE/SST2").name
    'glue/sst2'
    """
    return name if isinstance(name, Task) else tasks.get(name)


def _sentiment(kind: str) -> Callable[[dict[str, Any]], list[tuple[str, str]]]:
    """Zero-shot prompt of a sentiment task (lm-evaluation-harness's), labels negative, positive."""
    return lambda r: [(f"{r['text_a']}\nQuestion: Is this {kind} positive or negative?\nAnswer:", c)
                      for c in (" negative", " positive")]


def _entailment(r: dict[str, Any]) -> list[tuple[str, str]]:
    """Zero-shot prompt of a two-way entailment task: entailment (" True") first."""
    return [(f"{r['text_a']}\nQuestion: {r['text_b']} True or False?\nAnswer:", c) for c in (" True", " False")]


def _paraphrase(r: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f"Sentence 1: {r['text_a']}\nSentence 2: {r['text_b']}\nQuestion: Do both sentences mean the "
             f"same thing?\nAnswer:", c) for c in (" no", " yes")]


_GLUE_SPLITS = {"dev": "validation"}
_GLUE_FOLDERS = ("glue", "GLUE", "glue_data")


def _glue(
    key: str, folder: str, description: str, labels: tuple[str, ...], metrics: tuple[str, ...],
    hf_columns: tuple[str, ...], tsv_columns: tuple[str | int, ...], label_column: str | int,
    *, header: bool = True, aliases: tuple[str, ...] = (), splits: tuple[str, ...] = ("train", "dev"),
    eval_split: str = "dev", hf_splits: dict[str, str] | None = None, metric_config: str | None = None,
    **extra: object,
) -> Task:
    files = {s: f"{s}.tsv" for s in splits}
    task = Task(
        name=f"glue/{key}", description=description, labels=labels, metrics=metrics,
        splits=splits, eval_split=eval_split, hf_path="nyu-mll/glue", hf_config=key,
        hf_text_columns=hf_columns, hf_splits=hf_splits or _GLUE_SPLITS,
        glue=TsvLayout(folder, files, tsv_columns, label_column, header), metric="glue",
        metric_config=metric_config or key, benchmark="GLUE", data_folders=_GLUE_FOLDERS,
        **extra,  # type: ignore[arg-type]
    )
    tasks.register(task.name, task, aliases=aliases, description=description)
    return task


_glue("cola", "CoLA", "CoLA: is the sentence grammatical? (Matthews correlation)",
      ("0", "1"), ("matthews_correlation",), ("sentence",), (3,), 1, header=False,
      aliases=("cola",), label_names=("unacceptable", "acceptable"))
_glue("sst2", "SST-2", "SST-2: movie-review sentence sentiment (accuracy)",
      ("0", "1"), ("accuracy",), ("sentence",), ("sentence",), "label",
      aliases=("sst2", "sst-2", "glue/sst-2"), label_names=("negative", "positive"),
      choices=_sentiment("sentence"))
_glue("mrpc", "MRPC", "MRPC: are the two sentences paraphrases? (F1 and accuracy)",
      ("0", "1"), ("f1", "accuracy"), ("sentence1", "sentence2"), ("#1 String", "#2 String"),
      "Quality", aliases=("mrpc",), label_names=("not_equivalent", "equivalent"), choices=_paraphrase)
_glue("qqp", "QQP", "QQP: are the two questions duplicates? (F1 and accuracy)",
      ("0", "1"), ("f1", "accuracy"), ("question1", "question2"), ("question1", "question2"),
      "is_duplicate", aliases=("qqp",), label_names=("not_duplicate", "duplicate"))
_glue("stsb", "STS-B", "STS-B: similarity score 0-5 of two sentences (Pearson and Spearman)",
      (), ("pearson", "spearmanr"), ("sentence1", "sentence2"), ("sentence1", "sentence2"),
      "score", aliases=("stsb", "sts-b", "glue/sts-b"), score_range=(0.0, 5.0))
_glue("mnli", "MNLI", "MNLI: entailment, neutral or contradiction; dev_matched / dev_mismatched (accuracy)",
      ("entailment", "neutral", "contradiction"), ("accuracy",), ("premise", "hypothesis"),
      ("sentence1", "sentence2"), "gold_label", aliases=("mnli",),
      splits=("train", "dev_matched", "dev_mismatched"), eval_split="dev_matched",
      metric_config="mnli_matched", metric_configs={"dev_mismatched": "mnli_mismatched"},
      hf_splits={"dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"})
_glue("qnli", "QNLI", "QNLI: does the sentence answer the question? (accuracy)",
      ("entailment", "not_entailment"), ("accuracy",), ("question", "sentence"),
      ("question", "sentence"), "label", aliases=("qnli",))
_glue("rte", "RTE", "RTE: does the first sentence entail the second? (accuracy)",
      ("entailment", "not_entailment"), ("accuracy",), ("sentence1", "sentence2"),
      ("sentence1", "sentence2"), "label", aliases=("rte",), choices=_entailment)
_glue("wnli", "WNLI", "WNLI: Winograd pronoun resolution as entailment (accuracy)",
      ("0", "1"), ("accuracy",), ("sentence1", "sentence2"), ("sentence1", "sentence2"),
      "label", aliases=("wnli",), label_names=("not_entailment", "entailment"))

IMDB = Task(
    name="imdb", description="IMDb movie reviews: positive or negative (accuracy)",
    labels=("neg", "pos"), metrics=("accuracy",), splits=("train", "test"), eval_split="test",
    hf_path="stanfordnlp/imdb", hf_config=None, hf_text_columns=("text",),
    label_names=("negative", "positive"), metric="accuracy", data_folders=("imdb", "aclImdb"),
    choices=_sentiment("review"),
)
tasks.register("imdb", IMDB, aliases=("aclimdb",), description=IMDB.description)
