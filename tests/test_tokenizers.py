"""Tokenizers: round trips on real text, vocabularies, unknowns, JSON save/load."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from lmkit.errors import ConfigError, DataError, RegistryError
from lmkit.registry import tokenizers as registry
from lmkit.tokenizers import (CharTokenizer, WordTokenizer, build_tokenizer, load_tokenizer,
                              save_tokenizer)

NAMES = ("char", "word", "bpe", "byte")


@pytest.fixture(scope="module")
def shakespeare(request) -> str:
    return (request.config.rootpath / "tests/fixtures/data/tinyshakespeare_50k.txt").read_text("utf-8")


@pytest.fixture(scope="module")
def wikitext(request) -> str:
    return (request.config.rootpath / "tests/fixtures/data/wikitext2_valid_6k.txt").read_text("utf-8")


def lines(text: str, per_chunk: int = 200) -> list[str]:
    """Line-aligned chunks, as Corpus.chunks yields them."""
    ls = text.splitlines(keepends=True)
    return ["".join(ls[i:i + per_chunk]) for i in range(0, len(ls), per_chunk)]


def test_every_builtin_is_registered_with_a_unit():
    for name in NAMES:
        assert name in registry
        assert registry.get(name).unit in {"char", "byte", "word", "token"}


def test_unknown_tokenizer_name_suggests_close_match():
    with pytest.raises(RegistryError, match=r"unknown tokenizer 'chr'.*did you mean 'char'"):
        build_tokenizer("chr", [])


@pytest.mark.parametrize("name", ["char", "bpe", "byte"])
@pytest.mark.parametrize("text_name", ["shakespeare", "wikitext"])
def test_lossless_tokenizers_round_trip_real_text(name, text_name, request):
    text = request.getfixturevalue(text_name)
    tok = build_tokenizer(name, lines(text), vocab_size=500 if name == "bpe" else None)
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert np.array_equal(tok.encode_array(text), ids)


def test_char_vocabulary_is_sorted_distinct_characters_and_unknowns_map_to_unk(shakespeare):
    tok = CharTokenizer.fit(lines(shakespeare))
    assert tok.chars == sorted(set(shakespeare))
    assert tok.vocab_size == len(set(shakespeare)) + 1
    ids = tok.encode("Té🙂a")
    assert ids[1] == 0 and ids[2] == 0 and ids[0] != 0 and ids[3] != 0
    assert tok.decode(ids) == "T\ufffd\ufffda"


def test_char_vocab_size_keeps_most_frequent_characters():
    tok = CharTokenizer.fit(["aaaa bbb cc d\n"], vocab_size=4)
    assert tok.chars == sorted(["a", "b", " "])
    assert tok.encode("d") == [0]


def test_word_tokenizer_keeps_the_most_frequent_words_and_maps_the_rest_to_unk(shakespeare):
    full = WordTokenizer.fit(lines(shakespeare), vocab_size=10**6)
    counts = Counter(full.decode([i]) for i in full.encode(shakespeare))
    small = WordTokenizer.fit(lines(shakespeare), vocab_size=100)
    assert small.vocab_size == 100
    kept = set(small.words)
    dropped = set(counts) - kept
    assert min(counts[w] for w in kept) >= max(counts[w] for w in dropped)
    rare = min(dropped, key=lambda w: counts[w])
    assert small.encode(rare) == [0]
    assert "\n" in kept  # line breaks are tokens, so samples keep their lines


def test_word_tokenizer_small_example():
    tok = WordTokenizer.fit(["a a a a a b b b b c c c d\n"], vocab_size=3)
    assert tok.words == ["a", "b"]
    assert tok.encode("a b c d") == [1, 2, 0, 0]
    assert tok.decode([1, 0, 2]) == "a <unk> b"


def test_word_decode_reads_naturally(shakespeare):
    extra = "You (all) don't know.\n"
    tok = WordTokenizer.fit([*lines(shakespeare), extra])
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(extra)) == extra


def test_word_tokenizer_on_wikitext_treats_literal_unk_as_unknown(wikitext):
    tok = WordTokenizer.fit(lines(wikitext), vocab_size=500)
    assert "<unk>" not in tok.words and "unk" not in tok.words
    assert tok.encode(" <unk> ") == [0]
    # decoding and encoding again is stable (the spacing is normalised once)
    again = tok.encode(tok.decode(tok.encode(wikitext)))
    assert again == tok.encode(wikitext)


def test_bpe_trains_locally_to_the_requested_size_and_compresses(shakespeare):
    tok = build_tokenizer("bpe", lines(shakespeare), vocab_size=400)
    assert tok.vocab_size == 400
    ids = tok.encode(shakespeare)
    assert len(ids) < 0.6 * len(shakespeare.encode("utf-8"))
    unseen = "Ünïcödé 🙂 text never seen in training\n"
    assert tok.decode(tok.encode(unseen)) == unseen


def test_bpe_encoding_is_the_same_whole_or_in_line_chunks(shakespeare):
    tok = build_tokenizer("bpe", lines(shakespeare), vocab_size=400)
    pieces = np.concatenate([tok.encode_array(c) for c in lines(shakespeare, per_chunk=7)])
    assert np.array_equal(pieces, tok.encode(shakespeare))


@pytest.mark.parametrize("name,size", [("bpe", 100), ("byte", 300), ("word", 1), ("char", 0)])
def test_bad_vocab_size_names_the_tokenizer_and_value(name, size):
    with pytest.raises(ConfigError, match=rf"'{name}'.*{size}|{size}.*'{name}'|{name}.*{size}"):
        build_tokenizer(name, ["some text\n"], vocab_size=size)


def test_byte_tokenizer_uses_utf8_bytes_and_replaces_broken_sequences():
    tok = build_tokenizer("byte", [])
    assert tok.vocab_size == 256
    assert tok.encode("aé") == [97, 0xC3, 0xA9]
    assert tok.decode([97, 0xC3]) == "a\ufffd"


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_give_an_equal_tokenizer(name, shakespeare, tmp_path):
    tok = build_tokenizer(name, lines(shakespeare), vocab_size=300 if name in ("bpe", "word") else None)
    path = save_tokenizer(tok, tmp_path / "tokenizer.json")
    data = json.loads(path.read_text("utf-8"))  # plain JSON, no pickle
    assert data["type"] == name
    loaded = load_tokenizer(tmp_path)  # a run folder holding tokenizer.json works too
    assert type(loaded) is type(tok) and loaded == tok
    assert loaded.vocab_size == tok.vocab_size
    sample = shakespeare[:2000]
    assert loaded.encode(sample) == tok.encode(sample)
    assert loaded.decode(tok.encode(sample)) == tok.decode(tok.encode(sample))


def test_load_errors_name_the_file_and_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n"type": "char",\n chars: []}')
    with pytest.raises(DataError, match=r"bad\.json, line 3: not valid tokenizer JSON"):
        load_tokenizer(bad)
    odd = tmp_path / "odd.json"
    odd.write_text('{"type": "sentencepiece"}')
    unknown = r"odd\.json: cannot load tokenizer: unknown tokenizer 'sentencepiece'"
    with pytest.raises(DataError, match=unknown):
        load_tokenizer(odd)
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "word"}')
    with pytest.raises(DataError, match=r"broken\.json: tokenizer of type 'word' is incomplete"):
        load_tokenizer(broken)


def test_whitespace_tokenizer_gives_pytorch_word_language_models_stream(tmp_path) -> None:
    """WikiText as pytorch/examples' word_language_model reads it: each line's whitespace-split
    words and one end-of-line token; words outside the vocabulary are <unk> (id 0)."""
    from lmkit.tokenizers import WhitespaceTokenizer, load_tokenizer, save_tokenizer

    text = " = Homarus gammarus = \n \n The U.S. @-@ based <unk> lobster , 3.5 cm .\n"
    tok = WhitespaceTokenizer.fit([text])
    expected = [w for line in text.splitlines() for w in (*line.split(), "\n")]
    assert [tok.words[i - 1] if i else "<unk>" for i in tok.encode(text)] == expected
    assert tok.encode("The lobster swims \n") == [tok.encode("The")[0], tok.encode("lobster")[0],
                                                   0, tok.encode("\n")[0]]
    assert "<unk>" not in tok.words and tok.vocab_size == len(set(expected))
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path)
    assert type(again) is WhitespaceTokenizer and again.encode(text) == tok.encode(text)
