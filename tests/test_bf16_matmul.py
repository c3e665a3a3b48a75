"""`lmkit.models.base.matmul` on bfloat16 activations: the bfloat16 dot with float32 sums
(`lmkit.models.bf16_matmul`) gives the product and both gradients of the rounded operands, every
dot of it (forward and backward) takes bfloat16 and sums in float32, and a model built under
``mixed_bfloat16`` from float32 weights computes what the float32 model does."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_checkpoints import bert_folder

import lmkit
from lmkit.build import copy_model
from lmkit.models.base import dense, matmul


def test_the_bfloat16_matmul_and_its_gradients_equal_float32_on_the_rounded_operands() -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((48, 96)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((96, 40)), jnp.bfloat16)
    up = jnp.asarray(rng.standard_normal((48, 40)), jnp.float32)  # a cotangent that is not uniform

    def loss(f, x, w):
        return jnp.sum(f(x, w).astype(jnp.float32) * up)

    f32 = lambda a: jnp.asarray(a, jnp.float32)
    y, grads = matmul(x, w), jax.grad(lambda x, w: loss(matmul, x, w), argnums=(0, 1))(x, w)
    want = jax.grad(lambda x, w: loss(jnp.matmul, x, w), argnums=(0, 1))(f32(x), f32(w))
    assert y.dtype == jnp.bfloat16 and y.shape == (48, 40)
    for g, r in zip((y, *grads), (f32(x) @ f32(w), *want)):
        # the results are rounded to bfloat16 (8 bits of mantissa): 2^-8 of the largest
        np.testing.assert_allclose(f32(g), r, atol=float(jnp.abs(r).max()) * 2 ** -8)
    assert grads[0].dtype == x.dtype and grads[1].dtype == w.dtype


def test_every_dot_of_the_product_and_its_gradient_takes_bfloat16_and_sums_in_float32() -> None:
    # What makes it fast on a CPU with bfloat16 units: XLA runs a dot of float32 operands (what
    # JAX's own derivative asks for) or with a bfloat16 result (``ops.matmul``) far slower
    x, w = jnp.ones((48, 96), jnp.bfloat16), jnp.ones((96, 40), jnp.bfloat16)
    grad = jax.value_and_grad(lambda x, w: jnp.sum(matmul(x, w).astype(jnp.float32) ** 2),
                              argnums=(0, 1))
    program = jax.jit(grad).lower(x, w).as_text()
    dots = re.findall(r"stablehlo\.dot_general[^\n]*: \(tensor<[0-9x]+x(\w+)>, "
                      r"tensor<[0-9x]+x(\w+)>\) -> tensor<[0-9x]+x(\w+)>", program)
    assert len(dots) == 3  # the product, the input's gradient and the kernel's
    assert set(dots) == {("bf16", "bf16", "f32")}


def test_a_bfloat16_bias_gets_the_float32_sum_of_its_gradient_without_a_tree_of_reduce_windows() -> None:
    # XLA:CPU rewrites the bfloat16 row sum JAX's own derivative takes into reduce-windows
    # (16 ms of MiniLM's 193 ms fine-tuning step on 2 cores); `dense` sums it in float32
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((560, 96)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((96, 384)), jnp.bfloat16)
    b = jnp.asarray(rng.standard_normal(384), jnp.bfloat16)
    up = jnp.asarray(rng.standard_normal((560, 384)), jnp.float32)

    def loss(x, w, b):
        return jnp.sum(dense(x, w, b).astype(jnp.float32) * up)

    grads = jax.grad(loss, argnums=(0, 1, 2))(x, w, b)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    want = jax.grad(lambda x, w, b: jnp.sum((x @ w + b) * up), argnums=(0, 1, 2))(f32(x), f32(w), f32(b))
    # each a bfloat16 rounding of the result; the bias's sums 560 cotangents rounded to bfloat16
    for g, r, bits in zip(grads, want, (8, 8, 7)):
        np.testing.assert_allclose(f32(g), r, atol=float(jnp.abs(r).max()) * 2.0 ** -bits)
    assert grads[2].dtype == jnp.bfloat16
    np.testing.assert_allclose(f32(dense(x, w, b)), f32(x) @ f32(w) + f32(b), rtol=2 ** -7, atol=2 ** -6)
    compiled = jax.jit(jax.grad(loss, argnums=2)).lower(x, w, b).compile().as_text()
    assert "reduce-window" not in compiled


@pytest.mark.slow
def test_a_mixed_bfloat16_copy_of_a_checkpoint_computes_the_float32_models_states(tmp_path) -> None:
    mini = lmkit.from_pretrained(str(bert_folder(tmp_path / "bert")))
    mixed = copy_model(mini.model, "mixed_bfloat16")
    assert mixed.compute_dtype == "bfloat16" and mini.model.compute_dtype == "float32"
    tokens = np.random.default_rng(0).integers(5, 90, size=(3, 12)).astype("int32")
    want, got = (np.asarray(m.features(tokens), np.float32) for m in (mini.model, mixed))
    assert got.dtype == np.float32 and np.abs(got - want).max() > 0  # it did compute in bfloat16
    # bfloat16 keeps 8 bits of mantissa: a few hundredths of the states' scale after 2 layers
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


@pytest.mark.slow
def test_inference_converts_a_mixed_models_kernels_once_per_call_with_the_same_results(
        tmp_path, monkeypatch) -> None:
    """`lmkit.forward` hands a ``mixed_bfloat16`` model the bfloat16 copies of the weights its
    program only reads in bfloat16, instead of converting them in every batch: no kernel is
    converted inside the compiled program, and the embeddings are the same bits."""
    from lmkit import forward

    mixed = lmkit.from_pretrained(str(bert_folder(tmp_path / "bert")), precision="mixed_bfloat16")
    texts = ["the cat sat on the mat", "a dog", "first citizen: speak, speak"] * 4
    kernels = {v.path for v in mixed.model.weights if len(v.shape) == 2 and "embedding" not in v.path}
    seen = {}

    def program(model, body, static, args):  # what `apply_packed` runs, and on which values
        fn, values = prepared(model, body, static, args)
        seen["cast"] = {v.path for v, x in zip(model.variables, values) if x.dtype == jnp.bfloat16}
        seen["hlo"] = fn.lower(values, *args).compile().as_text()
        return fn, values

    prepared = forward._prepared
    monkeypatch.setattr(forward, "_prepared", program)
    once = mixed.embed(texts)
    assert kernels and kernels <= seen["cast"]
    kernel_shapes = {"x".join(map(str, v.shape)) for v in mixed.model.weights if v.path in kernels}
    converted = re.findall(r"bf16\[([0-9,]+)\][^\n]*convert\(", seen["hlo"])
    assert not kernel_shapes & {c.replace(",", "x") for c in converted}
    monkeypatch.setattr(forward, "_read_as_bfloat16", lambda *a: [])  # converted in every batch
    every_batch = mixed.embed(texts)
    assert seen["cast"] == set()
    assert {c.replace(",", "x") for c in re.findall(r"bf16\[([0-9,]+)\][^\n]*convert\(",
                                                    seen["hlo"])} & kernel_shapes
    np.testing.assert_array_equal(once, every_batch)
