"""A BERT classifier's head as the Hugging Face tensors of ``BertForSequenceClassification``.

lmkit's `cls` pooling reads the ``[CLS]`` state directly, where BERT's head reads it through
its pooler, ``tanh(W h + b)``. The pooler is written as ``W = eps * I``, ``b = 0`` and the
classifier's weight divided by eps, with eps small enough that ``tanh(eps * h) = eps * h`` to
float32 precision (``|tanh x - x| <= |x|^3 / 3``, and ``|h|`` is bounded by the last
LayerNorm), so `transformers` computes the same logits. `lmkit export` writes these into a
whole classifier; a LoRA fine-tuning writes them into its adapter (peft's ``modules_to_save``),
and `load_classifier_adapter` reads them back.

>>> tensors = head_tensors(classifier)     # {"bert.pooler.dense.weight": ..., ...}  # doctest: +SKIP
>>> load_classifier_adapter("out/adapter", classifier)                               # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmkit.errors import ExportError, RunError

__all__ = ["head_tensors", "head_problem", "set_head", "load_classifier_adapter",
           "HEAD_MODULES"]

#: |tanh x - x| <= |x|^3 / 3: with |eps * h| <= this, the pooler is the identity times eps to
#: within 1e-10 relatively, far below float32's 6e-8
_POOLER_INPUT_BOUND = 1e-5
#: the modules of ``BertForSequenceClassification`` the head is (peft's ``modules_to_save``)
HEAD_MODULES = ("pooler", "classifier")


def _numpy(variable: Any) -> np.ndarray:
    from keras import ops

    return np.ascontiguousarray(ops.convert_to_numpy(variable), dtype=np.float32)


def head_problem(model: Any) -> str | None:
    """Why `model` (a classifier) has no ``BertForSequenceClassification`` head, or None."""
    from lmkit.evaluation.heads import SequenceClassifier
    from lmkit.models.bert import BERT

    if type(model) is not SequenceClassifier:
        return f"a {type(model).__name__} is not BertForSequenceClassification's one-label head"
    if type(model.backbone) is not BERT:
        return (f"this classifier's backbone is a {type(model.backbone).__name__}; a Hugging Face "
                f"BertForSequenceClassification needs a 'bert' backbone (a BERT or MiniLM "
                f"checkpoint)")
    if model.pooling != "cls":
        return (f"this classifier pools the hidden states with {model.pooling!r}; "
                f"BertForSequenceClassification reads the [CLS] state only. Fine-tune with "
                f"pooling='cls' (--set pooling=cls, the default for a pretrained encoder)")
    return None


def head_tensors(model: Any) -> dict[str, np.ndarray]:
    """The pooler and classifier tensors of ``BertForSequenceClassification`` computing
    `model`'s logits (module docstring); an `ExportError` (`head_problem`) when none can."""
    problem = head_problem(model)
    if problem:
        raise ExportError(problem)
    bert = model.backbone
    # the last LayerNorm bounds the [CLS] state: |x_hat_i| <= sqrt(D - 1) for a normalised x
    ln = bert.encoder_layers[-1].ln_output
    bound = float(np.max(np.abs(_numpy(ln.gamma))) * np.sqrt(bert.embed_dim - 1)
                  + np.max(np.abs(_numpy(ln.beta))))
    eps = _POOLER_INPUT_BOUND / max(bound, 1e-6)
    kernel, bias = _numpy(model.head.kernel), _numpy(model.head.bias)       # (D, labels), (labels,)
    return {f"{bert.hf_prefix}pooler.dense.weight": np.eye(bert.embed_dim, dtype=np.float32)
            * np.float32(eps),
            f"{bert.hf_prefix}pooler.dense.bias": np.zeros(bert.embed_dim, np.float32),
            "classifier.weight": np.ascontiguousarray((kernel / np.float32(eps)).T),
            "classifier.bias": bias}


def set_head(model: Any, tensors: dict[str, np.ndarray], source: str) -> None:
    """Set `model`'s head from `head_tensors`-form tensors (read from `source`). A pooler other
    than ``eps * I`` is a `RunError`: lmkit's head reads the [CLS] state without one."""
    prefix = model.backbone.hf_prefix
    pooler_w = tensors[f"{prefix}pooler.dense.weight"]
    eps = float(pooler_w[0, 0])
    if eps <= 0 or not (np.allclose(pooler_w, eps * np.eye(len(pooler_w)), rtol=0, atol=eps * 1e-6)
                        and not np.any(tensors[f"{prefix}pooler.dense.bias"])):
        raise RunError(f"{source}: its pooler is not a scaled identity: lmkit's classifier reads "
                       f"the [CLS] state without BERT's pooler, so it can load only heads that "
                       f"lmkit wrote (or a peft adapter without modules_to_save)")
    kernel = tensors["classifier.weight"].T * np.float32(eps)
    if kernel.shape != tuple(model.head.kernel.shape):
        raise RunError(f"{source}: its classifier is {kernel.shape} (in, labels); this "
                       f"classifier's head is {tuple(model.head.kernel.shape)}")
    model.head.kernel.assign(kernel)
    model.head.bias.assign(tensors["classifier.bias"])


def load_classifier_adapter(folder: str | Path, model: Any) -> None:
    """Fold the peft adapter in `folder` into `model`'s backbone (a classifier on the same base)
    and, when the adapter holds the head (``modules_to_save``), set the head from it."""
    from lmkit.adapters.peft_format import load_adapter, merge_adapter

    adapter = load_adapter(folder, model.backbone)
    merge_adapter(adapter)
    if adapter.head:
        set_head(model, adapter.head, str(folder))
