"""`%lmeval`: one call of `evaluate_runs`; one result, or a leaderboard for several runs and tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError

import lmkit.evaluation.evaluator as eval_api
from lmkit.evaluation.leaderboard import Leaderboard
from lmkit.evaluation.result import EvalResult

EVAL = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, str, Any, dict[str, Any]]]:
    made: list[tuple[Any, str, Any, dict[str, Any]]] = []

    def fake_evaluate(run: Any, task: Any, data: Any, **options: Any) -> EvalResult:
        made.append((run, task.name, data, {k: v for k, v in options.items() if k not in ("reporters", "stop")}))
        labels = np.array([0, 1, 1, 0])
        return EvalResult.build(task, task.eval_split, "evaluate's name", np.eye(2)[labels], labels)

    monkeypatch.setattr(eval_api, "evaluate", fake_evaluate)
    return made


def test_one_run_on_one_task_binds_its_result(ip, calls) -> None:
    ip.run_line_magic("lmeval", f"scratch --task glue/sst2 --data {EVAL} --set epochs=2 -o res")
    assert calls == [("scratch", "glue/sst2", EVAL / "glue", {"epochs": 2})]
    result = ip.user_ns["res"]
    assert isinstance(result, EvalResult) and result.model_name == "scratch" and result.metrics == {"accuracy": 1.0}


def test_several_runs_and_tasks_bind_a_leaderboard(ip, calls) -> None:
    ip.user_ns["lm"] = run = _run()
    ip.run_line_magic("lmeval", f"lm scratch --task glue/sst2 --task imdb --data {EVAL} -o board")
    assert [(c[0], c[1], c[2]) for c in calls] == [
        (run, "glue/sst2", EVAL / "glue"), (run, "imdb", EVAL / "imdb"),
        ("scratch", "glue/sst2", EVAL / "glue"), ("scratch", "imdb", EVAL / "imdb")]
    board = ip.user_ns["board"]
    assert isinstance(board, Leaderboard) and board.models == ["lm", "scratch"]
    assert board.table()[0] == ["glue/sst2", "imdb", "GLUE avg"]


def test_a_data_error_is_one_line(ip, calls) -> None:
    with pytest.raises(UsageError, match="no glue/sst2 data in"):
        ip.run_line_magic("lmeval", f"scratch --task glue/sst2 --data {EVAL / 'imdb'}")
    assert calls == []


@pytest.fixture
def panels(monkeypatch) -> list[Any]:
    """The evaluation panels `%lmeval --ui` makes, as fakes recording their options and runs."""
    import lmkit.notebook.eval_panel as eval_panel

    made: list[Any] = []

    class FakePanel:
        def __init__(self, **kwargs):
            self.kwargs, self.ran = kwargs, None
            made.append(self)

        def run(self, runs, tasks):
            self.ran = (runs, tasks)

        def run_suite(self, suite, runs, tasks):
            self.ran = (suite, runs, tasks)

    monkeypatch.setattr(eval_panel, "EvalPanel", FakePanel)
    return made


def test_ui_runs_the_pairs_in_the_panel(ip, panels) -> None:
    ip.run_line_magic("lmeval", "scratch --task imdb --task glue/cola --data aclImdb --set max_steps=5 --ui")
    (panel,) = panels
    assert panel.ran == (("scratch",), ("imdb", "glue/cola"))
    assert panel.kwargs["runs"] == {"scratch": "scratch"} and panel.kwargs["data"] == "aclImdb"
    assert panel.kwargs["max_steps"] == 5


def test_suite_fine_tunes_every_superglue_task_with_progress(ip, monkeypatch, capsys) -> None:
    superglue = EVAL.parent / "superglue"
    calls = []

    def fake_evaluate(run: Any, task: Any, data: Any, **options: Any) -> EvalResult:
        calls.append((run, task.name, data, {k: v for k, v in options.items() if k not in ("reporters", "stop")}))
        labels = np.array([0, 1])  # fixed scores: MultiRC and ReCoRD need more than label ids to be scored
        return EvalResult(task, task.eval_split, str(run), {m: 0.5 for m in task.metrics}, labels, labels)

    monkeypatch.setattr(eval_api, "evaluate", fake_evaluate)
    ip.run_line_magic("lmeval", f"scratch --suite superglue --data {superglue} --set max_steps=3 -o board")
    names = ["boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc"]
    # fine-tuning (no method option): every task, ReCoRD included, with the options given
    assert [(c[1], c[2], c[3]) for c in calls] == [(f"superglue/{n}", superglue, {"max_steps": 3}) for n in names]
    board = ip.user_ns["board"]
    assert board.table()[0] == [*(f"superglue/{n}" for n in names), "SuperGLUE avg"] and board.skipped == []
    out = capsys.readouterr().out
    assert "evaluating scratch on superglue/record (5/8)" in out and "SuperGLUE avg" in out


def test_suite_with_ui_runs_it_in_the_panel(ip, panels) -> None:
    ip.run_line_magic("lmeval", "scratch --suite superglue --data sg --task record --set max_steps=5 --ui -o panel")
    (panel,) = panels
    assert panel.ran == ("superglue", ("scratch",), ["record"]) and ip.user_ns["panel"] is panel
    assert panel.kwargs["data"] == "sg" and panel.kwargs["max_steps"] == 5


def _run() -> Any:
    from lmkit.training.run import Run

    return Run(dir=Path("runs/lm"), config=None, model=None, tokenizer=None)


def test_without_ui_it_reports_progress_and_ends_with_the_table(ip, monkeypatch, capsys) -> None:
    from lmkit.engine.events import EndEvent, StartEvent, StepEvent

    def fake_evaluate(run: Any, task: Any, data: Any, reporters: Any = (), stop: Any = None, **options: Any):
        for event in (StartEvent("ft", 4, 0, "scratch on " + task.name, 10, "jax", "cpu", 64),
                      StepEvent(4, 4, 1.0, 0.5, 1e-3, 100.0, 1.0, 0.0), EndEvent(4, "stopped", 1.0)):
            for report in reporters:
                report(event)
        labels = np.array([0, 1, 1, 0])
        result = EvalResult.build(task, task.eval_split, "x", np.eye(2)[labels], labels)
        result.training = {"steps": 4, "reason": "stopped"}
        return result

    monkeypatch.setattr(eval_api, "evaluate", fake_evaluate)
    ip.run_line_magic("lmeval", f"scratch --task glue/sst2 --data {EVAL} -o res")
    out = capsys.readouterr().out
    lines = [
        "lmkit: evaluating scratch on glue/sst2 (1/1): reading the data and preparing the model…",
        "step 4/4  loss 0.5000",  # the fine-tuning's progress
        "lmkit: scoring the evaluation split…",
        "lmkit: scratch on glue/sst2: accuracy 1.0000  (partial: fine-tuning stopped at step 4)",
    ]
    positions = [out.index(line) for line in lines]
    assert positions == sorted(positions), out
    table = out[positions[-1]:]
    assert "glue/sst2" in table and "1.0000*" in table and "partial" in table.splitlines()[-1]


def test_suite_runs_every_task_found_and_zeroshot_sets_the_method(ip, calls) -> None:
    superglue = EVAL.parent / "superglue"
    ip.run_line_magic("lmeval", f"scratch --suite superglue --data {superglue} --task copa --task wic "
                                f"--zeroshot -o board")
    assert [(c[1], c[2], c[3]) for c in calls] == [("superglue/copa", superglue, {"method": "zeroshot"}),
                                                   ("superglue/wic", superglue, {"method": "zeroshot"})]
    board = ip.user_ns["board"]
    assert board.table()[0] == ["superglue/copa", "superglue/wic", "SuperGLUE avg"]
    with pytest.raises(UsageError, match="--task TASK .* or --suite"):
        ip.run_line_magic("lmeval", "scratch --data x")


def test_a_registered_checkpoint_name_reaches_evaluate_unopened(ip, calls) -> None:
    ip.run_line_magic("lmeval", f"minilm-l6 --task glue/sst2 --data {EVAL} --set max_steps=3 -o res")
    assert calls == [("minilm-l6", "glue/sst2", EVAL / "glue", {"max_steps": 3})]


@pytest.mark.slow
def test_lmeval_fine_tunes_a_checkpoint_folder_with_the_standard_recipe(ip, tmp_path: Path) -> None:
    from hf_checkpoints import bert_folder

    folder = bert_folder(tmp_path / "tiny-bert")
    ip.run_line_magic("lmeval", f"{folder} --task glue/sst2 --data {EVAL} --set max_steps=3 "
                                f"--set batch_size=8 --set max_eval_examples=16 -o res")
    result = ip.user_ns["res"]
    assert isinstance(result, EvalResult) and result.model_name == str(folder)  # as typed
    assert len(result.labels) == 16 and 0.0 <= result.metrics["accuracy"] <= 1.0
    assert result.training["steps"] == 3
    # a checkpoint gets BERT's recipe where the options do not say otherwise
    assert result.config["pooling"] == "cls" and result.config["optimizer"] == "adamw"
    assert result.config["learning_rate"] == 5e-5
    # and the Pretrained object bound to a variable is accepted as well
    ip.user_ns["bert"] = lmkit_from_pretrained(folder)
    ip.run_line_magic("lmeval", f"bert --task glue/sst2 --data {EVAL} --set max_steps=1 "
                                f"--set batch_size=8 --set max_eval_examples=8 -o res2")
    assert ip.user_ns["res2"].model_name == "bert" and ip.user_ns["res2"].training["steps"] == 1


def lmkit_from_pretrained(folder: Path) -> Any:
    import lmkit

    return lmkit.from_pretrained(folder)
