"""`generate`: tokens/s generating 256 tokens from the `gpt_char` model, KV cache vs recompute.

Both use `lmkit.generation.Decoder` (what `generate` runs) on the same weights, greedy: with
``use_cache=True`` each new token is fed alone against the cached keys and values (the cache
restarts from the last half window when the 64-position context is full); with
``use_cache=False`` every token recomputes the whole 64-token window. Each decoder first
generates 256 tokens untimed (compiling every shape it meets), then the next 256 are timed;
the two are interleaved over rounds. The first, compiling pass is reported too.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._common import Result, interleave, ratio
from .gpt_char import CONFIG, data

TOKENS = 256


def _continue(decoder: Any, logits: np.ndarray, n: int) -> np.ndarray:
    for _ in range(n):
        logits = decoder.feed([int(np.argmax(logits))])
    return logits


def run(quick: bool = False) -> Result:
    from lmkit.build import build_model
    from lmkit.generation import Decoder

    tokenizer, _, _ = data(CONFIG)
    model = build_model(CONFIG, tokenizer.vocab_size)
    n = 64 if quick else TOKENS
    prompt = tokenizer.encode("ROMEO:")
    first_pass: dict[str, float] = {}
    candidates = {}
    for name, use_cache in (("kv_cache", True), ("recompute", False)):
        t0 = time.perf_counter()
        decoder = Decoder(model, use_cache=use_cache)
        logits = _continue(decoder, decoder.feed(prompt), n)
        first_pass[name] = round(time.perf_counter() - t0, 3)
        state = {"decoder": decoder, "logits": logits}

        def go(state: dict[str, Any] = state) -> list[float]:
            t0 = time.perf_counter()
            state["logits"] = _continue(state["decoder"], state["logits"], n)
            return [(time.perf_counter() - t0) / n]

        candidates[name] = go
    times = interleave(candidates, 2 if quick else 5)
    tps = {k: round(1 / t["median_s"], 1) for k, t in times.items()}
    figures = {"new_tokens": n, "context": CONFIG.seq_len, "seconds_per_token": times,
               "tokens_per_second": tps, "first_pass_seconds_with_compile": first_pass}
    rows = [["decoding", "tokens/s", "ms/token", "first pass s"]]
    rows += [[k, f"{v:.0f}", f"{1000 / v:.2f}", f"{first_pass[k]:.2f}"] for k, v in tps.items()]
    return Result(figures, {"kv_cache_over_recompute": ratio(tps["kv_cache"], tps["recompute"])},
                  {"kv_cache_over_recompute": (">=", 5.0)}, rows)
