"""PyTorch reference for `translate`: the standard `nn.Transformer` encoder-decoder recipe
(PyTorch's "Language Translation with nn.Transformer" tutorial: token embeddings scaled by
sqrt(d), sinusoidal positions, `nn.Transformer`, a linear generator, Adam with betas (0.9, 0.98),
label smoothing 0.1, greedy decoding), trained for a wall-clock budget, on the ids of the tokenizer
lmkit fitted for its contender (a file of `lmkit.tokenizers.save_tokenizer`; three ids are added
before them: padding, start and end).

Run as its own process by `benchmarks.translate`:

    python -m benchmarks.translate_torch DATA SRC TGT SECONDS OUT.json TOKENIZER.json [MAX_NEW]

It writes the hypotheses of the test split and its training figures to OUT.json.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

PAD, BOS, EOS = 0, 1, 2


class Seq2Seq(nn.Module):
    def __init__(self, vocab: int, d: int = 256, heads: int = 4, layers: int = 3, ff: int = 512,
                 dropout: float = 0.1, max_len: int = 512) -> None:
        super().__init__()
        self.d = d
        self.src_embed, self.tgt_embed = nn.Embedding(vocab, d), nn.Embedding(vocab, d)
        position = torch.arange(max_len).unsqueeze(1)
        rate = torch.exp(-torch.arange(0, d, 2) * math.log(10000.0) / d)
        table = torch.zeros(max_len, d)
        table[:, 0::2], table[:, 1::2] = torch.sin(position * rate), torch.cos(position * rate)
        self.register_buffer("positions", table)
        self.dropout = nn.Dropout(dropout)
        self.transformer = nn.Transformer(d, heads, layers, layers, ff, dropout, batch_first=True)
        self.generator = nn.Linear(d, vocab)

    def embed(self, table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(table(ids) * math.sqrt(self.d) + self.positions[: ids.shape[1]])

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        return self.transformer.encoder(self.embed(self.src_embed, src), src_key_padding_mask=src == PAD)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        mask = torch.triu(torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool), 1)  # bool like the padding masks
        out = self.transformer.decoder(self.embed(self.tgt_embed, tgt), memory, tgt_mask=mask,
                                       tgt_key_padding_mask=tgt == PAD, memory_key_padding_mask=src == PAD)
        return self.generator(out)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").rstrip("\n").split("\n")


def _pad(rows: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def main(data: str, src: str, tgt: str, seconds: float, out: str, tokenizer: str, max_new: int = 60) -> None:
    from lmkit.tokenizers import load_tokenizer

    torch.manual_seed(0)
    folder = Path(data)
    train = list(zip(_lines(folder / f"train.{src}"), _lines(folder / f"train.{tgt}")))
    test = _lines(folder / f"test_2016_flickr.{src}")
    shared = load_tokenizer(tokenizer)
    encode = lambda text: [i + 3 for i in shared.encode(text)]  # noqa: E731
    vocab = shared.vocab_size + 3
    model = Seq2Seq(vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.9, 0.98), eps=1e-9)
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD, label_smoothing=0.1)
    started, steps, rng = time.perf_counter(), 0, torch.Generator().manual_seed(0)
    while time.perf_counter() - started < seconds:
        batch = [train[i] for i in torch.randint(len(train), (32,), generator=rng).tolist()]
        source = _pad([encode(s)[:250] for s, _ in batch])
        target = _pad([[BOS, *encode(t)[:250], EOS] for _, t in batch])
        logits = model.decode(target[:, :-1], model.encode(source), source)
        loss = loss_fn(logits.reshape(-1, vocab), target[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    trained = time.perf_counter() - started
    model.eval()
    hypotheses = []
    with torch.no_grad():
        for start in range(0, len(test), 64):
            source = _pad([encode(s)[:250] or [PAD] for s in test[start:start + 64]])
            memory, ys = model.encode(source), torch.full((source.shape[0], 1), BOS, dtype=torch.long)
            for _ in range(max_new):
                ys = torch.cat([ys, model.decode(ys, memory, source)[:, -1].argmax(-1, keepdim=True)], 1)
                if bool((ys == EOS).any(1).all()):
                    break
            for row in ys[:, 1:].tolist():
                row = row[: row.index(EOS)] if EOS in row else row
                hypotheses.append(shared.decode([i - 3 for i in row if i >= 3]).strip())
    Path(out).write_text(json.dumps({"hypotheses": hypotheses, "steps": steps, "train_seconds": trained,
                                     "parameters": sum(p.numel() for p in model.parameters())}), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5], sys.argv[6],
         int(sys.argv[7]) if len(sys.argv) > 7 else 60)
