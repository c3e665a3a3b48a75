"""The shipped `evaluate` metric modules equal scikit-learn / scipy / sacrebleu / rouge-score."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from lmkit.errors import RegistryError
from lmkit.evaluation.metrics import METRICS, load_metric, metric_path

RNG = np.random.default_rng(0)
RANDOM_LABELS = [(RNG.integers(0, 2, 50), RNG.integers(0, 2, 50)) for _ in range(3)]
EDGE_LABELS = [
    (np.array([1]), np.array([1])),                      # one example
    (np.zeros(6, int), np.zeros(6, int)),                # one class only: MCC 0, F1 0 (no positives)
    (np.ones(5, int), np.zeros(5, int)),                 # all wrong
    (np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0])),    # perfectly inverted
]


def test_all_modules_ship_and_load_from_local_paths() -> None:
    # the modules a task names (glue, super_glue, accuracy) and those of generation (bleu, rouge)
    assert set(METRICS) == {"accuracy", "glue", "super_glue", "bleu", "rouge", "perplexity",
                            "last_word"}
    for name in METRICS:
        assert (metric_path(name) / f"{name}.py").is_file()
    with pytest.raises(RegistryError, match="unknown evaluation metric 'acuracy' \\(did you mean 'accuracy'"):
        metric_path("acuracy")


@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn, on the one-class edge case
@pytest.mark.parametrize("pred,ref", RANDOM_LABELS + EDGE_LABELS)
def test_classification_metrics_equal_sklearn(pred: np.ndarray, ref: np.ndarray) -> None:
    kw = {"predictions": pred.tolist(), "references": ref.tolist()}
    assert load_metric("accuracy").compute(**kw)["accuracy"] == pytest.approx(skm.accuracy_score(ref, pred))
    glue = load_metric("glue", "mrpc").compute(**kw)
    assert glue["f1"] == pytest.approx(skm.f1_score(ref, pred, zero_division=0))
    assert glue["accuracy"] == pytest.approx(skm.accuracy_score(ref, pred))
    assert glue["combined_score"] == pytest.approx((glue["f1"] + glue["accuracy"]) / 2)
    assert load_metric("glue", "cola").compute(**kw) == {
        "matthews_correlation": pytest.approx(skm.matthews_corrcoef(ref, pred))}


def test_multiclass_accuracy_and_its_weights() -> None:
    pred, ref = RNG.integers(0, 3, 40), RNG.integers(0, 3, 40)
    w = RNG.random(40)
    acc = load_metric("accuracy").compute(predictions=pred, references=ref, sample_weight=w)["accuracy"]
    assert acc == pytest.approx(skm.accuracy_score(ref, pred, sample_weight=w))
    assert load_metric("glue", "mnli_matched").compute(predictions=pred, references=ref) == {
        "accuracy": pytest.approx(skm.accuracy_score(ref, pred))}


@pytest.mark.parametrize("seed", [1, 2])
def test_correlations_equal_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0, 5, 30).round(1)  # rounded: ties, as in STS-B
    pred = ref + rng.normal(0, 1, 30)
    kw = {"predictions": pred.tolist(), "references": ref.tolist()}
    glue = load_metric("glue", "stsb").compute(**kw)
    assert glue["pearson"] == pytest.approx(stats.pearsonr(ref, pred)[0])
    assert glue["spearmanr"] == pytest.approx(stats.spearmanr(ref, pred)[0])
    assert glue["combined_score"] == pytest.approx((glue["pearson"] + glue["spearmanr"]) / 2)


def test_correlation_edge_cases() -> None:
    stsb = load_metric("glue", "stsb")
    perfect = stsb.compute(predictions=[1.0, 5.0, 9.0], references=[3.0, 2.0, 1.0])
    assert perfect["spearmanr"] == pytest.approx(-1.0)
    with pytest.warns(stats.ConstantInputWarning):
        constant = stsb.compute(predictions=[2.0, 2.0, 2.0], references=[1.0, 2.0, 3.0])
    assert math.isnan(constant["pearson"])  # as scipy: undefined, not silently 0


def test_bleu_equals_sacrebleu() -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    preds = ["the cat is on the mat", "a quick brown fox jumps", "hello there general kenobi"]
    refs = [["the cat sat on the mat", "there is a cat on the mat"],
            ["the quick brown fox jumped", "a fast brown fox leaps"],
            ["hello there", "general kenobi, hello there"]]
    out = load_metric("bleu").compute(predictions=preds, references=refs)
    expected = sacrebleu.corpus_bleu(preds, [list(s) for s in zip(*refs)])
    assert out["bleu"] == pytest.approx(expected.score)
    assert out["precisions"] == pytest.approx(expected.precisions)
    assert out["brevity_penalty"] == pytest.approx(expected.bp)
    assert out["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [list(s) for s in zip(*refs)]).score)
    # the signature sacreBLEU's own scorer reports for the same settings (2 references, 13a, exp)
    bleu = sacrebleu.metrics.BLEU()
    bleu.corpus_score(preds, [list(s) for s in zip(*refs)])
    assert out["signature"] == str(bleu.get_signature()) and out["signature"].startswith("nrefs:2|case:mixed|")
    assert "|tok:13a|smooth:exp|version:" in out["signature"] and out["chrf_signature"].startswith("nrefs:2|")
    assert load_metric("bleu").compute(predictions=["nothing alike"], references=[["totally different words"]])["bleu"] == 0.0


def test_rouge_equals_rouge_score() -> None:
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    # ROUGE-Lsum reads sentences from line breaks: the last pair has two
    preds = ["the cat was found under the bed", "police arrested a man", "", "a man ran.\nthe dog sat."]
    refs = ["the cat was under the bed", "a man was arrested by police on friday", "empty prediction",
            "the dog sat.\na man ran away."]
    out = load_metric("rouge").compute(predictions=preds, references=refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        expected = np.mean([scorer.score(r, p)[kind].fmeasure for p, r in zip(preds, refs)])
        assert out[kind] == pytest.approx(expected)
    per_example = load_metric("rouge").compute(predictions=preds, references=refs, use_aggregator=False)
    assert per_example["rouge1"][2] == 0.0 and len(per_example["rouge1"]) == 4
    assert per_example["rougeLsum"][3] > per_example["rougeL"][3]  # summary-level LCS: sentence order ignored


@pytest.mark.slow
def test_text_nll_from_model_logits_equals_scipy_log_softmax() -> None:
    import lmkit  # noqa: F401  (JAX backend)
    from scipy.special import log_softmax

    from lmkit.forward import text_nll
    from lmkit.registry import architectures, tokenizers

    texts = ["to be or not to be", "that is the question", "a"]
    tok = tokenizers.get("char").fit(texts)
    model = architectures.get("lstm")(tok.vocab_size, embed_dim=8, units=8, layers=1)
    nll, units = text_nll(model, tok, texts, unit="token", batch_size=2)
    expected_nll, expected_units = [], []
    for text in texts:
        ids = np.asarray(tok.encode(text))[None]
        logp = log_softmax(np.asarray(model(ids), np.float64)[0, :-1], axis=-1)
        expected_nll.append(-logp[np.arange(ids.shape[1] - 1), ids[0, 1:]].sum())
        expected_units.append(ids.shape[1] - 1)
    assert nll == pytest.approx(expected_nll, rel=1e-5) and units == expected_units
    _, byte_units = text_nll(model, tok, texts, unit="byte")
    assert byte_units == [len(t.encode()) for t in texts]


# -- each task names the module that scores it ---------------------------------------------------
def test_stsb_scores_through_its_declared_module_equal_scipy() -> None:
    from lmkit.evaluation.result import EvalResult
    from lmkit.evaluation.tasks import get_task

    task = get_task("glue/stsb")
    rng = np.random.default_rng(3)
    ref = rng.uniform(0, 5, 40).round(1)
    pred = ref + rng.normal(0, 1.2, 40)
    module, config = task.metric_for(task.eval_split)
    declared = load_metric(module, config).compute(predictions=pred.tolist(), references=ref.tolist())
    pearson, spearman = stats.pearsonr(ref, pred)[0], stats.spearmanr(ref, pred)[0]
    assert declared["pearson"] == pytest.approx(pearson) and declared["spearmanr"] == pytest.approx(spearman)
    assert task.metrics == ("pearson", "spearmanr")
    result = EvalResult.build(task, "dev", "m", pred[:, None], ref.astype(np.float32))
    assert result.main_score == pytest.approx((pearson + spearman) / 2, rel=1e-5)  # the GLUE board's STS-B score


def _task_names() -> list[str]:
    from lmkit.registry import tasks

    # SuperGLUE's tasks share one module (seconds to load per configuration): in the slow run
    return [pytest.param(name, marks=pytest.mark.slow) if name.startswith("superglue/") else name
            for name in sorted(tasks)]


@pytest.mark.parametrize("name", _task_names())
def test_every_task_module_reports_the_scores_the_task_names(name: str) -> None:
    from lmkit.evaluation.tasks import get_task

    from lmkit.evaluation.loaders import Examples
    from lmkit.evaluation.shapes import LastWord

    task = get_task(name)
    kind = task.shape.label_array(["1"]).dtype  # what the shape's labels are: ids, scores or texts
    values = (np.array(["a cat sat", "a dog", "the cat", "two dogs ran"], object) if kind == object
              else np.array([0, 1, 1, 0]) if kind.kind in "iu" else np.array([0.5, 2.0, 4.5, 3.0]))
    # grouped answers (MultiRC), candidate strings (ReCoRD): `Task.metric_inputs` reads the examples
    examples = Examples(task, task.eval_split, "test", ["a"] * 4, None, values[::-1],
                        [{"entities": ["x", "y"], "answers": ["x"]}] * 4, np.array([0, 0, 1, 1]))
    # a passage's prediction is not a word but the word's log-likelihood and whether it is greedy's
    predictions = np.array([[-1.0, 1.0], [-3.0, 0.0]] * 2) if isinstance(task.shape, LastWord) else values
    for split in {task.metric_for(split): split for split in task.splits}.values():
        scores = task.shape.score(task, split, predictions, values[::-1], examples)
        assert list(scores)[: len(task.metrics)] == list(task.metrics), (name, split)


def test_mnli_mismatched_dev_is_scored_as_mismatched() -> None:
    from lmkit.evaluation.tasks import get_task

    mnli = get_task("glue/mnli")
    assert [mnli.metric_for(s) for s in mnli.splits] == [
        ("glue", "mnli_matched"), ("glue", "mnli_matched"), ("glue", "mnli_mismatched")]


def test_a_plugin_task_reading_tsv_files_is_scored_by_its_own_metric() -> None:
    from lmkit.evaluation.result import EvalResult
    from lmkit.evaluation.sources import TsvSource
    from lmkit.evaluation.tasks import Task

    paws = Task(name="paws", description="PAWS paraphrases", labels=("0", "1"), metrics=("f1", "accuracy"),
                metric="glue", metric_config="mrpc", inputs=("sentence1", "sentence2"),
                source=TsvSource("PAWS", {"dev": "dev.tsv"}, ("sentence1", "sentence2"), "label"))
    labels, predictions = np.array([1, 0, 1, 1, 0]), np.array([1, 1, 1, 0, 0])
    result = EvalResult.build(paws, "dev", "m", np.eye(2)[predictions], labels)
    assert result.metrics == {"f1": pytest.approx(skm.f1_score(labels, predictions)),
                              "accuracy": pytest.approx(skm.accuracy_score(labels, predictions)),
                              "combined_score": pytest.approx((skm.f1_score(labels, predictions)
                                                               + skm.accuracy_score(labels, predictions)) / 2)}


def test_a_task_naming_a_missing_module_fails_when_it_is_made() -> None:
    from lmkit.evaluation.shapes import Regression
    from lmkit.evaluation.sources import TableSource
    from lmkit.evaluation.tasks import Task

    with pytest.raises(RegistryError, match=r"task sick: 'acuracy' is not a metric module \(did you mean 'accuracy'"):
        Task(name="sick", description="SICK relatedness", metrics=("acuracy",), splits=("dev",),
             eval_split="dev", source=TableSource(), shape=Regression(), inputs=("a", "b"))


# -- preloading: the import on a background thread, its errors where the metric is used -------
def test_a_preloaded_metric_is_imported_on_its_own_thread_and_then_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import threading

    from lmkit.evaluation import metrics

    threads: list[str] = []
    real = metrics._import

    def spy(key: str) -> Any:
        threads.append(threading.current_thread().name)
        return real(key)

    monkeypatch.setattr(metrics, "_import", spy)
    monkeypatch.delitem(sys.modules, "lmkit.evaluation.metrics.glue.glue", raising=False)
    metrics.preload("glue")
    found = load_metric("glue", "mrpc").compute(predictions=[1, 0], references=[1, 1])
    assert threads[0] == "lmkit-preload-glue" and threads[-1] == threading.current_thread().name
    assert not metrics._PRELOADS  # waited for, then forgotten
    assert found["accuracy"] == 0.5
    with pytest.raises(RegistryError, match="unknown evaluation metric 'acuracy'"):
        metrics.preload("acuracy")  # refused at once, not on the thread


def test_a_preload_that_fails_raises_where_the_metric_is_used(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from lmkit.errors import ConfigError
    from lmkit.evaluation import metrics

    (tmp_path / "hf").mkdir()
    (tmp_path / "hf").chmod(0o777)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delitem(sys.modules, "lmkit.evaluation.metrics.accuracy.accuracy", raising=False)
    metrics.preload("accuracy")  # its thread fails; nothing is raised here
    with pytest.raises(ConfigError, match="writable by other users"):
        load_metric("accuracy")
