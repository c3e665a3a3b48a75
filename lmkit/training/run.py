"""`Run`: a trained language model with its tokenizer, config and history, backed by a run
directory (`lmkit.engine.rundir` describes its files).

`Run` holds data; training it, or continuing to, goes through `train` here, which drives the
language-model client of the engine. Its notebook view (HTML, widgets) is attached by
`lmkit.notebook`, so nothing here imports a front end.

>>> run = lmkit.load("runs/gpt-20261128-101500")            # doctest: +SKIP
>>> run.generate("ROMEO:", max_new_tokens=40, seed=0)        # doctest: +SKIP
>>> run = run.resume(max_steps=3000)                         # doctest: +SKIP
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmkit.config import TrainConfig, parse_toml
from lmkit.engine.events import Reporter, StopSignal
from lmkit.engine.rundir import CHECKPOINT, CONFIG, MODEL, SUMMARY, TOKENIZER, RunDir
from lmkit.errors import ConfigError, RunError, RunWarning

__all__ = ["Run", "train", "load_run", "read_tokenizer", "read_config"]


def read_tokenizer(run_dir: str | Path) -> Any:
    """The tokenizer of a run directory (``tokenizer.json``)."""
    from lmkit.tokenizers import load_tokenizer

    return load_tokenizer(RunDir.open(run_dir, required=(TOKENIZER,)).file(TOKENIZER))


def read_config(run_dir: str | Path) -> TrainConfig:
    """The configuration of a run directory (``config.toml``)."""
    config_path = RunDir.open(run_dir, required=(CONFIG,)).file(CONFIG)
    return TrainConfig.from_dict(parse_toml(config_path.read_text(encoding="utf-8"), str(config_path)),
                                 source=str(config_path))


@dataclass
class Run:
    """A trained model and everything that describes how it was trained."""

    dir: Path
    config: TrainConfig
    model: Any
    tokenizer: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    #: where the model's weights came from: ``model.keras``, or the checkpoint when it is newer
    #: (a training that was killed) or the model file is missing
    weights: str = MODEL
    #: False on the processes of a distributed run but the first (process 0 writes the run and
    #: reports; the others return the same trained model and print nothing)
    lead: bool = True

    def generate(self, prompt: str, max_new_tokens: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop: str | None = None, include_prompt: bool = False) -> str:
        """Continue `prompt` (the new text; after the prompt with `include_prompt`); see
        `lmkit.generation.generate`.

        >>> run.generate("ROMEO:", max_new_tokens=50, temperature=0.8, top_k=10, seed=0)  # doctest: +SKIP
        """
        from lmkit.generation import generate

        return generate(self.model, self.tokenizer, prompt, max_new_tokens, temperature, top_k,
                        top_p, seed, stop, include_prompt=include_prompt)

    def perplexity(self, texts: str | list[str], unit: str = "token") -> float:
        """Perplexity on `texts` per ``token``, ``word`` or ``byte``; see `lmkit.forward.perplexity`.

        >>> run.perplexity(["To be, or not to be"], unit="byte")   # doctest: +SKIP
        """
        from lmkit.forward import perplexity

        return perplexity(self.model, self.tokenizer, texts, unit)

    def resume(self, *, reporters: list[Reporter] | None = None, stop: StopSignal | None = None,
               **overrides: Any) -> "Run":
        """Continue training from the last checkpoint (e.g. ``run.resume(max_steps=3000)``)."""
        return train(self.config.replace(**overrides, out=str(self.dir)), reporters=reporters,
                     stop=stop, resume=True)

    def __repr__(self) -> str:
        val = self.summary.get("val_loss")
        extra = f", val_loss={val:.4f}" if isinstance(val, float) else ""
        if self.weights != MODEL:
            extra += f", weights='{self.weights}'"
        return (f"Run(dir='{self.dir}', arch='{self.config.arch}', "
                f"steps={self.summary.get('steps', '?')}{extra})")


def train(cfg: TrainConfig, *, reporters: list[Reporter] | None = None,
          stop: StopSignal | None = None, resume: bool = False) -> Run:
    """Train a language model as `cfg` says (``resume``: continue the run in ``cfg.out``)."""
    from lmkit.training.language_model import train_language_model
    from lmkit.training.lr_find import FIND, with_found_learning_rate

    if cfg.learning_rate == FIND:
        if resume:
            raise ConfigError("learning_rate=\"find\" cannot change a resumed run's learning "
                              "rate mid-schedule; resume with a number, or start a new run")
        cfg = with_found_learning_rate(cfg)
    trained = train_language_model(cfg, reporters=reporters, stop=stop, resume=resume)
    return Run(trained.dir, trained.config, trained.model, trained.tokenizer,
               trained.outcome.history, trained.outcome.summary, lead=trained.lead)


def load_run(path: str | Path) -> Run:
    """Open a run directory. Models load in Keras safe mode: arbitrary code is refused.

    The newest consistent state wins: a run whose checkpoint is newer than its finished
    training (killed during a resumed training, or before the final save) is rebuilt from the
    checkpoint, and `Run.weights` says so.
    """
    import keras

    import lmkit.models  # noqa: F401  (registers the built-in architectures' classes)
    from lmkit.registry import architectures

    run_dir = RunDir.open(path, required=(CONFIG,))
    cfg = read_config(run_dir.path)
    architectures.entry(cfg.arch)  # plugin architectures register their classes on lookup
    tokenizer = read_tokenizer(run_dir.path)
    model_path = run_dir.file(MODEL)
    try:
        interrupted = run_dir.interrupted_at()
        damaged_checkpoint: RunError | None = None
    except RunError as exc:  # the finished model may still be whole: use it, and say so
        interrupted, damaged_checkpoint = None, exc
    model, weights, damaged_model = None, MODEL, None
    if model_path.is_file() and interrupted is None:
        try:
            if not zipfile.is_zipfile(model_path):  # Keras would call it "not found"
                raise ValueError("truncated or not a .keras file")
            model = keras.saving.load_model(model_path, safe_mode=True)
        except ValueError as exc:
            if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
                raise RunError(
                    f"refusing to load {model_path}: it contains arbitrary Python code (for example "
                    f"a Lambda layer), which could run anything on this machine. lmkit loads models "
                    f"in Keras safe mode only. If you trust the file and wrote it yourself, rebuild "
                    f"the model from its config instead."
                ) from None
            damaged_model = exc
        except Exception as exc:  # noqa: BLE001  (a truncated zip, a broken weights file...)
            damaged_model = exc
    if model is not None and damaged_checkpoint is not None:
        warnings.warn(f"{damaged_checkpoint}; loaded the finished model {model_path} instead "
                      f"(this run cannot be resumed)", RunWarning, stacklevel=2)
    if model is None:  # killed before (or while) saving the final model: the checkpoint is newest
        from lmkit.build import build_model
        from lmkit.engine.checkpoint import restore_arrays

        if damaged_checkpoint is not None:
            raise RunError(f"{damaged_checkpoint}; and {model_path} cannot be read either "
                           f"({damaged_model}): nothing in '{run_dir.path}' can be loaded")
        if run_dir.checkpoint_step() is None:
            raise RunError(f"'{run_dir.path}' holds neither a readable {MODEL} nor {CHECKPOINT}: "
                           f"the training ended before its first checkpoint; train it again")
        ckpt = run_dir.load_checkpoint()
        model = build_model(cfg, tokenizer.vocab_size)
        restore_arrays([*model.trainable_variables, *model.non_trainable_variables], ckpt.model,
                       "model weights", str(run_dir.file(CHECKPOINT)))
        weights = f"{CHECKPOINT} (step {ckpt.step})"
        if damaged_model is not None:
            warnings.warn(f"{model_path} cannot be read ({damaged_model}); loaded the checkpoint "
                          f"of step {ckpt.step} instead", RunWarning, stacklevel=2)
    _check_vocabulary(tokenizer, model, cfg, run_dir.file(TOKENIZER))
    return Run(run_dir.path, cfg, model, tokenizer, run_dir.history(), run_dir.read_json(SUMMARY),
               weights)


def _check_vocabulary(tokenizer: Any, model: Any, cfg: Any, path: Path) -> None:
    """A run's tokenizer has one token per embedding row (a run from a pretrained checkpoint
    may have padding rows): another tokenizer would decode ids it does not know, or embed ids
    past the embedding."""
    tokens, rows = int(tokenizer.vocab_size), int(model.vocab_size)
    if tokens > rows or (tokens < rows and not cfg.init):
        raise RunError(f"{path} has {tokens} tokens but the run's model has {rows} embedding "
                       f"rows: it is not the tokenizer this run was trained with")
