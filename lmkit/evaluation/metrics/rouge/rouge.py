"""ROUGE computed by Google's rouge-score (lmkit's offline copy)."""

import datasets
import evaluate
import numpy as np
from rouge_score import rouge_scorer

_DESCRIPTION = ("ROUGE-N / ROUGE-L F-measures from the rouge-score package, averaged over examples "
                "(or one list per type with use_aggregator=False).")
_KWARGS = """
Args:
    predictions (list of str): system outputs.
    references (list of str): one reference per prediction.
    rouge_types (list of str): default ['rouge1', 'rouge2', 'rougeL', 'rougeLsum'].
    use_stemmer (bool): Porter stemming before matching. Default False.
    use_aggregator (bool): average over examples (default) or return per-example lists.
Returns:
    one F-measure (in [0, 1]) per ROUGE type
Examples:
    >>> metric = evaluate.load("lmkit/evaluation/metrics/rouge")
    >>> metric.compute(predictions=["the cat sat"], references=["the cat sat down"])["rouge1"]
    0.8571428571428571
"""
_CITATION = "Lin, ROUGE: A Package for Automatic Evaluation of Summaries, ACL Workshop 2004."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, rouge_types=None, use_stemmer=False,
                 use_aggregator=True):
        per_type = _per_example(predictions, references, rouge_types, use_stemmer)
        if not use_aggregator:
            return per_type
        return {t: sum(v) / len(v) if v else 0.0 for t, v in per_type.items()}


def resampler(predictions, references, rouge_types=None, use_stemmer=False):
    """``scores(rows)``: each ROUGE type's score of each resample of the examples (rows of
    example indices, ``(B, n)``), as ``(B,)``. The module's score is the mean of the examples'
    F-measures, so each example is scored once and a resample's score is the mean of its rows'
    (equal to `compute` on the resampled examples, to rounding).

    >>> scores = resampler(["the cat sat", "a dog"], ["the cat sat down", "a dog"])
    >>> scores(np.array([[0, 0], [1, 1]]))["rouge1"].round(4)
    array([0.8571, 1.    ])
    """
    values = {t: np.asarray(v, np.float64)
              for t, v in _per_example(predictions, references, rouge_types, use_stemmer).items()}

    def scores(rows):
        return {t: v[np.asarray(rows)].mean(axis=1) for t, v in values.items()}

    return scores


def _per_example(predictions, references, rouge_types=None, use_stemmer=False):
    """Each ROUGE type's F-measure of each example."""
    types = list(rouge_types or ["rouge1", "rouge2", "rougeL", "rougeLsum"])
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer)
    per_type = {t: [] for t in types}
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)
        for t in types:
            per_type[t].append(scores[t].fmeasure)
    return per_type
