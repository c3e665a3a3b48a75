"""The shipped `super_glue` metric equals scikit-learn, the official formulas, and ReCoRD cases worked by hand."""

from __future__ import annotations

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


# ReCoRD's official evaluation (the SQuAD v1.1 script): normalise a text (lower-case, delete
# punctuation characters, delete the words a/an/the, collapse white space), split it into
# tokens, F1 = 2PR / (P + R) with P = common / prediction tokens, R = common / answer tokens
# (common: the multiset intersection), exact match = equal normalised texts; each query takes the
# maximum over its gold answers, and the scores are means over queries. Worked by hand:
RECORD_CASES = [
    # "the eiffel tower!" -> [eiffel, tower] equals answer 1: F1 1, EM 1
    ("the Eiffel Tower!", ["Eiffel tower", "Paris"], 1.0, 1.0),
    # [tower, of, paris] vs [eiffel, tower]: 1 common, P 1/3, R 1/2, F1 = (2/6) / (5/6) = 0.4;
    # vs [paris]: 1 common, P 1/3, R 1, F1 = (2/3) / (4/3) = 0.5; the max is 0.5
    ("Tower of Paris", ["the Eiffel Tower", "Paris"], 0.5, 0.0),
    # "a u.s. senator" -> [us, senator] vs [us, senate]: 1 common, P = R = 1/2, F1 0.5
    ("A U.S. senator", ["US Senate"], 0.5, 0.0),
    # [paris x3] vs [paris x2] ("Paris, Paris"): 2 common, P 2/3, R 1, F1 = (4/3) / (5/3) = 0.8
    ("paris paris paris", ["Paris, Paris"], 0.8, 0.0),
    # the hyphen is deleted, not a space: [jeanpaul, sartre] vs [jean, paul, sartre]: 1 common,
    # P 1/2, R 1/3, F1 = (2/6) / (5/6) = 0.4
    ("Jean-Paul Sartre", ["jean paul sartre"], 0.4, 0.0),
    # articles go as whole words only: "anthem" keeps its "an"; [anthem] = [anthem]
    ("Anthem", ["the anthem"], 1.0, 1.0),
    # nothing in common: 0
    ("London", ["Paris"], 0.0, 0.0),
]


@pytest.mark.parametrize("prediction,answers,f1,em", RECORD_CASES)
def test_record_scores_one_query_as_the_official_script(metric, prediction, answers, f1, em) -> None:
    scores = metric("record").compute(predictions=[prediction], references=[answers])
    assert scores == pytest.approx({"f1": f1, "exact_match": em, "combined_score": (f1 + em) / 2})


def test_record_averages_the_queries(metric) -> None:
    pred, gold, _, _ = zip(*RECORD_CASES)
    # F1: (1 + 0.5 + 0.5 + 0.8 + 0.4 + 1 + 0) / 7 = 4.2 / 7 = 0.6; EM: 2 / 7
    scores = metric("record").compute(predictions=list(pred), references=list(gold))
    assert scores == pytest.approx({"f1": 0.6, "exact_match": 2 / 7, "combined_score": (0.6 + 2 / 7) / 2})


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
