"""`decode_hf`: tokens/s of batched greedy and 4-beam decoding, lmkit against `transformers`' `generate`.

The reference is what a user would run: `GPT2LMHeadModel.generate` (PyTorch, its own KV cache,
``do_sample=False``, ``num_beams=1`` and ``4``), on a small random GPT-2 that `transformers` itself
makes and saves as a folder (`LAYOUT`: 6 layers x 384, 6 heads, GPT-2's vocabulary of 50,257 and
its 1,024 positions; ``initializer_range`` 0.1 so the next-token choices are not near ties, where
float rounding would decide). lmkit reads the same folder (`lmkit.from_pretrained`) and decodes with
`lmkit.decoding.search`: the whole search of a batch is one compiled loop on the KV cache. Both
continue the same `PROMPTS` prompts of `PROMPT_TOKENS` random token ids by `NEW_TOKENS` tokens (no
end-of-sequence id: every output has the same length), all prompts in one batch.

Each contender first decodes once untimed (lmkit compiles; that pass is reported), then one
whole batch per round, interleaved; PyTorch with all threads and with one, the faster counts.
Tokens/s counts the new tokens of the outputs (prompts x new tokens), not the beams. The outputs
of both are compared: equal is part of the result.

`roofline` (also ``python -m benchmarks.decode_hf``) is the floor the hardware sets: per decode
step it counts the bytes every contender must read (the output matrix, the blocks' weights, the
KV cache) and the FLOPs, and divides them by this machine's memory bandwidth and matmul
throughput, measured by two tiny JAX programs. The benchmark reports it beside the timings.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    Result,
    best_of,
    best_reference,
    interleave,
    ratio,
    timed_once,
    torch_threads,
)

LAYOUT = {"n_layer": 6, "n_embd": 384, "n_head": 6, "vocab_size": 50257, "n_positions": 1024}
QUICK_LAYOUT = {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 2048, "n_positions": 128}
PROMPTS, PROMPT_TOKENS, NEW_TOKENS = 8, 16, 32
BEAMS = (1, 4)
#: interleaved rounds of each contender (the median counts): this 2-core machine's pace drifts
#: by a third from minute to minute, for every contender
ROUNDS = 5
FLOAT = 4  # bytes per float32


def gpt2_folder(folder: Path, layout: dict[str, int]) -> Path:
    """A random `GPT2LMHeadModel` of `layout` saved by `transformers` with a byte-level BPE
    tokenizer.json (lmkit reads both; the prompts are token ids, so its size does not matter)."""
    import torch
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(["a small random gpt-2 for timing decoders"] * 4, vocab_size=300,
                            show_progress=False)
    tok.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(**layout, initializer_range=0.1, bos_token_id=None,
                                     eos_token_id=None, pad_token_id=0)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def _hf_decoder(model: Any, prompts: np.ndarray, beams: int, new: int) -> Callable[[], list[list[int]]]:
    import torch

    ids = torch.tensor(prompts, dtype=torch.long)
    mask = torch.ones_like(ids)

    def decode() -> list[list[int]]:
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, do_sample=False, num_beams=beams,
                                 max_new_tokens=new, min_new_tokens=0, pad_token_id=0)
        return out[:, ids.shape[1]:].tolist()

    return decode


def _lmkit_decoder(model: Any, prompts: np.ndarray, beams: int, new: int) -> Callable[[], list[list[int]]]:
    from lmkit.decoding import Search, search

    settings = Search(num_beams=beams, max_new_tokens=new)
    rows = prompts.tolist()
    return lambda: search(model, rows, settings, batch_size=len(rows))


def machine_limits() -> dict[str, float]:
    """This machine's read bandwidth (GB/s: a sum over 256 MB, which no cache holds) and float32
    matmul throughput (GFLOP/s: a 1,024-square product), each the best of 5, in JAX."""
    import jax
    import jax.numpy as jnp

    big = jnp.ones((64 * 2 ** 20,), jnp.float32)
    a = jnp.ones((1024, 1024), jnp.float32)
    total, dot = jax.jit(jnp.sum), jax.jit(jnp.dot)
    read_s = best_of(lambda: total(big))
    dot_s = best_of(lambda: dot(a, a))
    return {"read_gb_per_s": round(big.size * FLOAT / read_s / 1e9, 2),
            "matmul_gflop_per_s": round(2 * 1024 ** 3 / dot_s / 1e9, 1)}


def step_cost(layout: dict[str, int], rows: int, cached: int) -> dict[str, float]:
    """What one decode step of `rows` rows (prompts x beams) must read and compute, a KV cache
    of `cached` positions: the output matrix (V x D), the blocks' weights (12 D^2 per layer:
    q|k|v 3, projection 1, MLP 4 + 4) and the cache's keys and values; FLOPs 2 per weight per
    row, plus attention's 2 x 2 x cached x D per layer and row."""
    d, layers, vocab = layout["n_embd"], layout["n_layer"], layout["vocab_size"]
    head, blocks = vocab * d, layers * 12 * d * d
    cache = 2 * layers * rows * cached * d
    return {"head_mb": round(head * FLOAT / 1e6, 1), "blocks_mb": round(blocks * FLOAT / 1e6, 1),
            "cache_mb": round(cache * FLOAT / 1e6, 1),
            "bytes": (head + blocks + cache) * FLOAT,
            "flops": 2 * rows * (head + blocks) + 2 * cache}


