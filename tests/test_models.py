"""Language-model architectures: the `LanguageModel` contract, checked for every registered one.

Tests loop over `lmkit.registry.architectures` (timm style), so a new architecture, built in or
from a plugin, is tested the day it is registered.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
from keras import ops
from tiny_models import VOCAB, tiny

from lmkit.errors import ConfigError
from lmkit.registry import architectures

ARCHS = [e.name for e in architectures.list() if not e.has("encoder")]  # language models


def tokens(batch: int = 2, time: int = 9, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(batch, time)).astype("int32")


def numpy(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def test_registry_holds_the_builtin_architectures():
    assert {"rnn", "lstm", "gru", "gated_cnn", "gpt", "classic_lstm"} <= set(ARCHS)
    assert architectures.get("Transformer") is architectures.get("gpt")
    assert all(e.description for e in architectures.list())


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.slow
def test_logits_for_every_position_in_float32(name):
    model = tiny(name)
    logits = numpy(model(tokens(2, 9)))
    assert logits.shape == (2, 9, VOCAB)
    assert logits.dtype == np.float32
    assert np.isfinite(logits).all()


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.slow
def test_no_two_weights_start_from_the_same_random_draws(name):
    # A Keras initializer object carries a fixed seed: one shared by two weights draws the same
    # numbers for both (gpt's residual projections once started with w_out[:d] == w_proj).
    model = tiny(name, embed_dim=32, units=32)
    model(tokens())
    values = [(v.path, numpy(v.value).ravel()) for v in model.weights]
    # Random draws are (almost) all distinct; constants such as an LSTM's forget-gate ones are not.
    drawn = [(path, a) for path, a in values if len(np.unique(a)) > a.size // 2]
    for i, (name_a, a) in enumerate(drawn):
        for name_b, b in drawn[i + 1:]:
            n = min(a.size, b.size)
            if n >= 16:
                assert abs(np.corrcoef(a[:n], b[:n])[0, 1]) < 0.5, (name_a, name_b)


@pytest.mark.parametrize("name", ARCHS)
def test_causal_a_token_never_changes_earlier_logits(name):
    model = tiny(name)
    x = tokens()
    t = 5
    changed = x.copy()
    changed[:, t] = (x[:, t] + 1) % VOCAB
    before, after = numpy(model(x)), numpy(model(changed))
    np.testing.assert_allclose(after[:, :t], before[:, :t], atol=1e-6)
    assert np.abs(after[:, t] - before[:, t]).max() > 1e-6, "the changed token must matter"


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.slow
def test_save_load_round_trip_gives_identical_logits(name, tmp_path):
    model = tiny(name)
    x = tokens()
    expected = numpy(model(x))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(numpy(loaded(x)), expected)


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.slow
def test_decode_in_chunks_matches_the_full_forward_pass(name):
    model = tiny(name)
    x = tokens(2, 9)
    full = numpy(model(x))
    state = model.init_state(2)
    pieces = []
    for start, stop in ((0, 4), (4, 5), (5, 6), (6, 9)):   # a prompt, then token by token
        if state is None:   # stateless models decode by recomputing the whole context
            logits = numpy(model.decode(x[:, :stop], None)[0])[:, start:stop]
        else:
            logits, state = model.decode(x[:, start:stop], state)
        pieces.append(numpy(logits))
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-4)


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.slow
def test_decode_runs_under_jit_in_a_stateless_scope(name):
    """The generator's way: variables passed in, state returned, nothing mutated in Python."""
    import jax

    model = tiny(name)
    x = tokens()
    full = numpy(model(x))
    values = [v.value for v in model.variables]

    @jax.jit
    def decode(values, new_tokens, state):
        with keras.StatelessScope(state_mapping=list(zip(model.variables, values))):
            return model.decode(new_tokens, state)

    state = model.init_state(2)
    if state is None:
        logits, _ = decode(values, x, None)
        np.testing.assert_allclose(numpy(logits), full, atol=1e-4)
        return
    first, state = decode(values, x[:, :4], state)
    second, state = decode(values, x[:, 4:5], state)
    third, state = decode(values, x[:, 5:], state)
    decoded = numpy(ops.concatenate([first, second, third], axis=1))
    np.testing.assert_allclose(decoded, full, atol=1e-4)


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.slow
def test_logits_stay_float32_under_mixed_bfloat16(name):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny(name)
        assert model.compute_dtype == "bfloat16"
        logits = numpy(model(tokens()))
        state = model.init_state(2)
        decoded, _ = model.decode(tokens()[:, :4], state)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    assert numpy(decoded).dtype == np.float32


