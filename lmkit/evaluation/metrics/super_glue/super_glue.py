"""The SuperGLUE benchmark metric: each task's official scores (lmkit's offline copy)."""

import re
import string
from collections import Counter

import datasets
import evaluate
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

_DESCRIPTION = """The official SuperGLUE metric of one task, chosen by the configuration name:
boolq, copa, rte, wic, wsc: accuracy; cb: accuracy and macro-F1 over the three classes;
multirc: exact_match (every answer option of a question right) and f1_a (binary F1 over all
answer options); record: f1 and exact_match, each the maximum over a query's gold answers after
the official normalisation (lower case, no punctuation, no articles a/an/the, single spaces);
axb: matthews_correlation; axg: gender_parity (fraction of sentence pairs whose two predictions
agree) and accuracy. Tasks in the SuperGLUE average with two scores also report combined_score,
their mean (the number the leaderboard averages). Scores are fractions in [0, 1]."""
_KWARGS = """
Args:
    predictions: predicted labels (int); for record, the predicted entity strings.
    references: reference labels (int); for record, each query's list of gold answer strings.
    groups: multirc: the question id of each answer option; axg: the pair id of each sentence.
Returns:
    the task's scores.
Examples:
    >>> metric = evaluate.load("lmkit/evaluation/metrics/super_glue", "multirc")
    >>> metric.compute(predictions=[1, 0, 1], references=[1, 0, 0], groups=[0, 0, 1])
    {'exact_match': 0.5, 'f1_a': 0.6666666666666666, 'combined_score': 0.5833333333333333}
    >>> evaluate.load("lmkit/evaluation/metrics/super_glue", "record").compute(
    ...     predictions=["the Eiffel Tower"], references=[["Eiffel Tower", "Paris"]])
    {'f1': 1.0, 'exact_match': 1.0, 'combined_score': 1.0}
"""
_CITATION = ("Wang et al., SuperGLUE: A Stickier Benchmark for General-Purpose Language "
             "Understanding Systems, NeurIPS 2019.")

TASKS = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc", "axb", "axg")
_GROUPED = ("multirc", "axg")


def normalize_answer(text):
    """The official ReCoRD / SQuAD normalisation."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(prediction, answer):
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def _grouped(values, groups):
    by_group = {}
    for value, group in zip(values, groups):
        by_group.setdefault(group, []).append(value)
    return list(by_group.values())


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class SuperGlue(evaluate.Metric):
    def _info(self):
        if self.config_name not in TASKS:
            raise KeyError(f"unknown SuperGLUE task '{self.config_name}'; choose one of: {', '.join(TASKS)}")
        if self.config_name == "record":
            features = {"predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string"))}
        else:
            features = {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION,
                                   inputs_description=_KWARGS, features=datasets.Features(features))

    def _compute(self, predictions, references, groups=None):
        task = self.config_name
        if task in _GROUPED:
            if groups is None or len(groups) != len(predictions):
                raise ValueError(f"super_glue/{task} needs groups=, one id per prediction "
                                 f"({len(predictions)}), got {None if groups is None else len(groups)}")
        elif groups is not None:
            raise ValueError(f"super_glue/{task} takes no groups")
        if task == "record":
            f1 = [max((_token_f1(p, a) for a in answers), default=0.0)
                  for p, answers in zip(predictions, references)]
            em = [max((float(normalize_answer(p) == normalize_answer(a)) for a in answers), default=0.0)
                  for p, answers in zip(predictions, references)]
            scores = {"f1": sum(f1) / len(f1), "exact_match": sum(em) / len(em)}
        elif task == "multirc":
            right = _grouped([p == r for p, r in zip(predictions, references)], groups)
            scores = {"exact_match": sum(all(q) for q in right) / len(right),
                      "f1_a": float(f1_score(references, predictions, zero_division=0))}
        elif task == "cb":
            scores = {"accuracy": float(accuracy_score(references, predictions)),
                      "f1": float(f1_score(references, predictions, average="macro", zero_division=0))}
        elif task == "axb":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        elif task == "axg":
            pairs = _grouped(predictions, groups)
            return {"gender_parity": sum(len(set(p)) == 1 for p in pairs) / len(pairs),
                    "accuracy": float(accuracy_score(references, predictions))}
        else:
            return {"accuracy": float(accuracy_score(references, predictions))}
        return {**scores, "combined_score": sum(scores.values()) / len(scores)}
