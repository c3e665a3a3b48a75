"""PyTorch reference for `gpt_char`: lmkit's `gpt` model written the nanoGPT way, run eagerly.

Same function and parameters as `lmkit.models.gpt.GPT`: learned positions, pre-LayerNorm blocks
(eps 1e-5, with biases), causal attention, tanh-approximated GELU MLP, final LayerNorm, output
head tied to the token embedding plus a bias; GPT-2 initialization. Trained like nanoGPT's CPU
run: AdamW, decay on matrices only (not on biases, norms or positions, as `lmkit.optim.adamw`),
global-norm clipping, linear warm-up then cosine decay (as `lmkit.schedules.WarmupDecay`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GPT", "Trainer", "device", "autocast"]


def device() -> torch.device:
    """The GPU when PyTorch sees one, else the CPU (the references run where lmkit runs)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast() -> Any:
    """bfloat16 autocast under ``LMKIT_PRECISION=mixed_bfloat16``, as lmkit's mixed policy."""
    from ._common import precision

    return torch.autocast(device().type, dtype=torch.bfloat16,
                          enabled=precision() == "mixed_bfloat16")


class Block(nn.Module):
    def __init__(self, d: int, heads: int, layers: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d, eps=1e-5), nn.LayerNorm(d, eps=1e-5)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        for lin in (self.qkv, self.proj, self.fc, self.out):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        for lin in (self.proj, self.out):  # GPT-2: residual projections scaled by 1/sqrt(2L)
            nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(d, dim=2)
        q, k, v = (a.view(b, t, self.heads, d // self.heads).transpose(1, 2) for a in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)      # (B, H, T, d)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, layers: int, heads: int, seq_len: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, embed_dim)
        self.wpe = nn.Embedding(seq_len, embed_dim)
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.wpe.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(embed_dim, heads, layers) for _ in range(layers))
        self.ln_f = nn.LayerNorm(embed_dim, eps=1e-5)
        self.head_bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight, self.head_bias)  # tied head, (B, T, V)


class Trainer:
    """One eager training step at a time, with nanoGPT's optimizer settings."""

    def __init__(self, model: nn.Module, *, lr: float, total: int, warmup: int, min_lr_ratio: float,
                 weight_decay: float, betas: tuple[float, float], clipnorm: float | None,
                 seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.device = device()
        self.model = model.to(self.device)
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wpe" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "wpe" not in n)]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                      {"params": rest, "weight_decay": 0.0}], lr=lr, betas=betas)
        self.lr, self.total, self.warmup, self.floor = lr, total, warmup, min_lr_ratio
        self.clipnorm, self.step_count = clipnorm, 0

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a)).long().to(self.device)

    def _lr(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        progress = min(max((step - self.warmup) / max(self.total - self.warmup, 1), 0.0), 1.0)
        return self.lr * warm * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        for group in self.opt.param_groups:
            group["lr"] = self._lr(self.step_count)
        with autocast():
            logits = self.model(self._tensor(x))
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), self._tensor(y).view(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clipnorm:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clipnorm)
        self.opt.step()
        self.step_count += 1
        return loss.item()

    @torch.no_grad()
    def val_loss(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
        """Mean per-token loss over `batches` (the same batches lmkit evaluates)."""
        total, count = 0.0, 0
        for x, y in batches:
            with autocast():
                logits = self.model(self._tensor(x))
            total += F.cross_entropy(logits.float().view(-1, logits.shape[-1]),
                                     self._tensor(y).view(-1), reduction="sum").item()
            count += y.size
        return total / count
