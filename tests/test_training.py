"""Training end to end on a tiny corpus: run directory, events, stop, resume, divergence, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lmkit
from lmkit.errors import ConfigError, DataError, RegistryError, RunError, TrainingDiverged
from lmkit.engine.events import CheckpointEvent, EndEvent, EvalEvent, StartEvent, StepEvent, StopSignal

CORPUS = Path(__file__).parent / "fixtures" / "core" / "shakespeare_30k.txt"

TINY = dict(data=str(CORPUS), arch="gpt", layers=1, heads=2, embed_dim=32, seq_len=32,
            batch_size=8, max_steps=12, eval_every=4, eval_batches=2, checkpoint_every=4,
            warmup_steps=2, learning_rate=3e-3, sample_tokens=20)


def train(tmp_path: Path, name: str = "run", **overrides) -> lmkit.Run:
    return lmkit.train(**{**TINY, "out": str(tmp_path / name), **overrides}, reporters=[])


@pytest.mark.slow
def test_training_writes_a_complete_run_directory_and_learns(tmp_path: Path) -> None:
    events: list = []
    run = lmkit.train(**{**TINY, "max_steps": 40, "eval_every": 20}, out=str(tmp_path / "run"),
                      reporters=[events.append])
    for name in ("config.toml", "tokenizer.json", "model.keras", "checkpoint.npz",
                 "metrics.jsonl", "summary.json"):
        assert (run.dir / name).is_file(), name
    kinds = [type(e) for e in events]
    assert kinds[0] is StartEvent and kinds[-1] is EndEvent
    assert StepEvent in kinds and EvalEvent in kinds and CheckpointEvent in kinds
    steps = [r for r in run.history if "loss" in r]
    assert steps[-1]["step"] == 40
    assert steps[-1]["loss"] < steps[0]["loss"] - 0.5  # it learns
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["reason"] == "completed" and summary["steps"] == 40
    assert summary["val_perplexity"] == pytest.approx(np.exp(summary["val_loss"]), rel=0.05)
    assert len(summary["sample"]) > 0
    logged = [json.loads(line)["event"] for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert logged[0] == "start" and logged[-1] == "end" and "checkpoint" in logged


@pytest.mark.slow
def test_load_gives_back_the_same_model(tmp_path: Path) -> None:
    run = train(tmp_path)
    again = lmkit.load(run.dir)
    x = np.arange(16, dtype="int32").reshape(1, 16) % run.tokenizer.vocab_size
    np.testing.assert_allclose(np.asarray(run.model(x)), np.asarray(again.model(x)), atol=1e-6)
    assert again.config == run.config and again.history == run.history
    assert again.generate("ROMEO:", max_new_tokens=15, seed=3) == run.generate("ROMEO:", max_new_tokens=15, seed=3)
    from lmkit.notebook.display import run_html

    shown = run_html(again)  # what a notebook displays for a bare `run`
    assert "<svg" in shown and "val_loss" in shown and str(run.dir) in shown


@pytest.mark.slow
def test_same_seed_same_run(tmp_path: Path) -> None:
    a, b = train(tmp_path, "a", dropout=0.1), train(tmp_path, "b", dropout=0.1)
    assert [r.get("loss") for r in a.history] == [r.get("loss") for r in b.history]
    c = train(tmp_path, "c", dropout=0.1, seed=1)
    assert [r.get("loss") for r in a.history] != [r.get("loss") for r in c.history]


@pytest.mark.slow
def test_resume_continues_exactly_where_it_stopped(tmp_path: Path) -> None:
    straight = train(tmp_path, "straight", max_steps=12, dropout=0.1)
    stop = StopSignal()

    def stop_after_8(event) -> None:
        if isinstance(event, StepEvent) and event.step >= 8:
            stop.set()

    first = lmkit.train(**{**TINY, "out": str(tmp_path / "resumed"), "dropout": 0.1},
                        reporters=[stop_after_8], stop=stop)
    assert first.summary["reason"] == "stopped" and first.summary["steps"] == 8
    resumed = lmkit.train(resume=first.dir, reporters=[])
    assert resumed.summary["steps"] == 12
    for a, b in zip(straight.model.weights, resumed.model.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert [r["step"] for r in resumed.history if "loss" in r][-1] == 12


@pytest.mark.slow
def test_stop_signal_ends_at_a_step_boundary_with_a_checkpoint(tmp_path: Path) -> None:
    stop = StopSignal()
    seen: list[int] = []

    def press_stop(event) -> None:
        if isinstance(event, StepEvent):
            seen.append(event.step)
            if event.step >= 4:
                stop.set()

    run = lmkit.train(**{**TINY, "out": str(tmp_path / "r"), "max_steps": 1000},
                      steps_per_dispatch=2, reporters=[press_stop], stop=stop)
    assert run.summary["reason"] == "stopped"
    assert run.summary["steps"] == seen[-1] == 4
    from lmkit.engine.checkpoint import load_checkpoint
    from lmkit.losses import nll
    from lmkit.optim import build_optimizer

    assert load_checkpoint(run.dir).step == 4
    assert lmkit.load(run.dir).summary["steps"] == 4


def test_early_stopping(tmp_path: Path) -> None:
    # A learning rate this small cannot improve the validation loss.
    run = train(tmp_path, learning_rate=1e-12, max_steps=40, eval_every=2, early_stopping=2)
    assert run.summary["reason"] == "early_stopping"
    assert run.summary["steps"] == 6  # evals at 2 (best), 4 and 6 (no improvement)


@pytest.mark.slow
def test_full_batch_gradient_descent_takes_one_step_per_pass(tmp_path: Path) -> None:
    run = train(tmp_path, optimizer="gd", learning_rate=0.5, schedule="constant", epochs=3,
                max_steps=None, eval_every=1, arch="rnn", units=16, validation_split=0.5)
    losses = [r["loss"] for r in run.history if "loss" in r]
    assert run.summary["steps"] == 3 and len(losses) == 3
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", ["full_batch", "batch_gd"])
def test_every_name_of_full_batch_gradient_descent_takes_one_step_per_pass(tmp_path: Path, name: str) -> None:
    # Regression: the aliases of `gd` used to train mini-batch (2 epochs took 2,626 steps).
    run = train(tmp_path, optimizer=name, learning_rate=0.5, schedule="constant", epochs=2,
                max_steps=None, eval_every=1, arch="rnn", units=16, validation_split=0.5)
    assert run.summary["steps"] == 2 and len([r for r in run.history if "loss" in r]) == 2


@pytest.mark.slow
def test_ctrl_c_once_stops_training_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    import os
    import signal

    def press_ctrl_c(event) -> None:
        if isinstance(event, StepEvent) and event.step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    run = lmkit.train(**{**TINY, "out": str(tmp_path / "run"), "steps_per_dispatch": 2,
                         "checkpoint_every": 100}, reporters=[press_ctrl_c])
    assert run.summary["reason"] == "interrupted" and run.summary["steps"] == 2
    from lmkit.engine.checkpoint import load_checkpoint
    from lmkit.losses import nll
    from lmkit.optim import build_optimizer

    assert load_checkpoint(run.dir).step == 2 and (run.dir / "model.keras").is_file()
    assert lmkit.train(resume=run.dir, reporters=[]).summary["steps"] == 12


@pytest.mark.slow
def test_resuming_with_another_shape_is_refused_naming_the_key_or_the_weight(tmp_path: Path) -> None:
    run = train(tmp_path, max_steps=4)
    with pytest.raises(ConfigError, match=r"cannot resume .* with embed_dim=64 \(the run has 32\)"):
        lmkit.train(resume=run.dir, embed_dim=64, reporters=[])
    # a config.toml edited by hand gets past that check; the checkpoint still refuses to load
    config = run.dir / "config.toml"
    config.write_text(config.read_text().replace("embed_dim = 32", "embed_dim = 64"))
    with pytest.raises(RunError, match=r"checkpoint.npz: model weight '[^']+' has shape \(\d+, 32\) "
                                       r"in the checkpoint but \(\d+, 64\) in this model"):
        lmkit.train(resume=run.dir, reporters=[])


@pytest.mark.slow
def test_epochs_set_the_number_of_steps(tmp_path: Path) -> None:
    run = train(tmp_path, epochs=0.05, max_steps=None)
    ids_per_step = TINY["batch_size"] * TINY["seq_len"]
    train_tokens = int(30000 * 0.9)  # char tokenizer: one token per character
    assert run.summary["steps"] == int(np.ceil(0.05 * train_tokens / ids_per_step))


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(TrainingDiverged) as info:
        train(tmp_path, optimizer="sgd", learning_rate=1e25, schedule="constant", clipnorm=None,
              checkpoint_every=1, steps_per_dispatch=1, max_steps=50)
    message = str(info.value)
    assert "the training loss became" in message and "at step" in message
    assert "last good checkpoint" in message
    from lmkit.engine.checkpoint import load_checkpoint
    from lmkit.losses import nll
    from lmkit.optim import build_optimizer

    ckpt = load_checkpoint(tmp_path / "run")
    failed_step = int(message.split("at step ")[1].split(";")[0])
    assert ckpt.step == failed_step - 1
    assert all(np.all(np.isfinite(a)) for a in ckpt.model)


@pytest.mark.slow
def test_a_batch_in_parts_trains_the_same_model(tmp_path: Path) -> None:
    """Gradients of independent parts of each batch, averaged, are the whole batch's gradient."""
    whole = train(tmp_path, "whole", batch_parts=1, sample_tokens=0)
    halves = train(tmp_path, "halves", batch_parts=2, sample_tokens=0)
    quarters = train(tmp_path, "quarters", batch_parts=4, sample_tokens=0)
    losses = [e["loss"] for e in whole.history if "loss" in e]
    assert len(losses) == 3  # steps 4, 8, 12
    for split in (halves, quarters):
        assert [e["loss"] for e in split.history if "loss" in e] == pytest.approx(losses, abs=1e-5)
        for a, b in zip(whole.model.get_weights(), split.model.get_weights()):
            np.testing.assert_allclose(a, b, atol=2e-5)