@pytest.mark.slow
def test_head_bias_init_sets_the_elman_rnns_logit_bias():
    # `head_bias_init = "unigram"` sets the logit bias (`c` in the Elman equations); it was
    # refused for `rnn` (gpt and lstm: tests/test_training.py).
    model = tiny("rnn")
    x = tokens()
    before = numpy(model(x))
    bias = np.log(np.random.default_rng(1).dirichlet(np.ones(VOCAB))).astype("float32")
    model.set_head_bias(bias)
    np.testing.assert_allclose(numpy(model(x)) - before, np.broadcast_to(bias, before.shape),
                               atol=1e-4)


def test_a_bfloat16_lstm_stays_off_cudnn_which_compiles_float32_only():
    # On a GPU, JAX's cuDNN LSTM fails to compile in bfloat16 (seen on an H200: "Unknown output
    # type bfloat16"); the generic loop runs everywhere. float32 keeps Keras's own choice.
    for policy, expected in (("mixed_bfloat16", False), ("float32", "auto")):
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = tiny("lstm")
        finally:
            keras.mixed_precision.set_global_policy("float32")
        assert [rnn.use_cudnn for rnn in model.rnns] == [expected] * len(model.rnns), policy


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.slow
def test_dropout_is_active_only_in_training(name):
    cls = architectures.get(name)
    if "dropout" not in inspect.signature(cls).parameters:
        assert name in {"rnn", "classic_lstm"}, f"{name} should accept `dropout`"
        return
    model = tiny(name, dropout=0.5)
    x = tokens()
    np.testing.assert_array_equal(numpy(model(x)), numpy(model(x)))
    assert np.abs(numpy(model(x, training=True)) - numpy(model(x))).max() > 1e-4


@pytest.mark.parametrize("name", ARCHS)
def test_vocab_size_must_be_positive(name):
    with pytest.raises(ConfigError, match=r"`vocab_size` must be a positive integer, got 0"):
        architectures.get(name)(0)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("lstm", {"units": -3}, r"`units` must be a positive integer, got -3"),
        ("gru", {"layers": 0}, r"`layers` must be a positive integer, got 0"),
        ("gru", {"dropout": 1.5}, r"`dropout` must be a number in \[0, 1\), got 1.5"),
        ("lstm", {"tie_embeddings": "yes"}, r"`tie_embeddings` must be true or false, got 'yes'"),
        ("rnn", {"activation": "sigmoid"},
         r"`activation` must be one of 'tanh', 'relu', got 'sigmoid'"),
        ("gated_cnn", {"kernel_size": 0}, r"`kernel_size` must be a positive integer, got 0"),
        ("gpt", {"embed_dim": 30, "heads": 4},
         r"`embed_dim` \(30\) must be divisible by `heads` \(4\)"),
        ("gpt", {"seq_len": 2.5}, r"`seq_len` must be a positive integer, got 2.5"),
    ],
)
def test_bad_constructor_arguments_raise_config_error(name, options, message):
    with pytest.raises(ConfigError, match=message):
        architectures.get(name)(VOCAB, **options)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.slow
