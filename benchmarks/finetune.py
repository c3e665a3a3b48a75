"""`finetune`: fine-tuning and embedding examples/s of MiniLM, lmkit vs `transformers` + PyTorch.

The same checkpoint (`minilm-l6`, from the `lmkit-minilm` extension), the same real SST-2
sentences (tests/fixtures/eval/glue/SST-2), the same batches of `BATCH` examples at most
`MAX_LENGTH` tokens, the same recipe (AdamW at 5e-5, gradient clipping at 1.0, dropout 0.1,
a linear head on the [CLS] state):

- **fine-tuning step**: lmkit's `FinetuneTrainee` (what `lmkit.evaluate` runs: one compiled JAX
  step, the word embedding updated only at the batch's rows -- lazily, so rows of absent ids
  are not decayed), packed (the default: each batch's examples packed into rows of one width,
  `lmkit.data.packing`, a few row counts chosen for the data) and padded (``packing=false``:
  batches bucketed by length and padded to 4 widths chosen for the data), against
  `BertForSequenceClassification` trained eagerly (each batch padded to its longest example,
  as Hugging Face's dynamic padding does; dense AdamW, the usual recipe);
- **embedding** (inference): `Pretrained.embed` (mean pooling), packed and padded, against
  `BertModel` under ``torch.no_grad`` with the same masked mean.

All contenders take the same batches (the padded path's: sorted by length in pools, which
favours padding); the figures count the token positions each computes on them beside the real
tokens.

PyTorch is timed with all cores and with one thread, and its faster setting is the reference.
Every contender first runs every batch once untimed (lmkit compiles one program per padded
length); then they are interleaved in rounds (`_common.interleave`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Result, best_reference, fastest_steps_ratio, interleave, ms, ratio, torch_threads

BATCH = 32
MAX_LENGTH = 64
SST2 = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "eval" / "glue" / "SST-2"


def _lmkit_trainer(mini: Any, task_data: Any, **keys: Any) -> tuple[Any, list[np.ndarray], Any]:
    """lmkit's fine-tuning trainee on `task_data` (`keys` override the recipe's config keys),
    the rows of its first epoch's batches, and the encoded examples."""
    from lmkit.build import copy_model
    from lmkit.config import EvalConfig
    from lmkit.evaluation.encoding import encode_examples
    from lmkit.evaluation.finetune import FinetuneTrainee
    from lmkit.evaluation.heads import SequenceClassifier
    from lmkit.resolve import resolve

    cfg = EvalConfig(**{"learning_rate": 5e-5, "backbone_lr_multiplier": 1.0, "pooling": "cls",
                        "batch_size": BATCH, "max_length": MAX_LENGTH, "max_steps": 1000,
                        "loss": "cross_entropy", "log_every": 1,  # one step per call: the timed unit
                        **keys})
    encoded = encode_examples(task_data, mini.tokenizer, MAX_LENGTH)
    backbone = copy_model(mini.model, cfg.precision) if cfg.precision != "float32" else mini.model
    model = SequenceClassifier(backbone, 2, "cls", 0.1)
    model((np.zeros((1, 2), np.int32), np.ones((1,), np.int32)))
    parts = resolve(cfg)
    trainee = FinetuneTrainee(model, encoded, parts.config, cfg.max_steps, parts)
    return trainee, trainee._epoch_batches(0), encoded


def _torch_batch(encoded: Any, rows: np.ndarray) -> tuple[Any, Any, Any]:
    import torch

    ids = [encoded.ids[r] for r in rows]
    width = max(len(i) for i in ids)
    tokens = np.zeros((len(ids), width), np.int64)
    mask = np.zeros((len(ids), width), np.int64)
    for j, i in enumerate(ids):
        tokens[j, :len(i)], mask[j, :len(i)] = i, 1
    return (torch.tensor(tokens), torch.tensor(mask),
            torch.tensor(encoded.labels[rows].astype(np.int64)))


def _positions(packed: Any, padded: Any, torch_batches: list[Any], steps: int) -> dict[str, int]:
    """Token positions each contender computes over the timed batches, and the real tokens."""
    return {"positions_lmkit_packed": sum(packed._batch(s)[0][0].size for s in range(steps)),
            "positions_lmkit_padded": sum(padded._batch(s)[0][0].size for s in range(steps)),
            "positions_torch": sum(int(tokens.numel()) for tokens, _, _ in torch_batches),
            "real_tokens": sum(int(mask.sum()) for _, mask, _ in torch_batches)}


