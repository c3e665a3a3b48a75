"""Hugging Face folders: an lmkit `gpt` run (or a `gpt2` checkpoint) as a `transformers`
``GPT2LMHeadModel``; a `llama` run or checkpoint as the ``LlamaForCausalLM``,
``MistralForCausalLM`` or ``Qwen2ForCausalLM`` it came from (its `hf_model_type`), weights under
the names of `lmkit.models.llama.llama_hf_weights`, the table loading reads.

The folder holds::

    config.json            GPT2Config: model_type gpt2, n_embd, n_layer, n_head, n_positions
                           (= seq_len), vocab_size, activation_function "gelu_new", ...
    model.safetensors      float32 weights under GPT-2's names
    tokenizer.json         the run's tokenizer as HF `tokenizers` (`Tokenizer.to_hf`): same ids
    tokenizer_config.json  so that ``AutoTokenizer`` gives a plain ``PreTrainedTokenizerFast``
    generation_config.json max_length = n_positions, so that ``generate()`` stays in the context

and loads with ``GPT2LMHeadModel.from_pretrained(DIR)`` / ``AutoTokenizer.from_pretrained(DIR)``.

lmkit's `gpt` computes what GPT-2 computes (pre-LayerNorm blocks, GELU with the tanh
approximation, which `transformers` calls ``gelu_new``, LayerNorm epsilon 1e-5, attention scaled
by 1/sqrt(head_dim), learned positions), with one difference: its head adds a learned bias to
the logits by default and GPT-2's ``lm_head`` has none. No GPT-2 weight can carry that bias
(softmax ignores only a bias equal for every token), so a run with one is refused;
``[model] head_bias = false`` trains one without it (a `gpt2` checkpoint's bias is zero until
trained, so `lmkit.from_pretrained` of one exports back). Weights are written under the names
loading reads them from, one table per architecture: `lmkit.models.gpt2.gpt2_hf_weights` under
``transformer.`` (GPT-2's ``Conv1D`` stores ``(in, out)``, as lmkit does), and an untied head as
``lm_head.weight``, transposed, with ``tie_word_embeddings`` false.

A classifier fine-tuned on a `bert` backbone (`lmkit eval CHECKPOINT --task T --out DIR`, or an
`EvalResult`) becomes a ``BertForSequenceClassification`` folder: the encoder's weights under
``bert.`` (the table `BERT.hf_weights` that loading reads), ``num_labels`` and ``id2label`` from the
task, and the checkpoint's own ``tokenizer.json`` (``[CLS] a [SEP] b [SEP]`` with token types).
BERT's head reads the ``[CLS]`` state through its pooler, ``tanh(W h + b)``, where lmkit's `cls`
pooling reads it directly; the pooler is written as a scaled identity
(`lmkit.evaluation.hf_head`), so `transformers` computes the same logits. Only `cls` pooling has
this form.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lmkit.config import TrainConfig
from lmkit.config.tomltext import toml_value
from lmkit.errors import ExportError
from lmkit.training.run import Run

__all__ = ["check", "write"]


def check(config: TrainConfig) -> None:
    """Refuse a run from its configuration, before its weights are loaded: an architecture with
    no Hugging Face equivalent, or a `gpt` with a head bias, raises `ExportError`."""
    from lmkit.registry import architectures

    converters = _converters()
    factory = architectures.get(config.arch)
    if factory not in converters:  # a classifier is not an architecture: never found here
        exportable = [e.name for e in architectures.list() if e.obj in converters]
        raise ExportError(
            f"a '{config.arch}' model has no Hugging Face equivalent, so the run cannot be "
            f"exported; exportable architectures: {', '.join(exportable)}"
        )
    converters[factory].check(config)


def write(source: Any, folder: Path) -> None:
    """Write `source` into the (empty) `folder` as a Hugging Face model folder: a `Run`, or a
    fine-tuned classifier (`lmkit.evaluation.evaluator.FineTuned`, `EvalResult`: ``model``,
    ``tokenizer`` and ``task``)."""
    from safetensors.numpy import save_file

    convert = _converter(source)
    config, tensors, tokenizer_options = convert(source)
    tokenizer = source.tokenizer.to_hf()
    if tokenizer.get_vocab_size() != config["vocab_size"]:  # a plugin tokenizer's to_hf
        raise ExportError(
            f"the run's tokenizer converts to a Hugging Face tokenizer of "
            f"{tokenizer.get_vocab_size()} ids, but the model has {config['vocab_size']}"
        )
    context = config.get("n_positions") or config["max_position_embeddings"]
    _write_json(folder / "config.json", config)
    if "n_positions" in config:
        # `generate` without a length stops at the context instead of running past the positions
        _write_json(folder / "generation_config.json", {"max_length": context})
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(str(folder / "tokenizer.json"))
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context,
        # keep decoded text as the tokenizer decodes it (no " ." -> "." clean-up)
        "clean_up_tokenization_spaces": False,
        **tokenizer_options,
    })


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _numpy(variable: Any) -> np.ndarray:
    from keras import ops

    return np.ascontiguousarray(ops.convert_to_numpy(variable), dtype=np.float32)


def _hf_tensors(weights: list[Any], prefix: str) -> dict[str, np.ndarray]:
    """An architecture's weight table (`lmkit.models.base.HFWeight`s, the one loading reads)
    turned around: each variable under its checkpoint names, split where loading concatenated
    and transposed back where loading transposed."""
    tensors: dict[str, np.ndarray] = {}
    for weight in weights:
        value = _numpy(weight.variable)
        for name, part in zip(weight.names, np.split(value, len(weight.names), axis=-1)):
            tensors[f"{prefix}{name}"] = np.ascontiguousarray(part.T if weight.transpose else part)
    return tensors


#: `gpt` options GPT-2 has no equivalent for, with the value that is GPT-2's computation
#: (`head_bias`: GPT-2's lm_head adds no bias to the logits)
_GPT2_PLAIN = {"head_bias": False, "rotary": False, "qk_norm": False, "mlp": "gelu",
               "norm": "layernorm", "logit_softcap": 0.0}
#: the value of each when a run's [model] table leaves it out
_GPT_DEFAULT = {"head_bias": True}


def _check_gpt2(config: TrainConfig) -> None:
    changed = {k: config.model.get(k, _GPT_DEFAULT.get(k, plain)) for k, plain in _GPT2_PLAIN.items()}
    changed = {k: v for k, v in changed.items() if v != _GPT2_PLAIN[k]}
    if changed:
        said = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        fix = " ".join(f"--set model.{k}={toml_value(_GPT2_PLAIN[k])}" for k in changed)
        raise ExportError(
            f"this gpt run uses [model] {said}, which GPT-2 (transformers' GPT2LMHeadModel, whose "
            f"lm_head has no bias) does not compute; `gpt`'s defaults include the speedrun "
            f"options. Train an exportable run with: {fix}")


def _gpt2(run: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    """`gpt` or `gpt2` -> (GPT2Config fields, GPT2LMHeadModel weights, no tokenizer options)."""
    from lmkit.models.gpt2 import GPT2, gpt2_hf_weights

    model = run.model
    if model.head_bias is not None and np.any(_numpy(model.head_bias)):  # zero: GPT-2's logits
        raise ExportError(_GPT2_HEAD_BIAS)
    tensors = _hf_tensors(gpt2_hf_weights(model), GPT2.hf_prefix)
    if model.head_kernel is not None:
        tensors["lm_head.weight"] = np.ascontiguousarray(_numpy(model.head_kernel).T)
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": model.vocab_size,
        "n_positions": model.seq_len,
        "n_embd": model.embed_dim,
        "n_layer": model.num_layers,
        "n_head": model.heads,
        "n_inner": None,  # 4 * n_embd, as lmkit's MLP
        "activation_function": "gelu_new",  # keras.ops.gelu's default: the tanh approximation
        "layer_norm_epsilon": model.ln_f.epsilon,
        # lmkit uses one dropout rate for embeddings, attention weights and residual branches
        "embd_pdrop": model.dropout_rate,
        "attn_pdrop": model.dropout_rate,
        "resid_pdrop": model.dropout_rate,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": model.head_kernel is None,
        # lmkit's tokenizers have no special tokens (GPT2Config's default 50256 would be wrong)
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "use_cache": True,
        "dtype": "float32",
    }
    return config, tensors, {}


#: tokenizer_config.json keys of BERT's special tokens (a tokenizer pads with its pad_token)
_BERT_SPECIAL_TOKENS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]",
                        "mask_token": "[MASK]"}


def _bert_classifier(source: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    """A `SequenceClassifier` on `bert` -> (BertConfig fields, BertForSequenceClassification
    weights, tokenizer options: special tokens and token types); the pooler passes the ``[CLS]`` state through scaled by eps
    (module docstring)."""
    from lmkit.evaluation.hf_head import head_tensors

    model, task = source.model, source.task
    bert = model.backbone
    head = head_tensors(model)  # refuses a head BertForSequenceClassification cannot compute
    tensors = {**_hf_tensors(bert.hf_weights(), bert.hf_prefix), **head}
    labels = list(task.display_labels) if task.shape.has("class_labels") else ["score"]
    config = {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "vocab_size": bert.vocab_size,
        "hidden_size": bert.embed_dim,
        "num_hidden_layers": bert.num_layers,
        "num_attention_heads": bert.heads,
        "intermediate_size": bert.ffn_dim,
        "hidden_act": "gelu",  # the exact (erf) form, as lmkit's `bert`
        "hidden_dropout_prob": bert.dropout_rate,
        "attention_probs_dropout_prob": bert.attention_dropout,
        "classifier_dropout": float(model.drop.rate),
        "max_position_embeddings": bert.seq_len,
        "type_vocab_size": bert.type_vocab_size,
        "layer_norm_eps": bert.layer_norm_eps,
        "initializer_range": 0.02,
        "pad_token_id": bert.pad_token_id,
        "sep_token_id": bert.sep_token_id,
        "position_embedding_type": "absolute",
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
        "problem_type": "single_label_classification" if task.shape.has("class_labels") else "regression",
        "finetuning_task": task.name,
        "dtype": "float32",
    }
    tokenizer = source.tokenizer
    special = {key: token for key, token in _BERT_SPECIAL_TOKENS.items()
               if tokenizer.token_id(token) is not None}
    pad = tokenizer.hf.id_to_token(bert.pad_token_id)
    if pad is not None:
        special["pad_token"] = pad
    # token types mark a pair's second segment; without them transformers would read zeros
    return config, tensors, {**special, "model_input_names": ["input_ids", "token_type_ids",
                                                            "attention_mask"]}


def _llama_layout(model: Any) -> dict[str, Any]:
    """The ``config.json`` fields of `model.hf_model_type` that carry its biases and window, or
    an `ExportError` naming the option that layout cannot hold."""
    from lmkit.models.llama import HF_MODEL_TYPES

    kind, window = model.hf_model_type, model.sliding_window
    biases = (model.qkv_bias, model.out_bias, model.mlp_bias)
    if kind == "llama" and not window and model.qkv_bias == model.out_bias:
        return {"attention_bias": model.qkv_bias, "mlp_bias": model.mlp_bias}
    if kind == "mistral" and not any(biases) and not model.max_window_layers:
        return {"sliding_window": window or None}
    if kind == "qwen2" and biases == (True, False, False):
        return {"use_sliding_window": bool(window), "sliding_window": window or None,
                "max_window_layers": model.max_window_layers if window else model.num_layers}
    said = (f"qkv_bias={model.qkv_bias}, out_bias={model.out_bias}, mlp_bias={model.mlp_bias}, "
            f"sliding_window={window}, max_window_layers={model.max_window_layers}")
    raise ExportError(
        f"this llama model's hf_model_type is {kind!r}, but {HF_MODEL_TYPES[kind]} cannot hold its "
        f"options ({said}): llama has no sliding window and biases either all four attention "
        f"projections or none; mistral has no biases and one window on every layer; qwen2 "
        f"biases query, key and value only. Set [model] hf_model_type to the layout that fits")


def _check_llama(config: TrainConfig) -> None:
    """Refuse a `llama` run whose options its `hf_model_type` cannot hold, from its config (the
    model is constructed, not built: no weights)."""
    from lmkit.models.llama import Llama

    _llama_layout(Llama(1, **config.model_kwargs(inspect.signature(Llama).parameters)))


def _llama(source: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    """`llama` -> (the ``LlamaConfig`` / ``MistralConfig`` / ``Qwen2Config`` fields of its
    `hf_model_type`, ``*ForCausalLM`` weights, no tokenizer options). The token ids a
    checkpoint's config names (bos, eos, pad) are kept when the source is a `Pretrained`."""
    from lmkit.models.llama import HF_MODEL_TYPES, llama_hf_weights

    model = source.model
    original = source.config if isinstance(source.config, dict) else {}
    config = {
        "architectures": [HF_MODEL_TYPES[model.hf_model_type]],
        "model_type": model.hf_model_type,
        "vocab_size": model.vocab_size,
        "hidden_size": model.embed_dim,
        "intermediate_size": model.ffn_dim,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.heads,
        "num_key_value_heads": model.kv_heads,
        "head_dim": model.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": model.max_position_embeddings,
        "rms_norm_eps": model.rms_eps,
        # the spelling both transformers 4 and 5 read
        "rope_theta": model.rope_theta,
        "rope_scaling": model.rope_scaling or None,
        "attention_dropout": model.dropout_rate,
        "tie_word_embeddings": model.tie_embeddings,
        **_llama_layout(model),
        **{k: original.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
        "initializer_range": 0.02,
        "use_cache": True,
        "dtype": "float32",
    }
    return config, _hf_tensors(llama_hf_weights(model), ""), {}


class _Converter(NamedTuple):
    check: Callable[[TrainConfig], None] | None  # refuse a run from its config alone (runs only)
    #: -> (config.json, weights, tokenizer_config.json options: special tokens, input names)
    convert: Callable[[Any], tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]]


def _converters() -> dict[type, _Converter]:
    from lmkit.evaluation.heads import SequenceClassifier
    from lmkit.models.gpt import GPT
    from lmkit.models.gpt2 import GPT2
    from lmkit.models.llama import Llama

    gpt2 = _Converter(_check_gpt2, _gpt2)  # `gpt2` is `gpt` with its own number of positions
    return {GPT: gpt2, GPT2: gpt2, Llama: _Converter(_check_llama, _llama),
            SequenceClassifier: _Converter(None, _bert_classifier)}


def _converter(source: Any) -> Callable[[Any], tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]]:
    if isinstance(source, Run):
        check(source.config)
    # the model's exact class: a subclass may compute something else with the same weights
    converter = _converters().get(type(source.model))
    if converter is None:
        what = (f"the '{source.config.arch}' architecture's own class" if isinstance(source, Run)
                else "a run's language model or a classifier with one label per example")
        raise ExportError(f"{getattr(source, 'dir', 'this source')} holds a "
                          f"{type(source.model).__name__} model, not {what}, so it cannot be exported")
    return converter.convert
