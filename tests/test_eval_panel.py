"""The evaluation panel: runs from the namespace, evaluated through `evaluate_runs`, its board shown."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from contrast import contrast as _contrast

import lmkit.evaluation.evaluator as eval_api
from lmkit.evaluation.leaderboard import Leaderboard
from lmkit.evaluation.result import EvalResult
from lmkit.evaluation.tasks import get_task
from lmkit.notebook.eval_panel import EvalPanel, confusion_svg, find_runs, pretrained_names

EVAL = Path(__file__).parent / "fixtures" / "eval"


def FakeRun() -> Any:  # noqa: N802 - stands where the class was
    from lmkit.training.run import Run

    from lmkit.config import TrainConfig

    return Run(dir=Path("runs/fake"), config=TrainConfig(), model=object(), tokenizer=object())


def fake_result(task: str, run: Any, score: float) -> EvalResult:
    t = get_task(task)
    labels = np.array([0, 1, 1, 0])
    predictions = np.array([0, 1, 0, 0]) if score < 1 else labels
    return EvalResult.build(t, t.eval_split, str(run), np.eye(2)[predictions], labels)


def test_panel_calls_evaluate_once_per_run_and_task(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    def fake_evaluate(run_or_path: Any, task: Any, data: Any, **options: Any) -> EvalResult:
        calls.append({"run": run_or_path, "task": task.name, "data": data, **options})
        return fake_result(task.name, run_or_path, 0.75 if run_or_path == "scratch" else 1.0)

    monkeypatch.setattr(eval_api, "evaluate", fake_evaluate)
    mine = FakeRun()
    panel = EvalPanel(namespace={"mine": mine, "x": 3}, data=str(EVAL), max_steps=7, pooling="mean")
    assert panel.run_picker.options == ("mine", *pretrained_names(), "scratch")  # minilm-l6 if installed
    results = panel.run(runs=("mine", "scratch"), tasks=("glue/sst2", "imdb"))
    assert [(c["run"], c["task"]) for c in calls] == [
        (mine, "glue/sst2"), (mine, "imdb"), ("scratch", "glue/sst2"), ("scratch", "imdb")]
    assert calls[0]["data"] == EVAL / "glue" and calls[1]["data"] == EVAL / "imdb"
    assert all(c["max_steps"] == 7 and c["pooling"] == "mean" for c in calls)
    assert len(results) == 4 and panel.status.value == "done: 4 evaluation(s)"
    frame = panel.to_dataframe()
    assert frame[["model", "task", "main_score"]].values.tolist() == [
        ["mine", "glue/sst2", 1.0], ["mine", "imdb", 1.0], ["scratch", "glue/sst2", 0.75], ["scratch", "imdb", 0.75]]
    table = panel.table.value
    assert "<th>GLUE avg</th>" in table and "<th>mine</th><td>1.0000</td><td>1.0000</td><td><b>1.0000</b></td>" in table
    assert table == Leaderboard(results).to_html()  # the panel shows the library's board
    assert "lmkit-confusion" in panel.plot.value
    exported = json.loads(panel.to_json(tmp_path / "r.json"))
    assert exported[2]["model"] == "scratch" and exported[2]["confusion_matrix"] == [[2, 0], [1, 1]]
    assert json.loads((tmp_path / "r.json").read_text()) == exported


def test_panel_shows_data_errors_and_keeps_going() -> None:
    panel = EvalPanel(data=str(EVAL / "imdb"), max_steps=0)
    assert panel.run(runs=("scratch",), tasks=("glue/cola", "glue/sst2")) == []
    assert [task for _, task, _ in panel.board.failures] == ["glue/cola", "glue/sst2"]
    status = html.unescape(panel.status.value)
    assert f"no glue/sst2 data in '{EVAL / 'imdb'}'" in status and "holds the IMDb aclImdb layout" in status
    assert not panel.run_button.disabled and panel.stop_button.disabled


@pytest.mark.slow
def test_panel_real_evaluation_progress() -> None:
    panel = EvalPanel(data=str(EVAL), max_steps=4, max_length=16, embed_dim=8, units=8, log_every=2)
    (result,) = panel.run(runs=("scratch",), tasks=("glue/cola",))
    assert panel.progress.max == 4 and panel.progress.value == 4
    assert set(result.metrics) == {"matthews_correlation"}
    assert "glue/cola" in panel.table.value


def test_helpers() -> None:
    assert find_runs({"a": FakeRun(), "_b": FakeRun(), "c": 1}).keys() == {"a"}
    assert EvalPanel().table.value == "<i>no results yet</i>"
    svg = confusion_svg([[3, 1], [0, 4]], ["neg", "pos"], "t")
    assert svg.startswith("<svg") and ">3</text>" in svg and ">4</text>" in svg


def test_only_runs_are_listed_not_evaluation_results() -> None:
    result = fake_result("glue/sst2", "mine", 1.0)
    result.model, result.tokenizer = object(), object()  # as a real EvalResult carries them
    panel = EvalPanel(namespace={"mine": FakeRun(), "sst2": result})
    options = panel.run_picker.options
    assert options[0] == "mine" and options[-1] == "scratch" and "sst2" not in options


def test_pretrained_checkpoints_are_listed_as_variables_and_by_registered_name() -> None:
    from lmkit.pretrained import Pretrained
    from lmkit.registry import pretrained

    pretrained.register("tiny-test-ckpt")(lambda: "/nowhere")
    try:
        checkpoint = Pretrained.__new__(Pretrained)  # a loaded checkpoint, without its weights
        panel = EvalPanel(namespace={"bert": checkpoint, "mine": FakeRun()})
        options = panel.run_picker.options
        assert options[:2] == ("bert", "mine") and "tiny-test-ckpt" in options
        assert panel.available_runs()["tiny-test-ckpt"] == "tiny-test-ckpt"  # evaluate() opens names
    finally:
        pretrained.unregister("tiny-test-ckpt")


def test_an_unexpected_error_is_shown_in_the_panel_not_only_in_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **options: Any) -> EvalResult:
        raise TypeError("cannot copy this backbone")

    monkeypatch.setattr(eval_api, "evaluate", broken)
    panel = EvalPanel(namespace={"mine": FakeRun()}, data=str(EVAL))
    panel.run_picker.value = ("mine",)
    panel.run_button.click()  # the click does not raise into the kernel's log
    assert "TypeError: cannot copy this backbone" in html.unescape(panel.status.value)
    assert "preparing" not in panel.status.value
    assert not panel.run_button.disabled and panel.stop_button.disabled
    with pytest.raises(TypeError):
        panel.run()  # called from code, it still raises


def test_suite_button_runs_every_task_of_the_suite_and_shows_its_average(monkeypatch: pytest.MonkeyPatch) -> None:
    superglue = Path(__file__).parent / "fixtures" / "superglue"
    calls: list[tuple[Any, str, dict[str, Any]]] = []

    def fake_evaluate(run_or_path: Any, task: Any, data: Any, **options: Any) -> EvalResult:
        calls.append((run_or_path, task.name, options))
        labels = np.array([0, 1, 1, 0])
        metrics = {m: 0.5 + 0.05 * len(calls) for m in task.metrics}
        return EvalResult(task, task.eval_split, str(run_or_path), metrics, labels, labels)

    monkeypatch.setattr(eval_api, "evaluate", fake_evaluate)
    mine = FakeRun()
    panel = EvalPanel(namespace={"mine": mine}, data=str(superglue), max_steps=5)
    assert panel.suite_picker.options == ("glue", "superglue") and panel.suite_picker.value == "superglue"
    panel.run_picker.value = ("mine",)
    panel.suite_button.click()
    names = ["boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc"]
    assert [(run, task) for run, task, _ in calls] == [(mine, f"superglue/{n}") for n in names]
    assert all(options["max_steps"] == 5 for _, _, options in calls)
    assert panel.status.value == "done: 8 evaluation(s)"
    table = panel.table.value
    assert "<th>SuperGLUE avg</th>" in table and table == Leaderboard(panel.results).to_html()
    expected = np.mean([np.mean(list(r.metrics.values())) for r in panel.results])
    assert panel.board.average("mine", "SuperGLUE") == pytest.approx(expected)
    assert f"<b>{expected:.4f}</b>" in table
    assert not panel.suite_button.disabled and panel.stop_button.disabled

    # FewGLUE's dev32 split: only COPA has it here; the others are skipped, and the status says so
    panel = EvalPanel(namespace={"mine": mine}, data=str(superglue), split="dev32")
    panel.run_picker.value = ("mine",)
    (result,) = panel.run_suite("superglue")
    assert result.task.name == "superglue/copa"
    status = html.unescape(panel.status.value)
    assert status.startswith("done: 1 evaluation(s); skipped: superglue/boolq (no 'dev32' split file under")
    # no task with data: the error is shown, not only raised
    panel = EvalPanel(namespace={"mine": mine}, data=str(EVAL / "imdb"))
    panel.run_picker.value = ("mine",)
    panel.suite_picker.value = "superglue"  # an IMDb folder suggests no suite: GLUE by default
    panel.suite_button.click()
    assert "DataError: no task of the superglue suite has data under" in html.unescape(panel.status.value)


def test_confusion_matrix_reads_in_both_themes_and_its_labels_do_not_overlap() -> None:
    import re

    svg = confusion_svg([[90, 3, 0], [10, 45, 5], [0, 0, 1]], ["negative", "neutral", "positive"], "t")
    # counts: each in the ink that contrasts with its own (fixed) cell colour
    cells = re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})"[^>]*/><text class="lmkit-confusion-count"'
                       r'[^>]*fill="(#[0-9a-f]{6})"', svg)
    assert len(cells) == 9 and min(_contrast(ink, fill) for fill, ink in cells) >= 4.5
    # everything else follows the theme (no fixed black on a dark page)
    others = re.findall(r'<text class="lmkit-confusion-(?:title|axis|label)"[^>]*>', svg)
    assert len(others) == 1 + 2 + 3 + 3 and all("var(--jp-ui-font-color" in t for t in others)
    axis = float(re.search(r'class="lmkit-confusion-axis" x="[\d.]+" y="([\d.]+)"', svg).group(1))
    columns = {float(y) for y in re.findall(r'class="lmkit-confusion-label" x="[\d.]+" y="([\d.]+)" '
                                            r'text-anchor', svg)}
    assert len(columns) == 1 and min(columns) - axis >= 14  # a line of 11-px text apart


def test_suite_follows_the_data_and_epochs_and_seconds_reach_the_evaluation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lmkit.engine.events import StartEvent, StepEvent

    superglue = Path(__file__).parent / "fixtures" / "superglue"
    assert EvalPanel(data=str(EVAL)).suite_picker.value == "glue"  # GLUE data: not SuperGLUE
    panel = EvalPanel(data=str(EVAL / "glue"))
    assert panel.suite_picker.value == "glue"
    panel.data.value = str(superglue)
    assert panel.suite_picker.value == "superglue"

    seen: list[tuple[dict[str, Any], list[int]]] = []

    def fake_evaluate(run_or_path: Any, task: Any, data: Any, reporters=(), **options: Any) -> EvalResult:
        moved: list[int] = []
        for event in [StartEvent("x", 3, 0, "x", 1, "jax", "cpu", 1),
                      *[StepEvent(k, 3, k / 3, 1.0, 1e-3, None, k, None) for k in (1, 2, 3)]]:
            for reporter in reporters:
                reporter(event)
            moved.append(panel.progress.value)
        seen.append((options, moved))
        return fake_result(task.name, run_or_path, 1.0)

    monkeypatch.setattr(eval_api, "evaluate", fake_evaluate)
    panel = EvalPanel(data=str(EVAL), max_steps=50, epochs=2, max_seconds=90)
    assert (panel.epochs.value, panel.max_seconds.value) == (2, 90)
    panel.run(runs=("scratch",), tasks=("glue/sst2",))
    options, moved = seen[-1]
    assert (options["max_steps"], options["epochs"], options["max_seconds"]) == (50, 2, 90)
    assert moved == [0, 1, 2, 3] and panel.progress.max == 3  # the bar moves as it fine-tunes
    panel.epochs.value = panel.max_seconds.value = 0  # unset: steps alone
    panel.run(runs=("scratch",), tasks=("glue/sst2",))
    assert "epochs" not in seen[-1][0] and "max_seconds" not in seen[-1][0]
