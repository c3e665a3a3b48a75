"""Passages -> their last word, predicted from the text before it: LAMBADA's last-word accuracy
and the last word's perplexity, as lm-evaluation-harness's ``lambada_openai`` scores them.

A last-word task scores the language model as it is (``method="zeroshot"``). Each example's
context is its passage up to the final space, its label the word after it; the continuation
scored is that word with its space (`` " word"``), encoded apart from the context and joined
(`lmkit.evaluation.zeroshot.greedy_loglikelihoods`). The outputs are, per passage, the word's
summed log-likelihood and whether greedy decoding writes it (every one of its tokens the model's
most likely next token); the shipped ``last_word`` module turns them into ``accuracy`` (the
share written) and ``perplexity`` (``exp(-mean log-likelihood)``). Intervals resample passages.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lmkit.errors import ConfigError, RegistryError
from lmkit.evaluation.examples import Examples
from lmkit.evaluation.shapes.protocol import Encoder, Shape
from lmkit.registry import shapes

__all__ = ["LastWord"]


@shapes.register("last_word", capabilities=(),
                 description="Each passage's last word predicted from the text before it (LAMBADA).")
@dataclass(frozen=True)
class LastWord(Shape):
    """Each example is a passage's context; its label the last word (a string), and a
    prediction the model's ``[log-likelihood in nats, 1.0 if greedy decoding writes it]``."""

    name: ClassVar[str] = "last_word"
    default_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "perplexity")
    default_metric: ClassVar[str | None] = "last_word"

    def check(self, task: Any) -> None:
        if task.labels:
            raise RegistryError(f"task {task.name} is a {self.name} task: its labels are each passage's last word")

    def label(self, task: Any, value: Any, where: str) -> str:
        return str(value)

    def label_array(self, labels: Sequence[Any]) -> np.ndarray:
        return np.asarray([str(v) for v in labels], dtype=object)

    def head(self, task: Any, backbone: Any, pooling: str, dropout: float,
             examples: Sequence[Examples] = ()) -> tuple[Any, Encoder]:
        raise ConfigError(f"{task.name} asks a language model as it is for each passage's last word: there "
                          f"is no head to fine-tune; use method='zeroshot' (lmkit eval --zeroshot)")

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        return outputs  # (N, 2): the last word's log-likelihood and whether greedy decoding writes it

    def hits(self, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
        return np.asarray(predictions, np.float64).reshape(-1, 2)[:, 1] > 0  # greedy decoding writes the word

    def score(self, task: Any, split: str, predictions: np.ndarray, labels: np.ndarray,
              examples: Examples | None = None) -> dict[str, float]:
        from lmkit.evaluation.metrics import load_metric

        outputs = np.asarray(predictions, np.float64).reshape(-1, 2)
        found = load_metric(*task.metric_for(split)).compute(predictions=outputs.tolist(),
                                                             references=[str(v) for v in labels])
        return {k: float(found[k]) for k in task.metrics}

    def label_text(self, task: Any, values: np.ndarray) -> list[str]:
        values = np.asarray(values)
        if values.dtype.kind == "O":  # the last words themselves
            return [str(v) for v in values]
        return [f"{'greedy' if g > 0 else 'not greedy'} (log-likelihood {ll:.4f})" for ll, g in values.reshape(-1, 2)]

    def zeroshot(self, run: Any, examples: Examples, cfg: Any, name: str, shots: Examples | None) -> Any:
        from lmkit.evaluation.result import EvalResult
        from lmkit.evaluation.zeroshot import greedy_loglikelihoods

        if cfg.shots:
            raise ConfigError(f"shots={cfg.shots}: {examples.task.name} scores each passage alone, as "
                              f"lm-evaluation-harness does. Use shots=0")
        started = time.perf_counter()
        window = getattr(run.model, "max_context", None) or cfg.max_length
        pairs = [(context, " " + word) for context, word in zip(examples.text_a, examples.labels)]
        ll, tokens, greedy = greedy_loglikelihoods(run.model, run.tokenizer, pairs, window, cfg.eval_batch_size)
        outputs = np.stack([ll, greedy.astype(np.float64)], axis=1)
        training = {"method": "zeroshot", "passages": len(examples), "scored_tokens": int(tokens.sum()),
                    "window": int(window), "seconds": time.perf_counter() - started}
        return EvalResult.build(examples.task, examples.split, name, outputs, examples.labels, examples,
                                config=cfg.to_dict(), training=training, model=run.model, tokenizer=run.tokenizer)
