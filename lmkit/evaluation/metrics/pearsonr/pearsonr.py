"""Pearson correlation coefficient, an official STS-B metric (lmkit's offline copy)."""

import datasets
import evaluate
from scipy.stats import pearsonr

_DESCRIPTION = "Pearson's r: the linear correlation of predictions and references, in [-1, 1]."
_KWARGS = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): reference scores.
    return_pvalue (bool): also return the two-sided p-value. Default False.
Returns:
    pearsonr (float; nan when either side is constant), and p-value when asked for.
Examples:
    >>> metric = evaluate.load("lmkit/evaluation/metrics/pearsonr")
    >>> metric.compute(predictions=[1.0, 2.0, 3.0], references=[1.0, 2.0, 2.5])["pearsonr"]
    0.9819805060619655
"""
_CITATION = "Virtanen et al., SciPy 1.0: Fundamental Algorithms for Scientific Computing in Python, 2020."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Pearsonr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references, return_pvalue=False):
        result = pearsonr(references, predictions)
        out = {"pearsonr": float(result[0])}
        if return_pvalue:
            out["p-value"] = float(result[1])
        return out
