"""What a user sees of a sweep: the notebook's live leaderboard and charts, the terminal's lines
and table, the HTML report."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError

from lmkit.cli import main
from lmkit.cli.tuning import TrialLines
from lmkit.notebook.sweep_panel import TrialBoard, split_cell
from lmkit.sweeps.report import importance_chart, parallel_chart
from lmkit.sweeps.study import SweepResult, TrialEndEvent, TrialRecord, TrialStartEvent

ROOT = Path(__file__).parent.parent
SWEEP = Path(__file__).parent / "fixtures" / "sweep"

TRIALS = [TrialRecord(0, "complete", 2.5, {"learning_rate": 1e-3, "layers": 1}, "s/trial-000", 4.0, 24),
          TrialRecord(1, "complete", 2.1, {"learning_rate": 3e-3, "layers": 2}, "s/trial-001", 5.0, 24),
          TrialRecord(2, "pruned", 3.9, {"learning_rate": 1e-5, "layers": 2}, "s/trial-002", 1.0, 6)]


def events() -> list:
    out: list = []
    for i, t in enumerate(TRIALS):
        out.append(TrialStartEvent(t.number, t.params, t.run_dir, 3))
        best = min(TRIALS[:i + 1], key=lambda r: r.value if r.state == "complete" else 99)
        out.append(TrialEndEvent(t, best, i + 1, 3, "val_loss", "minimize"))
    return out


def test_the_leaderboard_shows_the_running_trial_then_the_best_first_and_the_pruned_marked() -> None:
    board = TrialBoard("val_loss", 3)
    board(events()[0])
    assert "trial 0 running: learning_rate=0.001, layers=1" in repr(board)
    assert "running…" in board._repr_html_()
    for event in events()[1:]:
        board(event)
    text = repr(board)
    assert text.splitlines()[0] == ("sweep: 3/3 trials ended here, 1 pruned; best val_loss 2.1000 "
                                    "(trial 1)")
    order = [line.split()[1] for line in text.splitlines()[1:]]
    assert order == ["1", "0", "2"]  # best first, the pruned one last
    page = board._repr_html_()
    assert "running" not in page and "pruned @ step 6" in page
    assert page.index("<td>1</td>") < page.index("<td>0</td>") < page.index("<td>2</td>")


def test_charts_draw_in_the_pages_own_text_colour_for_both_themes() -> None:
    bars = importance_chart({"learning_rate": 0.8, "layers": 0.2})
    assert bars.index("learning_rate") < bars.index("layers")  # most important on top
    lines = parallel_chart(SweepResult(Path("s"), "sqlite://", "val_loss", "minimize", TRIALS))
    for svg in (bars, lines):
        # text in currentColor: dark on a light theme, light on a dark one; no fixed black/white
        assert 'fill="currentColor"' in svg and "#000" not in svg and "#fff" not in svg.lower()
    # as a picture (a notebook's saved output, shown in an <img>: no page colour reaches it)
    # the chart brings its own white background and dark text
    picture = importance_chart({"learning_rate": 0.8}, static=True)
    assert 'style="color:#212121"' in picture and 'fill="#ffffff"' in picture
    assert lines.count('class="lmkit-trial"') == 3 and lines.count("stroke-dasharray") == 1
    best = lines.split('data-trial="1"')[1].split("stroke-opacity=")[1][:6]
    worst = lines.split('data-trial="2"')[1].split("stroke-opacity=")[1][:6]
    assert float(best.strip('"')) > float(worst.strip('"'))  # the better trial drawn stronger


def test_the_terminal_prints_a_line_per_trial(capsys: pytest.CaptureFixture) -> None:
    lines = TrialLines()
    for event in events():
        lines(event)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "trial 0: learning_rate=0.001 layers=1 -> s/trial-000"
    assert out[-1] == ("trial 2: pruned at step 6 val_loss 3.9000 in 1s; best 2.1000 (trial 1) "
                       "[3/3 done]")


def test_a_cell_splits_into_its_config_and_its_space(ip) -> None:
    assert split_cell('arch = "lstm"\n[space]\nlayers = [1, 2]\n[model]\nmlp = ["a"]\n') == (
        'arch = "lstm"\n', 'layers = [1, 2]\n[model]\nmlp = ["a"]\n')
    with pytest.raises(UsageError, match="give the space once"):
        ip.run_cell_magic("lmsweep", "--trials 2 --out s", 'arch = "lstm"\n')


@pytest.mark.slow
def test_lmsweep_runs_a_sweep_with_its_leaderboard_and_the_report_renders(
        ip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(ROOT)
    config = (SWEEP / "tiny.toml").read_text()
    ip.run_cell_magic("lmsweep", f"--trials 3 --sampler random --out {tmp_path / 's'} -o found",
                      config + "[space]\nlearning_rate = {log = [1e-3, 3e-2]}\n")
    found = ip.user_ns["found"]
    assert len(found.trials) == 3 and found.best is not None
    shown = capsys.readouterr().out
    assert "sweep: 3/3 trials ended here" in shown  # the board's last state (text in a terminal)
    assert "<the sweep's parallel coordinates chart>" in shown  # an SVG picture's text form
    assert main(["sweep", "--report", str(tmp_path / "s")]) == 0
    page = (tmp_path / "s" / "report.html").read_text()
    assert "parameter importance" in page or "needs at least two finished trials" in page
    assert page.count('class="lmkit-trial"') == 3 and f"trial-00{found.best.number}" in page
