"""Tiny instances of registered architectures, shared by the model tests."""

from __future__ import annotations

import inspect
from typing import Any

from lmkit.registry import architectures

VOCAB = 13
TINY = {"embed_dim": 16, "units": 16, "layers": 2, "heads": 2, "seq_len": 12, "kernel_size": 3}


def tiny(name: str, vocab: int = VOCAB, **overrides: Any) -> Any:
    """A small model of architecture `name`, given the generic options its constructor accepts."""
    cls = architectures.get(name)
    accepted = inspect.signature(cls).parameters
    options = {k: v for k, v in {**TINY, **overrides}.items() if k in accepted}
    return cls(vocab, **options)
