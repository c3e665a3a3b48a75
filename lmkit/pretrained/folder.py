"""Reading a Hugging Face checkpoint folder offline: ``config.json``, safetensors weights (one file
or shards with ``model.safetensors.index.json``) and ``tokenizer.json``.

Only safetensors are read (plain arrays, no code runs); a folder holding only PyTorch pickles is
refused with the conversion to run. The architecture is the registry entry whose class declares
the folder's ``model_type`` in ``hf_model_types``; that class builds itself from the config
(``from_hf_config``) and names the tensors each of its variables comes from (``hf_weights``).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lmkit.errors import RunError, RunWarning
from lmkit.registry import Entry, architectures, pretrained

__all__ = ["is_checkpoint", "read_config", "architecture_for", "read_tokenizer", "read_weights",
           "load_weights", "stored_parameters"]

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def is_checkpoint(path_or_name: str | os.PathLike[str]) -> bool:
    """Whether `path_or_name` is a pretrained checkpoint rather than an lmkit run: a folder
    holding ``config.json`` (Hugging Face's layout; a run holds ``config.toml``), or a name of
    the `pretrained` registry that is no existing path. Every front end and `lmkit.evaluate`
    ask this one question.

    >>> is_checkpoint("runs/lstm-20261128-101500"), is_checkpoint("minilm-l6")  # doctest: +SKIP
    (False, True)
    """
    path = Path(os.fspath(path_or_name)).expanduser()
    if (path / CONFIG_FILE).is_file():
        return True
    return not path.exists() and os.fspath(path_or_name) in pretrained


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of `folder` as a dict; a missing folder or file is a `RunError`."""
    if not folder.is_dir():
        raise RunError(f"pretrained checkpoint folder '{folder}' does not exist")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"'{folder}' is not a Hugging Face checkpoint: it has no {CONFIG_FILE} "
                       f"(a checkpoint folder holds {CONFIG_FILE}, {WEIGHTS_FILE} and "
                       f"{TOKENIZER_FILE})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise RunError(f"{path}: has no \"model_type\" (which architecture the weights are for)")
    return config


def architecture_for(config: dict[str, Any], folder: Path) -> Entry[Any]:
    """The architecture entry whose class reads ``config["model_type"]``."""
    model_type = config["model_type"]
    readers = {t: e for e in architectures.list() for t in getattr(e.obj, "hf_model_types", ())}
    if model_type not in readers:
        raise RunError(f"{folder / CONFIG_FILE}: model_type {model_type!r} is not supported; lmkit "
                       f"reads: {', '.join(sorted(readers))}")
    return readers[model_type]


#: a tokenizer covering less than this share of the embedding rows is probably the wrong one
#: (checkpoints pad their vocabulary by a few percent at most, e.g. 50257 -> 50304)
UNUSED_ROWS_WARNING = 0.9


def read_tokenizer(folder: Path, vocab_size: int) -> Any:
    """The folder's ``tokenizer.json``, checked against the model's `vocab_size`."""
    from lmkit.tokenizers import PretrainedTokenizer

    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise RunError(f"'{folder}' has no {TOKENIZER_FILE}: lmkit reads the fast (Rust) tokenizer "
                       f"file; save it with `tokenizer.save_pretrained(folder)` from a "
                       f"PreTrainedTokenizerFast")
    tokenizer = PretrainedTokenizer.from_file(path)
    # Checkpoints may pad the embedding beyond the vocabulary (GPT-2's 50257 is exact, others
    # round up), never the other way: a token id past the embedding would be clipped to the last
    # row on an accelerator and read some other token's vector, without a word. Ids, not the
    # count: a vocabulary may skip ids.
    top = max(tokenizer.hf.get_vocab(with_added_tokens=True).values(), default=-1)
    if max(tokenizer.vocab_size, top + 1) > vocab_size:
        raise RunError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the model's "
                       f"vocab_size (config.json) is {vocab_size} and the tokenizer's ids go up "
                       f"to {top}: they belong to different checkpoints")
    if tokenizer.vocab_size < UNUSED_ROWS_WARNING * vocab_size:
        warnings.warn(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the model's "
                      f"vocab_size (config.json) is {vocab_size}: most embedding rows would never "
                      f"be used, so the tokenizer is probably another checkpoint's", RunWarning,
                      stacklevel=3)
    return tokenizer


