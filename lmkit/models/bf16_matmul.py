"""`bf16_matmul`: ``x @ w`` on bfloat16 operands that accumulates in float32, forward and backward.

Why not ``jnp.matmul`` on bfloat16 arrays: XLA:CPU then emits a dot with a bfloat16 result, which
it runs far below the hardware's bfloat16 rate (on a Xeon with AMX, about 200 GFLOP/s, slower
than float32). A dot of bfloat16 operands with a float32 result (``preferred_element_type``)
runs on the AMX tiles (about 1,300 GFLOP/s for MiniLM's ``448 x 1536 @ 1536 x 384``, against 270
in float32). JAX's own derivative of that dot multiplies a float32 cotangent by a bfloat16
operand, which XLA runs in float32; the rule below casts the cotangent to bfloat16 so the
backward dots take the fast path too. (XLA:CPU still runs the weights' gradient ``xᵀ dy``,
which contracts over the rows, with its float32 kernel.)

JAX only: `lmkit.models.base.matmul` calls it when the backend is JAX and ``x`` is bfloat16, and
`lmkit.models.base.dense` adds a bias with `bf16_add_bias` then.

>>> import jax.numpy as jnp
>>> bf16_matmul(jnp.ones((2, 3), jnp.bfloat16), jnp.ones((3, 4), jnp.bfloat16)).dtype
dtype(bfloat16)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["bf16_matmul", "bf16_add_bias"]


def _dot(a: Any, b: Any, a_axis: int, b_axis: int) -> Any:
    """``a`` and ``b`` contracted on one axis each, summed in float32."""
    return lax.dot_general(a, b, (((a_axis,), (b_axis,)), ((), ())),
                           preferred_element_type=jnp.float32)


@jax.custom_vjp
def bf16_matmul(x: Any, w: Any) -> Any:
    """``x (N, K) @ w (K, M)`` for bfloat16 ``x`` and ``w``: float32 sums, a bfloat16 result."""
    return _dot(x, w, 1, 0).astype(x.dtype)


def _forward(x: Any, w: Any) -> tuple[Any, tuple[Any, Any]]:
    return _dot(x, w, 1, 0).astype(x.dtype), (x, w)


def _backward(saved: tuple[Any, Any], dy: Any) -> tuple[Any, Any]:
    x, w = saved
    dy = dy.astype(x.dtype)
    return _dot(dy, w, 1, 1).astype(x.dtype), _dot(x, dy, 0, 0).astype(w.dtype)


bf16_matmul.defvjp(_forward, _backward)


@jax.custom_vjp
def bf16_add_bias(y: Any, bias: Any) -> Any:
    """``y (..., M) + bias (M,)`` for bfloat16 ``y`` and ``bias``; the bias's gradient, the sum of
    ``dy`` over every axis but the last, is summed as float32.

    Why: JAX's own derivative sums the bfloat16 ``dy``, which XLA:CPU rewrites into a tree of
    float32 reduce-windows that runs far slower than a plain float32 sum (MiniLM's fine-tuning
    step on 2 AMD Zen 4 cores: 16 ms of 193). The result is the same sum, rounded once.
    """
    return y + bias


def _add_forward(y: Any, bias: Any) -> tuple[Any, None]:
    return y + bias, None


def _add_backward(_: None, dy: Any) -> tuple[Any, Any]:
    summed = jnp.sum(dy, axis=tuple(range(dy.ndim - 1)), dtype=jnp.float32)
    return dy, summed.astype(dy.dtype)


bf16_add_bias.defvjp(_add_forward, _add_backward)
