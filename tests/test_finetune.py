"""Fine-tuning is a client of the one engine: Ctrl-C, divergence, resume and the registries
behave as in language-model training."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lmkit.engine.checkpoint import load_checkpoint
from lmkit.engine.events import EndEvent, Event, StepEvent, StopSignal
from lmkit.errors import ConfigError, RegistryError, TrainingDiverged
from lmkit.evaluation import evaluate
from lmkit.config import EvalConfig

GLUE = Path(__file__).parent / "fixtures" / "eval" / "glue"
TINY: dict[str, Any] = {"embed_dim": 16, "units": 16, "vocab_size": 400, "max_length": 16,
                        "batch_size": 16, "eval_batch_size": 64, "log_every": 2}


def finetune(folder: Path | None, **options: Any) -> Any:
    if folder is not None:
        options["checkpoint_dir"] = str(folder)
    return evaluate("scratch", task="glue/sst2", data=GLUE, **{**TINY, **options})


def weights(model: Any) -> list[np.ndarray]:
    return [np.asarray(v) for v in (*model.trainable_variables, *model.non_trainable_variables)]


@pytest.mark.slow
def test_ctrl_c_once_stops_fine_tuning_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    def press_ctrl_c(event: Event) -> None:
        if isinstance(event, StepEvent) and event.step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    events: list[Event] = []
    result = finetune(tmp_path, max_steps=500, reporters=[press_ctrl_c, events.append])
    assert result.training["reason"] == "interrupted" and result.training["steps"] == 4
    assert isinstance(events[-1], EndEvent) and events[-1].reason == "interrupted"
    assert len(result.predictions) == 120  # the stopped model is still scored
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 4
    for saved, now in zip(ckpt.model, weights(result.model)):
        np.testing.assert_array_equal(saved, now)


def test_divergence_raises_the_engine_error_and_scores_nothing(tmp_path: Path) -> None:
    with pytest.raises(TrainingDiverged) as info:
        finetune(tmp_path, optimizer="sgd", learning_rate=1e30, clipnorm=None, schedule="constant",
                 max_steps=40, checkpoint_every=2)
    message = str(info.value)
    assert "training stopped." in message
    assert "Try a lower learning_rate (now 1e+30) or gradient clipping (clipnorm)" in message
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["reason"] == "diverged"  # recorded as such, and no result was returned
    if (tmp_path / "checkpoint.npz").exists():  # a checkpoint is only ever one of finite weights
        assert all(np.isfinite(a).all() for a in load_checkpoint(tmp_path).model)


@pytest.mark.slow  # builds and encodes the scratch model's task first (13 s here)
def test_max_seconds_is_the_time_budget_fine_tuning_hands_the_engine(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine enforces it (tests/test_engine.py); here, `max_seconds` must reach it."""
    from lmkit.engine import engine

    class Handed(Exception):
        pass

    def run(trainee: Any, plan: Any, *args: Any, **kwargs: Any) -> Any:
        raise Handed(plan.max_seconds)

    monkeypatch.setattr(engine, "run", run)
    with pytest.raises(Handed) as info:
        finetune(None, max_steps=500, max_seconds=42.5)
    assert info.value.args == (42.5,)


