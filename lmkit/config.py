"""`TrainConfig`: every key a training run accepts, typed, documented and validated.

The same keys come from a TOML file, a notebook cell body, ``--set key=value`` on the command
line, and keyword arguments::

    >>> cfg = TrainConfig.from_sources(overrides={"arch": "lstm", "max_steps": "300"})
    >>> cfg.arch, cfg.max_steps
    ('lstm', 300)

Unknown keys and wrong types raise `ConfigError` naming the key, the value and what is expected.
The README's table of keys is generated from this dataclass (`config_table()`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lmkit.errors import ConfigError, did_you_mean

__all__ = ["TrainConfig", "FIXED_ON_RESUME", "parse_set_options", "parse_toml", "config_table", "dump_toml", "presets",
           "config_key", "coerce", "validate_fields"]


def config_key(default: Any, doc: str, **checks: Any) -> Any:
    """A config field with its documentation and range checks (`min`, `max`, `choices`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc, **checks})
    return field(default=default, metadata={"doc": doc, **checks})


#: keys that fix a run's model and tokenizer: a resumed run keeps them (its checkpoint has
#: their shapes), so changing one on resume is an error rather than silently ignored
FIXED_ON_RESUME = ("arch", "tokenizer", "vocab_size", "seq_len", "embed_dim", "units", "layers",
                   "heads", "tie_embeddings", "activation", "kernel_size", "model")


