"""A LoRA classification fine-tuning saves its head with the adapter, in peft's
``modules_to_save`` layout: `peft`'s ``PeftModelForSequenceClassification`` on `transformers`'
``BertForSequenceClassification`` computes the fine-tuned classifier's logits, and lmkit reads
the adapter and its head back onto the base model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hf_checkpoints import bert_folder
from test_pretrained_finetune import _easy_task

import lmkit
from lmkit.evaluation.evaluator import load_finetuned
from lmkit.evaluation.hf_head import load_classifier_adapter
from lmkit.evaluation.tasks import get_task

TOKENS = np.array([[2, 17, 42, 8, 39, 3], [2, 9, 30, 21, 11, 3]], np.int32)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the base BERT folder, the --out folder of a LoRA fine-tuning of it on an easy task)."""
    root = tmp_path_factory.mktemp("head")
    base = bert_folder(root / "bert")
    out = root / "ft"
    lmkit.evaluate(str(base), task="glue/sst2", data=str(_easy_task(root / "data")),
                   max_steps=12, batch_size=16, learning_rate=1e-2, adapter="lora",
                   lora_rank=2, lora_targets=["q", "v"], checkpoint_dir=str(out))
    return base, out


def _logits(model) -> np.ndarray:
    return np.asarray(model((TOKENS, np.full(len(TOKENS), TOKENS.shape[1], np.int32))))


@pytest.mark.slow
def test_peft_loads_the_adapter_and_its_head_with_the_same_logits(tuned) -> None:
    import peft
    import torch
    import transformers

    base, out = tuned
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS"
    assert set(config["modules_to_save"]) == {"pooler", "classifier"}
    want = _logits(load_finetuned(out).model)
    reference = transformers.BertForSequenceClassification.from_pretrained(base, num_labels=2)
    ids = torch.tensor(TOKENS, dtype=torch.long)
    with torch.no_grad():  # without the adapter, the logits differ: the check can fail
        assert np.abs(reference.eval()(input_ids=ids).logits.numpy() - want).max() > 1e-3
    adapted = peft.PeftModel.from_pretrained(reference, out / "adapter").eval()
    assert type(adapted).__name__ == "PeftModelForSequenceClassification"
    with torch.no_grad():
        got = adapted(input_ids=ids).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.slow
def test_lmkit_reads_the_adapter_and_its_head_back_onto_the_base(tuned) -> None:
    base, out = tuned
    want = _logits(load_finetuned(out).model)
    task = get_task("glue/sst2")
    model, _ = task.shape.head(task, lmkit.from_pretrained(base).model, "cls", 0.1)
    before = _logits(model)
    load_classifier_adapter(out / "adapter", model)
    np.testing.assert_allclose(_logits(model), want, atol=1e-5)
    assert np.abs(before - want).max() > 1e-3
