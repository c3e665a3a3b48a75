"""A stack of identical layers run as one `jax.lax.scan`: the layer traced once instead of once
per layer, one copy of it in the program.

What it saves is Python tracing and JAX's differentiation of the layers; XLA:CPU compiled
MiniLM's scanned fine-tuning step no faster than the loop's (it already compiles identical
layers' kernels once), so `bert` keeps the loop by default (docs/performance.md).

``x = layer_i(x, **context)`` for each layer, in order, is what `run_layers` computes. Under
a JAX trace it stacks each variable's current value over the layers (at trace time: the model
keeps its own variables, so weight names, checkpoints, Hugging Face import and export are those
of the plain loop) and calls the first layer, as a template, on each layer's slice of the
stacks inside a `keras.StatelessScope`. Dropout seed states are scanned with the weights and
written back, so every layer draws its own masks, the ones the loop would draw; low-rank terms
a LoRA step attached to the same kernels of every layer (`lmkit.models.base.low_rank_terms`)
are stacked beside them.

It runs the plain loop instead where a scan cannot stand for it: outside a JAX trace (eager or
symbolic calls), for fewer than two layers, for layers that differ in class, configuration or
variables, or when low-rank terms are attached to the kernels of some layers only.

>>> x = run_layers(self.encoder_layers, x, True, batch=batch, allowed=allowed)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from lmkit.models.base import low_rank_term, low_rank_terms

__all__ = ["run_layers", "scannable"]


def run_layers(layers: Sequence[keras.layers.Layer], x: Any, scan: bool, **context: Any) -> Any:
    """`x` through `layers` in order, each called as ``layer(x, **context)``: with `scan`, as
    one `lax.scan` where `scannable` allows it; else, and where it does not, the plain loop."""
    factors = _stacked_factors(layers) if scan and scannable(layers, x) else None
    if factors is None:
        for layer in layers:
            x = layer(x, **context)
        return x
    import jax

    template = layers[0]
    trainable = _stacked([layer.trainable_variables for layer in layers])
    states = _stacked([layer.non_trainable_variables for layer in layers])
    kernels = [template.trainable_variables[j] for j in factors]
    changed: set[int] = set()  # states the layers update (dropout seeds while training)

    def one_layer(x: Any, slices: tuple[list[Any], list[Any], list[Any]]) -> tuple[Any, list[Any]]:
        weights, held, terms = slices
        mapping = [*zip(template.trainable_variables, weights),
                   *zip(template.non_trainable_variables, held)]
        with keras.StatelessScope(state_mapping=mapping) as scope, \
                low_rank_terms(zip(kernels, terms)):
            before = [scope.get_current_value(v) for v in template.non_trainable_variables]
            y = template(x, **context)
        new = [scope.get_current_value(v) for v in template.non_trainable_variables]
        changed.update(j for j, (a, b) in enumerate(zip(new, before)) if a is not b)
        return y, new

    x, new_states = jax.lax.scan(one_layer, x, (trainable, states, list(factors.values())))
    for j in sorted(changed):  # as each layer's own call would have assigned them
        for i, layer in enumerate(layers):
            layer.non_trainable_variables[j].assign(new_states[j][i])
    return x


def scannable(layers: Sequence[keras.layers.Layer], x: Any) -> bool:
    """Whether `run_layers` can run `layers` on `x` as one scan: `x` is being traced by JAX,
    and there are at least two layers of one class, configuration (names aside) and list of
    variable shapes and dtypes."""
    if len(layers) < 2 or keras.backend.backend() != "jax" or not _traced(x):
        return False
    first = layers[0]

    def signature(layer: keras.layers.Layer) -> tuple[Any, ...]:
        config = {k: v for k, v in layer.get_config().items() if k != "name"}
        return (type(layer), config, [(tuple(v.shape), v.dtype, v.trainable) for v in layer.variables])

    return all(layer.built for layer in layers) and all(
        signature(layer) == signature(first) for layer in layers[1:])


def _traced(x: Any) -> bool:
    import jax

    return isinstance(x, jax.core.Tracer)


def _stacked(per_layer: Sequence[Sequence[Any]]) -> list[Any]:
    """Each variable's current value (the enclosing `keras.StatelessScope`'s, inside a step)
    stacked over the layers: ``(layers, *shape)`` per variable position."""
    import jax.numpy as jnp

    return [jnp.stack([keras.ops.convert_to_tensor(v.value, v.dtype) for v in column])
            for column in zip(*per_layer)]


def _stacked_factors(layers: Sequence[keras.layers.Layer]) -> dict[int, tuple[Any, Any]] | None:
    """``{variable position: (a (layers, in, r), b (layers, r, out))}``: the low-rank terms
    attached to the layers' kernels, stacked; None where some layers have a term at a
    position and others none, or terms of different shapes (the loop then runs)."""
    import jax.numpy as jnp

    found: dict[int, list[tuple[Any, Any]]] = {}
    for j, column in enumerate(zip(*(layer.trainable_variables for layer in layers))):
        terms = [low_rank_term(v) for v in column]
        if all(t is None for t in terms):
            continue
        if any(t is None for t in terms) or len({(tuple(a.shape), tuple(b.shape))
                                                 for a, b in terms}) > 1:
            return None
        found[j] = terms
    return {j: (jnp.stack([a for a, _ in terms]), jnp.stack([b for _, b in terms]))
            for j, terms in found.items()}
