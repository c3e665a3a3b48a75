"""Token ids on disk, and the batches cut from them.

>>> from lmkit.data.corpus import open_corpus
>>> from lmkit.tokenizers import build_tokenizer
>>> corpus = open_corpus("tinyshakespeare")
>>> tok = build_tokenizer("char", corpus.chunks())
>>> ids = token_ids(corpus, tok)              # a read-only np.memmap, cached   # doctest: +SKIP
>>> train, val = split(ids, 0.1, seq_len=64)                                    # doctest: +SKIP
>>> x, y = WindowSampler(train, seq_len=64, batch_size=12, seed=0).batch(0)   # doctest: +SKIP
>>> x.shape, (x[:, 1:] == y[:, :-1]).all()                                     # doctest: +SKIP
((12, 64), True)

Ids are written once per (corpus, tokenizer) to ``cache_dir()/tokens/<key>.npy``, chunk by
chunk, so a corpus larger than memory can be tokenized and trained on; later runs map the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lmkit import paths
from lmkit.data.corpus import Corpus
from lmkit.errors import ConfigError, DataError, LmkitWarning

__all__ = ["token_ids", "prune_token_cache", "split", "warn_unknown", "WindowSampler",
           "sequential_batches"]

_HEADER_BYTES = 128  # fixed .npy header, rewritten with the final length once it is known


def token_ids(corpus: Corpus, tokenizer: Any, cache_dir: Path | None = None,
              chunk_bytes: int = 1 << 20) -> np.memmap:
    """The corpus encoded by `tokenizer`: a read-only memory-mapped 1-D array.

    The dtype is ``uint16`` when the vocabulary has at most 65,536 ids, else ``uint32``. The
    array is cached in ``<cache_dir>/tokens/`` (`cache_dir` defaults to
    `lmkit.paths.cache_dir()`), keyed by the corpus fingerprint (its contents and encoding) and
    the tokenizer's JSON; the file is written atomically, so an interrupted run leaves no partial
    cache. A cache folder other users can write is not used (they could plant ids: the ids are
    then written to a private temporary folder), and a damaged entry (truncated, not an array
    of this vocabulary's ids) is rebuilt with a warning. Memory use is bounded by a few
    `chunk_bytes` of text. Chunks end at line breaks, so `chunk_bytes` does not change the ids
    (and is not part of the key) unless a single line is longer than four chunks.
    """
    limit = _cache_limit()  # a bad setting fails before the corpus is read
    spec = json.dumps(tokenizer.to_json(), sort_keys=True, ensure_ascii=False)
    key = hashlib.sha256(f"{corpus.fingerprint()}\n{spec}".encode("utf-8")).hexdigest()[:40]
    folder = paths.private_folder(Path(cache_dir or paths.cache_dir()) / "tokens", "token cache",
                                  "ids planted there would be trained on")
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="lmkit-tokens-"))  # mode 0700; the OS cleans it
    path = folder / f"{key}.npy"
    ids = _cached(path, int(tokenizer.vocab_size))
    if ids is not None:
        os.utime(path)  # most recently used: the last to be pruned
        return ids
    _write_ids(path, corpus, tokenizer, chunk_bytes)
    prune_token_cache(path.parent, keep=path, limit=limit)
    return np.load(path, mmap_mode="r")


def _cached(path: Path, vocab: int) -> np.memmap | None:
    """The ids cached at `path`, or None when there are none; a damaged entry is deleted (to be
    rebuilt) with a warning rather than trained on."""
    if not path.exists():
        return None
    try:
        ids = np.load(path, mmap_mode="r")
        problem = ("not a 1-D array of unsigned ids" if ids.ndim != 1 or ids.dtype.kind != "u"
                   else "empty" if ids.size == 0
                   else f"ids up to {int(ids.max())} for a vocabulary of {vocab}"
                   if int(ids.max()) >= vocab else None)
    except (OSError, ValueError, EOFError) as exc:
        problem = f"unreadable ({exc})"
    if problem is None:
        return ids
    warnings.warn(f"token cache entry {path} is damaged ({problem}); it is rebuilt from the corpus",
                  LmkitWarning, stacklevel=3)
    path.unlink(missing_ok=True)
    return None


def prune_token_cache(folder: Path, keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Delete the least recently used token caches in `folder` until they take at most `limit`
    bytes (default ``$LMKIT_TOKEN_CACHE_GB`` GiB, else 4 GiB); `keep` is never deleted. Returns
    what was deleted. A run that has one open keeps reading it (the OS frees it after)."""
    if limit is None:
        limit = _cache_limit()
    entries = sorted(((p.stat().st_mtime, p) for p in folder.glob("*.npy")), key=lambda e: e[0])
    total = sum(p.stat().st_size for _, p in entries)
    deleted = []
    for _, p in entries:
        if total <= limit:
            break
        if p == keep:
            continue
        total -= p.stat().st_size
        p.unlink(missing_ok=True)
        deleted.append(p)
    return deleted


def _cache_limit() -> int:
    """``$LMKIT_TOKEN_CACHE_GB`` (default 4) in bytes; anything but a number >= 0 is a `ConfigError`."""
    text = os.environ.get("LMKIT_TOKEN_CACHE_GB", "4")
    try:
        gib = float(text)
    except ValueError:
        gib = -1.0
    if not 0 <= gib < float("inf"):
        raise ConfigError(f"LMKIT_TOKEN_CACHE_GB must be a number of GiB (like 4 or 0.5), got "
                          f"{text!r}")
    return int(gib * 2**30)


def _write_ids(path: Path, corpus: Corpus, tokenizer: Any, chunk_bytes: int) -> None:
    vocab = int(tokenizer.vocab_size)
    dtype = np.dtype("<u2" if vocab <= 1 << 16 else "<u4")
    encode = getattr(tokenizer, "encode_array", None) or tokenizer.encode
    count = 0
    with paths.atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(b"\0" * _HEADER_BYTES)
        for text in corpus.chunks(chunk_bytes):
            ids = np.asarray(encode(text))
            if ids.size and (ids.min() < 0 or ids.max() >= vocab):
                raise DataError(
                    f"tokenizer {type(tokenizer).__name__} produced id {int(ids.max())} outside "
                    f"its vocabulary of {vocab} ids; this is a bug in the tokenizer"
                )
            f.write(ids.astype(dtype, copy=False).tobytes())
            count += ids.size
        if count == 0:
            raise DataError(f"corpus '{corpus.name}' produced no tokens (it holds only whitespace?)")
        f.seek(0)
        f.write(_npy_header(dtype, count))


def _npy_header(dtype: np.dtype, length: int) -> bytes:
    """A .npy (format 1.0) header of exactly `_HEADER_BYTES` bytes for a 1-D array."""
    meta = repr({"descr": dtype.str, "fortran_order": False, "shape": (length,)}).encode("latin1")
    magic = b"\x93NUMPY\x01\x00" + struct.pack("<H", _HEADER_BYTES - 10)
    return magic + meta.ljust(_HEADER_BYTES - len(magic) - 1) + b"\n"


def split(ids: np.ndarray, validation_split: float, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ids into (train, validation); the validation part is the tail of the corpus.

    Both parts must hold at least ``seq_len + 1`` tokens (one window and its target); with
    ``validation_split=0`` the validation part is empty. Raises `ConfigError` saying what to change.
    """
    n = len(ids)
    if n < seq_len + 1:
        raise ConfigError(
            f"seq_len={seq_len} is longer than the corpus: it has {n} tokens and one training "
            f"window needs seq_len + 1 = {seq_len + 1}. Use seq_len of at most {max(n - 1, 0)} "
            f"or a larger corpus."
        )
    n_val = int(round(n * validation_split))
    train, val = ids[: n - n_val], ids[n - n_val:]
    for part, size, fix in (
        ("training", len(train), "a smaller validation_split"),
        ("validation", len(val), "a larger validation_split"),
    ):
        if size < seq_len + 1 and not (part == "validation" and validation_split == 0):
            raise ConfigError(
                f"the {part} split has {size} tokens (corpus: {n} tokens, validation_split="
                f"{validation_split}), fewer than seq_len + 1 = {seq_len + 1} for one window. "
                f"Use a smaller seq_len, {fix}, or a larger corpus."
            )
    return train, val


#: a validation corpus with a larger share of unknown tokens measures little but the unknown id
UNKNOWN_WARNING = 0.2


def warn_unknown(ids: np.ndarray, unknown_id: int | None, what: str) -> float:
    """The share of `ids` that are `unknown_id`; above `UNKNOWN_WARNING`, a warning naming
    `what` (a validation corpus in another script or language than the training corpus).

    >>> warn_unknown(np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 0]), 0, "validation_data")
    0.1
    """
    if unknown_id is None or len(ids) == 0:
        return 0.0
    share = float(np.count_nonzero(np.asarray(ids) == unknown_id)) / len(ids)
    if share > UNKNOWN_WARNING:
        warnings.warn(f"{share:.0%} of the tokens of {what} are unknown to the tokenizer (fitted "
                      f"on the training corpus): its validation scores mostly measure how well "
                      f"the model predicts <unk>. Is it the right file, in the right encoding?",
                      LmkitWarning, stacklevel=2)
    return share


class WindowSampler:
    """Random contiguous windows: batch ``step`` is a pure function of ``(seed, step)``.

    ``x = ids[s : s + seq_len]`` and ``y = ids[s + 1 : s + seq_len + 1]`` for random starts `s`
    (uniform, with replacement), so a resumed run sees exactly the batches it would have seen.
    """

    def __init__(self, ids: np.ndarray, seq_len: int, batch_size: int, seed: int = 0) -> None:
        if seq_len < 1 or batch_size < 1:
            raise ConfigError(
                f"seq_len and batch_size must be positive, got seq_len={seq_len}, batch_size={batch_size}"
            )
        if len(ids) < seq_len + 1:
            raise ConfigError(
                f"seq_len={seq_len} is longer than the data: {len(ids)} tokens, and a window "
                f"needs seq_len + 1 = {seq_len + 1}. Use a smaller seq_len or a larger corpus."
            )
        self.ids, self.seq_len, self.batch_size, self.seed = ids, seq_len, batch_size, seed
        self._offsets = np.arange(seq_len + 1)
        self._file = _file_region(ids)

    def starts(self, step: int) -> np.ndarray:
        """The window starts of batch `step` (shape ``(batch_size,)``)."""
        rng = np.random.default_rng([self.seed, step])
        return rng.integers(0, len(self.ids) - self.seq_len, size=self.batch_size)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)``, int32 arrays of shape ``(batch_size, seq_len)``."""
        xs, ys = self.batches(step, 1)
        return xs[0], ys[0]

    def batches(self, start_step: int, count: int,
                rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Batches ``start_step .. start_step + count - 1`` stacked: shape ``(count, B, T)``.

        `rows` (indices into each batch) reads only those rows, e.g. the part of the batch one
        process of a distributed run feeds: ``(count, len(rows), T)``.
        """
        starts = np.stack([self.starts(s) for s in range(start_step, start_step + count)])
        if rows is not None:
            starts = starts[:, rows]
        if self._file is None:
            windows = np.asarray(self.ids[starts[..., None] + self._offsets], dtype=np.int32)
        else:
            windows = self._read(starts)
        return windows[..., :-1], windows[..., 1:]

    def _read(self, starts: np.ndarray) -> np.ndarray:
        # Reading windows with pread instead of indexing the memory map: random page faults on a
        # mapping pull the kernel's read-ahead into this process's resident set, which grows
        # towards the size of the token file (measured: +290 MB per 100 steps on a 1 GB corpus).
        path, base = self._file
        item = self.ids.dtype.itemsize
        size = (self.seq_len + 1) * item
        out = np.empty((*starts.shape, self.seq_len + 1), dtype=np.int32)
        fd = os.open(path, os.O_RDONLY)
        try:
            for index, start in np.ndenumerate(starts):
                raw = os.pread(fd, size, base + int(start) * item)
                out[index] = np.frombuffer(raw, dtype=self.ids.dtype)
        finally:
            os.close(fd)
        return out


def _file_region(ids: np.ndarray) -> tuple[str, int] | None:
    """``(path, byte offset of ids[0])`` when `ids` is a contiguous view of a memory-mapped file."""
    root = ids
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not (isinstance(root, np.memmap) and root.filename and ids.flags.c_contiguous):
        return None
    return root.filename, root.offset + (ids.ctypes.data - root.ctypes.data)


def sequential_batches(ids: np.ndarray, seq_len: int, batch_size: int,
                       limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Non-overlapping windows in corpus order, for evaluation and full passes.

    Window `i` is ``x = ids[i*T : (i+1)*T]``, ``y`` shifted by one. The last batch may be
    smaller than `batch_size` (it is included, so every full window is seen); the final
    ``< seq_len`` tokens that do not fill a window are left out. `limit` caps the number of batches.
    """
    n = (len(ids) - 1) // seq_len
    x_all = ids[: n * seq_len].reshape(n, seq_len)
    y_all = ids[1: n * seq_len + 1].reshape(n, seq_len)
    for b, first in enumerate(range(0, n, batch_size)):
        if limit is not None and b >= limit:
            return
        yield (np.asarray(x_all[first: first + batch_size], dtype=np.int32),
               np.asarray(y_all[first: first + batch_size], dtype=np.int32))
