"""Sweeps on Optuna: trials are run directories, bad ones pruned from the engine's evaluations;
the study in SQLite survives a killed sweep and is shared by workers; bad inputs say what to do."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lmkit
from lmkit.cli import main
from lmkit.errors import ConfigError

ROOT = Path(__file__).parent.parent
SWEEP = Path(__file__).parent / "fixtures" / "sweep"
CONFIG, SPACE = SWEEP / "tiny.toml", SWEEP / "space.toml"


def study(out: Path):
    import optuna

    return optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'sweep.db'}")


def summary(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def starts(run_dir: str | Path) -> int:
    """How many trainings started in a run directory (its metrics.jsonl's start events)."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return sum(json.loads(line)["event"] == "start" for line in lines)


def cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmkit.cli", "sweep", str(CONFIG), "--space", str(SPACE),
            "--out", str(out), "--sampler", "random", *extra]


@pytest.mark.slow
def test_a_sweep_of_six_trials_prunes_bad_ones_early_and_keeps_every_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    monkeypatch.chdir(ROOT)  # the config's corpus is relative to the project
    seen: list = []
    result = lmkit.sweep(CONFIG, SPACE, trials=6, out=tmp_path / "s", sampler="random",
                         reporters=[seen.append])
    trials = study(tmp_path / "s").trials
    assert len(trials) == 6 and {t.number for t in trials} == set(range(6))
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and len(pruned) + len(complete) == 6
    for t in pruned:  # stopped at an evaluation, the directory kept and marked
        marked = summary(t.user_attrs["run_dir"])
        assert marked["reason"] == "pruned" and marked["steps"] < 24
        assert (Path(t.user_attrs["run_dir"]) / "checkpoint.npz").is_file()
    for t in complete:  # an ordinary run directory with the trial's values in its config
        done = summary(t.user_attrs["run_dir"])
        assert done["reason"] == "completed" and done["steps"] == 24
        assert t.value == pytest.approx(done["val_loss"])
        saved = lmkit.load(t.user_attrs["run_dir"]).config
        assert saved.learning_rate == pytest.approx(t.params["learning_rate"])
        assert saved.units == t.params["units"]
    assert result.best is not None and result.best.value == min(t.value for t in complete)
    ends = [e for e in seen if type(e).__name__ == "TrialEndEvent"]
    assert [e.trial.number for e in ends] == list(range(6)) and ends[-1].done == 6


def kill_during_a_trial(proc: subprocess.Popen, out: Path, first: int) -> Path:
    """SIGKILL the sweep while trial `first` or a later one trains; return that trial's run directory.

    The sweep is stopped (SIGSTOP) before the directories are read, so a trial that ends in the
    instant between the look and the kill cannot make the test kill between trials instead.
    """
    deadline = time.monotonic() + 600
    while True:
        assert proc.poll() is None, f"the sweep ended before trial {first}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"trial {first} did not start in 10 minutes"
        if (out / f"trial-{first:03d}" / "metrics.jsonl").is_file():
            proc.send_signal(signal.SIGSTOP)
            busy = [d for d in sorted(out.glob("trial-*"))
                    if (d / "metrics.jsonl").is_file() and not (d / "summary.json").is_file()]
            if busy:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return busy[0]
            proc.send_signal(signal.SIGCONT)  # between two trials: let the next one start
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_sweep_started_again_finishes_without_redoing_finished_trials(tmp_path: Path) -> None:
    out = tmp_path / "s"
    proc = subprocess.Popen(cli(out, "--trials", "4"), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    killed_dir = kill_during_a_trial(proc, out, first=2)
    before = {t.number: t for t in study(out).trials}
    first = {n: (t.state.name, Path(t.user_attrs["run_dir"], "summary.json").stat().st_mtime_ns)
             for n, t in before.items() if t.state.name in ("COMPLETE", "PRUNED")}
    [killed_number] = [n for n, t in before.items() if Path(t.user_attrs["run_dir"]).resolve() == killed_dir.resolve()]
    assert sorted(first) == list(range(killed_number)) and killed_number >= 2
    again = subprocess.run(cli(out, "--trials", "4"), cwd=ROOT, capture_output=True, text=True,
                           timeout=400)
    assert again.returncode == 0, again.stderr
    trials = {t.number: t for t in study(out).trials}
    finished = [n for n, t in trials.items() if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4
    for number, (state, mtime) in first.items():  # neither run again nor rewritten
        assert trials[number].state.name == state
        assert Path(trials[number].user_attrs["run_dir"], "summary.json").stat().st_mtime_ns == mtime
        assert starts(trials[number].user_attrs["run_dir"]) == 1
    killed = trials[killed_number]
    assert killed.state.name == "FAIL"  # its heartbeat stopped: failed, then tried again
    retried = [t for n, t in trials.items() if n > killed_number and t.params == killed.params]
    assert retried and retried[0].state.name in ("COMPLETE", "PRUNED")


@pytest.mark.slow
def test_two_workers_on_one_sqlite_study_never_run_the_same_trial(tmp_path: Path) -> None:
    out = tmp_path / "s"
    done = subprocess.run(cli(out, "--trials", "4", "--workers", "2"), cwd=ROOT,
                          capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr
    trials = study(out).trials
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(run_dirs)) == len(run_dirs) == len(trials) >= 4
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took trials
    for run_dir in run_dirs:  # each trial trained once, by one worker
        assert starts(run_dir) == 1


# -- bad input ------------------------------------------------------------------------------------

def test_an_empty_or_unparsable_space_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="names no key to vary"):
        lmkit.sweep(CONFIG, empty, trials=2, out=tmp_path / "s")
    broken = tmp_path / "broken.toml"
    broken.write_text("learning_rate = {log = [1e-4, \n")
    with pytest.raises(ConfigError, match="broken.toml is not valid TOML"):
        lmkit.sweep(CONFIG, broken, trials=2, out=tmp_path / "s")
    with pytest.raises(ConfigError, match=r"low < high"):
        lmkit.sweep(CONFIG, {"learning_rate": {"log": [1e-2, 1e-4]}}, trials=2, out=tmp_path / "s")
    with pytest.raises(ConfigError, match="is no range.*did you mean 'log'"):
        lmkit.sweep(CONFIG, {"learning_rate": {"logg": [1e-4, 1e-2]}}, trials=2, out=tmp_path / "s")
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_a_key_the_config_does_not_have_suggests_the_right_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'learning_rte', which is no config key.*did you mean "
                                          "'learning_rate'"):
        lmkit.sweep(CONFIG, "learning_rte = {log = [1e-4, 1e-2]}", trials=2, out=tmp_path / "s")
    with pytest.raises(ConfigError, match="'dropout' must be at most 0.95, got 2.0"):
        lmkit.sweep(CONFIG, {"dropout": [0.1, 2.0]}, trials=2, out=tmp_path / "s")


