"""The KV cache of a decoder's attention blocks (`gpt`, `gpt2`, `llama`): its arrays, writing
new entries in place, and `CachedDecoder`, the decoding state built on it.

The state is ``{"k": (layer arrays), "v": (layer arrays), "pos": int32}``, each array
``(B, H, T_k, d)`` (`write_cache` says why that layout). A model mixes in `CachedDecoder` and
provides ``_forward(tokens, pos, cache, training, segments) -> (hidden states, written cache)``
and `kv_heads_dim` (the heads and width its cache keeps).
"""

from __future__ import annotations

from typing import Any

from keras import ops

__all__ = ["CachedDecoder", "kv_cache", "kv_after", "write_cache"]


def kv_cache(layers: int, shape: tuple[int, ...], dtype: str) -> dict[str, Any]:
    """An empty decoding state: ``k`` and ``v``, one zero array of `shape` per layer, and ``pos``."""
    def zeros() -> tuple[Any, ...]:
        return tuple(ops.zeros(shape, dtype=dtype) for _ in range(layers))

    return {"k": zeros(), "v": zeros(), "pos": ops.zeros((), dtype="int32")}


def kv_after(state: dict[str, Any], cache: list[tuple[Any, Any]], fed: Any) -> dict[str, Any]:
    """The decoding state after `fed` tokens: each layer's cache (keys, values) as written."""
    return {"k": tuple(k for k, _ in cache), "v": tuple(v for _, v in cache),
            "pos": ops.cast(state["pos"] + fed, "int32")}


def write_cache(cache: tuple[Any, Any], pos: Any, k: Any, v: Any) -> tuple[Any, Any]:
    """One layer's KV cache ``(keys, values)``, each ``(B, H, T_k, d)``, with `k` and `v`
    ``(B, H, T, d)`` written at `pos`, in place in a compiled decoding loop.

    Why this layout: heads before positions let attention multiply each (row, head)'s
    ``(T_k, d)`` block as it lies (with positions first XLA transposed the cache for both
    products at every token), and one array per layer lets it read the block where it is (from
    a stacked ``(layers, ...)`` cache XLA copied each layer's part out at every token)."""
    return tuple(ops.slice_update(c, (0, 0, pos, 0), ops.cast(t, c.dtype)) for c, t in zip(cache, (k, v)))


class CachedDecoder:
    """Decoding through a KV cache, for a `LanguageModel` whose `_forward` reads and writes one
    (mixed in before `LanguageModel`): `init_state`, `rewind_state` (capability `REWIND`),
    `features` and `_decode`."""

    seq_len: int
    num_layers: int

    @property
    def kv_heads_dim(self) -> tuple[int, int]:
        """The cache's heads and their width: ``(heads, head_dim)``."""
        raise NotImplementedError

    def init_state(self, batch_size: int, length: int | None = None) -> dict[str, Any]:
        """KV cache: ``k``, ``v``, one array per layer of shape (B, heads, `length` (default
        seq_len), head_dim) (`write_cache` says why), and ``pos``."""
        heads, width = self.kv_heads_dim
        shape = (batch_size, heads, length or self.seq_len, width)
        return kv_cache(self.num_layers, shape, self.compute_dtype)  # type: ignore[attr-defined]

    def rewind_state(self, state: dict[str, Any], position: Any) -> dict[str, Any]:
        """`state` set to write its next token at `position` (capability `REWIND`): the cache's
        entries from there on are overwritten before any later position reads them."""
        return {**state, "pos": ops.cast(position, "int32")}

    def features(self, tokens: Any, training: bool = False, segments: Any = None) -> Any:
        """Hidden states ``(B, T, embed_dim)``; with `segments` ``(B, T)`` (packed rows,
        `lmkit.data.packing`) each segment is read as a sequence of its own."""
        return self._forward(tokens, 0, None, training, segments)[0]  # type: ignore[attr-defined]

    def _decode(self, tokens: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        x, cache = self._forward(  # type: ignore[attr-defined]
            tokens, state["pos"], list(zip(state["k"], state["v"])), False)
        return self._logits(x), kv_after(state, cache, ops.shape(tokens)[1])  # type: ignore[attr-defined]
