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
                               "new_tokens": new, "torch_threads": cores}
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
                           1 if quick else 3)
        ref = best_reference(times)
        tps = {name: round(count * new / t["median_s"], 1) for name, t in times.items()}
        figures[label] = {"tokens_per_s": tps, "seconds": times, "first_pass_s": first,
                          "outputs_equal": sum(equal), "outputs": len(equal), "reference": ref}
        ratios[f"{label}_speedup_vs_generate"] = ratio(tps["lmkit"], tps[ref])
        ratios[f"{label}_outputs_equal_fraction"] = round(sum(equal) / len(equal), 3)
        for name in times:
            rows.append([label, name, f"{tps[name]:.1f}", f"{times[name]['median_s']:.3f}",
                         f"{first['lmkit' if name == 'lmkit' else 'torch']:.2f}"])
        notes.append(f"{label}: {sum(equal)}/{len(equal)} outputs equal to generate's; reference {ref}")
    targets = {f"{('greedy' if b == 1 else f'beams_{b}')}_speedup_vs_generate": (">=", 3.0) for b in BEAMS}
    targets.update({f"{('greedy' if b == 1 else f'beams_{b}')}_outputs_equal_fraction": (">=", 1.0)
                    for b in BEAMS})
    return Result(figures, ratios, targets, rows, notes)