def test_rnn_is_exactly_the_elman_equations(activation):
    """h_t = f(W x_t + U h_{t-1} + b), y_t = softmax(W' h_t + c), with x_t one-hot, in NumPy."""
    model = architectures.get("rnn")(VOCAB, units=8, activation=activation)
    x = tokens(2, 7)
    probs = numpy(ops.softmax(model(x), axis=-1))
    W, U, b, W_out, c = (numpy(w) for w in (model.W, model.U, model.b, model.W_out, model.c))
    f = np.tanh if activation == "tanh" else (lambda z: np.maximum(z, 0.0))
    for i in range(x.shape[0]):
        h = np.zeros(8)
        for t in range(x.shape[1]):
            one_hot = np.eye(VOCAB)[x[i, t]]
            h = f(W.T @ one_hot + U.T @ h + b)
            y = np.exp(W_out.T @ h + c)
            np.testing.assert_allclose(probs[i, t], y / y.sum(), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_classic_lstm_is_the_classic_keras_example():
    """Same layers and weights as Embedding(V, 128) -> LSTM(128) -> Dense(V, softmax)."""
    model = architectures.get("classic_lstm")(VOCAB)
    x = tokens()
    logits = model(x)
    reference = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(VOCAB, 128),
        keras.layers.LSTM(128, return_sequences=True),
        keras.layers.Dense(VOCAB, activation="softmax"),
    ])
    assert model.count_params() == reference.count_params()
    lstm = model.rnns[0]
    reference.set_weights([numpy(w) for w in (
        model.embedding, lstm.cell.kernel, lstm.cell.recurrent_kernel, lstm.cell.bias,
        model.head_kernel, model.head_bias,
    )])
    np.testing.assert_allclose(numpy(ops.softmax(logits, axis=-1)), numpy(reference(x)),
                               atol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "gru", "gated_cnn"])
@pytest.mark.slow
def test_tied_embeddings_share_the_embedding_matrix(name):
    """Tied, embed_dim != units: a (units, embed_dim) projection replaces the (units, V) head."""
    untied = tiny(name, embed_dim=8, units=16, tie_embeddings=False)
    tied = tiny(name, embed_dim=8, units=16, tie_embeddings=True)
    untied(tokens()), tied(tokens())
    assert untied.count_params() - tied.count_params() == 16 * VOCAB - 16 * 8
    before = numpy(tied(tokens()))
    tied.embedding.assign(tied.embedding * 2.0)   # the output head moves with the embedding
    assert np.abs(numpy(tied(tokens())) - before).max() > 1e-4


@pytest.mark.slow
def test_gpt_context_and_cache():
    model = tiny("gpt", seq_len=12)
    assert model.max_context == 12
    state = model.init_state(2)
    # one array per layer: (B, heads, seq_len, head_dim)
    assert len(state["k"]) == 2 and tuple(state["k"][0].shape) == (2, 2, 12, 8)
    _, state = model.decode(tokens()[:, :4], state)
    assert int(numpy(state["pos"])) == 4


def test_gated_cnn_decodes_by_recomputing_the_context():
    model = tiny("gated_cnn")
    assert model.max_context is None and model.init_state(2) is None


