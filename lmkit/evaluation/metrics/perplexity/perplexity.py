"""Perplexity of a language model over documents, per token, word and byte (lmkit's offline copy
of lm-evaluation-harness's ``word_perplexity``, ``byte_perplexity`` and ``bits_per_byte``)."""

import math

import datasets
import evaluate

_DESCRIPTION = """Corpus perplexities from each document's summed negative log-likelihood (nats):
word_perplexity = exp(sum nll / sum words), byte_perplexity = exp(sum nll / sum UTF-8 bytes),
bits_per_byte = sum nll / sum bytes / ln 2 (the harness's weighted definitions: documents count
by their size), token_perplexity = exp(sum nll / sum predicted tokens)."""
_KWARGS = """
Args:
    predictions (list of float): each document's summed negative log-likelihood in nats.
    references (list of [tokens, words, bytes]): each document's predicted tokens, words and bytes.
Returns:
    word_perplexity, byte_perplexity, bits_per_byte, token_perplexity (floats)
Examples:
    >>> metric = evaluate.load("lmkit/evaluation/metrics/perplexity")
    >>> metric.compute(predictions=[4.0], references=[[3, 2, 10]])["word_perplexity"]  # e ** (4 / 2)
    7.38905609893065
"""
_CITATION = "Gao et al., A framework for few-shot language model evaluation (lm-evaluation-harness), 2021."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Sequence(datasets.Value("int64"))}),
        )

    def _compute(self, predictions, references):
        nll = sum(predictions)
        tokens, words, size = (sum(r[i] for r in references) for i in range(3))
        return {"word_perplexity": math.exp(nll / max(words, 1)),
                "byte_perplexity": math.exp(nll / max(size, 1)),
                "bits_per_byte": nll / max(size, 1) / math.log(2),
                "token_perplexity": math.exp(nll / max(tokens, 1))}