@dataclass
class TrainConfig:
    """Configuration of one training run. See the README for a table of every key."""

    # what to train
    arch: str = config_key("gpt", "Architecture name (`lmkit list architectures`).")
    data: str = config_key("tinyshakespeare", "Corpus: `tinyshakespeare` (embedded), a text file, or a folder of `.txt` files.")
    encoding: str = config_key("utf-8", "Text encoding of the corpus files.")
    tokenizer: str = config_key("char", "Tokenizer name (`char`, `word`, `whitespace`, `bpe`, `byte`).")
    vocab_size: int | None = config_key(None, "Vocabulary size for `word` and `whitespace` (default 10000) and `bpe` (default 2000).", min=2)
    validation_split: float = config_key(0.1, "Fraction of the corpus, taken from its tail, held out for validation.", min=0.0, max=0.9)
    validation_data: str | None = config_key(None, "Validation corpus (a text file or a folder of `.txt` files), tokenized with the vocabulary of `data`; when set, all of `data` trains and `validation_split` is not used.")
    init: str | None = config_key(None, "Continue training a pretrained decoder: a Hugging Face checkpoint folder or a registered name (`lmkit list pretrained`); its architecture, sizes and tokenizer are kept.")
    # model
    seq_len: int = config_key(64, "Tokens per training window (and `gpt` context length).", min=1)
    embed_dim: int = config_key(128, "Embedding width.", min=1)
    units: int = config_key(128, "Hidden units of recurrent layers (and gated-CNN channels).", min=1)
    layers: int = config_key(4, "Number of stacked layers / blocks.", min=1)
    heads: int = config_key(4, "Attention heads (`gpt`).", min=1)
    dropout: float = config_key(0.0, "Dropout rate.", min=0.0, max=0.95)
    tie_embeddings: bool = config_key(True, "Share input embedding and output projection where the architecture allows.")
    activation: str = config_key("tanh", "Recurrent activation of `rnn` (`tanh` or `relu`).", choices=("tanh", "relu"))
    kernel_size: int = config_key(4, "Convolution width (`gated_cnn`).", min=1)
    model: dict[str, Any] = config_key({}, "Extra architecture options (TOML table `[model]`), passed to the model as keywords.")
    head_bias_init: str = config_key("zeros", "Initial logit bias of the output head: `zeros`, or `unigram` (the log of each token's add-one-smoothed frequency in the training tokens, so the first step already predicts the unigram distribution instead of spending hundreds of steps learning it).", choices=("zeros", "unigram"))
    precision: str = config_key("float32", "`float32` or `mixed_bfloat16`.", choices=("float32", "mixed_bfloat16"))
    # optimization
    optimizer: str = config_key("adamw", "Optimizer name (`lmkit list optimizers`).")
    learning_rate: float = config_key(1e-3, "Peak learning rate.", min=0.0, exclusive_min=True)
    weight_decay: float = config_key(0.0, "Decoupled weight decay (AdamW, Lion) or L2 decay (others).", min=0.0)
    momentum: float = config_key(0.9, "Momentum of `momentum` and `nesterov`.", min=0.0, max=1.0, exclusive_max=True)
    beta1: float = config_key(0.9, "First-moment decay of Adam-family and Lion.", min=0.0, max=1.0, exclusive_max=True)
    beta2: float = config_key(0.99, "Second-moment decay of Adam-family and Lion.", min=0.0, max=1.0, exclusive_max=True)
    clipnorm: float | None = config_key(1.0, "Clip gradients to this global norm (`none` to disable).", min=0.0, exclusive_min=True)
    schedule: str = config_key("warmup_cosine", "Learning-rate schedule (`lmkit list schedules`).")
    warmup_steps: int = config_key(100, "Linear warm-up steps of `warmup_cosine` and `one_cycle`.", min=0)
    min_lr_ratio: float = config_key(0.1, "Final learning rate as a fraction of the peak.", min=0.0, max=1.0)
    loss: str = config_key("cross_entropy", "Loss name (`lmkit list losses`).")
    label_smoothing: float = config_key(0.0, "Label smoothing of `label_smoothing` loss.", min=0.0, max=1.0)
    metrics: list[str] = config_key(["loss", "perplexity", "bits_per_char", "accuracy"], "Validation metrics (`lmkit list metrics`).")
    top_k: int = config_key(5, "k of the `top_k_accuracy` metric.", min=1)
    # schedule of the run
    batch_size: int = config_key(12, "Sequences per batch.", min=1)
    max_steps: int | None = config_key(2000, "Optimizer steps to train (set `none` and use `epochs` instead).", min=1)
    epochs: float | None = config_key(None, "Passes over the training tokens; overrides `max_steps` when set.", min=0.0, exclusive_min=True)
    eval_every: int = config_key(0, "Evaluate on the validation split every N steps (`0`: automatic, about 10 evaluations per run).", min=0)
    eval_batches: int = config_key(20, "Validation batches per evaluation (`0`: the whole split).", min=0)
    early_stopping: int | None = config_key(None, "Stop after this many evaluations without improvement of `val_loss`.", min=1)
    checkpoint_every: int = config_key(500, "Write a checkpoint every N steps (and always at the end).", min=1)
    steps_per_dispatch: int = config_key(0, "Optimizer steps fused into one compiled call on JAX (`0`: automatic).", min=0)
    batch_parts: int = config_key(0, "Compute each batch's gradient as this many independent equal parts, run side by side on a CPU (`0`: automatic: the architecture's choice for long runs of small batches).", min=0)
    accumulate_steps: int = config_key(1, "Micro-batches of `batch_size` whose gradients are averaged into one optimizer step (an effective batch of `batch_size * accumulate_steps` in the memory of one batch).", min=1)
    freeze: list[str] = config_key([], "Glob patterns of variable paths that do not train (no gradient, no optimizer slots, bit-identical), e.g. `[\"embedding\", \"block_0/*\"]`; JAX only.")
    # where the step runs
    devices: int | list[int] | str = config_key("all", "Devices of each process the compiled step uses on JAX: `\"all\"`, a count, or a list of device ids. The batch is split over them (data parallel); `batch_size` stays the global batch and must divide evenly.", min=1)
    model_parallel: int = config_key(1, "Devices each weight of the model's large matrices is split over (`gpt`: attention and MLP matrices); must divide `devices` and the model's widths.", min=1)
    seed: int = config_key(0, "Seed of initialization, batches and dropout; equal seeds give equal runs.", min=0)
    # output
    out: str | None = config_key(None, "Run directory (default: `runs/<arch>-<time>`).")
    overwrite: bool = config_key(False, "Replace a run already in `out`.")
    sample_tokens: int = config_key(200, "Tokens of the sample generated at the end (`0`: none).", min=0)
    sample_prompt: str = config_key("\n", "Prompt of the final sample.")

    def __post_init__(self) -> None:
        _validate(self)
        # Built directly, the keys that differ from the defaults count as set; `from_dict` (every
        # file, cell, --set and keyword path) records exactly the keys it was given.
        self._given = frozenset(f.name for f in fields(self) if getattr(self, f.name) != _default(f))

    @property
    def given(self) -> frozenset[str]:
        """The keys the user set. An architecture's recommended defaults
        (`LanguageModel.config_defaults`) fill in only the others.

        >>> sorted(TrainConfig.from_sources(overrides={"arch": "lstm", "max_steps": 400}).given)
        ['arch', 'max_steps']
        """
        return self._given

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        """Build from a mapping, coercing strings from the command line to the declared types."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"{_where(source)}unknown config key '{key}'{did_you_mean(key, known)}. "
                    f"Run `lmkit train --help` or see the README for the list of keys."
                )
        try:  # __post_init__ coerces each value once, to its declared type
            cfg = cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{_where(source)}{exc}") from None
        cfg._given = frozenset(values)
        return cfg

    @classmethod
    def source_keys(
        cls, config: "TrainConfig | str | Path | dict[str, Any] | None"
    ) -> tuple[dict[str, Any], str]:
        """The keys a config source sets (all of them for a `TrainConfig`, only those written
        for a TOML file, preset or mapping), and the source's name for messages."""
        if config is None:
            return {}, "config"
        if isinstance(config, TrainConfig):
            return config.to_dict(), "config"
        if isinstance(config, dict):
            return dict(config), "config"
        path = Path(config)
        if not path.is_file() and isinstance(config, str) and config in presets():
            path = presets()[config]
        if not path.is_file():
            raise ConfigError(
                f"config file '{path}' does not exist (built-in presets: "
                f"{', '.join(sorted(presets()))})"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are "
                              f"UTF-8, save it as UTF-8") from None
        return parse_toml(text, source=str(path)), str(path)

    @classmethod
    def from_sources(
        cls,
        config: "TrainConfig | str | Path | dict[str, Any] | None" = None,
        overrides: dict[str, Any] | None = None,
    ) -> "TrainConfig":
        """Merge a base (config object, TOML path or mapping) with keyword / `--set` overrides."""
        if isinstance(config, TrainConfig) and not overrides:
            return config  # already coerced and validated
        base, source = cls.source_keys(config)
        merged = {**base, **(overrides or {})}
        cfg = cls.from_dict(merged, source=source if not overrides else "config")
        if isinstance(config, TrainConfig):
            cfg._given = config.given | frozenset(overrides or {})
        return cfg

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

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with `changes` applied and validated (the changed keys count as set)."""
        cfg = TrainConfig.from_dict({**self.to_dict(), **changes})
        cfg._given = self.given | frozenset(changes)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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


def _default(f: dataclasses.Field) -> Any:  # type: ignore[type-arg]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def presets() -> dict[str, Path]:
    """Built-in configurations by name (``lmkit train classic_lstm``), from ``lmkit/presets``."""
    folder = Path(__file__).parent / "presets"
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


# -- types and validation ---------------------------------------------------------------------
def _describe(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _describe(a) for a in args)
    if typing.get_origin(tp) is list:
        return f"a list of {_describe(args[0])}s"
    if typing.get_origin(tp) is dict:
        return "a table"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _where(source: str) -> str:
    """Message prefix naming the file or cell a value came from (nothing for keyword arguments)."""
    return "" if source == "config" else f"{source}: "


def coerce(key: str, value: Any, tp: Any, source: str = "config", noun: str = "config key") -> Any:
    """Convert `value` to type `tp`, accepting the string forms `--set` produces.

    >>> coerce("max_steps", "1_000", int | None)
    1000
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        for member in inner:  # the first type the value reads as, in the declared order
            try:
                return coerce(key, value, member, source, noun)
            except ConfigError:
                pass
    bad = ConfigError(
        f"{_where(source)}{noun} '{key}' must be {_describe(tp)}, got {value!r}"
        + (f" ({type(value).__name__})" if not isinstance(value, str) else "")
    )
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    raise bad from None
                if as_float.is_integer():
                    return int(as_float)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):  # data=Path("corpus.txt"), out=Path("runs/x")
            return os.fspath(value)
        raise bad
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        return [coerce(key, v, item, source, noun) for v in value]
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise bad
    raise bad


