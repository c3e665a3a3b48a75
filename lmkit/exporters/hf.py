"""Hugging Face folders: an lmkit `gpt` run (or a `gpt2` checkpoint) as a `transformers`
``GPT2LMHeadModel`` when it has GPT-2's options, else with lmkit's own modeling code
(``LmkitGPTForCausalLM``, ``trust_remote_code=True``); a `llama` run or checkpoint as the
``LlamaForCausalLM``, ``MistralForCausalLM`` or ``Qwen2ForCausalLM`` it came from (its
`hf_model_type`), weights under the names of `lmkit.models.llama.llama_hf_weights`, the table
loading reads.

The folder of a `gpt` holds::

    config.json            GPT2Config: model_type gpt2, n_embd, n_layer, n_head, n_positions
                           (= seq_len), vocab_size, activation_function "gelu_new", ...; or
                           model_type lmkit_gpt with the options and an auto_map
    model.safetensors      float32 weights under GPT-2's names (and lm_head.bias)
    tokenizer.json         the run's tokenizer as HF `tokenizers` (`Tokenizer.to_hf`): same ids
    tokenizer_config.json  so that ``AutoTokenizer`` gives a plain ``PreTrainedTokenizerFast``
    generation_config.json max_length = n_positions, so that ``generate()`` stays in the context
    *_lmkit_gpt.py         lmkit's modeling code (``remote_code/``), for model_type lmkit_gpt

and loads with ``AutoModelForCausalLM.from_pretrained(DIR)`` (plus ``trust_remote_code=True``
for lmkit's code) / ``AutoTokenizer.from_pretrained(DIR)``.

lmkit's `gpt` with GPT-2's options computes what GPT-2 computes (pre-LayerNorm blocks, GELU with
the tanh approximation, which `transformers` calls ``gelu_new``, LayerNorm epsilon 1e-5,
attention scaled by 1/sqrt(head_dim), learned positions), but for a learned bias its head adds
to the logits by default, which no GPT-2 weight can carry (softmax ignores only a bias equal for
every token). The default `gpt` also turns on rotary positions, qk-norm and relu², which no
`transformers` class computes together with a LayerNorm and that bias (Llama has RMSNorm and no
qk-norm; Phi's qk-norm has a learned scale). So any `gpt` that is not GPT-2's function is
written with two small PyTorch files of lmkit's (``remote_code/``) that compute each option as
lmkit does. Weights are written under the names loading reads them from, one table per
architecture: `lmkit.models.gpt2.gpt2_hf_weights` under ``transformer.`` (GPT-2's ``Conv1D``
stores ``(in, out)``, as lmkit does), and an untied head as ``lm_head.weight``, transposed, with
``tie_word_embeddings`` false.

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
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lmkit.config import TrainConfig
from lmkit.errors import ExportError
from lmkit.training.run import Run

__all__ = ["check", "gpt_options", "needs_remote_code", "write"]


def check(config: TrainConfig) -> None:
    """Refuse a run from its configuration, before its weights are loaded: an architecture with
    no Hugging Face equivalent, or a `llama` whose options its layout cannot hold, raises
    `ExportError`."""
    from lmkit.registry import architectures

    converters = _converters()
    factory = architectures.get(config.arch)
    if factory not in converters:  # a classifier is not an architecture: never found here
        exportable = [e.name for e in architectures.list() if e.obj in converters]
        raise ExportError(
            f"a '{config.arch}' model has no Hugging Face equivalent, so the run cannot be "
            f"exported; exportable architectures: {', '.join(exportable)}"
        )
    if converters[factory].check is not None:
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
    for module in {name.split(".")[0] for name in config.get("auto_map", {}).values()}:
        shutil.copyfile(_REMOTE_CODE / f"{module}.py", folder / f"{module}.py")
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


#: `gpt` options with the value that is GPT-2's computation (`head_bias`: GPT-2's lm_head adds
#: no bias to the logits); a model with another value is written with lmkit's modeling code
_GPT2_PLAIN = {"rotary": False, "qk_norm": False, "mlp": "gelu", "norm": "layernorm",
               "logit_softcap": 0.0}
#: the modeling code written beside a model no standard transformers class computes
_REMOTE_CODE = Path(__file__).parent / "remote_code"
_LMKIT_GPT_AUTO_MAP = {"AutoConfig": "configuration_lmkit_gpt.LmkitGPTConfig",
                       "AutoModelForCausalLM": "modeling_lmkit_gpt.LmkitGPTForCausalLM"}


def gpt_options(model: Any) -> dict[str, Any]:
    """The options of a `gpt` (or `gpt2`) model that GPT-2 does not compute, with their values
    (``head_bias`` when the model has a bias that is not all zero); empty for GPT-2's computation.

    >>> gpt_options(lmkit.load("runs/gpt-default").model)        # doctest: +SKIP
    {'rotary': True, 'qk_norm': True, 'mlp': 'relu2', 'head_bias': True}
    """
    changed = {k: getattr(model, k) for k, plain in _GPT2_PLAIN.items() if getattr(model, k) != plain}
    if model.head_bias is not None and np.any(_numpy(model.head_bias)):  # zero: GPT-2's logits
        changed["head_bias"] = True
    return changed


def needs_remote_code(folder: str | Path) -> bool:
    """Whether the exported `folder` loads only with ``trust_remote_code=True`` (it carries
    lmkit's modeling code: a `gpt` with options no `transformers` class computes).

    >>> needs_remote_code(lmkit.export("runs/gpt-default", "exported/default"))  # doctest: +SKIP
    True
    """
    config = Path(folder) / "config.json"
    return config.is_file() and "auto_map" in json.loads(config.read_text(encoding="utf-8"))


def _gpt(run: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    """`gpt` or `gpt2` -> (config.json, weights under GPT-2's names, no tokenizer options): a
    ``GPT2LMHeadModel`` when the model computes GPT-2's function, a ``LlamaForCausalLM`` when it
    computes Llama's (`_LLAMA_EXACT`), else lmkit's own modeling code (``remote_code/``:
    ``LmkitGPTForCausalLM``, GPT-2's names plus ``lm_head.bias``)."""
    from lmkit.models.gpt2 import GPT2, gpt2_hf_weights

    model = run.model
    options = gpt_options(model)
    if options == _LLAMA_EXACT:
        return _gpt_as_llama(model)
    tensors = _hf_tensors(gpt2_hf_weights(model), GPT2.hf_prefix)
    if model.head_kernel is not None:
        tensors["lm_head.weight"] = np.ascontiguousarray(_numpy(model.head_kernel).T)
    common = {
        "vocab_size": model.vocab_size,
        "n_positions": model.seq_len,
        "n_embd": model.embed_dim,
        "n_layer": model.num_layers,
        "n_head": model.heads,
        "layer_norm_epsilon": model.ln_f.epsilon,
        "initializer_range": 0.02,
        "tie_word_embeddings": model.head_kernel is None,
        # lmkit's tokenizers have no special tokens (GPT2Config's default 50256 would be wrong)
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "use_cache": True,
        "dtype": "float32",
    }
    if options:
        if model.head_bias is not None:
            tensors["lm_head.bias"] = _numpy(model.head_bias)
        config = {
            "architectures": ["LmkitGPTForCausalLM"],
            "model_type": "lmkit_gpt",
            "auto_map": _LMKIT_GPT_AUTO_MAP,
            **common,
            "dropout": model.dropout_rate,
            **{k: getattr(model, k) for k in _GPT2_PLAIN},
            "head_bias": model.head_bias is not None,
        }
        return config, tensors, {}
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        **common,
        "n_inner": None,  # 4 * n_embd, as lmkit's MLP
        "activation_function": "gelu_new",  # keras.ops.gelu's default: the tanh approximation
        # lmkit uses one dropout rate for embeddings, attention weights and residual branches
        "embd_pdrop": model.dropout_rate,
        "attn_pdrop": model.dropout_rate,
        "resid_pdrop": model.dropout_rate,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
    }
    return config, tensors, {}


#: the `gpt` options (beyond GPT-2's) that are exactly a Llama: RMSNorm, rotary positions (half
#: split, base 10000) and relu² = relu(h) * h, a gated MLP whose gate and up projections are w_fc
_LLAMA_EXACT = {"rotary": True, "norm": "rmsnorm", "mlp": "relu2"}


def _gpt_as_llama(model: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    """A `gpt` of `_LLAMA_EXACT` options -> (LlamaConfig fields, LlamaForCausalLM weights): the
    fused q|k|v split per projection, every bias kept (``attention_bias``, ``mlp_bias``)."""
    d = model.embed_dim
    tensors = {"model.embed_tokens.weight": _numpy(model.embedding),
               "model.norm.weight": _numpy(model.ln_f.scale)}
    if model.head_kernel is not None:
        tensors["lm_head.weight"] = np.ascontiguousarray(_numpy(model.head_kernel).T)
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        w_qkv, b_qkv = _numpy(block.w_qkv), _numpy(block.b_qkv)
        linear = {  # Linear weights are stored (out, in)
            "self_attn.q_proj": (w_qkv[:, :d], b_qkv[:d]),
            "self_attn.k_proj": (w_qkv[:, d:2 * d], b_qkv[d:2 * d]),
            "self_attn.v_proj": (w_qkv[:, 2 * d:], b_qkv[2 * d:]),
            "self_attn.o_proj": (_numpy(block.w_proj), _numpy(block.b_proj)),
            "mlp.gate_proj": (_numpy(block.w_fc), _numpy(block.b_fc)),
            "mlp.up_proj": (_numpy(block.w_fc), _numpy(block.b_fc)),
            "mlp.down_proj": (_numpy(block.w_out), _numpy(block.b_out)),
        }
        for name, (kernel, bias) in linear.items():
            tensors[f"{p}{name}.weight"] = np.ascontiguousarray(kernel.T)
            tensors[f"{p}{name}.bias"] = np.ascontiguousarray(bias)
        tensors[f"{p}input_layernorm.weight"] = _numpy(block.ln_1.scale)
        tensors[f"{p}post_attention_layernorm.weight"] = _numpy(block.ln_2.scale)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": model.vocab_size, "hidden_size": d, "intermediate_size": 4 * d,
        "num_hidden_layers": model.num_layers, "num_attention_heads": model.heads,
        "num_key_value_heads": model.heads, "head_dim": d // model.heads,
        "hidden_act": "relu",  # relu(gate) * up with gate = up = h: relu²
        "max_position_embeddings": model.seq_len, "rms_norm_eps": model.ln_f.epsilon,
        "rope_theta": 10000.0, "rope_scaling": None, "attention_bias": True, "mlp_bias": True,
        "attention_dropout": model.dropout_rate, "tie_word_embeddings": model.head_kernel is None,
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        "initializer_range": 0.02, "use_cache": True, "dtype": "float32",
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

    gpt = _Converter(None, _gpt)  # `gpt2` is `gpt` with its own number of positions
    return {GPT: gpt, GPT2: gpt, Llama: _Converter(_check_llama, _llama),
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
