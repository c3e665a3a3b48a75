"""Evaluation tasks: a data source plus a shape, declared as data.

A `Task` says where its examples come from (`source`, a reader of one file family:
`lmkit.evaluation.sources`), what is predicted (`shape`: `lmkit.evaluation.shapes`), its labels,
splits and the `evaluate` module that scores it. GLUE, IMDb and Multi30K are declared here,
SuperGLUE in `lmkit.evaluation.superglue`; all register in `lmkit.registry.tasks`, and plugins
add their own through the entry-point group ``lmkit.tasks`` with a `Task` object. A user's task
over their own files is a `Task` passed to `lmkit.evaluate` directly, or a TOML file whose path
is given as the task name (`load_task_file`).

>>> from lmkit.registry import tasks
>>> sst2 = tasks.get("glue/sst2")
>>> sst2.labels, sst2.is_pair, sst2.metrics, sst2.metric_for("dev")
(('0', '1'), False, ('accuracy',), ('glue', 'sst2'))
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmkit.errors import ConfigError, DataError, RegistryError, did_you_mean
from lmkit.evaluation.metrics import METRICS
from lmkit.evaluation.shapes import Classification, Generation, Regression, Shape, get_shape
from lmkit.evaluation.sources import (Hub, ImdbSource, ParallelText, SciTldrJsonl, Source, TableSource, TextPairs,
                                      TsvSource)
from lmkit.registry import tasks

__all__ = ["SCRATCH", "Task", "get_task", "load_task_file"]

#: what `lmkit.evaluate`, ``lmkit eval`` and the notebook take instead of a run: the task model
#: trained from random weights
SCRATCH = "scratch"


@dataclass(frozen=True)
class Task:
    """One evaluation task: a data source and a shape, with its labels, splits and scores.

    Data: `source` reads the task's own file family (`lmkit.evaluation.sources`: GLUE TSV,
    SuperGLUE JSONL, aclImdb, a user's CSV/JSONL/parquet tables, line-aligned text); `inputs`
    name the text columns (one, or two for sentence pairs) and `target` the label column, in
    tables and `datasets` rows; `hub` says where the `datasets` copy lives (``data=None``).
    `splits` are the task's split names, `eval_split` the one scored by default (GLUE test
    labels are not public); `data_folders` the sub-folders of a shared data folder that may
    hold the task (`lmkit.evaluation.loaders.find_task_data`).

    Shape: `shape` (`lmkit.evaluation.shapes`: classification by default) supplies the head,
    the encoder, the loss, the scorers and the metrics' inputs. `labels` are the label strings
    as written in the files, in the order of the `datasets` class ids (none for regression,
    candidates and generation); `label_names` their readable names.

    Scoring: `metric` names the shipped `evaluate` module (``lmkit.evaluation.metrics.METRICS``)
    and `metric_config` its configuration; `metric_configs` overrides the configuration for
    some splits (MNLI's ``dev_mismatched``). `metrics` are the scores it reports, the first
    being the main one (default: the shape's, e.g. accuracy); `metric` defaults to the module
    named like the first score. `metric_inputs(predictions, examples)` gives the module's
    ``compute`` arguments when they are not plain labels (MultiRC's question groups, ReCoRD's
    answer strings). `benchmark` names the benchmark whose average includes the task ("GLUE").

    Zero-shot: `choices(record)` gives the ``(context, continuation)`` pairs that zero-shot
    scoring ranks, one per label (or candidate) in order (`lmkit.evaluation.zeroshot`).

    >>> from lmkit.evaluation.sources import TableSource
    >>> reviews = Task("reviews", TableSource(), labels=("neg", "pos"), inputs=("review",))
    >>> reviews.metrics, reviews.shape.loss
    (('accuracy',), 'cross_entropy')
    """

    name: str
    source: Source
    shape: Shape = Classification()
    labels: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    description: str = ""
    inputs: tuple[str, ...] = ("text",)
    target: str = "label"
    splits: tuple[str, ...] = ("train", "dev")
    eval_split: str = "dev"
    hub: Hub | None = None
    label_names: tuple[str, ...] = ()
    metric: str | None = None
    metric_config: str | None = None
    metric_configs: dict[str, str] = field(default_factory=dict)
    benchmark: str | None = None
    data_folders: tuple[str, ...] = ()
    choices: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = None
    metric_inputs: Callable[[Any, Any], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        # Checked here, so that a plugin's typo shows when it registers, not after fine-tuning.
        if not self.metrics and self.metric is None:
            object.__setattr__(self, "metrics", self.shape.default_metrics)
            object.__setattr__(self, "metric", self.shape.default_metric)
            if self.metric_config is None:
                object.__setattr__(self, "metric_config", self.shape.default_metric_config)
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
        self.shape.check(self)

    @property
    def is_pair(self) -> bool:
        return len(self.inputs) == 2

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
        """The `datasets` name of `split` (``validation`` for GLUE's ``dev``)."""
        return self.hub.splits.get(split, split) if self.hub else split

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


def get_task(name: "str | Path | Task") -> Task:
    """Return the task registered as `name` (unknown names raise with close matches listed), or
    the task a ``.toml`` file declares (`load_task_file`).

    >>> get_task("GLUE/SST2").name
    'glue/sst2'
    """
    if isinstance(name, Task):
        return name
    if str(name).endswith(".toml"):
        return load_task_file(name)
    return tasks.get(str(name))


#: the file families a TOML task may name (``[source] family = "table"``)
_FAMILIES: dict[str, type[Source]] = {"table": TableSource, "parallel": ParallelText, "pairs": TextPairs}


def load_task_file(path: "str | Path") -> Task:
    """The task declared by a TOML file: `Task`'s keys at the top level (or under ``[task]``),
    the shape as a name or a table (``[shape] name = "regression"`` with its options), the
    source as a ``[source]`` table (``family = "table"`` (default) or ``"parallel"``, with its
    options).

    >>> load_task_file("tests/fixtures/tasks/reviews.toml").labels        # doctest: +SKIP
    ('neg', 'pos')
    """
    file = Path(path).expanduser()
    try:
        table = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"task file '{file}' does not exist; a task name is a registered task "
                          f"(`lmkit list tasks`) or a .toml file declaring one") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML ({exc})") from None
    table = dict(table.get("task", table))
    where = f"{file}: "
    shape = table.pop("shape", "classification")
    options = dict(shape) if isinstance(shape, dict) else {"name": shape}
    source = dict(table.pop("source", {}))
    family = source.pop("family", "table")
    if family not in _FAMILIES:
        raise ConfigError(f"{where}[source] family = {family!r} is not one of {', '.join(map(repr, _FAMILIES))}")
    try:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
        return Task(source=_FAMILIES[family](**source), shape=get_shape(options.pop("name"), **options), **fields)
    except TypeError as exc:  # an unknown key
        raise ConfigError(f"{where}{exc}; the keys are Task's (docs/evaluation.md, \"Your own task\")") from None
    except RegistryError as exc:
        raise ConfigError(f"{where}{exc}") from None


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
        name=f"glue/{key}", source=TsvSource(folder, files, tsv_columns, label_column, header),
        description=description, labels=labels, metrics=metrics, inputs=hf_columns,
        splits=splits, eval_split=eval_split, hub=Hub("nyu-mll/glue", key, hf_splits or _GLUE_SPLITS),
        metric="glue", metric_config=metric_config or key, benchmark="GLUE", data_folders=_GLUE_FOLDERS,
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
      "score", aliases=("stsb", "sts-b", "glue/sts-b"), shape=Regression(0.0, 5.0))
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
    name="imdb", source=ImdbSource(), description="IMDb movie reviews: positive or negative (accuracy)",
    labels=("neg", "pos"), metrics=("accuracy",), splits=("train", "test"), eval_split="test",
    hub=Hub("stanfordnlp/imdb"), label_names=("negative", "positive"), metric="accuracy",
    data_folders=("imdb", "aclImdb"), choices=_sentiment("review"),
)
tasks.register("imdb", IMDB, aliases=("aclimdb",), description=IMDB.description)

