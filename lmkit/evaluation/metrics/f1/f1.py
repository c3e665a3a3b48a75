"""F1: the harmonic mean of precision and recall (lmkit's offline copy)."""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "F1 = 2 * (precision * recall) / (precision + recall), from scikit-learn's f1_score."
_KWARGS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): reference labels.
    labels (list of int): labels to include when average is not 'binary'.
    pos_label (int): the positive class for average='binary'. Default 1.
    average (str): 'binary' (default), 'micro', 'macro', 'weighted', or None (one score per class).
    sample_weight (list of float): optional weight per example.
Returns:
    f1 (float, or list of float when average=None); 0.0 when there are no positive predictions
    or references (scikit-learn's zero_division=0).
Examples:
    >>> metric = evaluate.load("lmkit/evaluation/metrics/f1")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'f1': 0.6666666666666666}
"""
_CITATION = "Pedregosa et al., Scikit-learn: Machine Learning in Python, JMLR 12, 2011."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary",
                 sample_weight=None):
        score = f1_score(references, predictions, labels=labels, pos_label=pos_label,
                         average=average, sample_weight=sample_weight, zero_division=0)
        return {"f1": score.tolist() if getattr(score, "size", 1) > 1 else float(score)}
