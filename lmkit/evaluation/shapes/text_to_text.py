"""Source text -> target text with a decoder-only language model (translation: Multi30K de->en).

Each example is encoded as ``source <sep> target <end>`` (both the line break
`lmkit.evaluation.encoding.SEPARATOR`, a token of every built-in tokenizer; source and target
are encoded separately and joined), cut to `max_length` tokens: the target keeps its start, the
source its end. The labels are the positions ``[start, end)`` whose next-token predictions are
the target's tokens, so the loss (the ``target_nll`` loss of `lmkit.losses`, the mean negative
log-likelihood over those positions) is on the target only. The head is the language model
itself (`lmkit.evaluation.heads.NextTokenLogProbs`): fine-tuning trains every weight of any
lmkit architecture.

Scoring decodes greedily through `lmkit.generation.generate` (``temperature=0``), from
``source <sep>`` until the first line break or `Generation.max_new_tokens` tokens, and scores
the decoded texts against the targets with the shipped BLEU (sacreBLEU, 13a tokenization, 0-100)
and ROUGE (F-measures, 0-1) modules. Zero-shot (``method="zeroshot"``) decodes the same way with
the run's model as it is. With word or BPE tokenizers, the prompt encoded whole can differ at its
end from the pieces encoded apart in training; char and byte tokenizers give the same ids.
Beam search and packing several examples into one sequence are not implemented.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lmkit.errors import ConfigError, RegistryError
from lmkit.evaluation.encoding import SEPARATOR, Encoded
from lmkit.evaluation.examples import Examples
from lmkit.evaluation.shapes.classification import build_head
from lmkit.evaluation.shapes.protocol import Encoder, Shape
from lmkit.registry import shapes

__all__ = ["Generation", "encode_targets", "decode", "END"]

#: what ends a target: decoding stops at it
END = SEPARATOR
#: the modules that score decoded texts
_MODULES = ("bleu", "rouge")


def encode_targets(examples: Examples, tokenizer: Any, max_length: int) -> Encoded:
    """``source <sep> target <end>`` per example (truncated to `max_length` tokens), labelled
    with the ``[start, end)`` output positions that predict the target's tokens and its end.

    >>> from lmkit.tokenizers import CharTokenizer                                # doctest: +SKIP
    >>> encode_targets(examples, CharTokenizer.fit(["ab\\n"]), 16).labels[0]      # doctest: +SKIP
    array([2, 5], dtype=int32)
    """
    sep, end = list(tokenizer.encode(SEPARATOR)), list(tokenizer.encode(END))
    ids, spans = [], []
    for source, target in zip(examples.text_a, examples.text_b or ()):
        tgt = (list(tokenizer.encode(str(target))) + end)[:max(max_length - len(sep) - 1, 1)]
        src = list(tokenizer.encode(source))[-max(max_length - len(sep) - len(tgt), 1):]
        row = (src + sep + tgt)[:max_length]
        ids.append(np.asarray(row, np.int32))
        spans.append((len(src) + len(sep) - 1, len(row) - 1))
    return Encoded(ids, np.asarray(spans, np.int32).reshape(len(ids), 2))


def decode(model: Any, tokenizer: Any, sources: Sequence[str], max_new_tokens: int) -> np.ndarray:
    """Each source's greedy continuation after ``source <sep>``, up to its first line break."""
    from lmkit.generation import generate

    return np.asarray([generate(model, tokenizer, source + SEPARATOR, max_new_tokens, temperature=0.0,
                                stop=END).strip() for source in sources], dtype=object)


@shapes.register("generation", capabilities=(),
                 description="Source text -> target text, decoded greedily, scored by BLEU and ROUGE.")
@dataclass(frozen=True)
class Generation(Shape):
    """The target text of each example, generated after its source; decoding stops after
    `max_new_tokens` tokens."""

    max_new_tokens: int = 128

    name: ClassVar[str] = "generation"
    loss: ClassVar[str] = "target_nll"
    default_metrics: ClassVar[tuple[str, ...]] = ("bleu", "rouge1", "rouge2", "rougeL")
    default_metric: ClassVar[str | None] = "bleu"

    def check(self, task: Any) -> None:
        if task.labels or len(task.inputs) != 1:
            raise RegistryError(f"task {task.name} is a {self.name} task: it reads one source text "
                                f"column (inputs=('source',)) and one target column (target='target'), "
                                f"and has no labels")

    def label(self, task: Any, value: Any, where: str) -> str:
        return "" if value is None else str(value)

    def label_array(self, labels: Sequence[Any]) -> np.ndarray:
        return np.asarray(list(labels), dtype=object)

    def examples(self, task: Any, split: str, source: str, text_a: list[str], text_b: list[str] | None,
                 labels: list[Any]) -> Examples:
        # the targets are texts too: a tokenizer fitted on the examples must know their symbols
        return Examples(task, split, source, text_a, [str(t) for t in labels], self.label_array(labels))

    def head(self, task: Any, backbone: Any, pooling: str, dropout: float,
             examples: Sequence[Examples] = ()) -> tuple[Any, Encoder]:
        from lmkit.evaluation.heads import NextTokenLogProbs

        return build_head(NextTokenLogProbs(backbone), 1), encode_targets

    def outputs(self, model: Any, tokenizer: Any, examples: Examples, encode: Encoder, cfg: Any) -> np.ndarray:
        return decode(model.backbone, tokenizer, examples.text_a, self.max_new_tokens)

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        return outputs

    def score(self, task: Any, split: str, predictions: np.ndarray, labels: np.ndarray,
              examples: Examples | None = None) -> dict[str, float]:
        from lmkit.evaluation.metrics import load_metric

        texts, references = [str(p) for p in predictions], [str(y) for y in labels]
        found: dict[str, float] = {}
        for module in _MODULES:
            refs = [[r] for r in references] if module == "bleu" else references  # BLEU takes several per text
            found.update({k: float(v) for k, v in load_metric(module).compute(predictions=texts, references=refs)
                          .items() if isinstance(v, (int, float))})
        return {**{k: found[k] for k in task.metrics if k in found}, **found}

    def label_text(self, task: Any, values: np.ndarray) -> list[str]:
        return [" ".join(str(v).split()) for v in values]  # one line, no tabs: a cell of predictions.tsv

    def zeroshot(self, run: Any, examples: Examples, cfg: Any, name: str, shots: Examples | None) -> Any:
        from lmkit.evaluation.result import EvalResult

        if cfg.shots:
            raise ConfigError(f"shots={cfg.shots}: zero-shot {examples.task.name} decodes each source alone; "
                              f"few-shot prompts are for ranked choices. Use shots=0")
        started = time.perf_counter()
        outputs = decode(run.model, run.tokenizer, examples.text_a, self.max_new_tokens)
        training = {"method": "zeroshot", "seconds": time.perf_counter() - started}
        return EvalResult.build(examples.task, examples.split, name, outputs, examples.labels, examples,
                                config=cfg.to_dict(), training=training, model=run.model, tokenizer=run.tokenizer)
