"""Corpora, the token-id cache, splits and batches."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import os

import numpy as np
import pytest

from lmkit.data.corpus import open_corpus
from lmkit.data.tokens import WindowSampler, sequential_batches, split, token_ids
from lmkit.errors import ConfigError, DataError
from lmkit.paths import atomic_directory, atomic_output, cache_dir
from lmkit.tokenizers import Tokenizer, build_tokenizer


@pytest.fixture
def shakespeare_file(fixtures) -> Path:
    return fixtures / "data" / "tinyshakespeare_50k.txt"


@pytest.fixture
def ids() -> np.ndarray:
    return np.arange(1000, dtype=np.uint16)


# -- paths -------------------------------------------------------------------------------------
def test_cache_dir_follows_lmkit_cache_dir_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("LMKIT_CACHE_DIR", str(tmp_path / "a" / "b"))
    assert cache_dir() == tmp_path / "a" / "b" and cache_dir().is_dir()
    monkeypatch.delenv("LMKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "lmkit" and cache_dir().is_dir()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "lmkit"


def test_atomic_output_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


def test_atomic_directory_replaces_a_folder_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    target.mkdir()  # an empty folder is simply replaced
    with atomic_directory(target) as tmp:
        (tmp / "a.json").write_text("1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.bin").write_bytes(b"2")
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "a.json", "sub", "sub/b.bin"]
    with pytest.raises(RuntimeError):
        with atomic_directory(target, replace=True) as tmp:
            (tmp / "half.json").write_text("")
            raise RuntimeError("killed")
    with pytest.raises(FileExistsError):
        with atomic_directory(target) as tmp:  # not empty, and replace=False
            (tmp / "c.json").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["a.json", "sub"]
    with atomic_directory(target, replace=True) as tmp:
        (tmp / "c.json").write_text("3")
    assert [p.name for p in target.iterdir()] == ["c.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


# -- corpora -----------------------------------------------------------------------------------
def test_embedded_corpus_is_tiny_shakespeare():
    corpus = open_corpus("tinyshakespeare")
    assert corpus.num_bytes == 1_115_394
    assert "".join(corpus.chunks()).startswith("First Citizen:\nBefore we proceed")


def test_folder_corpus_reads_txt_files_recursively_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("two\n")
    (tmp_path / "a.TXT").write_text("one\n")
    (tmp_path / "notes.md").write_text("ignored\n")
    (tmp_path / ".hidden.txt").write_text("ignored\n")
    corpus = open_corpus(str(tmp_path))
    assert [f.relative_to(tmp_path).as_posix() for f in corpus.files] == ["a.TXT", "b/2.txt"]
    assert "".join(corpus.chunks()) == "one\ntwo\n"


def test_missing_corpus_says_so_and_names_the_embedded_one(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match=rf"corpus '{missing}' not found.*{missing}.*tinyshakespeare"):
        open_corpus(str(missing))
    with pytest.raises(DataError, match="did you mean 'tinyshakespeare'"):
        open_corpus("tinyshakespear")


def test_folder_without_text_files_is_an_error(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=rf"folder {tmp_path} holds no text files.*\.txt.*1 other file"):
        open_corpus(str(tmp_path))


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"is empty: .*empty\.txt"):
        open_corpus(str(tmp_path / "empty.txt"))


def test_unknown_or_non_text_encoding_is_an_error(shakespeare_file):
    with pytest.raises(DataError, match=r"unknown text encoding 'utf-9' \(did you mean .*'utf_?8'"):
        open_corpus(str(shakespeare_file), encoding="utf-9")
    with pytest.raises(DataError, match="'base64' is not a text encoding"):
        open_corpus(str(shakespeare_file), encoding="base64")


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 17, 64, 1 << 20])
def test_chunks_never_cut_characters_and_end_at_line_breaks(tmp_path, chunk_bytes):
    text = "".join(f"ligne {i}: été – 🙂 naïve\n" for i in range(200)) + "no final newline"
    path = tmp_path / "multi.txt"
    path.write_text(text, encoding="utf-8")
    chunks = list(open_corpus(str(path)).chunks(chunk_bytes))
    assert "".join(chunks) == text
    assert max(len(c) for c in chunks) <= 5 * chunk_bytes  # bounded: carry + one read
    longest_line = max(len(line.encode("utf-8")) for line in text.splitlines())
    if 4 * chunk_bytes > longest_line:  # lines fit: every piece ends at a line break
        assert all(c.endswith("\n") for c in chunks[:-1])


def test_a_single_very_long_line_is_cut_at_a_space(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("word " * 1000)
    chunks = list(open_corpus(str(path)).chunks(100))
    assert "".join(chunks) == "word " * 1000
    assert max(len(c) for c in chunks) <= 500
    assert all(c.endswith(" ") for c in chunks)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 1 << 20])
def test_undecodable_byte_is_reported_with_file_offset_and_line(tmp_path, chunk_bytes):
    good = "é line one\nline two é\n".encode("utf-8")
    path = tmp_path / "latin.txt"
    path.write_bytes(good + b"caf\xe9 au lait\n")
    corpus = open_corpus(str(path))
    offset = len(good) + 3
    with pytest.raises(DataError) as err:
        list(corpus.chunks(chunk_bytes))
    msg = str(err.value)
    assert str(path) in msg
    assert f"byte 0xe9 at byte offset {offset} (line 3)" in msg
    assert "`encoding` option" in msg


def test_truncated_character_at_end_of_file_is_reported(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes("abc\né".encode("utf-8")[:-1])
    with pytest.raises(DataError, match=r"cut\.txt: cannot decode byte 0xc3 at byte offset 4 \(line 2\)"):
        list(open_corpus(str(path)).chunks())


def test_encoding_option_reads_other_encodings(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9\n")
    assert "".join(open_corpus(str(path), encoding="latin-1").chunks()) == "café\n"


def test_fingerprint_changes_with_content_and_encoding(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abc\n")
    first = open_corpus(str(path)).fingerprint()
    assert open_corpus(str(path)).fingerprint() == first
    assert open_corpus(str(path), encoding="latin-1").fingerprint() != first
    path.write_text("abcd\n")
    assert open_corpus(str(path)).fingerprint() != first


# -- token ids ---------------------------------------------------------------------------------
class CountingChar(Tokenizer):
    """Wraps a tokenizer and counts encode calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    @property
    def vocab_size(self):
        return self.inner.vocab_size

    def encode(self, text):
        self.calls += 1
        return self.inner.encode(text)

    def to_json(self):
        return self.inner.to_json()


