"""Cross-validation (``folds = k``): k seeded folds of the training split, stratified by label;
each fold is scored by a head fine-tuned on the other k - 1.

The result is one `EvalResult` whose `metrics` are the folds' means, `folds` each fold's
metrics, and predictions / labels those of every training example, predicted by the head that
did not see it (its intervals and baselines are over those out-of-fold predictions).
`max_seconds` is the budget of all folds: each fold gets an equal share of what is left. With
`checkpoint_dir`, each fold fine-tunes in ``fold-<i>/`` and its scores are kept in
``fold-<i>.json``; with `resume`, a fold whose scores are there is not redone and a stopped
fold continues from its checkpoint.

>>> result = lmkit.evaluate(run, "glue/mrpc", "glue_data", folds=5)   # doctest: +SKIP
>>> result.folds[0]["f1"], result.metrics["f1"], result.fold_sd()["f1"]   # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmkit.errors import ConfigError, DataError
from lmkit.paths import atomic_output

__all__ = ["stratified_folds", "cross_validate"]


def stratified_folds(labels: np.ndarray, k: int, seed: int, by_class: bool = True) -> list[np.ndarray]:
    """The rows of each of `k` folds (sorted): each class dealt round-robin over the folds after
    a seeded shuffle, so every fold holds each class in its share (scikit-learn's
    ``StratifiedKFold(shuffle=True)`` in spirit); `by_class` False: a seeded shuffle cut in k.

    >>> [f.tolist() for f in stratified_folds(np.array([0, 0, 1, 1, 1, 0]), 3, seed=0)]  # doctest: +SKIP
    [[1, 4], [0, 2], [3, 5]]
    """
    labels = np.asarray(labels)
    if k < 2:
        raise ConfigError(f"folds must be at least 2 (train on k - 1 folds, score the other), got {k}")
    rng = np.random.default_rng(seed)
    if not by_class:
        if k > len(labels):
            raise DataError(f"folds={k} is more than the {len(labels)} training examples; use at most {len(labels)}")
        return [np.sort(rows) for rows in np.array_split(rng.permutation(len(labels)), k)]
    classes, counts = np.unique(labels, return_counts=True)
    if k > counts.min():
        rare = classes[np.argmin(counts)]
        raise DataError(f"folds={k} is more than the {counts.min()} training examples of class {rare}, so "
                        f"some fold would have none; use folds <= {counts.min()}")
    assigned = np.empty(len(labels), np.int64)
    offset = 0
    for c in classes:
        rows = rng.permutation(np.flatnonzero(labels == c))
        assigned[rows] = (np.arange(len(rows)) + offset) % k
        offset += len(rows)  # the next class starts where this one stopped: folds stay even in size
    return [np.flatnonzero(assigned == i) for i in range(k)]


def cross_validate(job: Any, fit_and_score: Callable[..., Any], reporters: Sequence[Callable[[Any], None]],
                   stop: Any) -> Any:
    """Run the k folds of `job` (the evaluator's prepared job) with `fit_and_score(job, reporters,
    stop) -> EvalResult` and join them into one `EvalResult`."""
    from lmkit.evaluation.result import EvalResult

    cfg, task, train = job.cfg, job.task, job.train
    if train is None:
        raise ConfigError(f"folds={cfg.folds} fine-tunes a head per fold; give it steps (max_steps or epochs > 0)")
    folds = stratified_folds(train.labels, cfg.folds, cfg.seed, task.shape.has("class_labels"))
    folder = None if cfg.checkpoint_dir is None else Path(cfg.checkpoint_dir)
    started, results = time.monotonic(), []
    for i, rows in enumerate(folds):
        saved = None if folder is None or not cfg.resume else _load(folder, i, rows)
        if saved is None:
            fold_cfg = _fold_config(cfg, folder, i, len(folds) - i, time.monotonic() - started)
            rest = np.setdiff1d(np.arange(len(train)), rows)
            fold = fit_and_score(job._replace(cfg=fold_cfg, train=train.take(rest), scored=train.take(rows)),
                                 reporters, stop)
            saved = {"metrics": fold.metrics, "predictions": fold.predictions.tolist(),
                     "training": _plain(fold.training), "model": fold.model_name}
            if folder is not None and not fold.partial:  # a stopped fold resumes from its checkpoint
                _save(folder, i, rows, saved)
        results.append(saved)
        if stop is not None and stop.is_set():
            break
    done = np.concatenate(folds[:len(results)])
    predictions = np.concatenate([np.asarray(r["predictions"], dtype=train.labels.dtype
                                             if train.labels.dtype.kind != "O" else object) for r in results])
    per_fold = [dict(r["metrics"]) for r in results]
    metrics = {m: float(np.mean([f[m] for f in per_fold])) for m in per_fold[0]}
    scored = train.take(done)
    training = {"folds": cfg.folds, "folds_done": len(results), "seconds": time.monotonic() - started,
                "fold_training": [r["training"] for r in results]}
    if len(results) < len(folds):
        training["reason"] = "stopped"
    return EvalResult(task, f"{train.split} ({cfg.folds}-fold)", results[0]["model"], metrics, predictions,
                      scored.labels, config=cfg.to_dict(), training=training, examples=scored, folds=per_fold)


def _fold_config(cfg: Any, folder: Path | None, fold: int, left: int, spent: float) -> Any:
    """Fold `fold`'s options: its own checkpoint folder, an equal share of the time left."""
    changes: dict[str, Any] = {}
    if folder is not None:
        changes["checkpoint_dir"] = str(folder / f"fold-{fold}")
        changes["resume"] = cfg.resume and (folder / f"fold-{fold}").is_dir()
    if cfg.max_seconds is not None:
        remaining = cfg.max_seconds - spent
        if remaining <= 0:
            raise ConfigError(f"max_seconds={cfg.max_seconds:g} was spent before fold {fold + 1} of {cfg.folds}; "
                              f"give the cross-validation more time or fewer folds")
        changes["max_seconds"] = remaining / left
    return cfg.replace(by="cross-validation", **changes) if changes else cfg


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready entries of a fold's training record."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool, type(None)))}


def _save(folder: Path, fold: int, rows: np.ndarray, saved: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_output(folder / f"fold-{fold}.json") as tmp:
        tmp.write_text(json.dumps({"rows": rows.tolist(), **saved}) + "\n", encoding="utf-8")


def _load(folder: Path, fold: int, rows: np.ndarray) -> dict[str, Any] | None:
    """A finished fold's scores, when they are for the same rows (same data, folds and seed)."""
    path = folder / f"fold-{fold}.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    return saved if saved.get("rows") == rows.tolist() else None
