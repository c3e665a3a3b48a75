"""Checking a checkpoint's ``config.json`` before anything is built from it.

A damaged or hostile ``config.json`` must fail in a second with the key it got wrong, not build
a model of 10**12 rows (hours of allocation, then out of memory) or one whose ``layer_norm_eps``
is NaN (every output NaN, without a word). The sizes it describes must also agree with the
weights stored beside it: a config that describes far more parameters than the folder holds
belongs to other weights.

>>> check_values({"hidden_size": 32, "layer_norm_eps": 1e-12}, Path("config.json"))
>>> implied_parameters({"vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 1,
...                     "max_position_embeddings": 16})
1696
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lmkit.errors import RunError

__all__ = ["check_values", "implied_parameters", "check_size"]

#: sizes of the Hugging Face configs lmkit reads (BERT's names, then GPT-2's)
SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
         "intermediate_size", "max_position_embeddings", "type_vocab_size",
         "n_embd", "n_layer", "n_head", "n_inner", "n_positions")
EPSILONS = ("layer_norm_eps", "layer_norm_epsilon")
RATES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop",
         "attn_pdrop")
#: a config may describe somewhat more than is stored (a tied head, GPT-2's default n_inner);
#: beyond twice the stored parameters, plus this many, it is not the folder's config
SLACK = 1_000_000


def check_values(config: dict[str, Any], path: Path) -> None:
    """Refuse sizes that are no positive integer, an epsilon that is no finite positive number
    and a dropout rate outside [0, 1)."""
    for key in SIZES:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise RunError(f"{path}: {key} must be a positive integer, got {value!r}")
    for key in EPSILONS:
        value = config.get(key)
        if value is not None and not (_number(value) and math.isfinite(value) and value > 0):
            raise RunError(f"{path}: {key} must be a finite positive number (like 1e-12), "
                           f"got {value!r}")
    for key in RATES:
        value = config.get(key)
        if value is not None and not (_number(value) and 0 <= value < 1):
            raise RunError(f"{path}: {key} must be a number in [0, 1), got {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _first(config: dict[str, Any], *keys: str) -> int:
    return next((config[k] for k in keys if isinstance(config.get(k), int)), 0)


def implied_parameters(config: dict[str, Any]) -> int:
    """About how many parameters the model that `config` describes has: its embeddings and
    each layer's attention (4 h^2) and feed-forward (2 h f) matrices. Errs low."""
    h = _first(config, "hidden_size", "n_embd")
    layers = _first(config, "num_hidden_layers", "n_layer")
    ffn = _first(config, "intermediate_size", "n_inner") or 4 * h
    rows = (_first(config, "vocab_size") + _first(config, "max_position_embeddings", "n_positions")
            + _first(config, "type_vocab_size"))
    return rows * h + layers * (4 * h * h + 2 * h * ffn)


def check_size(config: dict[str, Any], path: Path, stored: int, memory: tuple[int, str]) -> None:
    """Refuse, before allocating, a config that describes far more parameters than the `stored`
    ones, or more float32 weights than `memory` (bytes, where) holds."""
    implied = implied_parameters(config)
    limit, where = memory
    if 4 * implied > limit:
        raise RunError(f"{path}: describes a model of about {implied:,} parameters "
                       f"({4 * implied / 2**30:,.1f} GiB in float32), more than {where} "
                       f"({limit / 2**30:,.1f} GiB): a damaged config.json or too large a model")
    if implied > 2 * stored + SLACK:
        raise RunError(f"{path}: describes a model of about {implied:,} parameters but the "
                       f"folder's weights hold {stored:,}: config.json does not belong to these "
                       f"weights (is it damaged?)")
