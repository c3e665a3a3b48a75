"""The KV cache of a decoder's attention blocks (`gpt`, `gpt2`, `llama`): its arrays, writing
new entries in place, and `CachedDecoder`, the decoding state built on it.

The state is ``{"k": (layer arrays), "v": (layer arrays), "pos": int32}``, each array
``(B, H, T_k, d)`` (`write_cache` says why that layout). In a beam search it also holds
``"beams"`` (`CachedDecoder.split_beams`): which beam of its row wrote each position a beam
reads, so that choosing parents moves that small table instead of the whole cache. A model mixes
in `CachedDecoder` and provides ``_forward(tokens, pos, cache, training, segments, beams) ->
(hidden states, written cache)`` and `kv_heads_dim` (the heads and width its cache keeps).
"""

from __future__ import annotations

import math
from typing import Any

from keras import ops

from lmkit.models.base import MASKED

__all__ = ["CachedDecoder", "beam_attention", "kv_cache", "kv_after", "write_cache"]


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


def beam_attention(q: Any, k: Any, v: Any, allowed: Any, beams: Any) -> Any:
    """Attention of each beam over the cache entries of its own history: `q` ``(B, T, KV, G, d)``
    (query heads grouped by the key/value head they read), `k`, `v` ``(B, KV, T_k, d)``,
    `allowed` ``(T, T_k)``, `beams` ``(N, K, T_k)`` (B = N rows x K beams): the beam of its row
    whose cache holds each position of a beam's history. Returns ``(B, T, KV, G, d)``.

    A beam reads the keys of all K beams of its row and masks every one its history does not
    name: K times the attention's small arithmetic, instead of moving every beam's cache to its
    new place whenever beams change parents (3–6 ms of a 23–28 ms 4-beam step in `lmkit bench
    decode_hf`, docs/performance.md).
    """
    n, m, width = ops.shape(beams)                                     # N prompts, M = K beams
    rows, time, kvh, group, d = ops.shape(q)
    q = ops.reshape(q, (n, m, time, kvh, group, d))
    k, v = (ops.reshape(t, (n, m, kvh, width, d)) for t in (k, v))
    scores = ops.einsum("nbqkgd,njksd->njkbgqs", q, k) / math.sqrt(d)  # (N, K', KV, K, G, T, T_k)
    writer = ops.reshape(ops.arange(m, dtype=beams.dtype), (1, m, 1, 1))
    mine = ops.expand_dims(beams, 1) == writer                         # (N, K', K, T_k)
    mask = ops.logical_and(ops.reshape(mine, (n, m, 1, m, 1, 1, width)), allowed)
    scores = ops.where(mask, ops.cast(scores, "float32"), MASKED)
    # the softmax over (K', T_k), a beam's whole history
    top = ops.max(scores, axis=(1, 6), keepdims=True)
    weights = ops.exp(scores - top)
    att = ops.cast(weights / ops.sum(weights, axis=(1, 6), keepdims=True), q.dtype)
    # beam j's values weighted where they lie (j a batch axis: no transpose of the cache), summed
    y = ops.sum(ops.einsum("njkbgqs,njksd->njkbgqd", att, v), axis=1)  # (N, KV, K, G, T, d)
    return ops.reshape(ops.transpose(y, (0, 2, 4, 1, 3, 5)), (rows, time, kvh, group, d))


def _own_beams(prompts: int, beams: int, width: int) -> Any:
    """A `beams` table ``(prompts, beams, width)`` in which every beam names itself."""
    own = ops.reshape(ops.arange(beams, dtype="int32"), (1, beams, 1))
    return ops.broadcast_to(own, (prompts, beams, width))


class CachedDecoder:
    """Decoding through a KV cache, for a `LanguageModel` whose `_forward` reads and writes one
    (mixed in before `LanguageModel`): `init_state`, `rewind_state` (capability `REWIND`),
    `split_beams` and `choose_beams` (a beam search), `features` and `_decode`."""

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

    def split_beams(self, state: dict[str, Any], beams: int) -> dict[str, Any]:
        """`state`, whose rows are each prompt's `beams` beams side by side (row ``p * beams +
        b``), with the table ``"beams"`` ``(prompts, beams, T_k)``: each beam reads its own cache."""
        rows, _, width, _ = ops.shape(state["k"][0])
        return {**state, "beams": _own_beams(rows // beams, beams, width)}

    def choose_beams(self, state: dict[str, Any], parents: Any) -> dict[str, Any]:
        """`state` after each beam took the history of its parent, `parents` ``(prompts, beams)``
        (a beam of the same prompt): only the table ``"beams"`` moves, not the cache."""
        return {**state, "beams": ops.take_along_axis(state["beams"], parents[:, :, None], axis=1)}

    def features(self, tokens: Any, training: bool = False, segments: Any = None) -> Any:
        """Hidden states ``(B, T, embed_dim)``; with `segments` ``(B, T)`` (packed rows,
        `lmkit.data.packing`) each segment is read as a sequence of its own."""
        return self._forward(tokens, 0, None, training, segments)[0]  # type: ignore[attr-defined]

    def _decode(self, tokens: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        beams = state.get("beams")
        if beams is not None:  # the positions fed now are each beam's own
            n, k = ops.shape(beams)[:2]
            beams = ops.slice_update(beams, (0, 0, state["pos"]),
                                     _own_beams(n, k, ops.shape(tokens)[1]))
        x, cache = self._forward(  # type: ignore[attr-defined]
            tokens, state["pos"], list(zip(state["k"], state["v"])), False, beams=beams)
        after = kv_after(state, cache, ops.shape(tokens)[1])
        if beams is not None:
            after["beams"] = beams
        return self._logits(x), after  # type: ignore[attr-defined]
