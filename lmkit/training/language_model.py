"""Language-model training: the engine's client that turns a `TrainConfig` into a trained model.

It does what is particular to language models, in the order the run directory mirrors: resolve
every name, open the run directory, read the corpus into cached token ids, build the model and
the compiled step, then hand a `LanguageModelTrainee` (random windows, or whole passes for a
full-batch optimizer) to `lmkit.engine.run`, which owns the loop, stopping, divergence and
checkpoints. At the end it saves the model and generates a sample. `lmkit.training.run.train`
wraps the result in a `Run`.

>>> trained = train_language_model(TrainConfig(arch="lstm", max_steps=100))   # doctest: +SKIP
>>> trained.outcome.summary["val_loss"]                                      # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lmkit.adapters.peft_format import save_trained
from lmkit.config import Source, TrainConfig
from lmkit.data.tokens import WindowSampler, sequential_batches
from lmkit.engine import engine
from lmkit.engine.events import Reporter, StopSignal
from lmkit.engine.phases import Phases, process_age
from lmkit.engine.rundir import ADAPTER_DIR, CONFIG, TOKENIZER, RunDir, default_run_dir
from lmkit.errors import ConfigError
from lmkit.optim import EVALUATION_WEIGHTS, FULL_BATCH
from lmkit.paths import compilations
from lmkit.paths import enable_compilation_cache as _enable_compilation_cache
from lmkit.resolve import Resolved, resolve

__all__ = ["train_language_model", "resolve_training", "LanguageModelTrainee", "Trained",
           "unigram_loss", "log_unigram", "plateau_hint"]


class Trained(NamedTuple):
    """What language-model training produced."""

    dir: Path
    config: TrainConfig
    model: Any
    tokenizer: Any
    outcome: engine.Outcome
    #: False on the processes of a distributed run but the first: they wrote and reported nothing
    lead: bool = True


def unigram_loss(ids: np.ndarray) -> float:
    """Cross-entropy (nats per token) of predicting every token from its frequency alone: what a
    model that has learned no context scores."""
    counts = np.bincount(np.asarray(ids))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def log_unigram(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Log of each token's add-one-smoothed frequency in `ids`, ``(vocab_size,)`` float32: the
    logit bias with which a model that reads no context predicts the unigram distribution
    (config key ``head_bias_init = "unigram"``).

    >>> [round(float(p), 3) for p in np.exp(log_unigram(np.array([0, 0, 1]), 3))]
    [0.5, 0.333, 0.167]
    """
    counts = np.bincount(np.asarray(ids), minlength=vocab_size)[:vocab_size] + 1.0
    return np.log(counts / counts.sum()).astype(np.float32)


def plateau_hint(cfg: TrainConfig, val_loss: float | None, unigram: float) -> str:
    """Why a run learned nothing, and what to change, when its validation loss is still within
    0.1 of `unigram` (the loss of letter or word frequencies alone); else ``""``.

    >>> plateau_hint(TrainConfig(arch="lstm", layers=4), 3.30, 3.32)[:48]
    'val_loss 3.300 is about the unigram loss (3.320)'
    """
    if val_loss is None or val_loss < unigram - 0.1:
        return ""
    return (f"val_loss {val_loss:.3f} is about the unigram loss ({unigram:.3f}): the model predicts "
            f"token frequencies and has not learned to use the context yet. Train longer, "
            f"raise learning_rate (now {cfg.learning_rate:g}), or use "
            f"fewer layers (now {cfg.layers}); the architecture's defaults are in the README.")


