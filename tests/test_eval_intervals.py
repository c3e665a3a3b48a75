"""Intervals and baselines of every score, checked against statsmodels, scikit-learn and scipy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm
from statsmodels.stats.proportion import proportion_confint

from lmkit.errors import DataError
from lmkit.evaluation.examples import Examples
from lmkit.evaluation.intervals import VECTORIZED, bootstrap, wilson
from lmkit.evaluation.leaderboard import EvaluationEndEvent, Leaderboard
from lmkit.evaluation.result import EvalResult, score
from lmkit.evaluation.tasks import get_task

RNG = np.random.default_rng(7)


def noisy(classes: int, n: int = 300, right: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, labels): right on about `right` of the examples."""
    labels = RNG.integers(0, classes, n)
    return np.where(RNG.random(n) < right, labels, RNG.integers(0, classes, n)), labels


def result_of(task_name: str, predictions: np.ndarray, labels: np.ndarray, seed: int = 0) -> EvalResult:
    task = get_task(task_name)
    return EvalResult(task, task.eval_split, "m", score(task, task.eval_split, predictions, labels),
                      predictions, labels, config={"seed": seed})


@pytest.mark.parametrize("right, n", [(82, 100), (0, 12), (40, 40), (7, 9), (503, 872)])
def test_wilson_equals_statsmodels(right: int, n: int) -> None:
    low, high = proportion_confint(right, n, alpha=0.05, method="wilson")
    found = wilson(right, n)
    assert (found.low, found.high) == pytest.approx((low, high), abs=1e-12)
    assert found.method == "wilson"


def test_accuracy_at_100_percent_has_an_interval_of_nonzero_width() -> None:
    labels = np.array([0, 1] * 10)
    interval = result_of("glue/sst2", labels, labels).intervals["accuracy"]
    assert interval.high == 1.0 and interval.low < 0.9


@pytest.mark.parametrize("module, name, reference, classes", [
    ("glue", "f1", lambda y, p: skm.f1_score(y, p, zero_division=0), 2),
    ("glue", "matthews_correlation", skm.matthews_corrcoef, 3),
    ("super_glue", "f1", lambda y, p: skm.f1_score(y, p, average="macro", zero_division=0), 3),
])
def test_each_resample_scores_as_scikit_learn_does(module: str, name: str, reference, classes: int) -> None:
    predictions, labels = noisy(classes, 60)
    rows = RNG.integers(0, 60, (25, 60))
    found = VECTORIZED[module][name](predictions[rows], labels[rows])
    assert found == pytest.approx([reference(labels[r], predictions[r]) for r in rows], abs=1e-12)


@pytest.mark.parametrize("name, reference", [("pearson", stats.pearsonr), ("spearmanr", stats.spearmanr)])
def test_each_resample_correlates_as_scipy_does(name: str, reference) -> None:
    labels = np.round(RNG.random(50) * 5, 1)  # ties, as STS-B's scores have
    predictions = np.round(labels + RNG.normal(0, 1, 50), 1)
    rows = RNG.integers(0, 50, (25, 50))
    found = VECTORIZED["glue"][name](predictions[rows], labels[rows])
    assert found == pytest.approx([reference(labels[r], predictions[r])[0] for r in rows], abs=1e-9)


def test_f1_interval_agrees_with_scipy_bootstrap() -> None:
    predictions, labels = noisy(2, 200)
    result = result_of("glue/mrpc", predictions, labels)
    ours = result.intervals["f1"]
    theirs = stats.bootstrap((labels, predictions), lambda y, p: skm.f1_score(y, p), paired=True,
                             vectorized=False, n_resamples=1000, method="percentile",
                             random_state=np.random.default_rng(1)).confidence_interval
    # two independent Monte Carlo estimates of the same percentiles
    assert ours.low == pytest.approx(theirs.low, abs=0.02) and ours.high == pytest.approx(theirs.high, abs=0.02)
    assert ours.low < result.metrics["f1"] < ours.high
    assert ours.method == "bootstrap (1000 resamples, seed 0)"
    combined = result.intervals["combined_score"]
    assert combined.low < result.metrics["combined_score"] < combined.high


def test_the_bootstrap_is_seeded() -> None:
    predictions, labels = noisy(3, 120)
    first = result_of("glue/cola", predictions, labels, seed=3).intervals
    assert first == result_of("glue/cola", predictions, labels, seed=3).intervals
    assert first != result_of("glue/cola", predictions, labels, seed=4).intervals


def test_a_bootstrap_needs_two_examples() -> None:
    with pytest.raises(DataError, match="needs at least 2, got 1"):
        bootstrap(lambda rows: {"x": rows.mean(1)}, 1)


def test_bleu_and_rouge_intervals_resample_each_sentence_s_statistics() -> None:
    """Multi30K's BLEU and ROUGE: each sentence scored once by the shipped modules, 1000 resamples."""
    task = get_task("multi30k/de-en")
    targets = [f"a dog runs in the park number {i}" for i in range(12)]
    outputs = np.array([t if i % 3 else "a cat sleeps" for i, t in enumerate(targets)], dtype=object)
    sources = [f"ein hund {i}" for i in range(12)]
    examples = Examples(task, "test", "memory", sources, targets, np.array(targets, dtype=object))
    result = EvalResult.build(task, "test", "m", outputs, examples.labels, examples)
    for name in ("bleu", "chrf", "rouge1", "rougeL"):
        interval = result.intervals[name]
        assert interval.method.startswith("bootstrap (1000 resamples"), interval
        assert interval.low < result.metrics[name] <= interval.high, (name, interval)
    # copying the German source shares no word with the English target
    assert result.baselines["copy"]["bleu"] == pytest.approx(0.0, abs=1e-6)