@pytest.mark.slow
def test_gpt_without_head_bias_is_the_bare_tied_head_and_old_files_keep_theirs(tmp_path):
    import json
    import zipfile

    x = tokens()
    bare = tiny("gpt", head_bias=False)
    logits = numpy(bare(x))
    biased = tiny("gpt")
    biased(x)
    assert bare.head_bias is None and bare.count_params() == biased.count_params() - VOCAB
    np.testing.assert_allclose(logits, numpy(bare.features(x)) @ numpy(bare.embedding).T,
                               atol=1e-5)
    path = tmp_path / "bare.keras"
    bare.save(path)
    np.testing.assert_array_equal(numpy(keras.saving.load_model(path, safe_mode=True)(x)), logits)
    # A file saved before the option existed has no `head_bias` key: it loads with its bias.
    biased.head_bias.assign(np.arange(VOCAB, dtype="float32"))
    biased.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as src, \
            zipfile.ZipFile(tmp_path / "old.keras", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                del config["config"]["head_bias"]
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    old = keras.saving.load_model(tmp_path / "old.keras", safe_mode=True)
    np.testing.assert_array_equal(numpy(old.head_bias), np.arange(VOCAB))
    np.testing.assert_array_equal(numpy(old(x)), numpy(biased(x)))


SPEEDRUN_OPTIONS = {
    "rotary": {"rotary": True},
    "qk_norm": {"qk_norm": True},
    "relu2": {"mlp": "relu2"},
    "rmsnorm": {"norm": "rmsnorm"},
    "untied": {"tie_embeddings": False},
    "zero_init": {"zero_init": True},
    "softcap": {"logit_softcap": 2.0},
    "all": {"rotary": True, "qk_norm": True, "mlp": "relu2", "norm": "rmsnorm",
            "tie_embeddings": False, "zero_init": True, "logit_softcap": 2.0},
}


def _check_gpt_option(options, tmp_path):
    """Shapes, KV-cache decoding equal to the full forward pass, and a save/load round trip."""
    model = tiny("gpt", **options)
    x = tokens(2, 9)
    full = numpy(model(x))
    assert full.shape == (2, 9, VOCAB) and full.dtype == np.float32 and np.isfinite(full).all()
    state = model.init_state(2)
    pieces = []
    for start, stop in ((0, 4), (4, 5), (5, 9)):
        logits, state = model.decode(x[:, start:stop], state)
        pieces.append(numpy(logits))
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-4)
    path = tmp_path / "gpt.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(numpy(loaded(x)), full)
    return model, full


@pytest.mark.slow
def test_gpt_with_every_speedrun_option_decodes_and_round_trips(tmp_path):
    model, logits = _check_gpt_option(SPEEDRUN_OPTIONS["all"], tmp_path)
    assert model.position_embedding is None              # rotary replaces learned positions
    assert np.abs(logits).max() <= 2.0                   # the soft cap bounds every logit
    names = {v.path.split("/")[-1] for v in model.weights}
    assert "head_kernel" in names and "beta" not in names  # untied head; RMSNorm has no bias


@pytest.mark.slow
@pytest.mark.parametrize("option", [k for k in SPEEDRUN_OPTIONS if k != "all"])
def test_gpt_speedrun_option_alone(option, tmp_path):
    _check_gpt_option(SPEEDRUN_OPTIONS[option], tmp_path)


def test_gpt_speedrun_options_change_the_computation_and_default_off():
    x = tokens(2, 9)
    keras.utils.set_random_seed(0)
    plain = tiny("gpt")
    base = numpy(plain(x))
    assert plain.get_config()["rotary"] is False and plain.get_config()["mlp"] == "gelu"
    for options in ({"qk_norm": True}, {"mlp": "relu2"}, {"logit_softcap": 1.0}):
        other = tiny("gpt", **options)
        other(x)
        other.set_weights(plain.get_weights())  # the same weights, another computation
        assert np.abs(numpy(other(x)) - base).max() > 1e-4, options


def test_gpt_zero_init_blocks_start_as_the_identity():
    x = tokens(2, 9)
    model = tiny("gpt", zero_init=True, tie_embeddings=False, head_bias=False)
    assert np.abs(numpy(model(x))).max() == 0.0  # zero residual branches and a zero head
    for block in model.blocks:
        assert not numpy(block.w_proj).any() and not numpy(block.w_out).any()


@pytest.mark.parametrize("options, message", [
    ({"mlp": "swish"}, "`mlp` must be one of"),
    ({"norm": "batch"}, "`norm` must be one of"),
    ({"logit_softcap": -1.0}, "`logit_softcap` must be a number >= 0"),
    ({"rotary": True, "embed_dim": 18, "heads": 2}, "must be even"),
])
def test_gpt_speedrun_options_are_checked(options, message):
    with pytest.raises(ConfigError, match=message):
        tiny("gpt", **options)


