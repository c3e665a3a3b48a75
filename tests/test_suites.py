"""Whole-benchmark suites: which tasks run, the leaderboard average, the files, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lmkit.evaluation.evaluator as eval_api
from lmkit.errors import ConfigError, DataError
from lmkit.evaluation.result import EvalResult
from lmkit.evaluation.suites import available_tasks, evaluate_suite, suite_tasks
from lmkit.evaluation.tasks import get_task

FIXTURES = Path(__file__).parent / "fixtures"
SUPERGLUE = FIXTURES / "superglue"
NAMES = ["boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc"]


def test_suites_are_the_tasks_of_their_benchmark() -> None:
    assert [t.name for t in suite_tasks("superglue")] == [f"superglue/{n}" for n in NAMES]
    assert [t.name for t in suite_tasks("GLUE")] == [
        "glue/cola", "glue/mnli", "glue/mrpc", "glue/qnli", "glue/qqp", "glue/rte", "glue/sst2", "glue/stsb", "glue/wnli"]
    with pytest.raises(ConfigError, match=r"unknown suite 'superglu' \(did you mean 'superglue'"):
        suite_tasks("superglu")


def test_only_tasks_with_the_scored_split_run_and_the_others_say_why() -> None:
    found, skipped = available_tasks(suite_tasks("superglue"), SUPERGLUE)
    assert len(found) == 8 and skipped == []
    found, skipped = available_tasks(suite_tasks("superglue"), SUPERGLUE, "dev32")
    assert [t.name for t in found] == ["superglue/copa"]
    assert ("superglue/wic", f"no 'dev32' split file under '{SUPERGLUE}'") in skipped
    found, skipped = available_tasks(suite_tasks("glue"), FIXTURES / "eval")
    assert [t.name for t in found] == ["glue/cola", "glue/mrpc", "glue/sst2"]
    assert dict(skipped)["glue/qnli"] == f"no 'dev' split file under '{FIXTURES / 'eval' / 'glue'}'"


@pytest.fixture
def fake_evaluate(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """`lmkit.evaluate` replaced by one returning fixed metrics per task (no model, no metric module)."""
    calls: list[tuple[str, str]] = []
    rng = np.random.default_rng(0)

    def fake(run: Any, task: Any, data: Any, reporters: Any = (), stop: Any = None, **options: Any) -> EvalResult:
        calls.append((str(run), task.name))
        metrics = {name: float(rng.random()) for name in task.metrics}
        if len(task.metrics) == 2:
            metrics["combined_score"] = sum(metrics.values()) / 2
        labels = np.array([0, 1])
        return EvalResult(task, options.get("split") or task.eval_split, str(run), metrics, labels, labels)

    monkeypatch.setattr(eval_api, "evaluate", fake)
    return calls


def test_suite_average_is_the_leaderboard_formula_and_files_are_written(fake_evaluate, tmp_path: Path) -> None:
    board = evaluate_suite({"a": "runs/a", "b": "runs/b"}, "superglue", SUPERGLUE, out=tmp_path, method="zeroshot")
    assert len(fake_evaluate) == 16
    saved = json.loads((tmp_path / "leaderboard.json").read_text())
    for model in ("a", "b"):
        per_task = [r for r in saved["results"] if r["model"] == model]
        # SuperGLUE's score: each task once, the mean of its scores where it has two (CB, MultiRC, ReCoRD)
        expected = np.mean([np.mean([r["metrics"][m] for m in get_task(r["task"]).metrics]) for r in per_task])
        assert board.average(model, "SuperGLUE") == pytest.approx(expected)
        assert saved["averages"][model]["SuperGLUE"] == pytest.approx(expected)
        assert (tmp_path / model / "superglue_multirc" / "metrics.json").is_file()
    tsv = (tmp_path / "leaderboard.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["model", *[f"superglue/{n}" for n in NAMES], "SuperGLUE avg"]
    assert float(tsv[1].split("\t")[-1]) == pytest.approx(board.average("a", "SuperGLUE"), abs=1e-6)
    html = (tmp_path / "leaderboard.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "superglue/record" in html
    assert saved["tasks_averaged"]["SuperGLUE"] == [f"superglue/{n}" for n in NAMES]


def test_tasks_the_method_cannot_score_are_skipped_not_failed(fake_evaluate) -> None:
    board = evaluate_suite("runs/a", "superglue", SUPERGLUE)  # fine-tuning: every task has a head
    assert [t.name for t in board.tasks] == [f"superglue/{n}" for n in NAMES] and board.skipped == []
    board = evaluate_suite("runs/a", "glue", FIXTURES / "eval", method="zeroshot")
    assert [t.name for t in board.tasks] == ["glue/mrpc", "glue/sst2"]
    assert ("glue/cola", "has no zero-shot prompts (Task.choices)") in board.skipped


def test_a_subset_and_the_errors_of_a_suite(fake_evaluate, tmp_path: Path) -> None:
    board = evaluate_suite("runs/a", "superglue", SUPERGLUE, tasks=["copa", "superglue/wic"], split="dev32")
    assert [t.name for t in board.tasks] == ["superglue/copa"]
    assert [t for t, _ in board.skipped] == ["superglue/wic"]
    with pytest.raises(ConfigError, match="glue/sst2 is not in the superglue suite"):
        evaluate_suite("runs/a", "superglue", SUPERGLUE, tasks=["glue/sst2"])
    with pytest.raises(DataError, match="no task of the superglue suite has data under"):
        evaluate_suite("runs/a", "superglue", tmp_path)


def test_cli_suite_fine_tunes_every_superglue_task(fake_evaluate, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    assert main(["eval", "scratch", "--suite", "superglue", "--data", str(SUPERGLUE), "--set", "max_steps=3",
                 "--out", str(tmp_path), "--quiet"]) == 0
    assert fake_evaluate == [("scratch", f"superglue/{n}") for n in NAMES]
    saved = json.loads((tmp_path / "leaderboard.json").read_text())
    assert [r["task"] for r in saved["results"]] == [f"superglue/{n}" for n in NAMES] and saved["skipped"] == []
    assert "SuperGLUE avg: mean over 8 task(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_suite_zeroshot_on_a_trained_char_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    corpus = FIXTURES / "core" / "shakespeare_30k.txt"
    assert main(["train", "--set", f"data={json.dumps(str(corpus))}", "--set", "arch=gpt", "--set", "tokenizer=char",
                 "--set", "layers=1", "--set", "embed_dim=32", "--set", "heads=2", "--set", "seq_len=64",
                 "--set", "batch_size=8", "--set", "max_steps=20", "--set", "eval_every=20",
                 "--set", "eval_batches=1", "--set", "sample_tokens=0", "--out", str(tmp_path / "run")]) == 0
    out = tmp_path / "board"
    assert main(["eval", str(tmp_path / "run"), "--suite", "superglue", "--data", str(SUPERGLUE), "--zeroshot",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "SuperGLUE avg: mean over 8 task(s)" in printed and "on split val" in printed
    saved = json.loads((out / "leaderboard.json").read_text())
    expected = np.mean([np.mean([r["metrics"][m] for m in get_task(r["task"]).metrics]) for r in saved["results"]])
    assert saved["averages"]["run"]["SuperGLUE"] == pytest.approx(expected)
    assert all(r["training"]["method"] == "zeroshot" for r in saved["results"])
