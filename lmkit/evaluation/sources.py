"""Data sources: one reader per file family, declared by each task (never guessed from the files).

A task names its source (`Task.source`); `lmkit.evaluation.loaders.load_split` asks it to read a
split, and reads the `datasets` families (``save_to_disk`` folders, parquet files, the Hub) for
any task through `Source.from_columns`. The families here:

* `TsvSource`: the official GLUE folders (``<root>/SST-2/dev.tsv``), read with quoting off (GLUE
  files hold literal, unbalanced ``"``), an optional byte-order mark, header-less columns (CoLA);
* `ImdbSource`: the original ``aclImdb/`` layout (``{train,test}/{pos,neg}/<id>_<rating>.txt``),
  with ``<br />`` removed;
* `TableSource`: a user's own CSV, JSONL or parquet files, one per split (``train.csv``,
  ``dev.csv``) or one file for every split, with the columns the task names;
* `ParallelText`: line-aligned text files, one per language (``train.de`` / ``train.en``: Multi30K);
* `SciTldrJsonl`: SciTLDR's JSONL files as distributed (an abstract's sentences -> its TLDRs).

SuperGLUE's JSONL reader (`lmkit.evaluation.superglue.JsonlLayout`) is a source too. Every
problem raises `DataError` naming the file (and line or row) and the layout that was expected.

>>> TableSource().file(Path("tests/fixtures/tasks/reviews"), "dev")   # doctest: +SKIP
PosixPath('tests/fixtures/tasks/reviews/dev.csv')
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lmkit.errors import DataError
from lmkit.evaluation.examples import Examples

__all__ = ["Source", "Hub", "TsvSource", "ImdbSource", "TableSource", "ParallelText", "TextPairs", "SciTldrJsonl",
           "detect_layout",
           "read_parquet", "LAYOUTS"]

#: what each `detect_layout` name means, for error messages
LAYOUTS = {"glue": "GLUE .tsv files", "jsonl": "JSONL files (the SuperGLUE layout)",
           "imdb": "the IMDb aclImdb layout ({train,test}/{pos,neg}/*.txt)", "csv": "CSV files",
           "parquet": "parquet files", "hf_disk": "a datasets.save_to_disk folder"}


def detect_layout(path: Path) -> str:
    """Name the layout of `path`: 'parquet', 'hf_disk', 'imdb', 'glue', 'jsonl', 'csv' or 'unknown'."""
    if path.is_file():
        return {".parquet": "parquet", ".tsv": "glue", ".jsonl": "jsonl", ".csv": "csv"}.get(path.suffix, "unknown")
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return "hf_disk"
    if any(path.glob("*.parquet")) or any(path.glob("*/*.parquet")):
        return "parquet"
    for root in (path, path / "aclImdb"):
        if (root / "train" / "pos").is_dir() or (root / "test" / "pos").is_dir():
            return "imdb"
    for suffix, layout in (("tsv", "glue"), ("jsonl", "jsonl"), ("csv", "csv")):
        if any(path.glob(f"*.{suffix}")) or any(path.glob(f"*/*.{suffix}")):
            return layout
    return "unknown"


@dataclass(frozen=True)
class Hub:
    """Where a task lives on the Hugging Face Hub (`datasets.load_dataset(path, config)`) and the
    Hub's names of its splits when they differ (``{"dev": "validation"}``)."""

    path: str
    config: str | None = None
    splits: dict[str, str] = field(default_factory=dict)


