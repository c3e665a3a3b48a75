"""The training loop: data, model and compiled step in; a run directory and a `Run` out.

One function, `run_training`, does the whole job in a fixed order that the run directory
mirrors: resolve the directory, read the corpus into cached token ids, build or restore the
model, then step until the step budget, a stop request or early stopping, evaluating and
checkpointing on the way. Every exit path except a crash of the interpreter leaves a checkpoint,
so nothing trained is lost.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmkit.config import TrainConfig
from lmkit.errors import RunError, TrainingDiverged
from lmkit.training.run import history_record
from lmkit.engine.events import (CheckpointEvent, EndEvent, EvalEvent, Event, Reporter,
                                   StartEvent, StepEvent, StopSignal)

if TYPE_CHECKING:
    from lmkit.training.run import Run

__all__ = ["run_training", "RUN_FILES"]

RUN_FILES = ("config.toml", "tokenizer.json", "model.keras", "checkpoint.npz", "metrics.jsonl",
             "summary.json")


# -- run directory ----------------------------------------------------------------------------
def _prepare_dir(cfg: TrainConfig, resume: bool) -> Path:
    run_dir = Path(cfg.out) if cfg.out else Path("runs") / (
        f"{cfg.arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    existing = [f for f in RUN_FILES if (run_dir / f).exists()]
    if resume:
        return run_dir
    if existing:
        if not cfg.overwrite:
            raise RunError(
                f"output directory {run_dir} already holds a run ({', '.join(existing)}). "
                f"Choose another `out`, pass overwrite=true (--overwrite) to replace it, or "
                f"resume it with `lmkit train --resume {run_dir}`."
            )
        for name in existing:
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _enable_compilation_cache() -> None:
    """Persist XLA executables across processes (a warm start skips most compile time)."""
    import jax

    from lmkit.paths import cache_dir

    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@contextlib.contextmanager
def _sigint_requests_stop(stop: StopSignal) -> Iterator[None]:
    """First Ctrl-C (or a kernel interrupt) asks for a clean stop; a second one interrupts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set("interrupted")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _auto_steps_per_dispatch(cfg: TrainConfig) -> int:
    # Fuse as many steps as divide the evaluation and checkpoint intervals, so nearly every
    # dispatch has the same shape and compiles once.
    period = math.gcd(cfg.eval_every, cfg.checkpoint_every)
    return next(k for k in (10, 8, 5, 4, 2, 1) if period % k == 0)


# -- the loop ---------------------------------------------------------------------------------
class _Emitter:
    def __init__(self, reporters: list[Reporter]) -> None:
        self.reporters = reporters
        self.history: list[dict[str, Any]] = []

    def __call__(self, event: Event) -> None:
        record = history_record(event.to_dict())
        if record is not None:
            self.history.append(record)
        for reporter in self.reporters:
            reporter(event)


