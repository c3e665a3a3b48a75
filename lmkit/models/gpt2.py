"""`gpt2`: OpenAI's GPT-2 layout, loaded from Hugging Face checkpoints.

lmkit's `gpt` already is GPT-2's computation: pre-LayerNorm blocks (eps 1e-5), learned
positions, fused query-key-value, the tanh approximation of GELU (``gelu_new``), a head tied to
the token embedding, and a KV cache for decoding. `gpt2` adds what a checkpoint needs: the number
of learned positions `n_positions` apart from the training window `seq_len` (GPT-2 has 1024; a
continued pretraining may use shorter windows), and the map from the checkpoint's tensors.

GPT-2 stores its dense weights as ``Conv1D``, ``(in, out)``: the layout lmkit multiplies by, so
unlike BERT's ``Linear`` weights they are not transposed. The tied head has no bias in GPT-2;
lmkit's zero-initialized head bias keeps the logits equal. `gpt2_hf_weights` is the one table of
GPT-2's tensor names: loading reads it (`GPT2.hf_weights`) and ``lmkit export --format hf``
writes a `gpt` run's weights under the same names (`lmkit.exporters.hf`).

>>> model = GPT2(vocab_size=50257, embed_dim=768, layers=12, heads=12, n_positions=1024)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras

from lmkit.errors import RunError
from lmkit.models.base import PACKING, REWIND, HFWeight
from lmkit.models.gpt import GPT
from lmkit.registry import architectures

__all__ = ["GPT2", "gpt2_hf_weights"]

# Hugging Face names of the tanh-approximated GELU that `gpt` computes
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


@architectures.register(
    "gpt2", capabilities=("lora", PACKING, REWIND),
    description="GPT-2 layout of `gpt` with its own number of positions; loads Hugging Face "
                "GPT-2 checkpoints (KV cache).",
)
@keras.saving.register_keras_serializable(package="lmkit")
class GPT2(GPT):
    """`gpt` with `n_positions` learned positions (default `seq_len`), read from GPT-2 checkpoints."""

    hf_model_types: ClassVar[tuple[str, ...]] = ("gpt2",)
    hf_prefix: ClassVar[str] = "transformer."
    # not `gpt`'s speedrun recipe: its [model] options (rotary, relu2, ...) are no GPT-2 layout
    config_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, vocab_size: int, *, embed_dim: int = 768, layers: int = 12, heads: int = 12,
                 n_positions: int | None = None, seq_len: int = 1024, dropout: float = 0.0,
                 tie_embeddings: bool = True, **kwargs: Any) -> None:
        super().__init__(vocab_size, embed_dim=embed_dim, layers=layers, heads=heads,
                         seq_len=n_positions or seq_len, dropout=dropout,
                         tie_embeddings=tie_embeddings, **kwargs)
        self._options["n_positions"] = self.seq_len
        self._options["seq_len"] = self.seq_len

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], tokenizer: Any) -> "GPT2":
        """The model a Hugging Face ``GPT2Config`` describes (weights still random)."""
        d = config["n_embd"]
        unsupported = {
            "activation_function": (config.get("activation_function", "gelu_new") not in _TANH_GELU,
                                    f"one of {', '.join(_TANH_GELU)}"),
            "n_inner": (config.get("n_inner") not in (None, 4 * d), f"null or {4 * d}"),
            "layer_norm_epsilon": (config.get("layer_norm_epsilon", 1e-5) != 1e-5, "1e-05"),
            "scale_attn_by_inverse_layer_idx": (bool(config.get("scale_attn_by_inverse_layer_idx")), "false"),
            "scale_attn_weights": (not config.get("scale_attn_weights", True), "true"),
        }
        for key, (bad, expected) in unsupported.items():
            if bad:
                raise RunError(f"config.json: {key}={config.get(key)!r} is not supported by lmkit's "
                               f"`gpt2` (expected {expected})")
        # an untied head (tie_word_embeddings false) is its own `lm_head.weight`, as transformers reads it
        return cls(config["vocab_size"], embed_dim=d, layers=config["n_layer"],
                   heads=config["n_head"], n_positions=config["n_positions"],
                   dropout=config.get("resid_pdrop", 0.0),
                   tie_embeddings=bool(config.get("tie_word_embeddings", True)))

    def hf_weights(self) -> list[HFWeight]:
        """Every variable with the Hugging Face ``GPT2LMHeadModel`` tensors it is read from."""
        head = [] if self.head_kernel is None else [HFWeight(self.head_kernel, ("lm_head.weight",), True)]
        if self.head_bias is not None:  # GPT-2 has none: lmkit's stays zero
            head.append(HFWeight(self.head_bias, ()))
        return gpt2_hf_weights(self) + head


def gpt2_hf_weights(model: GPT) -> list[HFWeight]:
    """Every variable of a `gpt` (or `gpt2`) model's body with its ``GPT2Model`` tensor name
    (without the ``transformer.`` prefix of ``GPT2LMHeadModel``); the head is tied to ``wte``.
    A `gpt` with `rotary` has no ``wpe``; with ``norm = "rmsnorm"`` each norm is a ``weight``
    alone (the names ``lmkit export`` writes for its own modeling code).

    >>> [w.names for w in gpt2_hf_weights(model)][:2]        # doctest: +SKIP
    [('wte.weight',), ('wpe.weight',)]
    """
    out = [HFWeight(model.embedding, ("wte.weight",))]
    if model.position_embedding is not None:
        out.append(HFWeight(model.position_embedding, ("wpe.weight",)))
    out += _norm_weights(model.ln_f, "ln_f")
    for i, block in enumerate(model.blocks):
        p = f"h.{i}."
        out += [
            *_norm_weights(block.ln_1, f"{p}ln_1"),
            HFWeight(block.w_qkv, (f"{p}attn.c_attn.weight",)),
            HFWeight(block.b_qkv, (f"{p}attn.c_attn.bias",)),
            HFWeight(block.w_proj, (f"{p}attn.c_proj.weight",)),
            HFWeight(block.b_proj, (f"{p}attn.c_proj.bias",)),
            *_norm_weights(block.ln_2, f"{p}ln_2"),
            HFWeight(block.w_fc, (f"{p}mlp.c_fc.weight",)),
            HFWeight(block.b_fc, (f"{p}mlp.c_fc.bias",)),
            HFWeight(block.w_out, (f"{p}mlp.c_proj.weight",)),
            HFWeight(block.b_out, (f"{p}mlp.c_proj.bias",)),
        ]
    return out


def _norm_weights(layer: keras.layers.Layer, name: str) -> list[HFWeight]:
    if isinstance(layer, keras.layers.RMSNormalization):  # a scale, no shift
        return [HFWeight(layer.scale, (f"{name}.weight",))]
    return [HFWeight(layer.gamma, (f"{name}.weight",)), HFWeight(layer.beta, (f"{name}.bias",))]
