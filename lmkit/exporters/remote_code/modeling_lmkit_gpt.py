"""An lmkit `gpt` model in PyTorch, as ``lmkit export`` writes it beside its weights: load with
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)``.

It computes what lmkit's `gpt` computes (``lmkit/models/gpt.py``), option by option::

    tokens (B, T) -> wte (+ wpe unless rotary) -> dropout
      -> n_layer x Block:  x + attn(norm(x)),  x + mlp(norm(x))     (pre-norm)
      -> norm -> logits = x @ wte^T (or lm_head.weight^T) + lm_head.bias -> softcap

Weights keep GPT-2's names and ``Conv1D`` layout ``(in, out)`` (``transformer.h.{i}.attn.c_attn``,
...), so a folder with GPT-2's options differs from a ``GPT2LMHeadModel`` only in config.json.
Positions count from the start of the sequence (left padding shifts them, as in lmkit).
"""

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_lmkit_gpt import LmkitGPTConfig

#: the output's cache field, which generate() reads: `cache` in recent transformers releases
_CACHE_FIELD = next(f.name for f in dataclasses.fields(CausalLMOutputWithPast)
                    if f.name in ("cache", "past_key_values"))
_NEG_INF = -1e9  # a masked score, finite as in lmkit: a fully masked row stays NaN-free


class Conv1D(nn.Module):
    """GPT-2's dense layer: ``x @ weight + bias`` with ``weight`` stored ``(in, out)``."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return x @ self.weight + self.bias


def norm_layer(config):
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=config.layer_norm_epsilon)
    return nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)


def rms(x):
    """`x` over its root mean square on the last axis, in float32 (lmkit's qk_norm)."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)


def rotate(x, positions):
    """Rotary embedding of `x` (B, H, T, d) at `positions` (T,): feature i turns with i + d/2."""
    half = x.shape[-1] // 2
    freq = 1.0 / (10000.0 ** (torch.arange(half, dtype=torch.float32, device=x.device) / half))
    angle = positions.float()[:, None] * freq[None, :]                     # (T, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.heads, self.layer_idx = config.n_head, layer_idx
        self.rotary, self.qk_norm = config.rotary, config.qk_norm
        self.c_attn = Conv1D(config.n_embd, 3 * config.n_embd)
        self.c_proj = Conv1D(config.n_embd, config.n_embd)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, positions, allowed, cache):
        batch, time, width = x.shape
        q, k, v = (t.view(batch, time, self.heads, -1).transpose(1, 2)      # (B, H, T, d)
                   for t in self.c_attn(x).split(width, dim=-1))
        if self.qk_norm:
            q, k = rms(q), rms(k)
        if self.rotary:  # keys are cached already rotated
            q, k = rotate(q, positions), rotate(k, positions)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).float()  # (B, H, T, T_k)
        scores = scores.masked_fill(~allowed, _NEG_INF)
        weights = self.drop(scores.softmax(-1).to(v.dtype))
        y = (weights @ v).transpose(1, 2).reshape(batch, time, width)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.relu2 = config.mlp == "relu2"
        self.c_fc = Conv1D(config.n_embd, 4 * config.n_embd)
        self.c_proj = Conv1D(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        h = self.c_fc(x)
        h = F.relu(h).square() if self.relu2 else F.gelu(h, approximate="tanh")
        return self.c_proj(h)


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1, self.ln_2 = norm_layer(config), norm_layer(config)
        self.attn, self.mlp = Attention(config, layer_idx), MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, positions, allowed, cache):
        x = x + self.drop(self.attn(self.ln_1(x), positions, allowed, cache))
        return x + self.drop(self.mlp(self.ln_2(x)))


class LmkitGPTModel(nn.Module):
    """The body: embeddings, blocks and the final norm; (B, T) ids -> (B, T, D) states."""

    def __init__(self, config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = None if config.rotary else nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = norm_layer(config)

    def forward(self, input_ids, attention_mask, cache):
        past = 0 if cache is None else cache.get_seq_length()
        time = input_ids.shape[1]
        positions = torch.arange(past, past + time, device=input_ids.device)   # (T,)
        x = self.wte(input_ids)
        if self.wpe is not None:
            x = x + self.wpe(positions)
        x = self.drop(x)
        keys = torch.arange(past + time, device=input_ids.device)
        allowed = (keys[None, :] <= positions[:, None])[None, None]           # (1, 1, T, T_k)
        if attention_mask is not None:  # padding: no query attends to a padded key
            allowed = allowed & attention_mask[:, None, None, :].bool()
        for block in self.h:
            x = block(x, positions, allowed, cache)
        return self.ln_f(x)


class Head(nn.Module):
    """Logits from the states: the token embedding (tied) or an own weight (V, D), plus a bias."""

    def __init__(self, config):
        super().__init__()
        size = (config.vocab_size, config.n_embd)
        self.weight = None if config.tie_word_embeddings else nn.Parameter(torch.empty(size))
        self.bias = nn.Parameter(torch.zeros(config.vocab_size)) if config.head_bias else None
        self.softcap = config.logit_softcap

    def forward(self, x, embedding):
        logits = x.float() @ (embedding if self.weight is None else self.weight).float().T
        if self.bias is not None:
            logits = logits + self.bias
        if self.softcap:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits


class LmkitGPTForCausalLM(PreTrainedModel, GenerationMixin):
    """A causal language model over `LmkitGPTModel`, with a KV cache for ``generate()``."""

    config_class = LmkitGPTConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"

    def __init__(self, config):
        super().__init__(config)
        self.transformer = LmkitGPTModel(config)
        self.lm_head = Head(config)
        self.post_init()

    def _init_weights(self, module):
        # only for weights a folder lacks: every exported weight is loaded over this
        for name, param in module.named_parameters(recurse=False):
            if name == "bias" or isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                continue
            nn.init.normal_(param, std=0.02)

    def get_input_embeddings(self):
        return self.transformer.wte

    def forward(self, input_ids=None, attention_mask=None, cache=None, labels=None,
                use_cache=None, past_key_values=None, **kwargs):
        use_cache = self.config.use_cache if use_cache is None else use_cache
        cache = cache if cache is not None else past_key_values  # transformers 5.x / 4.x name
        if use_cache and cache is None:
            cache = DynamicCache()
        cache = cache if use_cache else None
        states = self.transformer(input_ids, attention_mask, cache)
        logits = self.lm_head(states, self.transformer.wte.weight)
        loss = None
        if labels is not None:  # next-token loss, labels = input_ids as transformers' models
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_FIELD: cache})