def run_training(
    cfg: TrainConfig,
    *,
    reporters: list[Reporter] | None = None,
    stop: StopSignal | None = None,
    resume: bool = False,
) -> "Run":
    """Train according to `cfg` and return the `Run`. See `lmkit.train` for the public entry."""
    import keras

    from lmkit.build import build_model
    from lmkit.data.corpus import open_corpus
    from lmkit.data.tokens import WindowSampler, sequential_batches, split, token_ids
    from lmkit.losses import build_loss
    from lmkit.optim import FULL_BATCH, build_optimizer, exclude_from_decay
    from lmkit.registry import metrics as metric_registry
    from lmkit.training.run import Run, load_history, read_tokenizer, write_tokenizer
    from lmkit.schedules import build_schedule
    from lmkit.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from lmkit.engine.reporters import JsonlReporter, TextReporter
    from lmkit.training.step import batch_parts, make_stepper

    stop = stop or StopSignal()
    # Validate every name before any work, so a typo fails in a second, not after tokenizing.
    for registry_name, name in (("optimizers", cfg.optimizer), ("schedules", cfg.schedule),
                                ("losses", cfg.loss), ("architectures", cfg.arch),
                                ("tokenizers", cfg.tokenizer)):
        from lmkit.registry import get_registry

        get_registry(registry_name).entry(name)
    for name in cfg.metrics:
        metric_registry.entry(name)

    corpus = open_corpus(cfg.data, cfg.encoding)  # before creating anything on disk
    run_dir = _prepare_dir(cfg, resume)
    backend = keras.backend.backend()
    if backend == "jax":
        _enable_compilation_cache()
    keras.utils.set_random_seed(cfg.seed)

    # data ------------------------------------------------------------------------------------
    if resume:
        tokenizer = read_tokenizer(run_dir)
    else:
        from lmkit.tokenizers import build_tokenizer

        tokenizer = build_tokenizer(cfg.tokenizer, corpus.chunks(), cfg.vocab_size)
    ids = token_ids(corpus, tokenizer)
    if cfg.validation_split > 0:
        train_ids, val_ids = split(ids, cfg.validation_split, cfg.seq_len)
    else:
        train_ids, val_ids = ids, None
    tokens_per_step = cfg.batch_size * cfg.seq_len
    full_batch = cfg.optimizer.lower() in FULL_BATCH
    if cfg.epochs is not None:
        per_epoch = 1 if full_batch else len(train_ids) / tokens_per_step
        total = max(1, math.ceil(cfg.epochs * per_epoch))
    else:
        total = int(cfg.max_steps)

    # model and step --------------------------------------------------------------------------
    model = build_model(cfg, tokenizer.vocab_size)
    optimizer = build_optimizer(cfg, build_schedule(cfg, total))
    exclude_from_decay(optimizer, model.trainable_variables)
    loss_fn = build_loss(cfg)
    metric_names = [metric_registry.entry(m).name for m in cfg.metrics]
    start, trainer_state = 0, {"best_val_loss": None, "bad_evals": 0}
    if resume:
        ckpt = load_checkpoint(run_dir)
        variables = [*model.trainable_variables, *model.non_trainable_variables]
        if len(variables) != len(ckpt.model):
            raise RunError(f"checkpoint in {run_dir} does not match architecture '{cfg.arch}'")
        for var, value in zip(variables, ckpt.model):
            var.assign(value)
        start, trainer_state = ckpt.step, {**trainer_state, **ckpt.trainer}
    step_cache, cache_key = None, None
    if backend == "jax":
        from lmkit.paths import cache_dir
        from lmkit.training.compile_cache import StepCache, step_key

        cache_key = step_key(cfg, total, tokenizer.vocab_size, model, optimizer, loss_fn)
        step_cache = StepCache(cache_dir() / "steps")
    stepper = make_stepper(model, optimizer, loss_fn, metric_names, cfg.top_k, step_cache,
                           cache_key, batch_parts(cfg, model, total))
    if resume:
        stepper.load_optimizer_state(ckpt.optimizer)
    else:
        (run_dir / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
        write_tokenizer(tokenizer, run_dir)

    emit = _Emitter([JsonlReporter(run_dir / "metrics.jsonl"),
                     *(reporters if reporters is not None else [TextReporter()])])
    if resume:
        emit.history = load_history(run_dir)
    sampler = WindowSampler(train_ids, cfg.seq_len, cfg.batch_size, cfg.seed)
    k_max = cfg.steps_per_dispatch or _auto_steps_per_dispatch(cfg)

    # Characters and bytes behind the evaluated targets, for bits-per-char/byte (computed once).
    eval_limit = cfg.eval_batches or None
    text_sizes: dict[str, float] = {}
    if val_ids is not None and {"bits_per_char", "bits_per_byte"} & set(metric_names):
        targets = [y for _, y in sequential_batches(val_ids, cfg.seq_len, cfg.batch_size, eval_limit)]
        text = tokenizer.decode(np.concatenate([t.ravel() for t in targets]).tolist())
        text_sizes = {"chars": float(len(text)), "bytes": float(len(text.encode("utf-8")))}

    def evaluate() -> dict[str, float]:
        sums = stepper.evaluate(sequential_batches(val_ids, cfg.seq_len, cfg.batch_size, eval_limit))
        sums.update(text_sizes)
        return {f"val_{m}": float(metric_registry.get(m).finalize(sums)) for m in metric_names}

    def checkpoint(step: int) -> None:
        path = save_checkpoint(run_dir, Checkpoint(step, stepper.model_state(),
                                                   stepper.optimizer_state(), trainer_state))
        emit(CheckpointEvent(step, str(path)))

    n_params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    devices = _devices(backend)
    emit(StartEvent(str(run_dir), total, start, cfg.arch, n_params, backend, devices,
                    len(train_ids) if full_batch else tokens_per_step, cfg.to_dict()))

    t0 = time.monotonic()
    step, last_ckpt, reason = start, start, "completed"
    step_time: float | None = None
    last_eval: dict[str, float] = {}
    with _sigint_requests_stop(stop):
        try:
            while step < total and not stop.is_set():
                t_chunk = time.monotonic()
                if full_batch:
                    n_train = len(train_ids) - 1
                    batches = ((x, y, x.size / n_train) for x, y in
                               sequential_batches(train_ids, cfg.seq_len, cfg.batch_size))
                    losses = np.array([stepper.accumulate(batches)], dtype=np.float32)
                else:
                    boundaries = [total, (step // cfg.eval_every + 1) * cfg.eval_every,
                                  (step // cfg.checkpoint_every + 1) * cfg.checkpoint_every]
                    k = min(k_max, *(b - step for b in boundaries))
                    losses = stepper.train(*sampler.batches(step, k))
                bad = np.flatnonzero(~np.isfinite(losses))
                if bad.size:
                    reason = "diverged"
                    diverged_at = step + int(bad[0]) + 1
                    break
                step += len(losses)
                now = time.monotonic()
                per_step = (now - t_chunk) / len(losses)
                # Smooth the step time, ignoring the first dispatch (it includes compilation).
                step_time = per_step if step_time is None or step - start <= len(losses) else (
                    0.7 * step_time + 0.3 * per_step)
                # A full-batch step is one pass; otherwise an epoch is len(train_ids) tokens.
                tokens = len(train_ids) if full_batch else tokens_per_step
                epoch = float(step) if full_batch else step * tokens_per_step / len(train_ids)
                emit(StepEvent(step, total, epoch, float(losses[-1]), _lr_at(optimizer, step),
                               tokens / step_time, now - t0, (total - step) * step_time))
                stepper.save_compiled()  # a step compiled just now, for the next process
                if val_ids is not None and (step % cfg.eval_every == 0 or step == total):
                    last_eval = evaluate()
                    emit(EvalEvent(step, last_eval))
                    _early_stopping(cfg, trainer_state, last_eval, stop)
                if step % cfg.checkpoint_every == 0 and step != last_ckpt:
                    checkpoint(step)
                    last_ckpt = step
        except BaseException:
            # Keep what was trained (a second Ctrl-C, an out-of-memory, a bug in a plugin).
            with contextlib.suppress(Exception):
                if step != last_ckpt and np.all(np.isfinite(stepper.model_state()[0])):
                    checkpoint(step)
            raise

    elapsed = time.monotonic() - t0
    if reason == "diverged":
        summary = _write_summary(run_dir, cfg, step, "diverged", elapsed, last_eval, n_params)
        emit(EndEvent(step, "diverged", elapsed, summary))
        kept = (f"The last good checkpoint (step {last_ckpt}) is kept in "
                f"{run_dir / 'checkpoint.npz'}." if last_ckpt
                else "No checkpoint had been written yet.")
        raise TrainingDiverged(
            f"the training loss became {losses[bad[0]]} at step {diverged_at}; training stopped. "
            f"{kept} Try a lower learning_rate (now {cfg.learning_rate}) or gradient clipping "
            f"(clipnorm), then resume with `lmkit train --resume {run_dir}`."
        )
    if stop.is_set():
        reason = stop.reason or "stopped"
    if step != last_ckpt:
        checkpoint(step)
    stepper.sync()
    model.save(run_dir / "model.keras")
    run = Run(run_dir, cfg, model, tokenizer, emit.history, {})
    sample = ""
    if cfg.sample_tokens:
        sample = run.generate(cfg.sample_prompt, max_new_tokens=cfg.sample_tokens, seed=cfg.seed)
    run.summary = _write_summary(run_dir, cfg, step, reason, elapsed, last_eval, n_params, sample)
    emit(EndEvent(step, reason, elapsed, run.summary))
    return run


def _devices(backend: str) -> str:
    if backend == "jax":
        import jax

        return ", ".join(f"{d.platform}:{d.id}" for d in jax.devices())
    if backend == "torch":
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return backend


def _lr_at(optimizer: Any, step: int) -> float:
    lr = optimizer._learning_rate
    return float(lr(step - 1)) if callable(lr) else float(lr)


def _early_stopping(cfg: TrainConfig, state: dict[str, Any], metrics: dict[str, float],
                    stop: StopSignal) -> None:
    val = metrics.get("val_loss")
    if val is None:
        return
    best = state.get("best_val_loss")
    if best is None or val < best:
        state["best_val_loss"], state["bad_evals"] = val, 0
    else:
        state["bad_evals"] = state.get("bad_evals", 0) + 1
        if cfg.early_stopping and state["bad_evals"] >= cfg.early_stopping:
            stop.set("early_stopping")


def _write_summary(run_dir: Path, cfg: TrainConfig, step: int, reason: str, elapsed: float,
                   last_eval: dict[str, float], n_params: int, sample: str = "") -> dict[str, Any]:
    import keras

    summary = {"arch": cfg.arch, "steps": step, "reason": reason, "elapsed_s": round(elapsed, 3),
               "parameters": n_params, "backend": keras.backend.backend(), **last_eval,
               "sample": sample, "finished": datetime.now().isoformat(timespec="seconds")}
    tmp = run_dir / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    tmp.replace(run_dir / "summary.json")
    return summary