class Source:
    """A file family's reader. `layouts` are the `detect_layout` names it reads; `wants` ends the
    sentence "'PATH' holds X, but TASK ..." when the data is of another family."""

    layouts: ClassVar[tuple[str, ...]] = ()
    wants: ClassVar[str] = "reads another layout"

    def holds(self, path: Path) -> bool:
        """Whether `path` holds files of this family."""
        return detect_layout(path) in self.layouts

    def read(self, task: Any, split: str, path: Path) -> Examples:
        """Split `split` of `task` from `path` (a file or folder of this family)."""
        raise NotImplementedError

    def file(self, path: Path, split: str) -> Path | None:
        """The file of `split` under `path`, or None when absent (`path` itself for a folder
        format such as aclImdb)."""
        return path

    def expected(self, task: Any) -> str:
        """The sentence that tells a user which layout `task` reads."""
        return f"{task.name} reads {', '.join(LAYOUTS.get(x, x) for x in self.layouts)}."

    def hub_hint(self, task: Any) -> str:
        """What to pass as data=PATH instead of the Hub."""
        return "the task's files"

    def from_columns(self, task: Any, split: str, source: str, columns: dict[str, list[Any]]) -> Examples:
        """Read `split` of `task` from `datasets` columns (parquet, ``save_to_disk``, the Hub, a
        table): the text columns `task.inputs` and the label column `task.target`."""
        names = list(columns)
        texts = [c for c in task.inputs if c in columns]
        if len(texts) < len(task.inputs):
            fallback = [c for c in ("text", "sentence") if c in columns]
            if not task.is_pair and fallback:
                texts = fallback[:1]
            else:
                check_pair(task, source, names, [c for c in (*task.inputs, "text", "sentence") if c in columns])
                raise DataError(f"{source}: {task.name} needs the text column(s) "
                                f"{', '.join(map(repr, task.inputs))}; the data has columns {', '.join(names)}")
        if task.target not in columns:
            raise DataError(f"{source}: no {task.target!r} column for {task.name}; columns: {', '.join(names)}")
        labels = [task.shape.label(task, v, f"{source}, row {i}") for i, v in enumerate(columns[task.target])]
        return task.shape.examples(task, split, source, [str(t) for t in columns[texts[0]]],
                                   [str(t) for t in columns[texts[1]]] if task.is_pair else None, labels)


def check_pair(task: Any, source: str, columns: list[Any], found: list[Any]) -> None:
    """Raise when a sentence-pair task finds fewer than two of its text columns."""
    if task.is_pair and len(found) < 2:
        tsv = getattr(task.source, "text_columns", ())
        raise DataError(
            f"{source}: {task.name} is a sentence-pair task, but the data has "
            f"{'one text column' if found else 'no matching text column'} "
            f"(columns: {', '.join(map(str, columns))}); a pair needs two text columns "
            f"({' and '.join(map(repr, task.inputs))}"
            + (f", or {' and '.join(map(repr, tsv))} in GLUE .tsv files)" if tsv else ")")
        )


def _text(file: Path, family: str) -> str:
    try:
        return file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: not valid UTF-8 at byte {exc.start}; {family} files are UTF-8") from None


def read_parquet(file: Path) -> Any:
    """`file` as a pandas DataFrame; a damaged file is a `DataError`."""
    import pandas as pd

    try:
        return pd.read_parquet(file)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{file}: not a readable parquet file ({exc})") from None


# -- GLUE TSV ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TsvSource(Source):
    """Where a GLUE task lives in the official distribution and which columns it reads.

    `text_columns` and `label_column` are header names, or 0-based column positions for files
    without a header (CoLA).
    """

    folder: str
    files: dict[str, str]
    text_columns: tuple[str | int, ...]
    label_column: str | int
    header: bool = True

    layouts: ClassVar[tuple[str, ...]] = ("glue",)
    wants: ClassVar[str] = "is a GLUE task"

    def file(self, path: Path, split: str) -> Path | None:
        if path.is_file():
            return path
        name = self.files[split]
        return next((c for c in (path / self.folder / name, path / name) if c.is_file()), None)

    def expected(self, task: Any) -> str:
        files = ", ".join(self.files.values())
        return (f"{task.name} expects the official GLUE layout: <glue>/{self.folder}/{{{files}}} "
                f"(pass the GLUE root or the {self.folder} folder), a datasets.save_to_disk "
                f"folder, or parquet files.")

    def hub_hint(self, task: Any) -> str:
        return f"the GLUE folder as distributed (GLUE/{self.folder}/dev.tsv)"

    def read(self, task: Any, split: str, path: Path) -> Examples:
        file = self.file(path, split)
        if file is None:
            candidates = [path / self.folder / self.files[split], path / self.files[split]]
            raise DataError(f"no {task.name} '{split}' data in '{path}': looked for "
                            f"{' and '.join(str(c) for c in candidates)}. {self.expected(task)}")
        # Split on "\n" only: str.splitlines would also break rows at \x0b, \x1c, \x85 and friends.
        lines = _text(file, "GLUE").split("\n")
        text_idx, label_idx, width = self._columns(task, file, lines[0].rstrip("\r").split("\t"), path)
        text_a: list[str] = []
        text_b: list[str] = []
        labels: list[Any] = []
        start = 1 if self.header else 0
        for lineno, line in enumerate(lines[start:], start=start + 1):
            line = line.rstrip("\r")
            if not line:
                continue
            row = line.split("\t")
            if len(row) < width:
                raise DataError(f"{file}, line {lineno}: malformed row: expected {width} tab-separated "
                                f"columns, found {len(row)}: {line[:80]!r}")
            text_a.append(row[text_idx[0]])
            if task.is_pair:
                text_b.append(row[text_idx[1]])
            labels.append(task.shape.label(task, row[label_idx], f"{file}, line {lineno}"))
        return task.shape.examples(task, split, str(file), text_a, text_b if task.is_pair else None, labels)

    def _columns(self, task: Any, file: Path, header: list[str], path: Path) -> tuple[list[int], int, int]:
        """(text column positions, label column position, columns a row needs)."""
        if not self.header:
            text_idx = [int(c) for c in self.text_columns]
            return text_idx, int(self.label_column), max(*text_idx, int(self.label_column)) + 1
        missing = [c for c in (*self.text_columns, self.label_column) if c not in header]
        if missing:
            check_pair(task, str(file), header, [c for c in (*self.text_columns, "sentence") if c in header])
            raise DataError(f"{file}, line 1: the header has no column {', '.join(map(repr, missing))} "
                            f"(header: {', '.join(header)}). {self.expected(task)}")
        return [header.index(c) for c in self.text_columns], header.index(self.label_column), len(header)


