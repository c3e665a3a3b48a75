"""PyTorch reference of `speedrun_word`: pytorch/examples' word_language_model, standard recipe.

Run as a whole process (``python benchmarks/torch_word_lm.py TRAIN VALID --epochs N``); it
prints one line per evaluation, ``epoch N: val_loss X`` (the benchmark timestamps them).

The recipe is the example's defaults (``main.py``, ``model.py``): a 2-layer `nn.LSTM`, embedding
and hidden size 200, dropout 0.2 on the embedding, between the layers and on the output, untied
head, weights uniform in ±0.1; SGD at learning rate 20 on whole passes of batch 20 x bptt 35
with the hidden state carried between batches (detached), gradient norm clipped at 0.25; after
each epoch the validation loss, and the learning rate divided by 4 when it did not improve.

Two differences, both for `speedrun_word`'s comparison, stated here:

- Data: words are whitespace-split lines plus one end-of-line token, as the example reads them,
  but the vocabulary is the training file's (the example's spans all three files); the
  validation file's other words are ``<unk>``. lmkit's `whitespace` tokenizer gives the same
  stream.
- The validation estimate is lmkit's (`lmkit.data.tokens.sequential_batches`): the mean
  cross-entropy over every token of non-overlapping 35-token windows of the whole validation
  file, each window from a zero state, in batches of 20 (the example carries the state through
  the file in 10 columns, which gives another number).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter

import torch
from torch import nn
from torch.nn import functional as F

UNK, EOS = "<unk>", "<eos>"


def read_words(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [w for line in f for w in (*line.split(), EOS)]


class RNNModel(nn.Module):
    """model.py's RNNModel for ``--model LSTM`` (not tied)."""

    def __init__(self, ntoken: int, ninp: int = 200, nhid: int = 200, nlayers: int = 2,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.nlayers, self.nhid = nlayers, nhid
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, x: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]):
        out, hidden = self.rnn(self.drop(self.encoder(x)), hidden)    # (T, B, nhid)
        return self.decoder(self.drop(out)), hidden                  # (T, B, V) logits

    def init_hidden(self, bsz: int) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(self.nlayers, bsz, self.nhid)
        return zeros, zeros.clone()


def batchify(ids: torch.Tensor, bsz: int) -> torch.Tensor:
    n = ids.size(0) // bsz
    return ids[: n * bsz].view(bsz, -1).t().contiguous()            # (n, bsz)


@torch.no_grad()
def evaluate(model: RNNModel, ids: torch.Tensor, seq_len: int = 35, batch: int = 20) -> float:
    """Mean cross-entropy over every token of non-overlapping windows, each from a zero state."""
    model.eval()
    n = (ids.size(0) - 1) // seq_len
    xs, ys = ids[: n * seq_len].view(n, seq_len), ids[1: n * seq_len + 1].view(n, seq_len)
    total = 0.0
    for first in range(0, n, batch):
        x, y = xs[first: first + batch].t(), ys[first: first + batch].t()   # (T, B)
        logits, _ = model(x, model.init_hidden(x.size(1)))
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                 reduction="sum").item()
    return total / (n * seq_len)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train")
    parser.add_argument("valid")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--max-batches", type=int, default=0, help="cap batches per epoch (tests)")
    args = parser.parse_args()
    torch.manual_seed(1111)
    lr, clip, bptt, bsz = 20.0, 0.25, 35, 20

    train_words = read_words(args.train)
    counts = Counter(w for w in train_words if w != UNK)
    vocab = {w: i for i, w in enumerate(sorted(counts), start=1)}  # 0: <unk>
    encode = lambda words: torch.tensor([vocab.get(w, 0) for w in words], dtype=torch.long)
    train_data = batchify(encode(train_words), bsz)
    val_ids = encode(read_words(args.valid))
    print(f"vocabulary {len(vocab) + 1}, {train_data.numel()} training tokens, "
          f"{val_ids.numel()} validation tokens", flush=True)

    model = RNNModel(len(vocab) + 1)
    best = None
    for epoch in range(1, args.epochs + 1):
        model.train()
        hidden = model.init_hidden(bsz)
        start = time.perf_counter()
        for b, i in enumerate(range(0, train_data.size(0) - 1, bptt)):
            if args.max_batches and b >= args.max_batches:
                break
            n = min(bptt, train_data.size(0) - 1 - i)
            x, y = train_data[i: i + n], train_data[i + 1: i + 1 + n]
            hidden = tuple(h.detach() for h in hidden)
            model.zero_grad()
            logits, hidden = model(x, hidden)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
        val_loss = evaluate(model, val_ids, bptt, bsz)
        print(f"epoch {epoch}: val_loss {val_loss:.4f} ppl {math.exp(val_loss):.2f} "
              f"lr {lr:g} epoch_s {time.perf_counter() - start:.1f}", flush=True)
        if best is None or val_loss < best:
            best = val_loss
        else:
            lr /= 4.0


if __name__ == "__main__":
    main()
