"""Many runs on many tasks: finding each task's data, `evaluate_runs`, the leaderboard, the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

import lmkit.evaluation.evaluator as eval_api
from lmkit.engine.events import StartEvent, StopSignal
from lmkit.errors import DataError
from lmkit.evaluation.leaderboard import EvaluationEndEvent, EvaluationStartEvent, Leaderboard, evaluate_runs
from lmkit.evaluation.loaders import find_task_data
from lmkit.evaluation.result import EvalResult
from lmkit.evaluation.tasks import get_task

EVAL = Path(__file__).parent / "fixtures" / "eval"
GLUE = EVAL / "glue"
IMDB = EVAL / "imdb"

# Fixed predictions per task: (labels, predictions); STS-B holds scores.
LABELS = np.array([0, 1, 1, 0, 1, 1, 0, 1])
FIXED = {
    "glue/mrpc": (LABELS, np.array([0, 1, 0, 0, 1, 1, 1, 1])),
    "glue/cola": (LABELS, np.array([0, 1, 1, 1, 0, 1, 0, 1])),
    "glue/sst2": (LABELS, np.array([1, 1, 1, 0, 1, 0, 0, 1])),
    "glue/stsb": (np.array([0.0, 1.2, 2.5, 3.1, 4.8, 5.0, 2.2, 0.4]),
                  np.array([0.3, 1.0, 2.9, 2.5, 4.1, 4.6, 3.0, 1.5])),
    "imdb": (LABELS, np.array([0, 0, 1, 0, 1, 1, 0, 0])),
}


def fixed_result(task: str, model: str, shift: int = 0) -> EvalResult:
    """The result of `model` on `task` for the fixed predictions (rolled by `shift`)."""
    t = get_task(task)
    labels, predictions = FIXED[task]
    predictions = np.roll(predictions, shift)
    classes = t.shape.has("class_labels")
    outputs = np.eye(2)[predictions] if classes else predictions[:, None].astype(np.float32)
    return EvalResult.build(t, t.eval_split, model, outputs, labels.astype(np.int64 if classes else np.float32))


def hand_glue_score(task: str, shift: int = 0) -> float:
    """The GLUE board's score of a task, from scikit-learn and scipy directly."""
    labels, predictions = FIXED[task]
    predictions = np.roll(predictions, shift)
    if task == "glue/mrpc":
        return (skm.f1_score(labels, predictions) + skm.accuracy_score(labels, predictions)) / 2
    if task == "glue/stsb":
        return (stats.pearsonr(labels, predictions)[0] + stats.spearmanr(labels, predictions)[0]) / 2
    if task == "glue/cola":
        return skm.matthews_corrcoef(labels, predictions)
    return skm.accuracy_score(labels, predictions)


# -- the leaderboard ------------------------------------------------------------------------------
def test_glue_average_equals_a_hand_computation_and_leaves_imdb_out() -> None:
    glue = ["glue/mrpc", "glue/stsb", "glue/cola", "glue/sst2"]
    board = Leaderboard([fixed_result(t, "lm") for t in [*glue, "imdb"]]
                        + [fixed_result(t, "base", shift=1) for t in ["glue/sst2", "glue/stsb"]])
    expected = np.mean([hand_glue_score(t) for t in glue])
    assert board.average("lm", "GLUE") == pytest.approx(expected)
    # a run evaluated on part of GLUE averages what it has
    assert board.average("base", "GLUE") == pytest.approx(
        (hand_glue_score("glue/sst2", 1) + hand_glue_score("glue/stsb", 1)) / 2)
    assert board.average("lm", "SuperGLUE") is None
    columns, rows = board.table()
    assert columns == [*glue, "imdb", "GLUE avg"]
    assert rows[0][-1] == pytest.approx(expected) and rows[0][-2] == pytest.approx(hand_glue_score("imdb"))
    assert rows[1][0] is None and rows[1][1] == pytest.approx(hand_glue_score("glue/stsb", 1))