def test_freeze_patterns_match_paths_with_or_without_the_model_name() -> None:
    from types import SimpleNamespace

    from lmkit.param_groups import labels_from_patterns

    variables = [SimpleNamespace(path=p) for p in
                 ("gpt_3/embedding", "gpt_3/block_0/w_qkv", "gpt_3/block_1/w_qkv", "gpt_3/ln_f/gamma")]
    labels = labels_from_patterns(variables, {"embedding": "frozen", "gpt_*/block_0/*": "frozen",
                                              "*/gamma": "norms"}, "train")
    assert labels == ["frozen", "frozen", "train", "norms"]
    with pytest.raises(ConfigError, match=r"freeze pattern 'block_2/\*' matches no trainable "
                                          r"variable.*The paths are: embedding, block_0/w_qkv, "
                                          r"block_1/w_qkv, ln_f/gamma"):
        labels_from_patterns(variables, {"block_*/w_qkv": "frozen", "block_2/*": "frozen"}, "train")


@pytest.mark.slow
def test_frozen_patterns_keep_their_weights_bit_identical_while_the_others_train(tmp_path: Path) -> None:
    """Frozen weights end where they started (a run of 2 steps and one of 12 agree on them);
    the others train; a frozen variable has no optimizer slots."""
    from lmkit.engine.checkpoint import load_checkpoint

    freeze = ["embedding", "block_0/ln_*"]
    short = train(tmp_path, "short", max_steps=2, freeze=freeze, sample_tokens=0)
    long = train(tmp_path, "long", freeze=freeze, sample_tokens=0)
    free = train(tmp_path, "free", sample_tokens=0)
    names = [v.path.split("/", 1)[1] for v in long.model.trainable_variables]
    frozen = [n == "embedding" or n.startswith("block_0/ln_") for n in names]
    assert sum(frozen) == 5  # the embedding and block 0's two norms (scale and offset)
    for name, is_frozen, a, b, c in zip(names, frozen, short.model.trainable_variables,
                                        long.model.trainable_variables, free.model.trainable_variables):
        a, b, c = np.asarray(a), np.asarray(b), np.asarray(c)
        if is_frozen:
            np.testing.assert_array_equal(a, b, err_msg=name)
            assert not np.array_equal(b, c), name  # it would have trained
        else:
            assert not np.array_equal(a, b), name
    slots = len(load_checkpoint(long.dir).optimizer)
    assert slots < len(load_checkpoint(free.dir).optimizer)
    with pytest.raises(ConfigError, match=r"freeze pattern 'blok_0/\*' matches no trainable "
                                          r"variable.*block_0/w_qkv"):
        train(tmp_path, "typo", freeze=["blok_0/*"])