# -- IMDb -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImdbSource(Source):
    """The aclImdb layout: a folder per split, a folder per label (named as the task's labels),
    a review per ``.txt`` file."""

    layouts: ClassVar[tuple[str, ...]] = ("imdb",)
    wants: ClassVar[str] = "reads the IMDb layout"

    def expected(self, task: Any) -> str:
        return (f"{task.name} expects the aclImdb layout: <aclImdb>/{{train,test}}/{{pos,neg}}/<id>_<rating>.txt, "
                f"a datasets.save_to_disk folder, or parquet files.")

    def hub_hint(self, task: Any) -> str:
        return "the aclImdb folder"

    def read(self, task: Any, split: str, path: Path) -> Examples:
        root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
        folders = [root / split / label for label in task.labels]
        missing = [f for f in folders if not f.is_dir()]
        if missing:
            raise DataError(f"no {task.name} '{split}' data in '{path}': missing folder "
                            f"{', '.join(str(m) for m in missing)}. {self.expected(task)}")
        text_a: list[str] = []
        labels: list[str] = []
        for label, folder in zip(task.labels, folders):
            for file in sorted(folder.glob("*.txt")):
                if not file.is_file():  # a FIFO would block forever, a device never end
                    raise DataError(f"{file} is not a regular file (a FIFO, device or socket): "
                                    f"lmkit reads reviews from regular files only")
                try:
                    review = file.read_text(encoding="utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{file}: not valid UTF-8 at byte {exc.start}") from None
                text_a.append(review.replace("<br />", " ").strip())
                labels.append(task.shape.label(task, label, str(file)))
        return task.shape.examples(task, split, str(root / split), text_a, None, labels)


# -- a user's tables --------------------------------------------------------------------------
_TABLES = (".csv", ".jsonl", ".parquet")