def test_max_seconds_is_refused_across_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process would stop by its own clock, leaving the others in a collective."""
    from types import SimpleNamespace

    from lmkit.evaluation import finetune as module

    monkeypatch.setattr(module, "layout_for", lambda *a: SimpleNamespace(processes=2, lead=True))
    cfg = EvalConfig(max_seconds=60)
    with pytest.raises(ConfigError, match="max_seconds=60 in a run of 2 processes"):
        module.finetune(None, [0] * 8, cfg, None)


@pytest.mark.slow
def test_stopped_fine_tuning_resumes_exactly(tmp_path: Path) -> None:
    straight = finetune(tmp_path / "straight", max_steps=12, head_dropout=0.2)
    stop = StopSignal()

    def stop_at_6(event: Event) -> None:
        if isinstance(event, StepEvent) and event.step >= 6:
            stop.set()

    stopped = finetune(tmp_path / "resumed", max_steps=12, head_dropout=0.2, stop=stop,
                       reporters=[stop_at_6])
    assert (stopped.training["steps"], stopped.training["reason"]) == (6, "stopped")
    resumed = finetune(tmp_path / "resumed", max_steps=12, head_dropout=0.2, resume=True)
    assert resumed.training["steps"] == 12
    for a, b in zip(weights(resumed.model), weights(straight.model)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_array_equal(resumed.predictions, straight.predictions)
    with pytest.raises(ConfigError, match="'resume' needs 'checkpoint_dir'"):
        finetune(None, max_steps=2, resume=True)


def test_fine_tuning_takes_its_optimizer_and_schedule_from_the_registries(tmp_path: Path) -> None:
    import keras

    from lmkit.registry import optimizers

    peaks: list[float] = []

    @optimizers.register("test_recording_sgd")
    def recording_sgd(cfg: Any, learning_rate: Any) -> keras.optimizers.Optimizer:
        peaks.append(round(float(learning_rate(0)), 6))
        return keras.optimizers.SGD(learning_rate)

    try:
        result = finetune(None, optimizer="test_recording_sgd", schedule="constant",
                          learning_rate=0.01, backbone_lr_multiplier=0.5, max_steps=2)
    finally:
        optimizers.unregister("test_recording_sgd")
    assert peaks == [0.01, 0.005]  # the head's optimizer, then the backbone's at half the rate
    assert result.training["steps"] == 2
    with pytest.raises(RegistryError, match=r"unknown optimizer 'adamv' \(did you mean"):
        finetune(None, optimizer="adamv")
    with pytest.raises(RegistryError, match="unknown schedule 'cosinus'"):
        finetune(None, schedule="cosinus")


def test_pad_widths_waste_no_more_padding_than_any_other_choice_of_as_many_widths() -> None:
    import itertools

    from lmkit.evaluation.encoding import pad_widths

    rng = np.random.default_rng(0)
    for _ in range(20):
        longest = rng.integers(3, 40, size=int(rng.integers(1, 12)))
        count = int(rng.integers(1, 5))

        def padded(widths: list[int]) -> int:
            return sum(next(w for w in sorted(widths) if w >= n) for n in longest)

        got = pad_widths(longest, count)
        assert len(got) <= count and max(got) == longest.max()
        candidates = sorted(set(longest.tolist()))[:-1]
        best = min(padded([*c, int(longest.max())]) for k in range(count)
                   for c in itertools.combinations(candidates, k))
        assert padded(got) == best


@pytest.mark.slow
def test_fine_tuning_pads_batches_to_few_widths_chosen_for_the_data() -> None:
    from tiny_models import tiny

    from lmkit.evaluation.encoding import Encoded, batches
    from lmkit.evaluation.finetune import PAD_WIDTHS, FinetuneTrainee
    from lmkit.evaluation.heads import SequenceClassifier
    from lmkit.resolve import resolve

    rng = np.random.default_rng(1)
    ids = [np.ones(int(n), np.int32) for n in rng.integers(2, 40, size=300)]
    data = Encoded(ids, np.zeros(300, np.int64))
    cfg = EvalConfig(batch_size=8, max_length=64, max_steps=120, loss="cross_entropy")
    parts = resolve(cfg)
    trainee = FinetuneTrainee(SequenceClassifier(tiny("lstm"), 2), data, parts.config, 120, parts)
    steps = trainee.steps_per_epoch
    shapes = {trainee._batch(s)[0][0].shape[1] for s in range(3 * steps)}  # three epochs
    assert shapes <= set(trainee.widths) and len(trainee.widths) == PAD_WIDTHS
    real = sum(len(i) for i in ids)
    padded = sum(trainee._batch(s)[0][0].size for s in range(steps))
    # the same batches, each padded to a multiple of 16 (the epoch's rows re-cut into batches
    # would misalign after its short last batch: that oracle was 10624 tokens, not 9216)
    multiples_of_16 = sum(next(batches(data, rows, 8, 64))[0][0].size
                          for rows in trainee._epoch_batches(0))
    assert padded < 0.85 * multiples_of_16 and padded < 1.3 * real


@pytest.mark.slow
@pytest.mark.parametrize("vocab", [13, 200])
def test_the_embedding_update_touches_only_the_batch_rows_and_otherwise_equals_the_dense_one(
        vocab: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras
    from tiny_models import tiny

    import lmkit.evaluation.finetune as ft
    from lmkit.evaluation.encoding import Encoded
    from lmkit.evaluation.heads import SequenceClassifier
    from lmkit.resolve import resolve

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 9, 16)
    if vocab == 13:  # ids 1..6 of a 13-token vocabulary
        ids = rng.integers(1, 7, size=int(lengths.sum()))
    else:  # every token another id: the step holds as many ids as it has tokens, the most it can
        ids = rng.permutation(np.arange(1, vocab))[:lengths.sum()]
    data = Encoded([a.astype(np.int32) for a in np.split(ids, np.cumsum(lengths)[:-1])], rng.integers(0, 2, 16))
    used = np.unique([0, *ids])  # with the padding's id
    absent = np.setdiff1d(np.arange(vocab), used)

    def one_step(dense: bool, **options: Any) -> tuple[Any, list[np.ndarray], list[np.ndarray]]:
        keras.utils.set_random_seed(0)
        backbone = tiny("gpt", vocab, dropout=0.0)
        backbone(np.ones((1, 4), np.int32))
        model = SequenceClassifier(backbone, 2, dropout=0.0)
        model((np.ones((1, 4), np.int32), np.ones((1,), np.int32)))
        cfg = EvalConfig(batch_size=16, max_length=8, max_steps=2, loss="cross_entropy",
                         learning_rate=1e-2, backbone_lr_multiplier=1.0, **options)
        if dense:
            monkeypatch.setattr(ft, "ROW_UPDATES", "no such capability")
        parts = resolve(cfg)
        trainee = ft.FinetuneTrainee(model, data, parts.config, 2, parts)
        monkeypatch.undo()
        before = trainee.model_arrays()
        trainee.train(0, 1)
        return trainee, before, trainee.model_arrays()

    rows, before, after = one_step(False, weight_decay=0.5, clipnorm=1e-3)
    dense, _, dense_after = one_step(True, weight_decay=0.5, clipnorm=1e-3)
    assert rows.row_update and not dense.row_update
    table = next(i for i, w in enumerate(before) if w.shape == (vocab, 16))
    np.testing.assert_array_equal(after[table][absent], before[table][absent])  # ids the batch lacks
    assert not np.allclose(dense_after[table][absent], before[table][absent])     # dense decays them
    assert not (after[table][used] == before[table][used]).all(axis=1).any()      # each id it holds moved
    # the batch's rows and every other weight: the same update, clipped by the same global norm
    after[table], dense_after[table] = after[table][used], dense_after[table][used]
    for a, b in zip(after, dense_after):
        np.testing.assert_allclose(a, b, atol=1e-7)

# -- the one compiled step: accumulation, parts, fused dispatch, parameter groups ----------------
def _trainee(data: Any = None, arch: str = "gpt", **options: Any) -> Any:
    """A fine-tuning trainee over a tiny scratch classifier (dropout off, seeded weights)."""
    import keras
    from tiny_models import tiny

    from lmkit.evaluation.encoding import Encoded
    from lmkit.evaluation.finetune import FinetuneTrainee
    from lmkit.evaluation.heads import SequenceClassifier
    from lmkit.resolve import resolve

    if data is None:
        rng = np.random.default_rng(0)
        data = Encoded([rng.integers(1, 13, size=int(n)).astype(np.int32)
                        for n in rng.integers(3, 9, 64)], rng.integers(0, 2, 64))
    keras.utils.set_random_seed(0)
    backbone = tiny(arch, dropout=0.0)
    backbone(np.ones((1, 4), np.int32))
    model = SequenceClassifier(backbone, 2, dropout=0.0)
    model((np.ones((1, 4), np.int32), np.ones((1,), np.int32)))
    cfg = EvalConfig(**{"batch_size": 16, "max_length": 8, "max_steps": 8, "loss": "cross_entropy",
                        "learning_rate": 1e-2, "backbone_lr_multiplier": 1.0, **options})
    parts = resolve(cfg, backbone="scratch", steps=cfg.max_steps)
    return FinetuneTrainee(model, data, parts.config, cfg.max_steps, parts)


@pytest.mark.parametrize("options", [{}, {"gradual_unfreezing": True},
                                     {"adapter": "lora", "lora_targets": ["*w_qkv"]}])
def test_a_fine_tuning_at_another_learning_rate_runs_the_same_program(options: dict[str, Any]) -> None:
    """Every group's peak rate is an input of the step (`ParamGroups.schedules`): plain,
    masked and LoRA groups alike, so a rate sweep compiles one step, which trains at each rate."""
    trainees = [_trainee(learning_rate=rate, **options) for rate in (1e-2, 3e-3)]
    schedules = [t.step.groups.schedules() for t in trainees]
    assert [len(s) for s in schedules] == [2, 2]  # the head's and the backbone's (or adapters')
    texts = []
    for t in trainees:
        inputs, labels, masks, active = t._stacked([0])
        texts.append(t.step.lower(inputs, labels, masks, active).as_text())
    assert texts[0] == texts[1]
    for t in trainees:
        t.train(0, 1)
    assert not np.allclose(trainees[0].model_arrays()[-1], trainees[1].model_arrays()[-1])


def _assert_same_weights(a: Any, b: Any, atol: float) -> None:
    for x, y in zip(a.model_arrays(), b.model_arrays()):
        np.testing.assert_allclose(x, y, atol=atol)


@pytest.mark.slow
def test_accumulating_four_micro_batches_is_one_batch_four_times_larger() -> None:
    whole = _trainee(batch_size=16, packing=False)  # micro-batches pad: the same batches
    micro = _trainee(batch_size=4, accumulate_steps=4)
    assert micro.steps_per_epoch == whole.steps_per_epoch == 4
    losses_whole, losses_micro = whole.train(0, 3), micro.train(0, 3)
    assert np.isfinite(losses_whole).all()
    np.testing.assert_allclose(losses_micro, losses_whole, atol=1e-5)
    _assert_same_weights(micro, whole, 1e-5)
    assert not np.allclose(whole.model_arrays()[0], micro.step.model.trainable_variables[0])


@pytest.mark.slow
def test_a_batch_in_two_parts_fine_tunes_the_same_model() -> None:
    whole, halves = _trainee(packing=False), _trainee(batch_parts=2)  # parts pad: the same batches
    losses = whole.train(0, 3)
    assert np.isfinite(losses).all()
    np.testing.assert_allclose(halves.train(0, 3), losses, atol=1e-5)
    _assert_same_weights(halves, whole, 1e-5)
    with pytest.raises(ConfigError, match=r"'batch_parts' \(3\) must divide 'batch_size' \(16\)"):
        _trainee(batch_parts=3)


@pytest.mark.slow
def test_a_fused_dispatch_equals_as_many_single_dispatches_and_compiles_once_per_width() -> None:
    from lmkit.evaluation.encoding import Encoded

    rng = np.random.default_rng(3)  # lengths 2..30: batches of several pad widths
    data = Encoded([rng.integers(1, 13, size=int(n)).astype(np.int32)
                    for n in rng.integers(2, 30, 160)], rng.integers(0, 2, 160))
    fused, single = (_trainee(data, "lstm", max_length=32, log_every=4, max_steps=20)
                     for _ in range(2))
    losses = np.concatenate([fused.train(s, 4) for s in range(0, 20, 4)])
    one_by_one = np.concatenate([single.train(s, 1) for s in range(20)])
    assert np.isfinite(losses).all()
    np.testing.assert_allclose(losses, one_by_one, atol=1e-6)
    _assert_same_weights(fused, single, 1e-6)
    widths = {fused._batch(s)[0][0].shape[1] for s in range(20)}
    assert len(widths) > 1
    # one program per width, whatever the number of steps each call takes
    assert fused.step._train._cache_size() == single.step._train._cache_size() == len(widths)


@pytest.mark.slow
def test_fine_tuning_with_log_every_k_trains_as_with_single_steps() -> None:
    """End to end: k steps per compiled call or one, on batches of several widths."""
    fused = finetune(None, max_steps=6, log_every=3, head_dropout=0.0)
    single = finetune(None, max_steps=6, log_every=1, head_dropout=0.0)
    assert len(fused.training["pad_widths"]) > 1
    for a, b in zip(weights(fused.model), weights(single.model)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(fused.predictions, single.predictions)


@pytest.mark.slow
def test_frozen_patterns_keep_their_weights_bit_identical_while_the_others_train() -> None:
    trainee = _trainee(freeze=["embedding", "block_0/*"])
    names = [v.path for v in trainee.model.trainable_variables]
    before = trainee.model_arrays()
    trainee.train(0, 3)
    after = trainee.model_arrays()
    frozen = [i for i, n in enumerate(names) if n.endswith("/embedding") or "/block_0/" in n]
    assert len(frozen) > 2
    for i, (a, b) in enumerate(zip(before, after)):
        if i in frozen:
            np.testing.assert_array_equal(a, b)
        elif i < len(names) and not names[i].endswith("/head_bias"):  # no classifier reads it
            assert not np.array_equal(a, b), names[i]
    assert len(trainee.optimizer_arrays()) < len(_trainee().optimizer_arrays())  # no slots
    with pytest.raises(ConfigError, match=r"freeze pattern 'block_9/\*' matches no trainable "
                                          r"variable.*block_0/w_qkv"):
        _trainee(freeze=["block_9/*"])


@pytest.mark.slow
def test_gradual_unfreezing_trains_only_the_open_top_groups() -> None:
    trainee = _trainee(gradual_unfreezing=True, max_steps=100)
    names = [v.path for v in trainee.model.trainable_variables]
    before = trainee.model_arrays()
    trainee.train(0, 1)  # step 1 of 100: only the top group of the backbone (and the head) open
    after = trainee.model_arrays()
    top = {id(v) for v in trainee.groups[-1]}
    for var, a, b in zip(trainee.model.trainable_variables, before, after):
        if id(var) in top or var.path.startswith("sequence_classifier"):
            assert not np.array_equal(a, b), var.path
        else:
            np.testing.assert_array_equal(a, b, err_msg=var.path)
    assert len(names) == len(trainee.model.trainable_variables)


@pytest.mark.slow
def test_an_optimizer_with_evaluation_weights_fine_tunes_and_keeps_its_average() -> None:
    """Schedule-Free AdamW trains at y and is judged at its average x: the weights written back
    into the model and checkpointed are x, and a restore continues from y."""
    trainee = _trainee(optimizer="schedule_free_adamw")
    trainee.train(0, 3)
    n = len(trainee.model.trainable_variables)
    kept = trainee.model_arrays()[:n]
    slots = dict(zip([s.path for s in trainee.step.groups.slots()], trainee.optimizer_arrays()))
    for var, value in zip(trainee.model.trainable_variables, kept):
        average = next(a for p, a in slots.items() if p.endswith(var.path.replace("/", "_") + "_x"))
        np.testing.assert_array_equal(value, average)
    trained = [np.asarray(a) for a in trainee.state.trainable]
    assert not all(np.allclose(a, b) for a, b in zip(trained, kept))  # y is not x
    again = _trainee(optimizer="schedule_free_adamw")
    again.restore(trainee.model_arrays(), trainee.optimizer_arrays(), "test")
    for a, b in zip(again.state.trainable, trained):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-6)


def _scatter_adds(program: str) -> list[str]:
    """The result shapes of the scatters that add (a gather's gradient) in a StableHLO text."""
    found = []
    for block in program.split('"stablehlo.scatter"')[1:]:
        body, _, rest = block.partition("}) :")
        if "stablehlo.add" in body:
            found.append(re.search(r"-> tensor<([0-9x]+)x\w+>", rest).group(1))
    return found


def test_a_row_updated_table_gets_the_gradient_of_the_batchs_rows_alone() -> None:
    """`RowSparse` differentiates the rows of the batch's ids (`row_views`): the step adds no
    gradient into a table-sized array, which the dense `Optimize` does (so the check can fail);
    the same update is checked against the dense one by the test above."""
    import keras
    from tiny_models import TINY, VOCAB, tiny

    from lmkit.param_groups import Optimize, ParamGroups, RowSparse
    from lmkit.train_step import TrainStep

    tokens = np.array([[5, 1, 4, 8, 9, 3, 6, 7], [12, 4, 4, 5, 3, 2, 7, 1]], np.int32)  # 10 ids
    xs, ys = np.stack([tokens[:, :-1]] * 2), np.stack([tokens[:, 1:]] * 2)

    def program(row_sparse: bool) -> str:
        keras.utils.set_random_seed(0)
        model = tiny("gpt", tie_embeddings=False)  # the table read at the tokens only
        model(np.ones((1, 4), np.int32))
        opt = keras.optimizers.Adam(1e-2)
        group = (RowSparse(opt, model.embedding, rows=10, ids=lambda inputs: inputs)
                 if row_sparse else Optimize(opt))
        variables = model.trainable_variables
        groups = ParamGroups(variables, ["all"] * len(variables), {"all": group})
        loss = lambda y, logits: keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        return TrainStep(model, groups, loss).lower(xs, ys).as_text()

    width = TINY["embed_dim"]
    rows = _scatter_adds(program(row_sparse=True))
    assert f"{VOCAB}x{width}" not in rows and f"10x{width}" in rows  # the rows' gradient
    assert f"{VOCAB}x{width}" in _scatter_adds(program(row_sparse=False))