def run(quick: bool = False) -> Result:
    import torch
    import transformers

    import lmkit
    from lmkit.evaluation.loaders import load_split

    mini = lmkit.from_pretrained("minilm-l6")
    task_data = load_split("glue/sst2", str(SST2), "train")
    trainee, _, encoded = _lmkit_trainer(mini, task_data)
    padded, epoch, _ = _lmkit_trainer(mini, task_data, packing=False)
    batches = epoch[: 4 if quick else len(epoch)]
    # every contender takes the same batches, in the same order: the padded path's, sorted by
    # length in pools (as `group_by_length` does), which favours padding
    for t in (trainee, padded):
        t._rows = lambda step: batches[step % len(batches)]
    torch.manual_seed(0)
    reference = transformers.BertForSequenceClassification.from_pretrained(
        mini.dir, num_labels=2).train()
    optimizer = torch.optim.AdamW(reference.parameters(), lr=5e-5, weight_decay=0.01)
    torch_batches = [_torch_batch(encoded, rows) for rows in batches]
    encoder = transformers.BertModel.from_pretrained(mini.dir).eval()
    texts = [task_data.text_a[r] for rows in batches for r in rows]
    text_batches = [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)]

    position = {"lmkit": 0, "lmkit_padded": 0, "torch": 0}

    def lmkit_step() -> None:
        position["lmkit"] += 1
        trainee.train(position["lmkit"] - 1, 1)  # returns the loss as a host float: the step has finished

    def lmkit_padded_step() -> None:
        position["lmkit_padded"] += 1
        padded.train(position["lmkit_padded"] - 1, 1)

    def torch_step() -> None:
        tokens, mask, labels = torch_batches[position["torch"] % len(torch_batches)]
        position["torch"] += 1
        loss = reference(input_ids=tokens, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    def lmkit_embed(texts: list[str]) -> None:
        mini.embed(texts, batch_size=BATCH, max_length=MAX_LENGTH)

    def lmkit_padded_embed(texts: list[str]) -> None:
        mini.embed(texts, batch_size=BATCH, max_length=MAX_LENGTH, packing=False)

    def torch_embed(texts: list[str]) -> None:
        tok_ids = mini.tokenizer.encode_inputs(texts, max_length=MAX_LENGTH)
        tokens, mask, _ = _torch_batch(type(encoded)(tok_ids, np.zeros(len(texts), np.int64)),
                                       np.arange(len(texts)))
        with torch.no_grad():
            hidden = encoder(input_ids=tokens, attention_mask=mask).last_hidden_state
            weights = mask[:, :, None].float()
            (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    first_pass: dict[str, float] = {}
    for name, fn, count in (("lmkit", lmkit_step, len(batches)),
                            ("lmkit_padded", lmkit_padded_step, len(batches)),
                            ("torch", torch_step, len(batches))):
        t0 = time.perf_counter()
        for _ in range(count):
            fn()
        first_pass[f"train_{name}_first_pass_s"] = round(time.perf_counter() - t0, 2)
    for name, fn in (("lmkit", lmkit_embed), ("lmkit_padded", lmkit_padded_embed),
                     ("torch", torch_embed)):
        t0 = time.perf_counter()
        for chunk in text_batches:
            fn(chunk)
        first_pass[f"embed_{name}_first_pass_s"] = round(time.perf_counter() - t0, 2)

    per_round = 2 if quick else 4
    rounds = 2 if quick else 3  # 3 x 4 steps per contender: one run fits a 12-minute hold

    def stepper(fn: Callable[[], None]) -> Callable[[], list[float]]:
        def chunk() -> list[float]:
            out = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
            return out
        return chunk

    def embedder(fn: Callable[[list[str]], None]) -> Callable[[], list[float]]:
        cursor = {"i": 0}

        def chunk() -> list[float]:
            out = []
            for _ in range(per_round):
                texts_now = text_batches[cursor["i"] % len(text_batches)]
                cursor["i"] += 1
                t0 = time.perf_counter()
                fn(texts_now)
                out.append(time.perf_counter() - t0)
            return out
        return chunk

    cores = torch.get_num_threads()
    train_times = interleave({
        "lmkit": stepper(lmkit_step),
        "lmkit_padded": stepper(lmkit_padded_step),
        f"torch_{cores}_threads": torch_threads(stepper(torch_step), cores),
        "torch_1_thread": torch_threads(stepper(torch_step), 1),
    }, rounds)
    embed_times = interleave({
        "lmkit": embedder(lmkit_embed),
        "lmkit_padded": embedder(lmkit_padded_embed),
        f"torch_{cores}_threads": torch_threads(embedder(torch_embed), cores),
        "torch_1_thread": torch_threads(embedder(torch_embed), 1),
    }, rounds)

    train_ref, embed_ref = best_reference(train_times), best_reference(embed_times)
    mean_tokens = float(np.mean([len(encoded.ids[r]) for rows in batches for r in rows]))
    figures: dict[str, Any] = {"batch": BATCH, "max_length": MAX_LENGTH, "batches": len(batches),
                               "mean_tokens_per_example": round(mean_tokens, 1), **first_pass,
                               **_positions(trainee, padded, torch_batches, len(batches))}
    rows = [["contender", "train ms/step", "train examples/s", "embed ms/batch", "embed examples/s"]]
    for name in train_times:
        t, e = train_times[name]["median_s"], embed_times[name]["median_s"]
        figures[f"train_{name}_examples_per_s"] = round(BATCH / t, 1)
        figures[f"embed_{name}_examples_per_s"] = round(BATCH / e, 1)
        rows.append([name, ms(t), f"{BATCH / t:.1f}", ms(e), f"{BATCH / e:.1f}"])
    ratios = {
        "finetune_speedup_vs_torch": ratio(train_times[train_ref]["median_s"],
                                           train_times["lmkit"]["median_s"]),
        "embed_speedup_vs_torch": ratio(embed_times[embed_ref]["median_s"],
                                        embed_times["lmkit"]["median_s"]),
        "finetune_packed_vs_padded": ratio(train_times["lmkit_padded"]["median_s"],
                                           train_times["lmkit"]["median_s"]),
        "embed_packed_vs_padded": ratio(embed_times["lmkit_padded"]["median_s"],
                                        embed_times["lmkit"]["median_s"]),
    }
    _, note_train = fastest_steps_ratio(train_times, train_ref)
    _, note_embed = fastest_steps_ratio(embed_times, embed_ref)
    return Result(figures, ratios,
                  {"finetune_speedup_vs_torch": (">=", 1.3), "embed_speedup_vs_torch": (">=", 1.5)},
                  rows, [f"reference: {train_ref} (training), {embed_ref} (embedding)",
                         "training " + note_train, "embedding " + note_embed])
