"""`evaluate(run_or_path, task, data, **options) -> EvalResult`: fine-tune a head and score it."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple

import numpy as np

from lmkit.distribute import initialize, lead_process
from lmkit.errors import ConfigError, DataError, RunError
from lmkit.config import EvalConfig
from lmkit.evaluation.loaders import Examples, load_split
from lmkit.evaluation.result import EvalResult, generate_texts
from lmkit.engine.events import Event, StopSignal
from lmkit.evaluation.tasks import SCRATCH, Task, get_task
from lmkit.resolve import Resolved, resolve

__all__ = ["evaluate", "resolved_options", "load_finetuned", "is_finetuned", "finetuned_task", "open_scored", "FineTuned", "CLASSIFIER"]

#: key of a fine-tuning folder's summary.json (`lmkit eval --out DIR`) saying how to rebuild its
#: classifier: the backbone it started from, the task and the pooling (`load_finetuned`)
CLASSIFIER = "classifier"
#: the options with which a fine-tuned model reads its examples and decodes: kept in its folder,
#: they are the defaults of scoring it again (`FineTuned.options`)
SCORING_OPTIONS = ("max_length", "truncation", "num_beams", "length_penalty", "no_repeat_ngram_size",
                   "max_new_tokens")


def evaluate(
    run_or_path: Any, task: "str | Task" = "glue/sst2", data: "str | Path | None" = None, *,
    config: EvalConfig | dict[str, Any] | None = None,
    reporters: Sequence[Callable[[Event], None]] = (), stop: StopSignal | None = None,
    **options: Any,
) -> EvalResult:
    """Fine-tune a task head on a language model and score it on the task's dev split; with
    ``method="zeroshot"``, score it by ranking each example's choices by the language model's
    likelihood instead (no training, `lmkit.evaluation.zeroshot`).

    `run_or_path` is a `Run`, a run directory, a pretrained checkpoint (`lmkit.from_pretrained`'s
    `Pretrained`, a Hugging Face folder or a registered name such as ``minilm-l6``; the defaults
    are then `CHECKPOINT_RECIPE`, pooling `cls` for an encoder), or ``"scratch"`` (the
    architecture named by the `arch` option, trained from random weights on the task only).
    A fine-tuned model (`FineTuned`, or the folder ``lmkit eval --out`` wrote) is scored as it
    is, on the task it was fine-tuned on, without training: e.g. again with ``num_beams=4``.
    `options` are `EvalConfig` keys (``max_steps``, ``batch_size``, ``learning_rate``,
    ``backbone_lr_multiplier``, ``gradual_unfreezing``, ``pooling``, ``split``, ...). The run's
    own model is not changed: the backbone is copied before fine-tuning.

    >>> result = evaluate("runs/lstm-1", task="glue/sst2", data="glue_data", max_steps=300)  # doctest: +SKIP
    >>> result.metrics, result.confusion_matrix                                            # doctest: +SKIP
    >>> evaluate("runs/mt", task="multi30k", data="multi30k", num_beams=4).metrics["bleu"]  # doctest: +SKIP
    """
    job = _prepare(run_or_path, task, data, config, options)
    cfg, parts, task, source, scored, train = job.cfg, job.parts, job.task, job.source, job.scored, job.train
    if cfg.method == "zeroshot":
        return _zeroshot(source, scored, cfg, job.shots)
    if cfg.folds:
        from lmkit.evaluation.folds import cross_validate

        return cross_validate(job, _fit_and_score, reporters, stop)
    overlap = scored.overlap(train) if train is not None else 0
    if overlap:
        warnings.warn(f"{overlap} of the {len(scored)} scored examples of {task.name} ('{scored.split}') are also "
                      f"in the training split '{train.split}': the score measures memory, not skill "
                      f"(FewGLUE's dev32 files come from the full train sets; pair train32 with dev32)",
                      stacklevel=2)
    return _fit_and_score(job, reporters, stop)


def _fit_and_score(job: "_Job", reporters: Sequence[Callable[[Event], None]],
                   stop: StopSignal | None) -> EvalResult:
    """Fine-tune a fresh head on `job.train` (when given) and score `job.scored`."""
    import keras

    from lmkit.evaluation.encoding import head_and_tail
    from lmkit.evaluation.finetune import finetune
    from lmkit.evaluation.metrics import preload

    cfg, parts, task, source, scored, train = job.cfg, job.parts, job.task, job.source, job.scored, job.train
    keras.utils.set_random_seed(cfg.seed)
    max_length = cfg.max_length
    if isinstance(source, FineTuned):  # scored as it is (`_prepare` left it no training split)
        model, tokenizer, name, encode_task = source.model, source.tokenizer, source.dir.name, source.encode
    else:
        backbone, tokenizer, name = _backbone(source, cfg, parts, train or scored)
        model, encode_task = task.shape.head(task, backbone, cfg.pooling, cfg.head_dropout,
                                             [e for e in (train, scored) if e])
    if cfg.truncation == "head_tail":
        def encode(examples: Examples, tokenizer: Any, max_length: int) -> Any:
            return head_and_tail(encode_task(examples, tokenizer, None), max_length)
    else:
        encode = encode_task
    training: dict[str, Any] = {"reopened": str(source.dir)} if isinstance(source, FineTuned) else {}
    if train is not None:
        scorer = _scorer(task, job.data, scored, cfg, model, tokenizer, encode) if cfg.score_every else None
        training = finetune(model, encode(train, tokenizer, max_length), cfg, parts,
                            reporters, stop, name=f"{name} on {task.name}",
                            summary={CLASSIFIER: _classifier_record(source, task, cfg)},
                            scorer=scorer, monitor=f"val_{task.metrics[0]}")
        training["train_examples"] = len(train)
        training["scored_in_train"] = scored.overlap(train)
        if _is_scratch(source) and cfg.checkpoint_dir is not None and lead_process():
            _save_scratch_tokenizer(tokenizer, cfg.checkpoint_dir)
    preload(task.metric_for(scored.split)[0])  # imported while the scored split is computed
    outputs = task.shape.outputs(model, tokenizer, scored, encode, cfg)
    return EvalResult.build(task, scored.split, name, outputs, scored.labels, scored, config=cfg.to_dict(),
                            training=training, model=model, tokenizer=tokenizer)


def _scorer(task: Task, data: Any, scored: Examples, cfg: EvalConfig, model: Any, tokenizer: Any,
            encode: Any) -> Callable[[], dict[str, float]]:
    """The task's scores (``val_<metric>``) on a seeded sample of `score_examples` examples of
    its dev split (the scored split when the task has no other), as the model is now."""
    try:
        watched = scored if task.resolve_split("dev") == scored.split else load_split(task, data, "dev")
    except DataError:  # no dev split: watch the scored one
        watched = scored
    if len(watched) > cfg.score_examples:
        watched = _sample(watched, cfg.score_examples, cfg.seed)

    def score() -> dict[str, float]:
        predictions = task.shape.predictions(task.shape.outputs(model, tokenizer, watched, encode, cfg))
        found = task.shape.score(task, watched.split, predictions, watched.labels, watched)
        return {f"val_{k}": float(v) for k, v in found.items() if isinstance(v, (int, float))}

    return score


class _Job(NamedTuple):
    """An evaluation's inputs, read and resolved before anything is trained."""

    cfg: EvalConfig  #: every default applied (`lmkit.resolve`)
    parts: Resolved
    task: Task
    source: Any  #: the `Run`, `Pretrained` or "scratch"
    scored: Examples
    train: Examples | None  #: None for zero-shot scoring and a budget of 0 steps
    shots: Examples | None  #: zero-shot's solved examples
    data: Any = None  #: where the splits were read (scoring while training reads the dev split there)