@dataclass(frozen=True)
class TableSource(Source):
    """A user's CSV (with a header), JSONL (one object a line) or parquet files: one file per
    split, found as ``<split>.csv`` / ``.jsonl`` / ``.parquet`` in the data folder (or named in
    `files`, ``{"dev": "valid.csv"}``), or one file for every split. The task's `inputs` name
    the text columns and its `target` the label (or target text) column.

    >>> Task("reviews", TableSource(), labels=("neg", "pos"), inputs=("review",))  # doctest: +SKIP
    """

    files: dict[str, str] = field(default_factory=dict)

    layouts: ClassVar[tuple[str, ...]] = ("csv", "jsonl", "parquet")
    wants: ClassVar[str] = "reads CSV, JSONL or parquet tables"

    def holds(self, path: Path) -> bool:
        if path.is_file():
            return path.suffix in _TABLES
        return any(any(path.glob(f"*{suffix}")) for suffix in _TABLES)

    def file(self, path: Path, split: str) -> Path | None:
        if path.is_file():
            return path
        names = [self.files[split]] if split in self.files else [split + s for s in _TABLES]
        return next((path / n for n in names if (path / n).is_file()), None)

    def expected(self, task: Any) -> str:
        files = ", ".join(self.files.get(s, f"{s}.csv") for s in task.splits)
        return (f"{task.name} reads a table per split: <data>/{{{files}}} (or .jsonl, .parquet), or one "
                f"file; the columns {', '.join(map(repr, (*task.inputs, task.target)))}.")

    def read(self, task: Any, split: str, path: Path) -> Examples:
        file = self.file(path, split)
        if file is None:
            raise DataError(f"no {task.name} '{split}' data in '{path}'. {self.expected(task)}")
        if file.suffix == ".parquet":
            return self.from_columns(task, split, str(file), read_parquet(file).to_dict("list"))
        rows = _csv_rows(file) if file.suffix == ".csv" else _jsonl_rows(file)
        names = list(dict.fromkeys(k for row in rows for k in row))
        columns = {k: [row.get(k) for row in rows] for k in names}
        return self.from_columns(task, split, str(file), columns)


def _csv_rows(file: Path) -> list[dict[str, Any]]:
    tabs = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if file.suffix == ".tsv" else {}  # `TextPairs`
    reader = csv.DictReader(io.StringIO(_text(file, "CSV"), newline=""), **tabs)
    rows = list(reader)
    if reader.fieldnames is None:
        raise DataError(f"{file}: empty file; a CSV table starts with a header line naming its columns")
    return rows


