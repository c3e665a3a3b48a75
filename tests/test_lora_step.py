"""The LoRA step's cost: on an architecture whose kernels go through `lmkit.models.base.dense`
(`low_rank_kernels`: bert, gpt2, llama), the step computes ``x W + (x A) B``, so no gradient of a frozen kernel
(``xᵀ dy``, as large as full fine-tuning's) and none of the embedding table is formed; it trains
exactly as the merged form ``x (W + A B)`` does (the reference here), and its compiled program
costs about two thirds of full training's: the forward and the activations' gradient, without
the weights' gradient and the optimizer over every weight (XLA's own count of its operations)."""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import pytest
from hf_checkpoints import bert_folder, decoder_folder, gpt2_folder
from test_lora import TOKENS, _lora_step, _token_loss

import lmkit
from lmkit.param_groups import Optimize, ParamGroups
from lmkit.train_step import TrainStep

XS = np.stack([TOKENS[:, :-1]] * 3)
YS = np.stack([TOKENS[:, 1:]] * 3)


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory):
    return lmkit.from_pretrained(bert_folder(tmp_path_factory.mktemp("bert"))).model


#: a tiny checkpoint of each architecture that declares `low_rank_kernels`
FOLDERS = {"bert": bert_folder, "gpt2": gpt2_folder,
           "llama": lambda f: decoder_folder(f, "llama", num_key_value_heads=2)}


#: the attention's query and value, or GPT-2's fused query-key-value kernel (one module)
TARGETS = {"bert": ["q", "v"], "gpt2": ["c_attn"], "llama": ["q", "v"]}


@pytest.fixture(scope="module", params=sorted(FOLDERS))
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    folder = FOLDERS[request.param](tmp_path_factory.mktemp(request.param))
    return lmkit.from_pretrained(folder).model


def _targets(model) -> list[str]:
    return TARGETS[lmkit.registry.architectures.entry_of(model).name]


def _matmul_shapes(step) -> set[tuple[int, ...]]:
    """The shapes of every matmul result in the compiled step's program."""
    text = step.lower(XS, YS).as_text()
    found = re.findall(r"stablehlo\.dot_general[^\n]*-> tensor<([0-9x]+)xf32>", text)
    return {tuple(int(n) for n in shape.split("x")) for shape in found}


@pytest.mark.slow
def test_the_factored_step_trains_as_the_merged_kernels_do(model) -> None:
    factored = _lora_step(model, lora_targets=_targets(model))
    merged = _lora_step(model, lora_targets=_targets(model))
    merged.lora.factored = False  # the reference: the model computes with W + s A B
    assert factored.lora.factored
    np.testing.assert_allclose(np.asarray(factored.train(XS, YS)),
                               np.asarray(merged.train(XS, YS)), rtol=1e-5)
    for got, want in zip(factored.groups.params(factored.state.slots),
                         merged.groups.params(merged.state.slots)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


@pytest.mark.slow
def test_the_lora_step_computes_no_gradient_of_a_frozen_kernel(model) -> None:
    kernels = {tuple(v.shape) for v in model.trainable_variables if len(v.shape) == 2}
    kernels |= {k[::-1] for k in kernels}  # a transposed gradient counts too
    step = _lora_step(model, lora_targets=_targets(model))
    assert not _matmul_shapes(step) & kernels
    # the merged form does compute them: the check above can fail
    merged = _lora_step(model, lora_targets=_targets(model))
    merged.lora.factored = False
    assert _matmul_shapes(merged) & kernels


@pytest.mark.slow
def test_the_lora_step_forms_no_gradient_of_the_embedding_table(bert) -> None:
    rows, width = bert.embedding.shape
    text = _lora_step(bert, lora_targets=["q", "v"]).lower(XS, YS).as_text()
    produced = re.findall(r"= stablehlo\.(\w+)[^\n]*-> tensor<([0-9x]+)xf32>", text)
    assert [op for op, shape in produced if shape == f"{rows}x{width}"] == []
    assert "scatter" not in text  # nor a row update of it


def _flops(step: TrainStep) -> float:
    """XLA's count of the floating-point operations of the compiled step's program."""
    cost = step.lower(XS, YS).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


@pytest.mark.slow
def test_the_lora_step_costs_about_two_thirds_of_full_training(bert) -> None:
    variables = bert.trainable_variables
    full = TrainStep(bert, ParamGroups(variables, ["all"] * len(variables),
                                       {"all": Optimize(keras.optimizers.Adam(1e-2))}), _token_loss)
    # forward + the activations' gradient (none below the first adapter) against forward + the
    # activations' and the weights' gradients + Adam over every weight: under 2/3
    lora = _flops(_lora_step(bert, lora_targets=["q", "v"]))
    assert lora < 2 / 3 * _flops(full)
    # the merged kernel's gradient (xᵀ dy of a frozen kernel) costs more: the check can fail
    merged = _lora_step(bert, lora_targets=["q", "v"])
    merged.lora.factored = False
    assert _flops(merged) > 1.05 * lora
