"""Packed rows (`lmkit.data.packing`): several examples in one row give each example what it
gives alone -- hidden states, logits, pooled embeddings, gradients -- on every architecture with
the capability ``"packing"``; the others declare that they cannot take it."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import lmkit  # noqa: F401  (JAX backend)
from lmkit import forward
from lmkit.data.packing import first_fit, pack
from lmkit.errors import ConfigError
from lmkit.models.base import PACKING
from lmkit.registry import architectures

VOCAB = 23
SEP = 3  # bert's separator in these tests: token types restart in every segment
ATOL = 2e-5

# bert as MiniLM is shaped (post-LayerNorm, token types, learned positions), gpt with learned
# positions and with rotary, gpt2, llama with grouped-query attention and a sliding window
MODELS = {
    "bert": ("bert", dict(embed_dim=24, layers=2, heads=3, ffn_dim=32, seq_len=32, dropout=0.0,
                          sep_token_id=SEP)),
    "gpt": ("gpt", dict(embed_dim=16, layers=2, heads=2, seq_len=32)),
    "gpt_rotary": ("gpt", dict(embed_dim=16, layers=2, heads=2, seq_len=32, rotary=True,
                               qk_norm=True)),
    "gpt2": ("gpt2", dict(embed_dim=16, layers=2, heads=2, n_positions=32)),
    "llama": ("llama", dict(embed_dim=16, layers=2, heads=4, kv_heads=2, seq_len=32)),
    "llama_window": ("llama", dict(embed_dim=16, layers=2, heads=2, seq_len=32, sliding_window=4)),
}


def _model(key: str):
    name, options = MODELS[key]
    model = architectures.get(name)(VOCAB, **options)
    model(np.ones((1, 4), np.int32))
    return model


def _examples(seed: int = 0, lengths=(7, 3, 9, 2, 5, 1, 4)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = [rng.integers(4, VOCAB, n).astype(np.int32) for n in lengths]
    rows[0][3] = rows[2][2] = SEP  # pairs: a second token type after the separator
    return rows


def _compiled(model, fn):
    """`fn(model)` as one compiled program, the model's weights its inputs: eagerly, every op of
    every shape compiles a program of its own (about ten times slower on a CPU)."""
    import jax

    variables = model.variables

    def pure(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(model)

    return jax.tree.map(np.asarray, jax.jit(pure)([v.value for v in variables]))


def _hidden(model, rows, segments=None):
    """The hidden states of `rows` (each alone) or of packed rows (with `segments`)."""
    if segments is not None:
        return _compiled(model, lambda m: m.features(rows, segments=segments))
    return _compiled(model, lambda m: [m.features(row[None])[0] for row in rows])


@pytest.mark.slow  # two compiled programs: 20-41 s each at load 9 (eager ops: 3x as long)
@pytest.mark.parametrize("key", list(MODELS))
def test_packed_rows_give_each_example_its_hidden_states_alone(key):
    model = _model(key)
    rows = _examples()
    packed = pack(rows, width=12)
    assert packed.tokens.shape[0] < len(rows)  # several examples share a row
    hidden = _hidden(model, packed.tokens, packed.segments).reshape(-1, model.embed_dim)
    for row, start, alone in zip(rows, packed.offsets, _hidden(model, rows)):
        np.testing.assert_allclose(hidden[start:start + len(row)], alone, atol=ATOL, rtol=1e-4)


@pytest.mark.slow  # 8-11 s each at load 9
@pytest.mark.parametrize("key", ["gpt", "gpt_rotary", "gpt2", "llama"])
def test_a_token_of_the_second_example_does_not_see_the_first(key):
    model = _model(key)
    first, second = _examples()[:2]
    changed = (first + 5) % VOCAB
    logits = []
    for a in (first, changed):
        packed = pack([a, second], width=len(first) + len(second))
        assert packed.tokens.shape[0] == 1
        out = _compiled(model, lambda m: m(packed.tokens, segments=packed.segments))[0]
        logits.append(out[len(first):])  # the second example follows the first in the row
    np.testing.assert_array_equal(logits[0], logits[1])
    alone = _compiled(model, lambda m: m(second[None]))[0]
    np.testing.assert_allclose(logits[0], alone, atol=ATOL, rtol=1e-4)


def _gradients(model, loss):
    """d loss(model) / d trainable weights, at the model's weights (one compiled program)."""
    import jax

    variables = model.trainable_variables

    def value(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return loss(model)

    return jax.jit(jax.grad(value))([v.value for v in variables])


@pytest.mark.slow  # four compiled programs: 22-33 s each at load 9
@pytest.mark.parametrize("key", ["bert", "gpt_rotary", "gpt2", "llama"])
def test_per_example_losses_and_gradients_equal_the_padded_batch(key):
    from keras import ops

    model = _model(key)
    rows = _examples(1)
    packed = pack(rows, width=12)
    padded = forward.pad_rows(rows, 12)
    lengths = np.asarray([len(r) for r in rows], np.int32)
    direction = np.random.default_rng(2).normal(size=model.embed_dim).astype(np.float32)

    def losses(hidden, offsets):  # a per-example loss on each example's mean state
        pooled = forward.pool(ops.cast(hidden, "float32"), lengths, "mean", offsets)
        return ops.square(ops.matmul(pooled, direction))

    def packed_losses(m):
        return losses(m.features(packed.tokens, segments=packed.segments), packed.offsets)

    def padded_losses(m):  # bert masks its pad id; a decoder's right padding comes after
        return losses(m.features(padded), None)

    per_packed, per_padded = _compiled(model, packed_losses), _compiled(model, padded_losses)
    np.testing.assert_allclose(per_packed, per_padded, rtol=1e-4, atol=1e-5)
    gradients = [_gradients(model, lambda m, f=f: ops.sum(f(m))) for f in (packed_losses, padded_losses)]
    for g_packed, g_padded in zip(*gradients):
        np.testing.assert_allclose(np.asarray(g_packed), np.asarray(g_padded), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_packed_embeddings_equal_padded_ones(pooling):
    model = _model("bert")
    rows = _examples(3, lengths=(12, 2, 5, 5, 9, 1, 3, 30, 4, 6, 2, 8))
    padded = forward.pooled(model, rows, pooling, batch_size=4)
    packed = forward.pooled(model, rows, pooling, batch_size=4, packing=True)
    np.testing.assert_allclose(packed, padded, atol=1e-5)


def test_recurrent_and_convolutional_architectures_declare_no_packing():
    packing = {e.name for e in architectures.list() if e.has(PACKING)}
    assert {"bert", "gpt", "gpt2", "llama"} <= packing
    assert not packing & {"lstm", "gru", "elman", "gated_cnn"}


def test_first_fit_decreasing_fills_rows_and_refuses_a_row_too_long():
    lengths = [5, 5, 3, 3, 2, 2]
    row = first_fit(lengths, 8)
    assert row.max() + 1 == 3  # 20 tokens in rows of 8: the fewest rows
    for r in range(3):
        assert sum(n for n, at in zip(lengths, row) if at == r) <= 8
    with pytest.raises(ConfigError, match="width=4"):
        first_fit([5], 4)


# -- fine-tuning: packed batches train as padded ones ----------------------------------------------
def _finetune_trainee(key: str, data, head: str, packing: bool, loss: str, batch_size: int = 8,
                     total: int = 3):
    from lmkit.config import EvalConfig
    from lmkit.evaluation.finetune import FinetuneTrainee
    from lmkit.evaluation.heads import NextTokenLogProbs, SequenceClassifier
    from lmkit.evaluation.shapes.classification import build_head
    from lmkit.resolve import resolve

    keras.utils.set_random_seed(0)
    backbone = _model(key)
    model = (SequenceClassifier(backbone, 2, pooling=head, dropout=0.0) if head != "generation"
             else NextTokenLogProbs(backbone))
    build_head(model, 1)
    cfg = EvalConfig(batch_size=batch_size, max_length=64, max_steps=total, loss=loss, learning_rate=1e-2,
                     backbone_lr_multiplier=1.0, packing=packing)
    parts = resolve(cfg, backbone="scratch", steps=total)
    return FinetuneTrainee(model, data, parts.config, total, parts)


def _positions(trainee, steps: int) -> int:
    return sum(trainee._batch(s)[0][0].size for s in range(steps))


@pytest.mark.slow
@pytest.mark.parametrize("key,head", [("bert", "cls"), ("gpt_rotary", "concat"), ("llama", "mean")])
def test_fine_tuning_steps_give_the_same_losses_and_weights_packed_and_padded(key, head):
    from lmkit.evaluation.encoding import Encoded

    rng = np.random.default_rng(4)
    data = Encoded([rng.integers(4, VOCAB, int(n)).astype(np.int32) for n in rng.integers(2, 16, 24)],
                   rng.integers(0, 2, 24))
    packed = _finetune_trainee(key, data, head, True, "cross_entropy")
    padded = _finetune_trainee(key, data, head, False, "cross_entropy")
    assert packed.packed_width == 15 and padded.packed_width is None
    padded._rows = packed._rows  # the same examples at each step (runs of one shape differ)
    losses = packed.train(0, 3)
    np.testing.assert_allclose(losses, padded.train(0, 3), rtol=1e-4, atol=1e-5)
    for a, b in zip(packed.model_arrays(), padded.model_arrays()):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_packed_batches_compute_about_the_real_tokens_in_few_shapes():
    from lmkit.evaluation.encoding import Encoded
    from lmkit.evaluation.finetune import PAD_WIDTHS

    rng = np.random.default_rng(6)  # short sentences and a few long ones, as SST-2's
    lengths = np.minimum(rng.geometric(0.08, 650) + 2, 64)  # a short last batch
    data = Encoded([np.full(n, 5, np.int32) for n in lengths], rng.integers(0, 2, 650))
    # a long run: several shapes pay for their compilation (a short one packs into one)
    packed = _finetune_trainee("gpt", data, "mean", True, "cross_entropy", batch_size=32, total=2000)
    padded = _finetune_trainee("gpt", data, "mean", False, "cross_entropy", batch_size=32, total=2000)
    steps = packed.steps_per_epoch
    shapes = {packed._batch(s)[0].tokens.shape for s in range(steps)}
    assert len(shapes) <= PAD_WIDTHS  # chosen on the first epoch; a later one may add one or two
    assert len(shapes | {packed._batch(s)[0].tokens.shape for s in range(steps, 3 * steps)}) <= PAD_WIDTHS + 2
    real = int(lengths.sum())
    assert _positions(packed, steps) < 1.15 * real < 0.9 * _positions(padded, steps)


@pytest.mark.slow
def test_packed_generation_pairs_train_as_padded_ones_with_the_loss_on_targets_only():
    from lmkit.evaluation.encoding import Encoded

    rng = np.random.default_rng(5)
    ids = [rng.integers(4, VOCAB, int(n)).astype(np.int32) for n in rng.integers(4, 16, 16)]
    spans = np.asarray([(len(r) // 2, len(r) - 1) for r in ids], np.int32)  # the target: the second half
    data = Encoded(ids, spans)
    packed = _finetune_trainee("gpt2", data, "generation", True, "target_nll")
    padded = _finetune_trainee("gpt2", data, "generation", False, "target_nll")
    assert packed.packed_width is not None
    padded._rows = packed._rows
    inputs, labels = packed._batch(0)
    outputs = _compiled(packed.model, lambda m: m(inputs))  # per example, from its own start
    rows = [data.ids[i] for i in packed._rows(0)]
    alone = _compiled(packed.model, lambda m: [m((r[None], np.asarray([len(r)])))[0] for r in rows])
    for got, want, (start, end) in zip(outputs, alone, labels):
        np.testing.assert_allclose(got[start:end], want[start:end], atol=2e-5)  # the target's log-probs
    np.testing.assert_allclose(packed.train(0, 3), padded.train(0, 3), rtol=1e-4, atol=1e-5)


def test_packing_is_off_for_a_recurrent_backbone_and_when_asked(monkeypatch):
    from lmkit.evaluation.encoding import Encoded

    data = Encoded([np.ones(3, np.int32)] * 8, np.zeros(8, np.int64))
    assert _finetune_trainee("gpt", data, "mean", False, "cross_entropy").packed_width is None
    monkeypatch.setitem(MODELS, "lstm", ("lstm", dict(embed_dim=8, units=8, layers=1)))
    assert _finetune_trainee("lstm", data, "mean", True, "cross_entropy").packed_width is None


@pytest.mark.slow
def test_minilm_embeddings_are_the_same_packed_and_padded():
    mini = lmkit.from_pretrained("minilm-l6")
    texts = ["A cat.", "Someone is playing a guitar on a quiet street at night.", "Stocks fell.",
             "The quick brown fox jumps over the lazy dog, twice, and then sleeps.", "Hi", "Yes."]
    for pooling in ("mean", "cls"):
        packed = mini.embed(texts, pooling=pooling, batch_size=4)
        np.testing.assert_allclose(packed, mini.embed(texts, pooling=pooling, batch_size=4, packing=False),
                                   atol=1e-5)
