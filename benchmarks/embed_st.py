"""`embed_st`: texts/s embedding sentences with MiniLM, lmkit against `sentence-transformers`.

The reference is what a user would run: ``SentenceTransformer(folder).encode(texts,
batch_size=BATCH)`` (PyTorch; it sorts the texts by length and pads each batch to its longest),
on all-MiniLM-L6-v2 as its package ships it (`all_minilm_l6_v2.extract_model`: the model with
sentence-transformers' mean pooling and ``Normalize`` modules). lmkit reads the same folder
(`lmkit.from_pretrained`) and runs ``Pretrained.embed(texts, normalize=True, batch_size=BATCH)``,
what gives sentence-transformers' vectors. The texts are the SST-2 sentences of the fixture
(tests/fixtures/eval/glue/SST-2, train and dev).

- **in one process**: each contender embeds every text once untimed (lmkit compiles one program
  per padded width; the pass is reported), then all the texts once per round, interleaved;
  PyTorch with all threads and with one, the faster counts;
- **whole processes**: a fresh Python that imports the library, loads the folder and embeds the
  texts, timed from outside, `PROCESS_ROUNDS` interleaved runs each (fastest counts): what a
  script that embeds a file pays, compilation (and lmkit's persistent compilation cache) included.
  Each process also reports its own import, load and embedding seconds (lmkit: and the XLA
  programs it compiled or read from the cache, and the seconds of JAX's stages per compiled
  function, ``stages_s``: `benchmarks.finetune_hf.STAGE_TIMES`), kept for the fastest run.

The vectors of both are compared: equal within `TOLERANCE` is part of the result.

`floor` is what the hardware allows: the FLOPs of the texts' real tokens (no padding) divided by
this machine's matmul rate, measured in JAX on the model's own widest product (``(512, hidden) @
(hidden, intermediate)``, in the run's precision); the report gives each contender's share of it
and the largest speed-up over sentence-transformers it leaves.

``LMKIT_PRECISION=mixed_bfloat16`` runs both in bfloat16: lmkit with
``from_pretrained(folder, precision="mixed_bfloat16")``, sentence-transformers with
``model_kwargs={"dtype": torch.bfloat16}``; each side's vectors then differ from float32's in
the fourth digit, so the check is their cosine (at least `BF16_COSINE`) instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    Result,
    best_of,
    best_reference,
    interleave,
    precision,
    ratio,
    timed_once,
    torch_threads,
)
from .finetune_hf import STAGE_TIMES

BATCH = 32
TOLERANCE = 1e-4
BF16_COSINE = 0.999
PROCESS_ROUNDS = 3
GLUE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "eval" / "glue"

_LMKIT_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import lmkit
t1 = time.perf_counter()
{stages}
texts = json.load(open(sys.argv[2]))
mini = lmkit.from_pretrained(sys.argv[1], precision={precision!r})
t2 = time.perf_counter()
mini.embed(texts, batch_size={batch}, normalize=True)
t3 = time.perf_counter()
from lmkit.paths import compilations
print("PHASES " + json.dumps(dict(import_s=t1 - t0, load_s=t2 - t1, embed_s=t3 - t2,
                                  compilations=compilations(), stages_s=stages())))
"""
_ST_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import torch
from sentence_transformers import SentenceTransformer
t1 = time.perf_counter()
texts = json.load(open(sys.argv[2]))
model = SentenceTransformer(sys.argv[1], device="cpu", model_kwargs={st_kwargs})
t2 = time.perf_counter()
model.encode(texts, batch_size={batch})
t3 = time.perf_counter()
print("PHASES " + json.dumps(dict(import_s=t1 - t0, load_s=t2 - t1, embed_s=t3 - t2)))
"""


def sst2_sentences() -> list[str]:
    """The SST-2 sentences of the fixture, train then dev."""
    from lmkit.evaluation.loaders import load_split

    return [t for split in ("train", "dev")
            for t in load_split("glue/sst2", str(GLUE / "SST-2"), split).text_a]


def _whole_process(script: str, folder: Path, texts_file: Path,
                   phases: list[dict[str, Any]]) -> Callable[[], list[float]]:
    """A candidate for `interleave`: one whole process; what it says of its phases (seconds of
    import, load, embedding) is appended to `phases`, with its wall time."""
    def chunk() -> list[float]:
        t0 = time.perf_counter()
        code = script.format(batch=BATCH, stages=STAGE_TIMES, precision=precision(),
                             st_kwargs=_st_kwargs(text=True))
        done = subprocess.run([sys.executable, "-c", code, str(folder), str(texts_file)],
                              check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        line = [x for x in done.stdout.splitlines() if x.startswith("PHASES ")][-1]
        found = json.loads(line[len("PHASES "):])
        phases.append({"wall_s": round(wall, 2), **{k: round(v, 2) if isinstance(v, float) else v
                                                     for k, v in found.items()}})
        return [wall]
    return chunk


def _st_kwargs(text: bool = False) -> Any:
    """sentence-transformers' `model_kwargs` for `precision()` (as source text for a script)."""
    if precision() == "float32":
        return "{}" if text else {}
    import torch

    return '{"dtype": torch.bfloat16}' if text else {"dtype": torch.bfloat16}