def test_building_gpt_compiles_no_program_per_weight(caplog):
    """`build_model` creates the weights with a symbolic call and gpt draws them on the host:
    on a cold start, an eager call and Keras's random initializers compiled ~90 small programs
    (seconds before the first step). Odd sizes, so no earlier test compiled them already."""
    import logging

    import jax

    from lmkit.build import build_model
    from lmkit.config import TrainConfig

    cfg = TrainConfig(arch="gpt", embed_dim=44, layers=2, heads=2, seq_len=13)
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        model = build_model(cfg, 37)
    compiled = [r.getMessage() for r in caplog.records if "XLA compilation" in r.getMessage()]
    assert len(model.trainable_variables) == 2 + 2 * 12 + 2 + 1  # embedding, positions, ...
    forward_or_random = ("normal", "_var", "_mean", "einsum", "matmul", "softmax")
    assert not [m for m in compiled if any(op in m for op in forward_or_random)], compiled


def test_gpt_weights_follow_the_seed():
    def weights(seed):
        keras.utils.set_random_seed(seed)
        model = tiny("gpt")
        model(keras.Input(shape=(4,), batch_size=1, dtype="int32"))  # builds; runs nothing
        return model.get_weights()

    first, again, other = weights(5), weights(5), weights(6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    assert 0.015 < first[0].std() < 0.025  # the embedding: N(0, 0.02)


@pytest.mark.slow
def test_lmkit_dropout_keeps_each_unit_with_probability_one_minus_rate_and_a_new_mask_each_call():
    import keras

    from lmkit.models.base import Dropout

    layer = Dropout(0.25, seed=3)
    x = np.ones((64, 256), np.float32)
    assert np.array_equal(np.asarray(layer(x, training=False)), x)
    first, second = (np.asarray(layer(x, training=True)) for _ in range(2))
    for mask in (first, second):
        assert set(np.unique(mask)) == {0.0, np.float32(1 / 0.75)}   # kept units scaled up
        assert abs((mask > 0).mean() - 0.75) < 0.01
        assert abs((mask > 0).mean(axis=0) - 0.75).max() < 0.2         # no dead columns
    assert abs(((first > 0) == (second > 0)).mean() - (0.75**2 + 0.25**2)) < 0.01  # independent
    if keras.backend.backend() == "jax":  # the hash mask, not Keras's draw
        assert not np.array_equal(first, np.asarray(keras.layers.Dropout(0.25, seed=3)(x, training=True)))


@pytest.mark.parametrize("rows", [1, 2, 8, 32, 64])
def test_the_tied_head_gives_the_product_for_every_batch_size(rows):
    """`tied_logits` multiplies and sums for 2 to 32 rows on XLA:CPU and takes the product
    otherwise: either way ``h @ table.T`` within float32 rounding."""
    from lmkit.models.base import tied_logits

    rng = np.random.default_rng(rows)
    h = rng.normal(size=(rows, 48)).astype(np.float32)
    table = rng.normal(size=(1000, 48)).astype(np.float32)
    got = np.asarray(tied_logits(h, table))
    np.testing.assert_allclose(got, h.astype(np.float64) @ table.T.astype(np.float64), rtol=1e-5, atol=1e-4)


def test_the_tied_heads_gradient_for_a_few_rows_is_the_products_and_needs_no_more_memory():
    """Differentiated as written, the multiply-and-sum form materialises a (V, rows, D) array
    (7.4 GB for GPT-2's table at 32 rows): a training step with 2 to 32 positions must get the
    product's gradient, in about the product's memory."""
    import jax
    import jax.numpy as jnp

    from lmkit.models.base import tied_logits

    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(32, 48)).astype(np.float32))
    table = jnp.asarray(rng.normal(size=(1000, 48)).astype(np.float32))

    def grads(head):
        loss = lambda t, x: jnp.sum(jax.nn.log_softmax(head(x, t))[:, :3])  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1)))

    want = grads(lambda x, t: x @ t.T)(table, h)
    step = grads(tied_logits)
    for got, expected in zip(step(table, h), want):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-5)
    scratch = step.lower(table, h).compile().memory_analysis().temp_size_in_bytes
    assert scratch < 4 * table.size * 4, f"{scratch} bytes of scratch for a {table.size * 4}-byte table"
