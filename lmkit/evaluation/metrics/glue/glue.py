"""The GLUE benchmark metric: each task's official scores plus their mean (lmkit's offline copy)."""

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

_DESCRIPTION = """The official GLUE metric of one task, chosen by the configuration name:
cola: matthews_correlation; stsb: pearson and spearmanr; mrpc, qqp: f1 and accuracy;
sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli, ax: accuracy.
Tasks with two scores also report combined_score, their mean (the number on the GLUE board)."""
_KWARGS = """
Args:
    predictions: predicted labels (int), or scores (float) for stsb.
    references: reference labels (int), or scores (float) for stsb.
Returns:
    the task's scores, each a float in the scale of scikit-learn / scipy (accuracy in [0, 1]).
Examples:
    >>> metric = evaluate.load("lmkit/evaluation/metrics/glue", "mrpc")
    >>> metric.compute(predictions=[0, 1, 1, 1], references=[0, 1, 0, 1])
    {'f1': 0.8, 'accuracy': 0.75, 'combined_score': 0.775}
"""
_CITATION = "Wang et al., GLUE: A Multi-Task Benchmark and Analysis Platform for NLU, ICLR 2019."

TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "mnli_matched", "mnli_mismatched",
         "qnli", "rte", "wnli", "ax")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in TASKS:
            raise KeyError(f"unknown GLUE task '{self.config_name}'; choose one of: {', '.join(TASKS)}")
        kind = "float64" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value(kind),
                                        "references": datasets.Value(kind)}),
        )

    def _compute(self, predictions, references):
        task = self.config_name
        if task == "cola":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        if task == "stsb":
            scores = {"pearson": float(pearsonr(references, predictions)[0]),
                      "spearmanr": float(spearmanr(references, predictions)[0])}
        elif task in ("mrpc", "qqp"):
            scores = {"f1": float(f1_score(references, predictions, zero_division=0)),
                      "accuracy": float(accuracy_score(references, predictions))}
        else:
            return {"accuracy": float(accuracy_score(references, predictions))}
        return {**scores, "combined_score": sum(scores.values()) / len(scores)}