def floor(config: dict[str, Any], lengths: np.ndarray, passes: int = 1) -> dict[str, float]:
    """The seconds the FLOPs of a BERT encoder over texts of `lengths` tokens take at this
    machine's matmul rate: per token 2 x layers x (4 d^2 + 2 d f) for the weights, plus 4 x
    length x d per layer for attention's scores and sums; `passes` 3 for training (the
    backward pass multiplies twice as much as the forward)."""
    import jax
    import jax.numpy as jnp

    from lmkit.models.base import matmul


    d, f, layers = (int(config[k]) for k in ("hidden_size", "intermediate_size", "num_hidden_layers"))
    lengths = np.asarray(lengths, np.float64)
    flops = passes * float(np.sum(lengths * 2 * layers * (4 * d * d + 2 * d * f)
                                  + lengths ** 2 * 4 * layers * d))
    dtype = jnp.bfloat16 if precision() == "mixed_bfloat16" else jnp.float32
    x, w = jnp.ones((512, d), dtype), jnp.ones((d, f), dtype)
    product = jax.jit(matmul)  # lmkit's own matmul: bfloat16 operands sum in float32
    rate = 2 * 512 * d * f / best_of(lambda: product(x, w), rounds=10)
    return {"gflop": round(flops / 1e9, 1), "matmul_gflop_per_s": round(rate / 1e9, 1),
            "floor_s": round(flops / rate, 3)}


def run(quick: bool = False) -> Result:
    import all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    import lmkit

    texts = sst2_sentences()[: 2 * BATCH if quick else None]
    with tempfile.TemporaryDirectory() as tmp:
        folder = all_minilm_l6_v2.extract_model(tmp)
        reference = SentenceTransformer(str(folder), device="cpu", model_kwargs=_st_kwargs())
        mini = lmkit.from_pretrained(folder, precision=precision())
        limits = floor(mini.config, mini.encode(texts)[1])

        def lmkit_embed() -> np.ndarray:
            return mini.embed(texts, batch_size=BATCH, normalize=True)

        def st_embed() -> np.ndarray:
            return reference.encode(texts, batch_size=BATCH)

        first, vectors = {}, {}
        for name, fn in (("lmkit", lmkit_embed), ("sentence_transformers", st_embed)):
            t0 = time.perf_counter()
            vectors[name] = np.asarray(fn())
            first[name] = round(time.perf_counter() - t0, 2)
        cores = torch.get_num_threads()
        times = interleave({"lmkit": timed_once(lmkit_embed),
                            f"torch_{cores}_threads": torch_threads(timed_once(st_embed), cores),
                            "torch_1_thread": torch_threads(timed_once(st_embed), 1)}, 1 if quick else 3)
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        phases: dict[str, list[dict[str, Any]]] = {"lmkit": [], "sentence_transformers": []}
        processes = {} if quick else interleave(
            {name: _whole_process(script, folder, texts_file, phases[name])
             for name, script in (("lmkit", _LMKIT_SCRIPT), ("sentence_transformers", _ST_SCRIPT))},
            PROCESS_ROUNDS)
    return _report(texts, times, processes, first, vectors, phases, limits)


