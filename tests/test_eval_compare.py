"""Paired comparisons of two results: McNemar against statsmodels, the paired bootstrap, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

import lmkit
import lmkit.evaluation.evaluator as eval_api
from lmkit.errors import DataError
from lmkit.evaluation.compare import compare
from lmkit.evaluation.leaderboard import Leaderboard
from lmkit.evaluation.result import EvalResult, score
from lmkit.evaluation.tasks import get_task

GLUE = Path(__file__).parent / "fixtures" / "eval" / "glue"


def result_of(task_name: str, model: str, predictions: np.ndarray, labels: np.ndarray) -> EvalResult:
    task = get_task(task_name)
    return EvalResult(task, task.eval_split, model, score(task, task.eval_split, predictions, labels),
                      predictions, labels, config={"seed": 0})


def right_on(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Predictions right on about `share` of `labels` (binary)."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(len(labels)) < share, labels, 1 - labels)


def statsmodels_p(a: EvalResult, b: EvalResult) -> float:
    a_right, b_right = a.predictions == a.labels, b.predictions == b.labels
    table = [[int((a_right & b_right).sum()), int((a_right & ~b_right).sum())],
             [int((~a_right & b_right).sum()), int((~a_right & ~b_right).sum())]]
    return float(sm_mcnemar(table, exact=True).pvalue)


@pytest.mark.parametrize("n, share_a, share_b", [(40, 0.7, 0.75), (300, 0.6, 0.8), (200, 0.8, 0.8)])
def test_mcnemar_p_equals_statsmodels(n: int, share_a: float, share_b: float) -> None:
    labels = np.random.default_rng(n).integers(0, 2, n)
    a = result_of("glue/sst2", "a", right_on(labels, share_a, 1), labels)
    b = result_of("glue/sst2", "b", right_on(labels, share_b, 2), labels)
    found = compare(a, b)["accuracy"]
    assert found.p_value == pytest.approx(statsmodels_p(a, b), rel=1e-9)
    assert found.test == "mcnemar (exact)"
    assert found.difference == pytest.approx(b.metrics["accuracy"] - a.metrics["accuracy"])
    assert found.low <= found.difference <= found.high


def test_a_clear_gain_is_significant_and_the_same_model_is_not() -> None:
    labels = np.random.default_rng(0).integers(0, 2, 300)
    a = result_of("glue/mrpc", "a", right_on(labels, 0.6, 1), labels)
    b = result_of("glue/mrpc", "b", right_on(labels, 0.9, 2), labels)
    gain = compare(a, b)
    assert gain["f1"].significant and gain["f1"].low > 0 and gain["f1"].test.startswith("paired bootstrap")
    assert gain["combined_score"].significant and gain["accuracy"].significant
    same = compare(a, a)
    assert [m.p_value for m in same.metrics] == [1.0, 1.0, 1.0]
    assert (same["f1"].low, same["f1"].high) == (0.0, 0.0)
    assert "not significant" in str(same) and "significant" in str(gain)


def test_results_on_different_examples_are_refused_with_the_count() -> None:
    labels = np.random.default_rng(0).integers(0, 2, 50)
    other = labels.copy()
    other[[3, 9, 27]] = 1 - other[[3, 9, 27]]
    a = result_of("glue/sst2", "a", labels, labels)
    with pytest.raises(DataError, match="3 of the 50 examples of glue/sst2 differ between a and b"):
        compare(a, result_of("glue/sst2", "b", labels, other))
    with pytest.raises(DataError, match="a was scored on 50 examples of glue/sst2 and b on 20"):
        compare(a, result_of("glue/sst2", "b", labels[:20], labels[:20]))


def test_the_leaderboard_marks_differences_that_are_not_significant() -> None:
    labels = np.random.default_rng(0).integers(0, 2, 300)
    board = Leaderboard([result_of("glue/sst2", "best", right_on(labels, 0.9, 1), labels),
                         result_of("glue/sst2", "close", right_on(labels, 0.89, 2), labels),
                         result_of("glue/sst2", "far", right_on(labels, 0.6, 3), labels)])
    text = board.to_text().splitlines()
    close, far = (next(x for x in text if x.startswith(f"vs best: {m}")) for m in ("close", "far"))
    assert close.split()[-1] == "≈" and far.split()[-1] != "≈"
    assert f"p={board.versus_best('close', 'glue/sst2').p_value:.3f}" in close
    assert board.versus_best("best", "glue/sst2") is None
    assert "lmkit-significance" in board.to_html()


@pytest.fixture
def two_runs(monkeypatch: pytest.MonkeyPatch) -> dict[str, EvalResult]:
    """`lmkit.evaluate` replaced: run "a" is right on 70 % of MRPC's dev labels, "b" on 85 %."""
    labels = np.random.default_rng(5).integers(0, 2, 120)
    made = {run: result_of("glue/mrpc", run, right_on(labels, share, i), labels)
            for i, (run, share) in enumerate((("a", 0.7), ("b", 0.85)))}

    def fake_evaluate(run: Any, task: Any, data: Any, **options: Any) -> EvalResult:
        assert options["max_steps"] == 3  # both runs get the same options
        return made[run]

    monkeypatch.setattr(eval_api, "evaluate", fake_evaluate)
    return made


def test_cli_compare_prints_the_paired_tests(two_runs: dict[str, EvalResult], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    out = tmp_path / "compare.json"
    assert main(["compare", "a", "b", "--task", "glue/mrpc", "--data", str(GLUE), "--set", "max_steps=3",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    expected = statsmodels_p(two_runs["a"], two_runs["b"])
    assert "glue/mrpc (dev, 120 examples): b - a" in printed
    assert f"p={expected:.3g} (mcnemar (exact))" in printed
    saved = json.loads(out.read_text())[0]
    accuracy = next(m for m in saved["metrics"] if m["metric"] == "accuracy")
    assert accuracy["p_value"] == pytest.approx(expected)
    assert lmkit.compare(two_runs["a"], two_runs["b"])["accuracy"].p_value == pytest.approx(expected)


def test_cli_compare_needs_two_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    assert main(["compare", "runs/a", "runs/a", "--task", "glue/mrpc"]) == 2
    assert "got the same run twice" in capsys.readouterr().err
