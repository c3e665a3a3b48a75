"""Decoding for scoring (`lmkit.decoding.search`): beam search equal to `transformers`' own
``generate(num_beams=...)`` on the same tiny random GPT-2 weights, width 1 equal to greedy."""

from __future__ import annotations

import numpy as np
import pytest

from hf_checkpoints import TEXT, decoder_folder

PROMPTS = [[5, 17, 42, 8], [3, 9, 11, 60, 2, 7, 19], [44], [12, 12, 12, 30, 31]]


def _prompt(n: int) -> list[int]:
    return [(7 * i + 3 * n) % 200 + 1 for i in range(n)]


#: in batches of 4, two of one shape (one compiled program): prompts of 3 to 17 tokens (the
#: shortest fed by the loop for 14 steps, lengths on both sides of a bucket), then four of 32
#: (a multiple of 16: the whole buffer, no padding, the loop's first step re-feeds the last token)
MIXED = [_prompt(n) for n in (3, 9, 16, 17)] + [_prompt(32)[i:] + _prompt(32)[:i] for i in range(4)]


def tiny_gpt2(folder, positions: int = 64):
    """A GPT2LMHeadModel with peaked next-token distributions (large initial weights over a small
    vocabulary) saved as a folder, and lmkit's model read from it; both in eval mode."""
    import torch
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    import lmkit

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(TEXT, vocab_size=300, show_progress=False)
    tok.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=positions, n_embd=32, n_layer=2,
                                     n_head=4, initializer_range=0.35, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model, lmkit.from_pretrained(folder).model


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny random LlamaForCausalLM made by `transformers` (peaked distributions, as `gpt2`'s)
    and lmkit's model read from its folder."""
    import transformers

    import lmkit

    folder = decoder_folder(tmp_path_factory.mktemp("llama"), "llama", initializer_range=0.35)
    return transformers.AutoModelForCausalLM.from_pretrained(folder).eval(), lmkit.from_pretrained(folder).model


@pytest.fixture(scope="module")
def llama_gqa(tmp_path_factory):
    """As `llama`, with two key/value heads for its four query heads (grouped-query attention)."""
    import transformers

    import lmkit

    folder = decoder_folder(tmp_path_factory.mktemp("llama_gqa"), "llama", initializer_range=0.35,
                            num_key_value_heads=2)
    return transformers.AutoModelForCausalLM.from_pretrained(folder).eval(), lmkit.from_pretrained(folder).model


def frequent_end(hf_model, prompts, num_beams: int = 1, max_new_tokens: int = 6) -> int:
    """An end-of-sequence id the random model does pick early for some prompts."""
    return int(np.bincount(np.concatenate([hf_generate(hf_model, p, -1, num_beams=num_beams,
                                                       max_new_tokens=max_new_tokens)
                                           for p in prompts])).argmax())


def hf_generate(model, prompt, eos, **options):
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), do_sample=False, eos_token_id=eos, pad_token_id=eos,
                             attention_mask=torch.ones(1, len(prompt), dtype=torch.long), **options)
    new = out[0, len(prompt):].tolist()
    return new[:new.index(eos)] if eos in new else new


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    dict(num_beams=4, max_new_tokens=12),
    dict(num_beams=3, max_new_tokens=10, length_penalty=0.6, no_repeat_ngram_size=2),
    dict(num_beams=1, max_new_tokens=9),
])
def test_beam_search_equals_transformers_generate(gpt2, options):
    from lmkit.decoding import Search, search

    hf_model, model = gpt2
    eos = frequent_end(hf_model, PROMPTS)
    expected = [hf_generate(hf_model, p, eos, **options) for p in PROMPTS]
    assert any(len(e) < options["max_new_tokens"] for e in expected)  # some stop at the end id
    found = search(model, PROMPTS, Search(eos_id=eos, **options), batch_size=4)
    assert found == expected


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("beams", [1, 4])
def test_prompts_of_different_lengths_in_one_batch_decode_as_generate_does_each_alone(request, arch, beams):
    """The KV cache takes the whole padded prompt buffer at once, then decoding rewinds to the
    shortest prompt: each output still equals `generate` on its prompt alone."""
    from lmkit.decoding import Search, search

    hf_model, model = request.getfixturevalue(arch)
    settings = dict(num_beams=beams, max_new_tokens=10)
    eos = frequent_end(hf_model, MIXED, **settings)
    expected = [hf_generate(hf_model, p, eos, **settings) for p in MIXED]
    assert any(len(e) < 10 for e in expected)  # some stop at the end id
    assert search(model, MIXED, Search(eos_id=eos, **settings), batch_size=4) == expected


def test_beams_read_their_own_history_from_a_shared_cache_as_generate_does(llama_gqa):
    """Beams keep their cache entries where they were written and read them through a table of
    each beam's history (`lmkit.models.kv_cache.beam_attention`), with grouped key/value heads
    and prompts of different lengths (rows still in their prompts while others choose): every
    output equals `generate` on its prompt alone."""
    from lmkit.decoding import Search, search

    hf_model, model = llama_gqa
    settings = dict(num_beams=4, max_new_tokens=8)
    prompts = MIXED[:4]
    expected = [hf_generate(hf_model, p, -1, **settings) for p in prompts]
    assert search(model, prompts, Search(**settings), batch_size=4) == expected


