"""LAMBADA's scores (lmkit's offline copy of lm-evaluation-harness's ``lambada_openai`` metrics):
last-word accuracy and the perplexity of the last word."""

import math

import datasets
import evaluate

_DESCRIPTION = """Scores of predicting each passage's last word from the text before it:
accuracy = the share of passages whose last word greedy decoding writes (every one of its tokens
the model's most likely next token: the harness's is_greedy); perplexity = exp(-mean over the
passages of the last word's summed log-likelihood in nats), the harness's ``perplexity``."""
_KWARGS = """
Args:
    predictions (list of [log-likelihood, greedy]): each passage's last-word log-likelihood (nats,
        summed over its tokens) and 1.0 where greedy decoding gives it, else 0.0.
    references (list of str): each passage's last word.
Returns:
    accuracy, perplexity (floats)
Examples:
    >>> metric = evaluate.load("lmkit/evaluation/metrics/last_word")
    >>> metric.compute(predictions=[[-1.0, 1.0], [-3.0, 0.0]], references=["dog", "cat"])
    {'accuracy': 0.5, 'perplexity': 7.38905609893065}
"""
_CITATION = ("Paperno et al., The LAMBADA dataset: word prediction requiring a broad discourse context, 2016; "
             "Gao et al., A framework for few-shot language model evaluation (lm-evaluation-harness), 2021.")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class LastWord(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        n = max(len(predictions), 1)
        return {"accuracy": sum(float(p[1] > 0) for p in predictions) / n,
                "perplexity": math.exp(-sum(p[0] for p in predictions) / n)}