def validate_fields(obj: Any, noun: str = "config key") -> None:
    """Coerce every field of the dataclass `obj` to its declared type and check its range.

    Shared by every config dataclass (`TrainConfig`, `lmkit.evaluation.EvalConfig`); ranges and
    choices come from `config_key` metadata. Values passed straight to a constructor are checked
    here too.
    """
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = coerce(f.name, getattr(obj, f.name), hints[f.name], noun=noun)
        object.__setattr__(obj, f.name, value)
        if value is None or isinstance(value, (list, dict, bool)):
            continue
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(
                f"{noun} '{f.name}' must be one of {', '.join(map(repr, meta['choices']))}, "
                f"got {value!r}{did_you_mean(str(value), meta['choices'])}"
            )
        if isinstance(value, str):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{noun} '{f.name}' must be a finite number, got {value!r}")
        low, high = meta.get("min"), meta.get("max")
        if low is not None and (value < low or (meta.get("exclusive_min") and value == low)):
            relation = "greater than" if meta.get("exclusive_min") else "at least"
            raise ConfigError(f"{noun} '{f.name}' must be {relation} {low}, got {value!r}")
        if high is not None and (value > high or (meta.get("exclusive_max") and value == high)):
            relation = "less than" if meta.get("exclusive_max") else "at most"
            raise ConfigError(f"{noun} '{f.name}' must be {relation} {high}, got {value!r}")


