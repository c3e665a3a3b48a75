"""Optimizers, schedules, losses and LM metrics, each checked from one table against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import keras
from keras import ops
from sklearn.metrics import accuracy_score, log_loss, top_k_accuracy_score

from lmkit.config import TrainConfig
from lmkit.errors import LmkitWarning
from lmkit.losses import build_loss
from lmkit.token_metrics import compute_stats
from lmkit.optim import build_optimizer, exclude_from_decay
from lmkit.registry import metrics, optimizers
from lmkit.schedules import build_schedule

# -- optimizers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(optimizers))
@pytest.mark.slow
def test_every_optimizer_minimises_a_quadratic(name: str) -> None:
    cfg = TrainConfig(optimizer=name, learning_rate=0.2, clipnorm=None)
    opt = build_optimizer(cfg, cfg.learning_rate)
    w = keras.Variable(np.array([3.0, -2.0], dtype="float32"))
    start = float(keras.ops.sum(w * w))
    for _ in range(60):
        grad = 2.0 * w.value  # d/dw of |w|^2
        opt.apply([grad], [w])
    assert float(keras.ops.sum(w * w)) < 0.5 * start


def test_clipnorm_limits_the_update() -> None:
    cfg = TrainConfig(optimizer="sgd", learning_rate=1.0, clipnorm=1.0)
    opt = build_optimizer(cfg, 1.0)
    w = keras.Variable(np.zeros(2, dtype="float32"))
    opt.apply([np.array([30.0, 40.0], dtype="float32")], [w])
    np.testing.assert_allclose(np.asarray(w.value), [-0.6, -0.8], rtol=1e-5)


@pytest.mark.parametrize("name", ["adamw", "sgd", "lion", "schedule_free_adamw"])
def test_weight_decay_shrinks_matrices_but_not_vectors(name: str) -> None:
    cfg = TrainConfig(optimizer=name, learning_rate=0.1, weight_decay=0.5, clipnorm=None)
    opt = build_optimizer(cfg, 0.1)
    kernel = keras.Variable(np.ones((2, 2), dtype="float32"), name="w_fc")
    bias = keras.Variable(np.ones(2, dtype="float32"), name="b_fc")  # a name without "bias"
    exclude_from_decay(opt, [kernel, bias])
    opt.apply([np.zeros((2, 2), dtype="float32"), np.zeros(2, dtype="float32")], [kernel, bias])
    assert np.all(np.asarray(kernel.value) < 1.0)
    np.testing.assert_allclose(np.asarray(bias.value), 1.0)


@pytest.mark.slow
def test_schedule_free_adamw_follows_optax_and_evaluates_the_average() -> None:
    """20 steps of `schedule_free_adamw` (warm-up, weight decay on the matrix only) on a small
    regression, against ``optax.contrib.schedule_free``'s AdamW chain: the same training point y
    and the same averaged weights x (`optax.contrib.schedule_free_eval_params`) at every step.

    The warm-up is lmkit's (and the schedulefree PyTorch package's): step t (from 1) takes
    ``lr * min(1, t / W)``; optax's `warmup_steps` shortcut counts from 0 in the AdamW step and
    from 1 in the averaging, so the reference is built from optax's parts with lmkit's rate."""
    import jax
    import jax.numpy as jnp
    import optax

    from lmkit.optim import EVALUATION_WEIGHTS

    lr, wd, b1, b2, warmup = 0.05, 0.1, 0.9, 0.99, 5
    cfg = TrainConfig(optimizer="schedule_free_adamw", learning_rate=lr, weight_decay=wd,
                      beta1=b1, beta2=b2, warmup_steps=warmup, clipnorm=None)
    assert optimizers.entry("schedule_free_adamw").has(EVALUATION_WEIGHTS)
    opt = build_optimizer(cfg, "the configured schedule is not used")
    rng = np.random.default_rng(0)
    data_x, data_y = rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 3)).astype("float32")
    w0, bias0 = rng.normal(size=(4, 3)).astype("float32"), np.zeros(3, "float32")
    kernel, bias = keras.Variable(w0, name="w_fc"), keras.Variable(bias0, name="b_fc")
    exclude_from_decay(opt, [kernel, bias])
    opt.build([kernel, bias])

    def loss(params):
        w, b = params
        return jnp.mean((data_x @ w + b - data_y) ** 2)

    rate = lambda count: lr * jnp.minimum(1.0, (count + 1) / warmup)  # count from 0
    reference = optax.contrib.schedule_free(
        optax.chain(optax.scale_by_rms(decay=b2, eps=1e-8, eps_in_sqrt=False, bias_correction=True),
                    optax.add_decayed_weights(wd, mask=(True, False)),
                    optax.scale_by_learning_rate(rate)),
        learning_rate=lambda step_count: rate(step_count - 1), b1=b1)
    params = (jnp.asarray(w0), jnp.asarray(bias0))
    state = reference.init(params)
    for _ in range(20):
        grads = jax.grad(loss)((kernel.value, bias.value))
        opt.apply(list(grads), [kernel, bias])
        updates, state = reference.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        ours_x = opt.evaluation_weights([kernel.value, bias.value], [v.value for v in opt.variables])
        for ours, theirs in zip([kernel.value, bias.value], params):
            np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-6)
        for ours, theirs in zip(ours_x, optax.contrib.schedule_free_eval_params(state, params)):
            np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-6)
    assert float(loss(ours_x)) < 0.5 * float(loss((w0, bias0)))  # it learned: not vacuous
    assert np.abs(np.asarray(ours_x[0]) - np.asarray(kernel.value)).max() > 1e-4  # x is not y
    back = opt.training_weights(ours_x, [v.value for v in opt.variables])
    np.testing.assert_allclose(np.asarray(back[0]), np.asarray(kernel.value), rtol=1e-6, atol=1e-6)


def test_schedule_free_adamw_records_a_constant_schedule_and_says_it_ignores_a_given_one() -> None:
    from lmkit.optim import without_schedule

    entry = optimizers.entry("schedule_free_adamw")
    asked = TrainConfig.from_dict({"optimizer": "schedule_free_adamw", "schedule": "warmup_cosine"})
    with pytest.warns(LmkitWarning, match="schedule='warmup_cosine' is not used by "
                                          "optimizer='schedule_free_adamw'"):
        assert without_schedule(asked, entry).schedule == "constant"
    default = TrainConfig.from_dict({"optimizer": "schedule_free_adamw"})  # no warning: not asked
    assert without_schedule(default, entry).schedule == "constant"
    adamw = TrainConfig.from_dict({"optimizer": "adamw", "schedule": "warmup_cosine"})
    assert without_schedule(adamw, optimizers.entry("adamw")) is adamw


def _newton_schulz(g: np.ndarray, steps: int = 5) -> np.ndarray:
    """The Muon paper's quintic Newton–Schulz iteration towards the orthogonal factor U V^T."""
    a, b, c = 3.4445, -4.7750, 2.0315
    wide = g.shape[0] > g.shape[1]
    x = g.T if wide else g
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if wide else x


