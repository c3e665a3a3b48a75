"""Decoding for scoring (`lmkit.decoding.search`): beam search equal to `transformers`' own
``generate(num_beams=...)`` on the same tiny random GPT-2 weights, width 1 equal to greedy."""

from __future__ import annotations

import numpy as np
import pytest

from hf_checkpoints import TEXT

PROMPTS = [[5, 17, 42, 8], [3, 9, 11, 60, 2, 7, 19], [44], [12, 12, 12, 30, 31]]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A GPT2LMHeadModel with peaked next-token distributions (large initial weights over a small
    vocabulary) saved as a folder lmkit reads; both models in eval mode."""
    import torch
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    import lmkit

    folder = tmp_path_factory.mktemp("gpt2")
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(TEXT, vocab_size=300, show_progress=False)
    tok.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                     initializer_range=0.35, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model, lmkit.from_pretrained(folder).model


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
    # an end-of-sequence id the random model does pick early for some prompts
    eos = int(np.bincount(np.concatenate([hf_generate(hf_model, p, -1, num_beams=1, max_new_tokens=6)
                                          for p in PROMPTS])).argmax())
    expected = [hf_generate(hf_model, p, eos, **options) for p in PROMPTS]
    assert any(len(e) < options["max_new_tokens"] for e in expected)  # some stop at the end id
    found = search(model, PROMPTS, Search(eos_id=eos, **options), batch_size=4)
    assert found == expected


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
