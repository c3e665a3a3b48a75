"""Language-model benchmarks in their official file formats, from a folder the user gives (no
downloads): perplexity over WikiText-2, WikiText-103 and the Penn Treebank (`Documents`), and the
multiple-choice HellaSwag, PIQA, ARC-Easy and ARC-Challenge (`ChoiceFiles`), and LAMBADA's
last word (`Passages`).

Perplexity tasks (shape `Perplexity`: per word, byte and token, ``method="zeroshot"``) read
WikiText's ``wiki.{train,valid,test}.tokens`` (or ``.raw``) as articles (a new article at each
top-level heading `` = Title = ``, as the harness's document-level WikiText) and PTB's
``ptb.{train,valid,test}.txt`` as one document per sentence line. The text is scored as it is in
the file (the harness detokenizes WikiText's `` @-@ `` and spaced punctuation first, so its word
perplexities are not the same numbers).

``lambada`` (shape `LastWord`, ``method="zeroshot"``) reads OpenAI's ``lambada_test.jsonl`` (the
harness's ``lambada_openai``: one ``{"text": ...}`` per line), each passage cut at its final
space into a context and the last word; ``accuracy`` is the share of passages whose ``" word"``
greedy decoding writes (the harness's ``is_greedy``), ``perplexity`` the word's
``exp(-mean log-likelihood)``.

Each example's context and its own choices become one `Candidates` example (the label an index
into them), prompted as lm-evaluation-harness prompts them, so zero-shot scoring
(``method="zeroshot"``, accuracy by summed log-likelihood; ``length_normalize=true`` is the
harness's ``acc_norm``) is comparable with the harness's numbers; fine-tuning scores the
choices with a shared head, as for ReCoRD.

| task | files (as distributed) | prompt |
|---|---|---|
| ``hellaswag`` | ``hellaswag_{train,val}.jsonl`` (``ctx_a``, ``ctx_b``, ``activity_label``, ``endings``, ``label``) | ``"<activity>: <ctx_a> <Ctx_b>"`` → ``" <ending>"`` |
| ``piqa`` | ``{train,valid}.jsonl`` (``goal``, ``sol1``, ``sol2``) + ``{train,valid}-labels.lst`` | ``"Question: <goal>\\nAnswer:"`` → ``" <sol>"`` |
| ``arc_easy`` / ``arc_challenge`` | ``ARC-Easy/ARC-Easy-{Train,Dev,Test}.jsonl`` (``question.stem``, ``question.choices``, ``answerKey``) | ``"Question: <stem>\\nAnswer:"`` → ``" <choice>"`` |

>>> lmkit.evaluate("runs/char-gpt", "piqa", "data/piqa", method="zeroshot")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lmkit.errors import DataError
from lmkit.evaluation.examples import Examples
from lmkit.evaluation.shapes import Candidates, LastWord, Perplexity
from lmkit.evaluation.sources import Source
from lmkit.evaluation.tasks import Task
from lmkit.registry import tasks

__all__ = ["ChoiceFiles", "Documents", "Passages", "SplitFiles", "TASKS"]

#: ``parse(record, place) -> (context, choices, label or None)``
Parser = Callable[[dict[str, Any], str], tuple[str, list[str], "int | None"]]


@dataclass(frozen=True)
class SplitFiles(Source):
    """A benchmark's files: `files` maps a split to the names tried under the folder the user
    gives (or its `folder`); a file given itself is read for any split."""

    folder: str
    files: dict[str, tuple[str, ...]]

    def file(self, path: Path, split: str) -> Path | None:
        if path.is_file():
            return path
        names = self.files.get(split, ())
        return next((p / n for n in names for p in (path, path / self.folder) if (p / n).is_file()), None)

    def split_file(self, task: Any, path: Path, split: str) -> Path:
        """`file`, or a `DataError` naming the files tried."""
        file = self.file(path, split)
        if file is None:
            raise DataError(f"no {task.name} '{split}' data in '{path}'. {self.expected(task)}")
        return file

    def expected(self, task: Any) -> str:
        listed = "; ".join(f"{s}: {' or '.join(self.files[s])}" for s in task.splits if s in self.files)
        return f"{task.name} reads its official files ({listed}) from the folder given or its {self.folder}/."

    def hub_hint(self, task: Any) -> str:
        return f"the folder holding the official {task.name} files"


@dataclass(frozen=True)
class ChoiceFiles(SplitFiles):
    """A multiple-choice benchmark's JSONL files (`SplitFiles`), each record read by `parse`;
    `labels` maps a split to a separate label file (PIQA's ``*-labels.lst``, one integer per
    line)."""

    parse: Parser
    labels: dict[str, str] = field(default_factory=dict)

    layouts: ClassVar[tuple[str, ...]] = ("jsonl",)
    wants: ClassVar[str] = "reads the benchmark's JSONL files"

    def read(self, task: Any, split: str, path: Path) -> Examples:
        file = self.split_file(task, path, split)
        answers = self._answers(file, split)
        rows, context, choices, labels = [], [], [], []
        for place, record in _json_lines(file):
            try:
                text, options, label = self.parse(record, place)
            except (KeyError, TypeError, IndexError) as exc:
                raise DataError(f"{place}: not a {task.name} record ({type(exc).__name__}: {exc}). "
                                f"{self.expected(task)}") from None
            if answers is not None:
                if len(rows) >= len(answers):
                    raise DataError(f"{place}: {file.name} has more lines than its label file has labels")
                label = answers[len(rows)]
            if label is not None and not 0 <= label < len(options):
                raise DataError(f"{place}: label {label} is not one of the {len(options)} choices")
            rows.append({"context": text, "choices": options})
            context.append(text)
            choices.append("\n".join(options))
            labels.append(-1 if label is None else label)
        if not rows:
            raise DataError(f"{file}: split '{split}' of {task.name} has no examples")
        return Examples(task, split, str(file), context, choices, np.asarray(labels, np.int64), rows)

    def _answers(self, file: Path, split: str) -> list[int] | None:
        """PIQA's labels, one per line of the split's label file beside `file`."""
        if split not in self.labels:
            return None
        labels = file.parent / self.labels[split]
        if not labels.is_file():
            raise DataError(f"{file} has no labels: expected {labels} (one 0 or 1 per line), as distributed")
        values = labels.read_text(encoding="utf-8").split()
        try:
            return [int(v) for v in values]
        except ValueError:
            raise DataError(f"{labels}: labels must be integers, got {values[:3]}") from None


def _json_lines(file: Path) -> Iterator[tuple[str, Any]]:
    """Each non-blank line of a JSONL `file`, parsed, with its place (file and line) for errors."""
    for lineno, line in enumerate(file.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        place = f"{file}, line {lineno}"
        try:
            yield place, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{place}: not valid JSON ({exc.msg} at column {exc.colno})") from None


@dataclass(frozen=True)
class Passages(SplitFiles):
    """LAMBADA's JSONL file as OpenAI distributed it (the harness's ``lambada_openai``): one
    ``{"text": ...}`` per line; the context is the text before its final space, the label the
    last word after it."""

    layouts: ClassVar[tuple[str, ...]] = ("jsonl",)
    wants: ClassVar[str] = "reads the benchmark's JSONL file"

    def read(self, task: Any, split: str, path: Path) -> Examples:
        file = self.split_file(task, path, split)
        contexts, words = [], []
        for place, record in _json_lines(file):
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str) or " " not in text.strip():
                raise DataError(f"{place}: a {task.name} record is {{\"text\": \"<passage> <last word>\"}}, "
                                f"got {str(record)[:80]!r}")
            context, word = text.rsplit(" ", 1)  # as the harness splits it: at the final space
            contexts.append(context)
            words.append(word)
        if not contexts:
            raise DataError(f"{file}: split '{split}' of {task.name} has no passages")
        return task.shape.examples(task, split, str(file), contexts, None, words)


#: a WikiText article starts at a top-level heading line (`` = Homarus gammarus = ``)
_ARTICLE = re.compile(r"^ = [^=].* = $")


@dataclass(frozen=True)
class Documents(SplitFiles):
    """Plain-text corpus files (``files[split]``: names tried under the folder given or its
    `folder`), cut into documents: WikiText's articles (`by_heading`) or one per line (PTB)."""

    by_heading: bool

    layouts: ClassVar[tuple[str, ...]] = ()
    wants: ClassVar[str] = "reads the corpus's text files"

    def holds(self, path: Path) -> bool:
        return any(self.file(path, split) is not None for split in self.files)

    def read(self, task: Any, split: str, path: Path) -> Examples:
        file = self.split_file(task, path, split)
        lines = file.read_text(encoding="utf-8").splitlines()
        if self.by_heading:
            docs: list[list[str]] = []
            for line in lines:
                if _ARTICLE.match(line) or not docs:
                    docs.append([])
                docs[-1].append(line)
            texts = ["\n".join(d).strip() for d in docs]
        else:
            texts = [line.strip() for line in lines]
        texts = [t for t in texts if t]
        if not texts:
            raise DataError(f"{file}: split '{split}' of {task.name} has no text")
        return task.shape.examples(task, split, str(file), texts, None, texts)


