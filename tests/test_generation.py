"""Sampling and incremental decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lmkit
from lmkit.errors import ConfigError
from lmkit.generation import Decoder, Sampling, _pick_on_device, generate, sample_next

CORPUS = Path(__file__).parent / "fixtures" / "core" / "shakespeare_30k.txt"
LOGITS = np.log(np.array([0.5, 0.3, 0.15, 0.05]))


def draws(n: int = 4000, **kw) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.bincount([sample_next(LOGITS, rng, **kw) for _ in range(n)], minlength=4) / n


def test_greedy_picks_the_argmax() -> None:
    assert sample_next(LOGITS, np.random.default_rng(0), temperature=0) == 0


def test_sampling_follows_the_distribution() -> None:
    np.testing.assert_allclose(draws(), [0.5, 0.3, 0.15, 0.05], atol=0.03)


def test_top_k_and_top_p_cut_the_tail() -> None:
    top2 = draws(top_k=2)
    assert top2[2] == top2[3] == 0 and top2[0] == pytest.approx(0.5 / 0.8, abs=0.03)
    nucleus = draws(top_p=0.7)  # 0.5 + 0.3 reaches 0.7: the two first tokens remain
    assert nucleus[2] == nucleus[3] == 0


def test_low_temperature_sharpens() -> None:
    assert draws(temperature=0.3)[0] > 0.8


def device_draws(n: int = 4000, **kw) -> np.ndarray:
    import jax

    sampling = Sampling(**kw)
    pick = jax.jit(jax.vmap(lambda key: _pick_on_device(
        LOGITS, key, sampling.temperature or 1.0, sampling.top_p or 1.0, sampling)))
    return np.bincount(np.asarray(pick(jax.random.split(jax.random.key(0), n))), minlength=4) / n


@pytest.mark.slow
def test_on_device_sampling_follows_the_same_rules() -> None:
    # The compiled sampler (JAX) must draw from the distribution `sample_next` draws from.
    assert device_draws(temperature=0)[0] == 1.0
    np.testing.assert_allclose(device_draws(), [0.5, 0.3, 0.15, 0.05], atol=0.03)
    top2 = device_draws(top_k=2)
    assert top2[2] == top2[3] == 0 and top2[0] == pytest.approx(0.5 / 0.8, abs=0.03)
    nucleus = device_draws(top_p=0.7)
    assert nucleus[2] == nucleus[3] == 0 and nucleus[0] == pytest.approx(0.5 / 0.8, abs=0.03)
    assert device_draws(top_p=0.45)[0] == 1.0  # the first token alone reaches p
    assert device_draws(temperature=0.3)[0] > 0.8


@pytest.fixture(scope="module", params=["gpt", "lstm", "gru", "rnn", "gated_cnn"])
def run(request, tmp_path_factory) -> lmkit.Run:
    out = tmp_path_factory.mktemp("gen") / request.param
    return lmkit.train(arch=request.param, data=str(CORPUS), layers=1, heads=2, embed_dim=32,
                       units=32, seq_len=32, batch_size=8, max_steps=30, eval_every=30,
                       learning_rate=1e-2, sample_tokens=0, out=str(out), reporters=[])


@pytest.mark.slow
def test_cached_decoding_equals_full_recompute(run: lmkit.Run) -> None:
    # Same logits token after token (within gpt's context: past it the cache restarts from half
    # a window, by design). Logits, not sampled text: a barely trained model has near-ties that
    # float rounding may flip either way.
    prompt = run.tokenizer.encode("ROMEO:\nWhat")
    cached, full = Decoder(run.model, use_cache=True), Decoder(run.model, use_cache=False)
    assert cached.cached and not full.cached or run.config.arch == "gated_cnn"
    a, b = cached.feed(prompt), full.feed(prompt)
    steps = min(40, (run.model.max_context or 10**6) - len(prompt))
    for _ in range(steps):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        token = int(np.argmax(a))
        a, b = cached.feed([token]), full.feed([token])
    assert steps >= 20


@pytest.mark.slow
def test_sampling_values_do_not_recompile(run: lmkit.Run) -> None:
    from lmkit.forward import _COMPILED

    texts = {t: run.generate("KING:", max_new_tokens=10, temperature=t, top_p=t, seed=1)
             for t in (0.5, 0.7, 0.9)}
    compiled = len(_COMPILED[run.model])
    run.generate("KING:", max_new_tokens=10, temperature=0.6, top_p=0.8, seed=1)
    assert len(_COMPILED[run.model]) == compiled
    assert len(set(texts.values())) > 1  # the traced values do change the sample


@pytest.mark.slow
def test_compiled_loop_equals_one_token_per_call(run: lmkit.Run) -> None:
    # 100 tokens cross the 32-token context (cache restarts) and the 64-token chunk boundary.
    prompt = run.tokenizer.encode("ROMEO:")
    looped = Decoder(run.model)
    looped.feed(prompt)
    tokens = [t for chunk in looped.sample(100, Sampling(temperature=0)) for t in chunk]
    stepped = Decoder(run.model)
    logits = stepped.feed(prompt)
    expected = []
    for _ in range(100):
        expected.append(int(np.argmax(logits)))
        logits = stepped.feed(expected[-1:])
    assert tokens == expected


@pytest.mark.slow
def test_a_prompt_fed_inside_the_sampling_loop_gives_the_tokens_of_feeding_it_first(
        run: lmkit.Run) -> None:
    # `Decoder.generate` feeds prompts of up to CHUNK tokens inside the loop (no prompt
    # program); 150 tokens cross the 32-token context (cache restarts) and two chunks.
    for prompt in ("\n", "ROMEO:\nWhat is"):
        ids = run.tokenizer.encode(prompt)
        for sampling in (Sampling(0), Sampling(1.0, top_k=5), Sampling(0.8, top_p=0.9)):
            first = Decoder(run.model)
            first.feed(ids)
            expected = [t for chunk in first.sample(150, sampling, seed=3) for t in chunk]
            looped = Decoder(run.model)
            tokens = [t for chunk in looped.generate(ids, 150, sampling, seed=3) for t in chunk]
            assert tokens == expected, (prompt, sampling)
            assert looped.history == first.history


def test_a_new_prompt_length_compiles_no_program() -> None:
    """The first `generate` of a new prompt length used to compile a prompt program (half a
    second or more on a CPU); prompts of up to `CHUNK` tokens now share the sampling loop."""
    from lmkit.build import build_model
    from lmkit.config import TrainConfig
    from lmkit.paths import compilations, enable_compilation_cache
    from lmkit.registry import tokenizers

    enable_compilation_cache()
    tokenizer = tokenizers.entry("char").obj.fit([CORPUS.read_text(encoding="utf-8")[:2000]])
    model = build_model(TrainConfig(arch="gpt", layers=1, heads=2, embed_dim=16, seq_len=16),
                        tokenizer.vocab_size)
    generate(model, tokenizer, "A", 20, seed=0)
    before = sum(compilations().values())
    texts = [generate(model, tokenizer, prompt, 20, seed=0) for prompt in ("BE", "ROMEO:")]
    assert sum(compilations().values()) == before
    assert all(len(text) == 20 for text in texts)


@pytest.mark.slow
def test_seed_reproduces_and_stop_string_cuts(run: lmkit.Run) -> None:
    a = run.generate("KING:", max_new_tokens=60, seed=7)
    assert a == run.generate("KING:", max_new_tokens=60, seed=7)
    assert a != run.generate("KING:", max_new_tokens=60, seed=8)
    full = run.generate("KING:", max_new_tokens=60, temperature=0)
    stop = full[10]
    cut = run.generate("KING:", max_new_tokens=60, temperature=0, stop=stop)
    assert cut == full[: full.index(stop)]


@pytest.mark.slow
def test_generation_beyond_the_context_window(tmp_path: Path) -> None:
    # gpt's context is seq_len tokens: longer outputs slide the window instead of failing.
    out = lmkit.train(arch="gpt", data=str(CORPUS), layers=1, heads=2, embed_dim=16, seq_len=8,
                      batch_size=4, max_steps=2, sample_tokens=0, reporters=[],
                      out=str(tmp_path / "window"))
    assert len(out.generate("A", max_new_tokens=30, seed=0)) == 30


@pytest.mark.parametrize("kw,message", [
    ({"temperature": -1}, "`temperature` must be a finite number >= 0"),
    ({"top_k": 0}, "`top_k` must be a positive integer"),
    ({"top_p": 1.5}, "`top_p` must be a number in (0, 1]"),
    ({"max_new_tokens": -2}, "`max_new_tokens` must be a non-negative integer"),
])
def test_bad_sampling_arguments(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        generate(None, None, "x", **kw)
    assert message in str(info.value)


def test_empty_prompt() -> None:
    with pytest.raises(ConfigError, match="`prompt` must be a non-empty string"):
        generate(None, None, "")


def test_banned_ids_are_never_picked() -> None:
    # Even when the banned id is by far the most likely, greedy and every sampling rule skip it.
    logits = np.log(np.array([0.97, 0.01, 0.01, 0.01]))
    rng = np.random.default_rng(0)
    for kw in ({}, {"temperature": 0}, {"temperature": 2.0}, {"top_k": 2}, {"top_p": 0.5}):
        picks = {sample_next(logits, rng, banned=(0,), **kw) for _ in range(500)}
        assert 0 not in picks and picks <= {1, 2, 3}, kw


def _unk_loving_model(vocab_size: int):
    """An untrained Elman RNN whose output bias makes the unknown id 0 about 99.9 % likely."""
    from lmkit.models.elman import ElmanRNN

    model = ElmanRNN(vocab_size, units=8)
    model.build((1, 1))
    bias = np.zeros(vocab_size, dtype=np.float32)
    bias[0] = 10.0
    model.c.assign(bias)
    return model


@pytest.mark.slow
def test_include_prompt_puts_the_prompt_before_the_same_continuation() -> None:
    from lmkit.tokenizers import build_tokenizer

    tokenizer = build_tokenizer("char", ["the cat sat on the mat.\n"])
    model = _unk_loving_model(tokenizer.vocab_size)
    new = generate(model, tokenizer, "the", max_new_tokens=6, temperature=0)
    assert len(new) == 6
    assert generate(model, tokenizer, "the", max_new_tokens=6, temperature=0, include_prompt=True) == "the" + new
    assert generate(model, tokenizer, "the", max_new_tokens=0, include_prompt=True) == "the"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["char", "word"])
def test_unknown_token_is_never_sampled(kind: str) -> None:
    from lmkit.tokenizers import UNK, build_tokenizer

    tokenizer = build_tokenizer(kind, ["the cat sat on the mat.\n"])
    model = _unk_loving_model(tokenizer.vocab_size)
    placeholder = "\ufffd" if kind == "char" else UNK
    for seed in range(40):
        for kw in ({"temperature": 1.0}, {"temperature": 1.5, "top_k": 3}, {"top_p": 0.9}):
            text = generate(model, tokenizer, "the", max_new_tokens=30, seed=seed, **kw)
            assert placeholder not in text, (seed, kw, text)
    assert placeholder not in generate(model, tokenizer, "the", max_new_tokens=30, temperature=0)