def test_renderings_show_the_same_numbers() -> None:
    board = Leaderboard([fixed_result("glue/mrpc", "lm"), fixed_result("imdb", "lm"),
                         fixed_result("glue/mrpc", "base", shift=1)])
    mrpc, glue_avg = hand_glue_score("glue/mrpc"), hand_glue_score("glue/mrpc")
    text = board.to_text().splitlines()
    assert text[0].split() == ["model", "glue/mrpc", "imdb", "GLUE", "avg"]
    assert text[1].split() == ["lm", f"{mrpc:.4f}", f"{hand_glue_score('imdb'):.4f}", f"{glue_avg:.4f}"]
    assert text[2].split()[2] == "–" and str(board) == board.to_text()
    html = board.to_html()
    assert "<th>GLUE avg</th>" in html
    assert f"<th>base</th><td>{hand_glue_score('glue/mrpc', 1):.4f}</td><td>–</td>" in html
    assert f"<td><b>{glue_avg:.4f}</b></td>" in html and board._repr_html_() == html
    wide = board.to_dataframe()
    assert list(wide.index) == ["lm", "base"] and wide.loc["lm", "GLUE avg"] == pytest.approx(glue_avg)
    labels, predictions = FIXED["glue/mrpc"]
    assert wide.loc["lm", "glue/mrpc:f1"] == pytest.approx(skm.f1_score(labels, predictions))
    assert wide.loc["lm", "glue/mrpc:accuracy"] == pytest.approx(skm.accuracy_score(labels, predictions))
    assert np.isnan(wide.loc["base", "imdb"])
    long = board.to_dataframe(wide=False)
    assert long[["model", "task"]].values.tolist() == [["lm", "glue/mrpc"], ["lm", "imdb"], ["base", "glue/mrpc"]]
    assert Leaderboard().to_text() == "no results yet" and Leaderboard().to_html() == "<i>no results yet</i>"


def test_a_later_result_replaces_the_cell() -> None:
    board = Leaderboard([fixed_result("glue/sst2", "lm"), fixed_result("glue/sst2", "lm", shift=3)])
    assert board.score("lm", "glue/sst2") == pytest.approx(hand_glue_score("glue/sst2", 3))
    assert len(board.records()) == 2 and board.models == ["lm"]


def test_a_stopped_fine_tuning_is_marked_partial_in_every_rendering() -> None:
    stopped = fixed_result("glue/sst2", "lm")
    stopped.training = {"steps": 40, "reason": "stopped", "seconds": 3.0}
    board = Leaderboard([stopped, fixed_result("glue/sst2", "base")])
    assert stopped.partial and not board.results[1].partial
    assert "partial: fine-tuning stopped at step 40" in repr(stopped)
    assert stopped.to_dict()["partial"] is True
    text = board.to_text().splitlines()
    assert text[1].split()[1].endswith("*") and not text[2].split()[1].endswith("*")
    assert "partial" in text[-1]
    html = board.to_html()
    assert html.count("class='lmkit-partial'") == 1 and "lmkit-partial-note" in html
    assert "partial" not in Leaderboard([fixed_result("glue/sst2", "lm")]).to_html()


def test_max_eval_examples_is_a_seeded_sample_stratified_by_label() -> None:
    from lmkit.evaluation.loaders import Examples

    # sorted by label, as aclImdb is read: the first 10 would all be negative
    labels = np.array([0] * 90 + [1] * 30)
    examples = Examples(get_task("imdb"), "test", "fixture", [f"text {i}" for i in range(120)], None, labels)
    picked = eval_api._sample(examples, 12, seed=0)
    assert np.bincount(picked.labels).tolist() == [9, 3]  # the label proportions
    assert picked.text_a == eval_api._sample(examples, 12, seed=0).text_a  # seeded
    assert picked.text_a != eval_api._sample(examples, 12, seed=1).text_a
    assert all(examples.text_a.index(t) == int(t.split()[1]) for t in picked.text_a)
    few = eval_api._sample(Examples(examples.task, "test", "fixture", examples.text_a, None,
                                    np.array([0] * 118 + [1] * 2)), 4, seed=0)
    assert set(few.labels.tolist()) == {0, 1}  # a rare class still gets a place


