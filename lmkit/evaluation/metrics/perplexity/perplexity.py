"""Perplexity from a language model's summed negative log-likelihoods, per token, word or byte."""

import math

import datasets
import evaluate

_DESCRIPTION = """Perplexity = exp(total negative log-likelihood / total units), where the unit is
stated: 'token' (the model's own tokens; not comparable across tokenizers), 'word' (whitespace
words) or 'byte' (UTF-8 bytes; comparable across every tokenizer). The inputs are per text: the
summed NLL in nats from the model's logits (lmkit.forward.text_nll computes them for
any lmkit model) and the number of units of that text."""
_KWARGS = """
Args:
    predictions (list of float): summed negative log-likelihood of each text, in nats.
    references (list of int): number of units (tokens, words or bytes) of each text.
    unit (str): 'token', 'word' or 'byte' -- what `references` counts. Default 'token'.
Returns:
    perplexity, nll_per_unit (nats), bits_per_unit, units (the total count) and unit
Examples:
    >>> metric = evaluate.load("lmkit/evaluation/metrics/perplexity")
    >>> metric.compute(predictions=[2.0, 4.0], references=[2, 4], unit="byte")["perplexity"]
    2.718281828459045
"""
_CITATION = "Jelinek et al., Perplexity -- a measure of the difficulty of speech recognition tasks, JASA 1977."

UNITS = ("token", "word", "byte")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, unit="token"):
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
        units = int(sum(references))
        if units <= 0:
            raise ValueError(f"perplexity needs at least one {unit}, got a total of {units}")
        nll = float(sum(predictions)) / units
        return {"perplexity": math.exp(nll), "nll_per_unit": nll, "bits_per_unit": nll / math.log(2),
                "units": units, "unit": unit}
