"""`evaluate(run_or_path, task, data, **options) -> EvalResult`: fine-tune a head and score it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmkit.errors import ConfigError, RunError
from lmkit.evaluation.config import EvalConfig
from lmkit.evaluation.loaders import Examples, load_split
from lmkit.evaluation.result import EvalResult
from lmkit.engine.events import Event, StopSignal
from lmkit.evaluation.tasks import SCRATCH, Task, get_task
from lmkit.resolve import Resolved, resolve

__all__ = ["evaluate"]

PRETRAINED_LR_MULTIPLIER = 0.3
#: The standard recipe for a pretrained checkpoint's backbone (BERT's fine-tuning: AdamW, the
#: whole network at one small learning rate, warm-up then linear decay, dropout 0.1, the [CLS]
#: state for encoders); options the user sets win.
CHECKPOINT_RECIPE: dict[str, Any] = {
    "learning_rate": 5e-5, "backbone_lr_multiplier": 1.0, "optimizer": "adamw",
    "schedule": "warmup_linear", "head_dropout": 0.1, "weight_decay": 0.01,
}


def evaluate(
    run_or_path: Any, task: "str | Task" = "glue/sst2", data: "str | Path | None" = None, *,
    config: EvalConfig | dict[str, Any] | None = None,
    reporters: Sequence[Callable[[Event], None]] = (), stop: StopSignal | None = None,
    **options: Any,
) -> EvalResult:
    """Fine-tune a task head on a language model and score it on the task's dev split.

    `run_or_path` is a `Run`, a run directory, a pretrained checkpoint (`lmkit.from_pretrained`'s
    `Pretrained`, a Hugging Face folder or a registered name such as ``minilm-l6``; the defaults
    are then `CHECKPOINT_RECIPE`, pooling `cls` for an encoder), or ``"scratch"`` (the
    architecture named by the `arch` option, trained from random weights on the task only).
    `options` are `EvalConfig` keys (``max_steps``, ``batch_size``, ``learning_rate``,
    ``backbone_lr_multiplier``, ``gradual_unfreezing``, ``pooling``, ``split``, ...). The run's
    own model is not changed: the backbone is copied before fine-tuning.

    >>> result = evaluate("runs/lstm-1", task="glue/sst2", data="glue_data", max_steps=300)  # doctest: +SKIP
    >>> result.metrics, result.confusion_matrix                                            # doctest: +SKIP
    """
    cfg = _config(config, options)
    task = get_task(task)
    cfg = cfg.replace(loss=cfg.loss or task.loss)
    parts = resolve(cfg)  # every name checked before any data is read
    source = _open(run_or_path)
    if _is_checkpoint(source):
        cfg = _recipe(cfg, config, options, source)
        parts = resolve(cfg)
    scored = load_split(task, data, cfg.split)
    if cfg.max_eval_examples is not None:
        scored = scored.head(cfg.max_eval_examples)
    train = load_split(task, data, cfg.train_split) if cfg.max_steps or cfg.epochs else None
    if train is not None and cfg.max_train_examples is not None and len(train) > cfg.max_train_examples:
        train = _sample(train, cfg.max_train_examples, cfg.seed)

    import keras

    from lmkit.evaluation.encoding import encode_examples
    from lmkit.evaluation.finetune import finetune, predict
    from lmkit.evaluation.heads import SequenceClassifier

    keras.utils.set_random_seed(cfg.seed)
    backbone, tokenizer, name = _backbone(source, cfg, parts, train or scored)
    max_length = cfg.max_length
    context = getattr(backbone, "max_context", None)
    if context is not None and context < max_length:
        max_length = context
    multiplier = cfg.backbone_lr_multiplier
    if multiplier is None:  # a pretrained backbone moves gently; a scratch one must learn everything
        multiplier = 1.0 if _is_scratch(run_or_path) else PRETRAINED_LR_MULTIPLIER
    cfg = cfg.replace(max_length=max_length, backbone_lr_multiplier=multiplier)
    model = SequenceClassifier(backbone, task.num_outputs, cfg.pooling, cfg.head_dropout)
    model((np.zeros((1, 2), np.int32), np.ones((1,), np.int32)))  # create the head's weights
    training: dict[str, Any] = {}
    if train is not None:
        training = finetune(model, encode_examples(train, tokenizer, max_length), cfg, parts,
                            reporters, stop, name=f"{name} on {task.name}")
        training["train_examples"] = len(train)
    outputs = predict(model, encode_examples(scored, tokenizer, max_length), cfg.eval_batch_size, max_length)
    return EvalResult.build(task, scored.split, name, outputs, scored.labels, config=cfg.to_dict(),
                            training=training, model=model, tokenizer=tokenizer)


def _config(config: EvalConfig | dict[str, Any] | None, options: dict[str, Any]) -> EvalConfig:
    if isinstance(config, EvalConfig):
        if not options:
            return config  # already coerced and validated
        base = config.to_dict()
    elif config is None:
        base = {}
    elif isinstance(config, dict):
        base = dict(config)
    else:
        raise ConfigError(f"config must be an EvalConfig or a dict, got {type(config).__name__}")
    return EvalConfig.from_dict({**base, **options})


def _is_scratch(run_or_path: Any) -> bool:
    return isinstance(run_or_path, str) and run_or_path.lower() == SCRATCH


def _open(run_or_path: Any) -> Any:
    """A `Run` or a `Pretrained` for a path or name; ``"scratch"`` and objects pass through.

    A folder with ``config.json`` (Hugging Face) or a name of the `pretrained` registry is a
    checkpoint; any other path is a run directory.
    """
    if _is_scratch(run_or_path) or not isinstance(run_or_path, (str, Path)):
        return run_or_path
    from lmkit.pretrained import from_pretrained
    from lmkit.registry import pretrained

    path = Path(run_or_path)
    if (path / "config.json").is_file() or (not path.exists() and str(run_or_path) in pretrained):
        return from_pretrained(run_or_path)
    from lmkit.training.run import load_run

    return load_run(run_or_path)


def _is_checkpoint(source: Any) -> bool:
    from lmkit.pretrained import Pretrained

    return isinstance(source, Pretrained)


def _recipe(cfg: EvalConfig, config: Any, options: dict[str, Any], source: Any) -> EvalConfig:
    """`cfg` with `CHECKPOINT_RECIPE` for every option the user did not set."""
    given = set(options) | (set(config) if isinstance(config, dict) else set())
    defaults = EvalConfig().to_dict()
    given |= {k for k, v in cfg.to_dict().items() if v != defaults[k]}
    recipe = {**CHECKPOINT_RECIPE, "pooling": "cls" if source.is_encoder else "last"}
    return cfg.replace(**{k: v for k, v in recipe.items() if k not in given})


def _sample(examples: Examples, n: int, seed: int) -> Examples:
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), n, replace=False))
    return Examples(examples.task, examples.split, examples.source,
                    [examples.text_a[i] for i in keep],
                    None if examples.text_b is None else [examples.text_b[i] for i in keep],
                    examples.labels[keep])


def _backbone(run_or_path: Any, cfg: EvalConfig, parts: Resolved,
              texts: Examples) -> tuple[Any, Any, str]:
    """(a fresh copy of the language model, its tokenizer, a display name)."""
    if _is_scratch(run_or_path):
        return _scratch(cfg, parts, texts)
    if hasattr(run_or_path, "model") and hasattr(run_or_path, "tokenizer"):
        run = run_or_path
    else:
        raise RunError(
            f"evaluate() needs a Run, a run directory, a pretrained checkpoint or '{SCRATCH}', "
            f"got {type(run_or_path).__name__}"
        )
    source = run.model
    copy = type(source).from_config(source.get_config())
    copy(np.zeros((1, 2), np.int32))
    copy.set_weights(source.get_weights())
    name = getattr(run, "name", None) or Path(str(getattr(run, "dir", "run"))).name
    return copy, run.tokenizer, name


def _scratch(cfg: EvalConfig, parts: Resolved, texts: Examples) -> tuple[Any, Any, str]:
    from lmkit.build import build_model
    from lmkit.config import TrainConfig
    from lmkit.evaluation.encoding import SEPARATOR

    # the separator joins sentence pairs; fitting on it gives it its own id (not <unk>)
    chunks = texts.text_a + (texts.text_b or []) + [SEPARATOR]
    tokenizer = parts.tokenizer.obj.fit(chunks, vocab_size=cfg.vocab_size)
    train_cfg = TrainConfig.from_dict({
        "arch": cfg.arch, "tokenizer": cfg.tokenizer, "embed_dim": cfg.embed_dim, "units": cfg.units,
        "layers": cfg.layers, "heads": cfg.heads, "seq_len": cfg.max_length, "tie_embeddings": False,
    }, source="scratch model")
    return (build_model(train_cfg, tokenizer.vocab_size, parts.arch.obj), tokenizer,
            f"{SCRATCH}-{cfg.arch}")
