"""Source text -> target text with a decoder-only language model (translation: Multi30K de->en).

Each example is encoded as ``source <sep> target <end>`` (both the line break
`lmkit.evaluation.encoding.SEPARATOR`, a token of every built-in tokenizer; source and target
are encoded separately and joined), cut to `max_length` tokens: the target keeps its start, the
source its end. The labels are the positions ``[start, end)`` whose next-token predictions are
the target's tokens, so the loss (the ``target_nll`` loss of `lmkit.losses`, the mean negative
log-likelihood over those positions) is on the target only. The head is the language model
itself (`lmkit.evaluation.heads.NextTokenLogProbs`): fine-tuning trains every weight of any
lmkit architecture.

Scoring decodes every source in batches with `lmkit.decoding.search` (greedy, or beam search
with the config's `num_beams`, `length_penalty`, `no_repeat_ngram_size`), from ``source <sep>``
(encoded in the same pieces as in training) until the end token or `max_new_tokens` tokens, and
scores the decoded texts against the targets with the shipped sacreBLEU module (BLEU with 13a
tokenization and chrF, 0-100, and their signatures: `Generation.signatures`) and ROUGE
(F-measures of ROUGE-1/2/L/Lsum, 0-1). Zero-shot (``method="zeroshot"``) decodes the same way
with the run's model as it is. Fine-tuning packs several pairs into one row where the
architecture can (`packing`, `lmkit.data.packing`): each pair attends only to itself, from
position 0, and its outputs are read from its own start, so the loss is the padded one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lmkit.errors import ConfigError, DataError, RegistryError
from lmkit.evaluation.encoding import SEPARATOR, Encoded
from lmkit.evaluation.examples import Examples
from lmkit.evaluation.shapes.classification import build_head
from lmkit.evaluation.shapes.protocol import Encoder, Shape
from lmkit.registry import shapes

__all__ = ["Generation", "encode_targets", "encode_fitting", "decode", "END", "SCORES"]

#: what ends a target: decoding stops at it
END = SEPARATOR
#: the modules that score decoded texts
_MODULES = ("bleu", "rouge")
#: the scores the modules report, which a generation task may name in `Task.metrics`
SCORES = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum")
#: the BLEU module's other numbers, which results report beside the scores
_LENGTHS = ("brevity_penalty", "sys_len", "ref_len")


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


def encode_fitting(examples: Examples, tokenizer: Any, max_length: int) -> Encoded:
    """`encode_targets`, refusing a target that does not fit in `max_length` tokens with its end
    token and the separator (the fine-tuned model would never learn to finish it)."""
    room = max_length - len(tokenizer.encode(SEPARATOR)) - len(tokenizer.encode(END)) - 1
    lengths = [len(tokenizer.encode(str(t))) for t in examples.text_b or ()]
    longest = max(range(len(lengths)), key=lengths.__getitem__, default=None)
    if longest is not None and lengths[longest] > room:
        over = sum(n > room for n in lengths)
        raise DataError(f"{examples.task.name} '{examples.split}': {over} target(s) longer than max_length="
                        f"{max_length} allows ({room} tokens with the separator, the end token and one source "
                        f"token); the longest, example {longest}, has {lengths[longest]} tokens. Raise "
                        f"max_length to at least {lengths[longest] + max_length - room} (the model's context "
                        f"permitting) or shorten the targets")
    return encode_targets(examples, tokenizer, max_length)


def decode(model: Any, tokenizer: Any, sources: Sequence[str], cfg: Any, max_new_tokens: int) -> np.ndarray:
    """Each source's continuation after ``source <sep>`` up to the end token, decoded in batches
    by `lmkit.decoding.search` with the config's (an `EvalConfig`) decoding keys (its
    `max_new_tokens`, when set, over the `max_new_tokens` given).

    >>> decode(run.model, run.tokenizer, ["ein Hund läuft."], EvalConfig(num_beams=4), 60)  # doctest: +SKIP
    array(['a dog runs.'], dtype=object)
    """
    from lmkit.decoding import Search, search

    end = list(tokenizer.encode(END))
    if len(end) != 1:
        raise ConfigError(f"the end of a target ({END!r}) encodes to {len(end)} tokens with this tokenizer; "
                          f"decoding needs it to be one token to stop at")
    unknown = getattr(tokenizer, "unknown_id", None)
    settings = Search(num_beams=cfg.num_beams, max_new_tokens=cfg.max_new_tokens or max_new_tokens,
                      length_penalty=cfg.length_penalty, no_repeat_ngram_size=cfg.no_repeat_ngram_size,
                      eos_id=end[0], banned=() if unknown is None else (int(unknown),))
    context = getattr(model, "max_context", None)
    room = int(context) - settings.max_new_tokens if context else None
    if room is not None and room < 2:
        raise ConfigError(f"max_new_tokens={settings.max_new_tokens} leaves no room for a source in the model's "
                          f"context of {context} tokens: lower max_new_tokens")
    sep = list(tokenizer.encode(SEPARATOR))
    prompts = [(list(tokenizer.encode(source)) + sep)[-room:] if room else list(tokenizer.encode(source)) + sep
               for source in sources]
    rows = max(1, min(cfg.eval_batch_size, 64) // settings.num_beams)  # rows x beams share a batch
    found = search(model, prompts, settings, batch_size=rows)
    return np.asarray([tokenizer.decode(ids).strip() for ids in found], dtype=object)


@shapes.register("generation", capabilities=("generated",),
                 description="Source text -> target text, decoded greedily, scored by BLEU and ROUGE.")
@dataclass(frozen=True)
class Generation(Shape):
    """The target text of each example, generated after its source (decoding settings: the
    config's `num_beams`, `length_penalty`, `no_repeat_ngram_size`); at most `max_new_tokens`
    tokens unless the config's `max_new_tokens` says otherwise."""

    max_new_tokens: int = 128

    name: ClassVar[str] = "generation"
    loss: ClassVar[str] = "target_nll"
    default_metrics: ClassVar[tuple[str, ...]] = ("bleu", "rouge1", "rouge2", "rougeL", "chrf", "rougeLsum")
    default_metric: ClassVar[str | None] = "bleu"
    # the classification-only options: the language model itself predicts the target's tokens
    unused_options: ClassVar[Mapping[str, str]] = {
        "pooling": "it pools hidden states for a classification head, and the language model itself "
                   "predicts the target's tokens",
        "head_dropout": "it is the dropout before a classification head, and the language model itself "
                        "predicts the target's tokens",
        "label_smoothing": "it smooths class labels; the loss is the target tokens' negative "
                           "log-likelihood (target_nll)",
        "length_normalize": "it ranks the choices of a zero-shot task, and a generation task decodes "
                            "its target instead",
    }

    def check_options(self, task: Any, cfg: Any) -> None:
        super().check_options(task, cfg)
        if "loss" in cfg.given and cfg.loss not in (None, self.loss):
            raise ConfigError(f"loss={cfg.loss!r} is not used by {task.name}, a {self.name} task: it trains "
                              f"on the target's tokens with loss={self.loss!r} (the default); remove loss")

    def check(self, task: Any) -> None:
        if task.labels or len(task.inputs) != 1:
            raise RegistryError(f"task {task.name} is a {self.name} task: it reads one source text "
                                f"column (inputs=('source',)) and one target column (target='target'), "
                                f"and has no labels (a classification head needs a classification task)")
        unusable = [m for m in task.metrics if m not in SCORES]
        if unusable or (task.metric or "bleu") not in _MODULES:
            raise RegistryError(f"task {task.name} is a {self.name} task, scored on generated texts: it cannot "
                                f"report {', '.join(unusable) or task.metric}; its scores are {', '.join(SCORES)} "
                                f"(modules {' and '.join(_MODULES)})")

    def label(self, task: Any, value: Any, where: str) -> str:
        if value is None or not str(value).strip():
            raise DataError(f"{where}: empty target text; every {task.name} example needs a target "
                            f"(remove the example)")
        return str(value)

    def label_array(self, labels: Sequence[Any]) -> np.ndarray:
        return np.asarray(list(labels), dtype=object)

    def examples(self, task: Any, split: str, source: str, text_a: list[str], text_b: list[str] | None,
                 labels: list[Any]) -> Examples:
        empty = next((i for i, text in enumerate(text_a) if not str(text).strip()), None)
        if empty is not None:
            raise DataError(f"{source}, example {empty}: empty source text; every {task.name} example needs "
                            f"one (remove the example)")
        # the targets are texts too: a tokenizer fitted on the examples must know their symbols
        return Examples(task, split, source, text_a, [str(t) for t in labels], self.label_array(labels))

    def head(self, task: Any, backbone: Any, pooling: str, dropout: float,
             examples: Sequence[Examples] = ()) -> tuple[Any, Encoder]:
        from lmkit.evaluation.heads import NextTokenLogProbs

        return build_head(NextTokenLogProbs(backbone), 1), encode_fitting

    def outputs(self, model: Any, tokenizer: Any, examples: Examples, encode: Encoder, cfg: Any) -> np.ndarray:
        return self.generate(model.backbone, tokenizer, examples.text_a, cfg)

    def generate(self, model: Any, tokenizer: Any, sources: Sequence[str], cfg: Any) -> np.ndarray:
        """The language model's outputs for `sources` (`decode`, this task's `max_new_tokens`
        unless `cfg` sets it)."""
        return decode(model, tokenizer, sources, cfg, self.max_new_tokens)

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
                          .items() if isinstance(v, (int, float))})  # the signatures: `signatures`
        return {**{k: found[k] for k in task.metrics if k in found}, **found}

    def resampler(self, predictions: np.ndarray, labels: np.ndarray,
                  metrics: Sequence[str]) -> Callable[[np.ndarray], Mapping[str, np.ndarray]] | None:
        """Every score of `score` per resample, from each sentence's statistics (BLEU's and chrF's
        n-gram counts, ROUGE's F-measures) computed once by the shipped modules."""
        from lmkit.evaluation.metrics import metric_module

        if not set(metrics) <= set(SCORES) | set(_LENGTHS):
            return None
        texts, references = [str(p) for p in predictions], [str(y) for y in labels]
        parts = [metric_module(module).resampler(texts, references) for module in _MODULES]

        def scores(rows: np.ndarray) -> dict[str, np.ndarray]:
            found = {k: v for part in parts for k, v in part(rows).items()}
            return {m: found[m] for m in metrics}

        return scores

    def signatures(self) -> dict[str, str]:
        """The sacreBLEU signatures of the BLEU and chrF scores (one reference per source)."""
        from lmkit.evaluation.metrics import load_metric

        found = load_metric("bleu").compute(predictions=["a"], references=[["a"]])
        return {"bleu": found["signature"], "chrf": found["chrf_signature"]}

    def label_text(self, task: Any, values: np.ndarray) -> list[str]:
        return [" ".join(str(v).split()) for v in values]  # one line, no tabs: a cell of predictions.tsv

    def zeroshot(self, run: Any, examples: Examples, cfg: Any, name: str, shots: Examples | None) -> Any:
        from lmkit.evaluation.result import EvalResult

        if cfg.shots:
            raise ConfigError(f"shots={cfg.shots}: zero-shot {examples.task.name} decodes each source alone; "
                              f"few-shot prompts are for ranked choices. Use shots=0")
        started = time.perf_counter()
        outputs = self.generate(run.model, run.tokenizer, examples.text_a, cfg)
        training = {"method": "zeroshot", "seconds": time.perf_counter() - started}
        return EvalResult.build(examples.task, examples.split, name, outputs, examples.labels, examples,
                                config=cfg.to_dict(), training=training, model=run.model, tokenizer=run.tokenizer)
