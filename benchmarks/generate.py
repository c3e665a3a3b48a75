"""`generate`: tokens/s generating 256 tokens from the `gpt_char` model, KV cache vs recompute.

Both go through `lmkit.generation.Decoder.sample`, what `generate` runs, on the same weights,
greedy: with ``use_cache=True`` each new token is fed alone against the cached keys and values
(the cache restarts from the last half window when the 64-position context is full); with
``use_cache=False`` every token recomputes the whole 64-token window. On JAX both run as
compiled on-device loops of up to `CHUNK` tokens per dispatch.

For reference the same two decoders are also timed one host round trip per token
(`Decoder.feed` + argmax in NumPy), the way lmkit generated before the on-device loop.
Each decoder first generates 256 tokens untimed (compiling every shape it meets), then the next
256 are timed; all four are interleaved over rounds. The first, compiling pass is reported too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ._common import Result, interleave, ratio
from .gpt_char import CONFIG, data

TOKENS = 256


def _on_device(decoder: Any, n: int) -> None:
    from lmkit.generation import Sampling

    for _ in decoder.sample(n, Sampling(temperature=0)):
        pass


def _per_token(decoder: Any, n: int) -> None:
    logits = np.asarray(decoder.logits).reshape(-1)
    for _ in range(n):
        logits = decoder.feed([int(np.argmax(logits))])


def run(quick: bool = False) -> Result:
    from lmkit.build import build_model
    from lmkit.generation import Decoder

    tokenizer, _, _ = data(CONFIG)
    model = build_model(CONFIG, tokenizer.vocab_size)
    n = 64 if quick else TOKENS
    prompt = tokenizer.encode("ROMEO:")
    first_pass: dict[str, float] = {}
    candidates: dict[str, Callable[[], list[float]]] = {}
    for loop_name, loop in (("", _on_device), ("per_token_", _per_token)):
        for cache_name, use_cache in (("kv_cache", True), ("recompute", False)):
            name = loop_name + cache_name
            t0 = time.perf_counter()
            decoder = Decoder(model, use_cache=use_cache)
            decoder.feed(prompt)
            loop(decoder, n)
            first_pass[name] = round(time.perf_counter() - t0, 3)

            def go(decoder: Any = decoder, loop: Callable[[Any, int], None] = loop) -> list[float]:
                t0 = time.perf_counter()
                loop(decoder, n)
                return [(time.perf_counter() - t0) / n]

            candidates[name] = go
    times = interleave(candidates, 2 if quick else 7)
    tps = {k: round(1 / t["median_s"], 1) for k, t in times.items()}
    figures = {"new_tokens": n, "context": CONFIG.seq_len, "seconds_per_token": times,
               "tokens_per_second": tps, "first_pass_seconds_with_compile": first_pass}
    rows = [["decoding", "tokens/s", "ms/token", "first pass s"]]
    rows += [[k, f"{v:.0f}", f"{1000 / v:.3f}", f"{first_pass[k]:.2f}"] for k, v in tps.items()]
    ratios = {"kv_cache_over_recompute": ratio(tps["kv_cache"], tps["recompute"]),
              "per_token_kv_cache_over_recompute": ratio(tps["per_token_kv_cache"],
                                                         tps["per_token_recompute"]),
              "on_device_over_per_token_kv_cache": ratio(tps["kv_cache"], tps["per_token_kv_cache"])}
    return Result(figures, ratios, {"kv_cache_over_recompute": (">=", 5.0)}, rows)
