"""BERT's encoder layers under one `lax.scan` (`lmkit.models.layer_scan`): the same outputs,
gradients, dropout masks and seed states as the plain loop, the layer traced once, and the loop
where the layers cannot share one program (low-rank terms on some layers only, eager calls)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import lmkit  # noqa: F401  (JAX backend)
from lmkit.models.base import low_rank_terms
from lmkit.models.layer_scan import scannable
from lmkit.registry import architectures

VOCAB, SEP = 23, 3
OPTIONS = dict(embed_dim=24, layers=3, heads=3, ffn_dim=32, seq_len=32, sep_token_id=SEP)
TOKENS = np.random.default_rng(0).integers(4, VOCAB, (2, 9)).astype(np.int32)
TOKENS[0, 4], TOKENS[1, 7:] = SEP, 0  # a pair, and padding
SEGMENTS = np.array([[1, 1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 1, 1, 1, 1, 1, 0, 0]], np.int32)


def _bert(dropout: float = 0.0):
    keras.utils.set_random_seed(1)
    model = architectures.get("bert")(VOCAB, dropout=dropout, **OPTIONS)
    model(TOKENS)
    return model


def _run(model, scan: bool, training: bool, segments=None, terms=()):
    """``(hidden states, gradients of their weighted sum by every trainable weight, the new
    non-trainable values)`` of one compiled call, the layers scanned or looped."""
    import jax

    model.scan_layers = scan
    weights = np.random.default_rng(2).normal(size=(*TOKENS.shape, OPTIONS["embed_dim"]))
    packed = {} if segments is None else {"segments": segments}

    def loss(trainable, non_trainable):
        mapping = [*zip(model.trainable_variables, trainable),
                   *zip(model.non_trainable_variables, non_trainable)]
        with keras.StatelessScope(state_mapping=mapping) as scope, \
                low_rank_terms([(v, ab) for v, ab in terms]):
            hidden = model.features(TOKENS, training=training, **packed)
        states = [scope.get_current_value(v) for v in model.non_trainable_variables]
        return (hidden * weights).sum(), (hidden, states)

    step = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (_, (hidden, states)), grads = step([v.value for v in model.trainable_variables],
                                        [v.value for v in model.non_trainable_variables])
    return np.asarray(hidden), [np.asarray(g) for g in grads], [np.asarray(s) for s in states]


def _assert_same(scanned, looped, atol=2e-5):
    flat = lambda run: [run[0], *run[1], *run[2]]
    assert len(flat(scanned)) == len(flat(looped))
    for got, want in zip(flat(scanned), flat(looped)):
        np.testing.assert_allclose(got, want, atol=atol, rtol=1e-5)


@pytest.mark.slow  # four compiled forward and backward passes of a small bert (3-8 s at load 3)
@pytest.mark.parametrize("segments", [None, SEGMENTS], ids=["padded", "packed"])
def test_scanned_layers_give_the_loops_states_and_gradients(segments):
    model = _bert()
    _assert_same(_run(model, True, True, segments), _run(model, False, True, segments))


@pytest.mark.slow
def test_with_dropout_every_scanned_layer_draws_the_mask_the_loop_draws():
    # the loop draws each layer's masks from its own seeds: a scan drawing the first layer's
    # (or one seed) everywhere would give other states and gradients
    model = _bert(dropout=0.3)
    scanned, looped = _run(model, True, True), _run(model, False, True)
    _assert_same(scanned, looped)
    before = [np.asarray(v.value) for v in model.non_trainable_variables]
    assert len(before) == 2 * OPTIONS["layers"] + 1  # each layer's two dropouts, the embedding's
    assert all((a != b).any() for a, b in zip(scanned[2], before))  # every seed moved on
    assert not np.allclose(scanned[0], _run(model, True, False)[0], atol=1e-3)  # dropout on


@pytest.mark.slow
def test_low_rank_terms_on_every_layer_are_scanned_and_on_some_fall_back_to_the_loop():
    model = _bert()
    rng = np.random.default_rng(3)
    kernels = [layer.w_qkv for layer in model.encoder_layers]
    every = [(k, (rng.normal(size=(24, 2)).astype(np.float32),
                  rng.normal(size=(2, 72)).astype(np.float32))) for k in kernels]
    _assert_same(_run(model, True, True, terms=every), _run(model, False, True, terms=every),
                 atol=1e-4)
    some = every[:1]
    _assert_same(_run(model, True, True, terms=some), _run(model, False, True, terms=some),
                 atol=1e-4)
    # the terms change the states: the comparisons above can fail
    assert not np.allclose(_run(model, True, True, terms=some)[0], _run(model, True, True)[0])


def test_the_layer_is_traced_once_and_eager_calls_loop():
    import jax

    model = _bert()

    def program(scan: bool):
        model.scan_layers = scan
        values = [v.value for v in model.variables]

        def forward(values):
            with keras.StatelessScope(state_mapping=list(zip(model.variables, values))):
                return model.features(TOKENS)

        return jax.make_jaxpr(forward)(values).jaxpr

    scanned, looped = program(True), program(False)
    scans = [e for e in scanned.eqns if e.primitive.name == "scan"]
    assert len(scans) == 1 and scans[0].params["length"] == OPTIONS["layers"]
    count = lambda jaxpr: str(jaxpr).count("dot_general")
    assert count(scanned) * 2 < count(looped)  # each layer's matmuls once, not 3 times
    # outside a trace (eager or symbolic calls) the layers run as a loop
    assert not scannable(model.encoder_layers, TOKENS)
    assert not scannable(model.encoder_layers[:1], TOKENS)


def test_scan_layers_is_an_option_that_round_trips():
    model = architectures.get("bert")(VOCAB, scan_layers=True, **OPTIONS)
    assert model.get_config()["scan_layers"] is True
    assert type(model).from_config(model.get_config()).scan_layers is True
    assert architectures.get("bert")(VOCAB, **OPTIONS).scan_layers is False  # measured default