def head_matmul_ms(layout: dict[str, int], rows: int) -> float:
    """The output matrix alone, as one step computes it: ``(rows, D) @ (V, D)^T`` in JAX, ms."""
    import jax
    import jax.numpy as jnp

    h = jnp.ones((rows, layout["n_embd"]), jnp.float32)
    table = jnp.ones((layout["vocab_size"], layout["n_embd"]), jnp.float32)
    head = jax.jit(lambda h, table: h @ table.T)
    return round(1e3 * best_of(lambda: head(h, table)), 2)


def roofline(layout: dict[str, int] = LAYOUT, prompts: int = PROMPTS,
             new: int = NEW_TOKENS, limits: dict[str, float] | None = None) -> dict[str, Any]:
    """Per decode step and beam count: bytes, FLOPs, the floor in ms (the slower of reading
    the bytes at the measured bandwidth and computing the FLOPs at the measured throughput), and
    the output matrix's product alone, timed (`head_matmul_ms`).

    >>> roofline()["beams_4"]["floor_ms"]                        # doctest: +SKIP
    19.6
    """
    limits = limits or machine_limits()
    out: dict[str, Any] = {"machine": limits}
    for beams in BEAMS:
        cost = step_cost(layout, prompts * beams, PROMPT_TOKENS + new)
        read_ms = cost["bytes"] / limits["read_gb_per_s"] / 1e6
        compute_ms = cost["flops"] / limits["matmul_gflop_per_s"] / 1e6
        out["greedy" if beams == 1 else f"beams_{beams}"] = {
            **cost, "read_ms": round(read_ms, 2), "compute_ms": round(compute_ms, 2),
            "floor_ms": round(max(read_ms, compute_ms), 2),
            "head_matmul_ms": head_matmul_ms(layout, prompts * beams),
            "floor_s_per_batch": new * max(read_ms, compute_ms) / 1e3}
    return out


def run(quick: bool = False) -> Result:
    import torch
    import transformers

    import lmkit

    layout = QUICK_LAYOUT if quick else LAYOUT
    count, new = (2, 8) if quick else (PROMPTS, NEW_TOKENS)
    prompts = np.random.default_rng(0).integers(1, layout["vocab_size"], (count, PROMPT_TOKENS))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the timing tokenizer is smaller than the vocabulary
        folder = gpt2_folder(Path(tmp), layout)
        reference = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
        model = lmkit.from_pretrained(folder).model
    cores = torch.get_num_threads()
    figures: dict[str, Any] = {"layout": layout, "prompts": count, "prompt_tokens": PROMPT_TOKENS,
                               "new_tokens": new, "torch_threads": cores,
                               "roofline": roofline(layout, count, new)}
    rows = [["decoding", "contender", "tokens/s", "s per batch", "first pass s"]]
    ratios: dict[str, float] = {}
    notes: list[str] = []
    for beams in BEAMS:
        label = "greedy" if beams == 1 else f"beams_{beams}"
        decoders = {"lmkit": _lmkit_decoder(model, prompts, beams, new),
                    "torch": _hf_decoder(reference, prompts, beams, new)}
        outputs, first = {}, {}
        for name, decode in decoders.items():
            t0 = time.perf_counter()
            outputs[name] = decode()
            first[name] = round(time.perf_counter() - t0, 2)
        equal = [a == b for a, b in zip(outputs["lmkit"], outputs["torch"])]
        times = interleave({"lmkit": timed_once(decoders["lmkit"]),
                            f"torch_{cores}_threads": torch_threads(timed_once(decoders["torch"]), cores),
                            "torch_1_thread": torch_threads(timed_once(decoders["torch"]), 1)},
                           1 if quick else ROUNDS)
        ref = best_reference(times)
        tps = {name: round(count * new / t["median_s"], 1) for name, t in times.items()}
        figures[label] = {"tokens_per_s": tps, "seconds": times, "first_pass_s": first,
                          "outputs_equal": sum(equal), "outputs": len(equal), "reference": ref}
        ratios[f"{label}_speedup_vs_generate"] = ratio(tps["lmkit"], tps[ref])
        ratios[f"{label}_outputs_equal_fraction"] = round(sum(equal) / len(equal), 3)
        for name in times:
            rows.append([label, name, f"{tps[name]:.1f}", f"{times[name]['median_s']:.3f}",
                         f"{first['lmkit' if name == 'lmkit' else 'torch']:.2f}"])
        floor = figures["roofline"][label]
        ratios[f"{label}_floor_speedup_vs_generate"] = ratio(times[ref]["median_s"], floor["floor_s_per_batch"])
        notes.append(f"{label}: {sum(equal)}/{len(equal)} outputs equal to generate's; reference {ref}; "
                     f"per step lmkit {1e3 * times['lmkit']['median_s'] / new:.1f} ms, generate "
                     f"{1e3 * times[ref]['median_s'] / new:.1f} ms, floor {floor['floor_ms']:.1f} ms "
                     f"(read {floor['read_ms']:.1f}, compute {floor['compute_ms']:.1f})")
    targets = {f"{('greedy' if b == 1 else f'beams_{b}')}_speedup_vs_generate": (">=", 3.0) for b in BEAMS}
    targets.update({f"{('greedy' if b == 1 else f'beams_{b}')}_outputs_equal_fraction": (">=", 1.0)
                    for b in BEAMS})
    return Result(figures, ratios, targets, rows, notes)


if __name__ == "__main__":
    import json

    print(json.dumps(roofline(), indent=1))
