"""`from_pretrained(path_or_name) -> Pretrained`: a Hugging Face checkpoint as an lmkit model.

>>> mini = lmkit.from_pretrained("minilm-l6")                      # doctest: +SKIP
>>> mini.embed(["A cat sits.", "A dog runs."]).shape               # doctest: +SKIP
(2, 384)
>>> gpt = lmkit.from_pretrained("checkpoints/gpt2")                # doctest: +SKIP
>>> gpt.generate("Once upon a time", max_new_tokens=20, temperature=0)  # doctest: +SKIP

A name (no path separator, not an existing folder) is looked up in the `pretrained` registry,
which plugin packages fill through the ``lmkit.pretrained`` entry-point group; the entry is a
callable returning the checkpoint's folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmkit import forward
from lmkit.errors import ConfigError, RunError
from lmkit.forward import POOLINGS
from lmkit.pretrained.folder import (CONFIG_FILE, architecture_for, load_weights, read_config,
                                     read_tokenizer, stored_parameters)
from lmkit.pretrained.hfconfig import check_size, check_values
from lmkit.registry import architectures, pretrained

__all__ = ["Pretrained", "from_pretrained", "checkpoint_folder", "POOLINGS"]


def checkpoint_folder(path_or_name: str | os.PathLike[str]) -> Path:
    """The folder of a checkpoint given as a path or a registered name (``minilm-l6``)."""
    text = os.fspath(path_or_name)
    path = Path(text).expanduser()
    if path.exists() or os.sep in text or "/" in text or text.startswith("."):
        return path
    return Path(pretrained.get(text)())  # unknown names: RegistryError with did-you-mean


@dataclass
class Pretrained:
    """A pretrained checkpoint: its lmkit `model`, `tokenizer` and Hugging Face `config`.

    Like a `Run`, it generates (decoders) and serves as a backbone for `lmkit.evaluate`; it
    also computes features and sentence embeddings (encoders and decoders).
    """

    dir: Path
    name: str
    arch: str
    config: dict[str, Any]
    model: Any
    tokenizer: Any

    @property
    def is_encoder(self) -> bool:
        """Whether the architecture is an encoder (no next-token logits, no generation)."""
        from lmkit.models.bert import ENCODER

        return architectures.entry(self.arch).has(ENCODER)

    def _rows(self, texts: str | list[str], max_length: int | None,
              ) -> tuple[list[list[int]], np.ndarray, int]:
        """The token ids of each text with the checkpoint's special tokens, truncated to
        `max_length` (default: the model's context), their lengths, and that limit."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ConfigError("texts must hold at least one string")
        limit = max_length or self.model.max_context
        rows = self.tokenizer.encode_inputs(texts, max_length=limit)
        return rows, np.asarray([len(r) for r in rows], dtype=np.int32), limit

    def encode(self, texts: str | list[str], max_length: int | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens (B, T) int32, lengths (B,))``: `texts` with the checkpoint's special tokens,
        truncated to `max_length` (default: the model's context) and right-padded to the width
        `lmkit.forward` would give them in one batch."""
        rows, lengths, limit = self._rows(texts, max_length)
        return forward.pad_rows(rows, forward.padded_width(lengths.max(), limit), self._pad_id), lengths

    def features(self, texts: str | list[str], batch_size: int = 32,
                 max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(hidden (B, T, H) float32, mask (B, T) bool)``: the last hidden states, padded to
        the longest text; `mask` is true at real tokens.

        >>> hidden, mask = mini.features(["Hello world."])      # doctest: +SKIP
        """
        rows, lengths, limit = self._rows(texts, max_length)
        hidden = forward.features(self.model, rows, batch_size, limit, self._pad_id)
        return hidden, np.arange(hidden.shape[1])[None, :] < lengths[:, None]

    def embed(self, texts: str | list[str], pooling: str = "mean", batch_size: int = 32,
              max_length: int | None = None, normalize: bool = False,
              packing: bool = True) -> np.ndarray:
        """One vector per text, ``(B, H)``: the mean of the hidden states over real tokens
        (`mean`) or the first token's state (`cls`); with `normalize`, each of length 1.
        With `packing` (where the architecture has the capability ``"packing"``) short texts
        share rows (`lmkit.data.packing`): the same vectors, fewer positions computed.

        ``embed(texts, normalize=True)`` is what sentence-transformers' pipeline for
        all-MiniLM-L6-v2 gives (mean pooling, then its ``Normalize`` module); a dot product of
        normalized vectors is their cosine similarity.

        >>> mini.embed(["A cat sits.", "A dog runs."], normalize=True)   # doctest: +SKIP
        """
        rows, _, limit = self._rows(texts, max_length)
        from lmkit.models.base import PACKING

        packing = packing and architectures.entry(self.arch).has(PACKING)
        vectors = forward.pooled(self.model, rows, pooling, batch_size, limit, self._pad_id, packing)
        if normalize:  # torch.nn.functional.normalize's floor, so a zero vector stays zero
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
        return vectors

    def logits(self, texts: str | list[str], batch_size: int = 32,
               max_length: int | None = None) -> np.ndarray:
        """Next-token logits ``(B, T, V)`` float32 of a decoder, padded to the longest text
        (row ``i`` is meaningful for its first ``len(tokens)`` positions)."""
        self._need_decoder("logits")
        rows, _, limit = self._rows(texts, max_length)
        return forward.logits(self.model, rows, batch_size, limit, self._pad_id)

    def perplexity(self, texts: str | list[str], unit: str = "token", batch_size: int = 16) -> float:
        """Perplexity of a decoder on `texts`, per ``token``, ``word`` or ``byte``
        (`lmkit.forward.perplexity`: windows of the model's context).

        >>> gpt.perplexity(["The cat sat on the mat."], unit="byte")   # doctest: +SKIP
        """
        self._need_decoder("perplexity")
        return forward.perplexity(self.model, self.tokenizer, texts, unit, batch_size=batch_size)

    @property
    def _pad_id(self) -> int:
        return int(getattr(self.model, "pad_token_id", 0))

    def generate(self, prompt: str, max_new_tokens: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop: str | None = None, use_cache: bool = True,
                 include_prompt: bool = False) -> str:
        """Continue `prompt` (decoders); the options of `lmkit.generation.generate`."""
        from lmkit.generation import generate

        self._need_decoder("generate")
        return generate(self.model, self.tokenizer, prompt, max_new_tokens, temperature, top_k,
                        top_p, seed, stop, use_cache, include_prompt)

    def _need_decoder(self, what: str) -> None:
        if self.is_encoder:
            raise ConfigError(f"{self.name} is an encoder ({self.arch}): it has no next-token "
                              f"logits, so `{what}` is for decoders; use features() or embed()")

    def __repr__(self) -> str:
        n = int(sum(np.prod(v.shape) for v in self.model.weights))
        return f"Pretrained(name='{self.name}', arch='{self.arch}', parameters={n:,})"


def _needed(config: dict[str, Any], key: str, path: Path, arch: str) -> Any:
    """``config[key]``, or a `RunError` saying that the architecture needs it."""
    if key not in config:
        raise RunError(f"{path}: has no {key!r}, which a {arch} checkpoint needs (the file is "
                       f"damaged or of another kind)")
    return config[key]


def from_pretrained(path_or_name: str | os.PathLike[str], precision: str = "float32") -> Pretrained:
    """Load a Hugging Face checkpoint folder (or a registered name) offline, without torch.

    The folder holds ``config.json`` (its ``model_type`` picks the architecture),
    ``model.safetensors`` (or shards with ``model.safetensors.index.json``) and
    ``tokenizer.json``. Every problem is a `RunError` naming the file or weight.

    `precision` ``"mixed_bfloat16"`` keeps the weights float32 and computes in bfloat16, each
    matmul summing in float32: faster on CPUs with bfloat16 units and on GPUs; embeddings
    then agree with float32's to a cosine of about 0.9999 (docs/performance.md).
    """
    import keras

    from lmkit.build import check_precision, create_weights, dtype_policy, memory_limit

    check_precision(precision)
    if keras.backend.backend() == "jax":
        from lmkit.paths import enable_compilation_cache

        enable_compilation_cache()  # building the model runs programs too: cached, counted
    folder = checkpoint_folder(path_or_name)
    config = read_config(folder)
    entry = architecture_for(config, folder)
    path = folder / CONFIG_FILE
    check_values(config, path)
    check_size(config, path, stored_parameters(folder), memory_limit())
    tokenizer = read_tokenizer(folder, _needed(config, "vocab_size", path, entry.name))
    with dtype_policy(precision):  # float32 weights either way: the checkpoints' own dtype
        try:
            model = entry.obj.from_hf_config(config, tokenizer)
        except KeyError as exc:
            _needed(config, exc.args[0], path, entry.name)
            raise
        create_weights(model, drawn=False)
    load_weights(model, folder)  # every weight: checked there
    name = os.fspath(path_or_name) if folder != Path(os.fspath(path_or_name)) else folder.name
    return Pretrained(folder, name, entry.name, config, model, tokenizer)
