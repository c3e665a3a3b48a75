"""A classifier reading each example's first token ([CLS]) from a backbone with `STATES_AT`
computes the last layer for those positions alone: the same logits and gradients as the whole
last layer, padded and packed, for less work."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import lmkit  # noqa: F401  (JAX backend)
from lmkit.data.packing import pack
from lmkit.registry import architectures

VOCAB = 23


def _classifier(pooling: str = "cls", name: str = "bert"):
    from lmkit.evaluation.heads import SequenceClassifier
    from lmkit.evaluation.shapes.classification import build_head

    keras.utils.set_random_seed(0)
    options = (dict(embed_dim=24, layers=2, heads=3, ffn_dim=32, seq_len=64, dropout=0.0)
               if name == "bert" else dict(embed_dim=16, layers=2, heads=2, seq_len=64))
    backbone = architectures.get(name)(VOCAB, **options)
    backbone(np.ones((1, 4), np.int32))
    model = SequenceClassifier(backbone, 2, pooling=pooling, dropout=0.0)
    build_head(model, 1)
    return model


def _examples() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(4, VOCAB, k).astype(np.int32) for k in (5, 9, 3, 12, 7, 1)]


def _padded(examples: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.zeros((len(examples), max(map(len, examples))), np.int32)
    for i, e in enumerate(examples):
        tokens[i, :len(e)] = e
    return tokens, np.array([len(e) for e in examples], np.int32)


def _loss_and_grads(model, inputs, first_only: bool):
    """The mean of the logits' squares and its gradients for every trainable weight."""
    model.first_only = first_only
    weights = [v.value for v in model.trainable_variables]
    rest = [v.value for v in model.non_trainable_variables]

    def loss(trainable):
        logits, _ = model.stateless_call(trainable, rest, inputs, training=True)
        return jnp.mean(logits ** 2), logits

    (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(weights)
    return np.asarray(logits), [np.asarray(g) for g in grads]


@pytest.mark.parametrize("packed", [False, True])
def test_first_token_logits_and_gradients_equal_the_whole_last_layers(packed):
    model = _classifier()
    assert model.first_only
    examples = _examples()
    inputs = pack(examples, 16) if packed else _padded(examples)
    logits, grads = _loss_and_grads(model, inputs, True)
    whole_logits, whole_grads = _loss_and_grads(model, inputs, False)
    assert logits.shape == (len(examples), 2)
    np.testing.assert_allclose(logits, whole_logits, rtol=1e-5, atol=1e-6)
    for g, w in zip(grads, whole_grads):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("packed", [False, True])
def test_the_first_token_step_computes_less_than_the_whole_last_layer(packed):
    model = _classifier()
    examples = _examples() * 4  # 24 examples: 24 padded rows of 12, or 5 packed rows of 48
    inputs = pack(examples, 48) if packed else _padded(examples)

    def flops(first_only: bool) -> float:
        model.first_only = first_only
        weights = [v.value for v in model.trainable_variables]
        rest = [v.value for v in model.non_trainable_variables]
        step = jax.jit(jax.grad(lambda w: jnp.mean(
            model.stateless_call(w, rest, inputs, training=True)[0] ** 2)))
        cost = step.lower(weights).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    # of two layers, the last one computes its keys and values at every position, the rest
    # at the 24 first tokens only
    assert flops(True) < 0.8 * flops(False)


def test_only_first_token_pooling_on_a_capable_backbone_reads_the_states_at_positions():
    assert not _classifier("mean").first_only  # the mean needs every position's state
    assert not _classifier("cls", "gpt").first_only  # no `STATES_AT`: the whole states