def _prepare(run_or_path: Any, task: "str | Task", data: Any, config: Any,
             options: dict[str, Any]) -> _Job:
    """Open the backbone, read the splits and resolve the options once (`lmkit.resolve`)."""
    cfg = EvalConfig.from_sources(config, options)
    task = get_task(task)
    task.shape.check_options(task, cfg)  # before any data is read: an option the task ignores
    if cfg.method != "zeroshot":  # before any JAX work: join the run the environment names
        initialize()
    source = _open(run_or_path)
    if isinstance(source, FineTuned):
        _check_rescoring(source, task, cfg)
    scored = load_split(task, data, cfg.split)
    if cfg.truncation == "head_tail" and (scored.text_b is not None or not task.shape.has("single_text")):
        raise ConfigError(f"truncation='head_tail' cuts single texts; {task.name} has pairs, "
                          f"choices, spans or targets, which are truncated their own way: use "
                          f"truncation='head'")
    if cfg.max_eval_examples is not None and len(scored) > cfg.max_eval_examples:
        scored = _sample(scored, cfg.max_eval_examples, cfg.seed)
    if cfg.method == "zeroshot":
        shots = load_split(task, data, cfg.train_split) if cfg.shots else None
        parts = resolve(cfg, task_loss=task.shape.loss)
        return _Job(parts.config, parts, task, source, scored, None, shots, data)
    trains = (cfg.max_steps or cfg.epochs) and not isinstance(source, FineTuned)
    train = load_split(task, data, cfg.train_split) if trains else None
    if train is not None and task.shape.has("own_choices"):  # a query none of whose choices is right teaches nothing
        train = train.take(np.flatnonzero(train.labels >= 0))
    if train is not None and cfg.max_train_examples is not None and len(train) > cfg.max_train_examples:
        train = _sample(train, cfg.max_train_examples, cfg.seed)
    model = getattr(source, "model", None)
    model = getattr(model, "backbone", model)  # a fine-tuned head wraps the language model
    parts = resolve(cfg, backbone=_backbone_kind(source), task_loss=task.shape.loss,
                    steps=cfg.total_steps(len(train)) if train is not None else 0,
                    context=getattr(model, "max_context", None),
                    fine_tuned=dict(source.options) if isinstance(source, FineTuned) else None)
    if task.shape.has("own_choices") and parts.loss.has("label_smoothing"):
        raise ConfigError(f"{task.name} pads each example's candidates to one width, and label smoothing "
                          f"would spread probability onto the padding; use loss='cross_entropy' (the default)")
    return _Job(parts.config, parts, task, source, scored, train, None, data)


