"""`memory`: peak resident memory while training `gpt_char` on a 1 GB text file.

A synthetic corpus (lines of random lowercase words over 64 symbols) is written to a temporary
file; a fresh process runs `lmkit.train` on it (char tokenizer, the `gpt_char` model, a few
hundred steps with evaluations) and reports its own peak RSS. Token ids are memory-mapped, so
the peak should not grow with the corpus. ``--quick`` uses an 8 MB file and 10 steps.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ._common import Result
from .startup import _python

_TRAIN = """
import json, resource, sys, time, tempfile
import lmkit
data, steps = sys.argv[1], int(sys.argv[2])
with tempfile.TemporaryDirectory() as out:
    t0 = time.perf_counter()
    lmkit.train(arch="gpt", data=data, tokenizer="char", seq_len=64, batch_size=12,
                max_steps=steps, eval_every=max(steps // 2, 1), eval_batches=20,
                sample_tokens=0, out=out, reporters=[])
    seconds = time.perf_counter() - t0
print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "train_call_s": seconds}))
"""

_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'-\n\n\n\n",
                          dtype=np.uint8)


def write_corpus(path: Path, size: int, block: int = 1 << 24) -> None:
    """`size` bytes of random text in blocks of `block` (memory stays bounded by a block)."""
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        for start in range(0, size, block):
            f.write(_ALPHABET[rng.integers(0, _ALPHABET.size, min(block, size - start))].tobytes())


def run(quick: bool = False) -> Result:
    size, steps = (8 << 20, 10) if quick else (1 << 30, 300)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        write_corpus(corpus, size)
        code = f"import sys; sys.argv = ['x', {str(corpus)!r}, '{steps}']\n{_TRAIN}"
        out = json.loads(_python(code, {"LMKIT_CACHE_DIR": str(Path(tmp) / "cache")}))
    peak_gb = out["peak_rss_bytes"] / 1e9
    figures = {"corpus_bytes": size, "steps": steps, **out, "peak_rss_gb": round(peak_gb, 3)}
    rows = [["figure", "value"], ["corpus", f"{size / 1e9:.2f} GB"],
            ["peak RSS", f"{peak_gb:.2f} GB"],
            ["lmkit.train call (incl. tokenizing)", f"{out['train_call_s']:.1f} s"]]
    return Result(figures, {"peak_rss_gb": round(peak_gb, 3)}, {"peak_rss_gb": ("<", 1.5)}, rows)