@pytest.mark.slow
def test_muon_follows_the_paper_for_matrices_and_adamw_for_the_rest() -> None:
    """Three steps of `muon` on a matrix and a bias, against the update rule written in numpy:
    Nesterov momentum 0.95, Newton–Schulz, Moonlight's 0.2 * sqrt(max(rows, cols)) scale and
    decoupled decay for 2-D weights; AdamW (bias-corrected) for 1-D ones."""
    lr, wd, b1, b2 = 0.02, 0.1, 0.9, 0.99
    cfg = TrainConfig(optimizer="muon", learning_rate=lr, weight_decay=wd, beta1=b1, beta2=b2,
                      clipnorm=None)
    opt = build_optimizer(cfg, lr)
    rng = np.random.default_rng(0)
    w0, bias0 = rng.normal(size=(6, 4)).astype("float32"), rng.normal(size=4).astype("float32")
    kernel, bias = keras.Variable(w0, name="w_fc"), keras.Variable(bias0, name="b_fc")
    exclude_from_decay(opt, [kernel, bias])
    grads = [(rng.normal(size=(6, 4)).astype("float32"), rng.normal(size=4).astype("float32"))
             for _ in range(3)]
    w, b = w0.astype("float64"), bias0.astype("float64")
    mom, m, v = np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    for t, (gw, gb) in enumerate(grads, start=1):
        opt.apply([gw, gb], [kernel, bias])
        w = w * (1 - lr * wd)                                    # decoupled decay, matrices only
        mom = 0.95 * mom + gw
        w = w - lr * 0.2 * np.sqrt(6) * _newton_schulz(gw + 0.95 * mom)
        m, v = b1 * m + (1 - b1) * gb, b2 * v + (1 - b2) * gb ** 2
        b = b - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + 1e-7)
        np.testing.assert_allclose(np.asarray(kernel.value), w, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(np.asarray(bias.value), b, rtol=2e-4, atol=2e-5)
    assert np.abs(w - w0).max() > 1e-3  # the matrix moved: the comparison is not vacuous


def test_muon_gives_embeddings_and_an_untied_head_to_adamw() -> None:
    opt = build_optimizer(TrainConfig(optimizer="muon"), 1e-3)
    names = ("embedding", "head_kernel", "w_qkv")
    variables = [keras.Variable(np.zeros((5, 3), "float32"), name=n) for n in names]
    opt.build(variables)
    adam = {n for n, var in zip(names, variables) if opt._should_use_adamw(var)}
    assert adam == {"embedding", "head_kernel"}


# -- schedules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name,overrides,expected", [
    # (step -> learning rate) for peak 1.0 over 100 steps
    ("constant", {}, {0: 1.0, 50: 1.0, 99: 1.0}),
    ("linear", {"min_lr_ratio": 0.0}, {0: 1.0, 50: 0.5, 100: 0.0}),
    ("warmup_cosine", {"warmup_steps": 10, "min_lr_ratio": 0.1},
     {0: 0.1, 9: 1.0, 10: 1.0, 55: 0.55, 100: 0.1}),
    ("one_cycle", {"min_lr_ratio": 0.0}, {0: 1 / 30, 29: 1.0, 100: 0.0}),
    ("exponential_range", {"min_lr_ratio": 1e-4}, {0: 1e-4, 25: 1e-3, 50: 1e-2, 100: 1.0}),
])
def test_schedule_values(name: str, overrides: dict, expected: dict) -> None:
    cfg = TrainConfig(schedule=name, learning_rate=1.0, **overrides)
    sched = build_schedule(cfg, 100)
    for step, value in expected.items():
        # a host step (progress reports) and a tensor step (the optimizer's) give the same rate
        assert float(sched(step)) == pytest.approx(value, abs=1e-5), (name, step)
        assert float(sched(ops.convert_to_tensor(step))) == pytest.approx(value, abs=1e-5)


