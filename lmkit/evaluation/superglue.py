"""SuperGLUE's eight tasks: their official JSONL files, label types, spans and prompts.

Each task is a `Task` in the tasks registry (``superglue/boolq``, ``cb``, ``copa``, ``multirc``,
``record``, ``rte``, ``wic``, ``wsc``) scored by the shipped ``super_glue`` `evaluate` module.
`JsonlLayout` reads the official layout: a folder per task (``BoolQ/``, ``CB/``, ...) holding
``train.jsonl``, ``val.jsonl``, ``test.jsonl`` and the FewGLUE 32-example files
(``fewglue_train32.jsonl`` as split ``train32``, ``fewglue_dev32.jsonl`` as ``dev32``). Each line
becomes one or more examples:

* BoolQ, CB, RTE: a pair (passage / premise, then question / hypothesis).
* COPA: the premise and its connective ("because" / "so"), and the two choices: fine-tuned as
  multiple choice (`shapes.MultipleChoice`: each choice scored against the premise, softmax over the two).
* MultiRC: one binary example per answer option; `Examples.groups` keeps the question, since
  exact match is counted per question.
* ReCoRD: one example per query; its candidates are the passage's entities (no fixed labels),
  and its ``choices`` the query with each entity in place of ``@placeholder``: fine-tuned like
  COPA, one shared score per candidate and a softmax over the example's own candidates.
* WiC and WSC: the records keep the marked spans as character offsets (``spans``: WiC's target
  word in each sentence; WSC's noun phrase and pronoun, from its word indices), which the span
  head pools (`lmkit.evaluation.heads.SpanClassifier`).

Every problem in a file is a `DataError` naming the file and line: invalid JSON, a missing key,
a label of the wrong type (BoolQ, WiC, WSC: JSON booleans; COPA, MultiRC: integers 0/1; CB,
RTE: strings), an offset outside its sentence, an empty split. Test files have no labels: their
examples get label -1 and cannot be scored.

>>> from lmkit.evaluation.loaders import load_split
>>> wic = load_split("superglue/wic", "tests/fixtures/superglue", "val")   # doctest: +SKIP
>>> wic.text_a[0], wic.records[0]["spans"]                                 # doctest: +SKIP
('An emerging professional class.', [(0, 25, 30), (1, 85, 90)])
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lmkit.errors import DataError
from lmkit.evaluation.examples import Examples
from lmkit.evaluation.shapes import Candidates, MultipleChoice, Spans
from lmkit.evaluation.sources import Hub, Source
from lmkit.evaluation.tasks import Task
from lmkit.registry import tasks

__all__ = ["JsonlLayout", "SPLIT_FILES", "TASKS"]

#: split name -> file name in a task folder
SPLIT_FILES = {"train": "train.jsonl", "val": "val.jsonl", "test": "test.jsonl",
               "train32": "fewglue_train32.jsonl", "dev32": "fewglue_dev32.jsonl"}
_FOLDERS = ("superglue", "SuperGLUE", "super_glue", "FewGLUE")

#: one flattened example: text_a, text_b, label (raw JSON value, absent on test files),
#: optionally group, plus the fields prompts read
Row = dict[str, Any]


class _Where:
    """Raises `DataError`s that name the place being read: a file and line, or a `datasets`
    source and row."""

    def __init__(self, place: str) -> None:
        self.place = place

    def fail(self, message: str) -> None:
        raise DataError(f"{self.place}: {message}")

    def get(self, record: Any, key: str, kind: type | tuple[type, ...] = str, within: str = "") -> Any:
        """`record[key]`, which must exist and be of `kind` (a bool is not an int here)."""
        place = f" of {within}" if within else ""
        if not isinstance(record, dict) or key not in record:
            has = ", ".join(map(repr, record)) if isinstance(record, dict) else type(record).__name__
            self.fail(f"missing key '{key}'{place} (it has: {has})")
        value = record[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            self.fail(f"'{key}'{place} must be {' or '.join(k.__name__ for k in kinds)}, "
                      f"got {type(value).__name__} {value!r:.60}")
        return value


@dataclass(frozen=True)
class JsonlLayout(Source):
    """The SuperGLUE source: where a task lives (`folder` under the SuperGLUE root) and how a line becomes
    examples (`rows(record, where)`, raising through `where.fail`). `label_type` is the JSON
    type of the label (``bool``, ``int`` or ``str``), checked on every line. `record(row)` turns
    a row of the `datasets` ``super_glue`` config (flat columns, class-id labels) back into the
    official line, so parquet files, ``save_to_disk`` folders and the Hub are read by `rows` too."""

    folder: str
    rows: Callable[[dict[str, Any], _Where], list[Row]]
    label_type: type
    record: Callable[[dict[str, Any]], dict[str, Any]]

    layouts: ClassVar[tuple[str, ...]] = ("jsonl",)
    wants: ClassVar[str] = "reads JSONL files"

    def hub_hint(self, task: Task) -> str:
        return f"the SuperGLUE folder as distributed (SuperGLUE/{self.folder}/val.jsonl)"

    def file(self, path: Path, split: str) -> Path | None:
        """The file of `split` under `path` (the SuperGLUE root, the task folder, or the file)."""
        if path.is_file():
            return path
        name = SPLIT_FILES[split]
        return next((c for c in (path / self.folder / name, path / name) if c.is_file()), None)

    def expected(self, task: Task) -> str:
        files = ", ".join(SPLIT_FILES[s] for s in task.splits)
        return (f"{task.name} expects the official SuperGLUE layout: <superglue>/{self.folder}/"
                f"{{{files}}} (pass the SuperGLUE root or the {self.folder} folder).")

    def read(self, task: Task, split: str, path: Path) -> Examples:
        """Read `split` of `task` from `path` into `Examples`."""
        file = self.file(path, split)
        if file is None:
            name = SPLIT_FILES[split]
            raise DataError(f"no {task.name} '{split}' data in '{path}': looked for "
                            f"{path / self.folder / name} and {path / name}. {self.expected(task)}")
        try:
            lines = file.read_text(encoding="utf-8-sig").split("\n")
        except UnicodeDecodeError as exc:
            raise DataError(f"{file}: not valid UTF-8 at byte {exc.start}; SuperGLUE files are UTF-8") from None
        records = []
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append((_Where(f"{file}, line {lineno}"), json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{file}, line {lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        return self._examples(task, split, str(file), records)

    def from_columns(self, task: Task, split: str, source: str, columns: dict[str, list[Any]]) -> Examples:
        """Read `split` of `task` from `datasets` columns (parquet, ``save_to_disk``, the Hub)."""
        names = list(columns)
        rows = [dict(zip(names, values)) for values in zip(*columns.values())]
        records = []
        for i, row in enumerate(rows):
            where = _Where(f"{source}, row {i}")
            try:
                records.append((where, self.record(row)))
            except (KeyError, TypeError) as exc:
                where.fail(f"not a row of the datasets super_glue/{task.hub.config} config ({type(exc).__name__}: "
                           f"{exc}); columns: {', '.join(names)}")
        return self._examples(task, split, source, records)

    def _examples(self, task: Task, split: str, source: str, records: list[tuple[_Where, Any]]) -> Examples:
        rows: list[Row] = []
        for where, record in records:
            if not isinstance(record, dict):
                where.fail(f"expected a JSON object, got {type(record).__name__}")
            for row in self.rows(record, where):
                row["label"] = self._label(task, row.get("label", _MISSING), split, where)
                rows.append(row)
        if not rows:
            raise DataError(f"{source}: split '{split}' of {task.name} has no examples")
        groups = None
        if any("group" in r for r in rows):  # ids in order of first appearance, as ints
            ids: dict[Any, int] = {}
            groups = np.asarray([ids.setdefault(r["group"], len(ids)) for r in rows], np.int64)
        return Examples(task, split, source, [r["text_a"] for r in rows],
                        [r["text_b"] for r in rows] if rows[0].get("text_b") is not None else None,
                        np.asarray([r["label"] for r in rows], np.int64), rows, groups)

    def _label(self, task: Task, value: Any, split: str, where: _Where) -> int:
        """The class id of a raw label; -1 for a test line without one."""
        if value is _MISSING:
            if split == "test":
                return -1
            where.fail(f"missing key 'label' ({task.name} '{split}' lines are labelled; only test files are not)")
        if task.shape.has("own_choices"):
            return task.shape.label(task, value, where.place)  # the row computed it: an index into its own candidates
        if not isinstance(value, self.label_type) or (isinstance(value, bool) and self.label_type is not bool):
            where.fail(f"label {value!r} of {task.name} must be a JSON {_JSON_TYPE[self.label_type]} "
                       f"({', '.join(_json_labels(task, self.label_type))}), got {type(value).__name__}")
        text = json.dumps(value) if not isinstance(value, str) else value
        if text not in task.labels:
            where.fail(f"label {value!r} is not in the label set of {task.name}: "
                       f"{', '.join(_json_labels(task, self.label_type))}")
        return task.labels.index(text)


_MISSING = object()
_JSON_TYPE = {bool: "boolean", int: "integer", str: "string"}


def _json_labels(task: Task, kind: type) -> list[str]:
    return [label if kind is not str else json.dumps(label) for label in task.labels]


# -- one line -> examples ---------------------------------------------------------------------
def _with_label(row: Row, record: dict[str, Any]) -> Row:
    if "label" in record:
        row["label"] = record["label"]
    return row


def _boolq(r: dict[str, Any], w: _Where) -> list[Row]:
    passage, question = w.get(r, "passage"), w.get(r, "question")
    return [_with_label({"text_a": passage, "text_b": question, "passage": passage, "question": question}, r)]


def _premise_hypothesis(r: dict[str, Any], w: _Where) -> list[Row]:
    premise, hypothesis = w.get(r, "premise"), w.get(r, "hypothesis")
    return [_with_label({"text_a": premise, "text_b": hypothesis, "premise": premise,
                         "hypothesis": hypothesis}, r)]


_CONNECTIVE = {"cause": "because", "effect": "so"}


def _copa(r: dict[str, Any], w: _Where) -> list[Row]:
    premise, question = w.get(r, "premise"), w.get(r, "question")
    choices = [w.get(r, "choice1"), w.get(r, "choice2")]
    if question not in _CONNECTIVE:
        w.fail(f"'question' must be \"cause\" or \"effect\", got {question!r}")
    return [_with_label({"text_a": f"{premise} {_CONNECTIVE[question]}", "text_b": "\n".join(choices),
                         "premise": premise, "question": question, "choices": choices}, r)]


def _multirc(r: dict[str, Any], w: _Where) -> list[Row]:
    passage = w.get(r, "passage", dict)
    text = w.get(passage, "text", within="passage")
    rows = []
    for q in w.get(passage, "questions", list, within="passage"):
        question = w.get(q, "question", within="a question")
        group = (r.get("idx"), w.get(q, "idx", int, within="a question"))
        for a in w.get(q, "answers", list, within="a question"):
            answer = w.get(a, "text", within="an answer")
            row = {"text_a": text, "text_b": f"{question}\n{answer}", "passage": text,
                   "question": question, "answer": answer, "group": group}
            rows.append(_with_label(row, a))
    if not rows:
        w.fail("the passage has no questions with answers")
    return rows


def _record(r: dict[str, Any], w: _Where) -> list[Row]:
    passage = w.get(r, "passage", dict)
    text = w.get(passage, "text", within="passage")
    entities: list[str] = []
    for e in w.get(passage, "entities", list, within="passage"):
        start, end = w.get(e, "start", int, "an entity"), w.get(e, "end", int, "an entity")
        if not 0 <= start <= end < len(text):  # ReCoRD's `end` is inclusive
            w.fail(f"entity offsets {start}..{end} (end inclusive) are outside the passage "
                   f"({len(text)} characters)")
        if text[start:end + 1] not in entities:
            entities.append(text[start:end + 1])
    if not entities:
        w.fail("the passage lists no entities, so a query has no candidates")
    rows = []
    for qa in w.get(r, "qas", list):
        query = w.get(qa, "query", within="a query")
        if "@placeholder" not in query:
            w.fail(f"query {query[:60]!r} has no @placeholder")
        row: Row = {"text_a": text, "text_b": query, "passage": text, "query": query, "entities": entities,
                    "choices": [query.replace("@placeholder", e) for e in entities]}
        if "answers" in qa:
            answers = [w.get(a, "text", within="an answer") for a in w.get(qa, "answers", list, within="a query")]
            row["answers"] = answers
            # the class id is the first candidate that is a gold answer (-1: none is); the metric
            # reads the answer strings themselves
            row["label"] = next((i for i, e in enumerate(entities) if e in answers), -1)
        rows.append(row)
    return rows


def _span(w: _Where, sentence: str, start: Any, end: Any, which: str) -> tuple[int, int]:
    if not (isinstance(start, int) and isinstance(end, int)) or isinstance(start, bool):
        w.fail(f"offsets start{which}/end{which} must be integers, got {start!r}, {end!r}")
    if not 0 <= start < end <= len(sentence):
        w.fail(f"offsets start{which}={start}, end{which}={end} are outside sentence{which} "
               f"({len(sentence)} characters; end is exclusive)")
    return start, end


def _wic(r: dict[str, Any], w: _Where) -> list[Row]:
    s1, s2 = w.get(r, "sentence1"), w.get(r, "sentence2")
    a = _span(w, s1, w.get(r, "start1", int), w.get(r, "end1", int), "1")
    b = _span(w, s2, w.get(r, "start2", int), w.get(r, "end2", int), "2")
    return [_with_label({"text_a": s1, "text_b": s2, "sentence1": s1, "sentence2": s2, "word": w.get(r, "word"),
                         "target": s1[a[0]:a[1]], "spans": [(0, *a), (1, *b)]}, r)]


def _wsc(r: dict[str, Any], w: _Where) -> list[Row]:
    text = w.get(r, "text")
    target = w.get(r, "target", dict)
    words = text.split(" ")
    texts, offsets = [], []
    for n in (1, 2):
        index = w.get(target, f"span{n}_index", int, within="target")
        span = w.get(target, f"span{n}_text", within="target")
        length = max(1, len(span.split()))
        if not 0 <= index <= len(words) - length:
            w.fail(f"span{n}_index {index} (a word index into text.split(' ')) is outside the text's "
                   f"{len(words)} words for the {length}-word span {span!r}")
        start = sum(len(word) + 1 for word in words[:index])  # the words before, each with its space
        offsets.append((0, start, start + len(" ".join(words[index:index + length]))))
        texts.append(span)
    return [_with_label({"text_a": text, "text_b": None, "text": text, "span1": texts[0], "span2": texts[1],
                         "spans": offsets}, r)]


# -- a `datasets` super_glue row -> the official line ----------------------------------------
# `datasets` keeps the official fields but flattens MultiRC (a row per answer option) and ReCoRD
# (a row per query, entities as sorted strings), moves WSC's spans out of `target`, and stores
# labels as class ids (-1 on test rows).
def _official_label(labels: tuple[str, ...], label_type: type) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def label(row: dict[str, Any]) -> dict[str, Any]:
        value = row["label"]
        if value is None or value == -1:
            return {}
        if isinstance(value, str) or label_type is int:
            return {"label": value}
        return {"label": bool(value) if label_type is bool else labels[value]}
    return label


def _flat_record(labels: tuple[str, ...], label_type: type) -> Callable[[dict[str, Any]], dict[str, Any]]:
    label = _official_label(labels, label_type)
    return lambda row: {**{k: v for k, v in row.items() if k != "label"}, **label(row)}


def _wsc_record(row: dict[str, Any]) -> dict[str, Any]:
    target = {k: row[k] for k in ("span1_index", "span2_index", "span1_text", "span2_text")}
    return {"text": row["text"], "target": target, **_official_label(_YES_NO, bool)(row)}


def _multirc_record(row: dict[str, Any]) -> dict[str, Any]:
    idx = row["idx"]
    answer = {"text": row["answer"], "idx": idx["answer"], **_official_label((), int)(row)}
    return {"idx": idx["paragraph"], "passage": {"text": row["paragraph"], "questions": [
        {"question": row["question"], "idx": idx["question"], "answers": [answer]}]}}


def _record_record(row: dict[str, Any]) -> dict[str, Any]:
    text = row["passage"]
    # the entities' offsets (end inclusive), at their first place in the passage
    entities = [{"start": text.find(e), "end": text.find(e) + len(e) - 1} for e in map(str, row["entities"])]
    qa: dict[str, Any] = {"query": row["query"]}
    answers = row.get("answers")
    if answers is not None and len(answers):  # test rows have none (parquet gives arrays, not lists)
        qa["answers"] = [{"text": str(a)} for a in answers]
    return {"idx": row["idx"]["passage"], "passage": {"text": text, "entities": entities}, "qas": [qa]}


# -- zero-shot prompts (lm-evaluation-harness's, one continuation per label in order) ---------
def _yes_no(context: str) -> list[tuple[str, str]]:
    return [(context, " no"), (context, " yes")]


def _copa_choices(r: Row) -> list[tuple[str, str]]:
    context = f"{r['premise'].strip().rstrip('.')} {_CONNECTIVE[r['question']]}"
    return [(context, " " + c[:1].lower() + c[1:]) for c in r["choices"]]


def _record_context(passage: str) -> str:
    first, *highlights = passage.strip().split("\n@highlight\n")
    return first + "\n\n" + "".join(f"  - {h}.\n" for h in highlights)


def _record_choices(r: Row) -> list[tuple[str, str]]:
    context = _record_context(r["passage"])
    return [(context, "  - " + r["query"].replace("@placeholder", e)) for e in r["entities"]]


_PROMPTS: dict[str, Callable[[Row], list[tuple[str, str]]]] = {
    "boolq": lambda r: _yes_no(f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:"),
    "cb": lambda r: [(f"{r['premise']}\nQuestion: {r['hypothesis']} True, False, or Neither?\nAnswer:", c)
                     for c in (" True", " False", " Neither")],
    "copa": _copa_choices,
    "multirc": lambda r: _yes_no(f"{r['passage']}\nQuestion: {r['question']}\nAnswer: {r['answer']}\n"
                                 f"Is the answer correct?"),
    "record": _record_choices,
    "rte": lambda r: [(f"{r['premise']}\nQuestion: {r['hypothesis']} True or False?\nAnswer:", c)
                      for c in (" True", " False")],
    "wic": lambda r: _yes_no(f"Sentence 1: {r['sentence1']}\nSentence 2: {r['sentence2']}\nQuestion: Is the "
                             f"word '{r['target']}' used in the same way in the two sentences above?\nAnswer:"),
    "wsc": lambda r: _yes_no(f"Passage: {r['text']}\nQuestion: In the passage above, does the pronoun "
                             f"\"*{r['span2']}*\" refer to \"*{r['span1']}*\"?\nAnswer:"),
}


# -- metric inputs beyond label ids -----------------------------------------------------------
def _grouped_inputs(predictions: np.ndarray, examples: Examples) -> dict[str, Any]:
    return {"predictions": [int(p) for p in predictions], "references": [int(y) for y in examples.labels],
            "groups": [int(g) for g in examples.groups]}


def _record_inputs(predictions: np.ndarray, examples: Examples) -> dict[str, Any]:
    records = examples.records
    if any("answers" not in r for r in records):
        raise DataError(f"split '{examples.split}' of {examples.task.name} in '{examples.source}' has queries "
                        f"without answers (test labels are hidden); score a labelled split such as 'val'")
    return {"predictions": [records[i]["entities"][int(p)] for i, p in enumerate(predictions)],
            "references": [records[i]["answers"] for i in range(len(records))]}


# -- the tasks --------------------------------------------------------------------------------
_SPLITS = ("train", "val", "test", "train32", "dev32")
_YES_NO = ("false", "true")


def _superglue(key: str, folder: str, description: str, labels: tuple[str, ...], metrics: tuple[str, ...],
               rows: Callable[[dict[str, Any], _Where], list[Row]], label_type: type, *,
               hf_columns: tuple[str, ...] = (), record: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
               **extra: Any) -> Task:
    task = Task(
        name=f"superglue/{key}", source=JsonlLayout(folder, rows, label_type, record or _flat_record(labels, label_type)),
        description=description, labels=labels, metrics=metrics, inputs=hf_columns,
        splits=_SPLITS, eval_split="val", hub=Hub("aps/super_glue", key, {"val": "validation"}),
        metric="super_glue", metric_config=key, benchmark="SuperGLUE", data_folders=_FOLDERS,
        choices=_PROMPTS[key], **extra,
    )
    tasks.register(task.name, task, description=description)
    return task


TASKS = (
    _superglue("boolq", "BoolQ", "BoolQ: does the passage answer the yes/no question with yes? (accuracy)",
               _YES_NO, ("accuracy",), _boolq, bool, hf_columns=("passage", "question"),
               label_names=("no", "yes")),
    _superglue("cb", "CB", "CommitmentBank: does the premise entail the hypothesis? 3 classes (accuracy, macro-F1)",
               ("entailment", "contradiction", "neutral"), ("accuracy", "f1"), _premise_hypothesis, str,
               hf_columns=("premise", "hypothesis")),
    _superglue("copa", "COPA", "COPA: which choice is the cause / effect of the premise? (accuracy)",
               ("0", "1"), ("accuracy",), _copa, int, label_names=("choice1", "choice2"), shape=MultipleChoice()),
    _superglue("multirc", "MultiRC", "MultiRC: is each answer option to a question about the paragraph right? "
               "(exact match per question, F1 over all options)",
               ("0", "1"), ("exact_match", "f1_a"), _multirc, int, label_names=("false", "true"),
               metric_inputs=_grouped_inputs, record=_multirc_record),
    _superglue("record", "ReCoRD", "ReCoRD: which passage entity fills the query's @placeholder? "
               "(max-over-answers token F1, exact match)",
               (), ("f1", "exact_match"), _record, int, shape=Candidates(), metric_inputs=_record_inputs,
               record=_record_record),
    _superglue("rte", "RTE", "RTE: does the premise entail the hypothesis? (accuracy)",
               ("entailment", "not_entailment"), ("accuracy",), _premise_hypothesis, str,
               hf_columns=("premise", "hypothesis")),
    _superglue("wic", "WiC", "WiC: is the marked word used in the same sense in both sentences? (accuracy)",
               _YES_NO, ("accuracy",), _wic, bool, label_names=("different", "same"), shape=Spans(2)),
    _superglue("wsc", "WSC", "WSC: does the marked pronoun refer to the marked noun phrase? (accuracy)",
               _YES_NO, ("accuracy",), _wsc, bool, shape=Spans(2), record=_wsc_record),
)