# -- finding a task's data ---------------------------------------------------------------------------
def test_find_task_data_in_the_layouts_people_have(tmp_path: Path) -> None:
    assert find_task_data("glue/sst2", EVAL) == GLUE          # data/glue next to data/imdb
    assert find_task_data("imdb", EVAL) == IMDB
    assert find_task_data("glue/sst2", GLUE) == GLUE          # the GLUE root itself
    assert find_task_data("glue/sst2", GLUE / "SST-2") == GLUE / "SST-2"  # the task folder
    for name in ("GLUE", "glue_data"):
        shutil.copytree(GLUE / "SST-2", tmp_path / name / name / "SST-2")
        assert find_task_data("glue/cola", tmp_path / name) == tmp_path / name / name
    shutil.copytree(IMDB, tmp_path / "movies" / "aclImdb")
    assert find_task_data("imdb", tmp_path / "movies") == tmp_path / "movies"  # the loader opens aclImdb/
    parquet = tmp_path / "dev.parquet"
    parquet.write_bytes(b"")  # only the name counts for finding it
    assert find_task_data("glue/sst2", parquet) == parquet


def test_find_task_data_says_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        find_task_data("glue/sst2", IMDB)
    message = str(err.value)
    assert message.startswith(f"no glue/sst2 data in '{IMDB}' or its sub-folders glue/, GLUE/, glue_data/: "
                              f"'{IMDB}' holds the IMDb aclImdb layout")
    assert "official GLUE layout: <glue>/SST-2/{train.tsv, dev.tsv}" in message  # how to fix it
    with pytest.raises(DataError, match=f"no imdb data in '{tmp_path / 'nope'}' or its sub-folders imdb/, aclImdb/: "
                                        f"'{tmp_path / 'nope'}' does not exist. imdb expects the aclImdb layout"):
        find_task_data("imdb", tmp_path / "nope")
    with pytest.raises(DataError, match="holds none of the layouts lmkit reads"):
        find_task_data("imdb", tmp_path)