@pytest.mark.slow
def test_the_step_really_computes_parts_separately() -> None:
    """With two parts the compiled step holds every matmul of the gradient twice, at half size."""
    import keras

    from lmkit.build import build_model
    from lmkit.config import TrainConfig
    from lmkit.losses import build_loss
    from lmkit.optim import build_optimizer
    from lmkit.schedules import build_schedule
    from lmkit.training.step import make_stepper

    cfg = TrainConfig(**{**TINY, "data": "tinyshakespeare"})
    xs = np.zeros((1, cfg.batch_size, cfg.seq_len), np.int32)

    def matmuls(parts: int) -> list[str]:
        model = build_model(cfg, 40)
        optimizer = build_optimizer(cfg, build_schedule(cfg, 10))
        stepper = make_stepper(model, optimizer, build_loss(cfg), ["loss"], 5, parts=parts)
        text = stepper.step.lower(xs, xs).as_text()
        return [line for line in text.splitlines() if "dot_general" in line]

    whole, halves = matmuls(1), matmuls(2)
    assert len(halves) == 2 * len(whole)
    assert sum(f"tensor<{cfg.batch_size // 2}x" in m for m in halves) > sum(
        f"tensor<{cfg.batch_size // 2}x" in m for m in whole)
    keras.backend.clear_session()


