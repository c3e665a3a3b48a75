"""Read a task's examples: its own file family (the task's declared `Task.source`), or the
`datasets` families every task reads.

`load_split(task, data, split)` reads `data` with the task's source when `data` holds that
family (GLUE .tsv folders, SuperGLUE .jsonl, aclImdb, a user's tables, line-aligned text:
`lmkit.evaluation.sources`); otherwise

* Hugging Face `datasets` folders written by ``save_to_disk``, and parquet files (one file, or a
  folder of ``<split>-*.parquet``), whose columns the source reads (`Source.from_columns`);
* ``None`` or ``"hf"``: ``datasets.load_dataset`` from the Hub (cached), when online (`Task.hub`).

Data of another family is refused with what the task reads: there is no fallback reader.
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

import os
from pathlib import Path

from lmkit.errors import DataError
from lmkit.paths import check_hf_home
from lmkit.evaluation.examples import Examples
from lmkit.evaluation.sources import LAYOUTS, detect_layout, read_parquet
from lmkit.evaluation.tasks import Task, get_task

__all__ = ["Examples", "load_split", "detect_layout", "find_task_data", "is_hub"]


def load_split(task: "str | Task", data: "str | Path | None", split: str | None = None) -> Examples:
    """Load `split` of `task` from `data` (a path in one of the supported layouts, or the Hub)."""
    task = get_task(task)
    split = task.resolve_split(split)
    if is_hub(data):
        examples = _from_hub(task, split)
    else:
        path = Path(data).expanduser()
        if not path.exists():
            raise DataError(f"data path '{path}' does not exist. {task.source.expected(task)}")
        layout = detect_layout(path)
        if task.source.holds(path) or layout == "unknown":  # the source names what it looked for
            examples = task.source.read(task, split, path)
        elif layout == "parquet":
            examples = _from_parquet(task, split, path)
        elif layout == "hf_disk":
            examples = _from_disk(task, split, path)
        else:
            raise DataError(f"'{path}' holds {LAYOUTS[layout]}, but {task.name} {task.source.wants}. "
                            f"{task.source.expected(task)}")
    if len(examples) == 0:
        raise DataError(f"split '{split}' of {task.name} in '{examples.source}' has no examples")
    return examples


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
    for candidate in [root, *(root / name for name in task.data_folders)]:
        if candidate.exists() and (task.source.holds(candidate) or detect_layout(candidate) in ("parquet", "hf_disk")):
            return candidate
    where = f"'{root}'" + (f" or its sub-folders {', '.join(n + '/' for n in task.data_folders)}"
                           if task.data_folders else "")
    if not root.exists():
        found = f"'{root}' does not exist"
    else:
        found = f"'{root}' holds {LAYOUTS.get(detect_layout(root), 'none of the layouts lmkit reads')}"
    raise DataError(f"no {task.name} data in {where}: {found}. {task.source.expected(task)}")


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
    return task.source.from_columns(task, split, str(path), loaded.to_dict())


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
    frame = pd.concat([read_parquet(f) for f in files], ignore_index=True)
    return task.source.from_columns(task, split, ", ".join(map(str, files)), frame.to_dict("list"))


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
    hint = (f"{task.source.hub_hint(task)}, a datasets.save_to_disk folder, or parquet files")
    if task.hub is None:
        raise DataError(f"{task.name} names no Hugging Face dataset (Task.hub): give data=PATH "
                        f"(`--data PATH` on the command line), where PATH is {hint}")
    check_hf_home()  # the Hub's cached data sets and modules live there
    reason = _hub_unreachable()
    try:
        if reason is not None:
            raise ConnectionError(reason)
        import datasets

        loaded = datasets.load_dataset(task.hub.path, task.hub.config, split=task.hf_split(split))
    except (ConnectionError, OSError, ValueError) as exc:
        raise DataError(
            f"could not load {task.name} from the Hugging Face Hub ({task.hub.path}"
            f"{', ' + task.hub.config if task.hub.config else ''}): {type(exc).__name__}: "
            f"{str(exc)[:200]}. Offline, point lmkit at local files instead: data=PATH "
            f"(`--data PATH` on the command line), where PATH is {hint}."
        ) from None
    return task.source.from_columns(task, split, f"hf:{task.hub.path}", loaded.to_dict())
