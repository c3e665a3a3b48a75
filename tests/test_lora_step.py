"""The LoRA step's cost: on an architecture whose kernels go through `lmkit.models.base.dense`
(`low_rank_kernels`), the step computes ``x W + (x A) B``, so no gradient of a frozen kernel
(``xᵀ dy``, as large as full fine-tuning's) and none of the embedding table is formed; it trains
exactly as the merged form ``x (W + A B)`` does (the reference here)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hf_checkpoints import bert_folder
from test_lora import TOKENS, _lora_step

import lmkit

XS = np.stack([TOKENS[:, :-1]] * 3)
YS = np.stack([TOKENS[:, 1:]] * 3)


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory):
    return lmkit.from_pretrained(bert_folder(tmp_path_factory.mktemp("bert"))).model


def _matmul_shapes(step) -> set[tuple[int, ...]]:
    """The shapes of every matmul result in the compiled step's program."""
    text = step.lower(XS, YS).as_text()
    found = re.findall(r"stablehlo\.dot_general[^\n]*-> tensor<([0-9x]+)xf32>", text)
    return {tuple(int(n) for n in shape.split("x")) for shape in found}


@pytest.mark.slow
def test_the_factored_step_trains_as_the_merged_kernels_do(bert) -> None:
    factored = _lora_step(bert, lora_targets=["q", "v"])
    merged = _lora_step(bert, lora_targets=["q", "v"])
    merged.lora.factored = False  # the reference: the model computes with W + s A B
    assert factored.lora.factored
    np.testing.assert_allclose(np.asarray(factored.train(XS, YS)),
                               np.asarray(merged.train(XS, YS)), rtol=1e-5)
    for got, want in zip(factored.groups.params(factored.state.slots),
                         merged.groups.params(merged.state.slots)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


@pytest.mark.slow
def test_the_lora_step_computes_no_gradient_of_a_frozen_kernel(bert) -> None:
    kernels = {tuple(v.shape) for v in bert.trainable_variables if len(v.shape) == 2}
    kernels |= {k[::-1] for k in kernels}  # a transposed gradient counts too
    step = _lora_step(bert, lora_targets=["q", "v"])
    assert not _matmul_shapes(step) & kernels
    # the merged form does compute them: the check above can fail
    merged = _lora_step(bert, lora_targets=["q", "v"])
    merged.lora.factored = False
    assert _matmul_shapes(merged) & kernels


@pytest.mark.slow
def test_the_lora_step_forms_no_gradient_of_the_embedding_table(bert) -> None:
    rows, width = bert.embedding.shape
    text = _lora_step(bert, lora_targets=["q", "v"]).lower(XS, YS).as_text()
    produced = re.findall(r"= stablehlo\.(\w+)[^\n]*-> tensor<([0-9x]+)xf32>", text)
    assert [op for op, shape in produced if shape == f"{rows}x{width}"] == []
    assert "scatter" not in text  # nor a row update of it