@pytest.mark.slow
def test_an_evaluation_compiled_beside_the_training_step_scores_the_same() -> None:
    """`prepare_evaluation` compiles the evaluation of one batch shape ahead (in a thread); it
    scores exactly as the step compiled on first use, and other shapes still work."""
    import keras

    from lmkit.build import build_model
    from lmkit.config import TrainConfig
    from lmkit.losses import build_loss
    from lmkit.optim import build_optimizer
    from lmkit.schedules import build_schedule
    from lmkit.training.step import make_stepper

    cfg = TrainConfig(**{**TINY, "data": "tinyshakespeare"})
    rng = np.random.default_rng(0)
    full = rng.integers(0, 40, (cfg.batch_size, cfg.seq_len + 1)).astype(np.int32)
    batches = [(full[:, :-1], full[:, 1:]), (full[:3, :-1], full[:3, 1:])]  # a short last batch

    model = build_model(cfg, 40)
    optimizer = build_optimizer(cfg, build_schedule(cfg, 10))
    stepper = make_stepper(model, optimizer, build_loss(cfg), ["loss", "accuracy"], 5)
    stepper.prepare_evaluation(full[:, :-1].shape)
    prepared = stepper.evaluate(batches)
    assert stepper._eval_batch._cache_size() == 1  # only the short batch compiled on use
    plain: dict[str, float] = {}
    for x, y in batches:  # the same batches through the step compiled on first use
        for k, v in stepper._eval_batch(*stepper.state[:2], x, y).items():
            plain[k] = plain.get(k, 0.0) + float(v)
    assert stepper._eval_batch._cache_size() == 2
    assert prepared == pytest.approx(plain, rel=1e-6)
    keras.backend.clear_session()


