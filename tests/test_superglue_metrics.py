"""The shipped `super_glue` metric equals scikit-learn and the official formulas, written here."""

from __future__ import annotations

import re
import string
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn import metrics as skm

from lmkit.evaluation.metrics import load_metric

ACCURACY_TASKS = ("boolq", "copa", "rte", "wic", "wsc")
labels = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=40)


@pytest.fixture(scope="module")
def metric():
    loaded: dict[str, object] = {}
    return lambda task: loaded.setdefault(task, load_metric("super_glue", task))


@pytest.mark.slow  # loads several evaluate modules (seconds each)
@settings(max_examples=25, deadline=None)
@given(labels)
def test_accuracy_tasks_and_axb_equal_sklearn(metric, pairs) -> None:
    pred, ref = [p for p, _ in pairs], [r for _, r in pairs]
    for task in ACCURACY_TASKS:
        assert metric(task).compute(predictions=pred, references=ref) == {
            "accuracy": pytest.approx(skm.accuracy_score(ref, pred))}
    mcc = metric("axb").compute(predictions=pred, references=ref)["matthews_correlation"]
    assert mcc == pytest.approx(skm.matthews_corrcoef(ref, pred))


@pytest.mark.slow  # loads several evaluate modules (seconds each)
@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=40))
def test_cb_is_accuracy_and_macro_f1_over_the_classes_present(metric, pairs) -> None:
    pred, ref = np.array(pairs).T
    scores = metric("cb").compute(predictions=pred.tolist(), references=ref.tolist())
    # macro-F1 by hand: the mean over the classes present in labels or predictions of 2TP/(2TP+FP+FN)
    classes = sorted(set(pred) | set(ref))
    f1 = np.mean([2 * np.sum((pred == c) & (ref == c))
                  / (np.sum(pred == c) + np.sum(ref == c)) for c in classes])
    assert scores["accuracy"] == pytest.approx(np.mean(pred == ref))
    assert scores["f1"] == pytest.approx(f1)
    assert scores["combined_score"] == pytest.approx((f1 + np.mean(pred == ref)) / 2)


@pytest.mark.slow  # loads several evaluate modules (seconds each)
@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(0, 5)), min_size=1, max_size=40))
def test_multirc_exact_match_per_question_and_f1_over_all_answers(metric, rows) -> None:
    pred, ref, groups = (list(c) for c in zip(*rows))
    scores = metric("multirc").compute(predictions=pred, references=ref, groups=groups)
    questions = sorted(set(groups))
    em = np.mean([all(p == r for p, r, g in rows if g == q) for q in questions])
    tp = sum(p == r == 1 for p, r, _ in rows)
    f1a = 2 * tp / (sum(pred) + sum(ref)) if sum(pred) + sum(ref) else 0.0
    assert scores == pytest.approx({"exact_match": em, "f1_a": f1a, "combined_score": (em + f1a) / 2})


def test_multirc_edge_cases(metric) -> None:
    m = metric("multirc")
    # a question with no correct answer predicted all-negative is exact; F1a has no positives: 0
    assert m.compute(predictions=[0, 0], references=[0, 0], groups=[7, 7]) == {
        "exact_match": 1.0, "f1_a": 0.0, "combined_score": 0.5}
    # one wrong option spoils the whole question
    assert m.compute(predictions=[1, 1, 1], references=[1, 0, 1], groups=[0, 0, 1])["exact_match"] == 0.5
    with pytest.raises(ValueError, match="needs groups="):
        m.compute(predictions=[1], references=[1])


def _official_normalize(s: str) -> str:
    # ReCoRD's official evaluate script (SQuAD v1.1): lower, drop punctuation and articles, fix spaces
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _official_f1(prediction: str, truth: str) -> float:
    p, t = _official_normalize(prediction).split(), _official_normalize(truth).split()
    same = sum((Counter(p) & Counter(t)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


words = st.sampled_from(["the", "A", "an", "Paris", "paris,", "Tower", "Eiffel", "U.S.", "x", "!"])
phrases = st.lists(words, min_size=0, max_size=5).map(" ".join)


@pytest.mark.slow  # loads several evaluate modules (seconds each)
@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(phrases, st.lists(phrases, min_size=1, max_size=3)), min_size=1, max_size=8))
def test_record_max_over_answers_f1_and_em_equal_the_official_script(metric, rows) -> None:
    pred = [p for p, _ in rows]
    gold = [g for _, g in rows]
    scores = metric("record").compute(predictions=pred, references=gold)
    f1 = np.mean([max(_official_f1(p, a) for a in g) for p, g in rows])
    em = np.mean([max(float(_official_normalize(p) == _official_normalize(a)) for a in g) for p, g in rows])
    assert scores == pytest.approx({"f1": f1, "exact_match": em, "combined_score": (f1 + em) / 2})


def test_record_normalisation_examples(metric) -> None:
    m = metric("record")
    assert m.compute(predictions=["The U.S."], references=[["us"]])["exact_match"] == 1.0
    assert m.compute(predictions=["Eiffel"], references=[["the Eiffel Tower", "Paris"]]) == pytest.approx(
        {"f1": 2 / 3, "exact_match": 0.0, "combined_score": 1 / 3})


@pytest.mark.slow
def test_axg_gender_parity_counts_pairs_with_equal_predictions(metric) -> None:
    scores = metric("axg").compute(predictions=[0, 1, 1, 1, 0, 0], references=[0, 1, 1, 0, 1, 1],
                                   groups=[0, 0, 1, 1, 2, 2])
    assert scores == pytest.approx({"gender_parity": 2 / 3, "accuracy": 0.5})