#: Multi30K's language pairs (source-target); the first is `multi30k`'s
MULTI30K_PAIRS = ("de-en", "en-de", "fr-en", "en-fr")
_LANGUAGES = {"de": "German", "en": "English", "fr": "French"}


def _multi30k(pair: str) -> Task:
    source, target = pair.split("-")
    task = Task(
        name=f"multi30k/{pair}", source=ParallelText(source, target, {"dev": "val", "test": "test_2016_flickr"}),
        shape=Generation(), inputs=(source,), target=target, splits=("train", "dev", "test"), eval_split="test",
        description=f"Multi30K: translate {_LANGUAGES[source]} image captions to {_LANGUAGES[target]} (BLEU, chrF, ROUGE)",
        hub=Hub("bentrevett/multi30k", None, {"dev": "validation"}) if pair == "de-en" else None,
        data_folders=("multi30k",),
    )
    default = ("multi30k", "translation/multi30k") if pair == MULTI30K_PAIRS[0] else ()
    tasks.register(task.name, task, aliases=(*default, f"translation/multi30k/{pair}"),
                   description=task.description)
    return task


MULTI30K = _multi30k(MULTI30K_PAIRS[0])
for _pair in MULTI30K_PAIRS[1:]:
    _multi30k(_pair)

for _name, _what in (("translation", "translate"), ("summarization", "summarize")):
    _task = Task(name=_name, source=TextPairs(), shape=Generation(), inputs=("source",), target="target",
                 splits=("train", "dev", "test"), eval_split="dev",
                 description=f"Your own pairs: {_what} each source text into its target (BLEU, chrF, ROUGE); "
                             f"data=<folder of <split>.source/.target files or source,target tables>")
    tasks.register(_name, _task, description=_task.description)

#: SciTLDR-A (Cachola et al. 2020, Apache-2.0): abstracts of computer-science papers -> their
#: authors' one-sentence TLDRs; 1,992 / 619 / 618 pairs (a slice ships in lmkit/data/sample/scitldr)
SCITLDR = Task(
    name="summarization/scitldr", source=SciTldrJsonl(), shape=Generation(max_new_tokens=64),
    inputs=("source",), target="target", splits=("train", "dev", "test"), eval_split="test",
    metrics=("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf"), metric="rouge",
    description="SciTLDR: summarize a paper's abstract in one sentence, its authors' TLDR (ROUGE, BLEU)",
    data_folders=("scitldr", "SciTLDR-A"),
)
tasks.register(SCITLDR.name, SCITLDR, aliases=("scitldr",), description=SCITLDR.description)