def _weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it."""
    from safetensors import safe_open

    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise RunError(f"{index}: not a safetensors index ({type(exc).__name__}: {exc})") from None
        if not isinstance(weight_map, dict):
            raise RunError(f"{index}: \"weight_map\" must map tensor names to shard files, got "
                           f"{type(weight_map).__name__}")
        outside = sorted({repr(f) for f in weight_map.values() if not _inside(f)})
        if outside:
            raise RunError(f"{index}: shards must be files of the checkpoint folder, but it names "
                           f"{', '.join(outside)}: refused (a damaged or planted index)")
        missing = sorted({f for f in weight_map.values() if not (folder / f).is_file()})
        if missing:
            raise RunError(f"'{folder}' is incomplete: {INDEX_FILE} names shards that are not "
                           f"there: {', '.join(missing)}")
        return {name: folder / f for name, f in weight_map.items()}
    single = folder / WEIGHTS_FILE
    if single.is_file():
        try:
            with safe_open(str(single), framework="numpy") as f:
                return {name: single for name in f.keys()}
        except Exception as exc:  # safetensors raises its own SafetensorError on a damaged file
            raise RunError(f"{single}: not a readable safetensors file ({exc})") from None
    if any((folder / p).is_file() for p in _PICKLES):
        raise RunError(
            f"'{folder}' holds PyTorch pickle weights (pytorch_model.bin) only; lmkit reads "
            f"safetensors, which cannot run code. Convert once with transformers: "
            f"`AutoModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)`")
    raise RunError(f"'{folder}' has no weights: expected {WEIGHTS_FILE} (or sharded files with "
                   f"{INDEX_FILE})")


def _inside(name: Any) -> bool:
    """Whether a shard name of an index stays inside the checkpoint folder: a relative path
    without '..' (checked on the name: a Hub cache's files are links into its blob store)."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    path = Path(name)
    return not path.is_absolute() and ".." not in path.parts


def stored_parameters(folder: Path) -> int:
    """How many numbers the folder's safetensors hold, from their headers (nothing is read)."""
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = {}
    for name, path in _weight_files(folder).items():
        by_file.setdefault(path, []).append(name)
    total = 0
    for path, names in by_file.items():
        with safe_open(str(path), framework="numpy") as f:
            total += sum(math.prod(f.get_slice(n).get_shape()) for n in names)
    return total


def read_weights(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The tensors `names` of the folder's safetensors (one file or shards), as NumPy arrays."""
    from safetensors import safe_open

    files = _weight_files(folder)
    by_file: dict[Path, list[str]] = {}
    for name in names:
        if name in files:
            by_file.setdefault(files[name], []).append(name)
    out: dict[str, np.ndarray] = {}
    for path, wanted in by_file.items():
        with safe_open(str(path), framework="numpy") as f:
            for name in wanted:
                out[name] = f.get_tensor(name)
    return out


def _check_values(name: str, array: np.ndarray, folder: Path) -> None:
    """Refuse a tensor that is no float (a quantized int8, a bool) or holds NaN or infinity:
    either would give wrong outputs without a word."""
    if not np.issubdtype(array.dtype, np.floating):
        raise RunError(f"weight {name!r} in '{folder}' is stored as {array.dtype}; lmkit reads "
                       f"float weights (float32, float16): a quantized or damaged checkpoint")
    if not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise RunError(f"weight {name!r} in '{folder}' holds {bad:,} NaN or infinite values of "
                       f"{array.size:,}: the checkpoint is damaged")


def load_weights(model: Any, folder: Path) -> None:
    """Assign every variable of `model` from the folder's tensors (``model.hf_weights()``).

    A tensor may carry the task-head prefix of its class (``bert.``, ``transformer.``); tensors
    the model does not use (a pooler, a task head) are ignored. A missing tensor, a shape
    that does not fit, a tensor that is no float or holds NaN or infinity is a `RunError`
    naming the tensor.
    """
    files = _weight_files(folder)
    prefix = getattr(model, "hf_prefix", "")
    plan = model.hf_weights()
    planned = {id(w.variable) for w in plan}
    unplanned = [v.path for v in model.weights if id(v) not in planned]
    if unplanned:  # `from_pretrained` leaves them zero: the architecture's mapping is incomplete
        raise RunError(f"{type(model).__name__}.hf_weights() names no checkpoint tensor for "
                       f"{', '.join(unplanned)}: every weight must be read from the checkpoint")
    wanted = [n for w in plan for n in w.names]
    resolved = {n: n if n in files else prefix + n for n in wanted}
    missing = [n for n, found in resolved.items() if found not in files]
    if missing:
        raise RunError(f"'{folder}' lacks weight {missing[0]!r}"
                       + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                       + f" that a {type(model).__name__} needs: the checkpoint is partial or of "
                       f"another architecture")
    arrays = read_weights(folder, list(resolved.values()))
    for name, array in arrays.items():
        _check_values(name, array, folder)
    for weight in filter(lambda w: w.names, plan):  # no names: kept as built
        stored = [arrays[resolved[n]] for n in weight.names]
        parts = [p.T for p in stored] if weight.transpose else stored
        expected = tuple(weight.variable.shape)
        fits = len({p.shape[:-1] for p in parts}) == 1
        value = np.concatenate(parts, axis=-1) if fits and len(parts) > 1 else parts[0]
        if not fits or tuple(value.shape) != expected:
            # shapes as the file stores them (a Linear weight is (out, in))
            need = expected[::-1] if weight.transpose else expected
            if len(parts) > 1:
                need = f"{len(parts)} pieces making {expected} after transposing"
            got = " + ".join(str(tuple(p.shape)) for p in stored)
            raise RunError(f"weight {' + '.join(resolved[n] for n in weight.names)!r} in '{folder}' "
                           f"has shape {got}, but the model built from config.json needs {need}")
        weight.variable.assign(value.astype(weight.variable.dtype))
