"""Read a task's labelled examples from the layouts people actually have on disk.

`load_split(task, data, split)` accepts:

* the official GLUE folder layout (``<root>/SST-2/dev.tsv`` or the task folder itself), read
  with quoting off (GLUE files hold literal, unbalanced ``"``), an optional byte-order mark, and
  CoLA's header-less columns;
* the original IMDb ``aclImdb/`` layout (``{train,test}/{pos,neg}/<id>_<rating>.txt``), with
  ``<br />`` removed;
* Hugging Face `datasets` folders written by ``save_to_disk``, and parquet files (one file, or a
  folder of ``<split>-*.parquet``);
* ``None`` or ``"hf"``: ``datasets.load_dataset`` from the Hub (cached), when online.

SuperGLUE tasks read from `datasets` (the ``super_glue`` configs' columns) turn each row back
into its official JSONL line (`superglue.JsonlLayout.from_columns`), so every check and span of
the JSONL reader applies to them too.

`find_task_data(task, root)` finds a task's folder in a shared data folder (``data/glue/``,
``data/imdb/``), so one path serves every task.

Every problem raises `DataError` naming the file (and line) and the layout that was expected.

>>> ex = load_split("glue/sst2", "tests/fixtures/eval/glue", "dev")   # doctest: +SKIP
>>> len(ex), ex.text_a[0][:20], int(ex.labels[0])                     # doctest: +SKIP
(200, "it 's a charming and", 1)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmkit.errors import DataError
from lmkit.evaluation.tasks import Task, TsvLayout, get_task

__all__ = ["Examples", "load_split", "detect_layout", "find_task_data", "is_hub"]


@dataclass
class Examples:
    """Labelled examples of one split: texts (a second list for pair tasks) and labels.

    `labels` holds class ids (int64, indexes into `task.labels`; for a task with `candidates`,
    into the example's own candidates) or scores (float32, regression). Tasks read from nested
    files (SuperGLUE) also keep each example's fields in `records` (what zero-shot prompts and
    per-example candidates read) and, where metrics group examples (MultiRC's questions), the
    group id of each example in `groups`.
    """

    task: Task
    split: str
    source: str
    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray
    records: list[dict[str, Any]] | None = None
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.text_a)

    def head(self, n: int) -> "Examples":
        """The first `n` examples (for quick runs)."""
        return self.take(np.arange(min(n, len(self))))

    def take(self, rows: "Sequence[int] | np.ndarray") -> "Examples":
        """The examples at `rows`, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return Examples(self.task, self.split, self.source, [self.text_a[i] for i in rows],
                        None if self.text_b is None else [self.text_b[i] for i in rows], self.labels[rows],
                        None if self.records is None else [self.records[i] for i in rows],
                        None if self.groups is None else self.groups[rows])

    def overlap(self, other: "Examples") -> int:
        """How many of these examples have the same texts as an example of `other` (a scored
        split that overlaps the training split measures memory, not skill)."""
        seen = set(other._keys())
        return sum(key in seen for key in self._keys())

    def _keys(self) -> list[tuple[Any, ...]]:
        # WSC asks about several span pairs of one text: the spans tell those examples apart
        spans = [tuple(map(tuple, r.get("spans", ()))) for r in self.records] if self.records else [()] * len(self)
        return list(zip(self.text_a, self.text_b or [None] * len(self), spans))

    def record(self, i: int) -> dict[str, Any]:
        """The fields of example `i`: its record, or ``text_a`` / ``text_b`` for flat tasks."""
        if self.records is not None:
            return self.records[i]
        return {"text_a": self.text_a[i], "text_b": None if self.text_b is None else self.text_b[i]}


def load_split(task: "str | Task", data: "str | Path | None", split: str | None = None) -> Examples:
    """Load `split` of `task` from `data` (a path in one of the supported layouts, or the Hub)."""
    task = get_task(task)
    split = task.resolve_split(split)
    if is_hub(data):
        examples = _from_hub(task, split)
    else:
        path = Path(data).expanduser()
        if not path.exists():
            raise DataError(f"data path '{path}' does not exist. {_expected(task, path)}")
        layout = detect_layout(path)
        if task.jsonl is not None and layout not in ("parquet", "hf_disk"):
            if layout != "jsonl":
                raise DataError(f"'{path}' holds {_LAYOUTS.get(layout, 'no .jsonl files')}, but {task.name} "
                                f"reads JSONL files. {_expected(task, path)}")
            examples = task.jsonl.read(task, split, path)
        elif layout == "parquet":
            examples = _from_parquet(task, split, path)
        elif layout == "hf_disk":
            examples = _from_disk(task, split, path)
        elif task.glue is not None:
            if layout in ("imdb", "jsonl"):
                raise DataError(
                    f"'{path}' holds {_LAYOUTS[layout]}, but {task.name} is a GLUE task. {_expected(task, path)}"
                )
            examples = _from_glue(task, split, path, task.glue)
        else:
            if layout in ("glue", "jsonl"):
                raise DataError(
                    f"'{path}' holds {_LAYOUTS[layout]}, but {task.name} reads the IMDb layout. "
                    f"{_expected(task, path)}"
                )
            examples = _from_imdb(task, split, path)
    if len(examples) == 0:
        raise DataError(f"split '{split}' of {task.name} in '{examples.source}' has no examples")
    return examples


def detect_layout(path: Path) -> str:
    """Name the layout of `path`: 'parquet', 'hf_disk', 'imdb', 'glue', 'jsonl' or 'unknown'."""
    if path.is_file():
        return {".parquet": "parquet", ".tsv": "glue", ".jsonl": "jsonl"}.get(path.suffix, "unknown")
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return "hf_disk"
    if any(path.glob("*.parquet")) or any(path.glob("*/*.parquet")):
        return "parquet"
    for root in (path, path / "aclImdb"):
        if (root / "train" / "pos").is_dir() or (root / "test" / "pos").is_dir():
            return "imdb"
    if any(path.glob("*.tsv")) or any(path.glob("*/*.tsv")):
        return "glue"
    if any(path.glob("*.jsonl")) or any(path.glob("*/*.jsonl")):
        return "jsonl"
    return "unknown"


def is_hub(data: "str | Path | None") -> bool:
    """Whether `data` asks for the Hugging Face Hub (``None``, ``"hf"`` or ``"hub"``) rather than files."""
    return data is None or str(data).lower() in ("hf", "hub")


def find_task_data(task: "str | Task", root: str | Path) -> Path:
    """The file or folder that holds `task`'s data: `root` itself, or one of the task's
    `data_folders` under it (``glue/``, ``GLUE/``, ``glue_data/`` for GLUE tasks; ``imdb/``,
    ``aclImdb/`` for IMDb), so one data folder serves every task.

    A candidate counts when it holds a layout `load_split` reads for the task (`detect_layout`).

    >>> find_task_data("glue/sst2", "tests/fixtures/eval")         # doctest: +SKIP
    PosixPath('tests/fixtures/eval/glue')
    >>> find_task_data("imdb", "tests/fixtures/eval")              # doctest: +SKIP
    PosixPath('tests/fixtures/eval/imdb')
    """
    task = get_task(task)
    root = Path(root).expanduser()
    readable = (_native_layout(task), "parquet", "hf_disk")
    candidates = [root, *(root / name for name in task.data_folders)]
    for candidate in candidates:
        if candidate.exists() and detect_layout(candidate) in readable:
            return candidate
    where = f"'{root}'" + (f" or its sub-folders {', '.join(n + '/' for n in task.data_folders)}"
                           if task.data_folders else "")
    if not root.exists():
        found = f"'{root}' does not exist"
    else:
        found = f"'{root}' holds {_LAYOUTS.get(detect_layout(root), 'none of the layouts lmkit reads')}"
    raise DataError(f"no {task.name} data in {where}: {found}. {_expected(task, root)}")


def _native_layout(task: Task) -> str:
    """The layout `load_split` reads besides the `datasets` ones: GLUE .tsv for tasks with a
    `TsvLayout`, JSONL for tasks with a `JsonlLayout` (SuperGLUE), aclImdb for the others."""
    return "glue" if task.glue is not None else "jsonl" if task.jsonl is not None else "imdb"


#: what each `detect_layout` name means, for error messages
_LAYOUTS = {"glue": "GLUE .tsv files", "jsonl": "JSONL files (the SuperGLUE layout)", "imdb": "the IMDb aclImdb layout ({train,test}/{pos,neg}/*.txt)",
            "parquet": "parquet files", "hf_disk": "a datasets.save_to_disk folder"}


def _expected(task: Task, path: Path) -> str:
    if task.jsonl is not None:
        return task.jsonl.expected(task)
    if task.glue is not None:
        files = ", ".join(task.glue.files.values())
        return (f"{task.name} expects the official GLUE layout: <glue>/{task.glue.folder}/{{{files}}} "
                f"(pass the GLUE root or the {task.glue.folder} folder), a datasets.save_to_disk "
                f"folder, or parquet files.")
    return (f"{task.name} expects the aclImdb layout: <aclImdb>/{{train,test}}/{{pos,neg}}/<id>_<rating>.txt, "
            f"a datasets.save_to_disk folder, or parquet files.")


# -- GLUE TSV ---------------------------------------------------------------------------------
def _from_glue(task: Task, split: str, path: Path, layout: TsvLayout) -> Examples:
    name = layout.files[split]
    if path.is_file():
        file = path
    else:
        candidates = [path / layout.folder / name, path / name]
        file = next((c for c in candidates if c.is_file()), None)
        if file is None:
            raise DataError(
                f"no {task.name} '{split}' data in '{path}': looked for "
                f"{' and '.join(str(c) for c in candidates)}. {_expected(task, path)}"
            )
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: not valid UTF-8 at byte {exc.start}; GLUE files are UTF-8") from None
    # Split on "\n" only: str.splitlines would also break rows at \x0b, \x1c, \x85 and friends.
    lines = text.split("\n")
    start = 0
    if layout.header:
        header = lines[0].rstrip("\r").split("\t")
        start = 1
        missing = [c for c in (*layout.text_columns, layout.label_column) if c not in header]
        if missing:
            _check_pair(task, str(file), header,
                        [c for c in (*layout.text_columns, "sentence") if c in header])
            raise DataError(
                f"{file}, line 1: the header has no column {', '.join(map(repr, missing))} "
                f"(header: {', '.join(header)}). {_expected(task, path)}"
            )
        text_idx = [header.index(c) for c in layout.text_columns]
        label_idx = header.index(layout.label_column)
        width = len(header)
    else:
        text_idx = [int(c) for c in layout.text_columns]
        label_idx = int(layout.label_column)
        width = max(*text_idx, label_idx) + 1
    text_a: list[str] = []
    text_b: list[str] = []
    labels: list[Any] = []
    for lineno, line in enumerate(lines[start:], start=start + 1):
        line = line.rstrip("\r")
        if not line:
            continue
        row = line.split("\t")
        if len(row) < width:
            raise DataError(
                f"{file}, line {lineno}: malformed row: expected {width} tab-separated columns, "
                f"found {len(row)}: {line[:80]!r}"
            )
        text_a.append(row[text_idx[0]])
        if task.is_pair:
            text_b.append(row[text_idx[1]])
        labels.append(_label(task, row[label_idx], f"{file}, line {lineno}"))
    return Examples(task, split, str(file), text_a, text_b if task.is_pair else None,
                    _label_array(task, labels))


# -- IMDb -------------------------------------------------------------------------------------
def _from_imdb(task: Task, split: str, path: Path) -> Examples:
    root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    folders = [root / split / label for label in task.labels]
    missing = [f for f in folders if not f.is_dir()]
    if missing:
        raise DataError(
            f"no {task.name} '{split}' data in '{path}': missing folder "
            f"{', '.join(str(m) for m in missing)}. {_expected(task, path)}"
        )
    text_a: list[str] = []
    labels: list[int] = []
    for label_id, folder in enumerate(folders):
        for file in sorted(folder.glob("*.txt")):
            try:
                review = file.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{file}: not valid UTF-8 at byte {exc.start}") from None
            text_a.append(review.replace("<br />", " ").strip())
            labels.append(label_id)
    return Examples(task, split, str(root / split), text_a, None, np.asarray(labels, np.int64))


# -- Hugging Face datasets --------------------------------------------------------------------
def _from_disk(task: Task, split: str, path: Path) -> Examples:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        name = task.hf_split(split)
        if name not in loaded:
            raise DataError(
                f"'{path}' (datasets.save_to_disk) has no split '{name}' for {task.name}; "
                f"it has: {', '.join(loaded)}"
            )
        loaded = loaded[name]
    return _from_columns(task, split, str(path), loaded.to_dict())


def _from_parquet(task: Task, split: str, path: Path) -> Examples:
    import pandas as pd

    if path.is_file():
        files = [path]
    else:
        name = task.hf_split(split)
        files = sorted(f for f in (*path.glob("*.parquet"), *path.glob("*/*.parquet"))
                       if f.name.split("-")[0].split(".")[0] == name)
        if not files:
            found = sorted({f.name for f in (*path.glob("*.parquet"), *path.glob("*/*.parquet"))})
            raise DataError(
                f"no parquet file for split '{name}' of {task.name} in '{path}': expected "
                f"'{name}-*.parquet' or '{name}.parquet'; found {', '.join(found)}"
            )
    frame = pd.concat([_read_parquet(f) for f in files], ignore_index=True)
    return _from_columns(task, split, ", ".join(map(str, files)), frame.to_dict("list"))


def _read_parquet(file: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_parquet(file)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{file}: not a readable parquet file ({exc})") from None


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hub cannot be reached (one short connection attempt), or None.

    Offline, `datasets` retries for about half a minute before failing; this answers in
    seconds. With ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` set, `datasets` reads its cache
    without the network, so there is nothing to probe. ``HF_ENDPOINT`` names a mirror.
    """
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
           for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return None
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"no connection to {host}:{port} ({exc.strerror or exc})"
    return None


def _from_hub(task: Task, split: str) -> Examples:
    reason = _hub_unreachable()
    try:
        if reason is not None:
            raise ConnectionError(reason)
        import datasets

        loaded = datasets.load_dataset(task.hf_path, task.hf_config, split=task.hf_split(split))
    except (ConnectionError, OSError, ValueError) as exc:
        raise DataError(
            f"could not load {task.name} from the Hugging Face Hub ({task.hf_path}"
            f"{', ' + task.hf_config if task.hf_config else ''}): {type(exc).__name__}: "
            f"{str(exc)[:200]}. Offline, point lmkit at local files instead: data=PATH "
            f"(`--data PATH` on the command line), where PATH is "
            + ("the GLUE folder as distributed (GLUE/" + task.glue.folder + "/dev.tsv)" if task.glue else
               f"the SuperGLUE folder as distributed (SuperGLUE/{task.jsonl.folder}/val.jsonl)" if task.jsonl
               else "the aclImdb folder")
            + ", a datasets.save_to_disk folder, or parquet files."
        ) from None
    return _from_columns(task, split, f"hf:{task.hf_path}", loaded.to_dict())


def _from_columns(task: Task, split: str, source: str, columns: dict[str, list[Any]]) -> Examples:
    if task.jsonl is not None:  # SuperGLUE: each row back to its official line, read as the files are
        return task.jsonl.from_columns(task, split, source, columns)
    names = list(columns)
    texts = [c for c in task.hf_text_columns if c in columns]
    if len(texts) < len(task.hf_text_columns):
        fallback = [c for c in ("text", "sentence") if c in columns]
        if not task.is_pair and fallback:
            texts = fallback[:1]
        else:
            _check_pair(task, source, names,
                        [c for c in (*task.hf_text_columns, "text", "sentence") if c in columns])
            raise DataError(
                f"{source}: {task.name} needs the text column(s) "
                f"{', '.join(map(repr, task.hf_text_columns))}; the data has columns {', '.join(names)}"
            )
    if "label" not in columns:
        raise DataError(f"{source}: no 'label' column for {task.name}; columns: {', '.join(names)}")
    raw = columns["label"]
    labels = [_label(task, v, f"{source}, row {i}") for i, v in enumerate(raw)]
    return Examples(task, split, source, [str(t) for t in columns[texts[0]]],
                    [str(t) for t in columns[texts[1]]] if task.is_pair else None,
                    _label_array(task, labels))


# -- shared checks ----------------------------------------------------------------------------
def _check_pair(task: Task, source: str, columns: Sequence[Any], found: Sequence[Any]) -> None:
    if task.is_pair and len(found) < 2:
        raise DataError(
            f"{source}: {task.name} is a sentence-pair task, but the data has "
            f"{'one text column' if found else 'no matching text column'} "
            f"(columns: {', '.join(map(str, columns))}); a pair needs two text columns "
            f"({' and '.join(map(repr, task.hf_text_columns))}, or "
            f"{' and '.join(map(repr, task.glue.text_columns)) if task.glue else ''} in GLUE .tsv files)"
        )


def _label(task: Task, value: Any, where: str) -> Any:
    """Class id (int) or score (float) of `value`, which is a label string or a datasets id."""
    if task.is_regression:
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = math.nan
        low, high = task.score_range or (-math.inf, math.inf)
        if not (low <= score <= high):
            raise DataError(f"{where}: score {value!r} of {task.name} must be a number in [{low}, {high}]")
        return score
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 0 <= value < len(task.labels):
            return int(value)
    elif isinstance(value, str) and value.strip() in task.labels:
        return task.labels.index(value.strip())
    unlabeled = " (-1 marks the unlabeled GLUE test split; evaluate on a labelled split)" if value == -1 else ""
    raise DataError(
        f"{where}: label {value!r} is not in the label set of {task.name}: "
        f"{', '.join(task.labels)} (or class ids 0..{len(task.labels) - 1}){unlabeled}"
    )


def _label_array(task: Task, labels: list[Any]) -> np.ndarray:
    return np.asarray(labels, np.float32 if task.is_regression else np.int64)