def test_a_schedule_at_a_host_step_compiles_nothing() -> None:
    """Progress reports ask the rate of every dispatch: on the host, with no compiled program
    (each would cost a cold start ~0.1 s on a CPU)."""
    sched = build_schedule(TrainConfig(schedule="warmup_cosine", warmup_steps=7), 50)
    assert isinstance(sched(3), np.floating) and isinstance(sched(np.int64(30)), np.floating)


# -- losses --------------------------------------------------------------------------------------

rng = np.random.default_rng(0)
LOGITS = rng.normal(size=(64, 7)).astype("float32") * 3
LABELS = rng.integers(0, 7, size=64)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_cross_entropy_matches_sklearn_log_loss() -> None:
    per_token = np.asarray(build_loss(TrainConfig())(LABELS, LOGITS))
    reference = log_loss(LABELS, _softmax(LOGITS.astype(np.float64)), labels=range(7))
    assert per_token.mean() == pytest.approx(reference, rel=1e-5)


def test_label_smoothing_matches_keras_reference() -> None:
    cfg = TrainConfig(loss="label_smoothing", label_smoothing=0.2)
    ours = np.asarray(build_loss(cfg)(LABELS, LOGITS)).mean()
    onehot = np.eye(7)[LABELS]
    smoothed = onehot * 0.8 + 0.2 / 7
    reference = -(smoothed * np.log(_softmax(LOGITS.astype(np.float64)))).sum(-1).mean()
    assert ours == pytest.approx(reference, rel=1e-5)


def test_mse_on_probabilities() -> None:
    ours = np.asarray(build_loss(TrainConfig(loss="mse"))(LABELS, LOGITS))
    reference = ((_softmax(LOGITS.astype(np.float64)) - np.eye(7)[LABELS]) ** 2).mean(-1)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-7)


# -- metrics -------------------------------------------------------------------------------------


def _finalize(names: list[str], k: int = 3, chars: float | None = None) -> dict[str, float]:
    loss = np.asarray(build_loss(TrainConfig())(LABELS, LOGITS))
    sums = {k_: float(v) for k_, v in compute_stats(names, LABELS, LOGITS, k).items()}
    sums.update(nll=float(loss.sum()), loss=float(loss.sum()), count=float(len(LABELS)))
    if chars is not None:
        sums.update(chars=chars, bytes=chars * 2)
    return {n: metrics.get(n).finalize(sums) for n in names}


def test_metrics_match_sklearn() -> None:
    probs = _softmax(LOGITS.astype(np.float64))
    out = _finalize(["accuracy", "top_k_accuracy", "perplexity", "loss"], k=3)
    assert out["accuracy"] == pytest.approx(accuracy_score(LABELS, LOGITS.argmax(-1)))
    assert out["top_k_accuracy"] == pytest.approx(top_k_accuracy_score(LABELS, probs, k=3, labels=range(7)))
    assert out["perplexity"] == pytest.approx(math.exp(log_loss(LABELS, probs, labels=range(7))), rel=1e-5)


def test_bits_per_char_and_byte() -> None:
    out = _finalize(["bits_per_char", "bits_per_byte"], chars=100.0)
    nll = float(np.asarray(build_loss(TrainConfig())(LABELS, LOGITS)).sum())
    assert out["bits_per_char"] == pytest.approx(nll / math.log(2) / 100)
    assert out["bits_per_byte"] == pytest.approx(nll / math.log(2) / 200)


def test_top_k_counts_ties_for_the_label() -> None:
    logits = np.array([[1.0, 1.0, 1.0, 0.0]], dtype="float32")
    stats = compute_stats(["top_k_accuracy"], np.array([2]), logits, 1)
    assert float(stats["correct_top1"]) == 1.0