def _validate(cfg: TrainConfig) -> None:
    validate_fields(cfg)
    if cfg.max_steps is None and cfg.epochs is None:
        raise ConfigError("set either 'max_steps' or 'epochs' (both are none)")
    if not cfg.sample_prompt:
        raise ConfigError("config key 'sample_prompt' must be at least one character (the final "
                          "sample needs context to start from), got ''; the default is \"\\n\"")
    if cfg.batch_parts > 1 and cfg.batch_size % cfg.batch_parts:
        raise ConfigError(
            f"config key 'batch_parts' ({cfg.batch_parts}) must divide 'batch_size' "
            f"({cfg.batch_size}) into equal parts; use a divisor of {cfg.batch_size}, or 0 for automatic"
        )


# -- text forms -------------------------------------------------------------------------------
def parse_toml(text: str, source: str = "config", line_offset: int = 0) -> dict[str, Any]:
    """Parse TOML, turning syntax errors into `ConfigError` with the line (plus `line_offset`)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        lineno = getattr(exc, "lineno", None)
        if lineno is None:
            import re

            m = re.search(r"line (\d+)", msg)
            lineno = int(m.group(1)) if m else None
        where = f"{source}, line {lineno + line_offset}" if lineno else source
        reason = msg.split(" (at line")[0]
        raise ConfigError(f"{where}: malformed TOML: {reason}") from None


def parse_set_options(items: typing.Iterable[str]) -> dict[str, Any]:
    """Turn ``["lr=1e-3", "arch=lstm"]`` into a dict; values are parsed as TOML when they can be.

    >>> parse_set_options(["max_steps=10", "arch=lstm", "metrics=[\\"loss\\"]"])
    {'max_steps': 10, 'arch': 'lstm', 'metrics': ['loss']}
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # bare words such as arch=lstm
        if key.startswith("model."):
            out.setdefault("model", {})[key.removeprefix("model.")] = value
        else:
            out[key] = value
    return out


_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _toml_key(key: str) -> str:
    """A bare key when TOML allows one, else a quoted one."""
    return key if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key) else _toml_value(key)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        # every control character escaped: TOML refuses them raw, and a config.toml that
        # cannot be read back would lose the run
        return '"' + "".join(_TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 32 or ord(c) == 127 else c)
                             for c in v) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # inline table
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def dump_toml(values: dict[str, Any]) -> str:
    """Write a flat mapping (plus nested tables) as TOML; `None` is written as ``"none"``.

    TOML has no null; every optional config key reads the string "none" back as None.
    """
    lines, tables = [], []
    for k, v in values.items():
        if v is None:
            lines.append(f'{k} = "none"')
        elif isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for name, table in tables:
        lines.append(f"\n[{name}]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None)
    return "\n".join(lines) + "\n"


def config_table() -> str:
    """The Markdown table of every config key, as embedded in the README."""
    hints = typing.get_type_hints(TrainConfig)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in fields(TrainConfig):
        default = _default(f)
        shown = "none" if default is None else _toml_value(default)
        tp = _describe(hints[f.name]).replace("an ", "").replace("a ", "")
        rows.append(f"| `{f.name}` | {tp} | `{shown}` | {f.metadata['doc']} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m lmkit.config > table.md
    sys.stdout.write(config_table() + "\n")
