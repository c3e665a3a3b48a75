"""`lstm_classic`: the classic Keras word-level LSTM, lmkit vs PyTorch `nn.LSTM` vs Keras `fit`.

Keras `fit` is timed twice: on the classic example as Keras users write it
(`keras_plain.classic_lstm`, a `Sequential`: `keras_fit`, the one the target names) and on
lmkit's own `classic_lstm` model (`keras_fit_lmkit_model`: only the training loop differs).

Vocabulary 10,000, Embedding 128 -> LSTM 128 -> Dense 10,000, sequence 35, batch 32, per-token
softmax cross-entropy, Adam lr 1e-3 (no clipping, constant rate). Figure: training tokens per
second (median step time over interleaved rounds, after compilation). The token stream is
uniform random ids: the speed of a step does not depend on which words it sees.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmkit.config import TrainConfig

from ._common import (Result, best_reference, fastest_steps_ratio, interleave, ms, precision,
                      ratio, timed_steps, torch_threads)
from . import keras_plain
from ._contenders import KerasFitSteps, LmkitSteps

VOCAB = 10_000
CONFIG = TrainConfig(
    arch="classic_lstm", tokenizer="word", vocab_size=VOCAB, seq_len=35, batch_size=32,
    optimizer="adam", learning_rate=1e-3, clipnorm=None, schedule="constant", seed=0,
    precision=precision(),
)


def run(quick: bool = False) -> Result:
    import torch

    from lmkit.data.tokens import WindowSampler

    from . import torch_lstm

    cfg = CONFIG
    ids = np.random.default_rng(0).integers(0, VOCAB, 1_000_000).astype(np.int32)
    sampler = WindowSampler(ids, cfg.seq_len, cfg.batch_size, cfg.seed)
    k, rounds = (3, 2) if quick else (10, 10)
    total = 10**6
    lmkit_steps = LmkitSteps(cfg, VOCAB, total)
    fit_steps = KerasFitSteps(cfg, VOCAB, total, keras_plain.classic_lstm(VOCAB))
    fit_lmkit_model = KerasFitSteps(cfg, VOCAB, total)
    torch.manual_seed(cfg.seed)
    torch_steps = torch_lstm.Trainer(torch_lstm.ClassicLSTM(VOCAB), lr=cfg.learning_rate)
    counter = iter(range(0, 10**9, k))

    def chunk() -> tuple[np.ndarray, np.ndarray]:
        return sampler.batches(next(counter), k)

    def torch_chunk() -> list[float]:
        batches = iter(zip(*chunk()))
        return timed_steps(lambda: torch_steps.step(*next(batches)), k)

    candidates: dict[str, Any] = {"lmkit": lambda: lmkit_steps.run(*chunk()), "torch": torch_chunk,
                                  "torch_1thread": torch_threads(torch_chunk, 1),
                                  "keras_fit": lambda: fit_steps.run(*chunk()),
                                  "keras_fit_lmkit_model": lambda: fit_lmkit_model.run(*chunk())}
    for fn in candidates.values():  # warm-up: compilation
        fn()
    times = interleave(candidates, rounds)
    tokens = cfg.batch_size * cfg.seq_len
    tps = {n: round(tokens / t["median_s"], 1) for n, t in times.items()}
    figures = {"config": {"vocab_size": VOCAB, "embed_dim": 128, "units": 128,
                          "seq_len": cfg.seq_len, "batch_size": cfg.batch_size, "optimizer": "adam"},
               "step_times": times, "tokens_per_second": tps}
    reference = best_reference(times)
    figures["torch_reference_used"] = reference
    ratios = {"lmkit_over_torch_tokens_per_s": ratio(tps["lmkit"], tps[reference]),
              "keras_fit_over_lmkit_step": ratio(times["keras_fit"]["median_s"], times["lmkit"]["median_s"]),
              "keras_fit_lmkit_model_over_lmkit_step":
                  ratio(times["keras_fit_lmkit_model"]["median_s"], times["lmkit"]["median_s"])}
    targets = {"lmkit_over_torch_tokens_per_s": (">=", 1.5), "keras_fit_over_lmkit_step": (">=", 2.0)}
    rows = [["contender", "tokens/s", "ms/step", "min ms"]]
    rows += [[n, f"{tps[n]:.0f}", ms(t["median_s"]), ms(t["min_s"])] for n, t in times.items()]
    ratios["torch_over_lmkit_fastest_step"], fastest_note = fastest_steps_ratio(times, reference)
    return Result(figures, ratios, targets, rows,
                  [f"ratios use the faster PyTorch setting, {reference}", fastest_note])
