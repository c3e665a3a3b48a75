"""The engine's policies, on a trainee small enough to reason about exactly.

Language-model training (tests/test_training.py) and fine-tuning (tests/test_finetune.py) check
the same policies through their own clients.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lmkit.engine import engine
from lmkit.engine.events import CheckpointEvent, EndEvent, Event, StartEvent, StepEvent, StopSignal
from lmkit.engine.rundir import RunDir
from lmkit.errors import RunError, TrainingDiverged


class Walk:
    """Weights that move by the step number each step; losses and blow-ups where a test says."""

    def __init__(self, loss_at: dict[int, float] | None = None, inf_weights_at: int | None = None):
        self.w = np.zeros(3, np.float32)
        self.slots = np.zeros(2, np.float32)
        self.loss_at, self.inf_weights_at = loss_at or {}, inf_weights_at
        self.dispatches: list[tuple[int, int]] = []

    def train(self, step: int, k: int) -> np.ndarray:
        self.dispatches.append((step, k))
        losses = []
        for s in range(step + 1, step + k + 1):
            self.w = self.w + s
            self.slots = self.slots + 1
            if s == self.inf_weights_at:
                self.w[0] = np.inf
            losses.append(self.loss_at.get(s, 1.0 / s))
        return np.asarray(losses, np.float32)

    def evaluate(self) -> dict[str, float]:
        return {"val_loss": float(self.w.sum())}

    def learning_rate(self, step: int) -> float:
        return 0.1

    def model_arrays(self) -> list[np.ndarray]:
        return [self.w.copy()]

    def optimizer_arrays(self) -> list[np.ndarray]:
        return [self.slots.copy()]

    def restore(self, model: list[np.ndarray], optimizer: list[np.ndarray], source: str) -> None:
        self.w, self.slots = model[0].copy(), optimizer[0].copy()


def run(trainee: Walk, tmp_path: Path, total: int = 12, resume: bool = False,
        reporters: list[Any] | None = None, stop: StopSignal | None = None,
        **plan: Any) -> engine.Outcome:
    run_dir = RunDir(tmp_path) if resume else RunDir.create(tmp_path, overwrite=True)
    return engine.run(trainee, engine.Plan(total, **{"checkpoint_every": 4, **plan}),
                      engine.Job("walk", 3, learning_rate=0.1, retry="then try again"),
                      run_dir=run_dir, reporters=reporters or [], stop=stop, resume=resume)


def test_dispatches_end_on_evaluations_and_checkpoints(tmp_path: Path) -> None:
    walk = Walk()
    events: list[Event] = []
    outcome = run(walk, tmp_path, total=12, eval_every=6, steps_per_dispatch=5,
                  reporters=[events.append])
    assert walk.dispatches == [(0, 4), (4, 2), (6, 2), (8, 4)]
    assert outcome.reason == "completed" and outcome.step == 12
    assert [e.step for e in events if isinstance(e, CheckpointEvent)] == [4, 8, 12]
    assert RunDir(tmp_path).load_checkpoint().model[0].tolist() == [78.0] * 3  # 1 + ... + 12


def test_ctrl_c_once_stops_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    def press_ctrl_c(event: Event) -> None:
        if isinstance(event, StepEvent) and event.step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    outcome = run(Walk(), tmp_path, checkpoint_every=100, reporters=[press_ctrl_c])
    assert outcome.reason == "interrupted" and outcome.step == 2
    assert RunDir(tmp_path).load_checkpoint().step == 2


def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    def terminate(event: Event) -> None:
        if isinstance(event, StepEvent) and event.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    outcome = run(Walk(), tmp_path, checkpoint_every=100, reporters=[terminate])
    assert outcome.reason == "terminated" and outcome.step == 3
    assert RunDir(tmp_path).load_checkpoint().step == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again


def test_ctrl_c_twice_interrupts_and_still_keeps_what_was_trained(tmp_path: Path) -> None:
    def press_ctrl_c_twice(event: Event) -> None:
        if isinstance(event, StepEvent) and event.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        run(Walk(), tmp_path, checkpoint_every=100, reporters=[press_ctrl_c_twice])
    assert RunDir(tmp_path).load_checkpoint().step == 3


def test_a_non_finite_loss_raises_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    events: list[Event] = []
    with pytest.raises(TrainingDiverged) as info:
        run(Walk(loss_at={7: float("nan")}), tmp_path, reporters=[events.append])
    assert str(info.value).startswith("the training loss became nan at step 7; training stopped.")
    assert "last good checkpoint (step 4)" in str(info.value)
    assert "Try a lower learning_rate (now 0.1) or gradient clipping (clipnorm), then try again." in str(info.value)
    assert RunDir(tmp_path).load_checkpoint().step == 4
    assert isinstance(events[-1], EndEvent) and events[-1].reason == "diverged"
    assert RunDir(tmp_path).read_json("summary.json")["reason"] == "diverged"


def test_non_finite_weights_are_never_checkpointed(tmp_path: Path) -> None:
    # The loss of step 6 is computed before update 6, so it is finite while the weights are not.
    with pytest.raises(TrainingDiverged, match="the weights became non-finite by step 8"):
        run(Walk(inf_weights_at=6), tmp_path)
    ckpt = RunDir(tmp_path).load_checkpoint()
    assert ckpt.step == 4 and np.isfinite(ckpt.model[0]).all()


def test_stop_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path: Path) -> None:
    straight = Walk()
    run(straight, tmp_path / "straight")
    stop = StopSignal()

    def stop_at_5(event: Event) -> None:
        if isinstance(event, StepEvent) and event.step >= 5:
            stop.set()

    first = run(Walk(), tmp_path / "resumed", stop=stop, reporters=[stop_at_5], steps_per_dispatch=5,
                checkpoint_every=100)
    assert first.reason == "stopped" and first.step == 5
    resumed = Walk()
    outcome = run(resumed, tmp_path / "resumed", resume=True)
    assert outcome.step == 12 and resumed.dispatches[0] == (5, 1)
    np.testing.assert_array_equal(resumed.w, straight.w)
    np.testing.assert_array_equal(resumed.slots, straight.slots)
    assert [r["step"] for r in outcome.history if "loss" in r][:2] == [5, 6]  # history continues


def test_early_stopping_on_val_loss(tmp_path: Path) -> None:
    # val_loss (the sum of the weights) only grows: best at the first evaluation
    outcome = run(Walk(), tmp_path, total=40, eval_every=2, early_stopping=2)
    assert outcome.reason == "early_stopping" and outcome.step == 6
    assert outcome.summary["eval_step"] == 6  # the step its val_* figures belong to


def test_early_stopping_watches_a_score_where_higher_is_better(tmp_path: Path) -> None:
    class Scored(Walk):  # a task score that peaks at step 4, then falls
        def evaluate(self) -> dict[str, float]:
            return {"val_loss": 1.0, "val_bleu": -abs(float(self.w[0]) - 10.0)}

    events: list[Event] = []
    outcome = run(Scored(), tmp_path, total=40, eval_every=2, early_stopping=2, monitor="val_bleu",
                  higher_is_better=True, reporters=[events.append])
    # best at step 4 (w = 10); steps 6 and 8 are worse: stop at 8 (val_loss never changes, so
    # watching it would have stopped at 6)
    assert outcome.reason == "early_stopping" and outcome.step == 8
    assert [e.monitor for e in events if isinstance(e, StartEvent)] == ["val_bleu"]


def test_resume_refuses_a_checkpoint_of_another_shape(tmp_path: Path) -> None:
    from lmkit.engine.checkpoint import restore_arrays

    class Var:
        def __init__(self, shape: tuple[int, ...], path: str) -> None:
            self.shape, self.path, self.value = shape, path, None

        def assign(self, value: Any) -> None:
            self.value = value

    targets = [Var((2, 3), "gpt/embedding/embeddings"), Var((3,), "gpt/bias")]
    with pytest.raises(RunError, match=r"model weight 'gpt/bias' has shape \(4,\) in the checkpoint "
                                       r"but \(3,\) in this model"):
        restore_arrays(targets, [np.zeros((2, 3)), np.zeros(4)], "model weights", "ckpt.npz")
    assert targets[0].value is None  # nothing assigned: never half restored
    with pytest.raises(RunError, match="ckpt.npz holds 1 model weights, but this model has 2"):
        restore_arrays(targets, [np.zeros((2, 3))], "model weights", "ckpt.npz")


def test_a_run_directory_is_owned_by_one_process_at_a_time(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder = tmp_path / "run"
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom lmkit.engine.rundir import RunDir\n"
         "RunDir.create(sys.argv[1], overwrite=False)\nprint('owned', flush=True)\ntime.sleep(60)",
         str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "owned"
        with pytest.raises(RunError, match=rf"run directory {folder} is in use by process "
                                           rf"{owner.pid} \(a training or fine-tuning is writing there\)"):
            RunDir.create(folder, overwrite=True)
        import lmkit

        with pytest.raises(RunError, match=f"in use by process {owner.pid}"):
            lmkit.train(out=str(folder), overwrite=True, reporters=[])
    finally:
        owner.kill()
        owner.wait(timeout=30)
    with RunDir.create(folder, overwrite=True):  # the OS dropped the lock with its owner
        pass


def test_an_out_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "taken.txt"
    target.write_text("not a run")
    with pytest.raises(RunError, match=r"taken.txt is a file, not a directory"):
        RunDir.create(target, overwrite=True)


def test_a_resume_after_a_kill_keeps_one_history_row_per_step(tmp_path: Path) -> None:
    import shutil

    def keep_checkpoint_4(event: Event) -> None:
        if isinstance(event, CheckpointEvent) and event.step == 4:
            shutil.copy(tmp_path / "checkpoint.npz", tmp_path.parent / "ckpt4.npz")

    run(Walk(), tmp_path, total=8, reporters=[keep_checkpoint_4])
    # as if killed after logging step 8 but before its checkpoint: the checkpoint is at 4
    shutil.copy(tmp_path.parent / "ckpt4.npz", tmp_path / "checkpoint.npz")
    outcome = run(Walk(), tmp_path, total=12, resume=True)
    steps = [r["step"] for r in outcome.history if "loss" in r]
    assert steps == list(range(1, 13))


def test_a_refused_run_directory_is_released(tmp_path: Path) -> None:
    with RunDir.create(tmp_path, overwrite=False) as first:
        first.write_json("summary.json", {"steps": 1})
    with pytest.raises(RunError, match="already holds a run"):
        RunDir.create(tmp_path, overwrite=False)
    with RunDir.create(tmp_path, overwrite=True):  # not left locked by the refusal
        pass


def test_a_checkpoint_holding_python_objects_is_refused_without_suggesting_pickle(tmp_path: Path) -> None:
    from lmkit.engine.checkpoint import load_checkpoint

    np.savez(tmp_path / "checkpoint.npz", header=np.frombuffer(b'{"step": 1, "model": 1, "optimizer": 0}', np.uint8),
             model_0=np.array([{"a": 1}], dtype=object))
    with pytest.raises(RunError, match="holds Python objects, which lmkit never loads") as raised:
        load_checkpoint(tmp_path)
    assert "allow_pickle" not in str(raised.value)


def test_a_finite_blow_up_is_divergence_but_a_spike_is_not(tmp_path: Path) -> None:
    # The first loss is 1.0: 500 at step 7 is more than 100x it (lr 1e4 with AdamW reached 1e9
    # and "completed"); 50 at step 3 is a spike a healthy training can come back from.
    with pytest.raises(TrainingDiverged, match=r"the training loss blew up to 500 at step 7, more "
                                               r"than 100x its first value \(1\)") as info:
        run(Walk(loss_at={3: 50.0, 7: 500.0}), tmp_path)
    assert "last good checkpoint (step 4)" in str(info.value)
    assert RunDir(tmp_path).load_checkpoint().step == 4
    assert RunDir(tmp_path).read_json("summary.json")["reason"] == "diverged"


def test_a_refused_run_leaves_no_folder_and_files_have_normal_modes(tmp_path: Path) -> None:
    import os
    import stat

    run(Walk(), tmp_path / "kept")
    mask = os.umask(0)
    os.umask(mask)
    for name in ("checkpoint.npz", "summary.json", "metrics.jsonl"):
        assert stat.S_IMODE((tmp_path / "kept" / name).stat().st_mode) == 0o666 & ~mask, name
    with pytest.raises(RunError):
        with RunDir.create(tmp_path / "failed", overwrite=False):
            raise RunError("the training failed before writing anything")
    assert not (tmp_path / "failed").exists()
    with pytest.raises(RunError, match="cannot use .* as a run directory: Not a directory"):
        RunDir.create(tmp_path / "kept" / "summary.json" / "below", overwrite=False)


class SlowWalk(Walk):
    """A `Walk` whose every dispatch takes at least 50 ms."""

    def train(self, step: int, k: int) -> np.ndarray:
        import time

        time.sleep(0.05)
        return super().train(step, k)


def test_a_time_budget_stops_training_before_a_dispatch_that_would_pass_it(tmp_path: Path) -> None:
    events: list[Event] = []
    stop = StopSignal()
    outcome = run(SlowWalk(), tmp_path, total=100, checkpoint_every=100, max_seconds=0.12,
                  reporters=[events.append], stop=stop)
    assert not stop.is_set()  # shared by the tasks of a suite: the next one still trains
    # dispatches of >= 50 ms: a third would end past 0.12 s, so at most 2 steps, checkpointed
    assert outcome.reason == engine.TIME_BUDGET and 1 <= outcome.step <= 2
    assert isinstance(events[-1], EndEvent) and events[-1].reason == "time_budget"
    assert RunDir(tmp_path).load_checkpoint().step == outcome.step
    assert RunDir(tmp_path).read_json("summary.json")["reason"] == "time_budget"


class Compiling(Walk):
    """A trainee on a fake clock: its first dispatch takes 9 s (it compiles), then 10 ms a step."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__()
        self.clock = clock

    def train(self, step: int, k: int) -> np.ndarray:
        self.clock[0] += 9.0 if not self.dispatches else 0.01 * k
        return super().train(step, k)


