"""Text corpora: the embedded tiny Shakespeare, a text file, or a folder of ``.txt`` files.

>>> corpus = open_corpus("tinyshakespeare")
>>> corpus.num_bytes
1115394
>>> next(corpus.chunks(chunk_bytes=16))
'First Citizen:\\n'

Text is streamed in chunks (`Corpus.chunks`), never read whole, so a corpus larger than memory
can be tokenized. Undecodable bytes raise `DataError` naming the file, the byte offset and the
line, and suggesting the ``encoding`` option.
"""

from __future__ import annotations

import codecs
import encodings.aliases
import hashlib
import importlib.resources
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmkit.errors import DataError, LmkitWarning, did_you_mean

__all__ = ["Corpus", "open_corpus", "EMBEDDED_CORPORA", "TEXT_SUFFIXES"]

# name -> file inside the lmkit.data package
EMBEDDED_CORPORA = {"tinyshakespeare": "tinyshakespeare.txt"}

# Files a folder corpus takes (case-insensitive); hidden files and folders are skipped.
TEXT_SUFFIXES = (".txt",)

# A line longer than this many chunks is cut (at a space if it has one) to bound memory.
_MAX_LINE_CHUNKS = 4


@dataclass(frozen=True)
class Corpus:
    """An ordered list of text files read with one encoding.

    Attributes:
        name: what the user passed (``"tinyshakespeare"``, a path).
        files: the files, in reading order (sorted by path within a folder).
        encoding: a Python codec name, checked by `open_corpus`.
    """

    name: str
    files: tuple[Path, ...]
    encoding: str = "utf-8"

    @property
    def num_bytes(self) -> int:
        """Total size of the files in bytes."""
        return sum(f.stat().st_size for f in self.files)

    def chunks(self, chunk_bytes: int = 1 << 20) -> Iterator[str]:
        """Yield the decoded text in pieces of about `chunk_bytes` bytes.

        Each piece ends at a line break (so no word, and no multi-byte character, is cut), except
        the last piece of a file and a single line longer than four chunks, which is cut at its
        last space. Pieces never span two files. Memory use is bounded by a few chunks.
        """
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be a positive integer, got {chunk_bytes}")
        for path in self.files:
            yield from _whole_lines(_decoded(path, self.encoding, chunk_bytes),
                                    _MAX_LINE_CHUNKS * chunk_bytes)

    def fingerprint(self) -> str:
        """A hash of the files' contents, in order, and the encoding (the token cache's key).

        The contents, not names and modification times: a file replaced by another of the same
        size and time, or a copy elsewhere, keys its own ids (hashing reads the corpus once,
        about a second per GB)."""
        known = self.__dict__.get("_fingerprint")  # once per opened corpus: the cache and resume ask
        if known is None:
            digest = hashlib.sha256(json.dumps({"encoding": self.encoding}).encode("utf-8"))
            for f in self.files:
                with f.open("rb") as fh:
                    digest.update(hashlib.file_digest(fh, "sha256").digest())
            known = digest.hexdigest()
            object.__setattr__(self, "_fingerprint", known)
        return known


def open_corpus(data: str, encoding: str = "utf-8") -> Corpus:
    """Open `data`: an embedded corpus name, a text file, or a folder of ``*.txt`` files.

    A folder is searched recursively; its ``.txt`` files (any case, hidden ones skipped) are read
    in sorted path order. Raises `DataError` when the path does not exist, a folder holds no text
    file, the corpus is empty, or `encoding` is not a text encoding Python knows.

    >>> open_corpus("tinyshakespeare").files[0].name
    'tinyshakespeare.txt'
    """
    encoding = _check_encoding(encoding)
    key = str(data).strip()
    if key.lower() in EMBEDDED_CORPORA:
        resource = importlib.resources.files("lmkit.data").joinpath(EMBEDDED_CORPORA[key.lower()])
        files: tuple[Path, ...] = (Path(str(resource)),)
    else:
        path = _expanded(key)
        if path.is_file():
            files = (path,)
        elif path.is_dir():
            files = _text_files(path)
        elif path.exists():  # reading a FIFO would block forever, a device never end
            raise DataError(f"corpus '{data}' is not a regular file (a FIFO, device or socket): "
                            f"lmkit reads text from regular files only")
        else:
            raise DataError(
                f"corpus '{data}' not found: there is no file or folder at {path.absolute()}"
                f"{did_you_mean(key, EMBEDDED_CORPORA)}. `data` takes a text file, a folder of "
                f"{'/'.join(TEXT_SUFFIXES)} files, or the name of an embedded corpus: "
                f"{', '.join(EMBEDDED_CORPORA)}."
            )
    corpus = Corpus(name=key, files=files, encoding=encoding)
    if corpus.num_bytes == 0:
        shown = ", ".join(str(f) for f in files[:3]) + (", ..." if len(files) > 3 else "")
        raise DataError(f"corpus '{data}' is empty: {shown} hold(s) 0 bytes of text.")
    _warn_if_misread(files[0], encoding)
    return corpus


