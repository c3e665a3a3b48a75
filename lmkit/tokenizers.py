"""Tokenizers: `char`, `word`, `whitespace`, `bpe` and `byte`, registered in `lmkit.registry.tokenizers`.

>>> tok = build_tokenizer("char", ["hello world\\n"])
>>> tok.decode(tok.encode("hello"))
'hello'
>>> tok.vocab_size        # <unk> plus the 9 distinct characters
10

Every tokenizer has a classmethod ``fit(chunks, vocab_size=None)`` that streams over text chunks
(as `lmkit.data.Corpus.chunks` yields them: pieces ending at line breaks), ``encode(text) ->
list[int]``, ``decode(ids) -> str``, ``vocab_size``, ``unit`` and ``to_json()`` / ``from_json()``.
`save_tokenizer` and `load_tokenizer` store them as JSON (no pickle). Plugins subclass
`Tokenizer` and register with ``@lmkit.registry.tokenizers.register("name")``.

``to_hf()`` gives the same tokenizer as a Hugging Face ``tokenizers.Tokenizer`` (what
`lmkit.export` writes as ``tokenizer.json``): `char`, `byte` and `bpe` have one that encodes every
text to the same ids and decodes ids to the same text; `word` has none (its word pattern uses
Python's ``\\w``, which HF's regex engine does not match character for character).

Unknown input: `char` and `word` map what they did not see in ``fit`` to a reserved ``<unk>`` id
0 (decoded as U+FFFD and ``<unk>``); `byte` and `bpe` are byte-level and have no unknowns.
`Tokenizer.unknown_id` names that id (None when there is none): generation never samples it.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lmkit import registry
from lmkit.errors import ConfigError, DataError, ExportError, LmkitError
from lmkit.paths import atomic_output

__all__ = ["Tokenizer", "CharTokenizer", "WordTokenizer", "BpeTokenizer", "ByteTokenizer",
           "PretrainedTokenizer",
           "build_tokenizer", "save_tokenizer", "load_tokenizer", "UNK"]

UNK = "<unk>"
_UNK_CHAR = "\ufffd"  # what an unknown character decodes to: the Unicode replacement character


class Tokenizer:
    """Base class: subclasses set `unit` and `type_name` and implement the methods below."""

    unit: ClassVar[str] = "token"
    type_name: ClassVar[str] = ""
    #: whether `fit` learns it from a corpus (False: it comes with a pretrained checkpoint)
    trainable: ClassVar[bool] = True
    #: The id that stands for "not in the vocabulary", or None. It is a placeholder, not text:
    #: `lmkit.generation.generate` never samples it (it would print U+FFFD or ``<unk>``).
    unknown_id: ClassVar[int | None] = None

    @classmethod
    def fit(cls, chunks: Iterable[str], vocab_size: int | None = None) -> "Tokenizer":
        raise NotImplementedError

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Tokenizer":
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """`encode` as a 1-D integer array (the fast path used to tokenize whole corpora)."""
        return np.asarray(self.encode(text), dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_hf(self) -> Any:
        """This tokenizer as a Hugging Face ``tokenizers.Tokenizer`` that encodes every text to the
        same ids and decodes ids to the same text; `ExportError` when there is none.

        >>> tok = build_tokenizer("char", ["abc"])
        >>> tok.to_hf().encode("cab!").ids == tok.encode("cab!")
        True
        """
        convertible = [e.name for e in registry.tokenizers.list()
                       if getattr(e.obj, "to_hf", None) is not Tokenizer.to_hf
                       and getattr(e.obj, "trainable", True)]
        raise ExportError(
            f"the '{self.type_name}' tokenizer has no exact Hugging Face equivalent, so a run using "
            f"it cannot be exported; train with one of: {', '.join(convertible)}"
        )

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_json() == other.to_json()  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def _ids(ids: Iterable[int]) -> np.ndarray:
    return np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)


def _check_vocab_size(name: str, vocab_size: int | None, minimum: int) -> None:
    if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size < minimum):
        raise ConfigError(
            f"vocab_size of the '{name}' tokenizer must be an integer of at least {minimum}, "
            f"got {vocab_size!r}"
        )


@registry.tokenizers.register("char", aliases=("character",),
                              description="One id per distinct character seen in training.")
class CharTokenizer(Tokenizer):
    """Characters seen in ``fit``, sorted, get ids 1..n; id 0 is ``<unk>`` for any other.

    With `vocab_size`, only the ``vocab_size - 1`` most frequent characters are kept.
    """

    unit = "char"
    type_name = "char"
    unknown_id = 0

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = list(chars)
        codes = np.array([ord(c) for c in self.chars], dtype=np.int64)
        # code point -> id; 0 (<unk>) for every code point not in the vocabulary
        self._table = np.zeros(int(codes.max(initial=0)) + 1, dtype=np.int32)
        self._table[codes] = np.arange(1, len(codes) + 1, dtype=np.int32)
        self._chars = np.array([_UNK_CHAR, *self.chars], dtype="<U1")

    @classmethod
    def fit(cls, chunks: Iterable[str], vocab_size: int | None = None) -> "CharTokenizer":
        _check_vocab_size("char", vocab_size, 2)
        counts: Counter[str] = Counter()
        for chunk in chunks:
            counts.update(chunk)
        if vocab_size is not None:
            kept = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: vocab_size - 1]
            return cls(sorted(c for c, _ in kept))
        return cls(sorted(counts))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CharTokenizer":
        return cls(data["chars"])

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode_array(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.zeros(codes.shape, dtype=np.int32)
        known = codes < len(self._table)
        ids[known] = self._table[codes[known]]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self._chars[_ids(ids)].tolist())

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type_name, "chars": self.chars}

    def to_hf(self) -> Any:
        import tokenizers as hf

        vocab = {UNK: 0, **{c: i for i, c in enumerate(self.chars, start=1)}}
        tok = hf.Tokenizer(hf.models.WordLevel(vocab, unk_token=UNK))
        # one piece per code point, line breaks included (Oniguruma's "." stops at "\n"); every
        # piece not in the vocabulary is <unk>, id 0, as in `encode`. <unk> is not an added
        # token, so the text "<unk>" is five characters here too.
        tok.pre_tokenizer = hf.pre_tokenizers.Split(hf.Regex(r"[\s\S]"), behavior="isolated")
        # pieces joined without spaces, <unk> shown as U+FFFD, as `decode` does
        tok.decoder = hf.decoders.Sequence([hf.decoders.Replace(UNK, _UNK_CHAR),
                                            hf.decoders.Fuse()])
        return tok


# A word is a run of letters/digits (with inner apostrophes: "don't", "o'er"); every other
# visible character is a token of its own; a line break is a token, so samples keep their lines;
# spaces and tabs only separate. A literal "<unk>" (as in WikiText) is the unknown word.
_WORD = re.compile(r"<unk>|\n|\w+(?:'\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = frozenset(".,;:!?)]}%")
_NO_SPACE_AFTER = frozenset("([{$")


@registry.tokenizers.register("word", aliases=("words",),
                              description="The most frequent words plus <unk> (default 10,000).")
class WordTokenizer(Tokenizer):
    """The ``vocab_size - 1`` most frequent words of ``fit`` plus ``<unk>`` (id 0) for the rest.

    Case is kept. Words are split as `pattern` says (`_WORD`: punctuation and line breaks are
    tokens).
    `decode` joins words with one space, except around line breaks, before closing punctuation
    (``. , ; : ! ? ) ] } %``) and after opening brackets, so the text reads naturally; the exact
    spacing of the input is not restored.
    """

    unit = "word"
    type_name = "word"
    unknown_id = 0
    default_vocab_size = 10_000
    pattern = _WORD

    def __init__(self, words: Sequence[str]) -> None:
        self.words = list(words)
        self._index = {w: i for i, w in enumerate(self.words, start=1)}

    @classmethod
    def fit(cls, chunks: Iterable[str], vocab_size: int | None = None) -> "WordTokenizer":
        _check_vocab_size("word", vocab_size, 2)
        size = vocab_size or cls.default_vocab_size
        counts: Counter[str] = Counter()
        for chunk in chunks:
            counts.update(cls.pattern.findall(chunk))
        counts.pop(UNK, None)
        # ties are broken alphabetically so the vocabulary does not depend on chunking
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: size - 1]
        return cls([w for w, _ in ranked])

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "WordTokenizer":
        return cls(data["words"])

    @property
    def vocab_size(self) -> int:
        return len(self.words) + 1

    def encode(self, text: str) -> list[int]:
        index = self._index
        return [index.get(w, 0) for w in self.pattern.findall(text)]

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        prev = "\n"
        for i in _ids(ids).tolist():
            word = self.words[i - 1] if i > 0 else UNK
            if not (prev == "\n" or word == "\n" or word[0] in _NO_SPACE_BEFORE
                    or prev[-1] in _NO_SPACE_AFTER):
                out.append(" ")
            out.append(word)
            prev = word
        return "".join(out)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type_name, "words": self.words}


# The line boundaries of `str.splitlines`, as a regular expression for HF `tokenizers`.
_LINE_END = "\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]"


@registry.tokenizers.register(
    "whitespace", aliases=("whitespace_word",),
    description="Words split at whitespace only, for pre-tokenized corpora (WikiText); line breaks are tokens.")
class WhitespaceTokenizer(WordTokenizer):
    """`word` for a corpus that is already tokenized: a word is any run of non-space characters
    (WikiText's ``@-@``, ``U.S.`` and ``3.5`` stay one token), and each line break is a token —
    the same stream as PyTorch's word_language_model example (``line.split() + ['<eos>']``).

    >>> WhitespaceTokenizer.fit(["the U.S. @-@ army\n"]).encode("the U.S. navy\n")[:2] != [0, 0]
    True
    """

    type_name = "whitespace"
    pattern = re.compile(r"\n|\S+")


@registry.tokenizers.register("bpe", aliases=("byte_bpe",),
                              description="Byte-level BPE trained locally with Hugging Face tokenizers.")
class BpeTokenizer(Tokenizer):
    """Byte-level BPE (as GPT-2), trained on the corpus with Hugging Face ``tokenizers``.

    The 256 byte values are always in the vocabulary, so any text encodes and round-trips
    exactly. Text is encoded line by line (a batch of lines, parallel in Rust), so encoding a
    corpus in line-aligned chunks gives the same ids as encoding it whole.
    """

    unit = "token"
    type_name = "bpe"
    default_vocab_size = 2_000

    def __init__(self, hf_tokenizer: Any) -> None:
        self.hf = hf_tokenizer

    @classmethod
    def fit(cls, chunks: Iterable[str], vocab_size: int | None = None) -> "BpeTokenizer":
        import tokenizers as hf  # Hugging Face `tokenizers`, imported only when BPE is used

        _check_vocab_size("bpe", vocab_size, 257)
        tok = hf.Tokenizer(hf.models.BPE())
        tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = hf.decoders.ByteLevel()
        trainer = hf.trainers.BpeTrainer(
            vocab_size=vocab_size or cls.default_vocab_size,
            initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        # batches of lines, the same units that `encode` sees
        tok.train_from_iterator((c.splitlines(keepends=True) for c in chunks), trainer=trainer)
        return cls(tok)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "BpeTokenizer":
        import tokenizers as hf

        return cls(hf.Tokenizer.from_str(data["hf_tokenizer"]))

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode_array(self, text: str) -> np.ndarray:
        # encode_batch_fast (tokenizers >= 0.20) skips the character offsets we do not use
        encodings = self.hf.encode_batch_fast(text.splitlines(keepends=True), add_special_tokens=False)
        ids = itertools.chain.from_iterable(e.ids for e in encodings)
        return np.fromiter(ids, dtype=np.int32, count=sum(len(e.ids) for e in encodings))

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(_ids(ids).tolist(), skip_special_tokens=False)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type_name, "hf_tokenizer": self.hf.to_str()}

    def to_hf(self) -> Any:
        import tokenizers as hf

        tok = hf.Tokenizer.from_str(self.hf.to_str())
        # `encode` encodes line by line; cutting the text at the same line ends first keeps the
        # pieces equal: on whole text GPT-2's pattern splits " \n" into " " and "\n" (and
        # "\r\n" into two), which the merges learned on lines would then not join.
        tok.pre_tokenizer = hf.pre_tokenizers.Sequence([
            hf.pre_tokenizers.Split(hf.Regex(_LINE_END), behavior="merged_with_previous"),
            tok.pre_tokenizer,
        ])
        return tok


@registry.tokenizers.register(
    "pretrained", aliases=("hf",),
    description="A pretrained checkpoint's own Hugging Face tokenizer.json (comes with the checkpoint).")
class PretrainedTokenizer(BpeTokenizer):
    """The ``tokenizer.json`` of a Hugging Face checkpoint (WordPiece, byte-level BPE, ...).

    `encode` gives the ids of the text alone (language-model training reads a corpus through
    it); `encode_inputs` gives what the checkpoint was trained on, with its special tokens
    (``[CLS] a [SEP] b [SEP]`` for BERT) and Hugging Face's longest-first truncation of pairs.
    """

    type_name = "pretrained"
    trainable = False

    def __init__(self, hf_tokenizer: Any) -> None:
        hf_tokenizer.no_truncation()  # the checkpoint's settings; `encode_inputs` sets its own
        hf_tokenizer.no_padding()
        super().__init__(hf_tokenizer)
        self._truncating: dict[int | None, Any] = {}

    @classmethod
    def fit(cls, chunks: Iterable[str], vocab_size: int | None = None) -> "PretrainedTokenizer":
        raise ConfigError("the 'pretrained' tokenizer comes with a checkpoint and is not fitted: "
                          "set `init = \"PATH_OR_NAME\"` to start from a pretrained model")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "PretrainedTokenizer":
        """Read a Hugging Face ``tokenizer.json``."""
        import tokenizers as hf

        try:
            return cls(hf.Tokenizer.from_file(str(path)))
        except Exception as exc:  # the Rust library raises plain Exceptions
            raise DataError(f"{path}: not a Hugging Face tokenizer.json ({exc})") from None

    def to_hf(self) -> Any:
        """The checkpoint's own tokenizer (a copy): what `encode_inputs` encodes with, special
        tokens and token types included."""
        import tokenizers as hf

        return hf.Tokenizer.from_str(self.hf.to_str())

    def token_id(self, token: str) -> int | None:
        """The id of `token` (such as ``"[SEP]"``), or None when the vocabulary lacks it."""
        return self.hf.token_to_id(token)

    def encode_inputs(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                      max_length: int | None = None) -> list[np.ndarray]:
        """The model inputs of `texts` (and second segments `pairs`), special tokens included,
        truncated to `max_length` tokens (the longer segment of a pair first, as Hugging Face)."""
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        return [np.asarray(e.ids, dtype=np.int32)
                for e in self._truncating_to(max_length).encode_batch_fast(inputs, add_special_tokens=True)]

    def encodings(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                  max_length: int | None = None) -> list[Any]:
        """The Hugging Face `Encoding`s of `encode_inputs`, with each token's character offsets
        and segment (`offsets`, `sequence_ids`): what maps a marked span to its tokens."""
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        return self._truncating_to(max_length).encode_batch(inputs, add_special_tokens=True)

    def _truncating_to(self, max_length: int | None) -> Any:
        import tokenizers as hf

        # Truncation is a setting of the Rust tokenizer: one copy per length leaves ours alone
        # (a copy parses the whole vocabulary, so it is kept).
        tok = self._truncating.get(max_length)
        if tok is None:
            tok = hf.Tokenizer.from_str(self.hf.to_str())
            if max_length is not None:
                tok.enable_truncation(max_length, strategy="longest_first")
            self._truncating[max_length] = tok
        return tok


@registry.tokenizers.register("byte", aliases=("bytes",),
                              description="The 256 UTF-8 byte values; no training.")
class ByteTokenizer(Tokenizer):
    """Ids are the UTF-8 bytes of the text (vocabulary 256, nothing to learn).

    `decode` replaces byte sequences that are not valid UTF-8 (a sample cut mid-character) with
    U+FFFD.
    """

    unit = "byte"
    type_name = "byte"

    @classmethod
    def fit(cls, chunks: Iterable[str], vocab_size: int | None = None) -> "ByteTokenizer":
        if vocab_size not in (None, 256):
            raise ConfigError(f"the 'byte' tokenizer has exactly 256 ids; got vocab_size={vocab_size}")
        return cls()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ByteTokenizer":
        return cls()

    @property
    def vocab_size(self) -> int:
        return 256

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def decode(self, ids: Iterable[int]) -> str:
        return _ids(ids).astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type_name}

    def to_hf(self) -> Any:
        import tokenizers as hf

        # Byte-level BPE without merges: every byte is one token whose id is its value. HF's
        # byte-level pieces spell byte b as GPT-2's printable character for b.
        vocab = {c: b for b, c in enumerate(_gpt2_byte_chars())}
        tok = hf.Tokenizer(hf.models.BPE(vocab, []))
        tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = hf.decoders.ByteLevel()  # invalid UTF-8 -> U+FFFD, as `decode`
        return tok


def _gpt2_byte_chars() -> list[str]:
    """GPT-2's printable character for each byte value 0..255 (``bytes_to_unicode``): printable
    Latin-1 bytes stand for themselves, the others for code points from 256 on."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(others)) for b in range(256)]


def build_tokenizer(name: str, chunks: Iterable[str], vocab_size: int | None = None) -> Tokenizer:
    """Fit the tokenizer registered as `name` on `chunks`.

    >>> build_tokenizer("byte", []).encode("é")
    [195, 169]
    """
    return registry.tokenizers.get(name).fit(chunks, vocab_size=vocab_size)


def save_tokenizer(tokenizer: Tokenizer, path: str | os.PathLike[str]) -> Path:
    """Write ``tokenizer.to_json()`` to `path` (atomically); returns the path."""
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(tokenizer.to_json(), ensure_ascii=False), encoding="utf-8")
    return path


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Rebuild a tokenizer saved by `save_tokenizer` (a file, or a folder holding ``tokenizer.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"tokenizer file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}, line {exc.lineno}: not valid tokenizer JSON ({exc.msg})") from None
    if not isinstance(data, dict) or "type" not in data:
        raise DataError(f"{path}: a tokenizer file must be a JSON object with a \"type\" key")
    try:
        cls = registry.tokenizers.get(data["type"])
        return cls.from_json(data)
    except LmkitError as exc:
        raise DataError(f"{path}: cannot load tokenizer: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: tokenizer of type {data['type']!r} is incomplete or damaged "
            f"({type(exc).__name__}: {exc})"
        ) from None