def test_the_eta_leaves_out_the_first_dispatch_which_compiles(tmp_path: Path, monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(engine.time, "monotonic", lambda: clock[0])
    events: list[Event] = []
    run(Compiling(clock), tmp_path, total=40, steps_per_dispatch=4, checkpoint_every=40,
        reporters=[events.append])
    steps = [e for e in events if isinstance(e, StepEvent)]
    # unknown, not a guess from the compiling dispatch (which said 81 s for 36 steps left)
    assert steps[0].eta is None and steps[0].tokens_per_second is None
    # from the second dispatch on: 10 ms a step, whatever the first one took
    for e in steps[1:]:
        assert e.eta == pytest.approx((40 - e.step) * 0.01), e


class Scheduled(Compiling):
    """`Compiling` with a learning-rate schedule (`lmkit.schedules.WarmupDecay`)."""

    def __init__(self, clock: list[float], schedule: Any) -> None:
        super().__init__(clock)
        self.schedule = schedule

    def learning_rate(self, step: int) -> float:
        return float(self.schedule(step - 1))


@pytest.mark.parametrize("warmup, shape, where", [(6000, "linear", "still warming up"),
                                                  (0, "cosine", "before its decay ends")])
def test_a_time_budget_that_stops_before_the_schedule_ends_is_warned_with_the_step(
        tmp_path: Path, monkeypatch, warmup: int, shape: str, where: str) -> None:
    import re

    from lmkit.errors import LmkitWarning
    from lmkit.schedules import WarmupDecay

    clock = [0.0]
    monkeypatch.setattr(engine.time, "monotonic", lambda: clock[0])
    trainee = Scheduled(clock, WarmupDecay(1e-3, 100_000, warmup, shape, 0.1))
    # 9 s of compilation, then 10 ms a step: 10 s leave about 150 of the 100,000 steps
    with pytest.warns(LmkitWarning, match=rf"^max_seconds=10 will stop training at about step \d+, {where}: "
                                          r"the learning-rate schedule spans all 100,000 steps .* set "
                                          r"max_steps to about \d+$") as caught:
        outcome = run(trainee, tmp_path, total=100_000, steps_per_dispatch=50, checkpoint_every=100_000,
                      max_seconds=10.0)
    assert outcome.reason == engine.TIME_BUDGET
    said = [int(n.replace(",", "")) for n in re.findall(r"about step ([\d,]+)", str(caught[0].message))]
    assert abs(said[0] - outcome.step) <= 2, (said, outcome.step)  # where it did stop


def test_no_schedule_warning_when_the_rate_is_constant_or_the_budget_suffices(tmp_path: Path,
                                                                              monkeypatch) -> None:
    import warnings

    from lmkit.schedules import WarmupDecay

    clock = [0.0]
    monkeypatch.setattr(engine.time, "monotonic", lambda: clock[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        constant = run(Scheduled(clock, WarmupDecay(1e-3, 100_000)), tmp_path / "constant",
                       total=100_000, steps_per_dispatch=50, checkpoint_every=100_000, max_seconds=10.0)
        clock[0] = 0.0
        enough = run(Scheduled(clock, WarmupDecay(1e-3, 400, 100, "cosine")), tmp_path / "enough",
                     total=400, steps_per_dispatch=50, checkpoint_every=400, max_seconds=60.0)
    assert constant.reason == engine.TIME_BUDGET and enough.reason == "completed"


def _training_run(folder: Path) -> dict[str, bytes]:
    """A folder laid out as a finished training run; returns its files' bytes."""
    folder.mkdir(parents=True)
    for name in ("config.toml", "tokenizer.json", "model.keras", "checkpoint.npz", "summary.json"):
        (folder / name).write_bytes(f"{name} of the training".encode())
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_fine_tuning_never_writes_into_or_inside_a_training_run(tmp_path: Path) -> None:
    from lmkit.engine.rundir import FINETUNING

    before = _training_run(tmp_path / "run")
    for out in (tmp_path / "run", tmp_path / "run" / "sst2"):
        with pytest.raises(RunError, match="a training run directory"):
            RunDir.create(out, overwrite=True, kind=FINETUNING)  # what `lmkit eval RUN --out RUN` asks
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_a_non_empty_folder_that_is_not_a_run_is_refused_untouched(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    (project / "config.toml").write_text("arch = 'gpt'\n")  # a user's own config is not a run
    with pytest.raises(RunError, match=r"is not empty and holds no lmkit run \(notes.txt\)"):
        RunDir.create(project, overwrite=True)
    assert sorted(p.name for p in project.iterdir()) == ["config.toml", "notes.txt"]
    with pytest.raises(RunError, match="is not empty and holds no lmkit run"):
        RunDir.create("/", overwrite=True)


def test_run_files_that_are_links_are_neither_followed_nor_deleted(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".lock").symlink_to(victim)
    with pytest.raises(RunError, match=r"\.lock is a symbolic link"):
        RunDir.create(tmp_path / "a", overwrite=True)
    assert victim.read_text() == "precious"  # no pid written through the link
    before = _training_run(tmp_path / "b")
    (tmp_path / "b" / "checkpoint.npz").unlink()
    (tmp_path / "b" / "checkpoint.npz").symlink_to(tmp_path / "a", target_is_directory=True)
    with pytest.raises(RunError, match="holds checkpoint.npz as a symbolic link"):
        RunDir.create(tmp_path / "b", overwrite=True)
    kept = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()
            if not p.is_symlink() and p.name != ".lock"}
    assert kept == {k: v for k, v in before.items() if k != "checkpoint.npz"}  # nothing deleted first
