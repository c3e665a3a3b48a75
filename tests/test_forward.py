"""The one batched forward pass (`lmkit.forward`): its padding policy changes no result, results
come back in the input order, and the number of compiled shapes stays bounded."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import lmkit  # noqa: F401  (JAX backend)
from lmkit import forward
from lmkit.errors import ConfigError
from lmkit.registry import architectures, tokenizers

VOCAB = 29
CONTEXT = 64


@pytest.fixture(scope="module")
def gpt():
    model = architectures.get("gpt")(VOCAB, embed_dim=16, layers=1, heads=2, seq_len=CONTEXT)
    model(np.zeros((1, 2), np.int32))
    return model


@pytest.fixture(scope="module")
def bert():
    model = architectures.get("bert")(VOCAB, embed_dim=16, layers=1, heads=2, seq_len=CONTEXT,
                                      dropout=0.0)
    model(np.zeros((1, 2), np.int32))
    return model


#: lengths on both sides of the 16-token buckets, in no order; repeated lengths share the eager
#: (one-row, unpadded) oracle's compilations
LENGTHS = [3, 17, 5, 30, 17, 3, 1, 16, 30, 5, 3]


def _rows(lengths: list[int] | np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VOCAB, size=int(n)).astype(np.int32) for n in lengths]


def _random_lengths(count: int, seed: int, low: int = 1, high: int = CONTEXT) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high + 1, count)


def _log_probs(model, ids: np.ndarray) -> np.ndarray:
    """log p(ids[t + 1] | ids[:t + 1]) for each t, from one unpadded call, in float64."""
    logits = np.asarray(model(np.asarray(ids)[None, :-1], training=False), np.float64)[0]
    top = logits.max(-1, keepdims=True)
    log_probs = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    return log_probs[np.arange(len(ids) - 1), np.asarray(ids)[1:]]


def _compiled_shapes(model, body, static=None) -> int:
    return forward._COMPILED[model][(body, static)]._cache_size()


# -- the padding policy alone (no model) -----------------------------------------------------------
def test_the_plan_covers_every_row_once_in_few_widths_and_one_row_count_per_width() -> None:
    lengths = np.random.default_rng(0).integers(1, 300, 1000)
    batches = forward.plan(lengths, batch_size=32, limit=256 + 44)
    index = np.concatenate([b.index for b in batches])
    assert sorted(index.tolist()) == list(range(1000))
    assert all(lengths[b.index].max() <= b.width for b in batches)
    assert all(b.width % 16 == 0 or b.width == 300 for b in batches)  # the limit caps the last
    shapes = {(b.width, b.rows) for b in batches}
    assert len(shapes) == len({b.width for b in batches}) <= math.ceil(300 / 16)
    assert {b.rows for b in batches} == {32}


def test_a_token_budget_gives_wide_batches_fewer_rows() -> None:
    batches = forward.plan([10] * 40 + [200] * 40, batch_size=32, max_tokens=1024)
    rows = {b.width: b.rows for b in batches}
    assert rows == {16: 32, 208: 4}
    assert all(len(b.index) <= b.rows for b in batches)


def test_few_rows_compute_a_small_batch_and_long_rows_are_refused() -> None:
    assert [b.rows for b in forward.plan([3, 5, 7], batch_size=32)] == [4]
    with pytest.raises(ConfigError, match="a row of 70 tokens is longer than the limit of 64"):
        forward.plan([3, 70], batch_size=8, limit=64)


def test_packed_batches_are_evened_out_so_the_last_is_not_mostly_padding(monkeypatch) -> None:
    computed: list[int] = []

    def prepared(model, body, static, args):  # the compiled body's place: count its rows
        def fn(values, tokens, lengths, segments, offsets):
            computed.append(tokens.shape[0])
            return np.zeros(len(lengths), np.float32)
        return fn, []

    monkeypatch.setattr(forward, "_prepared", prepared)
    rows = _rows([30] * 70, 0)  # one example a packed row: 70 rows, 32 to a batch of 32 examples
    out = forward.apply_packed(None, None, rows, batch_size=32)
    assert len(out) == 70
    assert len(computed) == 3 and sum(computed) == 72  # three batches of 24 rows, not 32 + 32 + 32


def test_a_packed_batch_on_a_cpu_holds_no_more_positions_than_fit_its_caches(monkeypatch) -> None:
    shapes: list[tuple[int, int]] = []

    def prepared(model, body, static, args):  # the compiled body's place: record its shapes
        def fn(values, tokens, lengths, segments, offsets):
            shapes.append(tokens.shape)
            return np.zeros(len(lengths), np.float32)
        return fn, []

    monkeypatch.setattr(forward, "_prepared", prepared)
    rows = _rows([60] * 300, 0)  # one example a packed row of 64; 256 of them asked per batch
    out = forward.apply_packed(None, None, rows, batch_size=256)
    assert len(out) == 300 and sum(r for r, _ in shapes) >= 300
    assert {w for _, w in shapes} == {64}
    assert max(r * w for r, w in shapes) <= forward.CPU_BATCH_TOKENS  # not 2 x 150 rows of 64


def test_a_padded_batch_on_a_cpu_holds_no_more_positions_than_fit_its_caches(monkeypatch) -> None:
    shapes: list[tuple[int, ...]] = []

    def prepared(model, body, static, args):
        def fn(values, tokens, lengths, *extras):
            shapes.append(tokens.shape)
            return np.zeros(len(lengths), np.float32)
        return fn, []

    monkeypatch.setattr(forward, "_prepared", prepared)
    out = forward.apply(None, None, _rows([60] * 300, 0), batch_size=256)  # rows of 64
    assert len(out) == 300 and max(r * w for r, w in shapes) <= forward.CPU_BATCH_TOKENS
    shapes.clear()
    out = forward.apply(None, None, _rows([60] * 300, 0), batch_size=256, group=4)  # 75 items of 4
    assert len(out) == 75 and max(r * w for r, w in shapes) <= forward.CPU_BATCH_TOKENS


# -- results equal one-at-a-time unpadded calls ----------------------------------------------------
@pytest.mark.slow  # one eager (unpadded) call per length is the oracle
def test_batched_logits_equal_each_row_alone_in_input_order(gpt) -> None:
    rows = _rows(LENGTHS, seed=1)
    batched = forward.logits(gpt, rows, batch_size=4, limit=CONTEXT)
    assert batched.shape == (len(rows), max(map(len, rows)), VOCAB)
    for i, row in enumerate(rows):
        alone = np.asarray(gpt(row[None], training=False))[0]
        np.testing.assert_allclose(batched[i, :len(row)], alone, atol=1e-5)
        assert not batched[i, len(row):].any()  # zero past the row's length


@pytest.mark.slow  # one eager (unpadded) call per length is the oracle
def test_features_and_pooled_embeddings_equal_each_text_alone(bert) -> None:
    rows = _rows(LENGTHS, seed=2)
    hidden = forward.features(bert, rows, batch_size=4, limit=CONTEXT)
    mean = forward.pooled(bert, rows, "mean", batch_size=4, limit=CONTEXT)
    cls = forward.pooled(bert, rows, "cls", batch_size=4, limit=CONTEXT)
    for i, row in enumerate(rows):
        alone = np.asarray(bert.features(row[None], training=False))[0]
        np.testing.assert_allclose(hidden[i, :len(row)], alone, atol=1e-5)
        np.testing.assert_allclose(mean[i], alone.mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(cls[i], alone[0], atol=1e-5)
    with pytest.raises(ConfigError, match="`pooling` must be one of mean, cls, got 'max'"):
        forward.pooled(bert, rows, "max")


@pytest.mark.slow  # one eager (unpadded) call per length is the oracle
def test_log_likelihoods_equal_the_log_softmax_of_each_row_alone(gpt) -> None:
    rows = _rows([n + 1 for n in LENGTHS] + [CONTEXT + 1], seed=3)
    first = np.asarray([np.random.default_rng(i).integers(0, len(r) - 1) for i, r in enumerate(rows)])
    ll = forward.log_likelihoods(gpt, rows, first, batch_size=4, limit=CONTEXT)
    for i, row in enumerate(rows):
        assert ll[i] == pytest.approx(_log_probs(gpt, row)[first[i]:].sum(), abs=1e-4, rel=1e-5)


@pytest.mark.slow  # one eager (unpadded) call per length is the oracle
def test_classifier_outputs_of_grouped_rows_equal_each_example_alone(gpt) -> None:
    from lmkit.evaluation.heads import MultipleChoiceClassifier

    clf = MultipleChoiceClassifier(gpt, choices=2, pooling="concat", dropout=0.0)
    rows = _rows(LENGTHS[:10], seed=4)  # 5 examples of 2 choices
    lengths = np.asarray([len(r) for r in rows], np.int32)
    clf((forward.pad_rows(rows[:2], 64), lengths[:2]))  # create the head's weights
    out = forward.classify(clf, rows, batch_size=2, limit=CONTEXT, group=2)
    assert out.shape == (5, 2)
    for e in range(5):
        pair = rows[2 * e:2 * e + 2]
        alone = np.asarray(clf((forward.pad_rows(pair, max(map(len, pair))), lengths[2 * e:2 * e + 2]),
                               training=False))
        np.testing.assert_allclose(out[e], alone[0], atol=1e-5)


def test_results_follow_the_input_order(gpt) -> None:
    rows = _rows(_random_lengths(12, seed=5, low=2), seed=5)
    first = np.zeros(12, np.int32)
    ll = forward.log_likelihoods(gpt, rows, first, batch_size=4, limit=CONTEXT)
    reversed_ll = forward.log_likelihoods(gpt, rows[::-1], first, batch_size=4, limit=CONTEXT)
    np.testing.assert_allclose(reversed_ll, ll[::-1], atol=1e-5)
    assert len(set(np.round(ll, 3))) == 12  # distinct values, so a shuffle would show


# -- compiled shapes stay bounded ------------------------------------------------------------------
def test_a_hundred_texts_of_random_lengths_compile_one_shape_per_width() -> None:
    model = architectures.get("gpt")(VOCAB, embed_dim=8, layers=1, heads=2, seq_len=CONTEXT)  # nothing compiled
    model(np.zeros((1, 2), np.int32))
    rows = _rows(_random_lengths(100, seed=6, high=48), seed=6)
    forward.logits(model, rows, batch_size=16, limit=CONTEXT)
    assert _compiled_shapes(model, forward._logits_body) == 3  # widths 16, 32, 48
    other = _rows(_random_lengths(100, seed=7, high=48), seed=7)
    forward.logits(model, other, batch_size=16, limit=CONTEXT)
    assert _compiled_shapes(model, forward._logits_body) == 3  # other texts, the same shapes


# -- perplexity of texts ---------------------------------------------------------------------------
@pytest.mark.slow  # one eager (unpadded) call per length is the oracle
def test_perplexity_cuts_long_texts_into_windows_of_the_context() -> None:
    texts = ["to be or not to be, that is the question", "a b", "x"]
    tok = tokenizers.get("char").fit(texts)
    model = architectures.get("gpt")(tok.vocab_size, embed_dim=8, layers=1, heads=2, seq_len=16)
    model(np.zeros((1, 2), np.int32))
    nll, units = forward.text_nll(model, tok, texts)
    ids = tok.encode(texts[0])
    windows = [ids[s:s + 16] for s in range(0, len(ids), 16)]  # 16 + 16 + 9 tokens
    assert nll[0] == pytest.approx(-sum(_log_probs(model, w).sum() for w in windows), rel=1e-5)
    assert units == [len(ids) - 3, 2, 0] and nll[2] == 0.0  # one token: nothing to predict
    ppl = forward.perplexity(model, tok, texts, unit="byte")
    assert ppl == pytest.approx(math.exp(sum(nll) / sum(len(t) for t in texts)), rel=1e-6)
    run = lmkit.Run(Path("run"), lmkit.TrainConfig(), model, tok)
    assert run.perplexity(texts, unit="byte") == pytest.approx(ppl, rel=1e-6)
    with pytest.raises(ConfigError, match="at least one token to predict"):
        forward.perplexity(model, tok, "x")
    with pytest.raises(ConfigError, match="unit must be one of token, word, byte, got 'char'"):
        forward.text_nll(model, tok, texts, unit="char")