def _expanded(key: str) -> Path:
    """`key` with ``~`` and ``~user`` expanded; an unknown user is a `DataError`."""
    try:
        return Path(key).expanduser()
    except RuntimeError as exc:  # pathlib: "Could not determine home directory"
        raise DataError(f"corpus '{key}': {exc} (no such user?); give the path without '~'") from None


#: how much of the first file the encoding check reads
_SAMPLE_BYTES = 1 << 16


def _warn_if_misread(path: Path, encoding: str) -> None:
    """Warn when `path` is plainly UTF-8 but `encoding` reads other characters from it (a
    UTF-16 or Latin-1 setting on a UTF-8 file decodes without error, into nonsense)."""
    if encoding in ("utf-8", "utf-8-sig"):
        return
    with open(path, "rb") as f:
        sample = f.read(_SAMPLE_BYTES)
    if b"\0" in sample:  # UTF-8 text holds no NUL bytes; UTF-16 and UTF-32 text does
        return
    try:
        as_utf8 = codecs.getincrementaldecoder("utf-8")().decode(sample)
        as_given = codecs.getincrementaldecoder(encoding)().decode(sample)
    except UnicodeError:
        return  # not UTF-8 (or not `encoding`: reading it names the problem)
    if as_given != as_utf8:
        warnings.warn(f"{path} reads as UTF-8, but encoding={encoding!r} decodes it differently: "
                      f"it begins {as_given[:30]!r} instead of {as_utf8[:30]!r}. Set "
                      f"encoding = \"utf-8\" if the file is UTF-8", LmkitWarning, stacklevel=3)


def _check_encoding(encoding: str) -> str:
    try:
        info = codecs.lookup(encoding)
    except (LookupError, TypeError):
        names = set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values())
        raise DataError(
            f"unknown text encoding {encoding!r}{did_you_mean(str(encoding).replace('-', '_'), names)}. "
            f"Use a Python codec name such as 'utf-8', 'latin-1' or 'cp1252'."
        ) from None
    if not getattr(info, "_is_text_encoding", True):
        raise DataError(
            f"encoding {encoding!r} is not a text encoding (it converts bytes to bytes). "
            f"Use a text encoding such as 'utf-8', 'latin-1' or 'cp1252'."
        )
    return info.name


def _text_files(folder: Path) -> tuple[Path, ...]:
    found = []
    others = 0
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.suffix.lower() in TEXT_SUFFIXES:
            found.append(p)
        else:
            others += 1
    if not found:
        raise DataError(
            f"folder {folder} holds no text files: lmkit reads files ending in "
            f"{', '.join(TEXT_SUFFIXES)} (searched recursively, {others} other file(s) ignored). "
            f"Rename the files, or pass one file's path as `data`."
        )
    return tuple(found)


def _decoded(path: Path, encoding: str, chunk_bytes: int) -> Iterator[str]:
    """Decode `path` incrementally, so a multi-byte character split across reads stays whole."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    offset = 0  # bytes of the file handed to the decoder so far
    with open(path, "rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            final = not raw
            pending = len(decoder.getstate()[0])  # bytes the decoder holds from the last read
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as exc:
                raise _decode_error(path, encoding, offset - pending + exc.start, exc) from None
            except UnicodeError as exc:  # e.g. utf-16 and utf-32 need a byte-order mark
                raise DataError(f"{path}: cannot be read as {encoding}: {exc}. Name the byte "
                                f"order (encoding='{encoding}-le' or '-be'), or the file's "
                                f"real encoding") from None
            offset += len(raw)
            if text:
                yield text
            if final:
                return


def _whole_lines(pieces: Iterator[str], max_chars: int) -> Iterator[str]:
    carry = ""
    for piece in pieces:
        text = carry + piece
        cut = text.rfind("\n") + 1
        if not cut and len(text) >= max_chars:
            cut = text.rfind(" ") + 1 or len(text)
        if cut:
            yield text[:cut]
        carry = text[cut:]
    if carry:
        yield carry


def _decode_error(path: Path, encoding: str, offset: int, exc: UnicodeDecodeError) -> DataError:
    line = 1
    with open(path, "rb") as f:
        remaining = offset
        while remaining:  # count line breaks before the bad byte without reading the file whole
            block = f.read(min(remaining, 1 << 20))
            line += block.count(b"\n")
            remaining -= len(block)
        bad = f.read(1)
    return DataError(
        f"{path}: cannot decode byte 0x{bad.hex()} at byte offset {offset} (line {line}) as "
        f"{encoding} ({exc.reason}). Set the `encoding` option to the file's encoding "
        f"(for example encoding='latin-1' or 'cp1252'), or fix the file."
    )