def test_each_resample_scores_as_sacrebleu_and_rouge_score_do() -> None:
    """A resample's scores from the sentences' statistics equal the libraries' own on it."""
    import sacrebleu
    from rouge_score import rouge_scorer

    references = ["A man in a blue shirt is standing on a ladder.", "Two dogs play in the snow.",
                  "A girl reads a book under a tree.", "People walk down a busy street at night.",
                  "A child jumps into the pool.", "The cat sleeps on the red sofa."]
    hypotheses = ["A man in a blue shirt stands on a ladder.", "Two dogs are playing in snow.",
                  "A girl is reading under a big tree.", "People walk on a street.",
                  "A boy jumps in the water.", "A cat sleeps on the sofa, red."]
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    metrics = ["bleu", "chrf", "brevity_penalty", *types]
    rows = np.random.default_rng(3).integers(0, len(references), (6, len(references)))
    shape = get_task("multi30k/de-en").shape
    scores = shape.resampler(np.array(hypotheses, object), np.array(references, object), metrics)(rows)
    scorer = rouge_scorer.RougeScorer(types)
    for b, row in enumerate(rows):
        hyps, refs = [hypotheses[i] for i in row], [references[i] for i in row]
        bleu = sacrebleu.corpus_bleu(hyps, [refs])
        assert scores["bleu"][b] == pytest.approx(bleu.score, rel=1e-12, abs=1e-12)
        assert scores["brevity_penalty"][b] == pytest.approx(bleu.bp, rel=1e-12)
        assert scores["chrf"][b] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, rel=1e-12)
        for t in types:
            alone = np.mean([scorer.score(r, h)[t].fmeasure for h, r in zip(hyps, refs)])
            assert scores[t][b] == pytest.approx(alone, rel=1e-12, abs=1e-15), (t, b)
    assert len(set(np.round(scores["bleu"], 6))) > 1  # the resamples differ


def test_baselines_are_the_constant_and_the_uniform_guess() -> None:
    predictions, labels = noisy(2, 400)
    result = result_of("glue/mrpc", predictions, labels)
    majority = np.full_like(labels, np.bincount(labels).argmax())
    assert result.baselines["majority"]["f1"] == pytest.approx(skm.f1_score(labels, majority))
    assert result.baselines["majority"]["accuracy"] == pytest.approx(skm.accuracy_score(labels, majority))
    assert result.baselines["chance"]["accuracy"] == pytest.approx(0.5, abs=0.03)
    cola = result_of("glue/cola", *noisy(2, 400))
    assert cola.baselines["majority"]["matthews_correlation"] == 0.0


def test_every_rendering_shows_intervals_and_baselines() -> None:
    predictions, labels = noisy(2, 100)
    result = result_of("glue/sst2", predictions, labels)
    interval = result.intervals["accuracy"]
    board = Leaderboard([result])
    text, html, tsv = board.to_text(), board.to_html(), board.to_tsv().splitlines()
    assert f"[{interval.low:.3f}, {interval.high:.3f}]" in text and "baseline: majority" in text
    assert f"<td>[{interval.low:.3f}, {interval.high:.3f}]</td>" in html and "lmkit-baseline" in html
    assert tsv[2].split("\t") == ["95% low: m", f"{interval.low:.6f}", ""]  # no interval of the GLUE avg
    assert tsv[4].split("\t")[0] == "baseline: majority"
    saved = json.loads(board.to_json())[0]
    assert saved["intervals"]["accuracy"]["method"] == "wilson"
    assert saved["baselines"]["chance"]["accuracy"] == result.baselines["chance"]["accuracy"]
    assert f"accuracy={result.metrics['accuracy']:.4f} [{interval.low:.4f}, {interval.high:.4f}]" in repr(result)


def test_the_cli_prints_interval_and_baselines_beside_each_metric(capsys) -> None:
    from lmkit.cli.eval import _print_result

    result = result_of("glue/mrpc", *noisy(2, 80))
    _print_result(EvaluationEndEvent("m", "glue/mrpc", result))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("f1"))
    interval = result.intervals["f1"]
    assert f"95% [{interval.low:.4f}, {interval.high:.4f}] bootstrap (1000 resamples, seed 0)" in line
    assert f"majority {result.baselines['majority']['f1']:.4f}" in line and "chance" in line


def test_the_notebook_panel_shows_intervals_and_baselines(monkeypatch: pytest.MonkeyPatch) -> None:
    import lmkit.evaluation.evaluator as eval_api
    from lmkit.notebook.eval_panel import EvalPanel

    predictions, labels = noisy(2, 60)
    made = result_of("glue/sst2", predictions, labels)
    monkeypatch.setattr(eval_api, "evaluate", lambda run, task, data, **options: made)
    panel = EvalPanel(data=str(Path(__file__).parent / "fixtures" / "eval"), max_steps=1)
    panel.run(runs=("scratch",), tasks=("glue/sst2",))
    interval = made.intervals["accuracy"]
    table = panel.table.value
    assert f"<th>95% scratch</th><td>[{interval.low:.3f}, {interval.high:.3f}]</td>" in table  # the panel names the row
    assert f"<th>baseline: majority</th><td>{made.baselines['majority']['accuracy']:.4f}</td>" in table