# -- the official records, read as the harness reads them --------------------------------------
def _hellaswag_text(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(r: dict[str, Any], place: str) -> tuple[str, list[str], int | None]:
    context = f"{r['activity_label']}: {r['ctx_a']} {r['ctx_b'].capitalize()}"
    label = r.get("label")
    return (_hellaswag_text(context), [_hellaswag_text(e) for e in r["endings"]],
            None if label in (None, "") else int(label))


def _piqa(r: dict[str, Any], place: str) -> tuple[str, list[str], int | None]:
    return f"Question: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]], None


def _arc(r: dict[str, Any], place: str) -> tuple[str, list[str], int | None]:
    question = r["question"]
    keys = [str(c["label"]) for c in question["choices"]]
    key = r.get("answerKey")
    if key is not None and str(key) not in keys:
        raise DataError(f"{place}: answerKey {key!r} is not one of the choices' labels {', '.join(keys)}")
    return (f"Question: {question['stem']}\nAnswer:", [c["text"] for c in question["choices"]],
            None if key is None else keys.index(str(key)))


def _prompt(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(record["context"], " " + choice) for choice in record["choices"]]


def _benchmark(name: str, source: ChoiceFiles, description: str, splits: tuple[str, ...], eval_split: str) -> Task:
    task = Task(name=name, source=source, shape=Candidates(), description=description, metrics=("accuracy",),
                metric="accuracy", splits=splits, eval_split=eval_split, data_folders=(source.folder,),
                choices=_prompt)
    tasks.register(name, task, description=description)
    return task


def _arc_files(level: str) -> dict[str, tuple[str, ...]]:
    return {split: (f"ARC-{level}-{name}.jsonl", f"ARC-{level}/ARC-{level}-{name}.jsonl")
            for split, name in (("train", "Train"), ("dev", "Dev"), ("test", "Test"))}


def _corpus(name: str, folders: tuple[str, ...], files: dict[str, tuple[str, ...]], by_heading: bool,
            description: str) -> Task:
    task = Task(name=name, source=Documents(folders[0], files, by_heading), shape=Perplexity(),
                description=description, splits=tuple(files), eval_split="test", data_folders=folders)
    tasks.register(name, task, description=description)
    return task


def _lambada() -> Task:
    description = "LAMBADA (OpenAI's file): is each passage's last word greedy decoding's? (accuracy, perplexity)"
    task = Task(name="lambada", source=Passages("lambada", {"test": ("lambada_test.jsonl",)}), shape=LastWord(),
                description=description, splits=("test",), eval_split="test", data_folders=("lambada",))
    tasks.register("lambada", task, description=description)
    return task


def _wiki_files(size: str) -> dict[str, tuple[str, ...]]:
    return {split: tuple(f"{folder}/wiki.{name}.{kind}" if folder else f"wiki.{name}.{kind}"
                         for folder in ("", f"wikitext-{size}", f"wikitext-{size}-raw") for kind in ("tokens", "raw"))
            for split, name in (("train", "train"), ("dev", "valid"), ("test", "test"))}


TASKS = (
    _corpus("wikitext-2", ("wikitext-2", "wikitext-2-raw"), _wiki_files("2"), True,
            "WikiText-2: perplexity per word, byte and token over Wikipedia articles"),
    _corpus("wikitext-103", ("wikitext-103", "wikitext-103-raw"), _wiki_files("103"), True,
            "WikiText-103: perplexity per word, byte and token over Wikipedia articles"),
    _corpus("ptb", ("ptb", "simple-examples/data"), {s: (f"ptb.{n}.txt",) for s, n in
                                                      (("train", "train"), ("dev", "valid"), ("test", "test"))},
            False, "Penn Treebank (Mikolov's files): perplexity per word, byte and token, a document per sentence"),
    _lambada(),
    _benchmark("hellaswag", ChoiceFiles("hellaswag", {"train": ("hellaswag_train.jsonl",),
                                                      "val": ("hellaswag_val.jsonl",)}, _hellaswag),
               "HellaSwag: which ending continues the activity? (accuracy; acc_norm with length_normalize)",
               ("train", "val"), "val"),
    _benchmark("piqa", ChoiceFiles("piqa", {"train": ("train.jsonl",), "dev": ("valid.jsonl",)}, _piqa,
                                   {"train": "train-labels.lst", "dev": "valid-labels.lst"}),
               "PIQA: which solution achieves the physical goal? (accuracy)", ("train", "dev"), "dev"),
    _benchmark("arc_easy", ChoiceFiles("ARC-Easy", _arc_files("Easy"), _arc),
               "ARC-Easy: grade-school science questions, 3-5 choices (accuracy)", ("train", "dev", "test"), "test"),
    _benchmark("arc_challenge", ChoiceFiles("ARC-Challenge", _arc_files("Challenge"), _arc),
               "ARC-Challenge: the questions retrieval and co-occurrence methods miss (accuracy)",
               ("train", "dev", "test"), "test"),
)