@pytest.mark.slow
def test_a_training_step_compiled_ahead_trains_the_same_without_compiling_again() -> None:
    """`prepare_training` compiles the step in the background thread (how `lmkit train`
    traces its evaluation and sample meanwhile); the first `train` then asks XLA for no
    program and takes the same steps as a step compiled on first use."""
    import keras

    from lmkit.build import build_model
    from lmkit.config import TrainConfig
    from lmkit.losses import build_loss
    from lmkit.optim import build_optimizer
    from lmkit.paths import compilations, enable_compilation_cache
    from lmkit.schedules import build_schedule
    from lmkit.training.step import make_stepper

    enable_compilation_cache()
    cfg = TrainConfig(**{**TINY, "data": "tinyshakespeare"})
    full = np.random.default_rng(1).integers(0, 40, (3, cfg.batch_size, cfg.seq_len + 1))
    xs, ys = full[..., :-1].astype(np.int32), full[..., 1:].astype(np.int32)

    def trained(ahead: bool) -> tuple[int, np.ndarray, list[np.ndarray]]:
        keras.utils.set_random_seed(0)
        model = build_model(cfg, 40)
        stepper = make_stepper(model, build_optimizer(cfg, build_schedule(cfg, 10)),
                               build_loss(cfg), ["loss"], 5)
        if ahead:
            stepper.prepare_training(xs, ys)
            stepper._train_ready.result()
        before = sum(compilations().values())
        losses = stepper.train(xs, ys)
        return sum(compilations().values()) - before, losses, stepper.model_arrays()

    asked, losses, weights = trained(ahead=False)
    asked_ahead, losses_ahead, weights_ahead = trained(ahead=True)
    assert asked >= 1 and asked_ahead == 0
    np.testing.assert_array_equal(losses_ahead, losses)
    for a, b in zip(weights_ahead, weights):
        np.testing.assert_array_equal(a, b)
    keras.backend.clear_session()


