"""LoRA: low-rank adapters as a parameter group of the one training step.

A LoRA group keeps the kernels it adapts frozen (no gradient, no optimizer slots, bit-identical)
and trains two matrices per adapted kernel, ``A (in, r)`` and ``B (r, out)``; the model computes
with ``W + (alpha / r) A B`` (`Lora.effective`). ``A`` starts uniform in ``±1/sqrt(in)`` and
``B`` at zero (as `peft` does), so an untrained adapter leaves the model's outputs unchanged.

What can be adapted comes from the architecture's one Hugging Face weight table
(`LanguageModel.hf_weights`): every 2-D kernel, one `LoraUnit` per Hugging Face module, so a
fused query-key-value kernel read from ``query``, ``key`` and ``value`` has three units over its
column blocks and an adapter on ``query`` touches only the query's columns. Those names are the
ones `peft` writes (`lmkit.adapters.peft_format`). An architecture without the table adapts its
2-D kernels by variable path. `lora_targets` patterns select units (`select_units`).

>>> units = select_units(lora_units(model), ["q", "v"])              # doctest: +SKIP
>>> held, group = lora_group(model, model.trainable_variables, cfg, optimizer)  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from lmkit.errors import ConfigError
from lmkit.optim import exclude_from_decay
from lmkit.param_groups import Slot, Transform, optimizer_schedules, relative_path

__all__ = ["LoraUnit", "Lora", "LORA", "lora_units", "select_units", "lora_group", "check_rank",
           "apply_delta", "supported_architectures", "require_lora"]

#: capability of an architecture entry whose kernels LoRA can adapt
LORA = "lora"

#: short target names for the attention projections, as the architectures' tables name them
_ALIASES = {"q": ("query", "q_proj"), "k": ("key", "k_proj"), "v": ("value", "v_proj"),
            "o": ("o_proj", "attention.output.dense")}


class LoraUnit(NamedTuple):
    """One adaptable kernel block: columns ``start:stop`` of `variable` (``(in, out)``), the
    Hugging Face module `name` (without ``.weight`` and the model's prefix; a variable path
    for an architecture without a table); `transposed`: Hugging Face stores it ``(out, in)``
    (a PyTorch ``Linear``, not GPT-2's ``Conv1D``)."""

    name: str
    variable: Any
    start: int
    stop: int
    transposed: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """``(in, out)`` of the block."""
        return int(self.variable.shape[0]), self.stop - self.start


def supported_architectures() -> list[str]:
    """The registered architectures with the capability `LORA`."""
    from lmkit.registry import architectures

    return [e.name for e in architectures.list() if e.has(LORA)]


def require_lora(model: Any) -> None:
    """A `ConfigError` unless `model`'s registry entry (its most derived registered class) has
    the capability `LORA`: adapters need the dense kernels of a Transformer."""
    from lmkit.registry import architectures

    entry = architectures.entry_of(model)
    if entry is not None and entry.has(LORA):
        return
    name = entry.name if entry is not None else type(model).__name__
    raise ConfigError(f"adapter = \"lora\" does not support architecture {name!r}: LoRA adapts "
                      f"the dense kernels of these architectures: "
                      f"{', '.join(supported_architectures())}. Train {name} without an "
                      f"adapter (adapter = \"none\")")


def lora_units(model: Any) -> list[LoraUnit]:
    """Every adaptable kernel block of `model` (a language model, or a classifier's backbone)."""
    table = model.hf_weights() if hasattr(model, "hf_weights") else None
    if table is None:
        return [LoraUnit(relative_path(v), v, 0, int(v.shape[1])) for v in model.trainable_variables
                if len(v.shape) == 2 and "embedding" not in relative_path(v)]
    units = []
    for weight in table:
        v = weight.variable
        if v is None or len(v.shape) != 2 or "embedding" in relative_path(v):
            continue
        width = int(v.shape[1]) // len(weight.names)
        for k, name in enumerate(weight.names):
            units.append(LoraUnit(name.removesuffix(".weight"), v, k * width, (k + 1) * width,
                                  weight.transpose))
    return units


def _matches(unit: LoraUnit, pattern: str) -> bool:
    """Whether `pattern` names `unit`: a glob over its module name, whole or as a dotted suffix
    (as peft's `target_modules`), over its variable path, or a `_ALIASES` short name."""
    for p in (pattern, *_ALIASES.get(pattern, ())):
        if fnmatch.fnmatchcase(unit.name, p) or fnmatch.fnmatchcase(unit.name, "*." + p):
            return True
    return unit.start == 0 and unit.stop == unit.variable.shape[1] and (
        fnmatch.fnmatchcase(relative_path(unit.variable), pattern))


def select_units(units: Sequence[LoraUnit], patterns: Sequence[str]) -> list[LoraUnit]:
    """The units some pattern matches, in model order. A pattern that matches none is a
    `ConfigError` listing the names there are."""
    if not patterns:
        raise ConfigError("lora_targets is empty; name the kernels to adapt, e.g. "
                          "lora_targets = [\"q\", \"v\"]")
    for p in patterns:
        if not any(_matches(u, p) for u in units):
            names = ", ".join(u.name for u in units)
            raise ConfigError(
                f"lora_targets pattern {p!r} matches no kernel. Patterns are Hugging Face module "
                f"names or their last parts, globs such as 'attn.*', lmkit variable paths, or "
                f"q, k, v, o. The kernels are: {names}")
    return [u for u in units if any(_matches(u, p) for p in patterns)]


def check_rank(units: Sequence[LoraUnit], rank: int) -> None:
    """`rank` must be positive and at most every adapted block's smaller side."""
    if rank <= 0:
        raise ConfigError(f"lora_rank must be a positive integer, got {rank}")
    for u in units:
        if rank > min(u.shape):
            raise ConfigError(f"lora_rank={rank} is larger than kernel {u.name} {u.shape} allows "
                              f"(at most {min(u.shape)}, its smaller side); use a smaller lora_rank")


def apply_delta(kernel: Any, unit: LoraUnit, a: Any, b: Any, scale: float) -> Any:
    """`kernel` with ``scale * a @ b`` added to the unit's columns (traced or on the host)."""
    import jax.numpy as jnp

    kernel = jnp.asarray(kernel)
    delta = (scale * (jnp.asarray(a) @ jnp.asarray(b))).astype(kernel.dtype)
    if unit.start == 0 and unit.stop == kernel.shape[1]:
        return kernel + delta
    return kernel.at[:, unit.start:unit.stop].add(delta)


class Lora(Transform):
    """The LoRA group: its variables (the adapted kernels) frozen; its first slots the adapters
    ``A, B`` of each unit (`parameters`, differentiated by the step), then `optimizer`'s slots
    over them. `seed` draws the ``A``s. `factored`: the model's kernels go through
    `lmkit.models.base.dense` (`LanguageModel.low_rank_kernels`), so the step computes
    ``x W + (x A) B`` (`factors`) instead of ``x (W + A B)``."""

    differentiated = False

    def __init__(self, optimizer: Any, units: Sequence[LoraUnit], rank: int, alpha: float,
                 seed: int = 0, factored: bool = False) -> None:
        check_rank(units, rank)
        self.optimizer, self.units, self.rank = optimizer, list(units), rank
        self.scale, self.seed, self.factored = alpha / rank, seed, factored
        self.parameters = 2 * len(self.units)

    def build(self, variables: Sequence[Any]) -> None:
        import keras

        super().build(variables)
        self.at = [next(j for j, v in enumerate(variables) if v is u.variable) for u in self.units]
        # stand-ins of the adapters' shapes: what the optimizer builds its slots for
        self.adapters = []
        for u in self.units:
            n_in, n_out = u.shape
            self.adapters += [keras.Variable(np.zeros((n_in, self.rank), np.float32),
                                             name=f"{u.name.replace('/', '.')}.lora_A"),
                              keras.Variable(np.zeros((self.rank, n_out), np.float32),
                                             name=f"{u.name.replace('/', '.')}.lora_B")]
        exclude_from_decay(self.optimizer, self.adapters)
        self.optimizer.build(self.adapters)

    def schedules(self) -> list[Any]:
        return optimizer_schedules(self.optimizer)

    def slots(self) -> list[Any]:
        return [*(Slot(a.path, tuple(a.shape)) for a in self.adapters), *self.optimizer.variables]

    def init(self) -> list[Any]:
        rng = np.random.default_rng(self.seed)
        params = []
        for u in self.units:
            bound = 1.0 / np.sqrt(u.shape[0])
            params += [rng.uniform(-bound, bound, (u.shape[0], self.rank)).astype(np.float32),
                       np.zeros((self.rank, u.shape[1]), np.float32)]
        return [*params, *(v.value for v in self.optimizer.variables)]

    def effective(self, values: list[Any], params: list[Any]) -> list[Any]:
        new = list(values)
        for k, (u, j) in enumerate(zip(self.units, self.at)):
            new[j] = apply_delta(new[j], u, params[2 * k], params[2 * k + 1], self.scale)
        return new

    def factors(self, params: list[Any]) -> dict[int, tuple[Any, Any]]:
        """``{index in the group: (a, b)}`` with ``x a b`` the adapters' term of that kernel:
        the units of one kernel side by side (``a (in, r k)``; ``b (r k, out)``, each unit's
        ``scale B`` at its columns, zeros elsewhere)."""
        import jax.numpy as jnp

        per_kernel: dict[int, list[tuple[Any, Any]]] = {}
        for k, (u, j) in enumerate(zip(self.units, self.at)):
            b = self.scale * params[2 * k + 1]
            b = jnp.pad(b, ((0, 0), (u.start, int(u.variable.shape[1]) - u.stop)))
            per_kernel.setdefault(j, []).append((params[2 * k], b))
        return {j: (jnp.concatenate([a for a, _ in ab], axis=1),
                    jnp.concatenate([b for _, b in ab], axis=0))
                for j, ab in per_kernel.items()}

    def update(self, values, grads, slots, ctx):
        n = self.parameters
        params, opt = self.optimizer.stateless_apply(slots[n:], grads, slots[:n])
        return values, [*params, *opt]


def lora_group(model: Any, variables: Sequence[Any], cfg: Any,
               optimizer: Any) -> tuple[list[bool], Lora]:
    """The LoRA group a config asks for (`adapter`, `lora_rank`, `lora_alpha`, `lora_targets`,
    `seed`) over `model`'s kernels (a language model, or a classifier's backbone), and which of
    `variables` (the trained model's) it holds; every other weight of `model` is for the
    caller to freeze. Unsupported architectures, unmatched targets and bad ranks raise
    `ConfigError`."""
    require_lora(model)
    units = select_units(lora_units(model), cfg.lora_targets)
    group = Lora(optimizer, units, cfg.lora_rank, cfg.lora_alpha, cfg.seed,
                 factored=getattr(model, "low_rank_kernels", False))
    adapted = {id(u.variable) for u in units}
    return [id(v) in adapted for v in variables], group