def _report(texts: list[str], times: dict[str, dict[str, float]], processes: dict[str, dict[str, float]],
            first: dict[str, float], vectors: dict[str, np.ndarray],
            phases: dict[str, list[dict[str, Any]]] | None = None,
            limits: dict[str, float] | None = None) -> Result:
    ref = best_reference(times)
    tps = {name: round(len(texts) / t["median_s"], 1) for name, t in times.items()}
    a, b = (np.asarray(vectors[k], np.float32) for k in ("lmkit", "sentence_transformers"))
    gap = float(np.abs(a - b).max())
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    cosine = float(np.min(np.sum(a * b, axis=1) / norms))
    exact = precision() == "float32"
    agree = gap <= TOLERANCE if exact else cosine >= BF16_COSINE
    figures: dict[str, Any] = {"texts": len(texts), "batch": BATCH, "texts_per_s": tps, "seconds": times,
                               "first_pass_s": first, "max_abs_difference": gap,
                               "min_cosine": cosine, "reference": ref, "precision": precision()}
    rows = [["contender", "texts/s", "s for all texts", "first pass s"]]
    rows += [[name, f"{tps[name]:.1f}", f"{t['median_s']:.2f}",
              f"{first['lmkit' if name == 'lmkit' else 'sentence_transformers']:.2f}"]
             for name, t in times.items()]
    ratios = {"embed_speedup_vs_sentence_transformers": ratio(tps["lmkit"], tps[ref]),
              "embeddings_within_tolerance": 1.0 if agree else 0.0}
    if limits:
        figures["floor"] = limits
        ratios["floor_speedup_vs_sentence_transformers"] = ratio(times[ref]["median_s"], limits["floor_s"])
        ratios["lmkit_share_of_floor"] = ratio(limits["floor_s"], times["lmkit"]["median_s"])
    check = f"tolerance {TOLERANCE}" if exact else f"in {precision()}: lowest cosine {cosine:.5f}, at least {BF16_COSINE}"
    notes = [f"largest difference between the vectors: {gap:.2e} ({check}); reference {ref}"]
    if limits:
        notes.append(f"floor: {limits['gflop']} GFLOP of real tokens at {limits['matmul_gflop_per_s']} "
                     f"GFLOP/s (this machine's matmul, {precision()}) = {limits['floor_s']} s, "
                     f"{len(texts) / limits['floor_s']:.0f} texts/s; lmkit takes "
                     f"{ratios['lmkit_share_of_floor']:.2f} of its time in it, and the floor is "
                     f"{ratios['floor_speedup_vs_sentence_transformers']:.2f}x {ref}")
    if processes:
        figures["whole_process_s"] = processes
        fastest = {name: t["min_s"] for name, t in processes.items()}
        ratios["whole_process_speedup_vs_sentence_transformers"] = ratio(
            fastest["sentence_transformers"], fastest["lmkit"])
        notes.append("whole processes (import, load, embed every text), fastest of "
                     f"{PROCESS_ROUNDS}: lmkit {fastest['lmkit']:.1f} s, sentence-transformers "
                     f"{fastest['sentence_transformers']:.1f} s")
        for name, runs in (phases or {}).items():
            if runs:
                best = min(runs, key=lambda r: r["wall_s"])
                figures.setdefault("whole_process_phases", {})[name] = runs
                notes.append(f"{name}'s fastest process: " + ", ".join(
                    f"{k} {v}" for k, v in best.items()))
    return Result(figures, ratios, {"embed_speedup_vs_sentence_transformers": (">=", 2.0),
                                    "embeddings_within_tolerance": (">=", 1.0)}, rows, notes)
