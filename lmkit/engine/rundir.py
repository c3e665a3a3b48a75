"""The run directory: its layout, and the one way every file in it is written.

A run directory holds::

    config.toml      the resolved configuration
    tokenizer.json   the tokenizer (JSON, no pickle)
    model.keras      the final model (Keras format, loaded in safe mode)
    checkpoint.npz   the last checkpoint: weights, optimizer slots, engine state
    metrics.jsonl    every training event, one JSON object per line (appended)
    summary.json     final metrics, steps, why training ended

Every file but the event log is replaced atomically (`lmkit.paths.atomic_output`), so a crash
at any moment leaves the previous version or the new one, never half a file. Fine-tuning writes
the same checkpoint and event log into its own directory (``lmkit eval --out``).

>>> run_dir = RunDir.create("runs/demo", overwrite=False)       # doctest: +SKIP
>>> run_dir.write_json(SUMMARY, {"steps": 10})                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from lmkit.engine.checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint, save_checkpoint
from lmkit.engine.events import history_record
from lmkit.errors import RunError
from lmkit.paths import atomic_output, atomic_write_text

__all__ = ["RunDir", "CONFIG", "TOKENIZER", "MODEL", "CHECKPOINT", "METRICS", "SUMMARY",
           "RUN_FILES", "default_run_dir"]

CONFIG = "config.toml"
TOKENIZER = "tokenizer.json"
MODEL = "model.keras"
CHECKPOINT = CHECKPOINT_FILE
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
RUN_FILES = (CONFIG, TOKENIZER, MODEL, CHECKPOINT, METRICS, SUMMARY)


def default_run_dir(name: str) -> Path:
    """``runs/<name>-<time>``, the directory of a run given no `out`."""
    return Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    """A run directory on disk. Create one with `create` (new runs) or `open` (existing ones)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, overwrite: bool) -> "RunDir":
        """A directory for a new run; one that already holds a run needs ``overwrite=True``."""
        run_dir = cls(path)
        existing = [f for f in RUN_FILES if (run_dir.path / f).exists()]
        if existing:
            if not overwrite:
                raise RunError(
                    f"output directory {run_dir.path} already holds a run ({', '.join(existing)}). "
                    f"Choose another `out`, pass overwrite=true (--overwrite) to replace it, or "
                    f"resume it with `lmkit train --resume {run_dir.path}`."
                )
            for name in existing:
                target = run_dir.path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
        run_dir.path.mkdir(parents=True, exist_ok=True)
        return run_dir

    @classmethod
    def open(cls, path: str | Path, required: tuple[str, ...] = (CONFIG,)) -> "RunDir":
        """An existing run directory holding the `required` files, else a clear `RunError`."""
        run_dir = cls(path)
        if not run_dir.path.is_dir():
            raise RunError(f"run directory '{run_dir.path}' does not exist")
        missing = [f for f in required if not run_dir.file(f).is_file()]
        if missing:
            raise RunError(
                f"'{run_dir.path}' is not an lmkit run directory: {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} missing"
            )
        return run_dir

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

    def read_json(self, name: str) -> dict[str, Any]:
        """A JSON file of the run, or ``{}`` when it is absent."""
        path = self.file(name)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def history(self) -> list[dict[str, Any]]:
        """History rows from ``metrics.jsonl`` (a torn last line, from a crash, is ignored)."""
        path = self.file(METRICS)
        rows: list[dict[str, Any]] = []
        if not path.is_file():
            return rows
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = history_record(json.loads(line))
            except json.JSONDecodeError:
                continue
            if record is not None:
                rows.append(record)
        return rows

    def __repr__(self) -> str:
        return f"RunDir('{self.path}')"
