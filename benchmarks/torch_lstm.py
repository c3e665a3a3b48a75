"""PyTorch reference for `lstm_classic`: Embedding(V, 128) -> nn.LSTM(128) -> Linear(V).

The same model as lmkit's `classic_lstm`, with per-token softmax cross-entropy and Adam.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .torch_gpt import autocast, device

__all__ = ["ClassicLSTM", "Trainer"]


class ClassicLSTM(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int = 128, units: int = 128) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, units, batch_first=True)
        self.head = nn.Linear(units, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embedding(idx))          # (B, T, units)
        return self.head(h)                            # (B, T, V)


class Trainer:
    def __init__(self, model: nn.Module, lr: float = 1e-3) -> None:
        self.device = device()
        self.model = model.to(self.device)
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        x, y = (torch.from_numpy(np.asarray(a)).long().to(self.device) for a in (x, y))
        with autocast():
            logits = self.model(x)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()