@pytest.mark.slow
@pytest.mark.parametrize("positions, length, beams, new", [(40, 35, 2, 5), (37, 25, 4, 12)])
def test_a_prompt_padded_past_the_context_decodes_as_generate_does(tmp_path, positions, length, beams, new):
    """A 35-token prompt pads to 48 tokens, past a context of 40: decoding feeds only what the
    cache holds. With a context of 37 the cache is rounded up to whole chunks of the beams'
    reorder (40 positions, 3 never written), so no chunk overlaps another."""
    from lmkit.decoding import Search, search

    hf_model, model = tiny_gpt2(tmp_path, positions=positions)
    prompt = _prompt(length)
    expected = hf_generate(hf_model, prompt, -1, num_beams=beams, max_new_tokens=new)
    assert search(model, [prompt], Search(num_beams=beams, max_new_tokens=new)) == [expected]


@pytest.mark.slow
def test_width_one_is_greedy_and_batches_do_not_change_outputs(gpt2):
    from lmkit.decoding import Search, search
    from lmkit.generation import Decoder, Sampling

    _, model = gpt2
    greedy = []
    for prompt in PROMPTS:
        decoder = Decoder(model)
        decoder.feed(prompt)
        greedy.append(next(decoder.sample(8, Sampling(temperature=0))))
    assert search(model, PROMPTS, Search(num_beams=1, max_new_tokens=8), batch_size=4) == greedy
    alone = [search(model, [p], Search(num_beams=3, max_new_tokens=8), batch_size=1)[0] for p in PROMPTS]
    assert search(model, PROMPTS, Search(num_beams=3, max_new_tokens=8), batch_size=4) == alone


def test_bad_settings_are_refused_with_the_value():
    from lmkit.decoding import Search
    from lmkit.errors import ConfigError

    with pytest.raises(ConfigError, match="`num_beams` must be an integer >= 1, got 0"):
        Search(num_beams=0)
    with pytest.raises(ConfigError, match="length_penalty"):
        Search(length_penalty=float("nan"))


@pytest.mark.slow
def test_a_prompt_longer_than_the_context_names_both_lengths(gpt2):
    from lmkit.decoding import Search, search
    from lmkit.errors import ConfigError

    _, model = gpt2
    with pytest.raises(ConfigError, match=r"60 tokens plus max_new_tokens=10 .* context \(64 tokens\)"):
        search(model, [[1] * 60], Search(max_new_tokens=10))


@pytest.mark.slow
def test_every_architecture_decodes_in_batches_as_it_does_alone():
    """Recurrent state (h, c), gpt's KV cache and models without state (the window recomputed)
    all decode a batch of prompts of different lengths as each prompt alone, greedy = beam 1."""
    import lmkit  # noqa: F401  (the JAX backend)
    from lmkit.build import build_model
    from lmkit.config import TrainConfig
    from lmkit.decoding import Search, search
    from lmkit.registry import architectures

    names = [e.name for e in architectures.list() if not e.has("encoder")]
    assert {"gpt", "lstm", "gated_cnn"} <= set(names)
    for name in names:
        model = build_model(TrainConfig(arch=name, embed_dim=16, units=16, layers=1, heads=2, seq_len=64), 70)
        settings = Search(num_beams=2, max_new_tokens=5, eos_id=3)
        together = search(model, PROMPTS, settings, batch_size=4)
        assert together == [search(model, [p], settings, batch_size=1)[0] for p in PROMPTS], name
        assert all(len(t) <= 5 and 3 not in t for t in together), name


@pytest.mark.parametrize("width", [50, 1200, 4 * 50257 + 3])
def test_the_two_pass_top_k_ranks_as_lax_top_k_does_ties_and_banned_tokens_included(width):
    """`_top_k` (block maxima, then the chosen blocks) returns `jax.lax.top_k`'s values and
    indices: on floats, on small integers (many equal values: the lower index first, also when
    the blocks holding them have different maxima) and with
    -inf entries (banned tokens), also where whole blocks are banned."""
    import jax
    import jax.numpy as jnp

    from lmkit.decoding import _top_k

    rng = np.random.default_rng(width)
    floats = rng.normal(size=(6, width)).astype(np.float32)
    ties = rng.integers(0, 5, size=(6, width)).astype(np.float32)
    spikes = ties.copy()  # blocks of larger maxima hold equal values too: they must not rank first
    spikes[:, rng.integers(width // 2, width, size=3)] = 9.0
    banned = floats.copy()
    banned[:, ::3] = -np.inf
    banned[:, : width // 2] = -np.inf
    for x in (floats, ties, spikes, banned):
        values, index = _top_k(jnp.asarray(x), 8)
        want_values, want_index = jax.lax.top_k(jnp.asarray(x), 8)
        np.testing.assert_array_equal(np.asarray(values), np.asarray(want_values))
        np.testing.assert_array_equal(np.asarray(index), np.asarray(want_index))


def test_greedy_picks_the_first_of_equal_largest_logits_as_argmax_does():
    import jax.numpy as jnp

    from lmkit.decoding import _first_max

    rng = np.random.default_rng(0)
    ties = rng.integers(0, 4, size=(16, 1, 300)).astype(np.float32)
    ties[3, 0, -1] = 9.0  # the largest at the last index
    np.testing.assert_array_equal(np.asarray(_first_max(jnp.asarray(ties))), ties.argmax(-1))
