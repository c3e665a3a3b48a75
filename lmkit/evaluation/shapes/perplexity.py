"""Documents -> how well a language model predicts them: perplexity per word, byte and token
(WikiText, Penn Treebank), as lm-evaluation-harness defines it.

A perplexity task scores the language model as it is (``method="zeroshot"``; there is nothing
to fine-tune). Each document is cut into windows of the model's context
(`lmkit.forward.text_nll`); within a window every token after the first is predicted from those
before it (lmkit tokenizers have no start-of-text token, so each window's first token is context).
The outputs are each document's summed negative log-likelihood and its number of predicted
tokens; the shipped ``perplexity`` module turns them, with each document's words and UTF-8 bytes
(its labels), into ``word_perplexity``, ``byte_perplexity``, ``bits_per_byte`` and ``token_perplexity``
(weighted by size: ``exp(sum nll / sum units)``). Intervals resample documents.
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

__all__ = ["Perplexity"]


@shapes.register("perplexity", capabilities=(),
                 description="Documents scored by the language model's perplexity per word, byte and token.")
@dataclass(frozen=True)
class Perplexity(Shape):
    """Each example is a document; its label is its size, ``[words, UTF-8 bytes]``, and a
    prediction the model's ``[summed NLL in nats, predicted tokens]`` on it (rows of floats)."""

    name: ClassVar[str] = "perplexity"
    default_metrics: ClassVar[tuple[str, ...]] = ("word_perplexity", "byte_perplexity", "bits_per_byte",
                                                  "token_perplexity")
    default_metric: ClassVar[str | None] = "perplexity"
    #: a lower perplexity is better (the leaderboard's best model of a column is its lowest)
    higher_is_better: ClassVar[bool] = False

    def check(self, task: Any) -> None:
        if task.labels:
            raise RegistryError(f"task {task.name} is a {self.name} task: its examples are documents, with no labels")

    def label(self, task: Any, value: Any, where: str) -> str:
        return str(value)

    def label_array(self, labels: Sequence[Any]) -> np.ndarray:
        """Each document's ``[words, UTF-8 bytes]`` (what its perplexities are counted in)."""
        return np.asarray([[len(str(t).split()), len(str(t).encode("utf-8"))] for t in labels],
                          np.float64).reshape(-1, 2)

    def head(self, task: Any, backbone: Any, pooling: str, dropout: float,
             examples: Sequence[Examples] = ()) -> tuple[Any, Encoder]:
        raise ConfigError(f"{task.name} measures a language model's perplexity as it is: there is no head to "
                          f"fine-tune; use method='zeroshot' (lmkit eval --zeroshot)")

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        return outputs  # (N, 2): summed NLL and predicted tokens per document

    def score(self, task: Any, split: str, predictions: np.ndarray, labels: np.ndarray,
              examples: Examples | None = None) -> dict[str, float]:
        from lmkit.evaluation.metrics import load_metric

        outputs = np.asarray(predictions, np.float64).reshape(-1, 2)
        sizes = np.asarray(labels, np.float64).reshape(-1, 2)
        references = [[int(n), int(w), int(b)] for n, (w, b) in zip(outputs[:, 1], sizes)]
        found = load_metric(*task.metric_for(split)).compute(predictions=outputs[:, 0].tolist(), references=references)
        return {k: float(found[k]) for k in task.metrics}

    def label_text(self, task: Any, values: np.ndarray) -> list[str]:
        return [f"{float(a):g} {float(b):g}" for a, b in np.asarray(values, np.float64).reshape(-1, 2)]

    def zeroshot(self, run: Any, examples: Examples, cfg: Any, name: str, shots: Examples | None) -> Any:
        from lmkit.evaluation.result import EvalResult
        from lmkit.forward import text_nll

        if cfg.shots:
            raise ConfigError(f"shots={cfg.shots}: a perplexity task reads each document alone. Use shots=0")
        started = time.perf_counter()
        window = getattr(run.model, "max_context", None) or cfg.max_length
        nll, tokens = text_nll(run.model, run.tokenizer, examples.text_a, "token", window, cfg.eval_batch_size)
        outputs = np.stack([np.asarray(nll, np.float64), np.asarray(tokens, np.float64)], axis=1)
        training = {"method": "zeroshot", "documents": len(examples), "scored_tokens": int(sum(tokens)),
                    "window": int(window), "seconds": time.perf_counter() - started}
        return EvalResult.build(examples.task, examples.split, name, outputs, examples.labels, examples,
                                config=cfg.to_dict(), training=training, model=run.model, tokenizer=run.tokenizer)
