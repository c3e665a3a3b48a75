"""`TrainConfig`: every key a training run accepts, typed, documented and validated.

The same keys come from a TOML file, a notebook cell body, ``--set key=value`` on the command
line, and keyword arguments::

    >>> cfg = TrainConfig.from_sources(overrides={"arch": "lstm", "max_steps": "300"})
    >>> cfg.arch, cfg.max_steps
    ('lstm', 300)

The keys fine-tuning shares are declared in `lmkit.config.sections`. The README's table of keys
is generated from this dataclass (`config_table()`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from lmkit.config.core import config_key, default_of, describe_type
from lmkit.config.sections import (Adapter, Budget, Devices, ModelShape, Optimization, Tracking,
                                   check_budget, check_tracking)
from lmkit.config.sources import presets, read_source
from lmkit.config.tomltext import dump_toml, toml_value
from lmkit.errors import ConfigError, did_you_mean

__all__ = ["TrainConfig", "FIXED_ON_RESUME", "config_table"]

#: keys that fix a run's model and tokenizer: a resumed run keeps them (its checkpoint has
#: their shapes), so changing one on resume is an error rather than silently ignored
FIXED_ON_RESUME = ("arch", "tokenizer", "vocab_size", "seq_len", "embed_dim", "units", "layers",
                   "heads", "tie_embeddings", "activation", "kernel_size", "model",
                   "adapter", "lora_rank", "lora_targets")


@dataclass
class TrainConfig(Tracking, Devices, Budget, Adapter, Optimization, ModelShape):
    """Configuration of one training run. See the README for a table of every key."""

    # what to train on
    data: str = config_key("tinyshakespeare", "Corpus: `tinyshakespeare` (embedded), a text file, or a folder of `.txt` files.")
    encoding: str = config_key("utf-8", "Text encoding of the corpus files.")
    validation_split: float = config_key(0.1, "Fraction of the corpus, taken from its tail, held out for validation.", min=0.0, max=0.9)
    validation_data: str | None = config_key(None, "Validation corpus (a text file or a folder of `.txt` files), tokenized with the vocabulary of `data`; when set, all of `data` trains and `validation_split` is not used.")
    init: str | None = config_key(None, "Continue training a pretrained decoder: a Hugging Face checkpoint folder or a registered name (`lmkit list pretrained`); its architecture, sizes and tokenizer are kept.")
    # model
    seq_len: int = config_key(64, "Tokens per training window (and `gpt` context length).", min=1)
    dropout: float = config_key(0.0, "Dropout rate.", min=0.0, max=0.95)
    tie_embeddings: bool = config_key(True, "Share input embedding and output projection where the architecture allows.")
    activation: str = config_key("tanh", "Recurrent activation of `rnn` (`tanh` or `relu`).", choices=("tanh", "relu"))
    kernel_size: int = config_key(4, "Convolution width (`gated_cnn`).", min=1)
    model: dict[str, Any] = config_key({}, "Extra architecture options (TOML table `[model]`), passed to the model as keywords; merged entry by entry with the architecture's defaults.")
    head_bias_init: str = config_key("zeros", "Initial logit bias of the output head: `zeros`, or `unigram` (the log of each token's add-one-smoothed frequency in the training tokens, so the first step already predicts the unigram distribution instead of spending hundreds of steps learning it).", choices=("zeros", "unigram"))
    # validation
    metrics: list[str] = config_key(["loss", "perplexity", "bits_per_char", "accuracy"], "Validation metrics (`lmkit list metrics`).")
    top_k: int = config_key(5, "k of the `top_k_accuracy` metric.", min=1)
    eval_every: int = config_key(0, "Evaluate on the validation split every N steps (`0`: automatic, about 10 evaluations per run).", min=0)
    eval_batches: int = config_key(20, "Validation batches per evaluation (`0`: the whole split).", min=0)
    early_stopping: int | None = config_key(None, "Stop after this many evaluations without improvement of `val_loss`.", min=1)
    # the compiled step
    steps_per_dispatch: int = config_key(0, "Optimizer steps fused into one compiled call on JAX (`0`: automatic).", min=0)
    # output
    out: str | None = config_key(None, "Run directory (default: `runs/<arch>-<time>`).")
    overwrite: bool = config_key(False, "Replace a run already in `out`.")
    sample_tokens: int = config_key(200, "Tokens of the sample generated at the end (`0`: none).", min=0)
    sample_prompt: str = config_key("\n", "Prompt of the final sample.")

    NOUN: ClassVar[str] = "config key"

    def check(self) -> None:
        check_budget(self)
        check_tracking(self)
        if isinstance(self.learning_rate, str) and self.learning_rate != "find":
            raise ConfigError(f"config key 'learning_rate' must be a number or \"find\" (the "
                              f"learning-rate finder), got {self.learning_rate!r}")
        if not self.sample_prompt:
            raise ConfigError("config key 'sample_prompt' must be at least one character (the final "
                              "sample needs context to start from), got ''; the default is \"\\n\"")

    @classmethod
    def unknown_key_help(cls, known: set[str]) -> str:
        return "Run `lmkit train --help` or see the README for the list of keys."

    @classmethod
    def presets(cls) -> dict[str, Path]:
        return presets()

    @classmethod
    def source_keys(cls, config: "TrainConfig | str | Path | dict[str, Any] | None") -> tuple[dict[str, Any], str]:
        """The keys a config source sets (all of them for a `TrainConfig`, only those written
        for a TOML file, preset or mapping), and the source's name for messages."""
        if isinstance(config, TrainConfig):
            return config.to_dict(), "config"
        values, _, name = read_source(config, presets())
        return values, name

    def check_resumable(self, saved: "TrainConfig", run: str) -> None:
        """Raise `ConfigError` when this config changes a key of `saved` that a resumed run
        cannot change (`FIXED_ON_RESUME`)."""
        changed = [k for k in FIXED_ON_RESUME if getattr(self, k) != getattr(saved, k)]
        if changed:
            said = ", ".join(f"{k}={getattr(self, k)!r} (the run has {getattr(saved, k)!r})"
                             for k in changed)
            raise ConfigError(
                f"cannot resume {run} with {said}: a resumed run keeps its model and tokenizer. "
                f"Drop {'that key' if len(changed) == 1 else 'those keys'}, or start a new run "
                f"(another `out`).")

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())

    def model_kwargs(self, accepted: typing.Iterable[str]) -> dict[str, Any]:
        """Keyword arguments for an architecture whose constructor accepts the names `accepted`."""
        accepted = set(accepted)
        generic = ("embed_dim", "units", "layers", "heads", "dropout", "tie_embeddings",
                   "activation", "kernel_size", "seq_len")
        kwargs = {k: getattr(self, k) for k in generic if k in accepted}
        for k, v in self.model.items():
            if k not in accepted and "kwargs" not in accepted:
                raise ConfigError(
                    f"[model] option '{k}' is not accepted by architecture '{self.arch}'"
                    f"{did_you_mean(k, accepted)}; it accepts: {', '.join(sorted(accepted))}"
                )
            kwargs[k] = v
        return kwargs


def config_table(cls: type = TrainConfig) -> str:
    """The Markdown table of every key of a config class, as embedded in the README."""
    hints = typing.get_type_hints(cls)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in fields(cls):
        default = default_of(f)
        shown = "none" if default is None else toml_value(default)
        tp = describe_type(hints[f.name]).replace("an ", "").replace("a ", "")
        rows.append(f"| `{f.name}` | {tp} | `{shown}` | {f.metadata['doc']} |")
    return "\n".join(rows)