# -- evaluate_runs -------------------------------------------------------------------------------------
@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace `lmkit.evaluate` by one that records its calls and returns the fixed results."""
    made: list[dict[str, Any]] = []

    def fake_evaluate(run: Any, task: Any, data: Any, reporters: Any = (), stop: Any = None,
                      **options: Any) -> EvalResult:
        made.append({"run": run, "task": task.name, "data": data, "stop": stop, **options})
        for report in reporters:
            report(StartEvent(str(run), 5, 0, "lstm", 1, "jax", "cpu", 1))
        if isinstance(run, str) and run.startswith("bad"):
            raise DataError(f"{run} is broken")
        return fixed_result(task.name, f"evaluate-named-{run}", shift=len(made))

    monkeypatch.setattr(eval_api, "evaluate", fake_evaluate)
    return made


def test_evaluate_runs_calls_evaluate_per_pair_with_each_tasks_folder(calls: list[dict[str, Any]]) -> None:
    seen: list[Any] = []
    stop = StopSignal()
    board = evaluate_runs({"lm": "runs/lm", "base": "scratch"}, ["glue/sst2", "imdb"], EVAL,
                          reporters=[seen.append], stop=stop, max_steps=7)
    assert [(c["run"], c["task"], c["data"]) for c in calls] == [
        ("runs/lm", "glue/sst2", GLUE), ("runs/lm", "imdb", IMDB),
        ("scratch", "glue/sst2", GLUE), ("scratch", "imdb", IMDB)]
    assert all(c["max_steps"] == 7 and c["stop"] is stop for c in calls)
    assert board.models == ["lm", "base"] and [t.name for t in board.tasks] == ["glue/sst2", "imdb"]
    assert board.score("base", "imdb") == pytest.approx(hand_glue_score("imdb", shift=4))
    kinds = [type(e).__name__ for e in seen]
    assert kinds[:4] == ["EvaluationStartEvent", "StartEvent", "EvaluationEndEvent", "EvaluationStartEvent"]
    assert seen[0] == EvaluationStartEvent("lm", "glue/sst2", 1, 4)
    assert isinstance(seen[2], EvaluationEndEvent) and seen[2].result is board.results[0]
    assert seen[2].to_dict()["metrics"] == board.results[0].metrics


def test_runs_given_as_a_list_keep_the_names_evaluate_gives(calls: list[dict[str, Any]]) -> None:
    board = evaluate_runs(["runs/a", "scratch"], ["glue/mrpc"], None)
    assert board.models == ["evaluate-named-runs/a", "evaluate-named-scratch"]
    assert [c["data"] for c in calls] == [None, None]  # None and "hf" mean the Hub
    evaluate_runs("scratch", "glue/mrpc", "HF")  # one run and one task may come alone
    assert calls[-1]["data"] == "HF"


def test_a_missing_data_folder_fails_before_any_evaluation(calls: list[dict[str, Any]], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no imdb data in"):
        evaluate_runs(["scratch"], ["glue/sst2", "imdb"], GLUE)
    assert calls == []


def test_keep_going_records_failures_and_runs_the_rest(calls: list[dict[str, Any]]) -> None:
    ends: list[EvaluationEndEvent] = []
    board = evaluate_runs({"bad": "bad-run", "ok": "scratch"}, ["glue/sst2", "imdb"], GLUE, keep_going=True,
                          reporters=[lambda e: ends.append(e) if isinstance(e, EvaluationEndEvent) else None])
    assert [(e.model, e.task, e.error[:17]) for e in ends] == [
        ("bad", "glue/sst2", "bad-run is broken"), ("bad", "imdb", "no imdb data in '"),
        ("ok", "glue/sst2", ""), ("ok", "imdb", "no imdb data in '")]
    assert board.failures[0] == ("bad", "glue/sst2", "bad-run is broken") and len(board.failures) == 3
    assert board.models == ["ok"]
    with pytest.raises(DataError, match="bad-run is broken"):
        evaluate_runs(["bad-run", "scratch"], ["glue/sst2"], GLUE)
    assert calls[-1]["run"] == "bad-run"  # raised at once: scratch never ran


def test_stop_skips_the_pairs_not_started(calls: list[dict[str, Any]]) -> None:
    stop = StopSignal()
    board = evaluate_runs(["scratch", "runs/b"], ["glue/sst2", "glue/cola"], GLUE, stop=stop,
                          reporters=[lambda e: stop.set() if isinstance(e, EvaluationEndEvent) else None])
    assert len(calls) == 1 and len(board.results) == 1


# -- lmkit eval ------------------------------------------------------------------------------------------
def test_cli_evaluates_several_runs_and_tasks_into_a_table(calls: list[dict[str, Any]],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    assert main(["eval", "runs/a", "scratch", "--task", "glue/sst2", "--task", "glue/cola", "--data", str(EVAL),
                 "--quiet", "--set", "max_steps=3"]) == 0
    assert [(c["run"], c["task"], c["data"], c["max_steps"]) for c in calls] == [
        ("runs/a", "glue/sst2", GLUE, 3), ("runs/a", "glue/cola", GLUE, 3),
        ("scratch", "glue/sst2", GLUE, 3), ("scratch", "glue/cola", GLUE, 3)]
    printed = capsys.readouterr().out
    assert printed.count("confusion matrix (rows: label, columns: prediction)") == 4
    table = printed[printed.index("\nmodel"):].split("\n")[1:]
    assert table[0].split() == ["model", "glue/sst2", "glue/cola", "GLUE", "avg"]
    assert table[1].split()[0] == "evaluate-named-runs/a" and len(table[1].split()) == 4
    assert main(["eval", "a", "b", "--data", str(GLUE), "--out", "x"]) == 2
    assert "--out holds the files of one evaluation, but 2 run(s) × 1 task(s)" in capsys.readouterr().err
    assert len(calls) == 4


def test_cli_one_evaluation_prints_and_writes_as_before(calls: list[dict[str, Any]], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from lmkit.cli import main

    assert main(["eval", "scratch", "--data", str(GLUE), "--quiet", "--out", str(tmp_path)]) == 0
    assert calls[0]["task"] == "glue/sst2" and calls[0]["checkpoint_dir"] == str(tmp_path)
    printed = capsys.readouterr().out
    assert printed.startswith("glue/sst2 (dev, 8 examples, model evaluate-named-scratch)") and "GLUE avg" not in printed
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "predictions.tsv").is_file()
