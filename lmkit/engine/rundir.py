"""The run directory: its layout, and the one way every file in it is written.

A run directory holds::

    config.toml      the resolved configuration
    tokenizer.json   the tokenizer (JSON, no pickle)
    model.keras      the final model (Keras format, loaded in safe mode)
    checkpoint.npz   the last checkpoint: weights, optimizer slots, engine state
    metrics.jsonl    every training event, one JSON object per line (appended)
    summary.json     final metrics, steps, why training ended

Every file but the event log is replaced atomically (`lmkit.paths.atomic_output`), so a crash
at any moment leaves the previous version or the new one, never half a file. A directory being
written is owned by one process: an OS file lock on ``.lock`` (holding the owner's pid) is held
for the training's life, and a second training into it gets a `RunError` naming that pid.
Fine-tuning writes the same checkpoint and event log into its own directory
(``lmkit eval --out``).

>>> run_dir = RunDir.create("runs/demo", overwrite=False)       # doctest: +SKIP
>>> run_dir.write_json(SUMMARY, {"steps": 10})                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from lmkit.engine.checkpoint import (CHECKPOINT_FILE, Checkpoint, checkpoint_step, load_checkpoint,
                                    save_checkpoint)
from lmkit.engine.events import history_record
from lmkit.errors import RunError, RunWarning
from lmkit.paths import atomic_output, atomic_write_text

__all__ = ["RunDir", "CONFIG", "TOKENIZER", "MODEL", "CHECKPOINT", "METRICS", "SUMMARY",
           "ADAPTER_DIR", "RUN_FILES", "RESULT_FILES", "TRAINING", "FINETUNING", "kind_of", "default_run_dir"]

CONFIG = "config.toml"
TOKENIZER = "tokenizer.json"
MODEL = "model.keras"
CHECKPOINT = CHECKPOINT_FILE
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
#: the TensorBoard event files of `report = ["tensorboard"]` (`lmkit.engine.tracking`)
TENSORBOARD = "tensorboard"
RUN_FILES = (CONFIG, TOKENIZER, MODEL, CHECKPOINT, METRICS, SUMMARY)
LOCK = ".lock"
#: the folder a run with ``adapter = "lora"`` writes its adapter into, in peft's layout
ADAPTER_DIR = "adapter"
#: what `lmkit eval --out` writes beside a fine-tuning's checkpoint (`EvalResult.save`)
RESULT_FILES = ("metrics.json", "predictions.tsv")
#: the kinds of run directory: a language-model training (`lmkit train`), a fine-tuning
#: (`lmkit eval --out`)
TRAINING, FINETUNING = "training", "fine-tuning"


def default_run_dir(name: str) -> Path:
    """``runs/<name>-<time>``, the directory of a run given no `out`."""
    return Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _unusable(path: Path, error: OSError) -> RunError:
    return RunError(f"cannot use {path} as a run directory: {error.strerror or error}. Choose "
                    f"another `out` (a folder you can write to, with a shorter name if it is long).")


def kind_of(path: Path) -> str | None:
    """The kind of run `path` holds (`TRAINING`, `FINETUNING`), None when it holds none.

    A training run has its config and tokenizer (what a resume needs); a fine-tuning folder has
    no config, and a summary naming its task or the scores `lmkit eval --out` wrote. A project
    folder holding a ``config.toml`` of the user's is neither."""
    has = lambda name: os.path.lexists(path / name)  # noqa: E731
    if has(CONFIG):
        return TRAINING if has(TOKENIZER) else None
    if any(has(name) for name in RESULT_FILES):
        return FINETUNING
    try:
        summary = json.loads((path / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return FINETUNING if isinstance(summary, dict) and "task" in summary else None


def _check_new_run_place(path: Path, kind: str) -> None:
    """Refuse to start a `kind` run in `path` when that would destroy or pollute something else."""
    target = path.resolve()
    for folder in (target, *target.parents):
        other = kind_of(folder) if folder.is_dir() else None
        if other is not None and other != kind:
            where = "is" if folder == target else f"is inside {folder}, which is"
            raise RunError(
                f"output directory {path} {where} a {other} run directory; a {kind} run there "
                f"would replace or mix with its files. Choose another `out` (a new folder).")
    if target.is_dir() and kind_of(target) is None:
        own = {LOCK, *RUN_FILES, *RESULT_FILES}
        others = sorted(p.name for p in target.iterdir()
                        if p.name not in own and not (p.name.startswith(".") and ".tmp" in p.name))
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise RunError(
                f"output directory {path} is not empty and holds no lmkit run ({shown}); lmkit "
                f"writes runs only into new or empty folders or its own runs. Choose another "
                f"`out`, e.g. a new folder inside it.")


class RunDir:
    """A run directory on disk. Create one with `create` (new runs) or `open` (existing ones)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._created = False  # whether `claim` made the folder (then an empty one is removed)

    @classmethod
    def create(cls, path: str | Path, overwrite: bool, kind: str = TRAINING) -> "RunDir":
        """A directory for a new run of `kind` (`TRAINING`, `FINETUNING`), claimed for this
        process (`claim`); one that already holds a run of that kind needs ``overwrite=True``.
        Refused, before anything is touched: a folder holding (or inside) a run of another kind,
        a non-empty folder that is not a run (``/``, a home folder, a project), and a run whose
        files are symbolic links. Release it with `release` (or use it in ``with``)."""
        run_dir = cls(path)
        try:
            is_file = run_dir.path.is_file()
        except OSError as e:  # e.g. a name longer than the file system allows
            raise _unusable(run_dir.path, e) from None
        if is_file:
            raise RunError(f"output directory {run_dir.path} is a file, not a directory; choose "
                           f"another `out`")
        _check_new_run_place(run_dir.path, kind)
        run_dir.claim()
        try:
            existing = [f for f in RUN_FILES if os.path.lexists(run_dir.path / f)]
            if existing and not overwrite:
                raise RunError(
                    f"output directory {run_dir.path} already holds a run ({', '.join(existing)}). "
                    f"Choose another `out`, pass overwrite=true (--overwrite) to replace it, or "
                    f"resume it with `lmkit train --resume {run_dir.path}`."
                )
            linked = [f for f in existing if (run_dir.path / f).is_symlink()]
            if linked:  # checked before anything is deleted; a link is never followed
                raise RunError(
                    f"{run_dir.path} holds {', '.join(linked)} as a symbolic link; lmkit neither "
                    f"follows nor replaces links in a run directory. Remove the link or choose "
                    f"another `out`.")
            for name in existing:
                target = run_dir.path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
        except BaseException:
            run_dir.release()  # refused: the directory stays free for the next try
            raise
        return run_dir

    @classmethod
    def open(cls, path: str | Path, required: tuple[str, ...] = (CONFIG,),
             claim: bool = False) -> "RunDir":
        """An existing run directory holding the `required` files, else a clear `RunError`;
        ``claim=True`` (to write into it, e.g. to resume) also claims it for this process."""
        run_dir = cls(path)
        if not run_dir.path.is_dir():
            raise RunError(f"run directory '{run_dir.path}' does not exist")
        missing = [f for f in required if not run_dir.file(f).is_file()]
        if missing:
            raise RunError(
                f"'{run_dir.path}' is not an lmkit run directory: {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} missing"
            )
        return run_dir.claim() if claim else run_dir

    # -- ownership ------------------------------------------------------------------------------
    def claim(self) -> "RunDir":
        """Own this directory until `release` (or the process ends, when the OS drops the lock).

        A directory another process owns raises `RunError` naming that process.
        """
        import fcntl

        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a `.lock` planted as a link must not get this process's pid written
            # into the file it points at
            fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if os.path.islink(self.file(LOCK)):
                raise RunError(f"{self.file(LOCK)} is a symbolic link; lmkit does not follow "
                               f"links in a run directory. Remove it, or choose another `out`.") from None
            raise _unusable(self.path, e) from None
        self._created = created
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunError(
                f"run directory {self.path} is in use by process {holder} (a training or "
                f"fine-tuning is writing there). Wait for it to end or stop it, or choose another "
                f"`out`."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        # a process killed inside an atomic write leaves its temporary file; the owner sweeps them
        for name in RUN_FILES:
            for stale in self.path.glob(f".{name}.*.tmp*"):
                stale.unlink(missing_ok=True)
        return self

    def release(self) -> None:
        """Give up ownership (`claim`); nothing happens if this object does not own it."""
        if self._lock_fd is not None:
            import fcntl

            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
            if self._created and [p.name for p in self.path.iterdir()] == [LOCK]:
                # a run that failed before writing anything leaves no empty folder behind
                self.file(LOCK).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.path.rmdir()

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def file(self, name: str) -> Path:
        return self.path / name

    # -- writing (atomic) -----------------------------------------------------------------------
    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.file(name), text)

    def write_json(self, name: str, value: Any) -> Path:
        return self.write_text(name, json.dumps(value, indent=2, ensure_ascii=False, default=str))

    def save_model(self, model: Any) -> Path:
        """Save a Keras model as ``model.keras`` (atomically: a killed save keeps the old one)."""
        with atomic_output(self.file(MODEL)) as tmp:
            model.save(tmp)
        return self.file(MODEL)

    def save_checkpoint(self, ckpt: Checkpoint) -> Path:
        return save_checkpoint(self.path, ckpt)

    # -- reading --------------------------------------------------------------------------------
    def load_checkpoint(self) -> Checkpoint:
        return load_checkpoint(self.path)

    def checkpoint_step(self) -> int | None:
        """The step of the checkpoint (its header only), None when there is none."""
        return checkpoint_step(self.path)

    def interrupted_at(self) -> int | None:
        """The checkpoint's step when it is newer than the finished training the summary
        describes (a training killed or still running after it); else None."""
        step = self.checkpoint_step()
        finished = self.read_json(SUMMARY).get("steps")
        if isinstance(finished, bool) or not isinstance(finished, int):
            finished = None  # a damaged summary says nothing about how far training got
        return step if step is not None and (finished is None or step > finished) else None

    def read_json(self, name: str) -> dict[str, Any]:
        """A JSON file of the run, or ``{}`` when it is absent."""
        path = self.file(name)
        if not path.is_file():
            return {}
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(f"{path} is damaged ({exc}); delete it to use the run without it") from None
        if not isinstance(value, dict):
            raise RunError(f"{path} is damaged (it holds a JSON {type(value).__name__}, not an "
                           f"object); delete it to use the run without it")
        return value

    def history(self) -> list[dict[str, Any]]:
        """History rows from ``metrics.jsonl``: a torn last line (from a crash) is ignored, other
        damaged lines (not UTF-8, not JSON, not an event) are passed over with a warning."""
        path = self.file(METRICS)
        rows: list[dict[str, Any]] = []
        if not path.is_file():
            return rows
        damaged = 0
        for line in path.read_bytes().splitlines():
            try:
                event = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                event = None
            if not isinstance(event, dict):
                damaged += 1
                continue
            record = history_record(event)
            if record is not None:
                rows.append(record)
        if damaged > 1:  # more than the torn last line a crash leaves
            warnings.warn(f"{path}: {damaged} damaged lines passed over", RunWarning, stacklevel=2)
        return rows

    def __repr__(self) -> str:
        return f"RunDir('{self.path}')"