#: the options that would train a model again, which a fine-tuned one being scored refuses
_TRAINING_OPTIONS = ("max_steps", "epochs", "resume", "folds")


def _check_rescoring(source: "FineTuned", task: Task, cfg: EvalConfig) -> None:
    """Refuse to score a fine-tuned model on another task, or to train it again."""
    if task.name != source.task.name:
        raise ConfigError(f"{source.dir} was fine-tuned on {source.task.name}, not {task.name}: a fine-tuned "
                          f"folder is scored on its own task (--task {source.task.name}); to fine-tune on "
                          f"{task.name}, start from the run or checkpoint it was fine-tuned from, or '{SCRATCH}'")
    if cfg.method == "zeroshot":
        raise ConfigError(f"{source.dir} holds a fine-tuned model, which is scored with what it learned; "
                          f"method='zeroshot' ranks choices with a language model as it is: remove it, or give "
                          f"the run or checkpoint it was fine-tuned from")
    training = [k for k in _TRAINING_OPTIONS if k in cfg.given]
    if training:
        raise ConfigError(f"{source.dir} holds a fine-tuned model, which is scored as it is, without "
                          f"training; {', '.join(training)} would train it: remove "
                          f"{'it' if len(training) == 1 else 'them'} (to train longer, fine-tune again "
                          f"from what it started from with --out {source.dir} and resume=true)")


def resolved_options(run_or_path: Any, task: "str | Task" = "glue/sst2", data: "str | Path | None" = None,
                     *, config: EvalConfig | dict[str, Any] | None = None,
                     **options: Any) -> EvalConfig:
    """The options `evaluate` would fine-tune with, every default applied, each value with its
    source (`EvalConfig.explain`); reads the backbone and the data, trains nothing.

    >>> print(resolved_options("minilm-l6", "glue/sst2", "glue_data").explain())  # doctest: +SKIP
    """
    return _prepare(run_or_path, task, data, config, options).cfg


def _backbone_kind(source: Any) -> str:
    """What fine-tuning starts from, for the defaults (`lmkit.resolve.BACKBONES`)."""
    if _is_scratch(source):
        return "scratch"
    if _is_checkpoint(source):
        return "encoder" if source.is_encoder else "decoder"
    return "run"