class LanguageModelTrainee:
    """Next-token prediction on token ids: what `lmkit.engine.run` trains for a language model."""

    def __init__(self, cfg: TrainConfig, parts: Resolved, stepper: Any, optimizer: Any,
                 train_ids: np.ndarray, val_ids: np.ndarray | None, tokenizer: Any,
                 full_batch: bool, local_rows: slice | None = None,
                 first_dispatch: int | None = None) -> None:
        self.cfg, self.stepper, self.optimizer = cfg, stepper, optimizer
        self.train_ids, self.val_ids, self.full_batch = train_ids, val_ids, full_batch
        # One optimizer step reads accumulate_steps micro-batches of batch_size windows, drawn
        # as one batch (a pure function of seed and step, whatever the device or process count);
        # a process of a distributed run reads only its `local_rows` of each micro-batch.
        size, micro = cfg.batch_size, cfg.accumulate_steps
        self.sampler = WindowSampler(train_ids, cfg.seq_len, size * micro, cfg.seed)
        self._rows = None
        if local_rows is not None and local_rows != slice(0, size):
            self._rows = np.concatenate([np.arange(m * size + local_rows.start,
                                                   m * size + local_rows.stop) for m in range(micro)])
        self.metrics = [e.name for e in parts.metrics]
        self._registry = {e.name: e.obj for e in parts.metrics}
        # Characters and bytes behind the evaluated targets, for bits-per-char/byte (once).
        self._text_sizes: dict[str, float] = {}
        if val_ids is not None and {"bits_per_char", "bits_per_byte"} & set(self.metrics):
            targets = [y for _, y in self._eval_batches()]
            text = tokenizer.decode(np.concatenate([t.ravel() for t in targets]).tolist())
            self._text_sizes = {"chars": float(len(text)), "bytes": float(len(text.encode("utf-8")))}
            for name in {"bits_per_char", "bits_per_byte"} & set(self.metrics):  # before training
                self._registry[name].finalize({"nll": 0.0, "count": sum(t.size for t in targets),
                                               **self._text_sizes})
        # The step compiles first, the longest; the evaluation is traced while it compiles.
        if first_dispatch and not full_batch:
            stepper.prepare_training(*self._batches(0, first_dispatch))
        first = next(self._eval_batches(), None) if val_ids is not None else None
        if first is not None:  # compiled beside the training step, ready for the first evaluation
            stepper.prepare_evaluation(first[0].shape)

    def _eval_batches(self) -> Any:
        return sequential_batches(self.val_ids, self.cfg.seq_len, self.cfg.batch_size,
                                self.cfg.eval_batches or None)

    def _batches(self, step: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The windows of steps ``step + 1 .. step + k``, stacked as the stepper takes them."""
        xs, ys = self.sampler.batches(step, k, self._rows)
        if self.cfg.accumulate_steps > 1:  # (k, accumulate, B, T): micro-batch m is rows m*B..
            xs, ys = (a.reshape(k, self.cfg.accumulate_steps, -1, a.shape[-1]) for a in (xs, ys))
        return xs, ys

    def train(self, step: int, k: int) -> np.ndarray:
        if self.full_batch:  # one step is one pass: the mean gradient of every window
            n_train = len(self.train_ids) - 1
            batches = ((x, y, x.size / n_train) for x, y in
                       sequential_batches(self.train_ids, self.cfg.seq_len, self.cfg.batch_size))
            return np.array([self.stepper.accumulate(batches)], dtype=np.float32)
        return self.stepper.train(*self._batches(step, k))

    def evaluate(self) -> dict[str, float]:
        if self.val_ids is None:
            return {}
        sums = self.stepper.evaluate(self._eval_batches())
        sums.update(self._text_sizes)
        return {f"val_{m}": float(self._registry[m].finalize(sums)) for m in self.metrics}

    def learning_rate(self, step: int) -> float:
        lr = self.optimizer._learning_rate
        return float(lr(step - 1)) if callable(lr) else float(lr)

    def model_arrays(self) -> list[np.ndarray]:
        return self.stepper.model_arrays()

    def optimizer_arrays(self) -> list[np.ndarray]:
        return self.stepper.optimizer_arrays()

    def restore(self, model: list[np.ndarray], optimizer: list[np.ndarray], source: str) -> None:
        self.stepper.restore(model, optimizer, source)


def train_language_model(
    cfg: TrainConfig,
    *,
    reporters: list[Reporter] | None = None,
    stop: StopSignal | None = None,
    resume: bool = False,
) -> Trained:
    """Train according to `cfg`. See `lmkit.train` for the public entry."""
    from lmkit.data.corpus import open_corpus

    started_at = process_age()  # a command's start-up and imports, for the phase breakdown
    phases = Phases()
    parts, init = resolve_training(cfg, resume)
    cfg = parts.config
    corpus = open_corpus(cfg.data, cfg.encoding)  # before creating anything on disk
    val_corpus = open_corpus(cfg.validation_data, cfg.encoding) if cfg.validation_data else None
    layout = _layout(cfg)  # a device count that does not fit fails here too
    lead = layout is None or layout.lead  # the one process that writes the run
    if layout is not None and layout.processes > 1 and cfg.out is None:
        raise ConfigError(f"a run of {layout.processes} processes needs `out` (--out DIR): every "
                          f"process must name the same run directory")
    if resume:
        run_dir = RunDir.open(cfg.out, required=(CONFIG, TOKENIZER))
        cfg.check_resumable(TrainConfig.from_sources(run_dir.file(CONFIG)), str(run_dir.path))
        if lead:
            run_dir.claim()
    elif lead:
        run_dir = RunDir.create(cfg.out or default_run_dir(cfg.arch), cfg.overwrite)
    else:  # process 0 creates it; the others never touch it
        run_dir = RunDir(cfg.out)
    with run_dir:  # owned by this process until training ends
        return _train(cfg, parts, corpus, val_corpus, run_dir, reporters, stop, resume, init,
                      layout, phases, started_at)


def resolve_training(cfg: TrainConfig, resume: bool = False) -> tuple[Resolved, Any]:
    """`cfg` resolved once (`lmkit.resolve`: every default, then every name; a typo fails in a
    second) and the pretrained decoder `init` names, whose sizes it takes (None without one)."""
    init = None
    if cfg.init and not resume:  # a resumed run rebuilds the model from its own config
        cfg, init = _from_checkpoint(cfg)
    return resolve(cfg, training_starts=not resume), init


# The checkpoint's constructor options a run's config records in its own keys (the rest go to
# the `[model]` table); `seq_len` stays the training window and `dropout` the run's choice.
_FROM_CHECKPOINT = ("embed_dim", "layers", "heads", "units", "tie_embeddings")


def _from_checkpoint(cfg: TrainConfig) -> tuple[TrainConfig, Any]:
    """`cfg` with the architecture, sizes and tokenizer of the pretrained decoder `cfg.init`."""
    from lmkit.pretrained import from_pretrained

    init = from_pretrained(cfg.init)
    if init.is_encoder:
        raise ConfigError(
            f"init={cfg.init!r} is an encoder ({init.arch}): it predicts no next token, so it "
            f"cannot continue training as a language model; use a decoder checkpoint (gpt2), "
            f"or fine-tune the encoder on a task with `lmkit eval {cfg.init} --task ...`")
    options = init.model.get_config()
    accepted = inspect.signature(type(init.model)).parameters
    keys = {k: options[k] for k in _FROM_CHECKPOINT if k in options}
    table = {k: options[k] for k in accepted
             if k in options and k not in (*_FROM_CHECKPOINT, "vocab_size", "seq_len", "dropout")}
    context = init.model.max_context
    if context is not None and cfg.seq_len > context:
        raise ConfigError(f"seq_len={cfg.seq_len} is longer than the {context} positions of "
                          f"init={cfg.init!r}; set seq_len to at most {context}")
    cfg = cfg.replace(by=Source("checkpoint", f"init={cfg.init}"), arch=init.arch,
                      tokenizer="pretrained", vocab_size=None, model=table, **keys)
    return cfg, init


def _prepare_sample(cfg: TrainConfig, model: Any, tokenizer: Any, alone: bool) -> list[Any]:
    """Start compiling the programs of the final sample (`cfg.sample_tokens` tokens after
    `cfg.sample_prompt`) in the background (`compile_in_background`): futures to wait for before
    sampling (the sample's own `jax.jit` calls then find them compiled). On one JAX device
    (`alone`) only; else nothing is prepared."""
    import keras

    if not (cfg.sample_tokens and alone and keras.backend.backend() == "jax"):
        return []
    from lmkit.generation import lower_generate
    from lmkit.training.step import compile_in_background

    return [compile_in_background(p) for p in lower_generate(model, tokenizer, cfg.sample_prompt)]


def _layout(cfg: TrainConfig) -> Any:
    """The device mesh of the compiled step (`lmkit.distribute.Layout`), None for one device."""
    import keras

    if keras.backend.backend() != "jax":
        if cfg.model_parallel > 1 or cfg.accumulate_steps > 1 or cfg.freeze \
                or cfg.adapter != "none":
            raise ConfigError(
                f"model_parallel, accumulate_steps, freeze and adapter need the compiled JAX "
                f"step; KERAS_BACKEND is {keras.backend.backend()!r}. Set KERAS_BACKEND=jax, or "
                f"leave them at 1, [] (freeze) and \"none\" (adapter)")
        return None
    from lmkit.distribute import initialize, layout_for

    initialize()  # joins the other processes when the environment names a distributed run
    return layout_for(cfg.devices, cfg.batch_size, cfg.model_parallel)


def _train(cfg: TrainConfig, parts: Resolved, corpus: Any, val_corpus: Any, run_dir: RunDir,
           reporters: list[Reporter] | None, stop: StopSignal | None, resume: bool,
           init: Any = None, layout: Any = None, phases: Phases | None = None,
           started_at: float | None = None) -> Trained:
    import keras

    from lmkit.build import build_model, check_fits
    from lmkit.data.tokens import split, token_ids, warn_unknown
    from lmkit.engine.reporters import TextReporter
    from lmkit.tokenizers import load_tokenizer, save_tokenizer
    from lmkit.training.step import batch_parts, make_stepper

    backend = keras.backend.backend()
    averaged = parts.optimizer.has(EVALUATION_WEIGHTS)
    if averaged and backend != "jax":
        raise ConfigError(
            f"optimizer={cfg.optimizer!r} evaluates and saves weights other than the ones it "
            f"trains, which only the compiled JAX step does; KERAS_BACKEND is {backend!r}. Set "
            f"KERAS_BACKEND=jax, or choose another optimizer (`lmkit list optimizers`)")
    if backend == "jax":
        _enable_compilation_cache()
    keras.utils.set_random_seed(cfg.seed)

    # data ------------------------------------------------------------------------------------
    if resume:
        tokenizer = load_tokenizer(run_dir.file(TOKENIZER))
    elif init is not None:
        tokenizer = init.tokenizer
    else:
        tokenizer = parts.tokenizer.obj.fit(corpus.chunks(), vocab_size=cfg.vocab_size)
    ids = token_ids(corpus, tokenizer)
    if val_corpus is not None:  # a corpus of its own, in the training corpus's vocabulary
        train_ids, val_ids = ids, token_ids(val_corpus, tokenizer)
        split(train_ids, 0.0, cfg.seq_len)  # at least one training window, or a clear error
        if len(val_ids) < cfg.seq_len + 1:
            raise ConfigError(
                f"validation_data={cfg.validation_data!r} has {len(val_ids)} tokens, fewer than "
                f"seq_len + 1 = {cfg.seq_len + 1} for one window; use a larger validation corpus "
                f"or a smaller seq_len")
    elif cfg.validation_split > 0:
        train_ids, val_ids = split(ids, cfg.validation_split, cfg.seq_len)
    else:
        train_ids, val_ids = ids, None
    phases = phases or Phases()
    phases.lap("data")  # since the training call: resolving the config, reading and tokenizing
    if val_ids is not None:
        warn_unknown(val_ids, tokenizer.unknown_id,
                     f"validation_data={cfg.validation_data!r}" if val_corpus else "the validation split")
    tokens_per_step = cfg.batch_size * cfg.accumulate_steps * cfg.seq_len
    full_batch = parts.optimizer.has(FULL_BATCH)
    if cfg.epochs is not None:
        per_epoch = 1 if full_batch else len(train_ids) / tokens_per_step
        total = max(1, math.ceil(cfg.epochs * per_epoch))
    else:
        total = int(cfg.max_steps)

    # model and step --------------------------------------------------------------------------
    vocab = init.model.vocab_size if init else tokenizer.vocab_size
    memory_note = check_fits(cfg, vocab, parts.arch.obj)
    model = build_model(cfg, vocab, parts.arch.obj)
    if init is not None:  # the same class and options: the variables correspond one to one
        if cfg.head_bias_init != "zeros":
            raise ConfigError(f"head_bias_init={cfg.head_bias_init!r} would overwrite the "
                              f"pretrained head of init={cfg.init!r}; drop one of the two keys")
        model.set_weights(init.model.get_weights())
    elif cfg.head_bias_init == "unigram" and not resume:  # a resumed run loads its own weights
        model.set_head_bias(log_unigram(train_ids, vocab))
    optimizer = parts.optimizer.obj(cfg, parts.schedule.obj(cfg, total))
    loss_fn = parts.loss.obj(cfg)
    metric_names = [e.name for e in parts.metrics]
    stepper = make_stepper(model, optimizer, loss_fn, metric_names, cfg.top_k,
                           batch_parts(cfg, model, total), layout,
                           1 if full_batch else cfg.accumulate_steps, averaged, cfg.freeze,
                           cfg if cfg.adapter == "lora" else None)
    lead = layout is None or layout.lead
    phases.lap("build")  # the model, its optimizer and the step (traced, not yet compiled)

    def begin() -> None:  # once a resumed checkpoint is restored: a refused one changes nothing
        if lead:
            run_dir.write_text(CONFIG, cfg.to_toml())  # a resume's overrides (max_steps...) included
            if not resume:
                save_tokenizer(tokenizer, run_dir.file(TOKENIZER))

    eval_every = cfg.eval_every or engine.auto_eval_every(total)
    plan = engine.Plan(
        total_steps=total, checkpoint_every=cfg.checkpoint_every, eval_every=eval_every,
        steps_per_dispatch=1 if full_batch else (
            cfg.steps_per_dispatch or engine.auto_steps_per_dispatch(eval_every,
                                                                     cfg.checkpoint_every)),
        early_stopping=cfg.early_stopping,
        tokens_per_step=len(train_ids) if full_batch else tokens_per_step,
        steps_per_epoch=1.0 if full_batch else len(train_ids) / tokens_per_step,
    )
    trainee = LanguageModelTrainee(cfg, parts, stepper, optimizer, train_ids, val_ids, tokenizer,
                                   full_batch, layout.local_rows(cfg.batch_size) if layout else None,
                                   None if resume else engine.dispatch_steps(plan, 0))
    # the final sample's programs compile beside the first dispatch too (after the evaluation)
    sample_ready = _prepare_sample(cfg, model, tokenizer, lead and layout is None)
    phases.lap("build")  # the trainee traces its evaluation (compiled beside the first dispatch)
    n_params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    # what trains and what the optimizer keeps (a LoRA run: the adapters and their moments)
    counts = stepper.step.groups.counts() if hasattr(stepper, "step") else {}
    job = engine.Job(
        cfg.arch, n_params, cfg.to_dict(),
        {"arch": cfg.arch, "parameters": n_params, "backend": backend,
         "mesh": layout.describe() if layout else "1 device, 1 process",
         **{f"{k}_parameters" if k == "trainable" else k: v for k, v in counts.items()},
         **({"memory": memory_note} if memory_note else {}),
         # seconds the process had run when training was called: a command's start-up
         **({"process_age_at_start_s": round(started_at, 3)} if started_at is not None else {})},
        retry=f"then resume with `lmkit train --resume {run_dir.path}`",
        learning_rate=cfg.learning_rate, devices=layout.describe() if layout else "",
        data={"data": corpus.fingerprint(),
              **({"validation_data": val_corpus.fingerprint()} if val_corpus else {})},
        phases=phases)

    def finish(outcome: engine.Outcome) -> dict[str, Any]:
        from lmkit.generation import generate

        stepper.sync()  # on every process: gathering a split weight needs them all
        lora = getattr(stepper, "lora", None)
        adapters = lora and stepper.step.groups.params(stepper.step.optimizer_arrays())
        if not lead:
            return {}
        with phases("save"):
            run_dir.save_model(model)  # with an adapter: merged into the kernels
            if lora is not None:
                save_trained(run_dir.path / ADAPTER_DIR, lora, adapters, model, base=cfg.init,
                             overwrite=True)
        sample = ""
        if cfg.sample_tokens:
            with phases("sample"):
                for ready in sample_ready:
                    ready.result()  # compiled ahead: now in the persistent cache
                sample = generate(model, tokenizer, cfg.sample_prompt, cfg.sample_tokens,
                                  seed=cfg.seed)
        hint = plateau_hint(cfg, outcome.metrics.get("val_loss"), unigram_loss(train_ids))
        # XLA programs of this process (on JAX): a second run of the same config compiles none
        programs = {"compilations": compilations()} if backend == "jax" else {}
        return {"sample": sample, **({"hint": hint} if hint else {}), **programs}

    if not lead:  # process 0 reports for the run
        reporters = []
    outcome = engine.run(trainee, plan, job, run_dir=run_dir,
                         reporters=reporters if reporters is not None else [TextReporter()],
                         stop=stop, resume=resume, finish=finish, writes=lead, begin=begin)
    return Trained(run_dir.path, cfg, model, tokenizer, outcome, lead)