def _jsonl_rows(file: Path) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(_text(file, "JSONL").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{file}, line {lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{file}, line {lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


# -- parallel text ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ParallelText(Source):
    """Line-aligned plain-text files, one per language: line i of ``<stem>.<source>`` translates
    line i of ``<stem>.<target>``. `files` maps the task's splits to file stems
    (``{"test": "test_2016_flickr"}``); other splits are their own stem."""

    source: str
    target: str
    files: dict[str, str] = field(default_factory=dict)

    wants: ClassVar[str] = "reads line-aligned text files"

    def holds(self, path: Path) -> bool:
        return path.is_dir() and any(path.glob(f"*.{self.source}")) and any(path.glob(f"*.{self.target}"))

    def _files(self, path: Path, split: str) -> tuple[Path, Path]:
        stem = self.files.get(split, split)
        return path / f"{stem}.{self.source}", path / f"{stem}.{self.target}"

    def file(self, path: Path, split: str) -> Path | None:
        files = self._files(path, split)
        return files[0] if all(f.is_file() for f in files) else None

    def expected(self, task: Any) -> str:
        stems = [self.files.get(s, s) for s in task.splits]
        return (f"{task.name} reads line-aligned text files: <data>/{{{', '.join(stems)}}}.{{{self.source},"
                f"{self.target}}} (line i of the .{self.source} file translates line i of the .{self.target} file).")

    def hub_hint(self, task: Any) -> str:
        return f"the folder of the .{self.source} and .{self.target} files"

    def read(self, task: Any, split: str, path: Path) -> Examples:
        source_file, target_file = self._files(path, split)
        missing = [str(f) for f in (source_file, target_file) if not f.is_file()]
        if missing:
            raise DataError(f"no {task.name} '{split}' data in '{path}': missing {' and '.join(missing)}. "
                            f"{self.expected(task)}")
        sources, targets = (_text(f, "text").rstrip("\n").split("\n") for f in (source_file, target_file))
        if len(sources) != len(targets):
            raise DataError(f"{source_file} has {len(sources)} lines but {target_file} has {len(targets)}: "
                            f"line-aligned files need one line each per example")
        for file, texts in ((source_file, sources), (target_file, targets)):
            empty = next((i for i, text in enumerate(texts, 1) if not text.strip()), None)
            if empty is not None:
                raise DataError(f"{file}, line {empty}: empty line; each line is one example's text: remove "
                                f"line {empty} from both {source_file.name} and {target_file.name}")
        labels = [task.shape.label(task, t, f"{target_file}, line {i}") for i, t in enumerate(targets, 1)]
        return task.shape.examples(task, split, str(source_file), [s.rstrip("\r") for s in sources], None, labels)



@dataclass(frozen=True)
class TextPairs(Source):
    """A user's source -> target pairs (translation, summarization): line-aligned
    ``<split>.source`` / ``<split>.target`` text files (`ParallelText`), or a table per split
    with ``source`` and ``target`` columns (CSV, TSV, JSONL, parquet: `TableSource`)."""

    wants: ClassVar[str] = ("reads line-aligned <split>.source / <split>.target files, or CSV, TSV, JSONL or "
                            "parquet tables with source and target columns")

    def _family(self, path: Path) -> Source | None:
        """The reader of `path`'s files: line-aligned text, a table, or None for a TSV table."""
        lines = ParallelText("source", "target")
        if lines.holds(path):
            return lines
        tsv = path.suffix == ".tsv" if path.is_file() else any(path.glob("*.tsv"))
        return None if tsv else TableSource()

    def holds(self, path: Path) -> bool:
        family = self._family(path)
        return True if family is None else family.holds(path)

    def file(self, path: Path, split: str) -> Path | None:
        family = self._family(path)
        if family is not None:
            return family.file(path, split)
        file = path if path.is_file() else path / f"{split}.tsv"
        return file if file.is_file() else None

    def expected(self, task: Any) -> str:
        return (f"{task.name} reads <data>/<split>.source and <data>/<split>.target (line i of one is line i of "
                f"the other), or <data>/<split>.csv (or .tsv, .jsonl, .parquet) with columns 'source' and "
                f"'target'; splits {', '.join(task.splits)}.")

    def read(self, task: Any, split: str, path: Path) -> Examples:
        family = self._family(path)
        if family is not None:
            return family.read(task, split, path)
        file = self.file(path, split)
        if file is None:
            raise DataError(f"no {task.name} '{split}' data in '{path}'. {self.expected(task)}")
        rows = _csv_rows(file)
        names = list(dict.fromkeys(k for row in rows for k in row))
        return self.from_columns(task, split, str(file), {k: [row.get(k) for row in rows] for k in names})


@dataclass(frozen=True)
class SciTldrJsonl(TableSource):
    """SciTLDR's ``{train,dev,test}.jsonl`` as distributed (allenai/scitldr,
    ``SciTLDR-Data/SciTLDR-A``): per line a paper's abstract as a list of sentences (``source``)
    and its one-sentence summaries (``target``: the author's first, then, in dev and test, those
    written from peer reviews). An example is the abstract, its sentences joined by spaces, and
    the author's TLDR (ROUGE against one reference, as the other tasks).

    >>> SciTldrJsonl().file(Path("lmkit/data/sample/scitldr"), "dev")   # doctest: +SKIP
    PosixPath('lmkit/data/sample/scitldr/dev.jsonl')
    """

    layouts: ClassVar[tuple[str, ...]] = ("jsonl",)
    wants: ClassVar[str] = "reads SciTLDR's JSONL files ({train,dev,test}.jsonl with 'source' and 'target' lists)"

    def expected(self, task: Any) -> str:
        return (f"{task.name} reads <data>/{{{','.join(task.splits)}}}.jsonl as distributed in SciTLDR-Data/SciTLDR-A "
                f"of github.com/allenai/scitldr: one JSON object a line with the lists 'source' (the abstract's "
                f"sentences) and 'target' (its TLDRs).")

    def read(self, task: Any, split: str, path: Path) -> Examples:
        file = self.file(path, split)
        if file is None or file.suffix != ".jsonl":
            raise DataError(f"no {task.name} '{split}' data in '{path}'. {self.expected(task)}")
        sources, targets = [], []
        for row_number, row in enumerate(_jsonl_rows(file), start=1):
            source, target = row.get("source"), row.get("target")
            if not isinstance(source, list) or not isinstance(target, list) or not target:
                raise DataError(f"{file}, row {row_number}: expected the lists 'source' (sentences) and 'target' "
                                f"(at least one TLDR), got {type(source).__name__} and {type(target).__name__}. "
                                f"{self.expected(task)}")
            sources.append(" ".join(str(sentence).strip() for sentence in source))
            targets.append(target[0])
        return self.from_columns(task, split, str(file), {"source": sources, "target": targets})