def _is_scratch(run_or_path: Any) -> bool:
    return isinstance(run_or_path, str) and run_or_path.lower() == SCRATCH


def _open(run_or_path: Any) -> Any:
    """A `Run`, a `Pretrained` or a `FineTuned` for a path or name; ``"scratch"`` and objects
    pass through.

    A folder with ``config.json`` (Hugging Face) or a name of the `pretrained` registry is a
    checkpoint; a folder a fine-tuning wrote (`is_finetuned`) a fine-tuned model; any other path
    is a run directory.
    """
    if _is_scratch(run_or_path) or not isinstance(run_or_path, (str, Path)):
        return run_or_path
    from lmkit.pretrained import from_pretrained, is_checkpoint

    if is_checkpoint(run_or_path):
        return from_pretrained(run_or_path)
    if is_finetuned(run_or_path):
        return load_finetuned(run_or_path)
    from lmkit.training.run import load_run

    return load_run(run_or_path)


def _is_checkpoint(source: Any) -> bool:
    from lmkit.pretrained import Pretrained

    return isinstance(source, Pretrained)


def _sample(examples: Examples, n: int, seed: int) -> Examples:
    """A seeded sample of `n` examples, stratified by label for classification tasks: the
    first n of a file sorted by label (IMDb: all negative, then all positive) would be one class
    only, and a random sample of a few can miss a class."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(examples.labels)
    if not examples.task.shape.has("class_labels") or labels.dtype.kind not in "biu":
        return examples.take(np.sort(rng.choice(len(examples), n, replace=False)))
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * n / counts.sum()
    take = np.floor(share).astype(int)
    # the remaining places go to the largest remainders; every class keeps one if it can
    for i in np.argsort(-(share - take))[: n - take.sum()]:
        take[i] += 1
    for i in np.flatnonzero(take == 0)[: max(0, n - len(classes))]:
        donor = int(np.argmax(take))
        take[donor], take[i] = take[donor] - 1, 1
    return examples.take(np.sort(np.concatenate([
        rng.choice(np.flatnonzero(labels == c), k, replace=False)
        for c, k in zip(classes, take) if k])))


def _zeroshot(run_or_path: Any, scored: Examples, cfg: EvalConfig, shots: Examples | None) -> EvalResult:
    if _is_scratch(run_or_path):
        raise ConfigError(f"method='zeroshot' scores choices with a trained language model; "
                          f"'{SCRATCH}' has none. Pass a run (a directory or a Run)")
    run = open_scored(run_or_path)
    return scored.task.shape.zeroshot(run, scored, cfg, Path(str(getattr(run, "dir", "run"))).name, shots)


def open_scored(run_or_path: Any) -> Any:
    """The `Run` or `Pretrained` a scoring reads: `run_or_path` itself, or opened from its path or name."""
    run = _open(run_or_path)
    if hasattr(run, "model") and hasattr(run, "tokenizer"):
        return run
    raise RunError(f"evaluate() needs a Run, a run directory, a pretrained checkpoint or "
                   f"'{SCRATCH}', got {type(run_or_path).__name__}")


def _backbone(run_or_path: Any, cfg: EvalConfig, parts: Resolved,
              texts: Examples) -> tuple[Any, Any, str]:
    """(a fresh copy of the language model, its tokenizer, a display name)."""
    from lmkit.build import copy_model

    if _is_scratch(run_or_path):
        return _scratch(cfg, parts, texts)
    run = open_scored(run_or_path)
    copy = copy_model(run.model, cfg.precision)
    name = getattr(run, "name", None) or Path(str(getattr(run, "dir", "run"))).name
    return copy, run.tokenizer, name


def _scratch(cfg: EvalConfig, parts: Resolved, texts: Examples) -> tuple[Any, Any, str]:
    from lmkit.evaluation.encoding import SEPARATOR

    # the separator joins sentence pairs; fitting on it gives it its own id (not <unk>)
    chunks = texts.text_a + (texts.text_b or []) + [SEPARATOR]
    tokenizer = parts.tokenizer.obj.fit(chunks, vocab_size=cfg.vocab_size)
    return (_scratch_model(_scratch_options(cfg), tokenizer.vocab_size, parts.arch.obj), tokenizer,
            f"{SCRATCH}-{cfg.arch}")


def _scratch_options(cfg: EvalConfig) -> dict[str, Any]:
    """The `TrainConfig` keys of the model ``scratch`` builds: the shared section says what to
    build; the window is the task's, the head its own. A fine-tuning's summary keeps them
    (`_classifier_record`), so that `load_finetuned` builds the same model."""
    from lmkit.config.sections import ModelShape

    return {**cfg.values_of(ModelShape), "seq_len": cfg.max_length, "tie_embeddings": False,
            "precision": cfg.precision}


def _scratch_model(options: dict[str, Any], vocab_size: int, factory: Any = None) -> Any:
    """The language model `options` (`_scratch_options`) describe, with random weights."""
    from lmkit.build import build_model
    from lmkit.config import TrainConfig

    return build_model(TrainConfig.from_dict(options, source="scratch model"), vocab_size, factory)


def _save_scratch_tokenizer(tokenizer: Any, folder: str | Path) -> None:
    """Keep the tokenizer a ``scratch`` fine-tuning fitted on the task beside its weights (the
    folder's ``tokenizer.json``, as in a run directory), where `load_finetuned` reads it."""
    from lmkit.engine.rundir import TOKENIZER
    from lmkit.tokenizers import save_tokenizer

    save_tokenizer(tokenizer, Path(folder) / TOKENIZER)


class FineTuned(NamedTuple):
    """A fine-tuned model reopened from its folder (`load_finetuned`): a classifier, or the
    language model of a generation task, which `decode` continues. `lmkit.evaluate` scores it
    again as it is.

    >>> tuned = load_finetuned("runs/mt")                          # doctest: +SKIP
    >>> tuned.decode(["Ein Mann fährt Fahrrad."], num_beams=4)     # doctest: +SKIP
    ['A man rides a bike.']
    """

    dir: Path
    model: Any  #: the task's head (`SequenceClassifier`, `NextTokenLogProbs`, ...) with its trained weights
    tokenizer: Any
    task: Task
    encode: Any = None  #: the task's encoder (`Shape.head`), with which scoring it again reads examples
    #: the options it was scored with (`SCORING_OPTIONS`), the defaults of scoring it again and of `decode`
    options: Mapping[str, Any] = MappingProxyType({})  # read-only: a default shared by every instance

    def decode(self, sources: "str | list[str]", **options: Any) -> list[str]:
        """A generation task's outputs for `sources`, decoded as the scored ones were (`options`:
        the decoding keys ``num_beams``, ``length_penalty``, ``no_repeat_ngram_size``,
        ``max_new_tokens`` to change), as `EvalResult.decode` decodes."""
        if not self.task.shape.has("generated"):
            raise ConfigError(f"decode() continues sources with a generation task's model; {self.dir} holds a "
                              f"{self.task.shape.name} model of {self.task.name}: score it with lmkit.evaluate")
        return generate_texts(self.task, self.model, self.tokenizer, sources, {**self.options, **options})


def _classifier_record(source: Any, task: Task, cfg: EvalConfig) -> dict[str, Any]:
    """What `load_finetuned` needs besides the weights: where the backbone came from (an
    absolute folder: a checkpoint or a run directory), or for a ``scratch`` model the options
    that build it (``scratch``; its tokenizer is saved beside the weights); the task, the
    head's options and the scoring's (`SCORING_OPTIONS`)."""
    folder = getattr(source, "dir", None)
    return {"backbone": None if folder is None else str(Path(folder).resolve()),
            **({SCRATCH: _scratch_options(cfg)} if _is_scratch(source) else {}),
            "task": task.name, "pooling": cfg.pooling, "head_dropout": cfg.head_dropout,
            "options": {k: getattr(cfg, k) for k in SCORING_OPTIONS}}


def is_finetuned(path: str | Path) -> bool:
    """Whether `path` is a folder a fine-tuning wrote (``lmkit eval ... --out DIR``): it holds a
    ``summary.json`` and, unlike a run directory, no ``config.toml``."""
    from lmkit.engine.rundir import CONFIG, SUMMARY

    folder = Path(path)
    return (folder / SUMMARY).is_file() and not (folder / CONFIG).is_file()


def finetuned_task(path: str | Path) -> str | None:
    """The task the folder `path` was fine-tuned on (its ``summary.json``), without loading
    the model; None when `path` is no fine-tuned folder.

    >>> finetuned_task("runs/mt")        # doctest: +SKIP
    'multi30k/de-en'
    """
    from lmkit.engine.rundir import SUMMARY, RunDir

    if not is_finetuned(path):
        return None
    record = RunDir(path).read_json(SUMMARY).get(CLASSIFIER)
    return record.get("task") if isinstance(record, dict) else None


def load_finetuned(path: str | Path) -> FineTuned:
    """The model that a fine-tuning with a checkpoint folder left there (``lmkit eval
    RUN --task T --out DIR``, ``checkpoint_dir=DIR``): the backbone reopened from the
    checkpoint or run it started from (from ``scratch``: rebuilt from the options and the
    tokenizer the folder keeps), the task's head, and the weights of ``checkpoint.npz``.

    >>> clf = load_finetuned("out/minilm-sst2")       # doctest: +SKIP
    >>> clf.model, clf.task.name                       # doctest: +SKIP
    """
    from lmkit.engine.checkpoint import restore_arrays
    from lmkit.engine.rundir import ADAPTER_DIR, CHECKPOINT, SUMMARY, RunDir

    folder = RunDir.open(path, required=(SUMMARY, CHECKPOINT))
    record = folder.read_json(SUMMARY).get(CLASSIFIER)
    if not isinstance(record, dict):
        raise RunError(f"{folder.path / SUMMARY} does not describe a fine-tuned classifier (no "
                       f"'{CLASSIFIER}' entry): give the --out folder of `lmkit eval`, written by "
                       f"this version of lmkit")
    backbone, tokenizer = (_rebuilt_scratch(folder, record) if record.get("backbone") is None
                           else _reopened_backbone(path, record))
    task = get_task(record["task"])
    model, encode = task.shape.head(task, backbone, record["pooling"], record["head_dropout"])
    checkpoint = folder.load_checkpoint()
    restore_arrays([*model.trainable_variables, *model.non_trainable_variables], checkpoint.model,
                   "model weights", str(folder.file(CHECKPOINT)))
    if (folder.path / ADAPTER_DIR).is_dir():  # LoRA: the checkpoint holds the frozen base
        from lmkit.adapters.peft_format import load_adapter, merge_adapter

        merge_adapter(load_adapter(folder.path / ADAPTER_DIR, backbone))
    return FineTuned(folder.path, model, tokenizer, task, encode, dict(record.get("options") or {}))


def _reopened_backbone(path: str | Path, record: dict[str, Any]) -> tuple[Any, Any]:
    """(the language model, its tokenizer) of the checkpoint or run a fine-tuning started from."""
    backbone = Path(record["backbone"])
    if not backbone.is_dir():
        raise RunError(f"{path} was fine-tuned from {backbone}, which no longer exists; the "
                       f"classifier is rebuilt from it (its checkpoint holds only the weights)")
    source = open_scored(str(backbone))
    return source.model, source.tokenizer


def _rebuilt_scratch(folder: Any, record: dict[str, Any]) -> tuple[Any, Any]:
    """(the model a ``scratch`` fine-tuning built, with random weights; the tokenizer it fitted),
    from what its folder (a `RunDir`) keeps."""
    from lmkit.engine.rundir import TOKENIZER
    from lmkit.tokenizers import load_tokenizer

    options = record.get(SCRATCH)
    if not isinstance(options, dict) or not folder.file(TOKENIZER).is_file():
        raise RunError(f"{folder.path} holds a model fine-tuned from '{SCRATCH}' without its {TOKENIZER} (written "
                       f"by an earlier version of lmkit, or by a fine-tuning that did not finish): its tokenizer "
                       f"was fitted on the task and not saved, so it cannot be reopened. Fine-tune it again with "
                       f"this version (lmkit eval {SCRATCH} --task {record.get('task')} --out {folder.path} ...), "
                       f"which keeps {TOKENIZER} and the model's options beside the weights")
    tokenizer = load_tokenizer(folder.file(TOKENIZER))
    return _scratch_model(options, tokenizer.vocab_size), tokenizer