def test_token_ids_are_a_cached_read_only_memmap(shakespeare_file, tmp_path):
    corpus = open_corpus(str(shakespeare_file))
    tok = CountingChar(build_tokenizer("char", corpus.chunks()))
    ids = token_ids(corpus, tok, cache_dir=tmp_path)
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16 and ids.ndim == 1
    assert ids.tolist() == tok.inner.encode(shakespeare_file.read_text("utf-8"))
    with pytest.raises(ValueError):
        ids[0] = 1
    files = list((tmp_path / "tokens").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"
    stamp, calls = files[0].stat().st_ino, tok.calls
    again = token_ids(corpus, tok, cache_dir=tmp_path)
    assert tok.calls == calls  # nothing re-encoded
    assert files[0].stat().st_ino == stamp  # not rewritten (only its use time is touched)
    assert np.array_equal(again, ids)
    # another tokenizer gets its own file
    token_ids(corpus, build_tokenizer("byte", []), cache_dir=tmp_path)
    assert len(list((tmp_path / "tokens").iterdir())) == 2


def test_a_same_size_same_time_edit_of_the_corpus_is_not_served_stale_ids(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abab\n")
    stamp = path.stat().st_mtime_ns
    tok = build_tokenizer("byte", [])
    assert token_ids(open_corpus(str(path)), tok, cache_dir=tmp_path).tolist() == list(b"abab\n")
    path.write_text("baba\n")  # same size, and the same modification time
    os.utime(path, ns=(stamp, stamp))
    assert token_ids(open_corpus(str(path)), tok, cache_dir=tmp_path).tolist() == list(b"baba\n")


def test_ids_planted_in_a_cache_others_can_write_are_not_trained_on(tmp_path):
    from lmkit.errors import LmkitWarning

    path = tmp_path / "c.txt"
    path.write_text("hello\n")
    corpus, tok = open_corpus(str(path)), build_tokenizer("byte", [])
    token_ids(corpus, tok, cache_dir=tmp_path / "cache")
    (entry,) = (tmp_path / "cache" / "tokens").glob("*.npy")
    np.save(entry, np.zeros(6, np.uint16))  # another user's ids under the right name
    os.chmod(tmp_path / "cache" / "tokens", 0o777)
    with pytest.warns(LmkitWarning, match="token cache .* is not used: it is writable by other users"):
        ids = token_ids(corpus, tok, cache_dir=tmp_path / "cache")
    assert ids.tolist() == list(b"hello\n")


@pytest.mark.parametrize("damage", ["truncate", "out of vocabulary", "not an array"])
def test_a_damaged_token_cache_entry_is_rebuilt_with_a_warning(tmp_path, damage):
    from lmkit.errors import LmkitWarning

    path = tmp_path / "c.txt"
    path.write_text("hello\n")
    corpus, tok = open_corpus(str(path)), build_tokenizer("byte", [])
    token_ids(corpus, tok, cache_dir=tmp_path)
    (entry,) = (tmp_path / "tokens").glob("*.npy")
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "out of vocabulary":
        np.save(entry, np.full(6, 60_000, np.uint16))
    else:
        entry.write_bytes(b"planted")
    with pytest.warns(LmkitWarning, match="is damaged .* it is rebuilt from the corpus"):
        ids = token_ids(corpus, tok, cache_dir=tmp_path)
    assert ids.tolist() == list(b"hello\n")


def test_token_ids_default_to_the_lmkit_cache_dir(shakespeare_file, tmp_path, monkeypatch):
    monkeypatch.setenv("LMKIT_CACHE_DIR", str(tmp_path))
    token_ids(open_corpus(str(shakespeare_file)), build_tokenizer("byte", []))
    assert len(list((tmp_path / "tokens").glob("*.npy"))) == 1


def test_big_vocabularies_use_uint32(tmp_path):
    class Wide(Tokenizer):
        vocab_size = 70_000

        def encode(self, text):
            return [66_000 + ord(c) for c in text]

        def to_json(self):
            return {"type": "wide"}

    (tmp_path / "c.txt").write_text("ab\n")
    ids = token_ids(open_corpus(str(tmp_path / "c.txt")), Wide(), cache_dir=tmp_path)
    assert ids.dtype == np.uint32 and ids.tolist() == [66_097, 66_098, 66_010]


def test_an_interrupted_write_leaves_no_cache_file(shakespeare_file, tmp_path):
    class Failing(CountingChar):
        def encode(self, text):
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().encode(text)

    corpus = open_corpus(str(shakespeare_file))
    tok = Failing(build_tokenizer("char", corpus.chunks()))
    with pytest.raises(KeyboardInterrupt):
        token_ids(corpus, tok, cache_dir=tmp_path, chunk_bytes=4096)
    assert list((tmp_path / "tokens").iterdir()) == []


@pytest.mark.parametrize("name", ["word", "bpe"])
def test_chunk_size_does_not_change_the_ids(shakespeare_file, tmp_path, name):
    corpus = open_corpus(str(shakespeare_file))
    tok = build_tokenizer(name, corpus.chunks(), vocab_size=500)
    small = token_ids(corpus, tok, cache_dir=tmp_path / "small", chunk_bytes=300)
    whole = token_ids(corpus, tok, cache_dir=tmp_path / "whole")
    assert np.array_equal(small, whole)
    assert whole.tolist() == tok.encode(shakespeare_file.read_text("utf-8"))


def test_a_corpus_of_megabytes_is_encoded_with_bounded_memory(shakespeare_file, tmp_path):
    text = shakespeare_file.read_text("utf-8")
    big = tmp_path / "big.txt"
    with open(big, "w", encoding="utf-8") as f:
        for _ in range(160):
            f.write(text)
    corpus = open_corpus(str(big))
    assert corpus.num_bytes > 7_900_000
    tok = build_tokenizer("char", [text])
    tracemalloc.start()
    try:
        ids = token_ids(corpus, tok, cache_dir=tmp_path, chunk_bytes=64 << 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ids) == 160 * len(text)
    assert np.array_equal(ids[-len(text):], tok.encode(text))
    # the corpus as text would take 8 MB and its ids 16 MB; streaming needs a few chunks
    assert peak < 4_000_000, f"peak traced memory {peak:,} bytes"


# -- splits and batches ------------------------------------------------------------------------
def test_split_holds_out_the_tail(ids):
    train, val = split(ids, 0.1, seq_len=8)
    assert len(train) == 900 and len(val) == 100
    assert train[-1] == 899 and val[0] == 900
    train, val = split(ids, 0.0, seq_len=8)
    assert len(train) == 1000 and len(val) == 0


def test_seq_len_longer_than_the_corpus_is_a_clear_error(ids):
    too_long = r"seq_len=2000 is longer than the corpus: it has 1000 tokens.*at most 999"
    with pytest.raises(ConfigError, match=too_long):
        split(ids, 0.1, seq_len=2000)
    short_val = (r"the validation split has 10 tokens \(corpus: 1000 tokens, validation_split=0\.01\)"
                 r".*seq_len \+ 1 = 51.*larger validation_split")
    with pytest.raises(ConfigError, match=short_val):
        split(ids, 0.01, seq_len=50)
    with pytest.raises(ConfigError, match=r"the training split has 100 tokens.*smaller validation_split"):
        split(ids, 0.9, seq_len=200)
    with pytest.raises(ConfigError, match=r"seq_len=1000 is longer than the data: 1000 tokens"):
        WindowSampler(ids, seq_len=1000, batch_size=2, seed=0)


def test_window_sampler_gives_contiguous_shifted_windows(ids):
    data = np.random.default_rng(1).integers(0, 50, size=500).astype(np.uint16)
    sampler = WindowSampler(data, seq_len=16, batch_size=8, seed=3)
    x, y = sampler.batch(5)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == np.int32
    for row_x, row_y, s in zip(x, y, sampler.starts(5)):
        assert np.array_equal(row_x, data[s:s + 16])
        assert np.array_equal(row_y, data[s + 1:s + 17])
    starts = np.concatenate([sampler.starts(s) for s in range(200)])
    assert starts.min() >= 0 and starts.max() <= 500 - 17
    assert starts.max() > 400  # the whole range is used


def test_window_sampler_is_a_pure_function_of_seed_and_step(ids):
    a = WindowSampler(ids, seq_len=10, batch_size=4, seed=7)
    b = WindowSampler(ids, seq_len=10, batch_size=4, seed=7)
    later = [a.batch(s) for s in range(5)]
    assert all(np.array_equal(b.batch(s)[0], later[s][0]) for s in (4, 2, 0))  # any order
    other = WindowSampler(ids, seq_len=10, batch_size=4, seed=8)
    assert not np.array_equal(other.batch(0)[0], a.batch(0)[0])
    assert not np.array_equal(a.batch(1)[0], a.batch(0)[0])
    xs, ys = a.batches(2, 3)
    assert xs.shape == ys.shape == (3, 4, 10)
    for k in range(3):
        x, y = a.batch(2 + k)
        assert np.array_equal(xs[k], x) and np.array_equal(ys[k], y)


def test_sequential_batches_cover_the_split_in_order(ids):
    batches = list(sequential_batches(ids, seq_len=10, batch_size=32))
    assert [len(x) for x, _ in batches] == [32, 32, 32, 3]  # 99 full windows; last batch smaller
    xs = np.concatenate([x for x, _ in batches]).ravel()
    ys = np.concatenate([y for _, y in batches]).ravel()
    assert np.array_equal(xs, np.arange(990)) and np.array_equal(ys, np.arange(1, 991))
    assert len(list(sequential_batches(ids, seq_len=10, batch_size=32, limit=2))) == 2


def test_window_sampler_on_the_token_file_reads_the_same_windows(shakespeare_file, tmp_path):
    # Splits of the cached memmap are read with pread (bounded resident memory); the windows
    # must be exactly those of plain indexing.
    corpus = open_corpus(str(shakespeare_file))
    ids = token_ids(corpus, build_tokenizer("char", corpus.chunks()), tmp_path)
    for part in split(ids, 0.2, 16):
        from_file = WindowSampler(part, 16, 5, seed=2).batches(3, 4)
        in_memory = WindowSampler(np.array(part), 16, 5, seed=2).batches(3, 4)
        np.testing.assert_array_equal(from_file[0], in_memory[0])
        np.testing.assert_array_equal(from_file[1], in_memory[1])


def test_token_caches_are_pruned_least_recently_used_first(tmp_path, monkeypatch):
    import os
    import time

    corpora = []
    for i in range(3):
        f = tmp_path / f"c{i}.txt"
        f.write_text(f"corpus {i} " * 2000)
        corpora.append(open_corpus(str(f)))
    tok = build_tokenizer("byte", [])
    size = token_ids(corpora[0], tok, cache_dir=tmp_path).nbytes
    time.sleep(0.01)
    token_ids(corpora[1], tok, cache_dir=tmp_path)
    time.sleep(0.01)
    token_ids(corpora[0], tok, cache_dir=tmp_path)  # used again: now the most recent
    # room for two: writing a third drops the least recently used (corpus 1), not corpus 0
    monkeypatch.setenv("LMKIT_TOKEN_CACHE_GB", str((2 * size + 1000) / 2**30))
    token_ids(corpora[2], tok, cache_dir=tmp_path)
    cached = sorted(os.listdir(tmp_path / "tokens"))
    assert len(cached) == 2
    kept = {np.load(tmp_path / "tokens" / name)[:8].astype(np.uint8).tobytes() for name in cached}
    assert kept == {b"corpus 0", b"corpus 2"}


def test_a_full_disk_is_one_clear_error_and_the_previous_file_stays(tmp_path):
    import errno

    from lmkit.errors import RunError

    target = tmp_path / "checkpoint.npz"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(RunError) as raised:
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half a new")
            raise OSError(errno.ENOSPC, "No space left on device")  # as the next write() would
    assert "no space left on the device to write" in str(raised.value)
    assert "the previous checkpoint.npz, if there was one, is intact" in str(raised.value)
    assert target.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]
