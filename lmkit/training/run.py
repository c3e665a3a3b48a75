"""`Run`: a trained model with its tokenizer, config and history, backed by a run directory.

A run directory holds::

    config.toml      the resolved TrainConfig
    tokenizer.json   the tokenizer (JSON, no pickle)
    model.keras      the final model (Keras format, loaded in safe mode)
    checkpoint.npz   the last checkpoint: weights, optimizer slots, trainer state
    metrics.jsonl    every training event, one JSON object per line
    summary.json     final metrics, steps, why training ended, a sample

>>> run = lmkit.load("runs/gpt-20261128-101500")            # doctest: +SKIP
>>> run.generate("ROMEO:", max_new_tokens=40, seed=0)        # doctest: +SKIP
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmkit.config import TrainConfig
from lmkit.errors import RunError

__all__ = ["Run", "load_run", "history_record", "load_history"]

_STEP_KEYS = ("step", "loss", "learning_rate", "tokens_per_second", "elapsed", "epoch")


def history_record(event: dict[str, Any]) -> dict[str, Any] | None:
    """The `Run.history` row for one serialized event (steps and evaluations), else None."""
    if event.get("event") == "step":
        return {k: event[k] for k in _STEP_KEYS if k in event}
    if event.get("event") == "eval":
        return {"step": event["step"], **event["metrics"]}
    return None


def load_history(run_dir: Path) -> list[dict[str, Any]]:
    """History rows from ``metrics.jsonl`` (a torn last line, from a crash, is ignored)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = history_record(json.loads(line))
        except json.JSONDecodeError:
            continue
        if record is not None:
            rows.append(record)
    return rows


def write_tokenizer(tokenizer: Any, run_dir: Path) -> None:
    from lmkit.tokenizers import save_tokenizer

    save_tokenizer(tokenizer, Path(run_dir) / "tokenizer.json")


def read_tokenizer(run_dir: Path) -> Any:
    from lmkit.tokenizers import load_tokenizer

    path = Path(run_dir) / "tokenizer.json"
    if not path.is_file():
        raise RunError(f"{run_dir} is not a complete lmkit run: tokenizer.json is missing")
    return load_tokenizer(path)


@dataclass
class Run:
    """A trained model and everything that describes how it was trained."""

    dir: Path
    config: TrainConfig
    model: Any
    tokenizer: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def generate(self, prompt: str, max_new_tokens: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop: str | None = None) -> str:
        """Continue `prompt`; see `lmkit.generation.generate`.

        >>> run.generate("ROMEO:", max_new_tokens=50, temperature=0.8, top_k=10, seed=0)  # doctest: +SKIP
        """
        from lmkit.generation import generate

        return generate(self.model, self.tokenizer, prompt, max_new_tokens, temperature, top_k,
                        top_p, seed, stop)

    def resume(self, **overrides: Any) -> "Run":
        """Continue training from the last checkpoint (e.g. ``run.resume(max_steps=3000)``)."""
        from lmkit.api import train

        return train(resume=self.dir, **overrides)

    def widget(self) -> Any:
        """A generation widget (prompt, sampling controls, Generate button) for notebooks."""
        from lmkit.notebook import generate_widget

        return generate_widget(self)

    def _repr_html_(self) -> str:
        """In notebooks: the run's summary and its loss curve."""
        import html

        from lmkit.notebook.charts import history_chart

        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
            for k, v in self.summary.items() if k != "sample"
        )
        # One curve per split; history rows carry train loss as "loss", validation as "val_loss".
        curves = {split: [{"step": r["step"], "loss": r[key]} for r in self.history if key in r]
                  for split, key in (("train", "loss"), ("val", "val_loss"))}
        chart = history_chart(curves, "loss")
        sample = html.escape(self.summary.get("sample", ""))
        return (f"<b>lmkit run</b> <code>{html.escape(str(self.dir))}</code>"
                f"<div style='display:flex;gap:2em'><table>{rows}</table>{chart}</div>"
                + (f"<pre>{sample}</pre>" if sample else ""))

    def __repr__(self) -> str:
        val = self.summary.get("val_loss")
        extra = f", val_loss={val:.4f}" if isinstance(val, float) else ""
        return (f"Run(dir='{self.dir}', arch='{self.config.arch}', "
                f"steps={self.summary.get('steps', '?')}{extra})")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def load_run(path: str | Path) -> Run:
    """Open a run directory. Models load in Keras safe mode: arbitrary code is refused."""
    import keras

    import lmkit.models  # noqa: F401  (registers the built-in architectures' classes)
    from lmkit.registry import architectures

    run_dir = Path(path)
    if not run_dir.is_dir():
        raise RunError(f"run directory '{run_dir}' does not exist")
    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        raise RunError(f"'{run_dir}' is not an lmkit run directory: config.toml is missing")
    cfg = TrainConfig.from_dict(tomllib.loads(config_path.read_text(encoding="utf-8")),
                                source=str(config_path))
    architectures.entry(cfg.arch)  # plugin architectures register their classes on lookup
    tokenizer = read_tokenizer(run_dir)
    model_path = run_dir / "model.keras"
    if model_path.is_file():
        try:
            model = keras.saving.load_model(model_path, safe_mode=True)
        except ValueError as exc:
            if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
                raise RunError(
                    f"refusing to load {model_path}: it contains arbitrary Python code (for example "
                    f"a Lambda layer), which could run anything on this machine. lmkit loads models "
                    f"in Keras safe mode only. If you trust the file and wrote it yourself, rebuild "
                    f"the model from its config instead."
                ) from None
            raise
    else:  # interrupted before the final save: rebuild from the last checkpoint
        from lmkit.build import build_model
        from lmkit.engine.checkpoint import load_checkpoint

        ckpt = load_checkpoint(run_dir)
        model = build_model(cfg, tokenizer.vocab_size)
        for var, value in zip([*model.trainable_variables, *model.non_trainable_variables],
                              ckpt.model):
            var.assign(value)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    return Run(run_dir, cfg, model, tokenizer, load_history(run_dir), summary)