@pytest.mark.slow
def test_automatic_batch_parts_follow_the_architecture_and_batch() -> None:
    from lmkit.build import build_model
    from lmkit.config import TrainConfig
    from lmkit.training.step import BATCH_PARTS_MAX_TOKENS, BATCH_PARTS_MIN_STEPS, batch_parts

    def parts(steps: int = 2000, **overrides) -> int:
        cfg = TrainConfig(**{**TINY, "data": "tinyshakespeare", **overrides})
        return batch_parts(cfg, build_model(cfg, 40), steps)

    assert parts() == 2                                  # gpt, 8 x 32 tokens, on this CPU
    assert parts(steps=BATCH_PARTS_MIN_STEPS - 1) == 1   # too short to repay the compilation
    assert parts(arch="gated_cnn") == 2
    assert parts(arch="lstm") == 1                       # recurrent: slower in parts
    assert parts(batch_size=7) == 1                      # no equal halves
    assert parts(batch_size=BATCH_PARTS_MAX_TOKENS // 32 + 2) == 1  # large batches stay whole
    assert parts(arch="lstm", batch_parts=4) == 4        # an explicit choice is kept


@pytest.mark.slow
def test_existing_run_is_not_overwritten(tmp_path: Path) -> None:
    train(tmp_path, max_steps=2)
    with pytest.raises(RunError, match="already holds a run .* overwrite=true"):
        train(tmp_path, max_steps=2)
    run = train(tmp_path, max_steps=3, overwrite=True)
    assert run.summary["steps"] == 3


@pytest.mark.parametrize("key,value,error,text", [
    ("arch", "lstn", RegistryError, "did you mean 'lstm'"),
    ("optimizer", "adamm", RegistryError, "did you mean 'adam'"),
    ("schedule", "cosinus", RegistryError, "unknown schedule 'cosinus'"),
    ("loss", "xentropy", RegistryError, "unknown loss 'xentropy'"),
    ("metrics", ["perplexty"], RegistryError, "did you mean 'perplexity'"),
    ("tokenizer", "chars", RegistryError, "did you mean 'char'"),
    ("learning_rate", -1.0, ConfigError, "'learning_rate' must be greater than 0.0, got -1.0"),
    ("seq_len", 40000, ConfigError, "seq_len"),
    ("batch_parts", 3, ConfigError, r"'batch_parts' \(3\) must divide 'batch_size' \(8\)"),
])
def test_bad_input_is_reported_before_training(tmp_path: Path, key, value, error, text) -> None:
    with pytest.raises(error, match=text):
        train(tmp_path, **{key: value})


def test_a_validation_corpus_too_short_for_one_window_is_named(tmp_path: Path) -> None:
    short = tmp_path / "val.txt"
    short.write_text("To be.\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"validation_data='.*val.txt' has 7 tokens, fewer than "
                                          r"seq_len \+ 1 = 33"):
        train(tmp_path, validation_data=str(short))
    with pytest.raises(DataError, match="not found"):
        train(tmp_path, validation_data=str(tmp_path / "nope.txt"))


def test_missing_and_empty_corpus(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found: there is no file or folder at"):
        train(tmp_path, data=str(tmp_path / "nope.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        train(tmp_path, data=str(empty))


@pytest.mark.slow
def test_undecodable_bytes_name_file_and_offset(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"plain ascii text " * 10 + b"caf\xe9 au lait")
    with pytest.raises(DataError, match=r"latin1.txt.*byte (offset )?173"):
        train(tmp_path, data=str(bad))
    run = train(tmp_path, "ok", data=str(bad), encoding="latin-1", seq_len=8, max_steps=2,
                validation_split=0.2, batch_size=2)
    assert run.summary["steps"] == 2


@pytest.mark.slow
def test_unsafe_model_file_is_refused(tmp_path: Path) -> None:
    import keras

    run = train(tmp_path, max_steps=2)
    inputs = keras.Input((4,))
    unsafe = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    unsafe.save(run.dir / "model.keras")
    with pytest.raises(RunError, match="refusing to load .*model.keras.*arbitrary Python code"):
        lmkit.load(run.dir)


def test_load_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not an lmkit run directory"):
        lmkit.load(tmp_path)


@pytest.mark.slow
def test_other_backends_train_through_keras_fit(tmp_path: Path) -> None:
    """On torch (no compiled JAX step) the same call trains through model.fit and learns."""
    import os
    import subprocess
    import sys

    small = tmp_path / "small.txt"
    small.write_text(CORPUS.read_text()[:4000])
    script = f"""
import json, lmkit, keras
assert keras.backend.backend() == "torch"
kw = {json.dumps({**TINY, "data": str(small), "max_steps": 30, "eval_every": 10,
                  "learning_rate": 1e-2})}
run = lmkit.train(**kw, out={str(tmp_path / "torch")!r}, reporters=[])
gd = lmkit.train(**{{**kw, "optimizer": "gd", "epochs": 2, "max_steps": None, "eval_every": 1,
                    "learning_rate": 0.5, "schedule": "constant"}},
                 out={str(tmp_path / "torch-gd")!r}, reporters=[])
val = [r["val_loss"] for r in run.history if "val_loss" in r]
print(json.dumps({{"val": val, "backend": run.summary["backend"], "gd_steps": gd.summary["steps"]}}))
"""
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "torch" and result["gd_steps"] == 2
    assert result["val"][-1] < result["val"][0]


@pytest.mark.slow
def test_load_and_info_use_the_newest_state_of_an_interrupted_run(tmp_path: Path, capsys) -> None:
    from lmkit.cli import main
    from lmkit.engine.checkpoint import load_checkpoint
    from lmkit.losses import nll
    from lmkit.optim import build_optimizer

    run = train(tmp_path, max_steps=8, steps_per_dispatch=4, sample_tokens=0)

    def killed_after_step_12(event) -> None:  # as a kill -9 right after the checkpoint at 12
        if isinstance(event, StepEvent) and event.step == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lmkit.train(resume=run.dir, max_steps=16, reporters=[killed_after_step_12])
    assert json.loads((run.dir / "summary.json").read_text())["steps"] == 8  # stale
    loaded = lmkit.load(run.dir)
    assert loaded.weights == "checkpoint.npz (step 12)" and "weights='checkpoint.npz" in repr(loaded)
    for saved, var in zip(load_checkpoint(run.dir).model,
                          [*loaded.model.trainable_variables, *loaded.model.non_trainable_variables]):
        np.testing.assert_array_equal(saved, np.asarray(var))
    assert main(["info", str(run.dir)]) == 0
    assert "interrupted: the checkpoint is at step 12 and the last finished training ended at step 8" \
        in capsys.readouterr().out
    assert lmkit.load(train(tmp_path, "finished", max_steps=4, sample_tokens=0).dir).weights == "model.keras"


@pytest.mark.slow
def test_a_first_run_gets_its_architectures_defaults_and_about_ten_evaluations(tmp_path: Path) -> None:
    from lmkit.training.language_model import log_unigram, unigram_loss

    run = lmkit.train(arch="lstm", data=str(CORPUS), max_steps=20, units=32, embed_dim=16,
                      batch_size=4, eval_batches=4, sample_tokens=0, out=str(tmp_path / "r"),
                      head_bias_init="unigram", reporters=[])
    loaded = lmkit.load(run.dir)
    saved = loaded.config
    assert (saved.layers, saved.learning_rate, saved.units) == (1, 3e-3, 32)
    evaluations = [r for r in run.history if "val_loss" in r]
    assert len(evaluations) == 10 and evaluations[-1]["step"] == 20
    # The unigram head bias: at step 2, still in the warm-up, the model predicts the letters'
    # frequencies (with the default zero bias it would score the uniform log(vocabulary)).
    vocab = run.tokenizer.vocab_size
    ids = np.array(run.tokenizer.encode(CORPUS.read_text(encoding="utf-8")))
    assert evaluations[0]["step"] == 2
    assert evaluations[0]["val_loss"] < np.log(vocab) - 0.5
    assert evaluations[0]["val_loss"] == pytest.approx(unigram_loss(ids), abs=0.2)
    start = log_unigram(ids[: len(ids) - round(len(ids) * 0.1)], vocab)
    np.testing.assert_allclose(loaded.model.head_bias.numpy(), start, atol=0.05)
    with pytest.raises(ConfigError, match="no logit bias in its output head"):
        train(tmp_path, "gpt2_head", head_bias_init="unigram", model={"head_bias": False})


@pytest.mark.slow
def test_a_config_file_given_with_resume_overrides_the_saved_config(tmp_path: Path) -> None:
    from lmkit.config import TrainConfig

    run = train(tmp_path, max_steps=4, sample_tokens=0)
    more = tmp_path / "more.toml"
    more.write_text("max_steps = 6\n")  # only this key: the run's own layers, lr... stay
    resumed = lmkit.train(more, resume=run.dir, reporters=[])
    saved = TrainConfig.from_sources(run.dir / "config.toml")
    assert resumed.summary["steps"] == 6 and saved.max_steps == 6
    assert saved.to_dict() == {**run.config.to_dict(), "max_steps": 6}
    with pytest.raises(ConfigError, match="cannot resume .* tokenizer='byte' \\(the run has 'char'\\)"):
        run.resume(tokenizer="byte")


@pytest.mark.slow
def test_architecture_defaults_that_name_an_optimizer_are_the_ones_trained_with(tmp_path, monkeypatch):
    """gpt's defaults name `muon`: the optimizer built must be the one the run's config records
    (it was once resolved before the architecture's defaults were applied, so AdamW trained)."""
    import keras

    from lmkit.models.gpt import GPT
    from lmkit.registry import optimizers

    built: list[str] = []

    def recording(cfg, learning_rate):
        built.append(cfg.optimizer)
        return keras.optimizers.SGD(learning_rate)

    optimizers.register("test_default_sgd", recording)
    monkeypatch.setattr(GPT, "config_defaults", {"optimizer": "test_default_sgd"})
    try:
        run = lmkit.train(**{**TINY, "max_steps": 2, "eval_every": 2, "checkpoint_every": 2,
                             "sample_tokens": 0}, out=str(tmp_path / "run"), reporters=[])
    finally:
        optimizers.unregister("test_default_sgd")
    assert built == ["test_default_sgd"] and run.config.optimizer == "test_default_sgd"


SCHEDULE_FREE = {**TINY, "dropout": 0.1, "optimizer": "schedule_free_adamw", "max_steps": 8,
                 "sample_tokens": 0}


@pytest.mark.slow
def test_schedule_free_adamw_evaluates_and_saves_the_average_and_resumes_exactly(
        tmp_path: Path) -> None:
    """`lmkit train --set optimizer="schedule_free_adamw"`: the logged validation loss is the
    saved model's (the averaged weights x, not the training point y), and a stopped run resumes
    to the same weights as a straight one."""
    from lmkit.cli import main
    from lmkit.data.corpus import open_corpus
    from lmkit.data.tokens import sequential_batches, split, token_ids
    from lmkit.engine.checkpoint import load_checkpoint
    from lmkit.losses import nll
    from lmkit.optim import build_optimizer

    sets = [a for k, v in {**SCHEDULE_FREE}.items()
            for a in ("--set", f"{k}={json.dumps(v)}")]
    assert main(["train", *sets, "--out", str(tmp_path / "straight")]) == 0
    straight = lmkit.load(tmp_path / "straight")
    cfg = straight.config
    _, val = split(token_ids(open_corpus(cfg.data), straight.tokenizer), cfg.validation_split,
                   cfg.seq_len)

    def val_loss(model) -> float:
        losses = [np.asarray(nll(y.reshape(-1), np.asarray(model(x)).reshape(
            -1, model.vocab_size))) for x, y in sequential_batches(val, cfg.seq_len,
                                                                  cfg.batch_size, cfg.eval_batches)]
        return float(np.concatenate(losses).mean())

    assert val_loss(straight.model) == pytest.approx(straight.summary["val_loss"], abs=1e-5)
    # the training point y = beta1 * x + (1 - beta1) * z scores otherwise: the check is not vacuous
    model = straight.model
    opt = build_optimizer(cfg, cfg.learning_rate)
    opt.build(model.trainable_variables)
    x = [np.asarray(v) for v in model.trainable_variables]
    for var, y in zip(model.trainable_variables,
                      opt.training_weights([], load_checkpoint(straight.dir).optimizer)):
        var.assign(y)
    assert abs(val_loss(model) - straight.summary["val_loss"]) > 1e-4
    for var, value in zip(model.trainable_variables, x):
        var.assign(value)

    stop = StopSignal()
    stop_after_4 = lambda event: isinstance(event, StepEvent) and event.step >= 4 and stop.set()
    first = lmkit.train(**SCHEDULE_FREE, out=str(tmp_path / "resumed"), reporters=[stop_after_4],
                        stop=stop)
    assert first.summary["steps"] == 4
    resumed = lmkit.train(resume=first.dir, reporters=[])
    assert resumed.summary["steps"] == 8
    for a, b in zip(straight.model.weights, resumed.model.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert resumed.summary["val_loss"] == pytest.approx(straight.summary["val_loss"], abs=1e-5)

