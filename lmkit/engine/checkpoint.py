"""Checkpoints: the model's arrays, the optimizer's slots and the engine's own state in one `.npz`.

A checkpoint holds plain arrays plus a JSON header stored as bytes, written through the one
atomic write (`lmkit.paths.atomic_output`), so a crash or Ctrl-C at any moment leaves either the
previous or the new checkpoint, never half of one. No pickle: loading uses
``allow_pickle=False``. Restoring is strict: a checkpoint of another model is refused with the
name and both shapes of the first weight that differs.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmkit.errors import RunError
from lmkit.paths import atomic_output

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "checkpoint_step", "restore_arrays", "check_fit", "all_finite",
           "CHECKPOINT_FILE"]

CHECKPOINT_FILE = "checkpoint.npz"
FORMAT = 1


@dataclass
class Checkpoint:
    """Everything needed to continue a training exactly where it stopped."""

    step: int
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    trainer: dict[str, Any] = field(default_factory=dict)


def all_finite(arrays: Sequence[np.ndarray]) -> bool:
    """True when no floating-point array holds a NaN or an infinity."""
    return all(np.isfinite(a).all() for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating))


def save_checkpoint(folder: Path, ckpt: Checkpoint) -> Path:
    """Write `ckpt` to ``folder/checkpoint.npz`` atomically and return the path."""
    target = Path(folder) / CHECKPOINT_FILE
    header = {"format": FORMAT, "step": ckpt.step, "trainer": ckpt.trainer,
              "model": len(ckpt.model), "optimizer": len(ckpt.optimizer)}
    arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    arrays.update({f"model_{i}": np.asarray(a) for i, a in enumerate(ckpt.model)})
    arrays.update({f"optimizer_{i}": np.asarray(a) for i, a in enumerate(ckpt.optimizer)})
    with atomic_output(target) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return target


def checkpoint_step(folder: Path) -> int | None:
    """The step of ``folder/checkpoint.npz`` (reading its header only), None when there is none."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return int(json.loads(bytes(data["header"]).decode())["step"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise _damaged(path, exc) from None


def _damaged(path: Path, exc: BaseException) -> RunError:
    # numpy's own words would suggest allow_pickle=True: that would run code from the file
    why = ("it holds Python objects, which lmkit never loads (they could run code)"
           if "allow_pickle" in str(exc) else str(exc) or type(exc).__name__)
    return RunError(f"checkpoint {path} is damaged or not an lmkit checkpoint: {why}")


def load_checkpoint(folder: Path) -> Checkpoint:
    """Read the checkpoint of `folder`; a missing or damaged file raises `RunError`."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise RunError(f"{folder} has no checkpoint ({CHECKPOINT_FILE}); nothing to resume from")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            model = [data[f"model_{i}"] for i in range(header["model"])]
            optimizer = [data[f"optimizer_{i}"] for i in range(header["optimizer"])]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise _damaged(path, exc) from None
    return Checkpoint(header["step"], model, optimizer, header.get("trainer", {}))


def check_fit(targets: Sequence[Any], arrays: Sequence[np.ndarray], what: str, source: str) -> None:
    """Raise `RunError` unless `arrays` match `targets` (anything with a ``.shape``) one to one,
    each a real, finite array.

    `what` names the arrays in messages ("model weights", "optimizer slots"), `source` the file.
    """
    if len(arrays) != len(targets):
        raise RunError(
            f"{source} holds {len(arrays)} {what}, but this model has {len(targets)}: the "
            f"checkpoint was written by a different architecture or configuration. Train into a "
            f"new directory, or restore with the configuration that wrote it."
        )
    for target, array in zip(targets, arrays):
        name = getattr(target, "path", None) or getattr(target, "name", "?")
        _check_values(array, f"{source}: {what[:-1] if what.endswith('s') else what} '{name}'")
        if tuple(target.shape) != tuple(np.shape(array)):
            raise RunError(
                f"{source}: {what[:-1] if what.endswith('s') else what} '{name}' has shape "
                f"{tuple(np.shape(array))} in the checkpoint but {tuple(target.shape)} in this "
                f"model: the checkpoint was written by a different configuration (a changed "
                f"width, vocabulary or number of layers?). Restore with the configuration that "
                f"wrote it."
            )


def _check_values(array: np.ndarray, label: str) -> None:
    """Refuse what lmkit never writes: numbers that are not real (complex, text) and NaN or
    infinite floats (the engine checkpoints only finite weights). Either would load "fine" and
    give nonsense, such as a generation that prints the prompt alone."""
    dtype = np.asarray(array).dtype
    if dtype.kind not in "fiub":
        raise RunError(f"{label} is stored as {dtype}, which lmkit never writes: the checkpoint "
                       f"is damaged or not lmkit's")
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise RunError(f"{label} holds NaN or infinite values, which lmkit never checkpoints: "
                       f"the checkpoint is damaged")


def restore_arrays(targets: Sequence[Any], arrays: Sequence[np.ndarray], what: str,
                   source: str) -> None:
    """Assign `arrays` to the Keras variables `targets` after `check_fit`: a mismatch raises
    before anything is assigned, so a model is never left half restored."""
    check_fit(targets, arrays, what, source)
    for target, array in zip(targets, arrays):
        target.assign(array)
