"""`EvalConfig`: every option of an evaluation, typed, documented and validated.

The same keys come from keyword arguments of `lmkit.evaluate`, ``--set key=value`` of
``lmkit eval`` and the `%lmeval` magic::

    >>> cfg = EvalConfig.from_dict({"max_steps": "200", "pooling": "mean"})
    >>> cfg.max_steps, cfg.pooling
    (200, 'mean')

Unknown keys and wrong types raise `ConfigError` naming the key, the value and what is expected.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from lmkit.config import config_key, validate_fields
from lmkit.errors import ConfigError, did_you_mean

__all__ = ["EvalConfig"]


@dataclass
class EvalConfig:
    """Options of `lmkit.evaluate` (fine-tuning budget, head, optimizer, data limits)."""

    # how the run is evaluated
    method: str = config_key("finetune", "`finetune`: train a head on the task, then score it; `zeroshot`: rank each example's choices by the language model's log-likelihood, no training (`lmkit.evaluation.zeroshot`).",
                             choices=("finetune", "zeroshot"))
    length_normalize: bool = config_key(False, "Zero-shot: rank choices by log-likelihood per character of the continuation instead of the sum.")
    shots: int = config_key(0, "Zero-shot: put this many solved examples of `train_split` (a seeded sample) before every context (few-shot).", min=0)
    # data
    split: str | None = config_key(None, "Split to score (default: the task's dev split; `test` for IMDb).")
    train_split: str = config_key("train", "Split to fine-tune on.")
    max_length: int = config_key(128, "Tokens per example (longer inputs are truncated; pairs share it).", min=2)
    truncation: str = config_key("head", "How an example longer than `max_length` is cut: `head` keeps its first tokens; `head_tail` its first quarter and last three quarters (reviews often conclude at the end; single-text tasks only).",
                                 choices=("head", "head_tail"))
    max_train_examples: int | None = config_key(None, "Fine-tune on at most this many examples (seeded sample).", min=1)
    max_eval_examples: int | None = config_key(None, "Score at most this many examples (a seeded sample, stratified by label).", min=1)
    # head
    pooling: str = config_key("concat", "Sequence summary fed to the head: `last` state, `mean` of states, `concat` of both, or `cls` (first token; the default for a pretrained encoder).",
                        choices=("last", "mean", "concat", "cls"))
    head_dropout: float = config_key(0.1, "Dropout before the classification head.", min=0.0, max=0.95)
    # fine-tuning: the budget and cadence
    max_steps: int = config_key(300, "Fine-tuning budget in optimizer steps (`0`: score the untrained head).", min=0)
    epochs: float | None = config_key(None, "Passes over the training split; overrides `max_steps` when set.", min=0.0, exclusive_min=True)
    max_seconds: float | None = config_key(None, "Time budget of fine-tuning in seconds (compilation included): training takes only the steps that fit, at the pace of the last steps, then the head is scored; the result records reason `time_budget`. The learning-rate schedule still spans `max_steps`/`epochs`.", min=0.0, exclusive_min=True)
    batch_size: int = config_key(32, "Training examples per step.", min=1)
    eval_batch_size: int = config_key(256, "Examples per scoring batch (memory is bounded by it).", min=1)
    log_every: int = config_key(20, "Report progress (and check the loss) every N steps.", min=1)
    devices: int | list[int] | str = config_key("all", "Devices the fine-tuning step uses on JAX: `\"all\"`, a count, or a list of device ids. Each batch is split over them (data parallel, the same results as one device); `batch_size` must divide evenly.", min=1)
    model_parallel: int = config_key(1, "Devices each of the backbone's large matrices is split over (`gpt`, `gpt2`, `bert`: attention and MLP matrices); must divide `devices`, the heads and the MLP width.", min=1)
    checkpoint_dir: str | None = config_key(None, "Write fine-tuning checkpoints (`checkpoint.npz`, replaced atomically) and events to this folder; `lmkit eval --out` sets it.")
    checkpoint_every: int = config_key(100, "Checkpoint every N fine-tuning steps (and when training ends or is stopped).", min=1)
    resume: bool = config_key(False, "Continue fine-tuning from the checkpoint in `checkpoint_dir` (same options as the stopped run).")
    seed: int = config_key(0, "Seed of the head, the data order and dropout.", min=0)
    # fine-tuning: optimization (the same keys as `lmkit.train`, from the same registries)
    optimizer: str = config_key("adamw", "Optimizer name (`lmkit list optimizers`); the head and the backbone each get one.")
    learning_rate: float = config_key(2e-3, "Peak learning rate of the head.", min=0.0, exclusive_min=True)
    backbone_lr_multiplier: float | None = config_key(None, "Backbone learning rate as a fraction of `learning_rate` (0: frozen backbone; default 0.3 for a pretrained run, 1 for scratch).", min=0.0)
    gradual_unfreezing: bool = config_key(False, "Unfreeze the backbone from its top layers down over the first half of training (ULMFiT).")
    freeze: list[str] = config_key([], "Glob patterns of variable paths that do not train (no gradient, no optimizer slots, bit-identical), e.g. `[\"embedding\", \"layer_0/*\"]`.")
    accumulate_steps: int = config_key(1, "Micro-batches of `batch_size` whose gradients are averaged into one optimizer step (an effective batch of `batch_size * accumulate_steps` in the memory of one batch).", min=1)
    batch_parts: int = config_key(1, "Compute each micro-batch's gradient as this many independent equal parts (side by side on a CPU; the same mathematics); must divide `batch_size`.", min=1)
    weight_decay: float = config_key(0.01, "Decoupled weight decay (AdamW, Lion) or L2 decay (others); matrices only.", min=0.0)
    momentum: float = config_key(0.9, "Momentum of `momentum` and `nesterov`.", min=0.0, max=1.0, exclusive_max=True)
    beta1: float = config_key(0.9, "First-moment decay of Adam-family and Lion.", min=0.0, max=1.0, exclusive_max=True)
    beta2: float = config_key(0.999, "Second-moment decay of Adam-family and Lion.", min=0.0, max=1.0, exclusive_max=True)
    clipnorm: float | None = config_key(1.0, "Clip gradients to this global norm (`none` to disable).", min=0.0, exclusive_min=True)
    schedule: str = config_key("warmup_linear", "Learning-rate schedule (`lmkit list schedules`).")
    warmup_steps: int | None = config_key(None, "Linear warm-up steps of the schedule (`none`: 6 % of the steps).", min=0)
    min_lr_ratio: float = config_key(0.0, "Final learning rate as a fraction of the peak.", min=0.0, max=1.0)
    loss: str | None = config_key(None, "Loss name (`lmkit list losses`; `none`: the task's own, `cross_entropy` or `squared_error` for regression).")
    label_smoothing: float = config_key(0.0, "Label smoothing of the `label_smoothing` loss.", min=0.0, max=1.0)
    # the model trained from scratch (`run_or_path="scratch"`)
    arch: str = config_key("lstm", "Architecture of a scratch model (`lmkit list architectures`).")
    tokenizer: str = config_key("word", "Tokenizer of a scratch model, fitted on the training split.")
    vocab_size: int | None = config_key(20000, "Vocabulary of a scratch model's tokenizer.", min=2)
    embed_dim: int = config_key(128, "Embedding width of a scratch model.", min=1)
    units: int = config_key(128, "Hidden units of a scratch model.", min=1)
    layers: int = config_key(1, "Layers of a scratch model.", min=1)
    heads: int = config_key(4, "Attention heads of a scratch `gpt`.", min=1)

    def __post_init__(self) -> None:
        validate_fields(self, noun="option")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EvalConfig":
        """Build from a mapping (strings from ``--set`` are coerced to the declared types)."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"unknown evaluation option '{key}'{did_you_mean(key, known)}. "
                    f"Options: {', '.join(sorted(known))}."
                )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "EvalConfig":
        """A copy with `changes` applied and validated."""
        return dataclasses.replace(self, **changes)

    def total_steps(self, train_examples: int) -> int:
        """Optimizer steps of fine-tuning on `train_examples` examples."""
        if self.epochs is not None:
            per_step = self.batch_size * self.accumulate_steps
            return max(1, math.ceil(self.epochs * train_examples / per_step))
        return self.max_steps
