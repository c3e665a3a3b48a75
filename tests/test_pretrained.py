"""Pretrained checkpoints (`lmkit.from_pretrained`): parity with `transformers` on the real
MiniLM weights and on tiny checkpoints `transformers` makes here, and every refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hf_checkpoints import bert_folder, gpt2_folder

import lmkit
from lmkit.errors import RegistryError, RunError, RunWarning

SENTENCES = [
    "A man is playing a guitar on the stage.",
    "The new movie is awesome!",
    "Quantum mechanics describes nature at the smallest scales of energy levels of atoms.",
    "ok",
]


# -- refusals that need no weights (fast) ----------------------------------------------------------
def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="does not exist"):
        lmkit.from_pretrained(tmp_path / "nothing")


def test_a_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no config.json"):
        lmkit.from_pretrained(tmp_path)


def test_an_unknown_model_type_lists_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "vocab_size": 10}))
    with pytest.raises(RunError, match=r"model_type 't5' is not supported; lmkit reads: bert, gpt2"):
        lmkit.from_pretrained(tmp_path)


def test_an_unknown_name_suggests_a_registered_one() -> None:
    with pytest.raises(RegistryError, match="did you mean 'minilm-l6'"):
        lmkit.from_pretrained("minilm-l7")



def test_loading_a_checkpoint_draws_no_weights_it_then_replaces() -> None:
    """Building the model to load MiniLM draws none of its 22.7 million weights (0.6 s of a 1 s
    load, for numbers the checkpoint replaces): NumPy's global generator, which draws them
    otherwise, is where it was."""
    lmkit.from_pretrained("minilm-l6")  # once first: some of JAX's modules draw as they import
    before = np.random.get_state()
    mini = lmkit.from_pretrained("minilm-l6")
    after = np.random.get_state()
    assert after[2] == before[2] and np.array_equal(after[1], before[1])
    # ... and every weight is the checkpoint's: none stayed zero
    assert all(np.abs(np.asarray(w)).max() > 0 for w in mini.model.weights)


# -- tiny transformers-made checkpoints ------------------------------------------------------------
@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bert_folder(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gpt2_folder(tmp_path_factory.mktemp("gpt2"))


def _torch_hidden(folder: Path, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    import torch
    import transformers

    model = transformers.BertModel.from_pretrained(folder).eval()
    mask = np.arange(tokens.shape[1])[None, :] < lengths[:, None]
    with torch.no_grad():
        out = model(torch.tensor(tokens, dtype=torch.long),
                    attention_mask=torch.tensor(mask.astype(np.int64)))
    return out.last_hidden_state.numpy()


@pytest.mark.slow
@pytest.mark.parametrize("shards", [None, "20KB"])
def test_tiny_bert_hidden_states_equal_transformers(tmp_path: Path, shards: str | None) -> None:
    folder = bert_folder(tmp_path, max_shard_size=shards)
    if shards:
        assert (folder / "model.safetensors.index.json").is_file()
    model = lmkit.from_pretrained(folder)
    pairs = (["the cat sat on the mat", "good movies"], ["the dog", "make people happy and sad"])
    tokens, lengths = model.encode(pairs[0])
    hidden, mask = model.features(pairs[0])
    expected = _torch_hidden(folder, tokens, lengths)[:, :hidden.shape[1]]
    assert np.abs((hidden - expected)[mask]).max() < 1e-4
    # pairs: [CLS] a [SEP] b [SEP] with token types 1 on the second segment, derived from [SEP]
    rows = model.tokenizer.encode_inputs(*pairs, max_length=64)
    import torch
    import transformers

    reference = transformers.BertModel.from_pretrained(folder).eval()
    for row, a, b in zip(rows, *pairs):
        sep = int(np.flatnonzero(row == model.tokenizer.token_id("[SEP]"))[0])
        types = (np.arange(len(row)) > sep).astype(np.int64)
        with torch.no_grad():
            want = reference(torch.tensor(row[None], dtype=torch.long),
                             token_type_ids=torch.tensor(types[None])).last_hidden_state.numpy()
        got = np.asarray(model.model.features(row[None]))
        assert np.abs(got - want).max() < 1e-4


@pytest.mark.slow
def test_tiny_bert_refusals(tmp_path: Path, bert_dir: Path) -> None:
    def copy(name: str) -> Path:
        return Path(shutil.copytree(bert_dir, tmp_path / name))

    only_pickle = copy("pickle")
    (only_pickle / "model.safetensors").rename(only_pickle / "pytorch_model.bin")
    with pytest.raises(RunError, match=r"pytorch_model.bin.*safe_serialization=True"):
        lmkit.from_pretrained(only_pickle)

    wider = copy("shape")
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "intermediate_size": 64}))
    with pytest.raises(RunError, match=r"encoder.layer.0.intermediate.dense.weight.*\(48, 32\).*"
                                       r"needs \(64, 32\)"):
        lmkit.from_pretrained(wider)

    partial = copy("partial")
    from safetensors.numpy import load_file, save_file

    weights = load_file(partial / "model.safetensors")
    del weights["encoder.layer.1.output.dense.bias"]
    save_file(weights, partial / "model.safetensors")
    with pytest.raises(RunError, match=r"lacks weight 'encoder.layer.1.output.dense.bias'"):
        lmkit.from_pretrained(partial)

    small_vocab = copy("vocab")
    (small_vocab / "config.json").write_text(json.dumps({**config, "vocab_size": 50}))
    with pytest.raises(RunError, match=r"tokenizer has \d+ tokens but the model's vocab_size .* is 50"):
        lmkit.from_pretrained(small_vocab)

    big_vocab = copy("bigvocab")  # another checkpoint's (smaller) tokenizer: warned, then the
    (big_vocab / "config.json").write_text(json.dumps({**config, "vocab_size": 4 * config["vocab_size"]}))
    with pytest.warns(RunWarning, match=r"tokenizer has \d+ tokens but the model's vocab_size"), \
            pytest.raises(RunError, match=r"embeddings.word_embeddings.weight"):  # weights disagree
        lmkit.from_pretrained(big_vocab)

    no_tokenizer = copy("notok")
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(RunError, match="no tokenizer.json"):
        lmkit.from_pretrained(no_tokenizer)

    shards = bert_folder(tmp_path / "shards", max_shard_size="20KB")
    next(p for p in sorted(shards.glob("model-0000*.safetensors"))).unlink()
    with pytest.raises(RunError, match=r"incomplete.*model-00001-of"):
        lmkit.from_pretrained(shards)


@pytest.mark.slow
def test_tiny_gpt2_logits_and_greedy_continuation_equal_transformers(gpt2_dir: Path) -> None:
    import torch
    import transformers

    model = lmkit.from_pretrained(gpt2_dir)
    reference = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    texts = ["the cat sat on the mat", "first citizen: speak"]
    logits = model.logits(texts)
    tokens, lengths = model.encode(texts)
    for i, n in enumerate(lengths):
        with torch.no_grad():
            want = reference(torch.tensor(tokens[i:i + 1, :n], dtype=torch.long)).logits.numpy()[0]
        assert np.abs(logits[i, :n] - want).max() < 1e-4
    prompt = "the quick brown"
    ids = model.tokenizer.encode(prompt)
    with torch.no_grad():
        out = reference.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False,
                                 pad_token_id=0)
    expected = model.tokenizer.decode(out[0, len(ids):].tolist())
    for use_cache in (True, False):
        assert model.generate(prompt, max_new_tokens=20, temperature=0,
                              use_cache=use_cache) == expected


@pytest.mark.slow
def test_generate_takes_every_sampling_option(gpt2_dir: Path) -> None:
    model = lmkit.from_pretrained(gpt2_dir)
    a = model.generate("the cat", max_new_tokens=10, temperature=0.8, top_k=5, top_p=0.9, seed=3)
    assert a == model.generate("the cat", max_new_tokens=10, temperature=0.8, top_k=5, top_p=0.9,
                               seed=3)
    assert model.generate("the cat", max_new_tokens=30, temperature=0, stop="the").find("the") < 0


@pytest.mark.slow
def test_an_encoder_has_no_logits(bert_dir: Path) -> None:
    with pytest.raises(lmkit.ConfigError, match="encoder"):
        lmkit.from_pretrained(bert_dir).generate("the cat")


@pytest.mark.slow
def test_any_number_of_texts_embeds_as_each_text_alone(bert_dir: Path) -> None:
    """Rows are padded to a power of two (few compiled shapes); the padding changes no result."""
    from hf_checkpoints import TEXT

    model = lmkit.from_pretrained(bert_dir)
    texts = TEXT[:5]
    together = model.embed(texts, batch_size=4)  # a batch of 4, then one of 1
    alone = np.concatenate([model.embed([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(model.embed(texts[:3]), alone[:3], atol=1e-5)  # 3 rows padded to 4


# -- the real MiniLM weights -----------------------------------------------------------------------
@pytest.mark.slow
def test_minilm_hidden_states_and_embeddings_equal_transformers() -> None:
    import torch
    import transformers

    mini = lmkit.from_pretrained("minilm-l6")
    assert mini.arch == "bert" and mini.model.embed_dim == 384
    hidden, mask = mini.features(SENTENCES)
    reference_tok = transformers.AutoTokenizer.from_pretrained(mini.dir)
    batch = reference_tok(SENTENCES, padding=True, return_tensors="pt")
    np.testing.assert_array_equal(batch["attention_mask"].numpy().astype(bool), mask)
    with torch.no_grad():
        expected = transformers.BertModel.from_pretrained(mini.dir).eval()(**batch).last_hidden_state
    expected = expected.numpy()
    assert np.abs((hidden - expected)[mask]).max() < 1e-4
    # sentence-transformers' recipe: the mean of the token states under the attention mask
    weights = batch["attention_mask"].numpy()[:, :, None].astype(np.float32)
    recipe = (expected * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
    assert np.abs(mini.embed(SENTENCES) - recipe).max() < 1e-4
    np.testing.assert_allclose(mini.embed(SENTENCES, pooling="cls"), expected[:, 0], atol=1e-4)
    e = mini.embed(["A man plays the guitar.", "Someone is playing a guitar.", "Stocks fell today."])
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3  # similar sentences are closer


@pytest.mark.slow
def test_normalized_minilm_embeddings_equal_sentence_transformers(tmp_path: Path) -> None:
    # the model as its package ships it (with sentence-transformers' pooling and Normalize modules)
    import all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    folder = all_minilm_l6_v2.extract_model(str(tmp_path))
    expected = SentenceTransformer(str(folder), device="cpu").encode(SENTENCES)
    ours = lmkit.from_pretrained("minilm-l6").embed(SENTENCES, normalize=True)
    assert np.abs(ours - expected).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_an_unknown_precision_is_refused_before_the_checkpoint_is_read(tmp_path: Path) -> None:
    with pytest.raises(lmkit.ConfigError, match=r"`precision` must be one of.*got 'bfloat16'"):
        lmkit.from_pretrained(tmp_path / "never-read", precision="bfloat16")


@pytest.mark.slow
def test_minilm_embeddings_in_mixed_bfloat16_agree_with_float32() -> None:
    exact = lmkit.from_pretrained("minilm-l6")
    mixed = lmkit.from_pretrained("minilm-l6", precision="mixed_bfloat16")
    assert mixed.model.compute_dtype == "bfloat16"
    assert {w.dtype for w in mixed.model.weights} == {"float32"}  # the checkpoint's values
    want, got = (m.embed(SENTENCES, normalize=True) for m in (exact, mixed))
    assert got.dtype == np.float32 and np.abs(got - want).max() > 0  # it computed in bfloat16
    assert np.sum(got * want, axis=1).min() > 0.999                  # cosine to float32's vector


@pytest.mark.slow
def test_a_decoder_generates_in_mixed_bfloat16(gpt2_dir: Path) -> None:
    exact = lmkit.from_pretrained(gpt2_dir)
    mixed = lmkit.from_pretrained(gpt2_dir, precision="mixed_bfloat16")
    assert mixed.model.compute_dtype == "bfloat16"
    want, got = (m.logits(["the cat sat on the mat"]) for m in (exact, mixed))
    assert got.dtype == np.float32 and 0 < np.abs(got - want).max() < 0.05 * np.ptp(want)
    assert isinstance(mixed.generate("the cat sat", max_new_tokens=8, temperature=0), str)


# -- continued pretraining (`init`) ----------------------------------------------------------------
@pytest.mark.slow
def test_training_continues_from_a_gpt2_checkpoint(tmp_path: Path, gpt2_dir: Path) -> None:
    import torch
    import transformers

    from lmkit.data.corpus import open_corpus
    from lmkit.data.tokens import WindowSampler, split, token_ids

    corpus = tmp_path / "text.txt"
    corpus.write_text("the cat sat on the mat and the dog sat on the log\n" * 200)
    options = dict(data=str(corpus), seq_len=32, batch_size=4, max_steps=20, steps_per_dispatch=1,
                   eval_every=10, eval_batches=2, checkpoint_every=10, warmup_steps=0,
                   learning_rate=1e-2, sample_tokens=10, seed=0)
    run = lmkit.train(**options, init=str(gpt2_dir), out=str(tmp_path / "run"), reporters=[])
    assert (run.config.arch, run.config.tokenizer) == ("gpt2", "pretrained")
    assert run.config.model == {"n_positions": 64} and run.config.embed_dim == 32
    # step 1 (batch 0) starts from the checkpoint: its loss is transformers' loss on that batch
    ids = token_ids(open_corpus(str(corpus)), run.tokenizer)
    x, y = WindowSampler(split(ids, run.config.validation_split, 32)[0], 32, 4, 0).batch(0)
    reference = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    with torch.no_grad():
        logits = reference(torch.tensor(x, dtype=torch.long)).logits
        want = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 torch.tensor(y, dtype=torch.long).reshape(-1))
    losses = [r["loss"] for r in run.history if "loss" in r]
    assert losses[0] == pytest.approx(float(want), abs=1e-4)
    assert losses[-1] < losses[0] - 1.0
    again = lmkit.load(run.dir)
    assert again.config.init == str(gpt2_dir)
    assert again.generate("the cat", max_new_tokens=8, temperature=0) == run.generate(
        "the cat", max_new_tokens=8, temperature=0)


@pytest.mark.slow
def test_init_with_an_encoder_is_refused(tmp_path: Path, bert_dir: Path) -> None:
    with pytest.raises(lmkit.ConfigError, match=r"is an encoder \(bert\).*decoder"):
        lmkit.train(init=str(bert_dir), max_steps=1, out=str(tmp_path / "run"), reporters=[])