def test_a_metric_no_evaluation_produces_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no evaluation produces the metric 'val_acuracy'.*"
                                          "did you mean 'val_accuracy'"):
        lmkit.sweep(CONFIG, SPACE, trials=2, out=tmp_path / "s", metric="val_acuracy")


def test_an_unreachable_storage_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'sweep.db'}"
    with pytest.raises(ConfigError, match="cannot open the sweep's storage"):
        lmkit.sweep(CONFIG, SPACE, trials=2, out=tmp_path / "s", storage=url)


def test_a_missing_optuna_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ConfigError, match=r"needs the 'optuna' package.*lmkit\[track\]"):
        lmkit.sweep(CONFIG, SPACE, trials=2, out=tmp_path / "s")
    assert main(["sweep", str(CONFIG), "--space", str(SPACE), "--trials", "2",
                 "--out", str(tmp_path / "s")]) == 2
    assert "lmkit[track]" in capsys.readouterr().err


def test_the_grid_sampler_needs_listed_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sampler 'grid' needs a list of values.*learning_rate"):
        lmkit.sweep(CONFIG, SPACE, trials=2, out=tmp_path / "s", sampler="grid")
    with pytest.raises(ConfigError, match="did you mean 'random'"):
        lmkit.sweep(CONFIG, SPACE, trials=2, out=tmp_path / "s", sampler="randm")


@pytest.mark.slow
def test_a_sweep_of_fine_tunings_maximizes_a_task_score(tmp_path: Path) -> None:
    glue = Path(__file__).parent / "fixtures" / "eval" / "glue"
    result = lmkit.sweep({"embed_dim": 16, "units": 16, "vocab_size": 400, "max_length": 16,
                          "batch_size": 16, "max_steps": 6, "log_every": 2},
                         {"learning_rate": [1e-3, 1e-2]}, trials=2, out=tmp_path / "s",
                         sampler="grid", metric="accuracy",
                         finetune={"model": "scratch", "task": "glue/sst2", "data": str(glue)})
    assert result.direction == "maximize" and len(result.trials) == 2
    for trial in result.trials:
        scored = json.loads((Path(trial.run_dir) / "metrics.json").read_text())
        assert trial.value == pytest.approx(scored["metrics"]["accuracy"])
        assert (Path(trial.run_dir) / "checkpoint.npz").is_file()
    assert result.best.value == max(t.value for t in result.trials)
    with pytest.raises(ConfigError, match="scores no metric 'acuracy'.*did you mean 'accuracy'"):
        lmkit.sweep({"max_steps": 2, "vocab_size": 400, "embed_dim": 16, "units": 16},
                    {"learning_rate": [1e-3]}, trials=1, out=tmp_path / "t", metric="acuracy",
                    sampler="grid",
                    finetune={"model": "scratch", "task": "glue/sst2", "data": str(glue)})


@pytest.mark.slow
def test_a_sweep_of_fine_tunings_prunes_a_bad_trial_at_its_next_scoring(tmp_path: Path) -> None:
    import optuna

    glue = Path(__file__).parent / "fixtures" / "eval" / "glue"
    # seed 0 draws 1e-6, 3e-2, 1e-6: the third (a rate too small to learn) meets two finished curves
    result = lmkit.sweep({"embed_dim": 16, "units": 16, "vocab_size": 400, "max_length": 16,
                          "batch_size": 16, "max_steps": 12, "log_every": 4, "score_every": 4,
                          "score_examples": 60},
                         {"learning_rate": [3e-2, 1e-6]}, trials=3, out=tmp_path / "s",
                         sampler="random", seed=0, metric="accuracy",
                         finetune={"model": "scratch", "task": "glue/sst2", "data": str(glue)})
    trials = study(tmp_path / "s").trials
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert [t.number for t in pruned] == [2] and pruned[0].params["learning_rate"] == 1e-6
    marked = summary(pruned[0].user_attrs["run_dir"])  # stopped at its first scoring, folder kept
    assert marked["reason"] == "pruned" and marked["steps"] == 4
    assert (Path(pruned[0].user_attrs["run_dir"]) / "checkpoint.npz").is_file()
    assert [t.state for t in result.trials[:2]] == ["complete", "complete"]
    assert all(summary(t.run_dir)["steps"] == 12 for t in result.trials[:2])
