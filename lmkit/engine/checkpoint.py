"""Checkpoints: one `.npz` file per run, replaced atomically.

A checkpoint holds the model's variables, the optimizer's slots and the trainer's own state
(step, best validation loss, evaluations without improvement) as plain arrays plus a JSON
header stored as bytes. It is written to a temporary file in the same directory and moved over
the old one with `os.replace`, so a crash or Ctrl-C at any moment leaves either the previous or
the new checkpoint, never half of one. No pickle: loading uses ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmkit.errors import RunError

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "CHECKPOINT_FILE"]

CHECKPOINT_FILE = "checkpoint.npz"
FORMAT = 1


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    trainer: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> Path:
    """Write `ckpt` to ``run_dir/checkpoint.npz`` atomically and return the path."""
    target = Path(run_dir) / CHECKPOINT_FILE
    header = {"format": FORMAT, "step": ckpt.step, "trainer": ckpt.trainer,
              "model": len(ckpt.model), "optimizer": len(ckpt.optimizer)}
    arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    arrays.update({f"model_{i}": np.asarray(a) for i, a in enumerate(ckpt.model)})
    arrays.update({f"optimizer_{i}": np.asarray(a) for i, a in enumerate(ckpt.optimizer)})
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".npz.tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Read the checkpoint of `run_dir`; a missing or damaged file raises `RunError`."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no checkpoint ({CHECKPOINT_FILE}); nothing to resume from")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            model = [data[f"model_{i}"] for i in range(header["model"])]
            optimizer = [data[f"optimizer_{i}"] for i in range(header["optimizer"])]
    except (OSError, ValueError, KeyError) as exc:
        raise RunError(f"checkpoint {path} is damaged or not an lmkit checkpoint: {exc}") from None
    return Checkpoint(header["step"], model, optimizer, header.get("trainer", {}))
