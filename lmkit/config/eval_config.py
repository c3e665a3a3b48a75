"""`EvalConfig`: every option of an evaluation, typed, documented and validated.

The same keys come from keyword arguments of `lmkit.evaluate`, ``--set key=value`` of
``lmkit eval`` and the `%lmeval` magic::

    >>> cfg = EvalConfig.from_dict({"max_steps": "200", "pooling": "mean"})
    >>> cfg.max_steps, cfg.pooling
    (200, 'mean')

The keys training shares (optimization, budget, devices, the model built from scratch) are
declared in `lmkit.config.sections`; `own_defaults` sets fine-tuning's defaults for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from lmkit.config.core import config_key, own_defaults
from lmkit.errors import ConfigError
from lmkit.config.sections import (Adapter, Budget, Devices, ModelShape, Optimization, Tracking,
                                   check_budget, check_tracking)

__all__ = ["EvalConfig"]


@dataclass
@own_defaults(
    arch="lstm", tokenizer="word", vocab_size=20000, layers=1,  # the model of `scratch`
    learning_rate=2e-3, weight_decay=0.01, beta2=0.999, schedule="warmup_linear",
    warmup_steps=None, min_lr_ratio=0.0, loss=None,
    batch_size=32, max_steps=300, checkpoint_every=100, batch_parts=1,
    checks={"max_steps": {"min": 0},  # 0 steps: score the untrained head
            "batch_parts": {"min": 1}},  # no automatic choice for fine-tuning
)
class EvalConfig(Tracking, Devices, Budget, Adapter, Optimization, ModelShape):
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
    folds: int | None = config_key(None, "Cross-validate: split `train_split` into this many folds (seeded, stratified by label), fine-tune on all but one and score that one, each in turn; the result's metrics are the folds' means, `folds` each fold's scores. `max_seconds` is the budget of all folds; with `checkpoint_dir` and `resume`, finished folds are not redone.", min=2)
    # head
    pooling: str = config_key("concat", "Sequence summary fed to the head: `last` state, `mean` of states, `concat` of both, or `cls` (first token; the default for a pretrained encoder). Classification heads only: a generation task refuses it, as it refuses `head_dropout`, `label_smoothing`, `length_normalize` and a `loss` other than `target_nll`.",
                        choices=("last", "mean", "concat", "cls"))
    head_dropout: float = config_key(0.1, "Dropout before the classification head.", min=0.0, max=0.95)
    # fine-tuning: the budget and cadence
    max_seconds: float | None = config_key(None, "Time budget of fine-tuning in seconds (compilation included): training takes only the steps that fit, at the pace of the last steps, then the head is scored; the result records reason `time_budget`. The learning-rate schedule still spans `max_steps`/`epochs` (the same steps on any machine); when the pace measured after compilation shows the budget will stop training before the schedule ends (in its warm-up or before its decay ends), a warning names the step it will stop at: set `max_steps` to about that.", min=0.0, exclusive_min=True)
    packing: bool = config_key(True, "Fine-tune and score with several short examples packed into each row (attention and positions per example, the same results as padding each to the batch's longest, fewer positions computed), where the architecture can (capability `packing`: bert, gpt, gpt2, llama), the task is one text or pair per example and packed rows cost less than batches padded by length (examples of similar lengths pad); `false`: pad each example.")
    eval_batch_size: int = config_key(256, "Examples per scoring batch (memory is bounded by it).", min=1)
    log_every: int = config_key(20, "Report progress (and check the loss) every N steps.", min=1)
    checkpoint_dir: str | None = config_key(None, "Write fine-tuning checkpoints (`checkpoint.npz`, replaced atomically) and events to this folder; `lmkit eval --out` sets it.")
    resume: bool = config_key(False, "Continue fine-tuning from the checkpoint in `checkpoint_dir` (same options as the stopped run).")
    # generation tasks: decoding for scoring (`lmkit.decoding`)
    num_beams: int = config_key(1, "Generation tasks: beams of the beam search that decodes each source (1: greedy).", min=1)
    length_penalty: float = config_key(1.0, "Generation tasks: a finished beam scores its summed log-probability / length ** length_penalty (> 0 favours longer outputs).")
    no_repeat_ngram_size: int = config_key(0, "Generation tasks: never decode a token that repeats an n-gram of this size (0: off).", min=0)
    max_new_tokens: int | None = config_key(None, "Generation tasks: most tokens decoded per source (default: the task's, 128 unless it says otherwise).", min=1)
    score_every: int | None = config_key(None, "Score the task (its metrics as `val_<metric>`: accuracy, F1, BLEU, ...) on a seeded sample of `score_examples` dev examples every N steps while fine-tuning: the dashboard charts the first, `early_stopping` watches it. None: score only after training.", min=1)
    score_examples: int = config_key(200, "Examples of the dev split scored every `score_every` steps (a seeded sample).", min=1)
    early_stopping: int | None = config_key(None, "Stop fine-tuning after this many scorings (`score_every`) without improvement of the task's first metric.", min=1)
    # fine-tuning: the backbone
    backbone_lr_multiplier: float | None = config_key(None, "Backbone learning rate as a fraction of `learning_rate` (0: frozen backbone; default 0.3 for a run, 1 for scratch and for a pretrained checkpoint).", min=0.0)
    gradual_unfreezing: bool = config_key(False, "Unfreeze the backbone from its top layers down over the first half of training (ULMFiT).")

    NOUN: ClassVar[str] = "option"
    KIND: ClassVar[str] = "evaluation option"

    def check(self) -> None:
        check_budget(self)
        check_tracking(self)
        if isinstance(self.learning_rate, str):
            raise ConfigError(f"option 'learning_rate' of fine-tuning must be a number, got "
                              f"{self.learning_rate!r} (the learning-rate finder runs for training)")
        if self.early_stopping is not None and self.score_every is None:
            raise ConfigError(f"early_stopping={self.early_stopping} counts scorings of the task while fine-tuning, "
                              f"and there are none: set score_every (e.g. score_every=100)")

    @classmethod
    def unknown_key_help(cls, known: set[str]) -> str:
        return f"Options: {', '.join(sorted(known))}."

    def total_steps(self, train_examples: int) -> int:
        """Optimizer steps of fine-tuning on `train_examples` examples."""
        if self.epochs is not None:
            per_step = self.batch_size * self.accumulate_steps
            return max(1, math.ceil(self.epochs * train_examples / per_step))
        return self.max_steps
