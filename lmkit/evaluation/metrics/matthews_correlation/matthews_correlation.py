"""Matthews correlation coefficient, the official CoLA metric (lmkit's offline copy)."""

import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef

_DESCRIPTION = ("The Matthews correlation coefficient (MCC) between predicted and reference labels: "
                "+1 perfect, 0 no better than chance, -1 inverse; 0.0 when either side is constant.")
_KWARGS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): reference labels.
    sample_weight (list of float): optional weight per example.
Returns:
    matthews_correlation (float)
Examples:
    >>> metric = evaluate.load("lmkit/evaluation/metrics/matthews_correlation")
    >>> metric.compute(predictions=[1, 0, 1, 1], references=[1, 0, 0, 1])
    {'matthews_correlation': 0.5773502691896258}
"""
_CITATION = "Matthews, B. W. (1975). Biochimica et Biophysica Acta 405(2), 442-451."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, sample_weight=None):
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions,
                                                                sample_weight=sample_weight))}
