"""LoRA adapters as files Hugging Face `peft` reads and writes.

A folder holds ``adapter_config.json`` (``peft_type = "LORA"``, ``r``, ``lora_alpha``, the
target modules) and ``adapter_model.safetensors``: for each adapted module ``M`` of the
Hugging Face model, ``base_model.model.M.lora_A.weight`` ``(r, in)`` and ``...lora_B.weight``
``(out, r)``. lmkit's ``A (in, r)`` and ``B (r, out)`` are their transposes whatever the
layout of the kernel (``Linear`` or GPT-2's ``Conv1D``: peft's ``fan_in_fan_out``), since both
compute ``x A B``. Module names come from the architecture's weight table
(`lmkit.adapters.lora.lora_units`), prefixed as the Hugging Face model class that lmkit exports
names them (`hf_prefix`: ``transformer.`` for GPT-2, ``bert.`` for BERT).

>>> save_adapter("adapter/", units, params, rank=8, alpha=16, prefix="bert.")   # doctest: +SKIP
>>> adapter = load_adapter("adapter/", model)                                     # doctest: +SKIP
>>> merge_adapter(adapter)            # the model's kernels now include the adapter  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lmkit.adapters.lora import LoraUnit, apply_delta, lora_units
from lmkit.errors import RunError
from lmkit.paths import atomic_directory

__all__ = ["Adapter", "save_adapter", "save_trained", "load_adapter", "merge_adapter", "ADAPTER_CONFIG",
           "ADAPTER_WEIGHTS"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_ROOT = "base_model.model."


class Adapter(NamedTuple):
    """An adapter over a model's kernels: `units`, their ``A, B`` pairs (`params`, host arrays
    ``(in, r)`` and ``(r, out)``) and the `scale` of ``A B``; `head`: the whole modules it
    saves (peft's ``modules_to_save``, e.g. a classifier's head), Hugging Face tensor name ->
    array."""

    units: list[LoraUnit]
    params: list[np.ndarray]
    scale: float
    head: dict[str, np.ndarray] = {}


def save_adapter(folder: str | Path, units: Sequence[LoraUnit], params: Sequence[Any], *,
                 rank: int, alpha: float, prefix: str = "", base_model: str | None = None,
                 head: Mapping[str, np.ndarray] | None = None, modules: Sequence[str] = (),
                 overwrite: bool = False) -> Path:
    """Write the adapter of `units` (their ``A, B`` `params`, in order) in peft's layout;
    `prefix` goes before each module name (the Hugging Face model's, e.g. ``transformer.``).
    `head`: whole tensors saved beside the adapter (Hugging Face names), in peft's
    ``modules_to_save`` layout under the module names `modules`, for a sequence classifier
    (peft's ``task_type`` ``SEQ_CLS``)."""
    from safetensors.numpy import save_file

    tensors = {f"{_ROOT}{name}": np.ascontiguousarray(value, np.float32)
               for name, value in (head or {}).items()}
    for k, u in enumerate(units):
        key = f"{_ROOT}{prefix}{u.name}"
        tensors[f"{key}.lora_A.weight"] = np.ascontiguousarray(np.asarray(params[2 * k]).T, np.float32)
        tensors[f"{key}.lora_B.weight"] = np.ascontiguousarray(np.asarray(params[2 * k + 1]).T,
                                                               np.float32)
    config = {
        "peft_type": "LORA", "task_type": "SEQ_CLS" if head else None,
        "base_model_name_or_path": base_model,
        "r": rank, "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
        "lora_dropout": 0.0, "bias": "none", "target_modules": [prefix + u.name for u in units],
        # GPT-2's Conv1D stores (in, out), as lmkit does; a Linear stores (out, in)
        "fan_in_fan_out": any(not u.transposed for u in units),
        "inference_mode": True, "init_lora_weights": True, "use_rslora": False,
        "use_dora": False, "modules_to_save": list(modules) if head else None,
    }
    with atomic_directory(folder, replace=overwrite) as tmp:
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return Path(folder)


def save_trained(folder: str | Path, group: Any, params: Sequence[Any], model: Any, *,
                 base: str | None = None, head: Mapping[str, np.ndarray] | None = None,
                 modules: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Write the adapters of a LoRA group (`lmkit.adapters.lora.Lora`; `params`: its
    ``A, B`` host arrays, `lmkit.param_groups.ParamGroups.params` of the step's slots) named
    for `model`'s Hugging Face class; `base`: the base model's folder or name; `head`,
    `modules`: as `save_adapter`'s."""
    return save_adapter(folder, group.units, params, rank=group.rank,
                        alpha=group.scale * group.rank, prefix=getattr(model, "hf_prefix", ""),
                        base_model=base, head=head, modules=modules, overwrite=overwrite)


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / ADAPTER_CONFIG
    if not path.is_file():
        raise RunError(f"{folder} is not an adapter folder: it has no {ADAPTER_CONFIG} (a "
                       f"peft adapter holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    config = json.loads(path.read_text())
    if config.get("peft_type") != "LORA":
        raise RunError(f"{path}: peft_type={config.get('peft_type')!r}; lmkit reads LoRA "
                       f"adapters (peft_type \"LORA\")")
    for key in ("use_dora", "lora_bias"):
        if config.get(key):
            raise RunError(f"{path}: {key}=true is not supported (plain LoRA: W + s A B only)")
    if config.get("bias", "none") != "none":
        raise RunError(f"{path}: bias={config['bias']!r} is not supported; lmkit's adapters "
                       f"train no biases (bias \"none\")")
    return config


def _unit_of(module: str, units: Sequence[LoraUnit]) -> LoraUnit | None:
    """The unit a peft module name (any model prefix) names: its name or a dotted suffix."""
    return next((u for u in units if module == u.name or module.endswith("." + u.name)), None)


def load_adapter(folder: str | Path, model: Any) -> Adapter:
    """The peft LoRA adapter in `folder` over `model`'s kernels (a language model or a
    classifier's backbone). A module the model lacks, or a matrix whose shape does not fit
    its kernel, is a `RunError` naming both."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    config = _read_config(folder)
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise RunError(f"{folder}: no {ADAPTER_WEIGHTS} (lmkit reads safetensors adapters)")
    tensors = load_file(str(weights))
    rank = int(config["r"])
    alpha = float(config.get("lora_alpha", rank))
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    units = lora_units(model)
    chosen, params = [], []
    for key in sorted(k for k in tensors if k.endswith(".lora_A.weight")):
        module = key.removeprefix(_ROOT).removesuffix(".lora_A.weight")
        unit = _unit_of(module, units)
        if unit is None:
            raise RunError(f"{weights}: adapter module {module!r} is not a kernel of this "
                           f"{type(model).__name__}; its kernels are: "
                           f"{', '.join(u.name for u in units)}")
        a = tensors[key].T
        b = tensors[key.replace(".lora_A.", ".lora_B.")].T
        n_in, n_out = unit.shape
        if a.shape != (n_in, rank) or b.shape != (rank, n_out):
            raise RunError(
                f"{weights}: the adapter of {module} has lora_A {tensors[key].shape} and lora_B "
                f"{b.T.shape}, which do not fit the model's kernel {unit.name} of shape (in, out) "
                f"= {unit.shape} at r={rank} (expected lora_A {(rank, n_in)}, lora_B "
                f"{(n_out, rank)}): the adapter was made for another base model")
        chosen.append(unit)
        params += [a.astype(np.float32), b.astype(np.float32)]
    if not chosen:
        raise RunError(f"{weights}: no lora_A/lora_B tensors found")
    order = {id(u): i for i, u in enumerate(units)}  # model order, as training holds them
    pairs = sorted(zip(chosen, params[0::2], params[1::2]), key=lambda t: order[id(t[0])])
    # modules_to_save: whole tensors (peft's own names drop its ``modules_to_save.default``)
    head = {k.removeprefix(_ROOT): v for k, v in tensors.items() if ".lora_" not in k}
    return Adapter([p[0] for p in pairs], [m for p in pairs for m in p[1:]], scale, head)


def merge_adapter(adapter: Adapter) -> None:
    """Fold `adapter` into its model's kernels (``W += scale A B``), in place."""
    for k, u in enumerate(adapter.units):
        merged = apply_delta(u.variable.value, u, adapter.params[2 * k],
                             adapter.params[2 * k + 1], adapter.scale)
        u.variable.assign(np.asarray(merged))
